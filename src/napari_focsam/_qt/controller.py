"""`SegmentationController`: the segmenter of the Setup choices, the live preview, embeddings.

No widgets here: the panels of the dock hold this controller (or parts of it) and the dock
connects their signals to it.
"""

from __future__ import annotations

import logging

from qtpy.QtCore import QObject, Signal

from ..api.segmenter import Progress
from ..families import Role
from .axes import AxesError, ImageAxes
from .live import LivePreview, PreviewRequest
from .prepare import PREPARE_TASK, PrepareTarget, SlicePreparer
from .prompt_layers import collect_prompt, image_data
from .session import SegmenterHolder, SegmenterSpec, SetupChoices, weights_problem
from .status import Messages
from .tasks import Failed, Status, describe_error, embed_task
from .workers import Task, TaskRunner

__all__ = ["LONG_TASKS", "USER_CANCEL", "SegmentationController"]

logger = logging.getLogger(__name__)

#: Tasks the Cancel button stops (encoding ahead, the last, only when none of the others runs).
LONG_TASKS = ("embed", "propagate", "download", "everything", "track", PREPARE_TASK)
#: The reason of a cancellation by the Cancel button.
USER_CANCEL = "cancelled by the user"


class SegmentationController(QObject):
    """The worker threads, the segmenter and the live preview of one dock.

    The segmenter is the one of the latest `SetupChoices` (`set_choices`) and of the image's
    data: a generation counter goes up whenever the image layer changes or its data is set,
    so a new array in the same layer gets a new segmenter.

    Parameters
    ----------
    viewer : napari.Viewer
    cache_root : path, None or False
        Embedding disk cache (None: the default folder; False: RAM only).
    encode_ahead : bool
        Build the model and encode the slice being viewed as soon as an image and a model with
        weights are chosen (`prepare.SlicePreparer`), so the first click only decodes.

    Attributes
    ----------
    runner : TaskRunner
    holder : SegmenterHolder
    live : LivePreview
    prepare : SlicePreparer
    messages : Messages
        Status messages of every part of the dock.
    cache_root : path, None or False

    Signals
    -------
    spec_changed()
        The Setup choices or the image data changed.
    progress(str, int, int)
        Text, done and total of the running embedding.
    preparing(str)
        What encoding ahead does now ("" when there is nothing to say).
    prepared(object)
        A `tasks.Prepared`: the slice being viewed is encoded (or was in the cache).
    """

    spec_changed = Signal()
    progress = Signal(str, int, int)
    preparing = Signal(str)
    prepared = Signal(object)

    def __init__(self, viewer, *, cache_root=None, encode_ahead: bool = True,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.cache_root = cache_root
        self.messages = Messages(self)
        self.runner = TaskRunner()
        self.holder = SegmenterHolder()
        self._choices: SetupChoices | None = None
        self._image = None  # the image layer whose data events are watched
        self._generation = 0
        self._points = None
        self._shapes = None
        self._object_id = 1
        self._embed_image = None
        self.live = LivePreview(viewer, self.runner, self.holder, self.messages,
                                build_request=self._preview_request,
                                layers_above=self.prompt_layers, parent=self)
        self.prepare = SlicePreparer(self.runner, self.holder, target=self._prepare_target,
                                     enabled=encode_ahead, parent=self)
        self.prepare.status.connect(self.preparing)
        self.prepare.prepared.connect(self.prepared)
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.layers.events.removed.connect(self._on_layer_removed)

    # ------------------------------------------------------------------ inputs (slots)
    def set_choices(self, choices: SetupChoices) -> None:
        """Use the Setup section's `choices` from now on."""
        first = self._choices is None  # nothing can have been previewed before
        if choices.image is not self._image:
            self._watch_image(choices.image)
        self._choices = choices
        self.spec_changed.emit()
        self.prepare.schedule()
        if not first:
            self.live.schedule()

    def _on_step(self, _event=None) -> None:
        self.live.schedule()
        self.prepare.schedule()

    def set_prompt_layers(self, points, shapes) -> None:
        """The Points and Shapes layers (or None) whose prompts are previewed."""
        self._points, self._shapes = points, shapes
        self.live.schedule()

    def set_object(self, obj_id: int) -> None:
        """New prompts are for object `obj_id`."""
        self._object_id = int(obj_id)
        self.live.schedule()

    def _watch_image(self, image) -> None:
        if self._image is not None:
            self._image.events.data.disconnect(self._on_image_data)
        self._image = image
        if image is not None:
            image.events.data.connect(self._on_image_data)
        self._generation += 1

    def _on_image_data(self, _event=None) -> None:
        if self.runner.closed:
            return
        self._generation += 1
        self.spec_changed.emit()
        self.live.schedule()
        self.prepare.schedule()

    # ------------------------------------------------------------------ what is segmented
    def image_layer(self):
        """The chosen image layer, or None."""
        return self._choices.image if self._choices is not None else None

    def axes(self) -> ImageAxes:
        """The axis layout chosen for the image layer (raises `AxesError` without one)."""
        if self._choices is None:
            raise AxesError("no image layer: open an image and choose it under Setup")
        return self._choices.axes()

    def spec(self) -> SegmenterSpec:
        """The segmenter the current choices call for (raises a user error if there is none)."""
        axes = self.axes()
        choices = self._choices
        return SegmenterSpec(image_data(choices.image), self._generation, axes, choices.interactive,
                             choices.propagation if axes.propagates else None, choices.device,
                             choices.dtype, self.cache_root, choices.tiling)

    def prompt_layers(self) -> list:
        """The chosen prompt layers."""
        return [layer for layer in (self._points, self._shapes) if layer is not None]

    def overlay_layers(self) -> list:
        """Layers a new Labels layer goes under: the preview and the prompt layers."""
        return [self.live.layer, *self.prompt_layers()]

    def _viewed_plane(self, spec: SegmenterSpec) -> tuple[int | None, int | None] | None:
        """``(frame, outer)`` of the image's plane being viewed (None: outside the image)."""
        frame, outer = spec.axes.position(self._choices.image.world_to_data(self.viewer.dims.point))
        labels_shape = spec.axes.labels_shape(spec.data.shape)
        return (frame, outer) if spec.axes.in_range(labels_shape, frame, outer) else None

    def _prepare_target(self) -> PrepareTarget | None:
        """What encoding ahead prepares now: the chosen image's plane being viewed, with the
        chosen model, when it has weights (None: nothing)."""
        image = self.image_layer()
        if image is None or image not in self.viewer.layers:
            return None
        spec = self.spec()
        if weights_problem(spec.interactive, Role.INTERACTIVE) is not None:
            return None
        plane = self._viewed_plane(spec)
        return None if plane is None else (spec, *plane)

    def _preview_request(self) -> PreviewRequest | None:
        points, shapes = self._points, self._shapes
        if (points is None or not len(points.data)) and (shapes is None or not len(shapes.data)):
            return None
        spec = self.spec()
        image = self._choices.image
        labels_shape = spec.axes.labels_shape(spec.data.shape)
        world_point = self.viewer.dims.point
        frame, outer = spec.axes.position(image.world_to_data(world_point))
        if not spec.axes.in_range(labels_shape, frame, outer):
            return None
        mapped = collect_prompt(self._object_id, image, spec.axes, frame, outer,
                                points_layer=points, shapes_layer=shapes, world_point=world_point)
        return PreviewRequest(spec, mapped, image, spec.axes, frame, outer, labels_shape)

    # ------------------------------------------------------------------ embeddings, cancel
    def compute_embeddings(self) -> None:
        """Encode every frame with the interactive model, and with the propagation model when
        its weights are available, in a worker."""
        if self.runner.running("embed"):
            self.messages.error("Embeddings are already being computed")
            return
        try:
            spec = self.spec()
        except Exception as exc:  # noqa: BLE001 - reported in the status line, never raised
            self.messages.error(describe_error(exc, "the embeddings' settings"))
            return
        self._embed_image = self._choices.image
        self.runner.start("embed", embed_task, self.holder, spec, on_event=self._on_embed_event,
                          on_done=self._on_embed_done, during="the computation of embeddings")

    def _on_embed_event(self, event) -> None:
        if isinstance(event, Status):
            self.messages.info(event.text)
        elif isinstance(event, Failed) and not event.cancelled:  # a cancel is reported at the end
            self.messages.error(f"Embedding failed: {event.message}")
        elif isinstance(event, Progress):
            role = event.stage.partition(":")[2] or event.stage
            self.progress.emit(f"Embeddings ({role})", event.done, event.total)

    def _on_embed_done(self, task: Task) -> None:
        self._embed_image = None
        if task.cancelled:
            text = f"Embedding stopped ({task.reason}); finished frames stay cached"
            if task.reason == USER_CANCEL:
                self.messages.info(text)
            else:
                self.messages.error(text)

    def cancel(self) -> None:
        """Stop the running embedding, propagation, download, segment all and track all (what
        they wrote is kept); when none runs, stop encoding ahead (not restarted for the same
        plane).

        Says "Cancelling…" at once; each task's end posts the final message.
        """
        started = [name for name in LONG_TASKS if name != PREPARE_TASK]
        tasks = (self.runner.cancel_all(started, USER_CANCEL)
                 or self.runner.cancel_all((PREPARE_TASK,), USER_CANCEL))
        if not tasks:
            self.messages.info("Nothing to cancel")
            return
        what = {"embed": "the embeddings", "propagate": "the propagation", "download": "the download",
                "everything": "segment all", "track": "track all", PREPARE_TASK: "encoding ahead"}
        self.messages.info(f"Cancelling {' and '.join(what[t.name] for t in tasks)}…")

    # ------------------------------------------------------------------ layers and closing
    def _on_layer_removed(self, event) -> None:
        if self.runner.closed:
            return
        layer = event.value
        if self.runner.running("embed") and layer is self._embed_image:
            self.runner.cancel("embed", f"the image layer '{layer.name}' was removed")
        if layer is self.live.layer:
            self.live.layer = None
        self.live.schedule()
        self.prepare.schedule()

    def shutdown(self) -> None:
        """Stop the preview, encoding ahead and every worker (the dock or the viewer is
        closing)."""
        self.live.stop()
        self.prepare.stop()
        self.runner.shutdown()
        if self._image is not None:
            self._image.events.data.disconnect(self._on_image_data)
            self._image = None
