"""The "Objects" and "Propagate" sections: commit / undo into a Labels layer, propagation."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .axes import AxesError
from .commit import ObjectBook, next_label_id, paint_object, undo_edit
from .layer_combo import LayerCombo
from .live import PREVIEW_NAME
from .prompt_layers import layer_transform_kwargs, place_below
from .propagation import PropagationMixin, writable_plane

__all__ = ["ObjectsPanel"]

logger = logging.getLogger(__name__)


class ObjectsPanel(PropagationMixin, QWidget):
    """Target Labels layer, commit / undo, the committed objects, propagation.

    Parameters
    ----------
    owner : FocSamWidget
        Gives the viewer, prompt layers, live preview, runner, segmenter spec and status.

    Signals
    -------
    objects_changed()
        An object was committed, undone or propagated.
    """

    objects_changed = Signal()

    def __init__(self, owner, parent=None) -> None:
        super().__init__(parent)
        self.owner = owner
        self.viewer = owner.viewer
        self.book = ObjectBook()
        self._book_layer = None
        self._propagation: dict | None = None
        #: (layer, its largest label) so that a new id does not scan the whole volume each time
        self._max_label: tuple[object, int] | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Labels"))
        self.labels_combo = LayerCombo(self.viewer, Labels, none_text="(new on first commit)",
                                       accept=lambda layer: layer.name != PREVIEW_NAME,
                                       auto_select=False)
        row.addWidget(self.labels_combo, 1)
        self.new_labels_button = QPushButton("New")
        self.new_labels_button.setToolTip("New Labels layer shaped like the image (no channel axis)")
        row.addWidget(self.new_labels_button)
        layout.addLayout(row)
        self.only_background = QCheckBox("only fill background (never overwrite other objects)")
        layout.addWidget(self.only_background)
        grid = QGridLayout()
        self.commit_button = QPushButton("Commit object (C)")
        self.new_object_button = QPushButton("New object (N)")
        self.undo_click_button = QPushButton("Undo click (U)")
        self.undo_commit_button = QPushButton("Undo commit")
        for i, button in enumerate((self.commit_button, self.new_object_button,
                                    self.undo_click_button, self.undo_commit_button)):
            grid.addWidget(button, i // 2, i % 2)
        layout.addLayout(grid)
        self.object_list = QListWidget()
        self.object_list.setMinimumHeight(80)
        self.object_list.setToolTip("Committed objects: select one to add clicks to it on another "
                                    "slice (a correction); 'New object' to start another")
        layout.addWidget(self.object_list)
        row = QHBoxLayout()
        row.addWidget(QLabel("Propagate"))
        self.propagate_buttons = {}
        for direction, text in (("backward", "◀ Backward"), ("both", "Both"), ("forward", "Forward ▶")):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, d=direction: self.propagate(d))
            self.propagate_buttons[direction] = button
            row.addWidget(button)
        layout.addLayout(row)
        self.commit_button.clicked.connect(self.commit)
        self.new_object_button.clicked.connect(self.new_object)
        self.undo_click_button.clicked.connect(self.undo_click)
        self.undo_commit_button.clicked.connect(self.undo_commit)
        self.new_labels_button.clicked.connect(self._on_new_labels)
        self.object_list.itemSelectionChanged.connect(self._on_selection)
        self.labels_combo.layer_changed.connect(self._on_target)
        self.undo_commit_button.setEnabled(False)
        self._deferred_commit = False
        owner.live.changed.connect(self._on_preview_changed)

    # ------------------------------------------------------------------ state
    def target_layer(self):
        return self.labels_combo.current_layer()

    def selected_id(self) -> int | None:
        items = self.object_list.selectedItems()
        return int(items[0].data(Qt.ItemDataRole.UserRole)) if items else None

    def current_object_id(self) -> int:
        """The object the clicks are for: the selected one, else a provisional new id (the id
        a commit gives is one more than the labels layer's largest, see `new_object_id`)."""
        selected = self.selected_id()
        return selected if selected is not None else max(self.book.ids, default=0) + 1

    def new_object_id(self, target) -> int:
        """One more than the largest label of `target` and of the committed objects."""
        if self._max_label is None or self._max_label[0] is not target:
            self._max_label = (target, next_label_id(target.data) - 1)
        return max(self._max_label[1], *self.book.ids, 0) + 1

    def _labels_edited(self, _event=None) -> None:
        self._max_label = None

    def new_labels_layer(self):
        """Add an empty int32 Labels layer shaped like the image, and make it the target."""
        image = self.owner.setup.image_layer()
        axes = self.owner.setup.axes()
        shape = axes.labels_shape(self.owner.image_data(image).shape)
        active = self.viewer.layers.selection.active
        layer = self.viewer.add_labels(np.zeros(shape, dtype=np.int32), name=f"{image.name} FocSAM",
                                       **layer_transform_kwargs(image))
        place_below(self.viewer, layer, [self.owner.live.layer, *self.owner.prompts.layers()])
        self.labels_combo.set_layer(layer)
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
        return layer

    def _on_preview_changed(self) -> None:
        if not self._deferred_commit:
            return
        if self.owner.live.ready() is not None:
            self._deferred_commit = False
            self.commit()
        elif not self.owner.live.busy:  # the preview failed or the clicks are gone
            self._deferred_commit = False

    def _on_new_labels(self) -> None:
        try:
            self.new_labels_layer()
        except AxesError as exc:
            self.owner.report(str(exc), True)

    def _on_target(self, layer) -> None:
        if layer is not self._book_layer and self.book.ids and layer is not None:
            self.owner.report("Target labels layer changed: the object list starts afresh", False)
        if layer is not self._book_layer:
            self.book.clear()
            self._book_layer = layer
            self._refresh_list()
        self._max_label = None
        if layer is not None:  # painting by hand may add larger ids
            for emitter in (layer.events.paint, layer.events.data):
                emitter.disconnect(self._labels_edited)
                emitter.connect(self._labels_edited)

    def _on_selection(self) -> None:
        self.owner.live.schedule()

    def _refresh_list(self) -> None:
        selected = self.selected_id()
        self.object_list.blockSignals(True)
        self.object_list.clear()
        for obj in self.book.ids:
            frames = [f for _, f in self.book.frames_of(obj) if f is not None]
            slices = f"  (prompted on slice {', '.join(map(str, frames))})" if frames else ""
            text = f"Object {obj}{slices}"
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, obj)
            self.object_list.addItem(item)
            if obj == selected:
                item.setSelected(True)
        self.object_list.blockSignals(False)
        self.undo_commit_button.setEnabled(bool(self.book.history))
        self.objects_changed.emit()

    # ------------------------------------------------------------------ actions
    def commit(self) -> bool:
        """Write the previewed object into the target labels layer; True when done."""
        owner = self.owner
        if self._propagation is not None:
            owner.report("Propagation is running: commit when it ends (or cancel it)", True)
            return False
        ready = owner.live.ready()
        if ready is None:
            if owner.live.busy:  # commit as soon as the preview of the latest clicks is shown
                self._deferred_commit = True
                owner.report("Committing when the preview is ready…", False)
            else:
                owner.report("Nothing to commit: click on an object first", True)
            return False
        result, request = ready
        target = self.target_layer() or self.new_labels_layer()
        if tuple(target.data.shape) != tuple(request.labels_shape):
            owner.report(f"The labels layer '{target.name}' has shape {target.data.shape}, the image "
                         f"needs {request.labels_shape}: choose another or click 'New'", True)
            return False
        obj_id = self.selected_id() or self.new_object_id(target)
        if np.issubdtype(target.data.dtype, np.integer) and obj_id > np.iinfo(target.data.dtype).max:
            owner.report(f"Object id {obj_id} does not fit in the labels layer's {target.data.dtype}", True)
            return False
        try:
            plane = writable_plane(target, request.plane)
            edit = paint_object(plane, result.mask, obj_id, only_background=self.only_background.isChecked(),
                                replace=True, plane_index=request.plane)
        except (TypeError, ValueError) as exc:
            owner.report(str(exc), True)
            return False
        target.refresh()
        self._book_layer = target
        self.book.record(obj_id, dataclasses.replace(result.prompt, obj_id=obj_id), edit)
        owner.prompts.remove(request.mapped)
        owner.live.clear()
        self._refresh_list()
        where = "" if request.frame is None else f" on slice {request.frame}"
        owner.report(f"Committed object {obj_id}{where} ({edit.n_pixels} pixels changed)", False)
        return True

    def undo_commit(self) -> None:
        """Restore exactly the pixels the last commit changed."""
        target = self._book_layer
        if self._propagation is not None:
            self.owner.report("Propagation is running: undo when it ends (or cancel it)", True)
            return
        if not self.book.history:
            self.owner.report("No commit to undo", True)
            return
        if target is None or target not in self.viewer.layers:
            self.owner.report("The labels layer of the last commit is gone", True)
            return
        record = self.book.pop()
        undo_edit(writable_plane(target, record.edit.plane), record.edit)
        self._max_label = None
        target.refresh()
        self._refresh_list()
        self.owner.report(f"Undid the last commit of object {record.obj_id}", False)

    def undo_click(self) -> None:
        self.owner.undo_click()

    def new_object(self) -> None:
        """Clicks now start a new object."""
        self.object_list.clearSelection()
        self.owner.report("New object: click on it", False)
