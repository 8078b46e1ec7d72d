"""Stack evaluation: per-frame IoU (J), mean J, drift, matching and the report files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_focsam.evaluation.stack import evaluate_stack, write_stack_report
from napari_focsam.samples import synthetic_cell_timelapse, synthetic_nuclei_volume


def _square_stack(shifts, size=10, hw=(40, 60), value=1):
    out = np.zeros((len(shifts), *hw), np.int32)
    for t, s in enumerate(shifts):
        out[t, 10:10 + size, 10 + s:10 + s + size] = value
    return out


def test_hand_computed_iou_mean_j_and_centroid_error():
    gt = _square_stack([0, 0, 0])
    pred = _square_stack([0, 5, 10], value=7)  # half overlap on frame 1, none on frame 2
    score = evaluate_stack(pred, gt)
    (obj,) = score.objects
    assert (obj.gt_id, obj.pred_id, obj.prompt_frame) == (1, 7, 0)
    assert obj.frames == [0, 1, 2]
    np.testing.assert_allclose(obj.iou, [1.0, 50 / 150, 0.0])
    assert obj.mean_j == pytest.approx((1 + 1 / 3) / 3)
    assert obj.centroid_error_px == pytest.approx((0 + 5 + 10) / 3)
    assert obj.drift_per_frame == pytest.approx(-0.5)  # slope of J over distance 0, 1, 2
    assert score.mean_j == pytest.approx(obj.mean_j) and score.false_positive_ids == []


def test_matching_is_one_to_one_misses_count_zero_and_extra_predictions_are_listed():
    gt = _square_stack([0, 0]) + _square_stack([30, 30], value=2)
    pred = _square_stack([1, 1], value=5)
    pred[:, 35:38, 0:3] = 9  # a false positive far from everything
    score = evaluate_stack(pred, gt)
    by_gt = {o.gt_id: o for o in score.objects}
    assert by_gt[1].pred_id == 5 and by_gt[1].mean_j > 0.8
    assert by_gt[2].pred_id == 0 and by_gt[2].mean_j == 0.0 and by_gt[2].iou == [0.0, 0.0]
    assert score.false_positive_ids == [9]
    assert score.mean_j == pytest.approx(by_gt[1].mean_j / 2)


def test_prompt_frame_sets_where_drift_is_measured_from():
    gt = _square_stack([0] * 5)
    pred = _square_stack([4, 2, 0, 2, 4], value=3)  # perfect at frame 2, worse both ways
    default = evaluate_stack(pred, gt).objects[0]
    centred = evaluate_stack(pred, gt, prompt_frames={1: 2}).objects[0]
    assert centred.prompt_frame == 2 and centred.drift_per_frame < 0
    assert default.drift_per_frame != pytest.approx(centred.drift_per_frame)


def test_synthetic_time_lapse_with_a_drifting_fake_tracker():
    """Sample time-lapse: a fake that copies the truth scores 1; one whose masks slide away from
    the prompted frame scores less and drifts negatively; divisions (new ids) are matched."""
    _, labels, _ = synthetic_cell_timelapse(n_frames=12, shape=(96, 128), n_cells=4, seed=1)
    labels = labels.astype(np.int32)
    perfect = evaluate_stack(labels, labels)
    assert perfect.mean_j == pytest.approx(1.0) and perfect.false_positive_ids == []
    assert all(o.drift_per_frame in (None, pytest.approx(0.0)) for o in perfect.objects)
    sliding = np.stack([np.roll(labels[t], t // 3, axis=1) for t in range(len(labels))])
    score = evaluate_stack(sliding, labels)
    assert 0.3 < score.mean_j < 1.0
    first = min(score.objects, key=lambda o: o.gt_id)
    assert first.drift_per_frame is not None and first.drift_per_frame < 0


def test_synthetic_volume_report_files(tmp_path):
    _, labels = synthetic_nuclei_volume(shape=(16, 64, 64), n_nuclei=3, seed=2)
    labels = labels.astype(np.int32)
    pred = labels.copy()
    pred[8:] = 0  # the second half of the volume lost
    score = evaluate_stack(pred, labels)
    out = write_stack_report(score, tmp_path / "report", {"model": "fake"})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean_j"] == pytest.approx(score.mean_j) and summary["settings"]["model"] == "fake"
    with (out / "per_frame.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) == {"gt_id", "pred_id", "frame", "iou"}
    assert len(rows) == sum(len(o.frames) for o in score.objects)
    assert any(float(r["iou"]) == 0.0 for r in rows) and any(float(r["iou"]) == 1.0 for r in rows)
    assert sorted(p.name for p in out.iterdir()) == ["per_frame.csv", "summary.json"]


def test_bad_inputs():
    gt = _square_stack([0, 0])
    with pytest.raises(ValueError, match="shape"):
        evaluate_stack(gt[:1], gt)
    with pytest.raises(ValueError, match="integers"):
        evaluate_stack(gt.astype(float), gt)
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        evaluate_stack(gt[0], gt[0])


def test_empty_ground_truth_is_an_error():
    from napari_focsam.evaluation.dataset_files import DatasetError
    from napari_focsam.evaluation.stack_prompts import prompts_from_ground_truth

    empty = np.zeros((2, 8, 8), np.int32)
    with pytest.raises(DatasetError, match="has no objects"):
        evaluate_stack(_square_stack([0, 0], hw=(8, 8), size=2), empty)
    with pytest.raises(DatasetError, match="has no objects"):
        prompts_from_ground_truth(empty)


def test_huge_ids_cost_memory_by_object_count_not_by_id():
    """Ids up to 2**62: arrays are indexed by object rank (a bincount by id would need
    exabytes)."""
    gt = _square_stack([0, 0]).astype(np.int64) * 2**62
    pred = _square_stack([5, 5]).astype(np.int64) * 2**40
    (obj,) = evaluate_stack(pred, gt).objects
    assert (obj.gt_id, obj.pred_id) == (2**62, 2**40) and obj.iou == pytest.approx([50 / 150] * 2)

