"""Modulated deformable 3x3 convolution (DCNv2) in plain PyTorch.

Semantics of mmcv's ``ModulatedDeformConv2d`` with stride 1, padding 1, dilation 1, one group
and one deformable group, which is what FocSAM's refiner uses. For output pixel ``(h, w)`` and
kernel position ``k = 3 * i + j`` the input is sampled at

    ``(h - 1 + i + offset[2k], w - 1 + j + offset[2k + 1])``

by bilinear interpolation in which every corner outside the image contributes zero, multiplied
by ``mask[k]`` and then convolved with the weight, as mmcv's im2col + GEMM does. The sampling
runs through ``F.grid_sample`` (zero padding), which reads the same four corners with the same
weights; only the float rounding of the normalised coordinates differs (~1e-7 pixel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DeformLayer", "ModulatedDeformConv3x3", "modulated_deform_conv3x3"]

#: Kernel side; the layer is specialised to the 3x3 / padding 1 case FocSAM needs.
KERNEL = 3
KERNEL_POINTS = KERNEL * KERNEL


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
        ``N x Cin x H x W`` input.
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
        ``N x Cout x H x W``.
    """
    n, c, h, w = x.shape
    if weight.shape[1:] != (c, KERNEL, KERNEL):
        raise ValueError(f"weight {tuple(weight.shape)} does not fit input channels {c} and a "
                         f"{KERNEL}x{KERNEL} kernel")
    if offset.shape != (n, 2 * KERNEL_POINTS, h, w) or mask.shape != (n, KERNEL_POINTS, h, w):
        raise ValueError(f"offset {tuple(offset.shape)} / mask {tuple(mask.shape)} do not fit "
                         f"input {tuple(x.shape)}")
    k = torch.arange(KERNEL, device=x.device, dtype=x.dtype)
    top = torch.arange(h, device=x.device, dtype=x.dtype) - 1  # padding 1
    left = torch.arange(w, device=x.device, dtype=x.dtype) - 1
    # sampling positions of kernel point k = 3 i + j: row h - 1 + i + dy, column w - 1 + j + dx
    rows = k.repeat_interleave(KERNEL)[:, None, None] + top[:, None]  # 9 x H x 1
    cols = k.repeat(KERNEL)[:, None, None] + left  # 9 x 1 x W
    off = offset.reshape(n, KERNEL_POINTS, 2, h, w)
    py = rows + off[:, :, 0]  # N x 9 x H x W
    px = cols + off[:, :, 1]
    # grid_sample (align_corners=False) reads pixel p at normalised (2p + 1) / size - 1, with
    # bilinear weights from the fractional part and zero for every corner outside the input.
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], dim=-1)
    columns = F.grid_sample(x, grid.reshape(n, KERNEL_POINTS, h * w, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=False)  # N x Cin x 9 x HW
    columns = columns * mask.reshape(n, 1, KERNEL_POINTS, h * w)
    # mmcv's im2col layout (Cin * 9) x HW, row index c * 9 + k, times the flattened weight.
    out = weight.reshape(weight.shape[0], -1) @ columns.reshape(n, c * KERNEL_POINTS, h * w)
    if bias is not None:
        out = out + bias[:, None]
    return out.reshape(n, -1, h, w)


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

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``N x Cin x H x W`` with offsets ``N x 18 x H x W`` and mask ``N x 9 x H x W``."""
        return modulated_deform_conv3x3(x, offset, mask, self.weight, self.bias)


class DeformLayer(nn.Module):
    """Offsets and modulation predicted from the input, then a deformable 3x3 convolution.

    Key names follow FocSAM (``dcn_offset``, ``dcn``).

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
        """Predicted ``N x 18 x H x W`` offsets and ``N x 9 x H x W`` sigmoid modulation."""
        out = self.dcn_offset(x)
        return out[:, : 2 * KERNEL_POINTS], out[:, 2 * KERNEL_POINTS:].sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x Cin x H x W`` -> ``N x Cout x H x W`` (each sample zero-padded at its border)."""
        offset, mask = self.offsets_and_mask(x)
        return self.dcn(x, offset, mask)

