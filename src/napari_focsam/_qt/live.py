"""Live preview: prompts on the slice being viewed -> the object's mask, in a worker thread.

Prompt edits are debounced (`DEBOUNCE_MS`); at most one preview runs at a time, and a request
made while one runs is started when it ends, with the prompts as they are then. Only the
result of the latest request is shown: older ones are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import QObject, QTimer, Signal

from .axes import ImageAxes
from .prompt_layers import MappedPrompts, layer_transform_kwargs, place_below
from .session import SegmenterHolder, SegmenterSpec
from .status import Messages
from .tasks import Failed, PreviewResult, Status, describe_error, preview_task
from .workers import Task, TaskRunner

__all__ = ["DEBOUNCE_MS", "PREVIEW_NAME", "LivePreview", "PreviewRequest"]

logger = logging.getLogger(__name__)

DEBOUNCE_MS = 50
PREVIEW_NAME = "FocSAM preview"
PREVIEW_COLOR = (1.0, 0.85, 0.0, 1.0)


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
        return self.axes.plane_index(self.frame, self.outer)


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
        #: The preview Labels layer (None until the first preview, or once removed).
        self.layer = None
        self._seq = 0
        self._latest: PreviewRequest | None = None
        self._pending = False
        self._painted: tuple[int, ...] | None = None
        self.result: PreviewResult | None = None
        self.request: PreviewRequest | None = None
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.update_now)

    def schedule(self, *_args) -> None:
        """Recompute the preview soon (restarts the debounce timer)."""
        if not self.runner.closed:
            self.timer.start()

    def ready(self) -> tuple[PreviewResult, PreviewRequest] | None:
        """The shown preview, if it is up to date with the latest prompts."""
        if self.timer.isActive() or self._pending or self.result is None or self.request is None:
            return None
        if self.result.seq != self._seq:
            return None
        return self.result, self.request

    @property
    def busy(self) -> bool:
        return self.timer.isActive() or self._pending or self.runner.running("preview")

    def update_now(self) -> None:
        """Build the request from the prompts now and start (or queue) its computation."""
        self.timer.stop()
        if self.runner.closed:
            return
        self._seq += 1
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

    def _start(self, seq: int, request: PreviewRequest) -> None:
        self.runner.start("preview", preview_task, self.holder, request.spec, request.mapped.prompt, seq,
                          on_event=lambda event: self._on_event(event, seq, request),
                          on_done=self._on_done, during="the live preview")

    def _on_event(self, event, seq: int, request: PreviewRequest) -> None:
        if isinstance(event, Status):
            self._messages.info(event.text)
        elif isinstance(event, Failed):
            if seq == self._seq:
                self.clear()
                self._messages.error(f"Preview failed: {event.message}")
        elif isinstance(event, PreviewResult) and event.seq == self._seq:
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
        layer = self.layer if self.layer is not None and self.layer in self.viewer.layers else None
        if layer is None and PREVIEW_NAME in self.viewer.layers \
                and isinstance(self.viewer.layers[PREVIEW_NAME], Labels):
            layer = self.viewer.layers[PREVIEW_NAME]
        transforms = layer_transform_kwargs(request.image)
        if layer is not None and (layer.data.shape != request.labels_shape
                                  or layer.ndim != request.image.ndim):
            self.viewer.layers.remove(layer)
            layer = None
        if layer is None:
            from napari.utils.colormaps import DirectLabelColormap

            active = self.viewer.layers.selection.active
            colormap = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0),
                                                       1: PREVIEW_COLOR})
            layer = self.viewer.add_labels(np.zeros(request.labels_shape, dtype=np.uint8),
                                           name=PREVIEW_NAME, opacity=0.5, colormap=colormap,
                                           **transforms)
            layer.editable = False
            place_below(self.viewer, layer, self._layers_above())
            self._painted = None
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        else:
            for name, value in transforms.items():
                if name != "affine":
                    setattr(layer, name, value)
        self.layer = layer
        return layer

    def _show(self, result: PreviewResult, request: PreviewRequest) -> None:
        try:
            layer = self._ensure_layer(request)
            if self._painted is not None and self._painted != request.plane:
                layer.data[self._painted] = 0
            layer.data[request.plane] = result.mask.astype(np.uint8)
            self._painted = request.plane
            layer.refresh()
        except Exception as exc:  # noqa: BLE001 - reported in the status line, never raised
            self._messages.error("Preview could not be shown: "
                                 + describe_error(exc, "showing the live preview"))
            return
        self.result, self.request = result, request
        where = "" if request.frame is None else f" on slice {request.frame}"
        self._messages.info(f"Preview of object {result.prompt.obj_id}{where}: "
                            f"{int(result.mask.sum())} pixels. C: commit")
        self.changed.emit()

    def clear(self) -> None:
        """Remove the shown preview (the layer stays)."""
        self.result = self.request = None
        layer = self.layer
        if layer is not None and layer in self.viewer.layers and self._painted is not None:
            layer.data[self._painted] = 0
            layer.refresh()
        self._painted = None
        self.changed.emit()

    def stop(self) -> None:
        self.timer.stop()
        self._pending = False
