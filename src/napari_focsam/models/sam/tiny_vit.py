"""MobileSAM's TinyViT image encoder (``vit_t``), state_dict-compatible with ``mobile_sam.pt``.

Layout of the official module (MobileSAM ``tiny_vit_sam.py``), kept key for key:
``patch_embed.seq.{0,2}`` (3x3 stride-2 conv + BatchNorm, GELU between), ``layers.0`` (MBConv
blocks), ``layers.{1..}`` (TinyViT blocks), ``layers.{i}.downsample`` (PatchMerging),
``norm_head`` / ``head`` (the unused ImageNet classifier, present in the checkpoints), ``neck``.
Convolutions keep their BatchNorm (``c`` + ``bn``), so eval-mode numerics are the official
ones; the attention biases are gathered from ``attention_biases`` as they are now (cached until
they change; the official module caches them when ``eval()`` is called, see
`TinyViTAttention`).

Inside the attention stages tokens are kept channels-last, ``B x H x W x C``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..common import LayerNorm2d, Linear, attend_bias, cached_derived
from .config import TinyViTConfig
from .image_encoder import window_partition, window_partition_filled, window_unpartition


class Conv2dBN(nn.Sequential):
    """Convolution without bias followed by BatchNorm (``c``, ``bn``), ``B x C x H x W``.

    Parameters
    ----------
    in_chans, out_chans : int
        Channels.
    kernel_size, stride, padding, groups : int
        Convolution geometry.
    bn_eps : float
        BatchNorm epsilon.
    bn_weight_init : float
        Initial BatchNorm scale (0 makes a residual branch start as identity, as officially).
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1, *, bn_eps: float = 1e-5,
                 bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups,
                           bias=False)
        self.bn = nn.BatchNorm2d(out_chans, eps=bn_eps)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convs, ``B x 3 x S x S`` -> ``B x C0 x S/4 x S/4``."""

    def __init__(self, cfg: TinyViTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dims[0]
        self.seq = nn.Sequential(
            Conv2dBN(cfg.in_chans, dim // 2, 3, 2, 1, bn_eps=cfg.bn_eps),
            nn.GELU(),
            Conv2dBN(dim // 2, dim, 3, 2, 1, bn_eps=cfg.bn_eps),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, 3x3 depthwise, 1x1 project, GELU after the sum.

    ``B x C x H x W`` -> ``B x C x H x W``.
    """

    def __init__(self, dim: int, expand_ratio: float, bn_eps: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden, bn_eps=bn_eps)
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden, bn_eps=bn_eps)
        self.conv3 = Conv2dBN(hidden, dim, bn_eps=bn_eps, bn_weight_init=0.0)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv2(self.act(self.conv1(x))))
        return self.act(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """1x1 conv, 3x3 depthwise conv with `stride`, 1x1 conv (GELU after the first two).

    ``B x C x H x W`` -> ``B x H' x W' x C'`` (channels-last for the attention stage that
    follows), ``H' = ceil(H / stride)``.
    """

    def __init__(self, dim: int, out_dim: int, stride: int, bn_eps: float) -> None:
        super().__init__()
        self.conv1 = Conv2dBN(dim, out_dim, bn_eps=bn_eps)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim, bn_eps=bn_eps)
        self.conv3 = Conv2dBN(out_dim, out_dim, bn_eps=bn_eps)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.permute(0, 2, 3, 1)


def attention_bias_index(window: int) -> torch.Tensor:
    """Index of the learned bias of every (query, key) pair of a ``window x window`` window.

    Offsets ``(|dy|, |dx|)`` are numbered in the order the official code meets them, which for
    a square window is ``|dy| * window + |dx|``.

    Returns
    -------
    torch.Tensor
        ``N x N`` int64 with ``N = window ** 2``, values in ``0 .. N - 1``.
    """
    pos = torch.arange(window)
    rows, cols = pos.repeat_interleave(window), pos.repeat(window)  # N, row-major
    dy = (rows[:, None] - rows[None, :]).abs()
    dx = (cols[:, None] - cols[None, :]).abs()
    return dy * window + dx


