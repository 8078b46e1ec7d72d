"""Store features equal the models' own: SAM / FocSAM ``set_image`` and SAM 2
``StackFeatures``, with tiny random-weight models; the store drives ``VideoPropagator``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from store_helpers import make_stack

from napari_focsam.engine.focsam_predictor import FocSamPredictor
from napari_focsam.engine.frame_features import StackFeatures
from napari_focsam.engine.propagation import VideoPropagator
from napari_focsam.engine.propagation_state import PropagationOptions
from napari_focsam.engine.sam_predictor import SamPredictor
from napari_focsam.models.focsam import FOCSAM_CONFIGS, build_focsam
from napari_focsam.models.sam import SAM_CONFIGS, build_sam
from napari_focsam.models.sam2 import SAM2_CONFIGS, Sam2FrameFeatures, build_sam2
from napari_focsam.store import (
    EmbeddingStore,
    Sam2Encoder,
    SamEncoder,
    StackSource,
    model_fingerprint,
)

HW = (40, 56)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    return build_sam(SAM_CONFIGS["sam_test_tiny"]).eval()


@pytest.fixture(scope="module")
def sam2():
    torch.manual_seed(0)
    return build_sam2(SAM2_CONFIGS["sam2_test_tiny"].replace(image_size=128)).eval()


def _stack(n=3):
    return make_stack(n, HW)


# ---------------------------------------------------------------------- SAM / FocSAM
@pytest.mark.parametrize("kind", ["sam", "focsam"])
def test_sam_store_equals_set_image(kind, sam, tmp_path):
    if kind == "sam":
        predictor = SamPredictor(sam, device="cpu", encoder_dtype="fp32")
    else:
        torch.manual_seed(1)
        predictor = FocSamPredictor(build_focsam(FOCSAM_CONFIGS["focsam_test_tiny"]), device="cpu",
                                    encoder_dtype="fp32")
    encoder = SamEncoder(predictor)
    assert encoder.preprocess_version == ("focsam-bgr-pad32-v1" if kind == "focsam"
                                          else "sam-longest-side-v1")
    stack = _stack()
    src = StackSource(stack, stack_axis=0)
    store = EmbeddingStore(src, encoder, cache_root=tmp_path)
    list(store.compute())
    reopened = EmbeddingStore(src, SamEncoder(predictor), cache_root=tmp_path)
    feats = reopened[1]  # from disk
    assert reopened.encoder_calls == 0

    # the stack's contrast (one stretch for all frames) is what the predictor gets as RGB
    predictor.set_image(src[1])
    direct = predictor.features.clone()
    points = np.array([[8.0, 20.0]])
    ref = predictor.predict(points, np.array([1]))
    predictor.set_frame(feats, HW)
    assert torch.equal(predictor.features, direct)
    assert predictor.input_size == predictor.expected_input_size(HW) and predictor.original_size == HW
    got = predictor.predict(points, np.array([1]))
    np.testing.assert_array_equal(got.logits, ref.logits)
    np.testing.assert_array_equal(got.masks, ref.masks)


def test_sam_2d_image_and_batching(sam, tmp_path):
    """A 2D image: its store frame is `to_rgb_uint8`'s, so the features equal ``set_image`` on
    the raw image; a batch of frames matches one-by-one encoding."""
    predictor = SamPredictor(sam, device="cpu", encoder_dtype="fp32")
    image = _stack(1)[0]
    store = EmbeddingStore(StackSource(image, stack_axis=None), SamEncoder(predictor),
                           cache_root=False)
    predictor.set_image(image)
    assert torch.equal(store[0], predictor.features)

    encoder = SamEncoder(SamPredictor(sam, device="cpu", encoder_dtype="fp32"))
    src = StackSource(_stack(3), stack_axis=0)
    batched = encoder.encode([src[i] for i in range(3)])
    for i in range(3):
        one = encoder.encode([src[i]])[0]
        # fp32 reordering (batch vs one): an error the size of the summands' rounding, so
        # relative to the tensor's scale, not to each (possibly near-zero) element
        scale = float(np.abs(one["image_embeddings"]).max())
        np.testing.assert_allclose(batched[i]["image_embeddings"], one["image_embeddings"],
                                   atol=1e-5 * scale, rtol=1e-4)


def test_model_ids():
    torch.manual_seed(0)
    a = build_sam(SAM_CONFIGS["sam_test_tiny"])
    torch.manual_seed(1)
    b = build_sam(SAM_CONFIGS["sam_test_tiny"])
    assert model_fingerprint(a) == model_fingerprint(a) != model_fingerprint(b)
    def encoder(model, dtype="fp32", **kwargs):
        return SamEncoder(SamPredictor(model, device="cpu", encoder_dtype=dtype), **kwargs)

    ea = encoder(a)
    assert ea.model_id.startswith("sam_test_tiny:") and ea.model_id.endswith("@fp32")
    assert ea.model_id != encoder(b).model_id
    assert ea.model_id != encoder(a, "bf16").model_id
    assert encoder(a, model_id="x").model_id == "x@fp32"


# ---------------------------------------------------------------------- SAM 2
def test_sam2_store_equals_stack_features(sam2, tmp_path):
    stack = _stack(4)
    src = StackSource(stack, stack_axis=0)
    rgb = np.stack([src[i] for i in range(len(src))])
    ref = StackFeatures(sam2, rgb)
    encoder = Sam2Encoder(sam2, encoder_dtype="fp32")
    store = EmbeddingStore(src, encoder, cache_root=tmp_path, batch_size=2)
    list(store.compute())
    fresh = EmbeddingStore(src, Sam2Encoder(sam2, encoder_dtype="fp32"), cache_root=tmp_path)
    for t in range(4):
        for feats in (store(t), fresh(t)):  # freshly encoded (batch of 2) / read back from disk
            assert isinstance(feats, Sam2FrameFeatures)
            r = ref(t)
            torch.testing.assert_close(feats.features, r.features, atol=1e-5, rtol=0)
            assert torch.equal(feats.pos, r.pos)  # recomputed position encoding
            assert len(feats.high_res) == 2
            for a, b in zip(feats.high_res, r.high_res, strict=True):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert fresh.encoder_calls == 0
    one = EmbeddingStore(src, Sam2Encoder(sam2, encoder_dtype="fp32"), cache_root=False)
    r = ref(2)
    assert torch.equal(one(2).features, r.features)  # batch of 1: bit for bit
    assert all(torch.equal(a, b) for a, b in zip(one(2).high_res, r.high_res, strict=True))


def test_sam2_bf16_position_encoding(sam2):
    """Under bf16 autocast the recomputed position encoding still equals encode_image's."""
    src = StackSource(_stack(1), stack_axis=0)
    x = Sam2Encoder(sam2, encoder_dtype="bf16")
    encoded = x.encode([src[0]])
    fresh = Sam2Encoder(sam2, encoder_dtype="bf16")  # nothing encoded: pos is recomputed
    pos = fresh.to_features(encoded[0], src.frame_shape).pos
    ref = StackFeatures(sam2, [src[0]], encoder_dtype=torch.bfloat16)(0)
    assert torch.equal(pos, ref.pos)
    torch.testing.assert_close(x.to_features(encoded[0], src.frame_shape).features, ref.features,
                               atol=0, rtol=0)


