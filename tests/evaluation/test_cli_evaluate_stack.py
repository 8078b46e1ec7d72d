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


# ---------------------------------------------------------------------- hardening (issue 13)
def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("napari-focsam: error: "), err
    return err


def _no_models(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("napari_focsam.api.models.load_model", refuse)


@pytest.mark.parametrize("which", ["gt", "pred"])
def test_a_damaged_tiff_is_bad_input(timelapse, tmp_path, capsys, which):
    folder, labels = timelapse
    tifffile.imwrite(tmp_path / "z.tif", labels, compression="zlib", photometric="minisblack")
    data = bytearray((tmp_path / "z.tif").read_bytes())
    for i in range(300, len(data) - 300, 5):
        data[i] ^= 0xFF
    (tmp_path / "z.tif").write_bytes(bytes(data))
    files = {"gt": folder / "gt.tif", "pred": folder / "gt.tif", which: tmp_path / "z.tif"}
    assert main(["evaluate-stack", "--gt", str(files["gt"]), "--pred", str(files["pred"]),
                 "--out", str(tmp_path / "r")]) == 2
    assert "cannot read" in _one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_a_truncated_tiff_is_bad_input(timelapse, tmp_path, capsys):
    folder, _ = timelapse
    data = (folder / "gt.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[:len(data) // 2])
    assert main(["evaluate-stack", "--gt", str(tmp_path / "cut.tif"), "--pred",
                 str(folder / "gt.tif"), "--out", str(tmp_path / "r")]) == 2
    assert "cannot read" in _one_error_line(capsys)


@pytest.mark.parametrize("where", ["file", "inside-a-file"])
def test_a_file_as_out_is_refused_before_any_work(timelapse, tmp_path, capsys, monkeypatch,
                                                  where):
    folder, _ = timelapse
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" if where == "file" else tmp_path / "afile" / "report"
    _no_models(monkeypatch)
    assert main(["evaluate-stack", "--gt", str(folder / "gt.tif"), "--image",
                 str(folder / "images.tif"), "--model", "sam_test_tiny", "--weights", "random",
                 "--out", str(out)]) == 2
    assert "give a folder" in _one_error_line(capsys)
    assert (tmp_path / "afile").read_text() == "x"


def test_a_report_that_would_replace_an_input_is_refused(timelapse, tmp_path, capsys,
                                                         monkeypatch):
    folder, labels = timelapse
    (tmp_path / "r").mkdir()
    tifffile.imwrite(tmp_path / "r" / "pred_labels.tif", labels, photometric="minisblack")
    _no_models(monkeypatch)
    assert main(["evaluate-stack", "--gt", str(tmp_path / "r" / "pred_labels.tif"), "--image",
                 str(folder / "images.tif"), "--out", str(tmp_path / "r")]) == 2
    assert "would replace the input" in _one_error_line(capsys)


def test_empty_ground_truth_is_an_error(timelapse, tmp_path, capsys, monkeypatch):
    folder, labels = timelapse
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros_like(labels), photometric="minisblack")
    _no_models(monkeypatch)
    for source in (["--pred", str(folder / "gt.tif")], ["--image", str(folder / "images.tif")]):
        assert main(["evaluate-stack", "--gt", str(tmp_path / "empty.tif"), *source, "--out",
                     str(tmp_path / "r")]) == 2
        assert "has no objects" in _one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_predicted_labels_are_an_imagej_stack(timelapse, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FOCSAM_CACHE_DIR", str(tmp_path / "cache"))
    folder, labels = timelapse
    assert main(["evaluate-stack", "--gt", str(folder / "gt.tif"), "--image",
                 str(folder / "images.tif"), "--model", "sam_test_tiny", "--weights", "random",
                 "--propagation-model", "sam2_test_tiny", "--propagation-weights", "random",
                 "--device", "cpu", "--dtype", "fp32", "--stack-kind", "t", "--out",
                 str(tmp_path / "report")]) == 0
    with tifffile.TiffFile(tmp_path / "report" / "pred_labels.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TYX"
        assert tif.series[0].shape == labels.shape
