"""MobileSAM's TinyViT encoder in the SAM family: configs, building blocks, and the engine
(predictor, stack encoder) using it unchanged. Numerical parity: test_tinyvit_parity.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from napari_focsam.engine.sam_predictor import SamPredictor
from napari_focsam.families import SAM
from napari_focsam.models.sam import (
    SAM_CONFIGS,
    ImageEncoderTinyViT,
    SamConfig,
    TinyViTConfig,
    build_sam,
)
from napari_focsam.models.sam.config import official_merge_strides
from napari_focsam.models.sam.tiny_vit import attention_bias_index

TINY = SAM_CONFIGS["sam_test_tinyvit"]
#: Parameters of the official build_sam_vit_t() (MobileSAM, incl. the unused classifier head).
OFFICIAL_VIT_T_PARAMETERS = 10_130_092


def _official_bias_index(window: int) -> torch.Tensor:
    """The official enumeration: offsets (|dy|, |dx|) numbered in order of first appearance."""
    points = list(itertools.product(range(window), range(window)))
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(offset, len(offsets)))
    return torch.tensor(idxs).view(len(points), len(points))


@pytest.mark.parametrize("window", [1, 2, 7, 14])
def test_attention_bias_index_is_the_official_numbering(window):
    assert torch.equal(attention_bias_index(window), _official_bias_index(window))


def test_released_vit_t_size():
    cfg = SAM_CONFIGS["sam_vit_t"]
    assert cfg.encoder.merge_strides == official_merge_strides(cfg.encoder.embed_dims) == (2, 2, 1)
    assert cfg.encoder.resolutions() == (256, 128, 64, 64)
    assert (cfg.image_size, cfg.image_embedding_size, cfg.mask_input_size) == (1024, 64, 256)
    with torch.device("meta"):
        model = build_sam(cfg)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_VIT_T_PARAMETERS
    assert isinstance(model.image_encoder, ImageEncoderTinyViT)
    state = model.state_dict()
    assert not any(k.endswith(("attention_bias_idxs", ".ab")) for k in state)  # not persistent
    assert state["image_encoder.layers.1.blocks.0.attn.attention_biases"].shape == (4, 49)
    assert state["image_encoder.layers.2.blocks.0.attn.attention_biases"].shape == (5, 196)
    assert state["image_encoder.head.weight"].shape == (1000, 320)
    assert state["image_encoder.neck.0.weight"].shape == (256, 320, 1, 1)


@pytest.mark.parametrize("kwargs, match", [
    ({"embed_dims": (8,), "depths": (1,), "num_heads": (1,), "window_sizes": (7,),
      "merge_strides": ()}, "at least one attention stage"),
    ({"depths": (1, 1, 1)}, "disagree"),
    ({"merge_strides": (2, 3, 1)}, "must be 1 or 2"),
    ({"num_heads": (2, 3, 5, 10)}, "not divisible"),
    ({"image_size": 1000}, "multiple of the encoder stride"),
])
def test_invalid_tinyvit_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TinyViTConfig(**kwargs)


def test_official_kwargs_use_the_official_stride_rule():
    cfg = TinyViTConfig.from_official_kwargs({"embed_dims": [64, 128, 256, 448],
                                             "num_heads": [2, 4, 8, 14]})
    assert cfg.merge_strides == (2, 2, 1) and cfg.out_chans == 256
    sam = SamConfig.from_official_kwargs({"tiny_vit": {}, "prompt_embed_dim": 256})
    assert sam.encoder == TinyViTConfig()


def test_batch_items_are_independent():
    torch.manual_seed(0)
    model = build_sam(TINY)
    x = torch.randn(2, 3, 1024, 1024)
    with torch.no_grad():
        both = model.image_encoder(x)
        first = model.image_encoder(x[:1])
    assert both.shape == (2, TINY.prompt_embed_dim, 64, 64)
    torch.testing.assert_close(both[:1], first, rtol=1e-5, atol=1e-5)


def test_predictor_and_stack_encoder_work_unchanged():
    torch.manual_seed(0)
    model = build_sam(TINY)
    rgb = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    predictor = SamPredictor(model, device="cpu", encoder_dtype="fp32")
    predictor.set_image(rgb)
    pred = predictor.predict(points=np.array([[40.0, 60.0]]), labels=np.array([1]))
    assert pred.masks.shape == (3, 90, 120) and pred.low_res_logits.shape == (3, 256, 256)
    encoder = SAM.stack_encoder(model, torch.device("cpu"), torch.float32, "test")
    (out,) = encoder.encode([rgb])
    np.testing.assert_allclose(out["image_embeddings"], predictor.features[0].numpy(),
                               rtol=1e-5, atol=1e-5)
