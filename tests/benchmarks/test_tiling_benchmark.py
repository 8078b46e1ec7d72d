"""The tiling benchmark: its synthetic field, its stand-in model and its figures."""

from __future__ import annotations

import numpy as np
import pytest

from napari_focsam.benchmarks.standin import (
    THRESHOLD,
    BrightComponentEncoder,
    BrightComponentPredictor,
    standin_model,
)
from napari_focsam.benchmarks.tiling import format_tiling_table, nuclei_field, run_tiling_benchmark
from napari_focsam.benchmarks.timing import BenchmarkError
from napari_focsam.engine.interactive import InteractivePredictor


def test_the_field_is_deterministic_with_separate_nuclei_and_their_labels():
    a, b = nuclei_field(1024, 40, seed=3), nuclei_field(1024, 40, seed=3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.image.dtype == np.uint8 and a.labels.max() == 40
    assert ((a.radii >= 5) & (a.radii <= 12)).all()
    for k, (r, c) in enumerate(a.centres):
        assert a.labels[int(round(r)), int(round(c))] == k + 1
        assert a.image[int(round(r)), int(round(c))] > 120 > np.median(a.image)
    assert not (nuclei_field(1024, 40, seed=4).labels == a.labels).all()
    with pytest.raises(BenchmarkError, match="fit"):
        nuclei_field(128, 500)


def test_the_stand_in_sees_frames_as_sam_does():
    enc = BrightComponentEncoder()
    frame = np.zeros((2048, 1024, 3), np.uint8)
    frame[1000:1040, 500:540] = 255  # 40 px -> 20 px in the 1024 input -> 5 low-res pixels
    gray = enc.encode([frame])[0]["gray"]
    assert gray.shape == (1, 256, 256) and enc.metadata((2048, 1024))["input_size"] == [1024, 512]
    assert (gray[0] > THRESHOLD).sum() == pytest.approx(25, abs=10)
    assert gray[0, :, 128:].max() == 0  # the padding
    predictor = BrightComponentPredictor()
    assert isinstance(predictor, InteractivePredictor)
    predictor.set_frame(enc.to_features(enc.encode([frame])[0], (2048, 1024)), (2048, 1024))
    pred = predictor.predict(np.array([[1020.0, 520.0]]), np.array([1]))
    assert pred.masks.shape == (1, 2048, 1024) and pred.low_res_logits.shape == (1, 256, 256)
    truth = np.zeros((2048, 1024), bool)
    truth[1000:1040, 500:540] = True
    assert (pred.masks[0] & truth).sum() / (pred.masks[0] | truth).sum() > 0.8
    assert not predictor.predict(np.array([[100.0, 100.0]]), np.array([1])).masks.any()
    assert standin_model().can("interactive") and not standin_model().can("propagation")


def test_tiles_find_the_small_nuclei_that_resizing_loses():
    result = run_tiling_benchmark(2048, 40, seed=1, isolate=False)
    tiled, resized = result["runs"]["tiled"], result["runs"]["resized"]
    assert tiled["tiles_per_frame"] == 9 and resized["tiles_per_frame"] == 1
    assert tiled["mean_iou"] > resized["mean_iou"] + 0.2
    assert tiled["found"] > 0.8 > resized["found"]
    assert tiled["first_click_encoded"] == 1  # lazily: the tile under the first click only
    assert tiled["encoded"] == 9 + 1 and resized["encoded"] == 1
    assert tiled["whole_frame_clicks"] == 0 and resized["whole_frame_clicks"] == 40
    table = format_tiling_table(result)
    for row in ("mean IoU", "found (IoU >= 0.5)", "first click, cold cache", "peak RSS during"):
        assert row in table
    assert result["machine"]["cpu"] in table
