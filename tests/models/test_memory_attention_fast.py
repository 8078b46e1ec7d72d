"""SAM 2 memory attention: the fast path (values folded into the output projection, RoPE as a
complex multiply, the frame's own work shared by groups of objects) against the plain
formulation (``fast = False``), to fp32 rounding, with padding, several heads and bf16."""

from __future__ import annotations

import pytest
import torch

from napari_focsam.models import cpu
from napari_focsam.models.sam2.memory_attention import (
    MemoryAttention,
    RoPEAttention,
    apply_rope,
    apply_rope_complex,
    compute_axial_rope,
)

SIDE = 6
HW = SIDE * SIDE
#: fp32: the fast path reorders sums (attention over 64 instead of 256 channels, W_o W_v)
RTOL, ATOL = 1e-4, 1e-5


def _attention(heads: int = 1, d_model: int = 64, kv_dim: int = 16, layers: int = 2,
               seed: int = 0, fold: bool | None = True) -> MemoryAttention:
    """Random memory attention; `fold` forces the value fold (by default only bf16 on CPU)."""
    torch.manual_seed(seed)
    attn = MemoryAttention(d_model=d_model, num_layers=layers, dim_feedforward=128, kv_in_dim=kv_dim,
                           self_attn_num_heads=heads, cross_attn_num_heads=heads,
                           feat_sizes=(SIDE, SIDE)).eval()
    with torch.no_grad():  # biases of a realistic size (the fold moves the value bias)
        for m in attn.modules():
            if isinstance(m, torch.nn.Linear):
                m.bias.normal_(0.0, 0.5)
    for m in attn.modules():
        if isinstance(m, RoPEAttention):
            m.fold_values = fold
    return attn


