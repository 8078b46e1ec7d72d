"""SAM 2 memory encoder: fuses a frame's features with its predicted mask into a memory.

``mask -> MaskDownSampler (stride 16) -> + pix_feat_proj(features) -> Fuser (ConvNeXt blocks)
-> out_proj``, plus a sine positional encoding of the memory grid (the neck's
:class:`~napari_focsam.models.sam2.neck.SinePositionEncoding`). Parameter names follow the
official modules, so the ``memory_encoder.*`` keys of a checkpoint load unchanged.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from ..common import LayerNorm2d
from .neck import SinePositionEncoding

logger = logging.getLogger(__name__)


class MaskDownSampler(nn.Module):
    """Downsample a mask by ``total_stride`` in steps of ``stride`` (conv, LayerNorm2d, GELU).

    Each step multiplies the channels by ``stride ** 2``; a final 1x1 conv maps to
    ``embed_dim``. Modules sit at the official indices ``encoder.{3k, 3k+1, 3k+2}`` and
    ``encoder.{3n}`` (1x1).

    Parameters
    ----------
    embed_dim : int
        Output channels.
    kernel_size, stride, padding : int
        Of each downsampling conv.
    total_stride : int
        Overall stride (a power of ``stride``).
    """

    def __init__(self, *, embed_dim: int = 256, kernel_size: int = 4, stride: int = 4, padding: int = 0,
                 total_stride: int = 16) -> None:
        super().__init__()
        num_layers = round(math.log(total_stride) / math.log(stride))
        if stride ** num_layers != total_stride:
            raise ValueError(f"total_stride {total_stride} is not a power of stride {stride}")
        layers: list[nn.Module] = []
        chans = 1
        for _ in range(num_layers):
            out = chans * stride ** 2
            layers += [nn.Conv2d(chans, out, kernel_size, stride=stride, padding=padding),
                       LayerNorm2d(out), nn.GELU()]
            chans = out
        layers.append(nn.Conv2d(chans, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """``B x 1 x S x S`` -> ``B x embed_dim x S/total_stride x S/total_stride``."""
        return self.encoder(masks)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm2d, 4x pointwise MLP (GELU), layer scale, residual.

    Parameters
    ----------
    dim : int
        Channels.
    kernel_size, padding : int
        Of the (depthwise) conv.
    layer_scale_init_value : float
        Initial ``gamma``; ``<= 0`` means no layer scale (and no ``gamma`` parameter).
    use_dwconv : bool
        Depthwise (``groups = dim``) instead of a full conv.
    """

    def __init__(self, *, dim: int, kernel_size: int = 7, padding: int = 3,
                 layer_scale_init_value: float = 1e-6, use_dwconv: bool = True) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=padding, groups=dim if use_dwconv else 1)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
                      if layer_scale_init_value > 0 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` -> same."""
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # B x H x W x C
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """Optional 1x1 input projection (``proj``) followed by ``num_layers`` :class:`CXBlock`.

    Parameters
    ----------
    dim : int
        Channels.
    num_layers : int
        Blocks (``layers.{i}``).
    kernel_size, padding, layer_scale_init_value, use_dwconv
        Of each :class:`CXBlock`.
    input_projection : bool
        Start with a 1x1 conv ``proj``.
    """

    def __init__(self, *, dim: int, num_layers: int, kernel_size: int = 7, padding: int = 3,
                 layer_scale_init_value: float = 1e-6, use_dwconv: bool = True,
                 input_projection: bool = False) -> None:
        super().__init__()
        self.proj: nn.Module = nn.Conv2d(dim, dim, kernel_size=1) if input_projection else nn.Identity()
        self.layers = nn.ModuleList(
            CXBlock(dim=dim, kernel_size=kernel_size, padding=padding,
                    layer_scale_init_value=layer_scale_init_value, use_dwconv=use_dwconv)
            for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C x H x W`` -> same."""
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """SAM 2 memory encoder (official ``MemoryEncoder`` with its sub-modules' arguments flattened).

    Parameters
    ----------
    out_dim : int
        Memory channels ``Cm`` (``out_proj`` exists only when it differs from ``in_dim``).
    in_dim : int
        Channels ``C`` of the frame features (and of the downsampled mask).
    mask_downsampler_kernel_size, mask_downsampler_stride, mask_downsampler_padding : int
        :class:`MaskDownSampler` convs (released configs: 3, 2, 1).
    mask_downsampler_total_stride : int
        Mask-to-feature stride (16).
    fuser_num_layers, fuser_kernel_size, fuser_padding : int
        :class:`Fuser` blocks and their depthwise conv (released configs: 2, 7, 3).
    fuser_layer_scale_init_value : float
        Layer-scale init of the fuser blocks (a ``gamma`` parameter exists when > 0).
    fuser_use_dwconv, fuser_input_projection : bool
        Fuser options.
    pos_num_feats : int or None
        Channels of the positional encoding (official ``position_encoding.num_pos_feats``);
        ``None`` means ``out_dim``.
    pos_temperature : float
        Sine encoding temperature.
    pos_normalize : bool
        Normalise positions.
    pos_scale : float or None
        Scale of normalised positions (``None``: ``2 pi``).
    """

    def __init__(
        self,
        *,
        out_dim: int,
        in_dim: int = 256,
        mask_downsampler_kernel_size: int = 3,
        mask_downsampler_stride: int = 2,
        mask_downsampler_padding: int = 1,
        mask_downsampler_total_stride: int = 16,
        fuser_num_layers: int = 2,
        fuser_kernel_size: int = 7,
        fuser_padding: int = 3,
        fuser_layer_scale_init_value: float = 1e-6,
        fuser_use_dwconv: bool = True,
        fuser_input_projection: bool = False,
        pos_num_feats: int | None = None,
        pos_temperature: float = 10000.0,
        pos_normalize: bool = True,
        pos_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(
            embed_dim=in_dim, kernel_size=mask_downsampler_kernel_size, stride=mask_downsampler_stride,
            padding=mask_downsampler_padding, total_stride=mask_downsampler_total_stride)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(dim=in_dim, num_layers=fuser_num_layers, kernel_size=fuser_kernel_size,
                           padding=fuser_padding, layer_scale_init_value=fuser_layer_scale_init_value,
                           use_dwconv=fuser_use_dwconv, input_projection=fuser_input_projection)
        self.out_proj: nn.Module = (nn.Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim
                                    else nn.Identity())
        self.out_dim = out_dim
        self.position_encoding = SinePositionEncoding(
            out_dim if pos_num_feats is None else pos_num_feats, temperature=pos_temperature,
            normalize=pos_normalize, scale=pos_scale)

    def forward(
        self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode ``B`` masks on a frame into memory features.

        Parameters
        ----------
        pix_feat : torch.Tensor
            ``B x C x H x W`` frame features, or ``1 x C x H x W`` shared by the B masks
            (projected once, then broadcast).
        masks : torch.Tensor
            ``B x 1 x 16H x 16W`` mask logits, or values already mapped by the caller.
        skip_mask_sigmoid : bool
            Use ``masks`` as they are instead of ``sigmoid(masks)`` (the official tracker
            passes ``20 * sigmoid(logits) - 10``, or ``20 * (logits > 0) - 10``, with True).

        Returns
        -------
        features : torch.Tensor
            ``B x Cm x H x W`` memory features.
        pos : list of torch.Tensor
            ``[B x Cm x H x W]``: the sine encoding (an expanded view; same for every object).
        """
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        masks = self.mask_downsampler(masks)
        x = self.pix_feat_proj(pix_feat.to(masks.device)) + masks
        x = self.out_proj(self.fuser(x))
        return x, [self.position_encoding(x)]
