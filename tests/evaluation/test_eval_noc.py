"""NoC, IoU after each click, mIoU@k and failures with scripted predictors."""

from __future__ import annotations

import numpy as np
import pytest
from eval_helpers import EmptyPredictor, OraclePredictor, ScriptedPredictor, image_with, square

from napari_focsam.evaluation import (
    evaluate_sample,
    mask_iou,
    noc_label,
    number_of_clicks,
    summarize,
)

HW = (40, 40)


def test_oracle_needs_one_click_at_every_threshold():
    gt = square(HW, 5, 5, 11)
    oracle = OraclePredictor(gt)
    result = evaluate_sample(oracle, image_with(gt), gt, rng=0, name="a")
    assert result.noc == (1, 1, 1)
    assert result.ious == (1.0,) * 20
    assert len(result.clicks) == 1 and oracle.clicks == [(10, 10, True)]  # centre, positive
    assert not result.failed(0.95)


def test_a_predictor_that_never_improves_takes_max_clicks_and_fails():
    gt = square(HW, 5, 5, 11)
    empty = EmptyPredictor(gt)
    result = evaluate_sample(empty, image_with(gt), gt, max_clicks=20, rng=0)
    assert result.noc == (20, 20, 20)
    assert result.ious == (0.0,) * 20
    assert len(result.clicks) == 20 and all(c.positive for c in result.clicks)
    assert len({(c.row, c.col) for c in result.clicks}) == 20  # never the same pixel twice
    summary = summarize([result, evaluate_sample(empty, image_with(gt), gt, rng=1)])
    assert summary["n"] == 2
    assert summary["NoC@90"] == 20.0
    assert summary["failures"] == {"NoC@85": 2, "NoC@90": 2, "NoC@95": 2}
    assert summary["NoC@90 failures"] == 2


def masks_with_ious(gt: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Masks holding the first `c` object pixels (IoU = c / |gt|)."""
    flat = np.flatnonzero(gt)
    out = []
    for c in counts:
        m = np.zeros(gt.size, dtype=bool)
        m[flat[:c]] = True
        out.append(m.reshape(gt.shape))
    return out


def test_miou_at_k_and_noc_arithmetic():
    gt = square(HW, 10, 10, 10)  # 100 pixels
    a = evaluate_sample(ScriptedPredictor(masks_with_ious(gt, [50, 86, 91, 96])), image_with(gt),
                        gt, max_clicks=5, rng=0, name="a")
    assert a.ious == (0.5, 0.86, 0.91, 0.96, 0.96)
    assert a.noc == (2, 3, 4)
    b = evaluate_sample(ScriptedPredictor(masks_with_ious(gt, [20, 40, 60, 80, 90])),
                        image_with(gt), gt, max_clicks=5, rng=0, name="b")
    assert b.ious == (0.2, 0.4, 0.6, 0.8, 0.9)
    assert b.noc == (5, 5, 5)  # reaches 0.9 on the last click: NoC 5 but no failure at 0.9
    s = summarize([a, b])
    assert s["NoC@85"] == pytest.approx(3.5)
    assert s["NoC@90"] == pytest.approx(4.0)
    assert s["NoC@95"] == pytest.approx(4.5)
    expected = [(0.5 + 0.2) / 2, (0.86 + 0.4) / 2, (0.91 + 0.6) / 2, (0.96 + 0.8) / 2,
                (0.96 + 0.9) / 2]
    assert list(s["mIoU@k"]) == ["1", "2", "3", "4", "5"]
    assert list(s["mIoU@k"].values()) == pytest.approx(expected)
    assert s["failures"] == {"NoC@85": 0, "NoC@90": 0, "NoC@95": 1}
    assert s["NoC@90 failures"] == 0


def test_exact_mask_stops_clicking_and_keeps_its_iou():
    gt = square(HW, 10, 10, 10)
    scripted = ScriptedPredictor(masks_with_ious(gt, [40, 100]))
    result = evaluate_sample(scripted, image_with(gt), gt, max_clicks=6, rng=0)
    assert result.ious == (0.4, 1.0, 1.0, 1.0, 1.0, 1.0)
    assert len(result.clicks) == 2 and scripted.calls == 2
    assert result.noc == (2, 2, 2)


def test_same_seed_gives_the_same_first_click_for_any_model():
    gt = np.zeros(HW, dtype=bool)
    gt[8:28, 4:36] = True  # many tied centre pixels
    a, b = OraclePredictor(gt), EmptyPredictor(gt)
    evaluate_sample(a, image_with(gt), gt, rng=np.random.default_rng(7))
    evaluate_sample(b, image_with(gt), gt, rng=np.random.default_rng(7))
    assert a.clicks[0] == b.clicks[0]


def test_iou_helpers():
    gt = square(HW, 0, 0, 10)
    pred = square(HW, 0, 0, 5)
    assert mask_iou(gt, pred) == pytest.approx(25 / 100)
    ignore = square(HW, 5, 0, 5)
    assert mask_iou(gt, pred, ignore) == pytest.approx(25 / 75)
    assert mask_iou(np.zeros(HW, bool), np.zeros(HW, bool)) == 1.0
    assert number_of_clicks([0.1, 0.9, 0.95], 0.9) == 2
    assert number_of_clicks([0.1, 0.2], 0.9) == 2
    assert noc_label(0.85) == "NoC@85" and noc_label(0.9) == "NoC@90" and noc_label(0.925) == "NoC@92.5"


def test_bad_inputs():
    gt = square(HW, 5, 5, 5)
    with pytest.raises(ValueError, match="empty"):
        evaluate_sample(OraclePredictor(gt), image_with(gt), np.zeros(HW, bool))
    with pytest.raises(ValueError, match="do not match"):
        evaluate_sample(OraclePredictor(gt), np.zeros((8, 8, 3), np.uint8), gt)
    with pytest.raises(ValueError, match="max_clicks"):
        evaluate_sample(OraclePredictor(gt), image_with(gt), gt, max_clicks=0)
    wrong = ScriptedPredictor([np.zeros((3, 3), bool)])
    with pytest.raises(ValueError, match="shape"):
        evaluate_sample(wrong, image_with(gt), gt)
    with pytest.raises(ValueError, match="no samples"):
        summarize([])
