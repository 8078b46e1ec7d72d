"""Encoding ahead: the model is built and the slice being viewed encoded before the first click.

As soon as an image and a model with weights are chosen, `SlicePreparer` runs
`tasks.prepare_task` for the plane being viewed, in the dock's encoding thread (`live.
ENCODE_THREAD`, where a click that has to encode runs that step too), so the first click only
has to decode. Another slice, image or model cancels it and prepares the new one once the choices
rest for `PREPARE_DELAY_MS` (scrolling through a stack does not encode every slice passed).
Nothing happens without weights, and nothing is encoded twice: the task looks the plane up in
the embedding store first (its RAM and disk caches).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

from qtpy.QtCore import QObject, QTimer, Signal

from .live import ENCODE_THREAD
from .session import SegmenterHolder, SegmenterSpec
from .tasks import Failed, Prepared, Status, prepare_task
from .workers import Task, TaskRunner

__all__ = ["PREPARE_DELAY_MS", "PREPARE_TASK", "PrepareTarget", "SlicePreparer", "ready_text"]

logger = logging.getLogger(__name__)

#: Quiet time (ms) after a change before the new plane is prepared.
PREPARE_DELAY_MS = 150
#: The runner's name of the task.
PREPARE_TASK = "prepare"
#: Why the preparer cancels its own task (any other reason, e.g. the Cancel button, leaves
#: that plane alone until the choices or the slice change).
CHANGED = "the slice or the choices changed"

#: What to prepare: the segmenter's spec and the plane (frame, outer).
PrepareTarget = tuple[SegmenterSpec, int | None, int | None]


def _key(target: PrepareTarget | None) -> Hashable | None:
    if target is None:
        return None
    spec, frame, outer = target
    return id(spec.data), spec.key, frame, outer


def ready_text(prepared: Prepared, where: str) -> str:
    """The dock's line once `prepared` came (`where` names the plane)."""
    built = f"built in {prepared.build_s:.1f} s; " if prepared.build_s else ""
    if prepared.tiled:
        return (f"{prepared.model_id} ready ({built}tiles are encoded when you first click in "
                "them)")
    if prepared.cached:
        return f"{prepared.model_id} ready ({built}{where} was encoded before): click on an object"
    return (f"{prepared.model_id} ready ({built}{where} encoded in {prepared.encode_s:.1f} s): "
            "click on an object")


class SlicePreparer(QObject):
    """Prepares the plane being viewed for the first click (see the module docstring).

    Parameters
    ----------
    runner : TaskRunner
    holder : SegmenterHolder
    target : callable
        ``() -> PrepareTarget or None``: what the dock shows now (None: nothing to prepare,
        e.g. no image, or no weights for the model).
    enabled : bool
        False: never prepares (the first click encodes).

    Signals
    -------
    status(str)
        What it does now, or its result ("" when there is nothing to say).
    prepared(object)
        A `tasks.Prepared`: the plane is ready.
    """

    status = Signal(str)
    prepared = Signal(object)

    def __init__(self, runner: TaskRunner, holder: SegmenterHolder, *,
                 target: Callable[[], PrepareTarget | None], enabled: bool = True,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.holder = holder
        self.enabled = enabled
        self._target = target
        self._running: Hashable | None = None  # key of the running task
        self._done: Hashable | None = None  # key of the last plane prepared
        self._stopped: Hashable | None = None  # key of a plane whose task was cancelled from outside
        self._again = False
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(PREPARE_DELAY_MS)
        self.timer.timeout.connect(self.start_now)

    def _current(self) -> tuple[PrepareTarget | None, Hashable | None]:
        if self.runner.closed or not self.enabled:
            return None, None
        try:
            target = self._target()
        except Exception:  # noqa: BLE001 - incomplete choices: nothing to prepare
            logger.debug("nothing to prepare", exc_info=True)
            target = None
        return target, _key(target)

    @property
    def busy(self) -> bool:
        """Whether a plane is being prepared (or will be once the choices rest)."""
        return self.timer.isActive() or self.runner.running(PREPARE_TASK)

    def schedule(self, *_args) -> None:
        """The image, the model, the slice or the data may have changed: cancel what no longer
        matches, and prepare the plane now shown once the choices rest."""
        _, key = self._current()
        if self.runner.running(PREPARE_TASK) and key != self._running:
            self.runner.cancel(PREPARE_TASK, CHANGED)
        if key is None:
            self.timer.stop()
            if not self.runner.running(PREPARE_TASK):
                self.status.emit("")
            return
        if key in (self._running, self._done, self._stopped):
            self.timer.stop()
            return
        self._stopped = None
        self.timer.start()

    def start_now(self) -> None:
        """Prepare the plane now shown (after the running task, if one is stopping)."""
        self.timer.stop()
        target, key = self._current()
        if key is None or key in (self._done, self._stopped):
            return
        if self.runner.running(PREPARE_TASK):
            if key != self._running:
                self._again = True
            return
        spec, frame, outer = target
        where = spec.axes.plane_name(frame, outer)
        self._running = key
        self.runner.start(PREPARE_TASK, prepare_task, self.holder, spec, frame, outer,
                          on_event=lambda event: self._on_event(event, key, where),
                          on_done=self._on_done, during="encoding ahead of the first click",
                          direct=ENCODE_THREAD)

    def _on_event(self, event, key: Hashable, where: str) -> None:
        if isinstance(event, Status):
            self.status.emit(event.text)
        elif isinstance(event, Prepared):
            self._done = key
            logger.info("%s ready for %s (build %.2f s, encoding %.2f s%s)", event.model_id,
                        where, event.build_s, event.encode_s, ", cached" if event.cached else "")
            self.status.emit(ready_text(event, where))
            self.prepared.emit(event)
        elif isinstance(event, Failed) and not event.cancelled:
            logger.warning("FocSAM: encoding ahead failed: %s", event.message)
            self.status.emit(f"Could not get ready for a click: {event.message}")

    def _on_done(self, task: Task) -> None:
        key, self._running = self._running, None
        again, self._again = self._again, False
        if task.cancelled and task.reason != CHANGED:  # e.g. the Cancel button: not restarted
            self._stopped = key
            if not again:
                self.status.emit(f"Encoding ahead stopped ({task.reason}); the first click "
                                 "encodes the slice")
                return
        if again or task.cancelled:
            self.start_now()
            if task.cancelled and not self.busy:  # nothing else to prepare: no stale line
                self.status.emit("")

    def stop(self) -> None:
        """No more preparing (the dock is closing); the runner stops the task."""
        self.timer.stop()
        self.enabled = False
