"""`SamPredictor` with the tiny random-weight SAM: shapes, prompt mapping, state and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_focsam.engine.interactive import MaskPrediction
from napari_focsam.engine.prompts import PromptError
from napari_focsam.engine.sam_predictor import PredictorStateError, SamPredictor
from napari_focsam.engine.transforms import longest_side_shape, resize_longest_side

sam = pytest.importorskip("napari_focsam.models.sam")

RNG = np.random.default_rng(2)
H, W = 600, 450


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return sam.build_sam(sam.SAM_CONFIGS["sam_test_tiny"]).eval()


@pytest.fixture(scope="module")
def predictor(model):
    p = SamPredictor(model, device="cpu", encoder_dtype="fp32")
    p.set_image(RNG.integers(0, 256, (H, W, 3), dtype=np.uint8))
    return p


class _Recorder:
    """Wraps ``model.decode`` to record its keyword arguments and the autocast state."""

    def __init__(self, model, monkeypatch):
        self.calls: list[dict] = []
        original = model.decode

        def decode(embeddings, **kwargs):
            self.calls.append({**kwargs, "autocast": torch.is_autocast_enabled("cpu"),
                               "embeddings_dtype": embeddings.dtype})
            return original(embeddings, **kwargs)

        monkeypatch.setattr(model, "decode", decode)


def test_image_state(predictor, model):
    assert predictor.is_image_set
    assert predictor.original_size == (H, W)
    assert predictor.input_size == (1024, 768)
    e = model.config.image_embedding_size
    assert predictor.features.shape == (1, model.config.prompt_embed_dim, e, e)
    assert predictor.features.dtype == torch.float32


@pytest.mark.parametrize(("multimask", "k"), [(True, 3), (False, 1)])
def test_prediction_shapes(predictor, model, multimask, k):
    pred = predictor.predict(points=[[300, 100]], labels=[1], multimask=multimask)
    assert isinstance(pred, MaskPrediction)
    m = model.config.mask_input_size
    assert pred.masks.shape == (k, H, W) and pred.masks.dtype == np.bool_
    assert pred.logits.shape == (k, H, W) and pred.logits.dtype == np.float32
    assert pred.scores.shape == (k,) and pred.scores.dtype == np.float32
    assert pred.low_res_logits.shape == (k, m, m) and pred.low_res_logits.dtype == np.float32
    np.testing.assert_array_equal(pred.masks, pred.logits > 0)
    assert 0 <= pred.best < k


def test_low_res_logits_round_trip_as_mask_input(predictor):
    first = predictor.predict(points=[[300, 100]], labels=[1])
    refined = predictor.predict(
        points=[[300, 100], [50, 50]], labels=[1, 0],
        mask_input=first.low_res_logits[first.best], multimask=False,
    )
    assert refined.masks.shape == (1, H, W)
    with_axis = predictor.predict(
        points=[[300, 100], [50, 50]], labels=[1, 0],
        mask_input=first.low_res_logits[first.best][None], multimask=False,
    )
    np.testing.assert_array_equal(refined.logits, with_axis.logits)
    without = predictor.predict(points=[[300, 100], [50, 50]], labels=[1, 0], multimask=False)
    assert not np.array_equal(refined.low_res_logits, without.low_res_logits)


def test_box_and_mask_only_prompts(predictor):
    assert predictor.predict(box=[120, 45, 540, 315]).masks.shape == (3, H, W)
    mask = np.zeros((256, 256), dtype=np.float32)
    assert predictor.predict(mask_input=mask, multimask=False).masks.shape == (1, H, W)


def test_points_and_box_reach_the_decoder_in_model_xy(predictor, model, monkeypatch):
    rec = _Recorder(model, monkeypatch)
    predictor.predict(points=[[300, 100], [10, 20]], labels=[1, 0], box=[540, 315, 120, 45])
    call = rec.calls[-1]
    coords = call["point_coords"]
    assert coords.shape == (1, 2, 2) and coords.dtype == torch.float32
    np.testing.assert_allclose(
        coords[0].numpy(),
        [[100 * 768 / 450, 300 * 1024 / 600], [20 * 768 / 450, 10 * 1024 / 600]], rtol=1e-6,
    )
    assert call["point_labels"].tolist() == [[1, 0]]
    np.testing.assert_allclose(call["boxes"].numpy(), [[76.8, 204.8, 537.6, 921.6]], rtol=1e-6)
    assert call["mask_input"] is None


def test_decoder_runs_in_fp32_even_inside_an_outer_autocast(predictor, model, monkeypatch):
    rec = _Recorder(model, monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = predictor.predict(points=[[300, 100]], labels=[1])
    assert rec.calls[-1]["autocast"] is False
    assert rec.calls[-1]["embeddings_dtype"] == torch.float32
    np.testing.assert_allclose(
        pred.logits, predictor.predict(points=[[300, 100]], labels=[1]).logits, atol=1e-5
    )


def test_set_image_on_uint8_rgb_is_the_plain_official_pipeline(model):
    img = RNG.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    p = SamPredictor(model, device="cpu", encoder_dtype="fp32")
    p.set_image(img)
    resized = resize_longest_side(img, 1024)
    x = torch.from_numpy(resized).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        expected = model.image_encoder(model.preprocess(x))
    torch.testing.assert_close(p.features, expected, rtol=0, atol=0)
    assert p.input_size == longest_side_shape(90, 130, 1024) == resized.shape[:2]


@pytest.mark.parametrize(
    ("image", "channel_axis"),
    [
        (RNG.integers(0, 65535, (64, 48), dtype=np.uint16), None),
        (np.where(RNG.random((48, 64)) < 0.1, np.nan, RNG.random((48, 64))), None),
        (RNG.integers(0, 256, (40, 50, 4), dtype=np.uint8), None),
        (RNG.random((40, 50, 2)).astype(np.float32), None),
        (RNG.integers(0, 4096, (2, 40, 50), dtype=np.uint16), 0),
        (RNG.random((33, 20)) > 0.5, None),
    ],
    ids=["gray-uint16", "float-nan", "rgba-uint8", "two-channel-float", "channel-first", "bool"],
)
def test_microscopy_images(model, image, channel_axis):
    p = SamPredictor(model, device="cpu", encoder_dtype="fp32")
    p.set_image(image, channel_axis=channel_axis)
    hw = image.shape[1:] if channel_axis == 0 else image.shape[:2]
    pred = p.predict(points=[[hw[0] // 2, hw[1] // 2]], labels=[1])
    assert pred.masks.shape == (3, *hw)
    assert np.isfinite(pred.logits).all()


def test_bf16_encoder_stores_fp32_features_close_to_fp32(model):
    img = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ref = SamPredictor(model, device="cpu", encoder_dtype="fp32")
    ref.set_image(img)
    low = SamPredictor(model, device="cpu", encoder_dtype="bf16")
    low.set_image(img)
    assert low.features.dtype == torch.float32
    err = (low.features - ref.features).abs().max() / ref.features.abs().max()
    assert err < 0.1


def test_predict_before_set_image_and_after_reset(model):
    p = SamPredictor(model, device="cpu", encoder_dtype="fp32")
    assert not p.is_image_set and p.original_size is None and p.input_size is None
    with pytest.raises(PredictorStateError, match="set_image"):
        p.predict(points=[[1, 1]], labels=[1])
    with pytest.raises(PredictorStateError):
        _ = p.features
    p.set_image(np.zeros((8, 8), dtype=np.uint8))
    p.reset_image()
    assert not p.is_image_set
    with pytest.raises(PredictorStateError):
        p.predict(points=[[1, 1]], labels=[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "at least one point"),
        ({"points": [[1, 2]]}, "without labels"),
        ({"labels": [1]}, "without points"),
        ({"points": [[H, 2]], "labels": [1]}, "outside the image of 600 x 450"),
        ({"points": [[1, 2]], "labels": [3]}, "label 0 is 3"),
        ({"box": [0, 0, 10, W + 1]}, "reaches outside"),
        ({"box": [0, 5, 10, 5]}, "zero area"),
        ({"mask_input": np.zeros((64, 64))}, "mask_input"),
    ],
)
def test_bad_prompts(predictor, kwargs, match):
    with pytest.raises(PromptError, match=match):
        predictor.predict(**kwargs)


def test_set_features_reproduces_set_image(predictor, model):
    other = SamPredictor(model, device="cpu", encoder_dtype="fp32")
    other.set_features(predictor.features.numpy(), (H, W), (1024, 768))
    a = predictor.predict(points=[[300, 100]], labels=[1])
    b = other.predict(points=[[300, 100]], labels=[1])
    np.testing.assert_array_equal(a.logits, b.logits)
    other.set_features(predictor.features[0], (H, W), (1024, 768))  # (C, E, E) also works
    assert other.features.shape == predictor.features.shape


@pytest.mark.parametrize(
    ("features", "original", "input_size", "error", "match"),
    [
        (torch.zeros(1, 32, 32, 32), (H, W), (1024, 768), ValueError, "64, 64"),
        (torch.zeros(2, 32, 64, 64), (H, W), (1024, 768), ValueError, "shape"),
        (torch.zeros(1, 32, 64, 64, dtype=torch.int32), (H, W), (1024, 768), TypeError,
         "floating"),
        (torch.zeros(1, 32, 64, 64), (H, W), (768, 1024), ValueError, "does not match"),
    ],
)
def test_set_features_errors(model, features, original, input_size, error, match):
    p = SamPredictor(model, device="cpu", encoder_dtype="fp32")
    with pytest.raises(error, match=match):
        p.set_features(features, original, input_size)
    assert not p.is_image_set
