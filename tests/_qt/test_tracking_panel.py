"""The "FocSAM tracking" dock widget in a real viewer (Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_focsam._qt.tracking_panel import TRACKS_NAME, TrackingPanel
from napari_focsam.samples import synthetic_cell_timelapse
from napari_focsam.tracking import read_ctc_tracks

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_and_panel(make_napari_viewer):
    viewer = make_napari_viewer()
    _, labels, lineage = synthetic_cell_timelapse(n_frames=10, shape=(96, 128), n_cells=3, seed=5,
                                                  n_divisions=0)
    layer = viewer.add_labels(labels.astype(np.int32), name="cells", scale=(1, 0.5, 0.5),
                              axis_labels=("t", "y", "x"))  # a time-lapse: time on axis 0
    panel = TrackingPanel(viewer)
    viewer.window.add_dock_widget(panel)
    panel.labels_combo.set_layer(layer)
    return viewer, panel, layer


def test_tracks_layer_follows_the_labels(viewer_and_panel):
    viewer, panel, layer = viewer_and_panel
    tracks = panel.update_tracks()
    assert tracks is viewer.layers[TRACKS_NAME]
    ids = np.unique(layer.data[layer.data > 0])
    assert set(np.unique(tracks.data[:, 0]).astype(int)) == set(ids.tolist())
    np.testing.assert_array_equal(tracks.scale, layer.scale)
    first = tracks.data[tracks.data[:, 0] == ids[0]][0]
    t, r, c = (int(round(v)) for v in first[1:])
    assert layer.data[t, r, c] == ids[0]  # the centroid lies on its object (convex cells)


def test_division_on_the_current_frame_links_daughters_and_exports_ctc(viewer_and_panel, tmp_path):
    viewer, panel, layer = viewer_and_panel
    mother = int(np.unique(layer.data[layer.data > 0])[0])
    before = np.asarray(layer.data).copy()
    viewer.dims.set_current_step(0, 5)
    layer.selected_label = mother
    daughters = panel.divide_selected()
    assert daughters is not None
    data = np.asarray(layer.data)
    assert not (data[5:] == mother).any() and (data[:5] == mother).any()
    assert all((data[5] == d).any() for d in daughters)
    np.testing.assert_array_equal(data[:5], before[:5])
    tracks = viewer.layers[TRACKS_NAME]
    assert {d: [mother] for d in daughters}.items() <= tracks.graph.items()
    out = panel.export_ctc(tmp_path / "ctc")
    assert (out / "res_track.txt").exists() and (out / "mask000.tif").exists()
    table = read_ctc_tracks(out / "res_track.txt")
    assert all(table.parent_of(d) == mother for d in daughters)
    assert table.end[mother] == 4 and all(table.begin[d] == 5 for d in daughters)
    tif = panel.export_tiff(tmp_path / "labels.tif")
    assert tif.exists()


def test_bad_division_is_a_message_not_an_exception(viewer_and_panel):
    viewer, panel, layer = viewer_and_panel
    viewer.dims.set_current_step(0, 0)
    layer.selected_label = int(np.unique(layer.data[layer.data > 0])[0])
    before = np.asarray(layer.data).copy()
    assert panel.divide_selected() is None
    assert "cannot divide" in panel.status.text()
    np.testing.assert_array_equal(layer.data, before)


def test_panel_loads_through_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((3, 16, 16), np.int32), name="t", axis_labels=("t", "y", "x"))
    _, panel = viewer.window.add_plugin_dock_widget("napari-focsam", "FocSAM tracking")
    assert isinstance(panel, TrackingPanel)
    assert panel.labels_combo.current_layer() is layer
    assert panel.update_tracks() is None and "no objects" in panel.status.text()


def test_divisions_are_listed_shown_and_rejected(viewer_and_panel):
    viewer, panel, layer = viewer_and_panel
    mother = int(np.unique(layer.data[layer.data > 0])[0])
    before = np.asarray(layer.data).copy()
    assert panel.update_tracks() is not None
    assert not panel.reject_button.isEnabled() and panel.divisions_combo.currentText() == "no divisions"
    viewer.dims.set_current_step(0, 5)
    layer.selected_label = mother
    daughters = panel.divide_selected()
    assert panel.divisions_combo.count() == 1 and panel.reject_button.isEnabled()
    assert panel.divisions_combo.currentText() == f"{mother} → {daughters[0]}, {daughters[1]} (frame 5)"
    viewer.dims.set_current_step(0, 0)
    panel._show_division(0)
    assert viewer.dims.current_step[0] == 5 and layer.selected_label == daughters[0]
    assert panel.reject_division() == mother
    np.testing.assert_array_equal(layer.data, before)
    assert not viewer.layers[TRACKS_NAME].graph
    assert "division of" in panel.status.text() and not panel.reject_button.isEnabled()
    assert panel.reject_division(mother) is None and "no recorded division" in panel.status.text()
