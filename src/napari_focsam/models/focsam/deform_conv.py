"""Modulated deformable 3x3 convolution (DCNv2) in plain PyTorch.

Semantics of mmcv's ``ModulatedDeformConv2d`` with stride 1, padding 1, dilation 1, one group
and one deformable group, which is what FocSAM's refiner uses. For output pixel ``(h, w)`` and
kernel position ``k = 3 * i + j`` the input is sampled at

    ``(h - 1 + i + offset[2k], w - 1 + j + offset[2k + 1])``

by bilinear interpolation in which every corner outside the image contributes zero, multiplied
by ``mask[k]`` and then convolved with the weight, as mmcv's im2col + GEMM does.

Implementation (fast on CPUs): the input is read channels-last (``N*H*W x Cin`` rows). For every
output pixel and kernel point the four corner rows and their weights (bilinear weight times the
modulation, exactly 0 for a corner outside the image) are computed once in float32; one
``F.embedding_bag`` (a fused gather + weighted sum) then builds the im2col matrix
``(N*H*W) x (9*Cin)`` and a single GEMM with the weight reshaped to ``Cout x (9*Cin)`` gives
the output, channels-last. Both run over chunks of images so the im2col matrix stays
cache-sized. Under autocast (e.g. bf16) the gather and the GEMM run in the autocast dtype while
the sampling positions and weights are computed in float32.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..common import autocast_dtype, cached_derived, needs_grad, no_autocast

__all__ = ["DeformLayer", "ModulatedDeformConv3x3", "modulated_deform_conv3x3"]

logger = logging.getLogger(__name__)

#: Kernel side; the layer is specialised to the 3x3 / padding 1 case FocSAM needs.
KERNEL = 3
KERNEL_POINTS = KERNEL * KERNEL

#: Elements of the im2col matrix built per chunk (4 MiB in float32): big enough for an
#: efficient GEMM, small enough to stay in the CPU cache (and under glibc's mmap threshold).
_CHUNK_ELEMENTS = 1 << 20


def _sampling_corners(offset: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Corner rows and weights of every bilinear sample, in float32.

    Parameters
    ----------
    offset : torch.Tensor
        ``N x H x W x 9 x 2`` (row, column) offsets per kernel point.
    mask : torch.Tensor
        ``N x H x W x 9`` modulation.

    Returns
    -------
    index : torch.Tensor
        ``(N*H*W*9) x 4`` int64 rows of the ``(N*H*W) x C`` channels-last input; order of the
        samples ``(n, h, w, k)``, of the corners ``(y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1)``.
        A corner outside the image is clamped onto it (its weight is 0).
    weight : torch.Tensor
        ``(N*H*W*9) x 4`` float32 bilinear weight times the modulation, 0 outside the image.
    """
    n, h, w = offset.shape[:3]
    dev, f32 = offset.device, torch.float32
    k = torch.arange(KERNEL, device=dev, dtype=f32)
    # sampling positions of kernel point k = 3 i + j: row h - 1 + i + dy, column w - 1 + j + dx
    rows = torch.arange(h, device=dev, dtype=f32).view(h, 1, 1) - 1 + k.repeat_interleave(KERNEL)
    cols = torch.arange(w, device=dev, dtype=f32).view(1, w, 1) - 1 + k.repeat(KERNEL)
    offset = offset.float()
    # per axis (all N x H x W x 9; no broadcasting over tiny inner dimensions, which is slow):
    # the lower corner, its weight and the upper one's, each 0 when that corner is outside
    axes = []
    for pos, size in ((offset[..., 0] + rows, h), (offset[..., 1] + cols, w)):
        low = pos.floor()
        frac = pos - low
        w_low = torch.where((low >= 0) & (low <= size - 1), 1 - frac, 0.0)
        w_high = torch.where((low >= -1) & (low <= size - 2), frac, 0.0)
        i_low = low.clamp(0, size - 1).long()
        i_high = (low + 1).clamp_(0, size - 1).long()
        axes.append((w_low, w_high, i_low, i_high))
    (wy0, wy1, y0, y1), (wx0, wx1, x0, x1) = axes
    mask = mask.float()
    wy0, wy1 = wy0 * mask, wy1 * mask
    weight = torch.stack((wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1), dim=-1).view(-1, 4)
    image = torch.arange(n, device=dev).view(n, 1, 1, 1) * (h * w)
    y0, y1 = y0 * w + image, y1 * w + image
    index = torch.stack((y0 + x0, y0 + x1, y1 + x0, y1 + x1), dim=-1).view(-1, 4)
    return index, weight


