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
from .session import SetupChoices
from .status import Messages
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
    messages : Messages
    random_weights : bool, optional
        Initial state of the (advanced) random-weights switch.

    Signals
    -------
    changed(SetupChoices)
        Any choice that affects the segmenter changed; the choices now.
    """

    changed = Signal(object)

    def __init__(self, viewer, runner: TaskRunner, messages: Messages, *,
                 random_weights: bool | None = None, parent=None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.models = ModelsBox(runner, messages, random_weights=random_weights)
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
        self.models.changed.connect(self._emit_changed)
        for combo in (self.device_combo, self.dtype_combo, self.stack_combo):
            combo.currentIndexChanged.connect(self._emit_changed)
        self.stack_combo.currentIndexChanged.connect(self._describe_axes)
        self.image_combo.layer_changed.connect(self._on_image)
        self._on_image(self.image_combo.current_layer())

    # ------------------------------------------------------------------ choices
    def image_layer(self):
        return self.image_combo.current_layer()

    def choices(self) -> SetupChoices:
        """What the section holds now."""
        stack = self.stack_combo.currentData() if self.stack_combo.count() else None
        stack = None if stack is None or stack < 0 else int(stack)
        return SetupChoices(self.image_layer(), stack, self.models.interactive_choice(),
                            self.models.propagation_choice(), self.device_combo.currentText(),
                            self.dtype_combo.currentText())

    def axes(self) -> ImageAxes:
        """The axis layout chosen for the image layer.

        Raises
        ------
        AxesError
            No image layer, or one the widget cannot segment.
        """
        return self.choices().axes()

    def _emit_changed(self, *_args) -> None:
        self.changed.emit(self.choices())

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
        self._emit_changed()

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

