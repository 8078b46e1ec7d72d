"""A new user's whole path under Xvfb: the time-lapse sample (as File > Open Sample makes it) in the
FocSAM dock, click cells, commit,
propagate through t, correct a slice, re-propagate, build tracks, mark a division and export
the Cell Tracking Challenge files.

The models are stand-ins that read the sample's ground truth (the masks of real SAM / SAM 2
need weights this machine does not have); everything else -- the widgets, layers, workers,
coordinate mapping, Segmenter, propagation bookkeeping and exports -- is the real code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from widget_helpers import wait_idle, wait_preview

import napari_focsam.api.segmenter as segmenter_module
from napari_focsam._qt.tracking_panel import TRACKS_NAME, TrackingPanel
from napari_focsam.engine.propagation_state import FrameResult
from napari_focsam.tracking import read_ctc_tracks

pytestmark = pytest.mark.gui


class OracleTracker:
    """`VideoPropagator` stand-in: an object on frame t is the union of ground-truth cells
    overlapping its mask on the previous frame of the pass (prompted frames are kept)."""

    truth: np.ndarray

    def __init__(self, model, features, video_hw, options=None) -> None:
        self.hw, self.n = tuple(video_hw), len(features)
        self.cond: dict[int, dict[int, np.ndarray]] = {}
        self.masks: dict[int, dict[int, np.ndarray]] = {}

    def add_mask(self, frame, obj_id, mask, result=True):
        self.cond.setdefault(obj_id, {})[frame] = np.asarray(mask, bool)
        self.masks.setdefault(obj_id, {})[frame] = np.asarray(mask, bool)
        return self._result(frame, 1, 1) if result else None

    def _result(self, t, done, total):
        ids = tuple(self.cond)
        logits = torch.full((len(ids), 1, *self.hw), -1.0)
        for i, obj in enumerate(ids):
            m = self.masks[obj].get(t)
            if m is not None:
                logits[i, 0][torch.from_numpy(m)] = 1.0
        return FrameResult(t, ids, logits, done, total)

    def propagate(self, start=None, reverse=False):
        start = min(f for c in self.cond.values() for f in c) if start is None else start
        order = range(start, -1, -1) if reverse else range(start, self.n)
        for done, t in enumerate(order, 1):
            for obj, cond in self.cond.items():
                prev = self.masks[obj].get(t + 1 if reverse else t - 1)
                if t in cond:
                    self.masks[obj][t] = cond[t]
                elif prev is not None:
                    hit = np.unique(self.truth[t][prev & (self.truth[t] > 0)])
                    self.masks[obj][t] = np.isin(self.truth[t], hit[hit > 0])
            yield self._result(t, done, len(order))

    def propagate_both(self, start=None):
        start = min(f for c in self.cond.values() for f in c) if start is None else start
        done, total = 0, self.n + (1 if start > 0 else 0)
        for reverse in (False, True):
            for r in self.propagate(start, reverse):
                done += 1
                yield FrameResult(r.frame, r.obj_ids, r.logits, done, total)


def test_open_click_commit_propagate_correct_track_divide_export(make_widget, qtbot, monkeypatch,
                                                                 tmp_path):
    from napari_focsam.samples import make_sample_cell_timelapse

    (image_data, _, _), (truth, _, _), _ = make_sample_cell_timelapse()
    truth = np.asarray(truth)
    OracleTracker.truth = truth

    def oracle_draw(self, prompt):  # the ground-truth cell under the first click
        self.check_prompt(prompt)
        r, c = (int(v) for v in prompt.points_rc[0])
        cell = truth[prompt.frame][r, c]
        return truth[prompt.frame] == cell if cell else np.zeros(truth.shape[1:], bool)

    monkeypatch.setattr(segmenter_module.Segmenter, "draw_object", oracle_draw)
    monkeypatch.setattr(segmenter_module.Segmenter, "_mask_from_interactive",
                        lambda self, prompt, flat, **_options: oracle_draw(self, prompt))
    monkeypatch.setattr(segmenter_module, "VideoPropagator", OracleTracker)

    viewer, image, widget = make_widget(image_data)
    widget.setup.select_stack(0, "t")  # the sample does not name its axes: mark axis 0 as time
    assert widget.setup.axes().stack_axis == 0 and widget.setup.axes().is_time
    # a cell that divides (id 6 at frame 6 in the sample) and one that does not
    lineage_cells = [int(i) for i in np.unique(truth[0]) if i]
    dividing, steady = 6, next(i for i in lineage_cells if i not in (3, 6))

    def centre(t, cell):
        return np.argwhere(truth[t] == cell).mean(axis=0).round().astype(int)

    points, _ = widget.prompts.new_prompt_layers()
    for cell in (steady, dividing):
        viewer.dims.set_current_step(0, 0)
        points.add([0, *centre(0, cell)])
        wait_preview(qtbot, widget)
        assert widget.objects.commit(), widget.status_label.text()
    labels = widget.objects.target_layer()
    assert widget.objects.book.ids == [1, 2]

    widget.objects.propagate("forward")
    wait_idle(qtbot, widget)
    data = np.asarray(labels.data)
    assert all((data[t] == 1).any() for t in range(len(data)))  # tracked through every frame
    np.testing.assert_array_equal(data[10] == 1, truth[10] == steady)

    # correction: object 1 redrawn on frame 12 from a click on its cell, then re-propagated
    widget.objects.object_list.item(0).setSelected(True)
    viewer.dims.set_current_step(0, 12)
    points.add([12, *centre(12, steady)])
    wait_preview(qtbot, widget)
    assert widget.objects.commit(), widget.status_label.text()
    assert [f for _, f in widget.objects.book.frames_of(1)] == [0, 12]
    widget.objects.propagate("both")
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(np.asarray(labels.data)[20] == 1, truth[20] == steady)

    # tracking: tracks layer, then the division of object 2 where the sample's cell divides
    panel = TrackingPanel(viewer)
    viewer.window.add_dock_widget(panel)
    panel.labels_combo.set_layer(labels)
    tracks = panel.update_tracks()
    assert set(np.unique(tracks.data[:, 0]).astype(int)) == {1, 2}
    first_daughter_frame = int(np.flatnonzero([(truth[t] == 7).any() for t in range(len(truth))])[0])
    viewer.dims.set_current_step(0, first_daughter_frame)
    labels.selected_label = 2
    daughters = panel.divide_selected()
    assert daughters == (3, 4)
    assert viewer.layers[TRACKS_NAME].graph == {3: [2], 4: [2]}
    out = panel.export_ctc(tmp_path / "ctc")
    table = read_ctc_tracks(out / "res_track.txt")
    assert table.parent_of(3) == table.parent_of(4) == 2 and table.parent_of(1) is None
    assert table.end[2] == first_daughter_frame - 1
    assert len(list(out.glob("mask*.tif"))) == len(truth)
