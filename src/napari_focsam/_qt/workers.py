"""Running the widget's tasks in worker threads (napari's `create_worker`), one per name.

A task is a generator function from `tasks` (or a plain function); it gets a
``cancel_event`` keyword argument. Its events arrive in the GUI thread through ``on_event``;
``on_done(task)`` is called once it has stopped, whatever the reason (finished, cancelled,
failed). Exceptions never escape a worker (see `tasks.guarded`). The runner's signals tell
the controls when a task starts and ends.

Tasks whose latency matters (the live preview, encoding ahead) run ``direct``: handed at once
to a long-lived thread the runner keeps for them (`DirectThread`). napari's workers start on the
next turn of the event loop (a timer: after a pending canvas repaint), queue in Qt's global
thread pool, whose size is the number of cores (behind long tasks on a small machine), and run
on whichever pool thread is free (see `DirectThread` for why that matters).
"""

from __future__ import annotations

import atexit
import inspect
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from ..errors import Cancelled
from .tasks import Failed, describe_error, guarded

__all__ = ["DirectThread", "DirectWorker", "Task", "TaskRunner"]

logger = logging.getLogger(__name__)

R = TypeVar("R")


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


class DirectThread:
    """A long-lived thread that runs functions one after another (`submit`, `call`).

    Started on first use; `stop` ends it after the function it runs. A daemon thread, so a dock
    that is never closed does not keep Python alive; leaving Python waits for the function it
    runs (`atexit`), so no model call is cut off at exit.

    Why long-lived: the math libraries keep per-thread state (OpenMP thread teams, allocator
    arenas). A thread that ran the image encoder, or one started after such a thread ended,
    decoded clicks 3-4 times slower (CPU time of the decoding thread, 2-core machine under
    load); a thread that has only ever decoded stays fast. So the dock decodes in one thread
    and encodes in another (`TaskRunner.direct_thread`).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` in the thread, after the functions before it.

        Raises
        ------
        Cancelled
            The thread was stopped.
        """
        with self._lock:
            if self._closed:
                raise Cancelled("the widget was closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
                atexit.register(self.stop, 30.0)
            self._queue.put(fn)

    def call(self, fn: Callable[[], R]) -> R:
        """``fn()`` run in the thread (after the functions before it); waits for its result and
        raises its exception. Runs `fn` at once when called from the thread itself."""
        if threading.current_thread() is self._thread:
            return fn()
        future: Future = Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)

        self.submit(run)
        return future.result()

    def _loop(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:  # noqa: BLE001 - a task never raises (tasks.guarded); keep serving
                logger.exception("FocSAM: a function run in %s failed", self._name)

    def stop(self, timeout: float | None = None) -> None:
        """End the thread once the functions handed to it are done (waits up to `timeout`
        seconds); later ones raise `Cancelled`."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            if thread is None:
                return
            atexit.unregister(self.stop)
            self._queue.put(None)
        if timeout and thread is not threading.current_thread():
            thread.join(timeout)


class DirectWorker(QObject):
    """Runs a generator in a `DirectThread`, at once; its events go out as signals.

    The signals are emitted in the worker thread and delivered in the thread of each
    receiver (queued to the GUI thread), as napari's workers do.

    Signals
    -------
    yielded(object)
        An event of the generator.
    finished()
        The generator stopped (exhausted, or told to `quit`).
    """

    yielded = Signal(object)
    finished = Signal()

    def __init__(self, generator, thread: DirectThread) -> None:
        super().__init__()
        self._generator = generator
        self._quit = threading.Event()
        self._thread = thread

    def start(self) -> None:
        self._thread.submit(self._run)

    def quit(self) -> None:
        """Stop after the current event (the task checks its ``cancel_event`` meanwhile)."""
        self._quit.set()

    def _run(self) -> None:
        try:
            for event in self._generator:
                self.yielded.emit(event)
                if self._quit.is_set():
                    break
        finally:
            self.finished.emit()


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
        self._direct: dict[str, DirectThread] = {}

    def direct_thread(self, name: str) -> DirectThread:
        """The runner's long-lived thread `name` (made on first use)."""
        if name not in self._direct:
            self._direct[name] = DirectThread(f"focsam-{name}")
        return self._direct[name]

    def running(self, name: str | None = None) -> bool:
        """Whether task `name` (any task when None) is running."""
        return bool(self.tasks) if name is None else name in self.tasks

    def cancellable(self, name: str) -> bool:
        """Whether task `name` runs and was not asked to stop yet."""
        task = self.tasks.get(name)
        return task is not None and not task.cancelled

    def start(self, name: str, fn: Callable, *args, on_event: Callable[[object], None],
              on_done: Callable[[Task], None] | None = None, during: str | None = None,
              direct: str | None = None, **kwargs) -> Task:
        """Run `fn(*args, cancel_event=..., **kwargs)` in a worker thread.

        `during` names the work in error messages (default: ``"the <name> task"``). With
        `direct`, it is handed at once to the runner's `DirectThread` of that name (tasks whose
        latency matters; each thread runs its tasks one after another); else to a napari worker.

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
        if direct:
            worker = DirectWorker(generator, self.direct_thread(direct))
        else:
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
        for thread in self._direct.values():
            thread.stop()
