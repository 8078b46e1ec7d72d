"""Released SAM configs build the official architecture (checked on the meta device)."""

from __future__ import annotations

import pytest
import torch

from napari_focsam.models.sam import SAM_CONFIGS, SamConfig, ViTEncoderConfig, build_sam

# Published parameter counts of the released checkpoints (sam_vit_{b,l,h}).
RELEASED_PARAMS_MILLIONS = {"sam_vit_b": 93.7, "sam_vit_l": 312.3, "sam_vit_h": 641.1}


@pytest.mark.parametrize("name", sorted(RELEASED_PARAMS_MILLIONS))
def test_released_config_parameter_count(name):
    with torch.device("meta"):
        model = build_sam(SAM_CONFIGS[name])
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions == pytest.approx(RELEASED_PARAMS_MILLIONS[name], rel=2e-3)


@pytest.mark.parametrize("name", ["sam_vit_b", "sam_vit_l", "sam_vit_h"])
def test_released_config_layout(name):
    cfg = SAM_CONFIGS[name]
    with torch.device("meta"):
        state = build_sam(cfg).state_dict()
    enc = cfg.encoder
    assert state["image_encoder.pos_embed"].shape == (1, 64, 64, enc.embed_dim)
    for i in range(enc.depth):
        side = 64 if i in enc.global_attn_indexes else enc.window_size
        assert state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape == (
            2 * side - 1, enc.embed_dim // enc.num_heads)
    assert state["image_encoder.neck.2.weight"].shape == (256, 256, 3, 3)
    assert state["mask_decoder.mask_tokens.weight"].shape == (4, 256)
    assert state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape == (2, 128)
    # pixel_mean/std are not part of the official checkpoints
    assert not any(k.startswith("pixel_") for k in state)


def test_fixture_config_roundtrip(sam1_fixture):
    cfg = SamConfig.from_official_kwargs(sam1_fixture["config"])
    raw = sam1_fixture["config"]
    assert cfg.encoder.embed_dim == raw["encoder_embed_dim"]
    assert cfg.encoder.global_attn_indexes == tuple(raw["encoder_global_attn_indexes"])
    assert cfg.decoder.mlp_dim == raw["decoder_mlp_dim"]
    assert cfg.prompt_embed_dim == raw["prompt_embed_dim"]


@pytest.mark.parametrize("kwargs, match", [
    ({"embed_dim": 30, "depth": 2, "num_heads": 4, "global_attn_indexes": ()}, "divisible"),
    ({"embed_dim": 32, "depth": 2, "num_heads": 4, "global_attn_indexes": (2,)}, "outside"),
    ({"embed_dim": 32, "depth": 2, "num_heads": 4, "global_attn_indexes": (),
      "image_size": 1000}, "multiple"),
])
def test_invalid_encoder_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViTEncoderConfig(**kwargs)


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        SAM_CONFIGS["sam_vit_b"].encoder.depth = 3  # type: ignore[misc]
