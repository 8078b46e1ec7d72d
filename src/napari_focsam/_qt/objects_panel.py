"""The "Objects" section: commit / undo into a Labels layer, the objects, the Propagate buttons."""

from __future__ import annotations

import dataclasses
import logging
import weakref

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

from ..errors import UserError
from .axes import AxesError
from .commit import (
    LabelsLayerError,
    ObjectBook,
    next_label_id,
    paint_object,
    record_stack,
    undo_edit,
    writable_plane,
)
from .controller import SegmentationController
from .layer_combo import LayerCombo
from .live import PREVIEW_NAME
from .prompt_layers import image_data, layer_transform_kwargs, place_below
from .propagation import PropagationController

__all__ = ["ObjectsPanel"]

logger = logging.getLogger(__name__)


class ObjectsPanel(QWidget):
    """Target Labels layer, commit / undo, the committed objects, the Propagate buttons.

    The target combo lists only the Labels layers shaped like the image's labels; when another
    image is chosen it re-selects the layer last used with that image, or none.

    Parameters
    ----------
    viewer : napari.Viewer
    controller : SegmentationController
        The live preview (what a commit writes), the image, axes and messages.
    propagation : PropagationController
        Propagates the committed objects.

    Signals
    -------
    committed(MappedPrompts)
        An object was committed, drawn from these prompts.
    current_object_changed(int)
        New clicks are now for this object (see `current_object_id`).
    undo_click_requested()
        The "Undo click" button was pressed.
    """

    committed = Signal(object)
    current_object_changed = Signal(int)
    undo_click_requested = Signal()

    def __init__(self, viewer, controller: SegmentationController,
                 propagation: PropagationController, parent=None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._controller = controller
        self._propagation = propagation
        self.book = ObjectBook()
        self._book_layer = None
        self._image = None
        #: image layer -> the labels layer last used with it (re-selected when it comes back)
        self._targets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: (layer, its largest label) so that a new id does not scan the whole volume each time
        self._max_label: tuple[object, int] | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Labels"))
        self.labels_combo = LayerCombo(self.viewer, Labels, none_text="(new on first commit)",
                                       accept=self._fits, auto_select=False, watch=("data",))
        self.labels_combo.setToolTip("Labels layer the objects are written into (only those shaped "
                                     "like the image are listed)")
        row.addWidget(self.labels_combo, 1)
        self.new_labels_button = QPushButton("New")
        self.new_labels_button.setToolTip("New Labels layer shaped like the image (no channel axis)")
        row.addWidget(self.new_labels_button)
        layout.addLayout(row)
        self.only_background = QCheckBox("only fill background")
        self.only_background.setToolTip("Commits paint only pixels that are 0: other objects are "
                                         "never overwritten")
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
        # the Propagate buttons above the list, which grows: they stay near the top of the dock
        layout.addWidget(QLabel("Propagate every committed object:"))
        row = QHBoxLayout()
        self.propagate_buttons = {}
        for direction, text in (("backward", "◀ Backward"), ("both", "Both"), ("forward", "Forward ▶")):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, d=direction: self.propagate(d))
            self.propagate_buttons[direction] = button
            row.addWidget(button)
        layout.addLayout(row)
        self.object_list = QListWidget()
        self.object_list.setMinimumHeight(80)
        self.object_list.setToolTip("Committed objects: select one to add clicks to it on another "
                                    "slice (a correction); 'New object' to start another")
        layout.addWidget(self.object_list)
        self.commit_button.clicked.connect(self.commit)
        self.new_object_button.clicked.connect(self.new_object)
        self.undo_click_button.clicked.connect(self.undo_click_requested)
        self.undo_commit_button.clicked.connect(self.undo_commit)
        self.new_labels_button.clicked.connect(self._on_new_labels)
        self.object_list.itemSelectionChanged.connect(self._on_selection)
        self.labels_combo.layer_changed.connect(self._on_target)
        self.undo_commit_button.setEnabled(False)
        self._deferred_commit = False
        controller.live.changed.connect(self._on_preview_changed)
        controller.spec_changed.connect(self._on_spec_changed)
        controller.runner.task_started.connect(self._update_propagate_buttons)
        controller.runner.task_finished.connect(self._update_propagate_buttons)
        propagation.ended.connect(self._on_propagated)
        self._update_propagate_buttons()

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

    def _fits(self, layer) -> bool:
        """Whether Labels `layer` can be the target: shaped like the image's labels."""
        if layer.name == PREVIEW_NAME:
            return False
        image = self._controller.image_layer()
        try:
            axes = self._controller.axes()
        except AxesError:
            return False
        return tuple(layer.data.shape) == axes.labels_shape(image_data(image).shape)

    def _on_spec_changed(self) -> None:
        image = self._controller.image_layer()
        self.labels_combo.refresh()  # the shape that fits may have changed
        if image is not self._image:
            self._image = image
            last = self._targets.get(image) if image is not None else None
            layer = last() if last is not None else None
            self.labels_combo.set_layer(layer if layer in self.labels_combo.layers() else None)
        self._update_propagate_buttons()

    def new_labels_layer(self):
        """Add an empty int32 Labels layer shaped like the image, and make it the target."""
        axes = self._controller.axes()
        image = self._controller.image_layer()
        shape = axes.labels_shape(image_data(image).shape)
        active = self.viewer.layers.selection.active
        layer = self.viewer.add_labels(np.zeros(shape, dtype=np.int32), name=f"{image.name} FocSAM",
                                       **layer_transform_kwargs(image))
        record_stack(layer, axes)
        place_below(self.viewer, layer, self._controller.overlay_layers())
        self.labels_combo.set_layer(layer)
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
        return layer

    def _on_preview_changed(self) -> None:
        if not self._deferred_commit:
            return
        if self._controller.live.ready() is not None:
            self._deferred_commit = False
            self.commit()
        elif not self._controller.live.busy:  # the preview failed or the clicks are gone
            self._deferred_commit = False

    def _on_new_labels(self) -> None:
        try:
            self.new_labels_layer()
        except UserError as exc:
            self._controller.messages.error(str(exc))

    def _on_target(self, layer) -> None:
        if layer is not self._book_layer and self.book.ids and layer is not None:
            self._controller.messages.info("Target labels layer changed: the object list starts "
                                           "afresh")
        if layer is not self._book_layer:
            self.book.clear()
            self._book_layer = layer
            self._refresh_list()
        image = self._controller.image_layer()
        if layer is not None and image is not None:
            self._targets[image] = weakref.ref(layer)
        self._max_label = None
        if layer is not None:  # painting by hand may add larger ids
            for emitter in (layer.events.paint, layer.events.data):
                emitter.disconnect(self._labels_edited)
                emitter.connect(self._labels_edited)

    def _on_selection(self) -> None:
        self.current_object_changed.emit(self.current_object_id())

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
        self.current_object_changed.emit(self.current_object_id())

    def _update_propagate_buttons(self, *_args) -> None:
        try:
            propagates = self._controller.axes().propagates
        except AxesError:  # no image or an unusable axis choice
            propagates = False
        for button in self.propagate_buttons.values():
            button.setEnabled(propagates and not self._propagation.running)
            button.setToolTip("" if propagates else "Propagation needs a z or t stack: choose a "
                              "stack axis under Setup")

    # ------------------------------------------------------------------ actions
    def commit(self) -> bool:
        """Write the previewed object into the target labels layer; True when done."""
        messages, live = self._controller.messages, self._controller.live
        if self._propagation.running:
            messages.error("Propagation is running: commit when it ends (or cancel it)")
            return False
        ready = live.ready()
        if ready is None:
            if live.busy:  # commit as soon as the preview of the latest clicks is shown
                self._deferred_commit = True
                messages.info("Committing when the preview is ready…")
            else:
                messages.error("Nothing to commit: click on an object first")
            return False
        result, request = ready
        if not result.mask.any():
            selected = self.selected_id()
            which = f" of object {selected}" if selected is not None else ""
            messages.error(f"The preview{which} is empty (0 pixels): nothing to commit. Click inside "
                           "the object, or remove the negative clicks on it")
            return False
        target = self.target_layer() or self.new_labels_layer()
        if tuple(target.data.shape) != tuple(request.labels_shape):
            messages.error(f"The labels layer '{target.name}' has shape {target.data.shape}, the "
                           f"image needs {request.labels_shape}: choose another or click 'New'")
            return False
        obj_id = self.selected_id() or self.new_object_id(target)
        if np.issubdtype(target.data.dtype, np.integer) and obj_id > np.iinfo(target.data.dtype).max:
            messages.error(f"Object id {obj_id} does not fit in the labels layer's {target.data.dtype}")
            return False
        try:
            plane = writable_plane(target, request.plane)
        except LabelsLayerError as exc:
            messages.error(str(exc))
            return False
        edit = paint_object(plane, result.mask, obj_id, only_background=self.only_background.isChecked(),
                            replace=True, plane_index=request.plane)
        target.refresh()
        record_stack(target, request.axes)
        self._book_layer = target
        self.book.record(obj_id, dataclasses.replace(result.prompt, obj_id=obj_id), edit)
        self.committed.emit(request.mapped)
        live.clear()
        self._refresh_list()
        where = "" if request.frame is None else f" on slice {request.frame}"
        messages.info(f"Committed object {obj_id}{where} ({edit.n_pixels} pixels changed)")
        return True

    def undo_commit(self) -> None:
        """Restore exactly the pixels the last commit changed."""
        messages = self._controller.messages
        target = self._book_layer
        if self._propagation.running:
            messages.error("Propagation is running: undo when it ends (or cancel it)")
            return
        if not self.book.history:
            messages.error("No commit to undo")
            return
        if target is None or target not in self.viewer.layers:
            messages.error("The labels layer of the last commit is gone")
            return
        record = self.book.pop()
        undo_edit(writable_plane(target, record.edit.plane), record.edit)
        self._max_label = None
        target.refresh()
        self._refresh_list()
        messages.info(f"Undid the last commit of object {record.obj_id}")

    def new_object(self) -> None:
        """Clicks now start a new object."""
        self.object_list.clearSelection()
        self._controller.messages.info("New object: click on it")

    def propagate(self, direction: str) -> bool:
        """Propagate every committed object through the stack (`direction`: ``"forward"``,
        ``"backward"`` or ``"both"``); False, with a message, when it cannot start."""
        return self._propagation.start(self.book.all_prompts(), self._book_layer, direction)

    def _on_propagated(self, frames_written: int) -> None:
        if frames_written:
            self.book.forget_history()  # the planes the commits changed were rewritten
            self._refresh_list()
