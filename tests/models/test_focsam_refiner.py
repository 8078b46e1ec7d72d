"""FocSAM configs, focus box and FocusRefiner behaviour (random weights, no fixture)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F

from napari_focsam.models.focsam import (
    FOCSAM_CONFIGS,
    FocSamConfig,
    FocusRefiner,
    FocusRefinerConfig,
    box_grid_mask,
    box_mask,
    expand_bbox,
    focsam_to_sam_state_dict,
    mask_bbox,
    refiner_state_dict,
)
from napari_focsam.models.sam import SamModel

# Official refine_head key layout (models.md), with {i} the block index.
_BLOCK_KEYS = re.compile(
    r"blocks\.\d+\.(img2cls\.(norm_q|norm_kv|norm|mlp\.0|mlp\.2|attn\.(q_proj|k_proj|v_proj|proj))"
    r"\.(weight|bias)|img2cls\.gamma[12]|cls2img\.(cls_proj\.[01]|attn\.(q_proj|k_proj|v_proj|proj)"
    r"|norm1|norm2|relu1\.(pixel_mlp|channel_mlp)\.[02]|conv2\.dcn_offset)\.(weight|bias)"
    r"|cls2img\.relu1\.(pixel|channel)_(scale|bias)|cls2img\.conv2\.dcn\.weight"
    r"|cls2img\.gamma[12]|cls_scale_proj\.(weight|bias))$"
)


def test_released_refiner_key_layout():
    cfg = FOCSAM_CONFIGS["focsam_vit_h"]
    with torch.device("meta"):
        state = FocusRefiner(cfg.refiner).state_dict()
    depth = cfg.refiner.depth
    assert depth == 12 and cfg.refiner.window_size == 16
    others = [k for k in state if not k.startswith("blocks.")]
    assert sorted(others) == ["embed_proj.bias", "embed_proj.weight", "token_proj.bias",
                              "token_proj.weight"]
    bad = [k for k in state if k.startswith("blocks.") and not _BLOCK_KEYS.match(k)]
    assert not bad
    scaled = {int(k.split(".")[1]) for k in state if "cls_scale_proj" in k}
    assert scaled == set(range(depth - 1))
    assert state["blocks.0.cls2img.conv2.dcn.weight"].shape == (256, 256, 3, 3)
    assert state["blocks.0.cls2img.conv2.dcn_offset.weight"].shape == (27, 256, 3, 3)
    assert state["blocks.0.cls2img.relu1.pixel_mlp.0.weight"].shape == (256, 1)
    assert state["blocks.0.cls2img.gamma1"].shape == (1, 256, 1, 1)


def test_released_sam_part_uses_focsam_norm_eps():
    sam = FOCSAM_CONFIGS["focsam_vit_h"].sam
    assert sam.encoder.norm_eps == 1e-5
    assert sam.encoder.embed_dim == 1280 and sam.encoder.depth == 32


def test_configs_are_frozen_and_validated():
    cfg = FOCSAM_CONFIGS["focsam_test_tiny"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.refiner.depth = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="divisible"):
        FocusRefinerConfig(embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="embed_dim"):
        FocSamConfig(name="x", sam=cfg.sam, refiner=FocusRefinerConfig(embed_dim=64, num_heads=4))
    assert FocusRefinerConfig(expand_ratio=1.5).expand_ratio == (1.5, 1.5)


def test_key_mapping_roundtrip():
    """Our SamModel's keys, renamed to FocSAM's layout and back, are unchanged."""
    cfg = FOCSAM_CONFIGS["focsam_test_tiny"]
    sam_state = SamModel(cfg.sam).state_dict()
    renames = {"image_encoder.": "backbone.", "prompt_encoder.": "neck.", "mask_decoder.": "decode_head."}
    official = {}
    for k, v in sam_state.items():
        prefix = next(p for p in renames if k.startswith(p))
        rest = k[len(prefix):].replace("pe_layer.", "pos_embed_layer.").replace(
            "point_embeddings.", "point_embeds.")
        official[renames[prefix] + rest] = v
    official["refine_head.token_proj.bias"] = torch.zeros(1)
    back = focsam_to_sam_state_dict(official)
    assert back.keys() == sam_state.keys()
    assert refiner_state_dict(official).keys() == {"token_proj.bias"}


def test_mask_bbox_and_empty_mask():
    mask = torch.zeros(2, 1, 10, 12, dtype=torch.bool)
    mask[0, 0, 3:5, 2:9] = True
    mask[0, 0, 7, 4] = True
    box = mask_bbox(mask)
    assert box.tolist() == [[[2, 3, 9, 8]], [[0, 0, 12, 10]]]


def test_expand_bbox_rounds_half_to_even_and_clips():
    box = torch.tensor([[[2, 2, 7, 4]]])  # centre (4.5, 3), w 5, h 2
    out = expand_bbox(box, (1.5, 1.0), (100, 100))
    # y: 3 -/+ 1.5 -> 1.5, 4.5 -> round half to even: 2, 4
    assert out.tolist() == [[[2, 2, 7, 4]]]
    out = expand_bbox(box, (1.5, 2.0), (4, 9))
    assert out.tolist() == [[[0, 2, 9, 4]]]
    with pytest.raises(ValueError, match="degenerate"):
        expand_bbox(torch.tensor([[3, 0, 3, 5]]), (1.4, 1.4), (10, 10))


@pytest.mark.parametrize("canvas, grid", [((1024, 1024), (64, 64)), ((100, 70), (7, 9))])
def test_box_grid_mask_equals_adaptive_max_pool(canvas, grid):
    g = torch.Generator().manual_seed(0)
    boxes = []
    for _ in range(6):
        x0, x1 = sorted(torch.randint(0, canvas[1] + 1, (2,), generator=g).tolist())
        y0, y1 = sorted(torch.randint(0, canvas[0] + 1, (2,), generator=g).tolist())
        boxes.append([x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)])
    box = torch.tensor(boxes)[:, None]  # 6 x 1 x 4
    expected = F.adaptive_max_pool2d(box_mask(box, canvas), grid)
    torch.testing.assert_close(box_grid_mask(box, canvas, grid), expected)


def _tiny_refiner(seed: int = 0) -> FocusRefiner:
    torch.manual_seed(seed)
    refiner = FocusRefiner(FOCSAM_CONFIGS["focsam_test_tiny"].refiner).eval()
    with torch.no_grad():  # non-trivial class-token scaling
        for block in refiner.blocks:
            if block.cls_scale_proj is not None:
                block.cls_scale_proj.weight.fill_(0.3)
    return refiner


def test_windows_outside_the_focus_are_untouched():
    refiner = _tiny_refiner()
    e = refiner.cfg.embed_dim
    emb = torch.randn(1, e, 64, 64)
    token = torch.randn(1, 1, e)
    box = torch.tensor([[[0, 0, 100, 100]]])  # tokens 0..6 in focus
    with torch.no_grad():
        out = refiner(emb, None, token, box=box)
        base = refiner.embed_proj(emb)
    # plain windows 0..15 and shifted windows (8..23 + wrap 56..63) are the only ones touched
    touched = torch.zeros(64, 64, dtype=torch.bool)
    touched[:24, :24] = True
    touched[56:, :24] = True
    touched[:24, 56:] = True
    touched[56:, 56:] = True
    assert torch.equal(out[..., ~touched], base[..., ~touched])
    assert not torch.allclose(out[..., :16, :16], base[..., :16, :16])


def test_batch_matches_single_images_and_grid_not_multiple_of_window():
    refiner = _tiny_refiner(1)
    e = refiner.cfg.embed_dim
    emb = torch.randn(2, e, 40, 40)  # 40 is not a multiple of the window (16)
    token = torch.randn(2, 1, e)
    grid = torch.zeros(2, 1, 40, 40)
    grid[0, :, 5:20, 30:] = 1
    grid[1, :, 33:, :3] = 1
    with torch.no_grad():
        both = refiner.refine(emb, token, grid)
        singles = torch.cat([refiner.refine(emb[i:i + 1], token[i:i + 1], grid[i:i + 1])
                             for i in range(2)])
    assert both.shape == emb.shape
    torch.testing.assert_close(both, singles, rtol=1e-5, atol=1e-5)


def test_no_window_in_focus_returns_projection():
    refiner = _tiny_refiner()
    e = refiner.cfg.embed_dim
    emb = torch.randn(1, e, 32, 32)
    with torch.no_grad():
        out = refiner.refine(emb, torch.randn(1, e), torch.zeros(1, 1, 32, 32))
        torch.testing.assert_close(out, refiner.embed_proj(emb))
    with pytest.raises(ValueError, match="mask_token"):
        refiner.refine(emb, torch.randn(1, 2, e), torch.zeros(1, 1, 32, 32))
