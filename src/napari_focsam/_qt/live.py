"""Live preview: prompts on the slice being viewed -> the object's mask, in a worker thread.

A prompt edit starts a preview at once when none runs: its request is built on the next turn
of the event loop, so the events of one edit make one request (a shift-click adds a point,
then marks it negative), with no debounce delay. While a preview runs, edits are coalesced:
the latest request is started when it ends. At most one preview runs at a time, and only the
result of the latest request is shown: older ones are dropped.

The preview layer holds one plane, not the stack: a Labels layer shaped like the image's
labels with 1 on the stack (and outer) axis, translated onto the plane being viewed (with the
image's scale, rotation, shear and affine), so napari shows it on that plane only. Showing a
preview writes that plane and refreshes the layer (napari then redraws one plane).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from napari.layers import Labels
from napari.utils.transforms import CompositeAffine
from qtpy.QtCore import QObject, QTimer, Signal

from .axes import ImageAxes
from .prompt_layers import MappedPrompts, layer_transform_kwargs, place_below
from .session import SegmenterHolder, SegmenterSpec
from .status import Messages
from .tasks import Failed, PreviewResult, Status, describe_error, preview_task
from .workers import Task, TaskRunner

__all__ = ["ENCODE_THREAD", "PREVIEW_NAME", "PREVIEW_THREAD", "LivePreview", "PreviewRequest",
           "PreviewTimings", "plane_transform"]

logger = logging.getLogger(__name__)

PREVIEW_NAME = "FocSAM preview"
PREVIEW_COLOR = (1.0, 0.85, 0.0, 1.0)
#: The runner's threads (`workers.DirectThread`) that decode previews, and that load models and
#: encode for them (and for encoding ahead): a decoding thread that never encodes stays fast.
PREVIEW_THREAD, ENCODE_THREAD = "preview", "encode"


@dataclass
class PreviewRequest:
    """What one preview is computed from, and where it is shown."""

    spec: SegmenterSpec
    mapped: MappedPrompts
    image: object
    axes: ImageAxes
    frame: int | None
    outer: int | None
    labels_shape: tuple[int, ...]

    @property
    def plane(self) -> tuple[int, ...]:
        """Index of the plane in a labels array of `labels_shape` (its non-spatial axes)."""
        return self.axes.plane_index(self.frame, self.outer)

    @property
    def plane_shape(self) -> tuple[int, ...]:
        """Shape of the preview layer: `labels_shape` with 1 on the stack and outer axes."""
        extra = {a for a in (self.axes.stack_axis, self.axes.outer_axis) if a is not None}
        return tuple(1 if i in extra else int(s) for i, s in enumerate(self.labels_shape))


def plane_transform(image, plane: tuple[int, ...]) -> dict:
    """Layer keyword arguments that put a one-plane layer at `plane` of `image`.

    `image`'s transforms, with the translation moved by the plane's offset (mapped by the
    image's scale, rotation and shear), so the layer's pixel ``(0, ..., 0, r, c)`` lies where
    the image's pixel ``(*plane, r, c)`` does.
    """
    kwargs = layer_transform_kwargs(image)
    offset = np.zeros(image.ndim)
    offset[:len(plane)] = plane
    if offset.any():
        linear = CompositeAffine(scale=image.scale, rotate=image.rotate, shear=image.shear,
                                 ndim=image.ndim).linear_matrix
        kwargs["translate"] = np.asarray(image.translate, dtype=float) + linear @ offset
    return kwargs


@dataclass
class PreviewTimings:
    """When each stage of one preview ended (``time.perf_counter()`` seconds; 0: not reached).

    Attributes
    ----------
    requested : float
        The first `LivePreview.schedule` of the request (a prompt edit, a slice change).
    started : float
        The request is built from the prompts (the event loop's turn came).
    submitted : float
        The request was handed to the worker.
    worker, decoded : float
        The worker began; the mask was ready (`tasks.PreviewResult`).
    received, written, refreshed : float
        The result reached the GUI thread; the preview was written; the layer refreshed.
    """

    requested: float = 0.0
    started: float = 0.0
    submitted: float = 0.0
    worker: float = 0.0
    decoded: float = 0.0
    received: float = 0.0
    written: float = 0.0
    refreshed: float = 0.0


class LivePreview(QObject):
    """Runs and shows the live preview.

    Parameters
    ----------
    viewer : napari.Viewer
    runner : TaskRunner
    holder : SegmenterHolder
    messages : Messages
    build_request : callable
        ``() -> PreviewRequest or None`` (None: nothing to preview); may raise a user error,
        posted to `messages`.
    layers_above : callable
        ``() -> list of layers`` the preview layer goes under (the prompt layers).

    Attributes
    ----------
    layer : napari.layers.Labels or None
        The one-plane preview layer (None until the first preview, or once removed).
    timings : PreviewTimings or None
        The stages of the shown preview (None before the first one).

    Signals
    -------
    changed()
        A preview was shown or cleared.
    """

    changed = Signal()

    def __init__(self, viewer, runner: TaskRunner, holder: SegmenterHolder, messages: Messages, *,
                 build_request: Callable[[], PreviewRequest | None],
                 layers_above: Callable[[], list], parent=None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.runner = runner
        self.holder = holder
        self._messages = messages
        self._build = build_request
        self._layers_above = layers_above
        self.layer = None
        self._seq = 0
        self._latest: PreviewRequest | None = None
        self._scheduled = False
        self._pending = False
        self._painted = False
        self.result: PreviewResult | None = None
        self.request: PreviewRequest | None = None
        self.timings: PreviewTimings | None = None
        self._requested = 0.0
        self._timings = PreviewTimings()

    def schedule(self, *_args) -> None:
        """Recompute the preview on the next turn of the event loop (once for all the calls
        until then); the computation starts then, or when the running one ends."""
        if self.runner.closed:
            return
        self._requested = self._requested or time.perf_counter()
        if not self._scheduled:
            self._scheduled = True
            QTimer.singleShot(0, self._run_scheduled)

    def _run_scheduled(self) -> None:
        if self._scheduled:  # not stopped meanwhile
            self.update_now()

    def ready(self) -> tuple[PreviewResult, PreviewRequest] | None:
        """The shown preview, if it is up to date with the latest prompts."""
        if self._scheduled or self._pending or self.result is None or self.request is None:
            return None
        if self.result.seq != self._seq:
            return None
        return self.result, self.request

    @property
    def busy(self) -> bool:
        return self._scheduled or self._pending or self.runner.running("preview")

    def update_now(self) -> None:
        """Build the request from the prompts now and start (or queue) its computation."""
        self._scheduled = False
        if self.runner.closed:
            return
        self._seq += 1
        now = time.perf_counter()
        self._timings = PreviewTimings(self._requested or now, now)
        self._requested = 0.0
        try:
            request = self._build()
        except Exception as exc:  # noqa: BLE001 - reported in the status line, never raised
            self._latest = None
            self.clear()
            self._messages.error(describe_error(exc, "the live preview's prompts"))
            return
        for note in (request.mapped.notes if request is not None else ()):
            self._messages.info(note)
        if request is None or request.mapped.prompt is None:
            self._latest = None
            self.clear()
            return
        self._latest = request
        if self.runner.running("preview"):
            self._pending = True
            return
        self._start(self._seq, request)
        try:  # a first preview: the layer is made while the worker decodes
            self._ensure_layer(request)
        except Exception as exc:  # noqa: BLE001 - reported in the status line, never raised
            self._messages.error("Preview could not be shown: "
                                 + describe_error(exc, "adding the preview layer"))

    def _start(self, seq: int, request: PreviewRequest) -> None:
        if seq == self._seq:
            self._timings.submitted = time.perf_counter()
        self.runner.start("preview", preview_task, self.holder, request.spec, request.mapped.prompt, seq,
                          on_event=lambda event: self._on_event(event, seq, request),
                          on_done=self._on_done, during="the live preview", direct=PREVIEW_THREAD,
                          heavy_in=self.runner.direct_thread(ENCODE_THREAD).call)

    def _on_event(self, event, seq: int, request: PreviewRequest) -> None:
        if isinstance(event, Status):
            self._messages.info(event.text)
        elif isinstance(event, Failed):
            if seq == self._seq:
                self.clear()
                self._messages.error(f"Preview failed: {event.message}")
        elif isinstance(event, PreviewResult) and event.seq == self._seq and not self._scheduled:
            # an edit scheduled since (its request not built yet) makes this result stale
            timings = self._timings
            timings.worker, timings.decoded = event.started, event.decoded
            timings.received = time.perf_counter()
            self._show(event, request)

    def _on_done(self, task: Task) -> None:
        if self._pending and not task.cancelled:
            self._pending = False
            if self._latest is not None:
                self._start(self._seq, self._latest)
        else:
            self._pending = False

    # ------------------------------------------------------------------ the preview layer
    def _ensure_layer(self, request: PreviewRequest):
        """The preview layer, shaped for `request`'s plane (new if there is none that fits)."""
        layer = self.layer if self.layer is not None and self.layer in self.viewer.layers else None
        if layer is None and PREVIEW_NAME in self.viewer.layers \
                and isinstance(self.viewer.layers[PREVIEW_NAME], Labels):
            layer = self.viewer.layers[PREVIEW_NAME]
        if layer is not None and (layer.data.shape != request.plane_shape
                                  or layer.ndim != request.image.ndim):
            self.viewer.layers.remove(layer)
            layer = None
        if layer is None:
            from napari.utils.colormaps import DirectLabelColormap

            active = self.viewer.layers.selection.active
            colormap = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0),
                                                       1: PREVIEW_COLOR})
            layer = self.viewer.add_labels(np.zeros(request.plane_shape, dtype=np.uint8),
                                           name=PREVIEW_NAME, opacity=0.5, colormap=colormap,
                                           **plane_transform(request.image, request.plane))
            layer.editable = False
            place_below(self.viewer, layer, self._layers_above())
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        self.layer = layer
        return layer

    def _place(self, layer, request: PreviewRequest) -> bool:
        """Move `layer` onto `request`'s plane if it is elsewhere (each change refreshes the
        layer); whether anything changed."""
        moved = False
        for name, value in plane_transform(request.image, request.plane).items():
            current = np.asarray(layer.affine.affine_matrix if name == "affine"
                                 else getattr(layer, name), dtype=float)
            value = np.asarray(value, dtype=float)
            if current.shape != value.shape or not np.allclose(current, value):
                setattr(layer, name, value)
                moved = True
        return moved

    def _show(self, result: PreviewResult, request: PreviewRequest) -> None:
        try:
            layer = self._ensure_layer(request)
            layer.data[...] = result.mask.reshape(request.plane_shape)
            self._painted = True
            self._timings.written = time.perf_counter()
            if not self._place(layer, request):  # moving it refreshed it
                layer.refresh()
            self._timings.refreshed = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - reported in the status line, never raised
            self._messages.error("Preview could not be shown: "
                                 + describe_error(exc, "showing the live preview"))
            return
        self.result, self.request = result, request
        self.timings = self._timings
        where = "" if request.frame is None else f" on slice {request.frame}"
        self._messages.info(f"Preview of object {result.prompt.obj_id}{where}: "
                            f"{int(result.mask.sum())} pixels. C: commit")
        self.changed.emit()

    def clear(self) -> None:
        """Remove the shown preview (the layer stays)."""
        self.result = self.request = None
        layer = self.layer
        if layer is not None and layer in self.viewer.layers and self._painted:
            layer.data[...] = 0
            layer.refresh()
        self._painted = False
        self.changed.emit()

    def stop(self) -> None:
        self._scheduled = False
        self._pending = False
