"""Propagation of the committed objects through the stack, written frame by frame."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from napari.layers import Labels
from qtpy.QtCore import QObject, Signal

from ..api.prompts_file import ObjectPrompt
from .axes import ImageAxes
from .commit import LabelsLayerError, paint_frame, record_stack, writable_plane
from .controller import USER_CANCEL, SegmentationController
from .tasks import Failed, FrameResult, Status, describe_error, propagate_task
from .workers import Task

__all__ = ["PropagationController", "PropagationRun"]

logger = logging.getLogger(__name__)


@dataclass
class PropagationRun:
    """The running propagation.

    Attributes
    ----------
    target : napari.layers.Labels
        The labels layer each finished frame is written into.
    image : napari.layers.Image
        The image layer propagated through.
    ids : frozenset of int
        The propagated objects (only their pixels are rewritten).
    axes : ImageAxes
    frames_written : set of (outer, frame)
        The planes written so far.
    """

    target: object
    image: object
    ids: frozenset[int]
    axes: ImageAxes
    frames_written: set[tuple[int | None, int]] = field(default_factory=set)


class PropagationController(QObject):
    """Propagates every committed object with the propagation model (SAM 2).

    Parameters
    ----------
    viewer : napari.Viewer
    controller : SegmentationController
        Its segmenter spec, runner, holder, image layer and messages.

    Attributes
    ----------
    run : PropagationRun or None
        The running propagation (None when none runs).

    Signals
    -------
    progress(str, int, int)
        Text, done and total frames of the running propagation.
    ended(int)
        A propagation ended (finished, cancelled or failed), having written this many frames.
    """

    progress = Signal(str, int, int)
    ended = Signal(int)

    def __init__(self, viewer, controller: SegmentationController, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._controller = controller
        self.run: PropagationRun | None = None
        viewer.layers.events.removed.connect(self._on_layer_removed)

    @property
    def running(self) -> bool:
        return self.run is not None

    def layers(self) -> tuple:
        """The labels and image layers of the running propagation (empty when none runs)."""
        run = self.run
        return () if run is None else (run.target, run.image)

    def start(self, prompts: list[ObjectPrompt], target, direction: str) -> bool:
        """Propagate `prompts` (every committed object's) through the stack into `target`.

        Returns False, with a message, when it cannot start.
        """
        controller = self._controller
        messages = controller.messages
        if controller.runner.running("propagate"):
            messages.error("Propagation is already running")
            return False
        if controller.runner.running("track"):  # both write the segmenter's labels
            messages.error("Track all is running: propagate when it ends (or cancel it)")
            return False
        if not prompts:
            messages.error("Nothing to propagate: commit at least one object first")
            return False
        if target is None or target not in self.viewer.layers:
            messages.error("The labels layer of the committed objects is gone")
            return False
        try:
            spec = controller.spec()
        except Exception as exc:  # noqa: BLE001 - reported in the status line, never raised
            messages.error(describe_error(exc, "the propagation's settings"))
            return False
        if not spec.axes.propagates:
            messages.error("Propagation needs a z or t stack: choose a stack axis under Setup")
            return False
        needed = spec.axes.labels_shape(spec.data.shape)
        if tuple(target.data.shape) != tuple(needed):
            messages.error(f"The labels layer '{target.name}' has shape {target.data.shape}, the "
                           f"image needs {needed}")
            return False
        try:
            writable_plane(target, ())
        except LabelsLayerError as exc:
            messages.error(str(exc))
            return False
        record_stack(target, spec.axes)
        self.run = PropagationRun(target, controller.image_layer(),
                                  frozenset(p.obj_id for p in prompts), spec.axes)
        controller.runner.start("propagate", propagate_task, controller.holder, spec, prompts,
                                direction, on_event=self._on_event, on_done=self._on_done,
                                during="the propagation")
        return True

    def _on_event(self, event) -> None:
        run = self.run
        if run is None:
            return
        if isinstance(event, Status):
            self._controller.messages.info(event.text)
        elif isinstance(event, Failed) and not event.cancelled:  # a cancel is reported at the end
            self._controller.messages.error(f"Propagation failed: {event.message}")
        elif isinstance(event, FrameResult):
            if run.target not in self.viewer.layers:
                return
            plane_index = run.axes.plane_index(event.frame, event.outer)
            paint_frame(writable_plane(run.target, plane_index), event.labels, run.ids,
                        plane_index=plane_index)
            run.target.refresh()
            run.frames_written.add((event.outer, event.frame))
            self.progress.emit("Propagating", event.progress.done, event.progress.total)

    def _on_done(self, task: Task) -> None:
        run, self.run = self.run, None
        n_frames = len(run.frames_written) if run is not None else 0
        self.ended.emit(n_frames)
        messages = self._controller.messages
        if task.cancelled:
            text = f"Propagation stopped ({task.reason}); the {n_frames} frame(s) written are kept"
            if task.reason == USER_CANCEL:
                messages.info(text)
            else:
                messages.error(text)
        elif task.failed is None:
            messages.info(f"Propagated {len(run.ids) if run is not None else 0} object(s) over "
                          f"{n_frames} frame(s)")

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        if self.run is not None and any(layer is other for other in self.layers()):
            kind = "labels" if isinstance(layer, Labels) else "image"
            self._controller.runner.cancel("propagate", f"the {kind} layer '{layer.name}' was removed")
