"""``napari-focsam evaluate`` and `run_noc` end to end on a synthetic GrabCut-layout dataset."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
from eval_helpers import Prediction, grabcut_folder

from napari_focsam.api.models import LoadedModel
from napari_focsam.cli import evaluate as evaluate_cli
from napari_focsam.cli.exits import run_command
from napari_focsam.evaluation import drain, run_noc
from napari_focsam.evaluation import run as run_module

IOU_COLUMNS = [f"iou_{k}" for k in range(1, 21)]
SUMMARY_KEYS = {"model", "family", "weights", "device", "dtype", "dataset", "dataset_dir", "n",
                "NoC@85", "NoC@90", "NoC@95", "mIoU@k", "failures", "NoC@90 failures", "skipped",
                "settings"}


@pytest.fixture(scope="module")
def grabcut(tmp_path_factory):
    root = tmp_path_factory.mktemp("grabcut")
    grabcut_folder(root, n=3, hw=(64, 64))
    return root


def evaluate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="napari-focsam")
    evaluate_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(["evaluate", *argv]))


def tiny(grabcut, out, *extra: str) -> list[str]:
    return ["--model", "sam_test_tiny", "--weights", "random", "--dataset", "grabcut",
            "--dataset-dir", str(grabcut), "--device", "cpu", "--dtype", "fp32", "--quiet",
            "--out", str(out), *extra]


def read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_evaluate_writes_per_sample_csv_and_summary(grabcut, tmp_path, capsys):
    out = tmp_path / "out"
    assert evaluate(tiny(grabcut, out, "--seed", "3")) == 0
    header, rows = read_csv(out / "per_sample.csv")
    assert header == ["model", "dataset", "sample", "NoC@85", "NoC@90", "NoC@95", *IOU_COLUMNS]
    assert [r[2] for r in rows] == ["img0", "img1", "img2"]
    assert all(r[0] == "sam_test_tiny" and r[1] == "grabcut" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["n"] == 3 and summary["model"] == "sam_test_tiny"
    assert list(summary["mIoU@k"]) == [str(k) for k in range(1, 21)]
    assert summary["settings"]["seed"] == 3 and summary["settings"]["max_clicks"] == 20
    nocs = np.array([[int(v) for v in r[3:6]] for r in rows])
    assert summary["NoC@90"] == pytest.approx(nocs[:, 1].mean())
    ious = np.array([[float(v) for v in r[6:]] for r in rows])
    assert summary["mIoU@k"]["5"] == pytest.approx(ious[:, 4].mean(), abs=1e-6)
    assert "grabcut: 3 samples" in capsys.readouterr().out


def test_evaluate_compare_runs_both_models_on_the_same_samples(grabcut, tmp_path):
    out = tmp_path / "cmp"
    argv = tiny(grabcut, out, "--max-clicks", "4", "--limit", "2", "--compare", "focsam_test_tiny",
                "--compare-weights", "random")
    assert evaluate(argv) == 0
    header, rows = read_csv(out / "per_sample.csv")
    assert header[-1] == "iou_4"
    assert [(r[0], r[2]) for r in rows] == [("sam_test_tiny", "img0"), ("sam_test_tiny", "img1"),
                                            ("focsam_test_tiny", "img0"), ("focsam_test_tiny", "img1")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 2 and summary["compare"]["model"] == "focsam_test_tiny"
    assert summary["compare"]["family"] == "focsam" and summary["compare"]["n"] == 2
    assert list(summary["compare"]["mIoU@k"]) == ["1", "2", "3", "4"]


def test_evaluate_exit_codes(grabcut, tmp_path, monkeypatch):
    assert evaluate(tiny(tmp_path / "missing", tmp_path / "o1")) == 2
    assert evaluate(tiny(grabcut, tmp_path / "o2", "--compare", "sam_vit_q")) == 2
    with pytest.raises(SystemExit):
        evaluate(tiny(grabcut, tmp_path / "o3", "--max-clicks", "0"))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "evaluate_sample", interrupted)
    out = tmp_path / "o4"
    assert evaluate(tiny(grabcut, out)) == 130
    assert not (out / "summary.json").exists() and not (out / "per_sample.csv").exists()


class _Oracle:
    """Predicts the ground truth of the sample being evaluated (set by the test)."""

    def __init__(self, objects):
        self.objects = objects
        self.gt = None

    def set_image(self, image):
        for gt in self.objects.values():  # find the object drawn on this image
            if image[gt].min() >= 150:
                self.gt = gt

    def start_session(self):
        return self

    def add_click(self, row, col, positive):
        return Prediction(self.gt)


def test_run_noc_with_an_oracle_and_cancellation(tmp_path, monkeypatch):
    objects = grabcut_folder(tmp_path / "data", n=3, hw=(64, 64))
    monkeypatch.setattr(LoadedModel, "interactive_predictor", lambda loaded: _Oracle(objects))
    progress = run_noc("sam_test_tiny", "grabcut", tmp_path / "data", weights="random",
                       device="cpu", dtype="fp32", out_dir=tmp_path / "out")
    first = next(progress)
    assert (first.done, first.total) == (0, 3)
    progress.close()  # cancelled: nothing written
    assert not (tmp_path / "out" / "summary.json").exists()

    report = drain(run_noc("sam_test_tiny", "grabcut", tmp_path / "data", weights="random",
                           device="cpu", dtype="fp32", max_clicks=5, out_dir=tmp_path / "out"))
    s = report.summary
    assert (s["NoC@85"], s["NoC@90"], s["NoC@95"]) == (1.0, 1.0, 1.0)
    assert s["mIoU@k"] == {str(k): 1.0 for k in range(1, 6)}
    assert s["NoC@90 failures"] == 0
    assert json.loads(report.summary_json.read_text()) == s
