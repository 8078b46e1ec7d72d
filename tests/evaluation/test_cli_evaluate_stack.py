"""``napari-focsam evaluate-stack``: scoring files, and segmenting + propagating from simulated
clicks with tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_focsam.cli import main
from napari_focsam.evaluation.stack_prompts import prompts_from_ground_truth
from napari_focsam.samples import synthetic_cell_timelapse


@pytest.fixture(scope="module")
def timelapse(tmp_path_factory):
    folder = tmp_path_factory.mktemp("timelapse")
    images, labels, _ = synthetic_cell_timelapse(n_frames=3, shape=(48, 64), n_cells=2, seed=3, n_divisions=0)
    tifffile.imwrite(folder / "images.tif", images, photometric="minisblack")
    tifffile.imwrite(folder / "gt.tif", labels, photometric="minisblack")
    return folder, labels


def test_score_a_prediction_file(timelapse, tmp_path, capsys):
    folder, labels = timelapse
    pred = labels.copy()
    pred[-1] = 0  # the last frame lost
    tifffile.imwrite(tmp_path / "pred.tif", pred, photometric="minisblack")
    rc = main(["evaluate-stack", "--gt", str(folder / "gt.tif"), "--pred", str(tmp_path / "pred.tif"),
               "--out", str(tmp_path / "report")])
    assert rc == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    n_obj = len(np.unique(labels[labels > 0]))
    assert len(summary["objects"]) == n_obj
    assert 0.3 < summary["mean_j"] < 1.0
    assert "mean J" in capsys.readouterr().out


def test_segment_and_propagate_from_simulated_clicks(timelapse, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FOCSAM_CACHE_DIR", str(tmp_path / "cache"))
    folder, labels = timelapse
    rc = main(["evaluate-stack", "--gt", str(folder / "gt.tif"), "--image", str(folder / "images.tif"),
               "--model", "sam_test_tiny", "--weights", "random",
               "--propagation-model", "sam2_test_tiny", "--propagation-weights", "random",
               "--device", "cpu", "--dtype", "fp32", "--out", str(tmp_path / "report")])
    assert rc == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["settings"]["model"] == "sam_test_tiny"
    pred = tifffile.imread(tmp_path / "report" / "pred_labels.tif")
    assert pred.shape == labels.shape
    assert set(np.unique(pred)) <= set(np.unique(labels))  # ids are the ground-truth ids


def test_simulated_clicks_lie_inside_their_objects():
    _, labels, _ = synthetic_cell_timelapse(n_frames=6, shape=(64, 96), n_cells=3, seed=4)
    for p in prompts_from_ground_truth(labels):
        r, c = p.points_rc[0].astype(int)
        assert labels[p.frame, r, c] == p.obj_id
    first = prompts_from_ground_truth(labels, "first")
    for p in first:
        assert labels[: p.frame, ...].__eq__(p.obj_id).sum() == 0


def test_bad_inputs_exit_2(tmp_path, timelapse):
    folder, _ = timelapse
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((2, 8, 8), np.uint16), photometric="minisblack")
    assert main(["evaluate-stack", "--gt", str(folder / "gt.tif"), "--pred",
                 str(tmp_path / "small.tif"), "--out", str(tmp_path / "r")]) == 2
    assert main(["evaluate-stack", "--gt", str(tmp_path / "missing.tif"), "--pred",
                 str(tmp_path / "small.tif"), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r" / "summary.json").exists()
