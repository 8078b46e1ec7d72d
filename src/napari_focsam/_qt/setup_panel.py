"""The "Setup" section: models (with their weights), device, precision, image and axes."""

from __future__ import annotations

import logging

from napari.layers import Image
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget
from superqt import QCollapsible

from .axes import AxesError, ImageAxes, stack_axis_choices
from .layer_combo import LayerCombo
from .models_box import ModelsBox
from .prompt_layers import image_data
from .session import ModelChoice
from .workers import TaskRunner

__all__ = ["SetupPanel"]

logger = logging.getLogger(__name__)


class SetupPanel(QWidget):
    """Model, device, image and axis choices.

    Parameters
    ----------
    viewer : napari.Viewer
    runner : TaskRunner
        Runs weight downloads.
    random_weights : bool, optional
        Initial state of the (advanced) random-weights switch.

    Signals
    -------
    changed()
        Any choice that affects the segmenter changed.
    image_changed(object)
        The image layer (or None).
    status(str, bool)
        A message (and whether it is an error).
    busy()
        A weights download started or ended.
    """

    changed = Signal()
    image_changed = Signal(object)
    status = Signal(str, bool)
    busy = Signal()

    def __init__(self, viewer, runner: TaskRunner, *, random_weights: bool | None = None,
                 parent=None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.models = ModelsBox(runner, random_weights=random_weights)
        layout.addWidget(self.models)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.dtype_combo = QComboBox()
        self.dtype_combo.addItems(["auto", "fp32", "bf16"])
        row = QHBoxLayout()
        row.addWidget(self.device_combo, 1)
        row.addWidget(QLabel("Precision"))
        row.addWidget(self.dtype_combo, 1)
        form.addRow("Device", row)
        self.image_combo = LayerCombo(viewer, Image)
        form.addRow("Image", self.image_combo)
        self.stack_combo = QComboBox()
        self.stack_combo.setToolTip("Axis the frames run along (z or t); the other non-spatial axis "
                                    "of 4D data is the outer axis")
        form.addRow("Stack axis", self.stack_combo)
        self.axes_label = QLabel()
        self.axes_label.setWordWrap(True)
        self.axes_label.setStyleSheet("color: gray;")
        self.axes_label.setVisible(False)
        form.addRow(self.axes_label)
        advanced = QCollapsible("Advanced")
        advanced.addWidget(self.models.random_check)
        layout.addWidget(advanced)
        self.models.changed.connect(self.changed)
        self.models.status.connect(self.status)
        self.models.busy.connect(self.busy)
        for combo in (self.device_combo, self.dtype_combo, self.stack_combo):
            combo.currentIndexChanged.connect(self.changed)
        self.stack_combo.currentIndexChanged.connect(self._describe_axes)
        self.image_combo.layer_changed.connect(self._on_image)
        self._on_image(self.image_combo.current_layer())

    # ------------------------------------------------------------------ choices
    @property
    def random_weights(self) -> bool:
        return self.models.random_weights

    def image_layer(self):
        return self.image_combo.current_layer()

    def axes(self) -> ImageAxes:
        """The axis layout chosen for the image layer.

        Raises
        ------
        AxesError
            No image layer, or one the widget cannot segment.
        """
        image = self.image_layer()
        if image is None:
            raise AxesError("no image layer: open an image and choose it under Setup")
        stack = self.stack_combo.currentData() if self.stack_combo.count() else None
        stack = None if stack is None or stack < 0 else int(stack)
        return ImageAxes(int(image.ndim), stack, bool(getattr(image, "rgb", False)))

    def interactive_choice(self) -> ModelChoice:
        return self.models.interactive_choice()

    def propagation_choice(self) -> ModelChoice:
        return self.models.propagation_choice()

    def device(self) -> str:
        return self.device_combo.currentText()

    def dtype(self) -> str:
        return self.dtype_combo.currentText()

    def select_models(self, interactive: str | None = None, propagation: str | None = None) -> None:
        """Select models by id (e.g. ``"sam_test_tiny"`` in random-weights mode)."""
        self.models.select_models(interactive, propagation)

    def set_stack_axis(self, axis: int | None) -> None:
        """Choose the stack axis (None for a 2D image)."""
        index = self.stack_combo.findData(-1 if axis is None else int(axis))
        if index < 0:
            raise AxesError(f"axis {axis} cannot be the stack axis of this image")
        self.stack_combo.setCurrentIndex(index)

    # ------------------------------------------------------------------ image and axes
    def _on_image(self, layer) -> None:
        self.stack_combo.blockSignals(True)
        self.stack_combo.clear()
        problem = ""
        try:
            if layer is not None:
                labels = tuple(getattr(layer, "axis_labels", ()) or ())
                for axis in stack_axis_choices(int(layer.ndim)):
                    if axis is None:
                        self.stack_combo.addItem("none (2D image)", -1)
                        continue
                    name = labels[axis] if axis < len(labels) else ""
                    named = f" ({name})" if name and not name.lstrip("-").isdigit() else ""
                    size = image_data(layer).shape[axis]
                    self.stack_combo.addItem(f"axis {axis}{named}: {size} frames", axis)
                # default: the axis just before the spatial ones (z of t, z, y, x)
                self.stack_combo.setCurrentIndex(self.stack_combo.count() - 1)
        except AxesError as exc:
            problem = str(exc)
        finally:
            self.stack_combo.blockSignals(False)
        self._describe_axes()
        if problem:
            self._set_axes_text(problem)
        self.image_changed.emit(layer)
        self.changed.emit()

    def _describe_axes(self, *_args) -> None:
        try:
            axes = self.axes()
        except AxesError as exc:
            self._set_axes_text(str(exc) if self.image_layer() is not None else "")
            return
        parts = []
        if axes.outer_axis is not None:
            parts.append(f"outer axis: {axes.outer_axis} (each position propagated on its own)")
        if axes.rgb:
            parts.append("RGB(A) channels: last axis")
        if not axes.is_stack:
            parts.append("2D image: no propagation")
        self._set_axes_text("; ".join(parts))

    def _set_axes_text(self, text: str) -> None:
        self.axes_label.setText(text)
        self.axes_label.setVisible(bool(text))

