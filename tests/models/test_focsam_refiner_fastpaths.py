"""The FocusRefiner's fast paths against their plain definitions, and bf16 against fp32.

The parity tests check the fp32 result against the official code; here every shortcut
(fused q/k/v, analytic zero key, key/value folding, piecewise-linear pixel MLP, chunking and
reused buffers, channels-last DCN) is compared with the straightforward computation, and the
bf16 (autocast) refiner with the fp32 one.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_focsam.models.checkpoint import load_checked
from napari_focsam.models.common import merge_heads, split_heads
from napari_focsam.models.focsam import (
    FOCSAM_CONFIGS,
    FocSamConfig,
    FocusRefiner,
    focsam_to_sam_state_dict,
    modulated_deform_conv3x3,
    refiner_state_dict,
)
from napari_focsam.models.focsam.layers import ATTENTION_CHUNK_WINDOWS, PDyReLU, ZeroKeyAttention
from napari_focsam.models.sam import SamModel


def _plain_attention(attn: ZeroKeyAttention, q, k, v):
    """The definition: project, append a zero key and value, softmax attention, project."""
    heads = attn.num_heads
    q, k, v = (split_heads(p(t), heads) for p, t in ((attn.q_proj, q), (attn.k_proj, k),
                                                      (attn.v_proj, v)))
    zero = k.new_zeros(*k.shape[:2], 1, k.shape[-1])
    k, v = torch.cat([k, zero], dim=2), torch.cat([v, zero], dim=2)
    p = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1)
    return attn.proj(merge_heads(p @ v))


def test_attention_fast_paths_match_definition():
    torch.manual_seed(0)
    attn = ZeroKeyAttention(64, 4).eval()
    x = 3 * torch.randn(5, 40, 64)
    cls = torch.randn(5, 1, 64)
    with torch.no_grad():
        # self-attention: fused q/k/v and the analytic zero key
        torch.testing.assert_close(attn(x, x, x), _plain_attention(attn, x, x, x),
                                   rtol=1e-5, atol=1e-5)
        # a class token reading the tokens: key / value projections folded into the query
        expected = _plain_attention(attn, cls, x, x)
        torch.testing.assert_close(attn(cls, x, x), expected, rtol=1e-5, atol=1e-5)
        chunks = [x[:2], x[2:3], x[3:]]
        torch.testing.assert_close(attn.folded_attention(cls, chunks), expected,
                                   rtol=1e-5, atol=1e-5)
        # distinct key / value tensors take the general path
        torch.testing.assert_close(attn(cls, x, x.clone()), expected, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="chunks"):
            attn.folded_attention(cls, chunks[:2])


def test_pixel_mlp_table_matches_mlp_everywhere():
    torch.manual_seed(1)
    relu = PDyReLU(48)
    first, second = relu.pixel_mlp[0], relu.pixel_mlp[2]
    with torch.no_grad():
        first.weight[:3] = 0.0  # units that never switch (one on, via its bias)
        first.bias[0] = 0.7
        first.weight[5] = first.weight[6]  # a repeated switch point
        first.bias[5] = first.bias[6]
        breaks = -first.bias / first.weight[:, 0]
        s = torch.cat([torch.linspace(-60, 60, 2001), breaks[3:], breaks[3:] + 1e-3,
                       torch.tensor([-1e4, 1e4])])[:, None]
        expected = 2 * second(F.relu(first(s.double().float())))
        got = relu.pixel_preact_twice(s)
    scale = expected.abs().max()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * scale)


def test_pdyrelu_uses_tanh_of_the_mlp():
    torch.manual_seed(2)
    relu = PDyReLU(32)
    with torch.no_grad():
        for p in (relu.pixel_scale, relu.pixel_bias, relu.channel_scale, relu.channel_bias):
            p.normal_(0, 0.3)
        x, cls = torch.randn(3, 20, 32), torch.randn(3, 1, 32)
        pixel = relu.pixel_mlp(x @ cls.transpose(1, 2)) * relu.pixel_scale.exp() + relu.pixel_bias
        channel = relu.channel_mlp(x.mean(1, keepdim=True)) * relu.channel_scale.exp() \
            + relu.channel_bias
        expected = torch.maximum(pixel[..., :32] * x + pixel[..., 32:],
                                 channel[..., :32] * x + channel[..., 32:])
        torch.testing.assert_close(relu(x, cls), expected, rtol=1e-5, atol=1e-5)


def test_deform_conv_bf16_under_autocast():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 16, 8, 9, generator=g)
    offset = 2 * torch.randn(3, 18, 8, 9, generator=g)
    mask = torch.rand(3, 9, 8, 9, generator=g)
    weight = torch.randn(12, 16, 3, 3, generator=g) / 12
    ref = modulated_deform_conv3x3(x, offset, mask, weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = modulated_deform_conv3x3(x, offset, mask, weight)
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).norm() / ref.norm()
    assert 1e-5 < err < 1e-2  # really bf16, and close


def _tiny_refiner(seed: int) -> FocusRefiner:
    torch.manual_seed(seed)
    refiner = FocusRefiner(FOCSAM_CONFIGS["focsam_test_tiny"].refiner).eval()
    with torch.no_grad():
        for block in refiner.blocks:
            if block.cls_scale_proj is not None:
                block.cls_scale_proj.weight.fill_(0.3)
    return refiner


def test_chunks_buffers_and_autograd_paths_agree():
    """More windows than a chunk, with reused buffers (no grad) and without (autograd)."""
    refiner = _tiny_refiner(4)
    e = refiner.cfg.embed_dim
    emb = torch.randn(1, e, 64, 64)
    token = torch.randn(1, 1, e)
    grid = torch.zeros(1, 1, 64, 64)
    grid[..., 5:60, 3:40] = 1  # 12 plain windows > ATTENTION_CHUNK_WINDOWS
    assert ATTENTION_CHUNK_WINDOWS < 12
    with torch.inference_mode():
        fast = refiner.refine(emb, token, grid)
    emb.requires_grad_(True)
    slow = refiner.refine(emb, token, grid)
    torch.testing.assert_close(slow.detach(), fast, rtol=1e-5, atol=1e-5)
    slow.square().mean().backward()
    assert emb.grad is not None and bool(torch.isfinite(emb.grad).all())
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in refiner.parameters())
    assert refiner.blocks[0].cls2img.conv2.dcn.weight.grad.abs().sum() > 0


def test_frozen_weights_cached_in_inference_mode_support_autograd():
    """Weights derived (and cached) in inference mode, then gradients w.r.t. the input."""
    refiner = _tiny_refiner(6).requires_grad_(False)
    e = refiner.cfg.embed_dim
    emb, token = torch.randn(1, e, 32, 32), torch.randn(1, 1, e)
    grid = torch.ones(1, 1, 32, 32)
    with torch.inference_mode():
        expected = refiner.refine(emb, token, grid)
    emb.requires_grad_(True)
    out = refiner.refine(emb, token, grid)
    out.square().mean().backward()
    torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-5)
    assert emb.grad is not None and bool(torch.isfinite(emb.grad).all())


def test_cached_weights_follow_parameter_updates():
    refiner = _tiny_refiner(5)
    e = refiner.cfg.embed_dim
    emb, token = torch.randn(1, e, 32, 32), torch.randn(1, 1, e)
    grid = torch.ones(1, 1, 32, 32)
    with torch.no_grad():
        before = refiner.refine(emb, token, grid)
        state = {k: v.clone() for k, v in refiner.state_dict().items()}
        for p in refiner.parameters():
            p.mul_(0.9)
        changed = refiner.refine(emb, token, grid)
        refiner.load_state_dict(state)
        again = refiner.refine(emb, token, grid)
    assert not torch.allclose(before, changed, atol=1e-3)
    torch.testing.assert_close(again, before, rtol=0, atol=0)


def _fixture_models(fixture: dict) -> tuple[FocusRefiner, SamModel]:
    cfg = FocSamConfig.from_official_kwargs(fixture["config"]["model"], name=fixture["path"].stem)
    refiner = load_checked(FocusRefiner(cfg.refiner).eval(),
                           refiner_state_dict(fixture["state_dict"]), source=fixture["path"].name)
    sam = load_checked(SamModel(cfg.sam).eval(), focsam_to_sam_state_dict(fixture["state_dict"]),
                       source=fixture["path"].name)
    return refiner, sam


def test_bf16_refiner_close_to_fp32(focsam_fixture):
    """Under bf16 autocast the refined embeddings stay close to fp32 and decode to the same
    mask. Compared on the refiner's update (refined - projected embeddings), which the
    untouched windows do not dilute."""
    refiner, sam = _fixture_models(focsam_fixture)
    outputs = focsam_fixture["outputs"]
    refine = outputs["refine"]
    args = (outputs["image_embeddings"], refine["coarse_logits"], refine["mask_token"])
    with torch.inference_mode():
        fp32 = refiner(*args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = refiner(*args)
        base = refiner.embed_proj(outputs["image_embeddings"])
    assert bf16.dtype == torch.float32
    update32, update16 = (fp32 - base).double(), (bf16 - base).double()
    rel = ((update16 - update32).norm() / update32.norm()).item()
    cos = F.cosine_similarity(update16.flatten(), update32.flatten(), dim=0).item()
    assert 1e-5 < rel < 1e-2, rel  # bf16 really ran, and stays within 1 %
    assert cos > 0.9999, cos
    first = next(k for k, s in enumerate(outputs["steps"]) if s["uses_refined_embeddings"])
    step, previous = outputs["steps"][first], outputs["steps"][first - 1]
    with torch.inference_mode():
        masks = [sam.decode(emb, point_coords=step["point_coords"],
                            point_labels=step["point_labels"],
                            mask_input=previous["lowres_logits"], multimask=False).low_res_logits > 0
                 for emb in (fp32, bf16)]
    iou = (masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum()
    assert iou > 0.995, iou.item()
