"""Cell Tracking Challenge measures (py-ctcmetrics) of label stacks and CTC folders, and
``napari-focsam evaluate-stack`` reporting them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_focsam.cli import main
from napari_focsam.evaluation.ctc_scores import read_ctc_folder, score_ctc_folders, score_tracks
from napari_focsam.samples import synthetic_cell_timelapse
from napari_focsam.tracking import TrackingError, TrackTable, export_ctc

#: CTC's AOGM weights of a missing node (FN) and a missing edge (EA).
W_FN, W_EA = 10.0, 1.5


@pytest.fixture(scope="module")
def movie():
    _, labels, lineage = synthetic_cell_timelapse(n_frames=12, shape=(96, 128), n_cells=4, seed=5,
                                                  n_divisions=1)
    return labels, TrackTable.from_rows(lineage)


def _nodes(labels: np.ndarray) -> int:
    return sum(len(np.unique(f[f > 0])) for f in labels)


def test_the_ground_truth_scores_perfectly(movie):
    labels, table = movie
    s = score_tracks(labels, labels, table, table)
    assert (s.det, s.seg, s.tra) == (1.0, 1.0, 1.0)
    assert s.aogm == 0 and not any(s.aogm_operations.values())
    assert s.n_gt_divisions == 1 == s.division(0).true_positive
    assert s.division(0).precision == s.division(0).recall == 1.0


def test_a_missing_detection_costs_one_node(movie):
    labels, table = movie
    pred = labels.copy()
    t = 6
    victim = int(np.unique(pred[t][pred[t] > 0])[0])
    pred[t][pred[t] == victim] = 0
    s = score_tracks(pred, labels, table, table)
    assert s.aogm_operations["FN"] == 1
    n = _nodes(labels)
    assert s.det == pytest.approx(1 - 1 / n)  # DET = 1 - w_FN * FN / (w_FN * nodes)
    assert s.seg == pytest.approx(1 - 1 / n)  # the lost object scores J = 0 on that frame
    assert s.tra < 1.0


def test_without_a_lineage_the_division_links_are_missing(movie):
    labels, table = movie
    s = score_tracks(labels, labels, None, table)
    assert s.det == 1.0
    assert s.aogm_operations["EA"] == 2  # mother -> each daughter
    edges = _nodes(labels) - len(table) + 2  # within-track links + the two division links
    assert s.tra == pytest.approx(1 - 2 * W_EA / (W_FN * _nodes(labels) + W_EA * edges))
    d = s.division(3)
    assert (d.true_positive, d.false_positive, d.false_negative) == (0, 0, 1)
    assert d.precision is None and d.recall == 0.0


def test_a_division_found_one_frame_late_counts_within_tolerance(movie):
    labels, table = movie
    (daughter_a, daughter_b), mother = [
        (tuple(table.children_of(m)), m) for m in table.ids if table.children_of(m)][0]
    t = int(table.begin[daughter_a])
    pred = labels.copy()
    frame = pred[t]
    frame[(frame == daughter_a) | (frame == daughter_b)] = mother  # the mother lives on a frame
    late = TrackTable.from_labels(pred)
    late.parents.update({daughter_a: mother, daughter_b: mother})
    s = score_tracks(pred, labels, late, table)
    assert s.division(0).false_negative == 1 and s.division(0).false_positive == 1
    assert s.division(1).true_positive == 1 and s.division(1).recall == 1.0


def test_folders_round_trip_and_score_without_seg(movie, tmp_path):
    labels, table = movie
    export_ctc(labels, tmp_path / "01_RES", table)
    export_ctc(labels, tmp_path / "01_GT" / "TRA", table, kind="GT")
    back, back_table = read_ctc_folder(tmp_path / "01_RES")
    np.testing.assert_array_equal(back, labels)
    assert back_table.to_rows().tolist() == table.to_rows().tolist()
    gt_back, _ = read_ctc_folder(tmp_path / "01_GT")
    np.testing.assert_array_equal(gt_back, labels)
    s = score_ctc_folders(tmp_path / "01_RES", tmp_path / "01_GT")
    assert s.seg is None and s.tra == 1.0
    assert score_ctc_folders(tmp_path / "01_RES", tmp_path / "01_GT" / "TRA").tra == 1.0


def test_a_result_that_breaks_the_ctc_rules_is_refused(movie, tmp_path):
    labels, table = movie
    export_ctc(labels, tmp_path / "01_RES", table)
    export_ctc(labels, tmp_path / "01_GT" / "TRA", table, kind="GT")
    lines = (tmp_path / "01_RES" / "res_track.txt").read_text().splitlines()
    label, begin, end, parent = lines[0].split()
    lines[0] = f"{label} {int(begin) + 2} {end} {parent}"  # masks hold it before its begin
    (tmp_path / "01_RES" / "res_track.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(TrackingError, match="not a valid CTC result"):
        score_ctc_folders(tmp_path / "01_RES", tmp_path / "01_GT")


def test_bad_folders_and_shapes_are_specific_errors(movie, tmp_path):
    labels, table = movie
    export_ctc(labels, tmp_path / "01_RES", table)
    export_ctc(labels[:5], tmp_path / "short_GT" / "TRA", kind="GT")
    with pytest.raises(TrackingError, match="12 frames, the ground truth 5"):
        score_ctc_folders(tmp_path / "01_RES", tmp_path / "short_GT")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrackingError, match="neither TRA"):
        score_ctc_folders(tmp_path / "01_RES", tmp_path / "empty")
    with pytest.raises(TrackingError, match="res_track.txt is missing"):
        score_ctc_folders(tmp_path / "empty", tmp_path / "01_RES")
    (tmp_path / "01_RES" / "mask003.tif").unlink()
    with pytest.raises(TrackingError, match="without gaps"):
        read_ctc_folder(tmp_path / "01_RES")
    with pytest.raises(TrackingError, match="shape"):
        score_tracks(labels[:, :50], labels)
    with pytest.raises(TrackingError, match="integer"):
        score_tracks(labels.astype(np.float32), labels)


# ------------------------------------------------------------------------------ the CLI
@pytest.fixture()
def files(movie, tmp_path):
    labels, table = movie
    tifffile.imwrite(tmp_path / "gt.tif", labels, photometric="minisblack")
    (tmp_path / "gt_lineage.txt").write_text("".join(f"{line}\n" for line in table.to_ctc_lines()))
    return tmp_path


def test_evaluate_stack_reports_ctc_measures_of_a_result_folder(movie, files, capsys):
    labels, table = movie
    export_ctc(labels, files / "01_RES", table)
    assert main(["evaluate-stack", "--gt", str(files / "gt.tif"), "--gt-lineage",
                 str(files / "gt_lineage.txt"), "--pred", str(files / "01_RES"), "--out",
                 str(files / "r")]) == 0
    out = capsys.readouterr().out
    assert "DET 1.0000  SEG 1.0000  TRA 1.0000" in out
    assert "precision 1.000 recall 1.000 of 1" in out
    ctc = json.loads((files / "r" / "summary.json").read_text())["ctc"]
    assert ctc["tra"] == 1.0 and ctc["n_gt_divisions"] == 1
    assert [d["tolerance"] for d in ctc["divisions"]] == [0, 1, 2, 3]


def test_evaluate_stack_without_lineages_and_without_ctc(movie, files, capsys):
    assert main(["evaluate-stack", "--gt", str(files / "gt.tif"), "--pred", str(files / "gt.tif"),
                 "--out", str(files / "r")]) == 0
    assert "TRA 1.0000" in capsys.readouterr().out  # no divisions on either side
    assert main(["evaluate-stack", "--gt", str(files / "gt.tif"), "--gt-lineage",
                 str(files / "gt_lineage.txt"), "--pred", str(files / "gt.tif"), "--out",
                 str(files / "r2")]) == 0
    assert "recall 0.000 of 1" in capsys.readouterr().out
    assert main(["evaluate-stack", "--gt", str(files / "gt.tif"), "--pred", str(files / "gt.tif"),
                 "--no-ctc", "--out", str(files / "r3")]) == 0
    assert "DET" not in capsys.readouterr().out
    assert "ctc" not in json.loads((files / "r3" / "summary.json").read_text())


def test_evaluate_stack_lineage_errors_exit_2(movie, files, capsys):
    labels, table = movie
    assert main(["evaluate-stack", "--gt", str(files / "gt.tif"), "--gt-lineage",
                 str(files / "nope.txt"), "--pred", str(files / "gt.tif"), "--out",
                 str(files / "r")]) == 2
    assert "--gt-lineage" in capsys.readouterr().err and not (files / "r").exists()
    export_ctc(labels, files / "01_RES", table)
    assert main(["evaluate-stack", "--gt", str(files / "gt.tif"), "--pred", str(files / "01_RES"),
                 "--pred-lineage", str(files / "gt_lineage.txt"), "--out", str(files / "r")]) == 2
    assert "own track file" in capsys.readouterr().err
    (files / "bad.txt").write_text("1 0 x 0\n")
    assert main(["evaluate-stack", "--gt", str(files / "gt.tif"), "--gt-lineage",
                 str(files / "bad.txt"), "--pred", str(files / "gt.tif"), "--out",
                 str(files / "r")]) == 2
    assert "four integers" in capsys.readouterr().err
