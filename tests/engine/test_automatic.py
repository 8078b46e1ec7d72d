"""Automatic mask generation: geometry, NMS, region clean-up, settings, and the batched decoding
of the three families on tiny random-weight models (the official parity is in
``test_automatic_parity.py``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_focsam.engine.automatic import (
    AutoMaskParams,
    AutoMaskParamsError,
    AutomaticMaskGenerator,
    Crop,
    _clean_patch,
    crop_boxes,
    crops_of_regions,
    layer_point_grids,
    point_grid,
)
from napari_focsam.engine.focsam_predictor import FocSamPredictor
from napari_focsam.engine.interactive import BatchPredictor
from napari_focsam.engine.nms import box_iou, nms
from napari_focsam.engine.prompts import PromptError
from napari_focsam.engine.regions import clean_low_res_logits, remove_small_regions
from napari_focsam.engine.sam2_image_predictor import Sam2ImagePredictor
from napari_focsam.engine.sam_predictor import SamPredictor
from napari_focsam.errors import UserError
from napari_focsam.models.focsam import FOCSAM_CONFIGS, build_focsam
from napari_focsam.models.sam import SAM_CONFIGS, build_sam
from napari_focsam.models.sam2.config import SAM2_CONFIGS
from napari_focsam.models.sam2.model import build_sam2

RNG = np.random.default_rng(5)
SMALL = 128  # model input side of the tiny models here (fast encoders)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_sam():
    cfg = SAM_CONFIGS["sam_test_tiny"]
    torch.manual_seed(0)
    return build_sam(dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder,
                                                                          image_size=SMALL))).eval()


@pytest.fixture(scope="module")
def sam_predictor():
    p = SamPredictor(small_sam(), device="cpu", encoder_dtype="fp32")
    p.set_image(RNG.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    return p


@pytest.fixture(scope="module")
def sam2_predictor():
    torch.manual_seed(0)
    net = build_sam2(SAM2_CONFIGS["sam2_test_tiny"].replace(image_size=SMALL)).eval()
    p = Sam2ImagePredictor(net, dtype="fp32")
    p.set_image(RNG.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    return p


def _points(hw, n):
    h, w = hw
    return np.stack([RNG.uniform(0, h, n), RNG.uniform(0, w, n)], axis=-1)[:, None]  # (n, 1, 2)


# ----------------------------------------------------------------------------- geometry


def test_point_grid_is_the_official_layout():
    np.testing.assert_array_equal(point_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75],
                                                  [0.75, 0.75]])
    assert [len(g) for g in layer_point_grids(9, 2, 2)] == [81, 16, 4]


def test_crop_boxes_follow_the_official_formula():
    # short side 90, overlap int(512/1500 * 90) = 30, crops ceil((30 + 120) / 2) x ceil(120 / 2)
    crops = crop_boxes((90, 120), 1, 512 / 1500)
    assert [c.box for c in crops] == [(0, 0, 90, 120), (0, 0, 60, 75), (30, 0, 90, 75),
                                      (0, 45, 60, 120), (30, 45, 90, 120)]
    assert [c.layer for c in crops] == [0, 1, 1, 1, 1]
    assert len(crop_boxes((90, 120), 2, 512 / 1500)) == 1 + 4 + 16


def test_crops_of_regions_shift_each_region_s_crops():
    crops = crops_of_regions([(0, 0, 90, 120), (10, 100, 100, 220)], 1, 512 / 1500)
    assert len(crops) == 10
    assert crops[5] == Crop((10, 100, 100, 220), 0)
    assert crops[6].box == (10, 100, 70, 175)


# ----------------------------------------------------------------------------- NMS


def test_nms_keeps_the_best_and_breaks_ties_by_index():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]])
    assert nms(boxes, np.array([0.5, 0.9, 0.9, 0.1]), 0.5).tolist() == [1, 3]
    assert nms(boxes, np.array([0.9, 0.5, 0.9, 0.1]), 0.5).tolist() == [0, 3]
    assert nms(boxes[:0], np.zeros(0), 0.5).tolist() == []


def test_nms_compares_a_float32_iou_strictly():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 7]])  # IoU 0.7 -> float32 0.69999999
    assert nms(boxes, np.array([1.0, 0.5]), 0.7).tolist() == [0, 1]
    assert nms(boxes, np.array([1.0, 0.5]), 0.6999).tolist() == [0]


def test_nms_never_suppresses_with_degenerate_boxes():
    boxes = np.array([[3, 3, 3, 9], [3, 3, 3, 9]])  # area 0: IoU 0 / 0
    assert np.isnan(box_iou(boxes[0], boxes)).all()
    assert nms(boxes, np.array([1.0, 0.5]), 0.1).tolist() == [0, 1]


# ----------------------------------------------------------------------------- regions


def test_remove_small_regions_holes_and_islands():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5, 5] = False  # 1-pixel hole
    mask[15:17, 15:17] = True  # 4-pixel island
    filled, changed = remove_small_regions(mask, 3, "holes")
    assert changed and filled[5, 5] and filled.sum() == mask.sum() + 1
    cleaned, changed = remove_small_regions(filled, 5, "islands")
    assert changed and not cleaned[15:17, 15:17].any() and cleaned[2:12, 2:12].all()
    same, changed = remove_small_regions(cleaned, 5, "islands")
    assert not changed and same is cleaned
    # every island small: the largest stays (still "changed")
    tiny = np.zeros((10, 10), dtype=bool)
    tiny[0, 0] = tiny[5, 5] = tiny[5, 6] = True
    kept, changed = remove_small_regions(tiny, 10, "islands")
    assert changed and kept.sum() == 2 and kept[5, 5]
    with pytest.raises(ValueError, match="mode"):
        remove_small_regions(mask, 3, "specks")


def test_remove_small_regions_uses_8_connectivity():
    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # one diagonal island of 3
    assert not remove_small_regions(mask, 3, "islands")[1]


def test_clean_low_res_logits_flips_holes_and_specks_from_the_input():
    logits = -torch.ones(2, 12, 12)
    logits[:, 2:9, 2:9] = 1.0
    logits[:, 4, 4] = -1.0  # hole of 1
    logits[:, 10, 10] = 1.0  # speck of 1
    out = clean_low_res_logits(logits, 1, 1)
    assert out[0, 4, 4] == 10.0 and out[0, 10, 10] == -10.0
    assert torch.equal(out[1], out[0]) and out[0, 3, 3] == 1.0
    assert torch.equal(clean_low_res_logits(logits, 0, 0), logits)
    assert clean_low_res_logits(logits, 0, 1)[0, 4, 4] == -1.0


@pytest.mark.parametrize("seed", range(6))
def test_clean_patch_equals_the_whole_frame_clean_up(seed):
    rng = np.random.default_rng(seed)
    h, w = 30, 36
    for _ in range(12):
        mask = rng.random((h, w)) < rng.uniform(0.2, 0.95)
        r0, c0 = rng.integers(0, 8, 2) * rng.integers(0, 2)
        r1, c1 = h - rng.integers(0, 8) * rng.integers(0, 2), w - rng.integers(0, 8) * rng.integers(0, 2)
        mask[:r0] = mask[r1:] = False
        mask[:, :c0] = mask[:, c1:] = False
        area = int(rng.integers(2, 40))
        ref, ch1 = remove_small_regions(mask, area, "holes")
        ref, ch2 = remove_small_regions(ref, area, "islands")
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if not len(rows):
            continue
        box = np.array([rows[0], cols[0], rows[-1], cols[-1]])
        patch = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        new_patch, new_box, changed = _clean_patch(patch, box, area, (h, w))
        out = np.zeros((h, w), dtype=bool)
        if new_patch.size:
            out[new_box[0]:new_box[2] + 1, new_box[1]:new_box[3] + 1] = new_patch
        np.testing.assert_array_equal(out, ref)
        assert changed == (ch1 or ch2)


# ----------------------------------------------------------------------------- settings


def test_params_defaults_and_validation():
    p = AutoMaskParams()
    assert (p.points_per_side, p.points_per_batch, p.pred_iou_thresh, p.stability_score_thresh,
            p.stability_score_offset, p.box_nms_thresh, p.crop_n_layers, p.crop_nms_thresh,
            p.crop_overlap_ratio, p.crop_n_points_downscale_factor,
            p.min_mask_region_area) == (32, 64, 0.88, 0.95, 1.0, 0.7, 0, 0.7, 512 / 1500, 1, 0)
    s2 = AutoMaskParams.sam2()
    assert s2.pred_iou_thresh == 0.8 and s2.region_cleanup == "low_res"
    assert s2.multimask and not s2.refine_with_mask
    q = AutoMaskParams.from_official({"use_m2m": True, "multimask_output": False,
                                      "output_mode": "binary_mask"}, sam2=True)
    assert q.refine_with_mask and not q.multimask and q.pred_iou_thresh == 0.8
    for bad in ({"points_per_side": 0}, {"box_nms_thresh": 1.5}, {"region_cleanup": "x"},
                {"max_area": 5, "min_area": 9}, {"points_per_side": 4, "crop_n_layers": 3,
                                                 "crop_n_points_downscale_factor": 2}):
        with pytest.raises(AutoMaskParamsError) as info:
            AutoMaskParams(**bad)
        assert isinstance(info.value, UserError)
    with pytest.raises(AutoMaskParamsError, match="unknown"):
        p.replace(points=3)


# ----------------------------------------------------------------------------- batched decoding


def test_sam_predict_batch_equals_one_by_one(sam_predictor):
    assert isinstance(sam_predictor, BatchPredictor)
    pts = _points(sam_predictor.original_size, 5)
    batch = sam_predictor.predict_batch(pts, np.ones((5, 1)))
    assert batch.scores.shape == (5, 3) and batch.low_res_logits.shape == (5, 3, SMALL // 4,
                                                                             SMALL // 4)
    logits = batch.logits()
    assert logits.shape == (15, 50, 70)
    for i in range(5):
        one = sam_predictor.predict(points=pts[i], labels=[1], multimask=True)
        np.testing.assert_allclose(batch.scores[i].numpy(), one.scores, atol=1e-5)
        np.testing.assert_allclose(logits[3 * i:3 * i + 3].numpy(), one.logits, atol=1e-4)
        np.testing.assert_allclose(batch.low_res_logits[i].numpy(), one.low_res_logits, atol=1e-4)
    index = torch.tensor([4, 0])
    assert torch.equal(batch.logits(index), logits[index])
    single = sam_predictor.predict_batch(pts[:2], np.ones((2, 1)), multimask=False,
                                         mask_input=batch.low_res_logits[:2, :1])
    one = sam_predictor.predict(points=pts[1], labels=[1], multimask=False,
                                mask_input=batch.low_res_logits[1, 0].numpy())
    np.testing.assert_allclose(single.logits()[1].numpy(), one.logits[0], atol=1e-4)


def test_sam_predict_batch_checks_its_prompts(sam_predictor):
    with pytest.raises(PromptError):
        sam_predictor.predict_batch(np.zeros((3, 2)), np.ones(3))
    with pytest.raises(PromptError):
        sam_predictor.predict_batch(np.full((2, 1, 2), 500.0), np.ones((2, 1)))
    with pytest.raises(PromptError):
        sam_predictor.predict_batch(np.zeros((2, 1, 2)), np.ones((2, 1)),
                                    mask_input=np.zeros((2, 1, 8, 8)))


def test_focsam_predict_batch_equals_one_by_one():
    torch.manual_seed(1)
    model = build_focsam(FOCSAM_CONFIGS["focsam_test_tiny"]).eval()
    p = FocSamPredictor(model, device="cpu", encoder_dtype="fp32")
    c, e = model.sam.config.prompt_embed_dim, model.sam.config.image_embedding_size
    hw = (45, 70)
    p.set_features(torch.randn(1, c, e, e), hw, p.expected_input_size(hw))
    pts = _points(hw, 3)
    batch = p.predict_batch(pts, np.ones((3, 1)))
    for i in range(3):
        one = p.predict(points=pts[i], labels=[1], multimask=True)
        np.testing.assert_allclose(batch.logits(torch.arange(3 * i, 3 * i + 3)).numpy(),
                                   one.logits, atol=1e-4)
    assert p.automatic_defaults() == AutoMaskParams()


def test_sam2_predict_batch_equals_one_by_one(sam2_predictor):
    p = sam2_predictor
    assert isinstance(p, BatchPredictor) and p.automatic_defaults() == AutoMaskParams.sam2()
    pts = _points(p.original_size, 4)
    for multimask, k in ((True, 3), (False, 1)):
        batch = p.predict_batch(pts, np.ones((4, 1)), multimask=multimask)
        assert batch.scores.shape == (4, k)
        logits = batch.logits()
        assert logits.shape == (4 * k, 40, 56)
        for i in range(4):
            one = p.predict_batch(pts[i:i + 1], np.ones((1, 1)), multimask=multimask)
            np.testing.assert_allclose(one.scores.numpy(), batch.scores[i:i + 1].numpy(), atol=1e-5)
            np.testing.assert_allclose(one.logits().numpy(), logits[k * i:k * i + k].numpy(),
                                       atol=1e-4)
    assert batch.low_res_logits.abs().max() <= 32.0
    refined = p.predict_batch(pts, np.ones((4, 1)), multimask=False,
                              mask_input=batch.low_res_logits)
    assert refined.scores.shape == (4, 1)


def test_sam2_predict_batch_cleans_low_res_logits_when_asked(sam2_predictor):
    p = sam2_predictor
    pts = _points(p.original_size, 3)
    plain = p.predict_batch(pts, np.ones((3, 1)))
    cleaned = p.predict_batch(pts, np.ones((3, 1)), min_region_area=40)
    raw = p.predict_batch(pts, np.ones((3, 1)))  # unclamped low-res, as upscale sees them
    torch.testing.assert_close(plain.logits(), raw.logits())
    expected = torch.nn.functional.interpolate(
        clean_low_res_logits(raw.low_res_logits.flatten(0, 1), 40, 40)[:, None], (40, 56),
        mode="bilinear", align_corners=False)[:, 0]
    assert raw.low_res_logits.abs().max() < 32  # so the clamp changed nothing
    torch.testing.assert_close(cleaned.logits(), expected)
    assert not torch.equal(cleaned.logits(), plain.logits())


# ----------------------------------------------------------------------------- generator


def test_generate_on_image_encodes_each_crop_and_returns_consistent_masks():
    p = SamPredictor(small_sam(), device="cpu", encoder_dtype="fp32")
    image = RNG.integers(0, 256, (60, 80), dtype=np.uint8)
    seen = []
    original = p.set_image

    def set_image(img, **kw):
        seen.append(np.asarray(img).shape[:2])
        original(img, **kw)

    p.set_image = set_image
    params = AutoMaskParams(points_per_side=6, points_per_batch=16, pred_iou_thresh=0.0,
                            stability_score_thresh=0.0, crop_n_layers=1,
                            crop_n_points_downscale_factor=2, min_mask_region_area=4)
    generator = AutomaticMaskGenerator(params)
    masks = generator.generate_on_image(p, image)
    assert seen == [c.shape for c in generator.crops((60, 80))]
    assert masks
    for m in masks:
        full = m.mask()
        assert full.sum() == m.area and m.patch.shape == (m.box[2] - m.box[0], m.box[3] - m.box[1])
        if m.area:
            rows, cols = np.flatnonzero(full.any(1)), np.flatnonzero(full.any(0))
            assert m.box == (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
        rec = m.to_record()
        assert rec["point_coords"] == [[m.point[1], m.point[0]]]


def test_run_reports_every_batch_and_min_max_area():
    class Discs:
        """A predictor whose every click gives a disc of radius 3 / 6 / 9 around it."""

        mask_input_size = 4

        def __init__(self, shape):
            self.original_size = shape

        def predict_batch(self, points, labels, *, multimask=True, mask_input=None,
                          min_region_area=0):
            from napari_focsam.engine.interactive import BatchPrediction

            h, w = self.original_size
            yy, xx = np.mgrid[:h, :w]
            logits = []
            for (r, c), in points:
                d = np.hypot(yy - r, xx - c)
                logits.append(np.stack([(rad - d) * 50 for rad in (3, 6, 9)]))
            flat = torch.from_numpy(np.stack(logits).astype(np.float32)).flatten(0, 1)
            scores = torch.full((len(points), 3), 0.95)
            return BatchPrediction(scores, torch.zeros(len(points), 3, 4, 4), lambda i: flat[i])

    params = AutoMaskParams(points_per_side=3, points_per_batch=4, box_nms_thresh=0.99,
                            stability_score_thresh=0.0)
    shape = (90, 90)
    steps = AutomaticMaskGenerator(params).run(shape, lambda crop: Discs(crop.shape))
    reports = []
    while True:
        try:
            reports.append(next(steps))
        except StopIteration as done:
            masks = done.value
            break
    assert reports == [(1, 3), (2, 3), (3, 3)]
    assert len(masks) == 27
    areas = sorted({m.area for m in masks})
    small = AutomaticMaskGenerator(params.replace(min_area=areas[1], max_area=areas[1]))
    kept = small.generate(shape, lambda crop: Discs(crop.shape))
    assert len(kept) == 9 and {m.area for m in kept} == {areas[1]}
