"""SAM 2 configs, Hiera trunk, FPN neck and image encoder (no official code needed).

End-to-end numerical parity with the official encoder is tested elsewhere; here: config
parsing, checkpoint key/shape compatibility with the ``sam2_*.pt`` fixtures, parameter counts of
the released trunks, and unit tests of windowing, query pooling, position encodings and the FPN.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from napari_focsam.models.checkpoint import check_state_dict, load_checked
from napari_focsam.models.sam.image_encoder import window_partition
from napari_focsam.models.sam2.config import (
    SAM2_CONFIGS,
    VIDEO_PREDICTOR_OVERRIDES,
    FpnNeckConfig,
    HieraConfig,
    ImageEncoderConfig,
    MemoryEncoderConfig,
    Sam2Config,
    released_sam2_config,
)
from napari_focsam.models.sam2.hiera import (
    Hiera,
    MultiScaleAttention,
    max_pool_tokens,
    window_unpartition_heads,
)
from napari_focsam.models.sam2.image_encoder import Sam2ImageEncoder
from napari_focsam.models.sam2.neck import FpnNeck, SinePositionEncoding

TINY = SAM2_CONFIGS["sam2_test_tiny"]
SIZES = ("tiny", "small", "base_plus", "large")

# Parameter counts and state_dict sizes of the official sam2 1.1.0 modules, measured by
# instantiating sam2.modeling.backbones.{hieradet.Hiera, image_encoder.ImageEncoder} from the
# released configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml (the sam2/ 2.0 yamls give the same numbers).
OFFICIAL_TRUNK_PARAMS = {"tiny": 26_849_472, "small": 33_947_328, "base_plus": 68_675_712,
                         "large": 212_149_296}
OFFICIAL_ENCODER_PARAMS = {"tiny": 27_219_136, "small": 34_316_992, "base_plus": 69_106_816,
                           "large": 212_703_280}
OFFICIAL_ENCODER_KEYS = {"tiny": 162, "small": 210, "base_plus": 306, "large": 594}


def _image_encoder_state(state_dict: dict) -> dict:
    prefix = "image_encoder."
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- configs
def test_fixture_config_round_trips_widths(sam2_fixture):
    model = sam2_fixture["config"]
    cfg = Sam2Config.from_official_config(model, name="fixture")
    assert Sam2Config.from_official_config({"model": model}, name="fixture") == cfg
    ie, trunk, neck = model["image_encoder"], model["image_encoder"]["trunk"], model["image_encoder"]["neck"]
    assert cfg.image_encoder.trunk.embed_dim == trunk["embed_dim"]
    assert cfg.image_encoder.trunk.num_heads == trunk["num_heads"]
    assert list(cfg.image_encoder.trunk.stages) == list(trunk["stages"])
    assert list(cfg.image_encoder.trunk.global_att_blocks) == list(trunk["global_att_blocks"])
    assert cfg.image_encoder.scalp == ie["scalp"]
    assert cfg.hidden_dim == neck["d_model"]
    assert list(cfg.image_encoder.neck.backbone_channel_list) == list(neck["backbone_channel_list"])
    assert list(cfg.image_encoder.trunk.channel_list) == list(neck["backbone_channel_list"])
    assert cfg.image_encoder.neck.num_pos_feats == neck["position_encoding"]["num_pos_feats"]
    assert cfg.image_encoder.neck.fpn_interp_model == neck["fpn_interp_model"]
    mem_attn, mem_enc = model["memory_attention"], model["memory_encoder"]
    assert cfg.memory_attention.d_model == mem_attn["d_model"]
    assert cfg.memory_attention.num_layers == mem_attn["num_layers"]
    assert cfg.memory_attention.dim_feedforward == mem_attn["layer"]["dim_feedforward"]
    assert cfg.memory_attention.kv_in_dim == mem_attn["layer"]["cross_attention"]["kv_in_dim"]
    assert cfg.memory_encoder.out_dim == mem_enc["out_dim"] == cfg.mem_dim
    assert cfg.memory_encoder.num_pos_feats == mem_enc["position_encoding"]["num_pos_feats"]
    for flag in ("num_maskmem", "image_size", "pred_obj_scores", "use_high_res_features_in_sam",
                 "multimask_min_pt_num", "sigmoid_scale_for_mem_enc", "fill_hole_area"):
        assert getattr(cfg, flag) == model[flag], flag
    extra = model.get("sam_mask_decoder_extra_args") or {}
    for key, value in extra.items():
        assert getattr(cfg, key) == value, key


def test_released_configs_differences():
    for size in SIZES:
        new, old = SAM2_CONFIGS[f"sam2.1_hiera_{size}"], SAM2_CONFIGS[f"sam2_hiera_{size}"]
        assert new.image_encoder == old.image_encoder
        assert new.memory_attention == old.memory_attention and new.memory_encoder == old.memory_encoder
        diff = {f.name for f in dataclasses.fields(Sam2Config)
                if getattr(new, f.name) != getattr(old, f.name)}
        assert diff == {"name", "no_obj_embed_spatial", "add_tpos_enc_to_obj_ptrs",
                        "proj_tpos_enc_in_obj_ptrs", "use_signed_tpos_enc_to_obj_ptrs"}
        assert new.no_obj_embed_spatial and not old.no_obj_embed_spatial
        for key, value in VIDEO_PREDICTOR_OVERRIDES.items():
            assert getattr(new, key) == value
        bare = released_sam2_config(f"sam2.1_hiera_{size}", video_postprocessing=False)
        assert not bare.binarize_mask_from_pts_for_mem_enc and bare.fill_hole_area == 0
        assert new.image_size == 1024 and new.image_embedding_size == 64 and new.hidden_dim == 256
        assert new.mem_dim == 64 and new.image_encoder.level_strides == (4, 8, 16)
    large = SAM2_CONFIGS["sam2.1_hiera_large"].image_encoder.trunk
    assert large.window_spec == (8, 4, 16, 8) and large.channel_list == (1152, 576, 288, 144)
    base_plus = SAM2_CONFIGS["sam2.1_hiera_base_plus"].image_encoder.trunk
    assert base_plus.window_pos_embed_bkg_spatial_size == (14, 14) and base_plus.num_heads == 2
    with pytest.raises(KeyError):
        released_sam2_config("sam3_hiera_tiny")


def test_official_defaults_for_missing_keys():
    model = {
        "image_encoder": {"trunk": {"_target_": "x.Hiera"},
                          "neck": {"d_model": 256, "backbone_channel_list": [768, 384, 192, 96],
                                   "position_encoding": {"num_pos_feats": 256}}},
        "memory_attention": {"d_model": 256, "pos_enc_at_input": True, "num_layers": 4, "layer": {
            "activation": "relu", "d_model": 256, "dim_feedforward": 2048, "pos_enc_at_attn": False,
            "pos_enc_at_cross_attn_keys": True, "pos_enc_at_cross_attn_queries": False,
            "self_attention": {"embedding_dim": 256, "num_heads": 1},
            "cross_attention": {"embedding_dim": 256, "num_heads": 1, "kv_in_dim": 64}}},
        "memory_encoder": {"out_dim": 64, "position_encoding": {"num_pos_feats": 64},
                           "mask_downsampler": {}, "fuser": {"num_layers": 2, "layer": {"dim": 256}}},
    }
    cfg = Sam2Config.from_official_config(model)
    ie = cfg.image_encoder
    assert ie.scalp == 0 and ie.neck.fpn_interp_model == "bilinear" and ie.neck.fpn_top_down_levels is None
    assert ie.neck.top_down_levels == (0, 1, 2, 3) and ie.trunk == HieraConfig()
    mem = cfg.memory_encoder
    assert mem.mask_downsampler_kernel_size == 4 and mem.mask_downsampler_stride == 4
    assert not cfg.memory_attention.rope_k_repeat
    assert cfg.image_size == 512 and not cfg.pred_obj_scores and cfg.add_tpos_enc_to_obj_ptrs
    bad = {**model, "image_encoder": {**model["image_encoder"], "trunk": {"_target_": "x.ViT"}}}
    with pytest.raises(ValueError, match="unsupported"):
        Sam2Config.from_official_config(bad)


def test_config_validation():
    with pytest.raises(ValueError, match="channel_list"):
        ImageEncoderConfig(trunk=HieraConfig(),
                           neck=FpnNeckConfig(backbone_channel_list=(896, 448, 224, 112)))
    with pytest.raises(ValueError, match="q_stride"):
        HieraConfig(window_spec=(7, 4, 14, 7))
    with pytest.raises(ValueError, match="differ in length"):
        HieraConfig(window_spec=(8, 4, 14))
    with pytest.raises(ValueError, match="widths differ"):
        MemoryEncoderConfig(in_dim=64)
    with pytest.raises(ValueError, match="d_model"):
        dataclasses.replace(TINY, memory_attention=SAM2_CONFIGS["sam2.1_hiera_tiny"].memory_attention)


def test_hiera_block_specs_of_the_tiny_trunk():
    trunk = SAM2_CONFIGS["sam2.1_hiera_tiny"].image_encoder.trunk  # stages 1,2,7,2
    assert trunk.stage_ends == (0, 2, 9, 11) and trunk.q_pool_blocks == (1, 3, 10)
    specs = trunk.block_specs
    # the first block of a stage keeps the previous stage's window (pooled inside the block)
    assert [s.window_size for s in specs] == [8, 8, 4, 4, 14, 0, 14, 0, 14, 0, 14, 7]
    assert [s.dim_out for s in specs] == [96, 192, 192, 384] + [384] * 6 + [768, 768]
    assert [s.num_heads for s in specs] == [1, 2, 2, 4] + [4] * 6 + [8, 8]
    assert [i for i, s in enumerate(specs) if s.q_stride] == [1, 3, 10]
    assert [i for i, s in enumerate(specs) if s.dim != s.dim_out] == [1, 3, 10]
    assert trunk.stage_strides == (4, 8, 16, 32)


# --------------------------------------------------------------------------- checkpoints
def test_fixture_image_encoder_state_dict_loads(sam2_fixture):
    cfg = Sam2Config.from_official_config(sam2_fixture["config"])
    state = _image_encoder_state(sam2_fixture["state_dict"])
    assert state, "fixture has no image_encoder.* entries"
    encoder = load_checked(Sam2ImageEncoder(cfg.image_encoder), state, sam2_fixture["path"].name)
    loaded = encoder.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_fixture_encoder_output_shapes(sam2_fixture):
    cfg = Sam2Config.from_official_config(sam2_fixture["config"])
    ie = cfg.image_encoder
    encoder = Sam2ImageEncoder(ie).eval()
    encoder.load_state_dict(_image_encoder_state(sam2_fixture["state_dict"]))
    side = 4 * encoder.input_multiple  # reduced size keeps the test fast
    with torch.inference_mode():
        out = encoder(torch.randn(2, 3, side, side))
    assert len(out.backbone_fpn) == len(out.vision_pos_enc) == ie.num_levels
    levels = zip(out.backbone_fpn, out.vision_pos_enc, ie.level_strides, strict=True)
    for level, (feat, pos, stride) in enumerate(levels):
        assert feat.shape == (2, ie.d_model, side // stride, side // stride), level
        assert pos.shape == (2, ie.neck.num_pos_feats, side // stride, side // stride), level
        assert torch.isfinite(feat).all()
    assert out.vision_features is out.backbone_fpn[-1]
    assert side // ie.level_strides[-1] * cfg.backbone_stride == side
    assert out["vision_features"] is out.vision_features and set(out.as_dict()) == set(out.keys())


def test_state_dict_mismatch_is_reported():
    encoder = Sam2ImageEncoder(TINY.image_encoder)
    state = dict(encoder.state_dict())
    state.pop("trunk.pos_embed")
    state["trunk.blocks.0.attn.qkv.weight"] = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="missing keys: trunk.pos_embed.*shape mismatches"):
        check_state_dict(encoder, state)


@pytest.mark.parametrize("size", SIZES)
def test_released_parameter_counts_match_official(size):
    for version in ("sam2.1", "sam2"):
        with torch.device("meta"):
            encoder = Sam2ImageEncoder(SAM2_CONFIGS[f"{version}_hiera_{size}"].image_encoder)
        assert _n_params(encoder.trunk) == OFFICIAL_TRUNK_PARAMS[size]
        assert _n_params(encoder) == OFFICIAL_ENCODER_PARAMS[size]
        keys = encoder.state_dict()
        assert len(keys) == OFFICIAL_ENCODER_KEYS[size]
        assert all(k.startswith(("trunk.", "neck.convs.")) for k in keys)


# --------------------------------------------------------------------------- windowing / pooling
@pytest.mark.parametrize("hw", [(8, 12), (9, 7)])
def test_max_pool_tokens_matches_maxpool2d(hw):
    x = torch.randn(2, *hw, 15)
    ref = F.max_pool2d(x.permute(0, 3, 1, 2), 2, 2).permute(0, 2, 3, 1)
    assert torch.equal(max_pool_tokens(x, (2, 2)), ref)
    wide = torch.randn(2, *hw, 45)
    strided = wide[..., 15:30]  # a non-contiguous slice, like the queries of a qkv tensor
    ref = F.max_pool2d(strided.permute(0, 3, 1, 2), 2, 2).permute(0, 2, 3, 1)
    out = max_pool_tokens(strided, (2, 2))
    assert torch.equal(out, ref) and out.is_contiguous()


def test_window_unpartition_heads_inverts_partition():
    b, h, w, heads, ch, win = 2, 10, 13, 3, 4, 4
    x = torch.randn(b, h, w, heads * ch)
    windows, (hp, wp) = window_partition(x, win)  # (B*nW) x win x win x C, zero padded
    split = windows.view(-1, win * win, heads, ch).transpose(1, 2)  # (B*nW) x heads x N x Ch
    grid = window_unpartition_heads(split, b, (hp // win, wp // win), (win, win))
    assert grid.shape == (b, hp, wp, heads * ch)
    assert torch.equal(grid[:, :h, :w], x)
    assert not grid[:, h:].any() and not grid[:, :, w:].any()


def _reference_attention(x, attn, window, q_stride):
    """Per-window loop with explicit padding, pooling and softmax (official semantics)."""
    b, h, w, _ = x.shape
    c, heads = attn.dim_out, attn.num_heads
    s = q_stride or (1, 1)
    if window:
        hp, wp = math.ceil(h / window) * window, math.ceil(w / window) * window
        padded = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        cells = [padded[:, i:i + window, j:j + window] for i in range(0, hp, window)
                 for j in range(0, wp, window)]
    else:
        hp, wp, cells = h, w, [x]
    outs = []
    for cell in cells:
        q, k, v = attn.qkv(cell).split(c, dim=-1)
        if q_stride:
            q = F.max_pool2d(q.permute(0, 3, 1, 2), s, s).permute(0, 2, 3, 1)
        qh, qw = q.shape[1:3]
        q, k, v = (t.reshape(b, -1, heads, c // heads).transpose(1, 2) for t in (q, k, v))
        weights = (q @ k.transpose(-1, -2) / math.sqrt(c // heads)).softmax(-1)
        outs.append((weights @ v).transpose(1, 2).reshape(b, qh, qw, c))
    if window:
        nw = wp // window
        rows = [torch.cat(outs[r * nw:(r + 1) * nw], dim=2) for r in range(hp // window)]
        grid = torch.cat(rows, dim=1)[:, : h // s[0], : w // s[1]]
    else:
        grid = outs[0]
    return attn.proj(grid)


@pytest.mark.parametrize(("window", "q_stride", "hw"), [
    (4, None, (8, 8)), (5, None, (7, 9)), (0, None, (6, 5)),
    (4, (2, 2), (8, 8)), (6, (2, 2), (10, 14)), (0, (2, 2), (6, 8)), (6, (2, 3), (12, 12)),
])
def test_multiscale_attention_matches_reference(window, q_stride, hw):
    torch.manual_seed(0)
    attn = MultiScaleAttention(dim=8, dim_out=12 if q_stride else 8, num_heads=2, q_stride=q_stride)
    x = torch.randn(2, *hw, 8)
    with torch.no_grad():
        out = attn(x, window)
        ref = _reference_attention(x, attn, window, q_stride)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_hiera_outputs_and_pos_embed_cache():
    cfg = TINY.image_encoder.trunk
    torch.manual_seed(0)
    trunk = Hiera(cfg).eval()
    with torch.no_grad():
        trunk.pos_embed.normal_()
        trunk.pos_embed_window.normal_()
        feats = trunk(torch.randn(1, 3, 128, 128))
        assert [tuple(f.shape) for f in feats] == [
            (1, d, 128 // s, 128 // s) for d, s in zip(cfg.stage_dims, cfg.stage_strides, strict=True)]
        pos = trunk.get_pos_embed((32, 32))
        assert pos.shape == (1, 32, 32, cfg.embed_dim)
        expected = (F.interpolate(trunk.pos_embed, size=(32, 32), mode="bicubic")
                    + trunk.pos_embed_window.tile(1, 1, 4, 4)).permute(0, 2, 3, 1)
        torch.testing.assert_close(pos, expected)
        assert trunk.get_pos_embed((32, 32)) is pos  # cached while gradients are off
        trunk.pos_embed.add_(1.0)  # in-place update (like load_state_dict) invalidates the cache
        torch.testing.assert_close(trunk.get_pos_embed((32, 32)), pos + 1.0, atol=1e-5, rtol=1e-5)
    assert trunk.get_pos_embed((32, 32)) is not trunk.get_pos_embed((32, 32))  # no cache with grad


# --------------------------------------------------------------------------- neck
@pytest.mark.parametrize("normalize", [True, False])
def test_sine_position_encoding_formula(normalize):
    pe = SinePositionEncoding(8, temperature=100.0, normalize=normalize)
    h, w = 3, 5
    out = pe(torch.zeros(2, 1, h, w))
    assert out.shape == (2, 8, h, w)
    scale = 2 * math.pi
    for y, x in [(0, 0), (2, 4), (1, 3)]:
        py = (y + 1) / (h + 1e-6) * scale if normalize else y + 1
        px = (x + 1) / (w + 1e-6) * scale if normalize else x + 1
        expected = []
        for p in (py, px):
            for i in range(4):
                angle = p / 100.0 ** (2 * (i // 2) / 4)
                expected.append(math.sin(angle) if i % 2 == 0 else math.cos(angle))
        torch.testing.assert_close(out[1, :, y, x], torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert pe(torch.zeros(1, 1, h, w, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_fpn_neck_top_down_levels():
    cfg = FpnNeckConfig(d_model=8, backbone_channel_list=(16, 12, 10, 6), fpn_top_down_levels=(2, 3),
                        num_pos_feats=8)
    torch.manual_seed(0)
    neck = FpnNeck(cfg)
    xs = [torch.randn(1, c, 32 // 2 ** i, 32 // 2 ** i) for i, c in enumerate((6, 10, 12, 16))]
    with torch.no_grad():
        feats, pos = neck(xs)
        lateral = [neck.convs[3 - i](x) for i, x in enumerate(xs)]
    up = lambda t: t.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # noqa: E731
    torch.testing.assert_close(feats[3], lateral[3])
    torch.testing.assert_close(feats[2], lateral[2] + up(lateral[3]))
    torch.testing.assert_close(feats[1], lateral[1])  # not a top-down level
    torch.testing.assert_close(feats[0], lateral[0])
    assert [tuple(p.shape) for p in pos] == [(1, 8, 32 // 2 ** i, 32 // 2 ** i) for i in range(4)]


def test_image_encoder_rejects_bad_inputs():
    encoder = Sam2ImageEncoder(TINY.image_encoder)
    with pytest.raises(ValueError, match="multiple of 32"):
        encoder(torch.zeros(1, 3, 100, 128))
    with pytest.raises(ValueError, match="3 x H x W"):
        encoder(torch.zeros(1, 1, 128, 128))


def test_caches_made_in_inference_mode_work_with_autograd():
    torch.manual_seed(0)
    encoder = Sam2ImageEncoder(TINY.image_encoder)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        first = encoder(x)
    with torch.no_grad():
        assert torch.equal(encoder(x).vision_features, first.vision_features)
    out = encoder(x)  # gradients on: must not trip over cached inference tensors
    loss = sum((p * f).sum() for p, f in zip(out.vision_pos_enc, out.backbone_fpn, strict=True))
    loss.backward()
    assert encoder.trunk.pos_embed.grad is not None
    torch.testing.assert_close(out.vision_features, first.vision_features)