def _flat_weight(weight: torch.Tensor) -> torch.Tensor:
    """``Cout x Cin x 3 x 3`` -> ``Cout x (9*Cin)`` with column ``k * Cin + c`` (im2col order)."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).contiguous()


def deform_conv3x3_channels_last(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    flat_weight: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Modulated deformable 3x3 convolution on channels-last tensors (see the module notes).

    Parameters
    ----------
    x : torch.Tensor
        ``N x H x W x Cin``.
    offset : torch.Tensor
        ``N x H x W x 18``: (row, column) offsets of kernel point ``k`` at ``2k``, ``2k + 1``.
    mask : torch.Tensor
        ``N x H x W x 9`` modulation.
    weight : torch.Tensor
        ``Cout x Cin x 3 x 3``.
    bias : torch.Tensor, optional
        ``Cout``.
    flat_weight : torch.Tensor, optional
        ``weight`` already in ``Cout x (9*Cin)`` im2col order and the compute dtype.
    out : torch.Tensor, optional
        Contiguous ``N x H x W x Cout`` buffer of the compute dtype to write the result into
        (ignored while autograd records).

    Returns
    -------
    torch.Tensor
        ``N x H x W x Cout``, in the autocast dtype when autocast is on for ``x``'s device, else
        in ``x``'s dtype.
    """
    n, h, w, c = x.shape
    cout = weight.shape[0]
    dtype = autocast_dtype(x.device) or x.dtype
    index, sample_weight = _sampling_corners(offset.float().unflatten(-1, (KERNEL_POINTS, 2)),
                                             mask.float())
    table = x.reshape(n * h * w, c).to(dtype)
    sample_weight = sample_weight.to(dtype)
    if flat_weight is None:
        flat_weight = _flat_weight(weight)
    wt = flat_weight.to(dtype).t()  # (9*Cin) x Cout
    b = None if bias is None else bias.to(dtype)
    tokens = h * w
    per_chunk = max(1, _CHUNK_ELEMENTS // (tokens * KERNEL_POINTS * c))
    # autograd cannot record writes into a preallocated output: concatenate chunks instead
    recording = needs_grad(table, sample_weight, wt, *(() if b is None else (b,)))
    if recording:
        out = None
    elif out is None:
        out = torch.empty(n * tokens, cout, dtype=dtype, device=x.device)
    elif out.shape != (n, h, w, cout) or out.dtype != dtype or not out.is_contiguous():
        raise ValueError(f"out buffer {tuple(out.shape)} {out.dtype} does not fit the result "
                         f"{(n, h, w, cout)} {dtype}")
    else:
        out = out.view(n * tokens, cout)
    parts = []
    with no_autocast(x.device):
        for start in range(0, n, per_chunk):
            rows = slice(start * tokens, min(n, start + per_chunk) * tokens)
            samples = slice(rows.start * KERNEL_POINTS, rows.stop * KERNEL_POINTS)
            cols = F.embedding_bag(index[samples], table, per_sample_weights=sample_weight[samples],
                                   mode="sum").view(-1, KERNEL_POINTS * c)  # tokens x (9 * Cin)
            if out is None:
                parts.append(F.linear(cols, wt.t(), b))
            elif b is None:
                torch.mm(cols, wt, out=out[rows])
            else:
                torch.addmm(b, cols, wt, out=out[rows])
    if out is None:
        out = torch.cat(parts)
    return out.view(n, h, w, cout)


def modulated_deform_conv3x3(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Modulated deformable 3x3 convolution, stride 1, padding 1 (mmcv semantics).

    Parameters
    ----------
    x : torch.Tensor
        ``N x Cin x H x W`` input (channels-last memory is read without a copy).
    offset : torch.Tensor
        ``N x 18 x H x W``; channels ``2k`` and ``2k + 1`` are the (row, column) offsets of
        kernel position ``k = 3 * i + j``.
    mask : torch.Tensor
        ``N x 9 x H x W`` modulation (already passed through a sigmoid).
    weight : torch.Tensor
        ``Cout x Cin x 3 x 3``.
    bias : torch.Tensor, optional
        ``Cout``.

    Returns
    -------
    torch.Tensor
        ``N x Cout x H x W`` (in channels-last memory).
    """
    n, c, h, w = x.shape
    if weight.shape[1:] != (c, KERNEL, KERNEL):
        raise ValueError(f"weight {tuple(weight.shape)} does not fit input channels {c} and a "
                         f"{KERNEL}x{KERNEL} kernel")
    if offset.shape != (n, 2 * KERNEL_POINTS, h, w) or mask.shape != (n, KERNEL_POINTS, h, w):
        raise ValueError(f"offset {tuple(offset.shape)} / mask {tuple(mask.shape)} do not fit "
                         f"input {tuple(x.shape)}")
    out = deform_conv3x3_channels_last(x.permute(0, 2, 3, 1), offset.permute(0, 2, 3, 1),
                                       mask.permute(0, 2, 3, 1), weight, bias)
    return out.permute(0, 3, 1, 2)


class ModulatedDeformConv3x3(nn.Module):
    """Weights of a modulated deformable 3x3 convolution (key ``weight``, optional ``bias``).

    Parameters
    ----------
    in_channels, out_channels : int
        Channels.
    bias : bool
        Learn a bias (FocSAM: no).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, KERNEL, KERNEL))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def flat_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight as ``Cout x (9*Cin)`` in im2col order and ``dtype`` (cached)."""
        return cached_derived(self, f"flat_weight_{dtype}", (self.weight,),
                              lambda: _flat_weight(self.weight).to(dtype))

    def forward_channels_last(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                              out: torch.Tensor | None = None) -> torch.Tensor:
        """``N x H x W x Cin`` with offsets ``N x H x W x 18`` and mask ``N x H x W x 9`` ->
        ``N x H x W x Cout`` (written into ``out`` when given, see
        :func:`deform_conv3x3_channels_last`)."""
        dtype = autocast_dtype(x.device) or x.dtype
        return deform_conv3x3_channels_last(x, offset, mask, self.weight, self.bias,
                                            flat_weight=self.flat_weight(dtype), out=out)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``N x Cin x H x W`` with offsets ``N x 18 x H x W`` and mask ``N x 9 x H x W``."""
        n, c, h, w = x.shape
        if offset.shape != (n, 2 * KERNEL_POINTS, h, w) or mask.shape != (n, KERNEL_POINTS, h, w):
            raise ValueError(f"offset {tuple(offset.shape)} / mask {tuple(mask.shape)} do not "
                             f"fit input {tuple(x.shape)}")
        out = self.forward_channels_last(x.permute(0, 2, 3, 1), offset.permute(0, 2, 3, 1),
                                         mask.permute(0, 2, 3, 1))
        return out.permute(0, 3, 1, 2)


