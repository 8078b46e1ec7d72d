"""The pure-PyTorch modulated deformable 3x3 convolution against a per-pixel loop and conv2d."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_focsam.models.focsam import DeformLayer, modulated_deform_conv3x3


def _loop_reference(x, offset, mask, weight, bias=None):
    """mmcv's definition written out pixel by pixel, in float64."""
    x, offset, mask, weight = (t.double() for t in (x, offset, mask, weight))
    n, c, h, w = x.shape
    out = torch.zeros(n, weight.shape[0], h, w, dtype=torch.float64)
    for b in range(n):
        for r in range(h):
            for s in range(w):
                acc = torch.zeros(weight.shape[0], dtype=torch.float64)
                for i in range(3):
                    for j in range(3):
                        k = 3 * i + j
                        y = r - 1 + i + offset[b, 2 * k, r, s].item()
                        xx = s - 1 + j + offset[b, 2 * k + 1, r, s].item()
                        y0, x0 = math.floor(y), math.floor(xx)
                        val = torch.zeros(c, dtype=torch.float64)
                        for cy, cx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                            if 0 <= cy < h and 0 <= cx < w:
                                wgt = (1 - abs(y - cy)) * (1 - abs(xx - cx))
                                val += wgt * x[b, :, cy, cx]
                        acc += weight[:, :, i, j] @ (mask[b, k, r, s] * val)
                out[b, :, r, s] = acc
    if bias is not None:
        out += bias.double()[None, :, None, None]
    return out


def _inputs(seed, n=2, c=3, cout=4, h=5, w=6, offset_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    offset = offset_scale * torch.randn(n, 18, h, w, generator=g)
    mask = torch.rand(n, 9, h, w, generator=g)
    weight = torch.randn(cout, c, 3, 3, generator=g)
    bias = torch.randn(cout, generator=g)
    return x, offset, mask, weight, bias


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_per_pixel_loop_with_offsets_leaving_the_image(seed):
    x, offset, mask, weight, bias = _inputs(seed)
    # a few samples far outside, exactly on integer positions and on the -1 / H borders
    offset[0, 0, 0, 0] = -7.0
    offset[0, 1, 1, 2] = 9.5
    offset[1, 4, 2, 3] = 2.0
    offset[1, 6, 4, 5] = 1.0  # row 4 - 1 + 2 + 1 = 6 = H + 1 -> outside
    offset[1, 7, 0, 0] = -0.25
    out = modulated_deform_conv3x3(x, offset, mask, weight, bias)
    ref = _loop_reference(x, offset, mask, weight, bias)
    # the random offsets really leave the image for part of the samples
    assert out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_fraction_outside_is_substantial():
    _, offset, _, _, _ = _inputs(0)
    h, w = offset.shape[-2:]
    rows = torch.arange(h)[:, None] - 1 + torch.arange(3).repeat_interleave(3)[:, None, None]
    ys = rows + offset[:, 0::2]
    assert bool(((ys <= -1) | (ys >= h)).float().mean() > 0.1)


def test_zero_offsets_and_unit_mask_equal_conv2d():
    x, offset, mask, weight, bias = _inputs(2, n=2, c=5, cout=7, h=9, w=8)
    out = modulated_deform_conv3x3(x, torch.zeros_like(offset), torch.ones_like(mask), weight, bias)
    torch.testing.assert_close(out, F.conv2d(x, weight, bias, padding=1), rtol=1e-5, atol=1e-5)


def test_integer_shift_equals_shifted_conv():
    """All kernel points moved one row down: a convolution reading rows r..r+2 for row r."""
    x, offset, mask, weight, _ = _inputs(3, n=1, c=2, cout=3, h=6, w=7)
    offset = torch.zeros_like(offset)
    offset[:, 0::2] = 1.0
    out = modulated_deform_conv3x3(x, offset, torch.ones_like(mask), weight)
    padded = F.pad(x, (1, 1, 0, 2))  # no row above, two zero rows below
    torch.testing.assert_close(out, F.conv2d(padded, weight), rtol=1e-5, atol=1e-5)


def test_shape_errors():
    x, offset, mask, weight, _ = _inputs(0)
    with pytest.raises(ValueError, match="weight"):
        modulated_deform_conv3x3(x, offset, mask, weight[:, :2])
    with pytest.raises(ValueError, match="offset"):
        modulated_deform_conv3x3(x, offset[:, :9], mask, weight)


def test_deform_layer_keys_and_split():
    layer = DeformLayer(4, 4)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {"dcn_offset.weight": (27, 4, 3, 3), "dcn_offset.bias": (27,),
                      "dcn.weight": (4, 4, 3, 3)}
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        om = layer.dcn_offset(x)
        expected = modulated_deform_conv3x3(x, om[:, :18], om[:, 18:].sigmoid(), layer.dcn.weight)
        torch.testing.assert_close(layer(x), expected)
