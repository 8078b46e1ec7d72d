"""The "Segment all" section: automatic mask generation ("segment everything") in the dock.

- **This slice**: the objects found on the slice being viewed are shown in a preview layer
  (`PREVIEW_NAME`) with their count in the status line; the labels are not touched until
  *Add* writes them (one napari undo step on the labels layer) or *Discard* drops them. A new
  search replaces the preview (the slice's features are cached: only the decoder runs again).
- **Every slice**: every plane of the stack is searched in a worker, and each plane is written
  into the labels layer once all its objects are found; a cancel or a failure leaves the plane
  being searched, and every later one, as it was.

New objects get ids above the labels layer's largest; "add to background" never overwrites
existing labels, "replace" clears the plane first (`api.automatic.paint_masks`). The settings
start at the interactive model's defaults (`api.automatic.default_params`, filled in once the
model is loaded); the ones the user changed are kept across models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..api.automatic import EVERYTHING_MODES, paint_masks
from ..api.segmenter import Progress
from ..engine.automatic import AutoMask, AutoMaskParams
from ..errors import UserError
from .axes import ImageAxes
from .commit import LabelsLayerError, next_label_id, record_stack, writable_plane
from .controller import USER_CANCEL, SegmentationController
from .layout import MAX_AREA, ElidingComboBox, SpinField, make_spin_box
from .prompt_layers import layer_transform_kwargs, place_below
from .tasks import EverythingFrame, EverythingSettings, Failed, Status, describe_error, everything_task
from .workers import Task

__all__ = ["PREVIEW_NAME", "SCOPES", "EverythingPanel", "EverythingPreview", "EverythingRun",
           "SegmentAll", "new_objects"]

logger = logging.getLogger(__name__)

#: Name of the preview layer of "this slice".
PREVIEW_NAME = "FocSAM segment all (preview)"
#: Where objects are searched: the slice being viewed, or every slice of the stack.
SCOPES = ("slice", "stack")
#: The runner's name of the task.
TASK = "everything"
_MODE_TEXT = {"only_background": "add to background", "replace": "replace the slice"}


def new_objects(base: np.ndarray, masks, *, first_id: int, mode: str,
                min_area: int) -> tuple[np.ndarray, list[int]]:
    """The new objects of one plane alone: `paint_masks` of `masks` over `base`, with every
    pixel not of a new object set to 0.

    Returns
    -------
    labels : np.ndarray
        ``(H, W)`` in `base`'s dtype: the new objects' ids, 0 elsewhere.
    ids : list of int
        The new ids (consecutive from `first_id`).
    """
    out, ids = paint_masks(base, masks, first_id=first_id, mode=mode, min_area=min_area)
    if not ids:
        return np.zeros_like(out), ids
    return np.where((out >= ids[0]) & (out <= ids[-1]), out, 0).astype(out.dtype, copy=False), ids


@dataclass(eq=False)
class EverythingRun:
    """The running search.

    Attributes
    ----------
    scope : {"slice", "stack"}
    image : napari.layers.Image
    axes : ImageAxes
    labels_shape : tuple of int
    mode : {"only_background", "replace"}
    generation : int
        The segmenter spec's generation (the image data it ran on).
    target : napari.layers.Labels or None
        Where a "stack" run writes (None for "slice").
    next_id : int
        First id of the next plane's objects ("stack").
    params : AutoMaskParams or None
        The settings used (known once the model is loaded).
    frames_written, objects : int
        Planes written and objects added so far ("stack").
    """

    scope: str
    image: object
    axes: ImageAxes
    labels_shape: tuple[int, ...]
    mode: str
    generation: int
    target: object = None
    next_id: int = 1
    params: AutoMaskParams | None = None
    frames_written: int = 0
    objects: int = 0


@dataclass(eq=False)
class EverythingPreview:
    """Objects found on one plane, shown in the preview layer until added or discarded.

    Attributes
    ----------
    image : napari.layers.Image
    axes : ImageAxes
    labels_shape : tuple of int
    generation : int
    frame, outer : int or None
    masks : tuple of AutoMask
    params : AutoMaskParams
    mode : str
    count : int
        Objects shown (those with visible pixels).
    """

    image: object
    axes: ImageAxes
    labels_shape: tuple[int, ...]
    generation: int
    frame: int | None
    outer: int | None
    masks: tuple[AutoMask, ...]
    params: AutoMaskParams
    mode: str
    count: int

    @property
    def plane(self) -> tuple[int, ...]:
        return self.axes.plane_index(self.frame, self.outer)

    @property
    def where(self) -> str:
        return "" if self.frame is None else f" on slice {self.frame}"


class SegmentAll(QObject):
    """Runs "Segment all", shows the preview of "this slice" and writes the objects.

    Parameters
    ----------
    viewer : napari.Viewer
    controller : SegmentationController
        Its segmenter spec, runner, holder, image layer and messages.
    target_layer : callable
        ``() -> Labels layer or None``: the labels layer objects are written into.
    new_target_layer : callable
        ``() -> Labels layer``: adds one shaped like the image and makes it the target.

    Attributes
    ----------
    run : EverythingRun or None
    preview : EverythingPreview or None
    layer : napari.layers.Labels or None
        The preview layer.

    Signals
    -------
    progress(str, int, int)
        Text, done and total decoder batches of the running search.
    defaults_changed(AutoMaskParams)
        The interactive model's defaults, once a run has loaded it.
    changed()
        A search started or ended, a preview was shown, added or discarded, or the image or
        its axes changed.
    """

    progress = Signal(str, int, int)
    defaults_changed = Signal(object)
    changed = Signal()

    def __init__(self, viewer, controller: SegmentationController, *,
                 target_layer: Callable[[], object], new_target_layer: Callable[[], object],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._controller = controller
        self._target_layer = target_layer
        self._new_target_layer = new_target_layer
        self.run: EverythingRun | None = None
        self.preview: EverythingPreview | None = None
        self.layer = None
        self._painted: tuple[int, ...] | None = None
        viewer.layers.events.removed.connect(self._on_layer_removed)
        controller.spec_changed.connect(self.changed)

    @property
    def running(self) -> bool:
        """Whether a search runs."""
        return self.run is not None

    def is_stack(self) -> bool:
        """Whether the chosen image has slices ("every slice" can run)."""
        try:
            return self._controller.axes().is_stack
        except UserError:
            return False

    # ------------------------------------------------------------------ start
    def start(self, scope: str, overrides: dict, mode: str = "only_background") -> bool:
        """Search the slice being viewed (``"slice"``) or every slice (``"stack"``) with the
        model's defaults and `overrides` (`AutoMaskParams` fields); False, with a message,
        when it cannot start."""
        controller = self._controller
        messages, runner = controller.messages, controller.runner
        if scope not in SCOPES or mode not in EVERYTHING_MODES:
            raise ValueError(f"scope {scope!r} / mode {mode!r}")
        if runner.running(TASK):
            messages.error("Segment all is already running: wait for it or cancel it")
            return False
        try:
            AutoMaskParams().replace(**overrides)  # the checks do not depend on the defaults
            spec = controller.spec()
        except Exception as exc:  # noqa: BLE001 - reported in the status line, never raised
            messages.error(f"Segment all: {describe_error(exc, 'the segment-all settings')}")
            return False
        axes, image = spec.axes, controller.image_layer()
        labels_shape = axes.labels_shape(spec.data.shape)
        run = EverythingRun(scope if axes.is_stack else "slice", image, axes, labels_shape, mode,
                            spec.generation)
        if run.scope == "slice":
            frame, outer = axes.position(image.world_to_data(self.viewer.dims.point))
            if not axes.in_range(labels_shape, frame, outer):
                messages.error("The slice being viewed is outside the image: move to one of its "
                               "slices")
                return False
            planes = [(frame, outer)]
        else:
            if runner.running("propagate"):
                messages.error("Propagation is running: segment every slice when it ends (or "
                               "cancel it)")
                return False
            try:
                run.target = self._stack_target(labels_shape)
            except UserError as exc:
                messages.error(str(exc))
                return False
            run.next_id = next_label_id(run.target.data)
            record_stack(run.target, axes)
            self.discard(quiet=True)  # its ids and pixels would be stale
            planes = None
        self.run = run
        runner.start(TASK, everything_task, controller.holder, spec, planes, dict(overrides),
                     on_event=lambda event: self._on_event(event, run), on_done=self._on_done,
                     during="segment all")
        self.changed.emit()
        return True

    def _stack_target(self, labels_shape: tuple[int, ...]):
        """The labels layer a "stack" run writes into (a new one when none is chosen)."""
        target = self._target_layer() or self._new_target_layer()
        if tuple(target.data.shape) != tuple(labels_shape):
            raise LabelsLayerError(f"The labels layer '{target.name}' has shape {target.data.shape},"
                                   f" the image needs {labels_shape}: choose another or click 'New'")
        writable_plane(target, ())
        return target

    # ------------------------------------------------------------------ events
    def _on_event(self, event, run: EverythingRun) -> None:
        if run is not self.run:
            return
        messages = self._controller.messages
        if isinstance(event, Status):
            messages.info(event.text)
        elif isinstance(event, EverythingSettings):
            run.params = event.params
            self.defaults_changed.emit(event.defaults)
        elif isinstance(event, Failed) and not event.cancelled:  # a cancel is reported at the end
            kept = (f"; the {run.frames_written} slice(s) written are kept"
                    if run.scope == "stack" else "")
            messages.error(f"Segment all failed: {event.message}{kept}")
        elif isinstance(event, EverythingFrame):
            if run.scope == "slice":
                self._show(run, event)
            else:
                self._write(run, event)
        elif isinstance(event, Progress):
            self.progress.emit("Segment all", event.done, event.total)

    def _on_done(self, task: Task) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        self.changed.emit()
        messages = self._controller.messages
        if task.cancelled:
            kept = (f"; the {run.frames_written} slice(s) written ({run.objects} objects) are kept"
                    if run.scope == "stack" else "")
            text = f"Segment all stopped ({task.reason}){kept}"
            if task.reason == USER_CANCEL:
                messages.info(text)
            else:
                messages.error(text)
        elif task.failed is None and run.scope == "stack":
            messages.info(f"Segment all: {run.objects} new object(s) on {run.frames_written} "
                          f"slice(s) of '{run.target.name}'")

    def _write(self, run: EverythingRun, event: EverythingFrame) -> None:
        """Write one plane's objects into the run's labels layer."""
        target = run.target
        if target not in self.viewer.layers or run.params is None:
            return
        plane_index = run.axes.plane_index(event.frame, event.outer)
        try:
            plane = writable_plane(target, plane_index)
            first = max(run.next_id, int(plane.max(initial=0)) + 1)
            out, ids = paint_masks(plane, event.masks, first_id=first, mode=run.mode,
                                   min_area=run.params.min_area)
        except UserError as exc:  # e.g. ids beyond the layer's dtype
            self._controller.runner.cancel(TASK, str(exc))
            return
        plane[...] = out
        target.refresh()
        target.events.data(value=target.data)  # new ids: listeners re-read the largest label
        run.next_id = first + len(ids)
        run.frames_written += 1
        run.objects += len(ids)
        self.progress.emit("Segment all", event.progress.done, event.progress.total)

    # ------------------------------------------------------------------ the preview
    def _show(self, run: EverythingRun, event: EverythingFrame) -> None:
        """Show the objects found on the plane in the preview layer (labels untouched)."""
        messages = self._controller.messages
        preview = EverythingPreview(run.image, run.axes, run.labels_shape, run.generation,
                                    event.frame, event.outer, event.masks, run.params, run.mode, 0)
        target = self._target_layer()
        if target is not None and tuple(target.data.shape) != tuple(run.labels_shape):
            target = None
        if target is not None and isinstance(target.data, np.ndarray):
            base, first = np.asarray(target.data[preview.plane]), next_label_id(target.data)
        else:
            base, first = np.zeros(run.labels_shape[-2:], dtype=np.int32), 1
        try:
            shown, ids = new_objects(base, event.masks, first_id=first, mode=run.mode,
                                     min_area=run.params.min_area)
            layer = self._ensure_layer(preview, shown.dtype)
            if self._painted is not None:
                layer.data[self._painted] = 0
            layer.data[preview.plane] = shown
            self._painted = preview.plane
            layer.refresh()
        except Exception as exc:  # noqa: BLE001 - reported in the status line, never raised
            messages.error("Segment all: the preview could not be shown: "
                           + describe_error(exc, "showing the segment-all preview"))
            return
        preview.count = len(ids)
        self.preview = preview
        self.changed.emit()
        if not ids:
            messages.info(f"No objects found{preview.where} with these settings: lower the "
                          "predicted IoU or stability thresholds, or widen the area range")
            return
        hidden = len(event.masks) - len(ids)
        extra = f" ({hidden} more lie under existing labels)" if hidden else ""
        messages.info(f"Found {len(ids)} object(s){preview.where} (preview){extra}: 'Add' writes "
                      "them into the labels, 'Discard' drops them")

    def _ensure_layer(self, preview: EverythingPreview, dtype):
        layer = self.layer if self.layer is not None and self.layer in self.viewer.layers else None
        if layer is not None and (layer.data.shape != preview.labels_shape
                                  or layer.data.dtype != dtype
                                  or layer.ndim != preview.image.ndim):
            self._remove_layer()
            layer = None
        if layer is None:
            active = self.viewer.layers.selection.active
            layer = self.viewer.add_labels(np.zeros(preview.labels_shape, dtype=dtype),
                                           name=PREVIEW_NAME, opacity=0.6,
                                           **layer_transform_kwargs(preview.image))
            layer.editable = False
            place_below(self.viewer, layer, self._controller.prompt_layers())
            self._painted = None
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        self.layer = layer
        return layer

    def _remove_layer(self) -> None:
        layer, self.layer = self.layer, None
        self._painted = None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def add(self) -> bool:
        """Write the previewed objects into the target labels layer (a new one when none is
        chosen); True when done."""
        messages, preview = self._controller.messages, self.preview
        if preview is None:
            messages.error("Nothing to add: find the objects of a slice first")
            return False
        if self._controller.image_layer() is not preview.image or not self._same_data(preview):
            self.discard(quiet=True)
            messages.error("The image changed since the preview: find the objects again")
            return False
        if not preview.count:
            messages.error(f"Nothing to add: no objects were found{preview.where}")
            return False
        try:
            target = self._target_layer() or self._new_target_layer()
            if tuple(target.data.shape) != tuple(preview.labels_shape):
                raise LabelsLayerError(
                    f"The labels layer '{target.name}' has shape {target.data.shape}, the image "
                    f"needs {preview.labels_shape}: choose another or click 'New'")
            plane = writable_plane(target, preview.plane)
            first = next_label_id(target.data)
            out, ids = paint_masks(plane, preview.masks, first_id=first, mode=preview.mode,
                                   min_area=preview.params.min_area)
        except UserError as exc:
            messages.error(str(exc))
            return False
        rows, cols = np.nonzero(plane != out)
        index = tuple(np.full(len(rows), i, dtype=np.intp) for i in preview.plane) + (rows, cols)
        target.data_setitem(index, out[rows, cols])  # one undo step of the labels layer
        record_stack(target, preview.axes)
        self._drop_preview()
        span = f"id {ids[0]}" if len(ids) == 1 else f"ids {ids[0]}–{ids[-1]}" if ids else "no ids"
        messages.info(f"Added {len(ids)} object(s) ({span}) to '{target.name}'{preview.where} "
                      f"(Ctrl+Z on the labels layer undoes it)")
        return True

    def discard(self, *, quiet: bool = False) -> bool:
        """Drop the preview (the labels are untouched); False when there is none."""
        preview = self.preview
        if preview is None:
            if not quiet:
                self._controller.messages.error("Nothing to discard")
            return False
        self._drop_preview()
        if not quiet:
            self._controller.messages.info(f"Discarded the {preview.count} object(s) found"
                                           f"{preview.where}")
        return True

    def _drop_preview(self) -> None:
        self.preview = None
        self._remove_layer()
        self.changed.emit()

    def _same_data(self, preview: EverythingPreview) -> bool:
        try:
            return self._controller.spec().generation == preview.generation
        except UserError:
            return False

    # ------------------------------------------------------------------ layers
    def _on_layer_removed(self, event) -> None:
        if self._controller.runner.closed:
            return
        layer = event.value
        run = self.run
        if run is not None and any(layer is other for other in (run.target, run.image)):
            kind = "labels" if isinstance(layer, Labels) else "image"
            self._controller.runner.cancel(TASK, f"the {kind} layer '{layer.name}' was removed")
        if layer is self.layer:
            self.layer = None
            self._painted = None
            if self.preview is not None:
                self.preview = None
                self.changed.emit()
                self._controller.messages.info("Segment-all preview discarded (its layer was "
                                               "removed)")
        elif self.preview is not None and layer is self.preview.image:
            self._drop_preview()


_FIELDS = (
    SpinField("points_per_side", "Points per side", "Clicks along each side of the grid laid over "
              "the slice (n² clicks; the time grows with n²)", 1, 256),
    SpinField("pred_iou_thresh", "Min. predicted IoU", "Keep masks whose IoU predicted by the model "
              "is above this (lower: more, less certain objects)", 0, 1, 0.01, 3),
    SpinField("stability_score_thresh", "Min. stability", "Keep masks that change little when the "
              "mask threshold moves (lower: more objects with fuzzy borders)", 0, 1, 0.01, 3),
    SpinField("min_area", "Min. area", "Drop objects of fewer pixels (also those left this small "
              "by existing labels)", 0, MAX_AREA, 10, 0, " px", "off"),
    SpinField("max_area", "Max. area", "Drop objects of more pixels (e.g. the background or "
              "clumps)", 0, MAX_AREA, 100, 0, " px", "off"),
    SpinField("points_per_batch", "Clicks per batch", "Clicks decoded at once (memory, not "
              "results)", 1, 4096, 16, advanced=True),
    SpinField("box_nms_thresh", "Box NMS", "Of two masks whose boxes overlap more than this "
              "(IoU), the less certain one is dropped", 0, 1, 0.05, 2, advanced=True),
    SpinField("crop_n_layers", "Crop layers", "Also search 2×2, 4×4… zoomed-in crops of the slice "
              "(small objects; each crop is encoded, much slower)", 0, 4, advanced=True),
    SpinField("crop_n_points_downscale_factor", "Crop points ÷", "Points per side are divided by "
              "this on each crop layer", 1, 16, advanced=True),
    SpinField("min_mask_region_area", "Min. region", "Fill holes and remove islands smaller than "
              "this in every mask", 0, 1 << 20, 10, 0, " px", "off", advanced=True),
)
_NAMES = {f.name for f in fields(AutoMaskParams)}
assert all(f.name in _NAMES for f in _FIELDS)


class EverythingPanel(QWidget):
    """Scope, mode and settings of "Segment all", and its buttons.

    Parameters
    ----------
    segment_all : SegmentAll
        Runs the search; its state enables the buttons.
    """

    def __init__(self, segment_all: SegmentAll, parent=None) -> None:
        super().__init__(parent)
        self._segment_all = segment_all
        self._defaults = AutoMaskParams()
        self._touched: set[str] = set()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        layout.addLayout(form)
        self.scope_combo = ElidingComboBox()
        self.scope_combo.addItems(["this slice (preview)", "every slice"])
        self.scope_combo.setToolTip("This slice: preview the objects, then add or discard them. "
                                    "Every slice: write each slice's objects as it is done")
        form.addRow("Scope", self.scope_combo)
        self.mode_combo = ElidingComboBox()
        for mode in EVERYTHING_MODES:
            self.mode_combo.addItem(_MODE_TEXT[mode], mode)
        self.mode_combo.setToolTip("Add to background: existing labels are kept, new objects fill "
                                   "only unlabelled pixels. Replace: the slice's labels are "
                                   "cleared first")
        form.addRow("New objects", self.mode_combo)
        self.boxes: dict[str, QSpinBox | QDoubleSpinBox] = {}
        advanced_form = QFormLayout()
        advanced_form.setContentsMargins(0, 0, 0, 0)
        for spec in _FIELDS:
            box = self._make_box(spec)
            self.boxes[spec.name] = box
            (advanced_form if spec.advanced else form).addRow(spec.label, box)
        self.defaults_button = QPushButton("Model defaults")
        self.defaults_button.setToolTip("Set every setting to the interactive model's defaults "
                                        "(SAM 2's differ from SAM's)")
        advanced_form.addRow(self.defaults_button)
        settings = QWidget()
        settings.setLayout(advanced_form)
        self.advanced = QCollapsible("Advanced")
        self.advanced.addWidget(settings)
        layout.addWidget(self.advanced)
        row = QHBoxLayout()
        self.run_button = QPushButton("Find objects")
        self.add_button = QPushButton("Add")
        self.add_button.setToolTip("Write the previewed objects into the labels layer")
        self.discard_button = QPushButton("Discard")
        self.discard_button.setToolTip("Drop the preview; the labels stay as they are")
        row.addWidget(self.run_button, 1)
        row.addWidget(self.add_button)
        row.addWidget(self.discard_button)
        layout.addLayout(row)
        self.set_defaults(self._defaults)

        self.run_button.clicked.connect(self.run)
        self.add_button.clicked.connect(segment_all.add)
        self.discard_button.clicked.connect(lambda: segment_all.discard())
        self.defaults_button.clicked.connect(self.reset)
        self.scope_combo.currentIndexChanged.connect(self._refresh)
        segment_all.defaults_changed.connect(self.set_defaults)
        segment_all.changed.connect(self._refresh)
        self._refresh()

    def _make_box(self, spec: SpinField) -> QSpinBox | QDoubleSpinBox:
        box = make_spin_box(spec)
        box.valueChanged.connect(lambda _value, name=spec.name: self._touched.add(name))
        return box

    # ------------------------------------------------------------------ settings
    def scope(self) -> str:
        """``"slice"`` or ``"stack"``."""
        return SCOPES[max(self.scope_combo.currentIndex(), 0)]

    def mode(self) -> str:
        return str(self.mode_combo.currentData())

    def set_scope(self, scope: str) -> None:
        self.scope_combo.setCurrentIndex(SCOPES.index(scope))

    def set_mode(self, mode: str) -> None:
        self.mode_combo.setCurrentIndex(EVERYTHING_MODES.index(mode))

    def set_value(self, name: str, value) -> None:
        """Set one setting as the user would (it then overrides the model's default)."""
        self.boxes[name].setValue(0 if value is None else value)
        self._touched.add(name)

    def overrides(self) -> dict:
        """The settings the user changed, as `AutoMaskParams` fields."""
        out = {}
        for name in sorted(self._touched):
            value = self.boxes[name].value()
            if name == "max_area":
                value = int(value) or None
            out[name] = value
        return out

    def set_defaults(self, defaults: AutoMaskParams) -> None:
        """The interactive model's defaults: shown in every setting the user did not change."""
        self._defaults = defaults
        for name, box in self.boxes.items():
            if name in self._touched:
                continue
            value = getattr(defaults, name)
            box.blockSignals(True)
            box.setValue(0 if value is None else value)
            box.blockSignals(False)

    def reset(self) -> None:
        """Every setting back to the model's defaults."""
        self._touched.clear()
        self.set_defaults(self._defaults)

    # ------------------------------------------------------------------ actions
    def run(self) -> bool:
        """Start the search with the panel's choices."""
        return self._segment_all.start(self.scope(), self.overrides(), self.mode())

    def _refresh(self, *_args) -> None:
        segment_all = self._segment_all
        stack = segment_all.is_stack()
        if not stack and self.scope_combo.currentIndex() != 0:
            self.scope_combo.setCurrentIndex(0)  # calls _refresh again
            return
        self.scope_combo.setEnabled(stack)
        self.run_button.setEnabled(not segment_all.running)
        self.run_button.setText("Find objects" if self.scope() == "slice" else "Segment every slice")
        previewed = segment_all.preview is not None
        self.add_button.setEnabled(previewed)
        self.discard_button.setEnabled(previewed)