class DeformLayer(nn.Module):
    """Offsets and modulation predicted from the input, then a deformable 3x3 convolution.

    Key names follow FocSAM (``dcn_offset``, ``dcn``). The offsets are predicted in float32
    even under autocast: they are sampling coordinates.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # channels 0..17: interleaved (dy, dx) per kernel position; 18..26: modulation logits
        self.dcn_offset = nn.Conv2d(in_channels, 3 * KERNEL_POINTS, kernel_size=KERNEL, padding=1)
        self.dcn = ModulatedDeformConv3x3(in_channels, out_channels, bias=False)

    def offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted ``N x 18 x H x W`` offsets and ``N x 9 x H x W`` sigmoid modulation
        (float32)."""
        with no_autocast(x.device):
            out = self.dcn_offset(x.float())
        return out[:, : 2 * KERNEL_POINTS], out[:, 2 * KERNEL_POINTS:].sigmoid()

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``N x Cin x H x W`` -> ``N x Cout x H x W`` (each sample zero-padded at its border).

        Channels-last input memory is used as it is and the output is channels-last (written
        into the ``N x H x W x Cout`` buffer ``out`` when given).
        """
        offset, mask = self.offsets_and_mask(x)
        y = self.dcn.forward_channels_last(x.permute(0, 2, 3, 1), offset.permute(0, 2, 3, 1),
                                           mask.permute(0, 2, 3, 1), out=out)
        return y.permute(0, 3, 1, 2)
