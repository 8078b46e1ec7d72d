"""Running the widget's tasks in worker threads (napari's `create_worker`), one per name.

A task is a generator function from `tasks` (or a plain function); it gets a
``cancel_event`` keyword argument. Its events arrive in the GUI thread through ``on_event``;
``on_done(task)`` is called once it has stopped, whatever the reason (finished, cancelled,
failed). Exceptions never escape a worker (see `tasks.guarded`). The runner's signals tell
the controls when a task starts and ends.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from .tasks import Failed, describe_error, guarded

__all__ = ["Task", "TaskRunner"]

logger = logging.getLogger(__name__)


@dataclass
class Task:
    """One running task.

    Attributes
    ----------
    name : str
    worker : GeneratorWorker
    cancel_event : threading.Event
        Set by `TaskRunner.cancel`; the task checks it between steps.
    reason : str
        Why it was cancelled ("" if it was not).
    failed : Failed or None
        The error it stopped on, if any.
    """

    name: str
    worker: object
    cancel_event: threading.Event
    generator: object = None
    reason: str = ""
    failed: Failed | None = None
    done: bool = False

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


def _drive(generator):
    """Generator function around an existing generator (what GeneratorWorker needs)."""
    yield from generator


def _call(fn, *args, **kwargs):
    """A plain function as a one-event generator."""
    yield fn(*args, **kwargs)


class TaskRunner(QObject):
    """Starts, tracks and cancels the widget's worker threads (at most one per name).

    Signals
    -------
    task_started(str)
        A task of this name started.
    task_finished(str)
        A task of this name stopped (after its ``on_done``).
    task_cancelling(str)
        A task of this name was asked to stop (it stops after its current step).
    """

    task_started = Signal(str)
    task_finished = Signal(str)
    task_cancelling = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.tasks: dict[str, Task] = {}
        #: Set by `shutdown`: events and ends of tasks are no longer handed to the widget.
        self.closed = False

    def running(self, name: str | None = None) -> bool:
        """Whether task `name` (any task when None) is running."""
        return bool(self.tasks) if name is None else name in self.tasks

    def cancellable(self, name: str) -> bool:
        """Whether task `name` runs and was not asked to stop yet."""
        task = self.tasks.get(name)
        return task is not None and not task.cancelled

    def start(self, name: str, fn: Callable, *args, on_event: Callable[[object], None],
              on_done: Callable[[Task], None] | None = None, during: str | None = None,
              **kwargs) -> Task:
        """Run `fn(*args, cancel_event=..., **kwargs)` in a worker thread.

        `during` names the work in error messages (default: ``"the <name> task"``).

        Raises
        ------
        RuntimeError
            A task of this name is already running.
        """
        if name in self.tasks:
            raise RuntimeError(f"a {name} task is already running")
        if self.closed:
            raise RuntimeError("the widget was closed")
        cancel_event = threading.Event()
        during = during or f"the {name} task"
        if inspect.isgeneratorfunction(fn):
            generator = guarded(fn, *args, during=during, cancel_event=cancel_event, **kwargs)
        else:
            generator = guarded(_call, fn, *args, during=during, cancel_event=cancel_event, **kwargs)
        worker = create_worker(_drive, generator, _start_thread=False)
        task = Task(name, worker, cancel_event, generator)

        def relay(event, task=task):
            if isinstance(event, Failed):
                task.failed = event
            if self.closed:
                return
            try:
                on_event(event)
            except Exception:  # noqa: BLE001 - a slot must never raise into Qt
                logger.exception("FocSAM: handling an event of %s failed", task.name)

        worker.yielded.connect(relay)
        worker.finished.connect(partial(self._finished, task, on_done, during))
        self.tasks[name] = task
        worker.start()
        self.task_started.emit(name)
        return task

    def _finished(self, task: Task, on_done: Callable[[Task], None] | None, during: str) -> None:
        task.done = True
        if self.tasks.get(task.name) is task:
            del self.tasks[task.name]
        try:
            task.generator.close()  # runs the task's cleanup if the worker was told to quit
        except Exception:  # noqa: BLE001 - cleanup of an aborted task; nothing to report
            logger.debug("closing task %s", task.name, exc_info=True)
        if self.closed:
            return
        if on_done is not None:
            try:
                on_done(task)
            except Exception as exc:  # noqa: BLE001 - a slot must never raise into Qt
                task.failed = Failed(describe_error(exc, f"the end of {during}"), exc)
        self.task_finished.emit(task.name)

    def cancel(self, name: str | None = None, reason: str = "cancelled") -> list[Task]:
        """Ask task `name` (every task when None) to stop; it stops after its current step."""
        tasks = list(self.tasks.values()) if name is None else [t for t in (self.tasks.get(name),) if t]
        for task in tasks:
            first = not task.cancelled
            if first:
                task.reason = reason
            task.cancel_event.set()
            task.worker.quit()
            if first and not self.closed:
                self.task_cancelling.emit(task.name)
        return tasks

    def cancel_all(self, names, reason: str = "cancelled") -> list[Task]:
        """`cancel` each running task of `names`; the tasks told to stop."""
        return [task for name in names if self.running(name) for task in self.cancel(name, reason)]

    def shutdown(self) -> None:
        """Cancel every task (the widget or the viewer is closing)."""
        if self.tasks:
            logger.info("FocSAM: stopping %d running task(s)", len(self.tasks))
        self.closed = True
        self.cancel(None, "the widget was closed")