def _inputs(attn: MemoryAttention, layouts, seed: int = 1):
    """One shared frame and a padded memory batch for objects of ``(frames, pointers)``."""
    g = torch.Generator().manual_seed(seed)
    dim = attn.d_model
    mem_dim = attn.layers[0].cross_attn_image.k_proj.in_features
    tokens_per_ptr = max(1, dim // mem_dim)
    max_frames = max(f for f, _ in layouts)
    max_ptr_tokens = max(p for _, p in layouts) * tokens_per_ptr
    total = max_frames * HW + max_ptr_tokens
    curr = torch.randn(1, HW, dim, generator=g)
    curr_pos = torch.randn(1, HW, dim, generator=g)
    memory = torch.randn(len(layouts), total, mem_dim, generator=g) * 2.0  # junk in the padding
    memory_pos = torch.randn(len(layouts), total, mem_dim, generator=g)
    padding = torch.ones(len(layouts), total, dtype=torch.bool)
    keeps = []
    for i, (frames, ptrs) in enumerate(layouts):
        keep = list(range(frames * HW)) + list(range(max_frames * HW,
                                                     max_frames * HW + ptrs * tokens_per_ptr))
        padding[i, keep] = False
        keeps.append((keep, ptrs * tokens_per_ptr))
    return curr, curr_pos, memory, memory_pos, padding, max_ptr_tokens, keeps


def _run(attn: MemoryAttention, fast: bool, *args, **kwargs) -> torch.Tensor:
    before = attn.fast
    attn.fast = fast
    try:
        with torch.no_grad():
            return attn(*args, **kwargs)
    finally:
        attn.fast = before


def test_fast_flag_reaches_every_layer_and_attention():
    attn = _attention()
    assert attn.fast
    attn.fast = False
    assert not any(m.fast for m in attn.modules() if hasattr(m, "fast") and m is not attn)
    attn.fast = True
    assert all(m.fast for m in attn.modules() if hasattr(m, "fast"))


def test_values_fold_only_where_cheaper():
    attn = _attention(heads=2)
    layer = attn.layers[0]
    assert layer.cross_attn_image.folds_values  # 2 heads x 16 < 64
    assert not layer.self_attn.folds_values  # 2 x 64 >= 64
    assert not RoPEAttention(64, 2, kv_in_dim=64).folds_values


def test_folded_value_output_is_the_composition():
    """``W_o W_v`` per head applied to per-head averages equals v_proj then out_proj."""
    torch.manual_seed(3)
    attn = RoPEAttention(64, 4, kv_in_dim=8, feat_sizes=(SIDE, SIDE))
    x = torch.randn(2, 4, HW, 8)  # per-head averages of the raw values
    weight, bias = attn.folded_value_output()
    with torch.no_grad():
        folded = torch.nn.functional.linear(x.transpose(1, 2).flatten(2), weight, bias)
        wv = attn.v_proj.weight.view(4, 16, 8)
        per_head = torch.einsum("bhnm,hdm->bhnd", x, wv) + attn.v_proj.bias.view(1, 4, 1, 16)
        plain = attn.out_proj(per_head.transpose(1, 2).flatten(2))
    torch.testing.assert_close(folded, plain, rtol=RTOL, atol=ATOL)


def test_complex_rope_equals_real_rope():
    cos, sin = compute_axial_rope(32, SIDE, SIDE)
    freqs = torch.complex(cos, sin)
    x = torch.randn(3, 2, 4 * HW + 5, 32)[..., : 4 * HW, :]  # a non-contiguous slice
    rotated = apply_rope_complex(x.unflatten(-2, (4, HW)), freqs)
    torch.testing.assert_close(rotated, apply_rope(x.unflatten(-2, (4, HW)), cos, sin),
                               rtol=1e-6, atol=1e-6)
    xt = torch.randn(2, 32, HW).transpose(1, 2)  # last dim not contiguous
    torch.testing.assert_close(apply_rope_complex(xt, freqs), apply_rope(xt, cos, sin),
                               rtol=1e-6, atol=1e-6)
    xb = x.unflatten(-2, (4, HW)).to(torch.bfloat16)
    assert apply_rope_complex(xb, freqs).dtype == torch.bfloat16


@pytest.mark.parametrize(("heads", "fold"), [(1, True), (2, True), (1, None), (1, False)])
def test_fast_equals_reference_with_padding(heads, fold):
    """Padded batch (different memory lengths, junk in the padding), shared frame."""
    attn = _attention(heads=heads, fold=fold)
    layouts = [(3, 4), (1, 1), (2, 0), (3, 4)]
    curr, curr_pos, memory, memory_pos, padding, n_ptr, keeps = _inputs(attn, layouts)
    args = (curr, memory, curr_pos, memory_pos, n_ptr, padding)
    fast, ref = _run(attn, True, *args), _run(attn, False, *args)
    assert fast.shape == (len(layouts), HW, attn.d_model)
    torch.testing.assert_close(fast, ref, rtol=RTOL, atol=ATOL)
    # each object alone (no padding) through the fast path: the same numbers
    for i, (keep, ptr_tokens) in enumerate(keeps):
        alone = _run(attn, True, curr, memory[i:i + 1, keep], curr_pos, memory_pos[i:i + 1, keep],
                     ptr_tokens)
        torch.testing.assert_close(alone, ref[i:i + 1], rtol=RTOL, atol=ATOL)
    # per-object current tokens (batch B, not shared) too
    expanded = _run(attn, True, curr.expand(len(layouts), -1, -1), memory,
                    curr_pos.expand(len(layouts), -1, -1), memory_pos, n_ptr, padding)
    torch.testing.assert_close(expanded, ref, rtol=RTOL, atol=ATOL)


def test_groups_equal_the_padded_reference():
    """`forward_groups` (objects grouped by layout, nothing padded, the frame's part shared)."""
    attn = _attention()
    layouts = [(3, 2), (1, 0), (3, 2), (2, 5)]
    curr, curr_pos, memory, memory_pos, padding, n_ptr, keeps = _inputs(attn, layouts)
    ref = _run(attn, False, curr, memory, curr_pos, memory_pos, n_ptr, padding)
    by_layout: dict[tuple, list[int]] = {}
    for i, layout in enumerate(layouts):
        by_layout.setdefault(layout, []).append(i)
    groups = []
    for rows in by_layout.values():
        keep, ptr_tokens = keeps[rows[0]]
        groups.append((memory[rows][:, keep], memory_pos[rows][:, keep], ptr_tokens, None))
    with torch.no_grad():
        outs = attn.forward_groups(curr, groups, curr_pos)
        attn.fast = False
        ref_groups = attn.forward_groups(curr, groups, curr_pos)
        attn.fast = True
    for rows, out, out_ref in zip(by_layout.values(), outs, ref_groups, strict=True):
        torch.testing.assert_close(out, ref[rows], rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(out_ref, ref[rows], rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match="shared frame"):
        attn.forward_groups(curr.expand(2, -1, -1), groups, curr_pos)


def test_only_padding_is_refused_on_both_paths():
    attn = _attention()
    curr, curr_pos, memory, memory_pos, padding, n_ptr, _ = _inputs(attn, [(2, 1), (1, 0)])
    for fast in (True, False):
        with pytest.raises(ValueError, match="only padding"):
            _run(attn, fast, curr, memory, curr_pos, memory_pos, n_ptr, torch.ones_like(padding))


def test_value_fold_is_automatic_for_bf16_on_cpu(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_native_bf16", lambda: True)  # as on a CPU with avx512_bf16
    attn = _attention(fold=None)
    cross = attn.layers[0].cross_attn_image
    calls = []
    original = cross.folded_value_output
    monkeypatch.setattr(cross, "folded_value_output", lambda: calls.append(1) or original())
    curr, curr_pos, memory, memory_pos, padding, n_ptr, _ = _inputs(attn, [(2, 1)])
    _run(attn, True, curr, memory, curr_pos, memory_pos, n_ptr)
    assert not calls  # fp32: the fused SDPA kernel with full-width values is faster
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _run(attn, True, curr, memory, curr_pos, memory_pos, n_ptr)
    assert calls
    monkeypatch.setattr(cpu, "cpu_native_bf16", lambda: False)  # emulated bf16: SDPA, no fold
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _run(attn, True, curr, memory, curr_pos, memory_pos, n_ptr)
    assert not calls


@pytest.mark.parametrize("fold", [True, None])
def test_fast_bf16_autocast_matches_reference_bf16(fold):
    """Under bf16 autocast both paths stay within bf16 rounding of fp32 and of each other."""
    attn = _attention(fold=fold)
    curr, curr_pos, memory, memory_pos, padding, n_ptr, _ = _inputs(attn, [(3, 4), (2, 1)])
    args = (curr, memory, curr_pos, memory_pos, n_ptr, padding)
    fp32 = _run(attn, False, *args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = _run(attn, True, *args)
        ref = _run(attn, False, *args)
    assert fast.dtype == ref.dtype
    scale = fp32.abs().max()
    err_fast = (fast.float() - fp32).abs().max() / scale
    err_ref = (ref.float() - fp32).abs().max() / scale
    assert err_fast < 0.05, err_fast
    assert err_fast < 2 * err_ref + 0.01, (err_fast, err_ref)
    # signs (what becomes masks downstream) agree almost everywhere
    assert ((fast.float() > 0) == (fp32 > 0)).float().mean() > 0.99
