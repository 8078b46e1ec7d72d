"""The "Setup" section: models (with their weights), device, precision, tiling, image and
axes."""

from __future__ import annotations

import logging

from napari.layers import Image
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFormLayout, QLabel, QSpinBox, QVBoxLayout, QWidget
from superqt import QCollapsible

from ..engine.tiling import TILING_MODES, Tiling
from .axes import AxesError, ImageAxes, StackKind, axis_options
from .layer_combo import LayerCombo
from .layout import ElidingComboBox
from .models_box import ModelsBox
from .prompt_layers import image_data
from .session import SetupChoices
from .status import Messages
from .workers import TaskRunner

__all__ = ["SetupPanel"]

logger = logging.getLogger(__name__)


#: The halo box's value meaning "the default" (1/8 of the tile).
AUTO_HALO = -1


class SetupPanel(QWidget):
    """Model, image and axis choices; device, precision, tiling and random weights under
    "Advanced".

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
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        layout.addLayout(form)
        self.image_combo = LayerCombo(viewer, Image)
        form.addRow("Image", self.image_combo)
        self.stack_combo = ElidingComboBox()
        self.stack_combo.setToolTip("The axis the frames run along, as z (slices) or t (time: the "
                                    "tracking dock works on it); 'none (2D slices)': each plane on "
                                    "its own, no propagation. The other non-spatial axis of 4D data "
                                    "is the outer axis")
        form.addRow("Stack axis", self.stack_combo)
        self.axes_label = QLabel()
        self.axes_label.setWordWrap(True)
        self.axes_label.setStyleSheet("color: gray;")
        self.axes_label.setVisible(False)
        form.addRow(self.axes_label)
        # rarely changed: device, precision, random weights
        self.device_combo = ElidingComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.device_combo.setMinimumContentsLength(4)
        self.device_combo.setToolTip("auto: CUDA, else MPS, else CPU")
        self.dtype_combo = ElidingComboBox()
        self.dtype_combo.addItems(["auto", "fp32", "bf16"])
        self.dtype_combo.setMinimumContentsLength(4)
        self.dtype_combo.setToolTip("Precision of the image encoders (auto: bf16 where it is fast)")
        self.tiling_combo = ElidingComboBox()
        self.tiling_combo.addItems(list(TILING_MODES))
        self.tiling_combo.setMinimumContentsLength(4)
        self.tiling_combo.setToolTip(
            "Images larger than the model input (1024 px): auto / on encode them as overlapping "
            "tiles at full resolution (each tile when first clicked in), so small objects keep "
            "their detail; off resizes the whole image to 1024 px. Objects wider than a tile "
            "are drawn on the whole image; propagation always uses whole images")
        self.halo_spin = QSpinBox()
        self.halo_spin.setRange(AUTO_HALO, 480)
        self.halo_spin.setSingleStep(16)
        self.halo_spin.setSuffix(" px")
        self.halo_spin.setSpecialValueText("auto")
        self.halo_spin.setValue(AUTO_HALO)
        self.halo_spin.setToolTip("Context around every pixel in some tile (tiles overlap by "
                                  "twice this); auto: 1/8 of the tile, 128 px")
        settings = QWidget()
        settings_form = QFormLayout(settings)
        settings_form.setContentsMargins(0, 0, 0, 0)
        settings_form.addRow("Device", self.device_combo)
        settings_form.addRow("Precision", self.dtype_combo)
        settings_form.addRow("Tiling", self.tiling_combo)
        settings_form.addRow("Tile halo", self.halo_spin)
        settings_form.addRow(self.models.random_check)
        advanced = QCollapsible("Advanced")
        advanced.addWidget(settings)
        layout.addWidget(advanced)
        self._options = []
        self.models.changed.connect(self._emit_changed)
        for combo in (self.device_combo, self.dtype_combo, self.tiling_combo, self.stack_combo):
            combo.currentIndexChanged.connect(self._emit_changed)
        self.halo_spin.valueChanged.connect(self._emit_changed)
        self.stack_combo.currentIndexChanged.connect(self._describe_axes)
        self.image_combo.layer_changed.connect(self._on_image)
        self._on_image(self.image_combo.current_layer())

    # ------------------------------------------------------------------ choices
    def image_layer(self):
        return self.image_combo.current_layer()

    def choices(self) -> SetupChoices:
        """What the section holds now."""
        index = self.stack_combo.currentIndex()
        stack = self._options[index] if 0 <= index < len(self._options) else None
        return SetupChoices(self.image_layer(), stack, self.models.interactive_choice(),
                            self.models.propagation_choice(), self.device_combo.currentText(),
                            self.dtype_combo.currentText(), self.tiling())

    def tiling(self) -> Tiling:
        """The tiling chosen under "Advanced"."""
        halo = self.halo_spin.value()
        return Tiling(self.tiling_combo.currentText(), halo=None if halo == AUTO_HALO else halo)

    def axes(self) -> ImageAxes:
        """The axis layout chosen for the image layer.

        Raises
        ------
        AxesError
            No image layer, or one the widget cannot segment.
        """
        return self.choices().axes()

    def select_stack(self, axis: int | None, kind: StackKind | str) -> None:
        """Choose stack axis `axis` as `kind` (``"z"``, ``"t"``; None and ``"planes"``: none)."""
        kind = StackKind(kind)
        for i, option in enumerate(self._options):
            if option.kind is kind and (kind is StackKind.PLANES or option.axis == axis):
                self.stack_combo.setCurrentIndex(i)
                return
        raise AxesError(f"axis {axis} as {kind.value} is not offered for this image")

    def _emit_changed(self, *_args) -> None:
        self.changed.emit(self.choices())

    # ------------------------------------------------------------------ image and axes
    def _on_image(self, layer) -> None:
        self.stack_combo.blockSignals(True)
        self.stack_combo.clear()
        self._options = []
        problem = ""
        try:
            if layer is not None:
                shape = image_data(layer).shape
                shape = shape[:-1] if getattr(layer, "rgb", False) else shape
                labels = tuple(str(a) for a in (getattr(layer, "axis_labels", ()) or ()))
                self._options, default = axis_options(shape, labels)
                for option in self._options:
                    self.stack_combo.addItem(option.text)
                self.stack_combo.setCurrentIndex(default)
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
        if axes.kind is StackKind.PLANES and axes.is_stack:
            parts.append("each plane segmented on its own: no propagation")
        elif axes.outer_axis is not None:
            parts.append(f"outer axis: {axes.outer_axis} (each position propagated on its own)")
        if axes.rgb:
            parts.append("RGB(A) channels: last axis")
        if not axes.is_stack:
            parts.append("2D image: no propagation")
        self._set_axes_text("; ".join(parts))

    def _set_axes_text(self, text: str) -> None:
        self.axes_label.setText(text)
        self.axes_label.setVisible(bool(text))
