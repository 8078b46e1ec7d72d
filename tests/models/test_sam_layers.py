"""The fast paths of the SAM layers equal their straightforward formulations."""

from __future__ import annotations

import pytest
import torch

from napari_focsam.models import common, kernels
from napari_focsam.models.sam import SAM_CONFIGS, build_sam
from napari_focsam.models.sam.image_encoder import (
    decomposed_rel_pos_bias,
    decomposed_rel_pos_terms,
    relative_position_table,
    window_partition,
    window_partition_filled,
    window_unpartition,
)
from napari_focsam.models.sam.mask_decoder import upscale_and_project


@pytest.mark.parametrize("hw, window", [((64, 64), 14), ((9, 7), 4), ((8, 8), 4)])
def test_window_partition_roundtrip(hw, window):
    x = torch.randn(2, *hw, 5)
    windows, padded = window_partition(x, window)
    assert windows.shape[1:] == (window, window, 5)
    assert padded[0] % window == 0 and padded[1] % window == 0
    back = window_unpartition(windows, window, padded, hw)
    assert torch.equal(back, x)
    assert back.is_contiguous()


def pad_grid(x: torch.Tensor, window: int, fill: torch.Tensor) -> torch.Tensor:
    """Reference: ``B x H x W x C`` padded bottom / right to a multiple of `window` with the
    ``C``-vector `fill`."""
    b, h, w, c = x.shape
    out = fill.to(x.dtype).expand(b, h + -h % window, w + -w % window, c).clone()
    out[:, :h, :w] = x
    return out


def test_pad_grid_uses_the_fill_token():
    x = torch.randn(1, 5, 6, 3)
    fill = torch.tensor([1.0, 2.0, 3.0])
    out = pad_grid(x, 4, fill)
    assert out.shape == (1, 8, 8, 3)
    assert torch.equal(out[:, :5, :6], x)
    assert torch.equal(out[0, 7, 0], fill) and torch.equal(out[0, 0, 7], fill)
    assert pad_grid(x[:, :4, :4], 4, fill).shape == (1, 4, 4, 3)


@pytest.mark.parametrize("hw, window", [((64, 64), 14), ((9, 7), 4), ((8, 8), 4), ((3, 9), 4),
                                        ((9, 3), 4), ((2, 3), 4)])
def test_window_partition_filled_equals_padding_then_partitioning(hw, window):
    x = torch.randn(2, *hw, 5)
    fill = torch.randn(5)
    windows, padded = window_partition_filled(x, window, fill)
    expected, expected_padded = window_partition(pad_grid(x, window, fill), window)
    assert padded == expected_padded and torch.equal(windows, expected)
    assert windows.is_contiguous()


def _naive_rel_pos_attention(q, k, v, rel_h, rel_w, hw):
    """Explicit formula: softmax(q k^T / sqrt(C) + <q, Rh> + <q, Rw>) v, loops over keys."""
    h, w = hw
    th, tw = relative_position_table(h, h, rel_h), relative_position_table(w, w, rel_w)
    n = h * w
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    bias = torch.empty_like(scores)
    for i in range(n):
        for j in range(n):
            (qi, qj), (ki, kj) = divmod(i, w), divmod(j, w)
            bias[..., i, j] = (q[..., i, :] * (th[qi, ki] + tw[qj, kj])).sum(-1)
    return torch.softmax(scores + bias, dim=-1) @ v


@pytest.mark.parametrize("kernel", ["sdpa", "blocked", "augmented"])
def test_rel_pos_bias_and_every_attention_kernel_match_the_formula(kernel):
    torch.manual_seed(0)
    h, w, c = 3, 4, 8
    q, k, v = (torch.randn(1, 2, h * w, c, dtype=torch.float64) for _ in range(3))
    rel_h = torch.randn(2 * h - 1, c, dtype=torch.float64)
    rel_w = torch.randn(2 * w - 1, c, dtype=torch.float64)
    expected = _naive_rel_pos_attention(q, k, v, rel_h, rel_w, (h, w))
    th, tw = relative_position_table(h, h, rel_h), relative_position_table(w, w, rel_w)
    bias = decomposed_rel_pos_bias(q, th, tw, (h, w), (h, w))
    scores = q @ k.transpose(-1, -2) * c ** -0.5 + bias
    torch.testing.assert_close(torch.softmax(scores, -1) @ v, expected)
    terms = decomposed_rel_pos_terms(q, th, tw, (h, w))
    with kernels.force("attention_rel_pos", kernel):
        torch.testing.assert_close(common.attend_rel_pos(q, k, v, *terms), expected)


def test_relative_position_table_resamples_other_lengths():
    table = torch.arange(7.0)[:, None].repeat(1, 2)  # built for size 4
    same = relative_position_table(4, 4, table)
    assert same.shape == (4, 4, 2)
    assert torch.equal(same[0, 0], table[3])  # zero offset is the centre entry
    assert relative_position_table(6, 6, table).shape == (6, 6, 2)


#: bf16 keeps 8 significant bits: about 2^-8 relative rounding per operation.
BF16_EPS = 2.0 ** -8


def _relative_norm(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_global_and_window_blocks_are_chunk_independent(monkeypatch):
    """Query-row chunking of the bias changes nothing but memory.

    In fp32 the chunked and whole results agree to fp32 reordering. In bf16 they may round
    differently (GEMM blocking differs between CPUs, e.g. with AMX), so the bound comes from
    bf16's rounding, not from one CPU's results: both stay as close to the fp32 result as bf16
    allows (a few roundings of 2^-8 over the encoder's blocks, in norm), and no element of the
    chunked result moves by more than a few roundings of the output's scale.
    """
    torch.manual_seed(0)
    model = build_sam(SAM_CONFIGS["sam_test_tiny"])
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        with kernels.force("attention_rel_pos", "sdpa"):
            whole = model.image_encoder(x)
            # 64 query rows per chunk (the global block has 64 x 64 queries)
            monkeypatch.setattr(common, "REL_POS_SDPA_CHUNK_BYTES", 64 * 4096 * 4 * 2)
            chunked = model.image_encoder(x)
        with kernels.force("attention_rel_pos", "blocked"), \
                torch.autocast("cpu", dtype=torch.bfloat16):
            whole16 = model.image_encoder(x)
            monkeypatch.setattr(common, "REL_POS_BMM_CHUNK_BYTES", 64 * 4096 * 2 * 2)
            chunked16 = model.image_encoder(x)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    scale = float(whole.abs().max())
    assert _relative_norm(whole16, whole) < 4 * BF16_EPS
    assert _relative_norm(chunked16, whole) < 4 * BF16_EPS
    assert _relative_norm(chunked16, whole16) < 2 * BF16_EPS
    assert float((chunked16.float() - whole16.float()).abs().max()) < 8 * BF16_EPS * scale


def test_upscale_and_project_equals_the_conv_formulation():
    torch.manual_seed(0)
    decoder = build_sam(SAM_CONFIGS["sam_test_tiny"]).mask_decoder
    for p in decoder.output_upscaling.parameters():
        p.data.normal_()
    b, h, w, c = 2, 5, 6, 32
    tokens = torch.randn(b, h, w, c)
    hyper = torch.randn(b, 4, c // 8)
    with torch.no_grad():
        up = decoder.output_upscaling(tokens.permute(0, 3, 1, 2))  # B x C/8 x 4H x 4W
        expected = (hyper @ up.flatten(2)).view(b, 4, 4 * h, 4 * w)
        actual = upscale_and_project(tokens, decoder.output_upscaling, hyper)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