class TinyViTAttention(nn.Module):
    """Pre-norm multi-head attention inside windows, with a learned bias per offset and head.

    Parameters
    ----------
    dim, num_heads : int
        Width and heads (head width ``dim / num_heads`` for queries, keys and values).
    window : int
        Window side.
    norm_eps : float
        Epsilon of the LayerNorm applied to the tokens first.

    Notes
    -----
    ``qkv`` packs, per head, the query, key and value (``heads x (q, k, v) x Ch``), unlike
    SAM's ViT (``(q, k, v) x heads x Ch``). The official module caches the gathered bias table
    (``ab``) when ``eval()`` is called, so a model put in eval mode before its weights are
    loaded (``build_sam_vit_t(checkpoint)``) keeps the initial zero biases until ``eval()`` is
    called again, as MobileSAM's README does; here the loaded ``attention_biases`` are
    always used.
    """

    def __init__(self, dim: int, num_heads: int, window: int, norm_eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window = window
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.qkv = Linear(dim, 3 * dim)
        self.proj = Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", attention_bias_index(window), persistent=False)

    def bias_table(self, dtype: torch.dtype) -> torch.Tensor:
        """The learned biases of every (query, key) pair, ``heads x N x N`` in `dtype` (gathered
        and cast once, again when the biases change: `cached_derived`)."""
        return cached_derived(self, f"bias_{dtype}", (self.attention_biases,), lambda: (
            self.attention_biases[:, self.attention_bias_idxs].to(dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x H x W x C`` -> ``B x H x W x C``.

        The official module pads the grid with zero tokens before its LayerNorm, so padding
        tokens enter attention as the norm's bias; the projection runs on the unpadded grid
        and the padding gets ``qkv(norm.bias)``.
        """
        b, h, w, c = x.shape
        qkv = self.qkv(self.norm(x))  # B x H x W x 3C
        if (h % self.window) or (w % self.window):
            fill = self.qkv(self.norm.bias.to(qkv.dtype))  # the padding tokens' q, k, v
            windows, padded_hw = window_partition_filled(qkv, self.window, fill)
        else:
            windows, padded_hw = window_partition(qkv, self.window)  # nB x win x win x 3C
        n = self.window * self.window
        # nB x N x heads x (q | k | v) -> 3 x nB x heads x N x Ch
        q, k, v = windows.reshape(-1, n, self.num_heads, 3, self.head_dim).permute(3, 0, 2, 1, 4)
        bias = self.bias_table(q.dtype)  # heads x N x N
        out = attend_bias(q, k, v, bias)  # nB x heads x N x Ch, kernel chosen by measurement
        out = out.transpose(1, 2).reshape(-1, self.window, self.window, c)
        return self.proj(window_unpartition(out, self.window, padded_hw, (h, w)))


class TinyViTMlp(nn.Module):
    """``fc2(GELU(fc1(LayerNorm(x))))``, channels last."""

    def __init__(self, dim: int, hidden: int, norm_eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), depthwise conv (no residual), MLP (residual).

    ``B x H x W x C`` -> ``B x H x W x C``.
    """

    def __init__(self, cfg: TinyViTConfig, stage: int) -> None:
        super().__init__()
        dim = cfg.embed_dims[stage]
        self.attn = TinyViTAttention(dim, cfg.num_heads[stage], cfg.window_sizes[stage],
                                     cfg.norm_eps)
        self.mlp = TinyViTMlp(dim, int(dim * cfg.mlp_ratio), cfg.norm_eps)
        k = cfg.local_conv_size
        self.local_conv = Conv2dBN(dim, dim, k, 1, k // 2, groups=dim, bn_eps=cfg.bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class TinyViTStage(nn.Module):
    """The blocks of one stage and the PatchMerging after it (none after the last stage).

    Stage 0 (MBConv) works on ``B x C x H x W``; later stages on ``B x H x W x C``. The
    output is ``B x H' x W' x C'`` (channels last) for every stage.
    """

    def __init__(self, cfg: TinyViTConfig, stage: int) -> None:
        super().__init__()
        dim = cfg.embed_dims[stage]
        self.channels_last_input = stage > 0
        self.blocks = nn.ModuleList(
            MBConv(dim, cfg.mbconv_expand_ratio, cfg.bn_eps) if stage == 0
            else TinyViTBlock(cfg, stage)
            for _ in range(cfg.depths[stage])
        )
        last = stage == len(cfg.embed_dims) - 1
        self.downsample = None if last else PatchMerging(
            dim, cfg.embed_dims[stage + 1], cfg.merge_strides[stage], cfg.bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is None:
            return x if self.channels_last_input else x.permute(0, 2, 3, 1)
        return self.downsample(x.permute(0, 3, 1, 2) if self.channels_last_input else x)


class ImageEncoderTinyViT(nn.Module):
    """MobileSAM's TinyViT image encoder with SAM's neck.

    Parameters
    ----------
    cfg : TinyViTConfig
        Architecture.

    Notes
    -----
    Input ``B x 3 x S x S`` (normalised, padded), output ``B x out_chans x G x G`` with
    ``G = cfg.grid_size``.
    """

    def __init__(self, cfg: TinyViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.img_size = cfg.image_size
        self.patch_embed = PatchEmbed(cfg)
        self.layers = nn.ModuleList(TinyViTStage(cfg, i) for i in range(len(cfg.embed_dims)))
        last = cfg.embed_dims[-1]
        # The ImageNet classifier of the official module: in the checkpoints, never used here.
        self.norm_head = nn.LayerNorm(last, eps=cfg.norm_eps)
        self.head = nn.Linear(last, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.neck = nn.Sequential(
            nn.Conv2d(last, cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_chans, eps=cfg.neck_norm_eps),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans, eps=cfg.neck_norm_eps),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x S x S`` -> ``B x out_chans x G x G``."""
        x = self.patch_embed(x)  # B x C0 x S/4 x S/4
        for layer in self.layers:
            x = layer(x)  # B x H x W x C
        return self.neck(x.permute(0, 3, 1, 2))
