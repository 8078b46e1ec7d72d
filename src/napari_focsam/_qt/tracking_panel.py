"""The "FocSAM tracking" dock widget: tracks of a labelled time-lapse, divisions, CTC export.

Works on Labels layers whose axis 0 is time: those the segmentation dock wrote with its stack
axis marked as t (``axes.STACK_META_KEY`` in the layer's metadata), or whose napari axis label
0 names time (``t``, ``time``...). It shows a Tracks layer of per-id centroids with the
lineage, divides the selected object on the current frame into two daughters (the mother's
track ends, two new ids start, linked to it), lists the recorded divisions (e.g. those "Track
all" found) to review them one by one and rejects a wrong one (the daughters become the mother
again), and exports the Cell Tracking Challenge result format (``maskTTT.tif`` +
``res_track.txt``) or the labels as a TIFF. Everything here is quick numpy work on the layer's
data; the lineage lives in the layer's ``metadata["focsam_tracks"]`` so it survives between
actions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from napari.layers import Labels, Tracks
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..tracking import (
    TrackTable,
    divide_object,
    export_ctc,
    export_labels_tiff,
    tracks_from_labels,
    undo_division,
)
from .axes import time_axis
from .layer_combo import LayerCombo
from .layout import StatusLabel, VerticalScrollArea
from .live import PREVIEW_NAME

__all__ = ["TrackingPanel"]

logger = logging.getLogger(__name__)

TRACKS_NAME = "FocSAM tracks"
META_KEY = "focsam_tracks"


def is_time_lapse(layer) -> bool:
    """Whether a Labels layer is a time-lapse with time on axis 0 (what the dock works on)."""
    return (layer.name != PREVIEW_NAME and layer.data.ndim >= 3
            and time_axis(layer.metadata, tuple(getattr(layer, "axis_labels", ()) or ())) == 0)


def why_not_offered(layer) -> str:
    """Why Labels `layer` is not a time-lapse for the dock ("" if it is one)."""
    if is_time_lapse(layer) or layer.name == PREVIEW_NAME:
        return ""
    if layer.data.ndim < 3:
        return f"'{layer.name}' is 2D"
    axis = time_axis(layer.metadata, tuple(getattr(layer, "axis_labels", ()) or ()))
    if axis is None:
        return f"'{layer.name}' has no axis marked as time"
    return f"'{layer.name}' has time on axis {axis}, not 0"


class TrackingPanel(QWidget):
    """Tracks, divisions and export for a time-lapse Labels layer (time = axis 0, see
    `is_time_lapse`); a note says why no layer is offered when there is none.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer, parent=None) -> None:
        super().__init__(parent)
        # napari hands plugin widgets a proxy of the viewer; layer identity needs the real one
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.labels_combo = LayerCombo(self.viewer, Labels, accept=is_time_lapse,
                                       watch=("metadata", "axis_labels"))
        self.labels_combo.setToolTip("Labels layers whose first axis is time")
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: gray;")
        self.update_button = QPushButton("Update tracks")
        self.divide_button = QPushButton("Division: split here")
        self.divide_button.setToolTip("Split the Labels layer's selected object into two daughters "
                                      "from the current frame on")
        self.divisions_combo = QComboBox()
        self.divisions_combo.setToolTip("Recorded divisions (mother → daughters, first frame of "
                                        "the daughters): choosing one shows its frame")
        self.reject_button = QPushButton("Reject division")
        self.reject_button.setToolTip("Undo the division chosen in the list: the daughters become "
                                      "the mother again")
        self.ctc_button = QPushButton("Export CTC…")
        self.tiff_button = QPushButton("Export TIFF…")
        self.tiff_button.setToolTip("Export the labels as one TIFF")
        self.status = StatusLabel("", max_lines=4)

        box = QGroupBox("Tracking (time = first axis)")
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("labels", self.labels_combo)
        box_layout = QVBoxLayout(box)
        box_layout.addLayout(form)
        row = QHBoxLayout()
        row.addWidget(self.update_button)
        row.addWidget(self.divide_button)
        box_layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.divisions_combo, 1)
        row.addWidget(self.reject_button)
        box_layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.ctc_button)
        row.addWidget(self.tiff_button)
        box_layout.addLayout(row)
        box_layout.addWidget(self.note)
        hint = QLabel("Division: select the mother's id in the Labels layer (its label picker), "
                      "go to the first frame of the daughters and press 'Division'. Divide after "
                      "the last propagation: the segmentation dock does not know the daughters. "
                      "To review divisions, choose them in the list (it shows their frame) and "
                      "reject the wrong ones.")
        hint.setWordWrap(True)
        hint.setStyleSheet("color: gray;")
        box_layout.addWidget(hint)
        content = QWidget()
        content_layout = QVBoxLayout(content)
        content_layout.setContentsMargins(0, 0, 4, 0)
        content_layout.addWidget(box)
        content_layout.addStretch(1)
        self.scroll = VerticalScrollArea(content, min_height=170)  # the buttons without scrolling
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.scroll, 1)
        layout.addWidget(self.status)
        self.labels_combo.refreshed.connect(self._explain)
        self._explain()

        self.update_button.clicked.connect(self.update_tracks)
        self.divide_button.clicked.connect(self.divide_selected)
        self.reject_button.clicked.connect(lambda: self.reject_division())
        self.divisions_combo.activated.connect(self._show_division)
        self._fill_divisions(None)
        self.ctc_button.clicked.connect(lambda: self.export_ctc())
        self.tiff_button.clicked.connect(lambda: self.export_tiff())

    # ------------------------------------------------------------------ helpers
    def _explain(self) -> None:
        """Say why no layer is offered, when none is."""
        if self.labels_combo.count():
            self.note.setVisible(False)
            return
        reasons = [r for r in map(why_not_offered, self.labels_combo.candidates()) if r]
        text = ("No time-lapse Labels layer" + (f": {'; '.join(reasons)}" if reasons else "")
                + ". Choose 'axis 0 as t' under Setup in the segmentation dock, then commit or "
                "propagate: the labels layer it writes is listed here.")
        self.note.setText(text)
        self.note.setVisible(True)

    def _labels(self) -> Labels | None:
        self.labels_combo.refresh()
        layer = self.labels_combo.current_layer()
        if layer is None:
            self._fail("choose a time-lapse Labels layer (first axis: time): "
                       + (self.note.text() if not self.note.isHidden() else "none is chosen"))
        return layer

    def _fail(self, message: str) -> None:
        self.status.setText(message)
        show_error(message)

    def _table(self, layer: Labels) -> TrackTable:
        table = layer.metadata.get(META_KEY)
        recorded = table if isinstance(table, TrackTable) else None
        return TrackTable.from_labels(np.asarray(layer.data)).keep_links(recorded)

    # ------------------------------------------------------------------ actions
    def update_tracks(self) -> Tracks | None:
        """(Re)build the "FocSAM tracks" layer from the labels and the recorded lineage."""
        layer = self._labels()
        if layer is None:
            return None
        labels = np.asarray(layer.data)
        table = self._table(layer)
        layer.metadata[META_KEY] = table
        self._fill_divisions(table)
        data, graph = tracks_from_labels(labels, table)
        if len(data) == 0:
            self._fail("no objects in the labels yet")
            return None
        # tracks are in the labels' data coordinates: same scale and translation
        kwargs = {"scale": layer.scale, "translate": layer.translate}
        if TRACKS_NAME in self.viewer.layers:
            tracks = self.viewer.layers[TRACKS_NAME]
            tracks.data = data
            tracks.graph = graph
        else:
            tracks = self.viewer.add_tracks(data, graph=graph, name=TRACKS_NAME, **kwargs)
        n = len(np.unique(data[:, 0]))
        self.status.setText(f"{n} tracks, {len(graph)} with a parent, "
                            f"{len(set(table.parents.values()))} division(s)")
        return tracks

    def _fill_divisions(self, table: TrackTable | None) -> None:
        """List the divisions of `table` (mothers with children) in the combo."""
        combo = self.divisions_combo
        combo.clear()
        mothers = sorted(set(table.parents.values())) if table is not None else []
        for mother in mothers:
            children = table.children_of(mother)
            frame = min(table.begin[c] for c in children)
            combo.addItem(f"{mother} → {', '.join(map(str, children))} (frame {frame})",
                          (mother, frame))
        combo.setEnabled(bool(mothers))
        self.reject_button.setEnabled(bool(mothers))
        if not mothers:
            combo.addItem("no divisions")

    def _show_division(self, index: int) -> None:
        """Move to the chosen division's first daughter frame and select the mother."""
        choice = self.divisions_combo.itemData(index)
        layer = self.labels_combo.current_layer()
        if choice is None or layer is None:
            return
        mother, frame = choice
        self.viewer.dims.set_current_step(0, frame)
        children = self._table(layer).children_of(mother)
        if children:
            layer.selected_label = children[0]

    def reject_division(self, mother: int | None = None) -> int | None:
        """Undo a division (default: the one chosen in the list): its daughters become the
        mother again from their first frame on; returns the mother's id."""
        layer = self._labels()
        if layer is None:
            return None
        if mother is None:
            choice = self.divisions_combo.currentData()
            if choice is None:
                self._fail("no division to reject: 'Update tracks' lists the recorded ones")
                return None
            mother = choice[0]
        try:
            out, table, mother = undo_division(np.asarray(layer.data), int(mother),
                                               self._table(layer))
        except ValueError as exc:
            self._fail(f"cannot reject the division of {mother}: {exc}")
            return None
        layer.data = out
        layer.metadata[META_KEY] = table
        layer.selected_label = mother
        self.update_tracks()
        message = f"division of {mother} rejected: its daughters are {mother} again"
        self.status.setText(message)
        show_info(message)
        return mother

    def divide_selected(self) -> tuple[int, int] | None:
        """Divide the Labels layer's selected id at the viewer's current time step."""
        layer = self._labels()
        if layer is None:
            return None
        parent = int(layer.selected_label)
        frame = int(self.viewer.dims.current_step[0])
        try:
            out, table, daughters = divide_object(np.asarray(layer.data), parent, frame,
                                                  self._table(layer))
        except ValueError as exc:
            self._fail(f"cannot divide object {parent} at frame {frame}: {exc}")
            return None
        layer.data = out
        layer.metadata[META_KEY] = table
        layer.selected_label = daughters[0]
        self.update_tracks()
        message = f"object {parent} divided into {daughters[0]} and {daughters[1]} at frame {frame}"
        self.status.setText(message)
        show_info(message)
        return daughters

    def export_ctc(self, folder: str | Path | None = None) -> Path | None:
        """Write ``maskTTT.tif`` + ``res_track.txt`` (asks for a folder when none is given)."""
        layer = self._labels()
        if layer is None:
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Export CTC results into…")
            if not folder:
                return None
        try:
            out = export_ctc(np.asarray(layer.data), folder, self._table(layer), overwrite=True)
        except (ValueError, OSError) as exc:
            self._fail(f"CTC export failed: {exc}")
            return None
        self.status.setText(f"CTC results written to {out}")
        return Path(out)

    def export_tiff(self, path: str | Path | None = None) -> Path | None:
        """Write the labels as a TIFF (asks for a file when none is given)."""
        layer = self._labels()
        if layer is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export labels", "labels.tif",
                                                  "TIFF (*.tif *.tiff)")
            if not path:
                return None
        try:
            out = export_labels_tiff(np.asarray(layer.data), path)
        except (ValueError, OSError) as exc:
            self._fail(f"labels export failed: {exc}")
            return None
        self.status.setText(f"labels written to {out}")
        return Path(out)