def test_store_drives_video_propagator(sam2, tmp_path):
    stack = _stack(4)
    src = StackSource(stack, stack_axis=0)
    rgb = np.stack([src[i] for i in range(4)])
    options = PropagationOptions(non_overlap=False)

    def run(features):
        prop = VideoPropagator(sam2, features, HW, options)
        prop.add_points(0, 1, [[10, 14]], [1])
        return [r.logits.clone() for r in prop.propagate()]

    ref = run(StackFeatures(sam2, rgb))
    store = EmbeddingStore(src, Sam2Encoder(sam2, encoder_dtype="fp32"), cache_root=tmp_path)
    got = run(store)
    assert store.encoder_calls == 4
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a, b)
    # a hyperstack view is a feature provider of its own
    hyper = np.stack([stack, stack[::-1]])
    hstore = EmbeddingStore(StackSource(hyper, stack_axis=1, outer_axis=0),
                            Sam2Encoder(sam2, encoder_dtype="fp32"), cache_root=tmp_path)
    got = run(hstore.view(0))
    for a, b in zip(got, ref, strict=True):
        assert torch.equal(a, b)
    assert hstore.missing() == [4, 5, 6, 7]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sam2_store_on_cuda(tmp_path):
    torch.manual_seed(0)
    model = build_sam2(SAM2_CONFIGS["sam2_test_tiny"].replace(image_size=128)).eval().to("cuda")
    src = StackSource(_stack(2), stack_axis=0)
    ref = StackFeatures(model, np.stack([src[0], src[1]]))
    store = EmbeddingStore(src, Sam2Encoder(model, encoder_dtype="fp32"), cache_root=tmp_path)
    list(store.compute())
    fresh = EmbeddingStore(src, Sam2Encoder(model, encoder_dtype="fp32"), cache_root=tmp_path)
    for t in range(2):
        feats = fresh(t)
        assert feats.features.device.type == "cuda" and feats.pos.device.type == "cuda"
        torch.testing.assert_close(feats.features, ref(t).features, atol=1e-5, rtol=0)
        assert torch.equal(feats.pos, ref(t).pos)
    assert fresh.encoder_calls == 0
