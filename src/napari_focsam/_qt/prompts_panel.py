"""The "Prompts" section: which Points / Shapes layers hold the clicks and boxes."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import partial

from napari.layers import Points, Shapes
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from .layer_combo import LayerCombo
from .prompt_layers import (
    NEGATIVE_COLOR,
    POINTS_NAME,
    POSITIVE,
    POSITIVE_COLOR,
    SHAPES_NAME,
    MappedPrompts,
    make_points_layer,
    make_shapes_layer,
)
from .status import Messages

__all__ = ["PromptsPanel"]

logger = logging.getLogger(__name__)


class PromptsPanel(QWidget):
    """Prompt layer choice, "New prompt layers", positive / negative clicks, undo click.

    Parameters
    ----------
    viewer : napari.Viewer
    messages : Messages
    image_layer : callable
        ``() -> Image layer or None``: new prompt layers are aligned with it.

    Signals
    -------
    prompts_changed()
        Prompt data changed, or another prompt layer was chosen.
    layer_chosen(str, object)
        ``"points"`` or ``"shapes"``, and the layer now chosen for it (or None).
    layers_changed(object, object)
        The chosen Points and Shapes layers (or None), after either changed.
    """

    prompts_changed = Signal()
    layer_chosen = Signal(str, object)
    layers_changed = Signal(object, object)

    def __init__(self, viewer, messages: Messages, image_layer: Callable[[], object],
                 parent=None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._messages = messages
        self._image_layer = image_layer
        self.positive = True
        self._layers: dict[str, object] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.points_combo = LayerCombo(viewer, Points, none_text="(none)", auto_select=False)
        self.shapes_combo = LayerCombo(viewer, Shapes, none_text="(none)", auto_select=False)
        for combo in (self.points_combo, self.shapes_combo):  # two on one row: narrow minimum
            combo.setMinimumContentsLength(3)
        self.points_combo.setToolTip("Points layer of the clicks")
        self.shapes_combo.setToolTip("Shapes layer of the boxes (rectangles) and mask prompts "
                                     "(polygons, ellipses)")
        row = QHBoxLayout()
        row.addWidget(QLabel("Points"))
        row.addWidget(self.points_combo, 1)
        row.addWidget(QLabel("Boxes"))
        row.addWidget(self.shapes_combo, 1)
        layout.addLayout(row)
        row = QHBoxLayout()
        self.new_button = QPushButton("New prompt layers")
        self.new_button.setToolTip("Add a Points layer for clicks and a Shapes layer for boxes")
        self.polarity_button = QPushButton()
        self.polarity_button.setCheckable(True)
        self.polarity_button.setToolTip("New clicks are positive (object) or negative (background)")
        row.addWidget(self.new_button)
        row.addWidget(self.polarity_button)
        layout.addLayout(row)
        self.new_button.clicked.connect(lambda: self.new_prompt_layers())
        self.polarity_button.clicked.connect(lambda: self.toggle_polarity())
        self.points_combo.layer_changed.connect(partial(self._on_layer, "points"))
        self.shapes_combo.layer_changed.connect(partial(self._on_layer, "shapes"))
        self._update_polarity()

    def points_layer(self):
        return self.points_combo.current_layer()

    def shapes_layer(self):
        return self.shapes_combo.current_layer()

    def new_prompt_layers(self):
        """Add a Points layer (positive / negative clicks) and a Shapes layer (boxes), empty and
        aligned with the image; FocSAM prompt layers made earlier are replaced."""
        image = self._image_layer()
        old = [layer for layer in self.viewer.layers
               if isinstance(layer, (Points, Shapes))
               and re.sub(r" \[\d+\]$", "", layer.name) in (POINTS_NAME, SHAPES_NAME)]
        for layer in old:
            self.viewer.layers.remove(layer)
        shapes = make_shapes_layer(self.viewer, image)
        points = make_points_layer(self.viewer, image, positive=self.positive)
        self.points_combo.set_layer(points)
        self.shapes_combo.set_layer(shapes)
        self.viewer.layers.selection.active = points
        points.mode = "add"
        self._messages.info("Click on an object (shift+click: negative point); in "
                            f"'{shapes.name}' a rectangle is a box, a polygon or ellipse a mask")
        return points, shapes

    def _on_layer(self, kind: str, layer) -> None:
        previous = self._layers.pop(kind, None)
        if previous is not None:
            previous.events.data.disconnect(self._on_data)
        self.layer_chosen.emit(kind, layer)
        if layer is not None:
            layer.events.data.connect(self._on_data)
            self._layers[kind] = layer
            if kind == "points" and POSITIVE in layer.features.columns:
                self._set_click_default(layer)
        self.layers_changed.emit(self.points_layer(), self.shapes_layer())
        self.prompts_changed.emit()

    def _on_data(self, _event=None) -> None:
        self.prompts_changed.emit()

    def remove(self, mapped: MappedPrompts) -> None:
        """Remove the points and shapes a committed prompt was built from."""
        for layer, indices in ((self.points_layer(), mapped.point_indices),
                               (self.shapes_layer(), mapped.shape_indices)):
            if layer is not None and indices:
                layer.selected_data = {i for i in indices if i < len(layer.data)}
                layer.remove_selected()

    def undo_click(self) -> bool:
        """Remove the last point of the points layer; False (and a message) if there is none."""
        points = self.points_layer()
        if points is None or not len(points.data):
            self._messages.error("No click to undo")
            return False
        points.selected_data = {len(points.data) - 1}
        points.remove_selected()
        self._messages.info("Removed the last click")
        return True

    def toggle_polarity(self) -> None:
        """Switch new clicks between positive and negative."""
        self.positive = not self.positive
        points = self.points_layer()
        if points is not None and POSITIVE in points.features.columns:
            self._set_click_default(points)
        elif points is not None:
            self._messages.error("This points layer has no 'positive' feature: all its points are "
                                 "positive (use 'New prompt layers' for negative clicks)")
        self._update_polarity()

    def set_negative(self, indices) -> None:
        """Mark points `indices` of the points layer negative."""
        points = self.points_layer()
        if points is None or POSITIVE not in points.features.columns:
            return
        features = points.features
        features.loc[features.index[list(indices)], POSITIVE] = False
        points.refresh_colors(update_color_mapping=False)
        # napari then selects the new point, which makes its (negative) feature the default
        # of the next click: put the default back once that is done
        QTimer.singleShot(0, self._reset_click_default)
        self.prompts_changed.emit()

    def _reset_click_default(self) -> None:
        points = self.points_layer()
        if points is not None and POSITIVE in points.features.columns:
            self._set_click_default(points)

    def _set_click_default(self, points) -> None:
        """The next click's `POSITIVE` feature and face colour (the layer controls show it)."""
        points.feature_defaults = {POSITIVE: self.positive}
        with points.block_update_properties():  # the selected points keep their colour
            points.current_face_color = POSITIVE_COLOR if self.positive else NEGATIVE_COLOR

    def _update_polarity(self) -> None:
        self.polarity_button.setChecked(not self.positive)
        self.polarity_button.setText("Clicks: positive (T)" if self.positive else "Clicks: negative (T)")
