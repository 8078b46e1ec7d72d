"""`models.common.attend`: SDPA semantics, and the blocked bf16 CPU path against fp64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_focsam.models import common
from napari_focsam.models.common import attend


def _inputs(b=2, h=2, nq=40, nk=96, d=16, dv=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, nq, d, generator=g) * 2
    k = torch.randn(b, h, nk, d, generator=g) * 2
    v = torch.randn(b, h, nk, dv, generator=g)
    pad = torch.zeros(b, nk, dtype=torch.bool)
    pad[1, nk // 2:] = True  # the second batch entry ignores its last half
    return q, k, v, pad


def _reference(q, k, v, pad):
    q, k, v = (t.double() for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    return torch.softmax(scores, -1) @ v


def test_fp32_is_sdpa_with_the_padding_mask():
    q, k, v, pad = _inputs()
    out = attend(q, k, v, pad)
    torch.testing.assert_close(out.double(), _reference(q, k, v, pad), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attend(q, k, v), F.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("with_mask", [False, True])
def test_bf16_cpu_blocks_match_fp64_within_bf16_rounding(monkeypatch, with_mask):
    monkeypatch.setattr(common, "ATTENTION_QUERY_BLOCK", 16)  # 40 queries -> 3 blocks, last short
    q, k, v, pad = _inputs()
    pad = pad if with_mask else None
    ref = _reference(q, k, v, torch.zeros(q.shape[0], k.shape[2], dtype=torch.bool) if pad is None
                     else pad)
    out = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), pad)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    err = ((out.double() - ref).norm() / ref.norm()).item()
    sdpa_bf16 = F.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(),
                                               attn_mask=None if pad is None
                                               else ~pad[:, None, None, :])
    sdpa_err = ((sdpa_bf16.double() - ref).norm() / ref.norm()).item()
    # bf16 keeps 8 significant bits (2^-8 = 3.9e-3); scores of a few units are rounded too
    assert err < 2e-2
    assert err < 4 * sdpa_err
    if with_mask:  # padded keys get exactly zero weight: changing them changes nothing
        v2 = v.clone()
        v2[1, :, k.shape[2] // 2:] = 1e3
        again = attend(q.bfloat16(), k.bfloat16(), v2.bfloat16(), pad)
        assert torch.equal(again, out)


def test_memory_attention_under_bf16_autocast_is_as_close_to_fp32_as_torch_sdpa(monkeypatch):
    """The SAM 2 memory attention takes the blocked bf16 path under CPU autocast; its error
    against fp32 stays in line with PyTorch's own bf16 SDPA."""
    from napari_focsam.models.sam2 import memory_attention as ma
    from napari_focsam.models.sam2.config import SAM2_CONFIGS
    from napari_focsam.models.sam2.model import build_sam2

    torch.manual_seed(0)
    model = build_sam2(SAM2_CONFIGS["sam2_test_tiny"])
    attn = model.memory_attention.eval()
    cfg = model.config
    side = cfg.image_size // 16
    hw, c = side * side, cfg.memory_attention.d_model
    cm = model.memory_encoder.out_proj.weight.shape[0]
    n_ptr = 4
    curr, pos = torch.randn(2, hw, c), torch.randn(2, hw, c)
    memory, memory_pos = torch.randn(2, 3 * hw + n_ptr, cm), torch.randn(2, 3 * hw + n_ptr, cm)
    pad = torch.zeros(2, 3 * hw + n_ptr, dtype=torch.bool)
    pad[1, 2 * hw:3 * hw] = True  # the second object has one memory frame less

    calls = []

    def run(attend_fn, dtype):
        def spy(*args, **kwargs):
            calls.append(args[0].dtype)
            return attend_fn(*args, **kwargs)
        monkeypatch.setattr(ma, "attend", spy)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype != torch.float32):
            return attn(curr, memory, pos, memory_pos, n_ptr, pad).float()

    ref = run(attend, torch.float32)

    def sdpa(q, k, v, key_padding_mask=None):
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    calls.clear()
    ours = run(attend, torch.bfloat16)
    assert calls and all(d == torch.bfloat16 for d in calls)  # the bf16 path really ran
    torch_bf16 = run(sdpa, torch.bfloat16)
    err = ((ours - ref).norm() / ref.norm()).item()
    torch_err = ((torch_bf16 - ref).norm() / ref.norm()).item()
    assert 0 < err < 3e-2
    assert err < 2 * torch_err
