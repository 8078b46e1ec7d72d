"""ViT image encoder of SAM (ViTDet backbone with windowed and global attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common import LayerNorm2d, Linear, MLPBlock, attend, attend_rel_pos
from .config import ViTEncoderConfig


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split a token grid into non-overlapping windows, zero-padding bottom/right.

    Parameters
    ----------
    x : torch.Tensor
        Tokens, ``B x H x W x C``.
    window : int
        Window side.

    Returns
    -------
    windows : torch.Tensor
        ``(B * nWh * nWw) x window x window x C``.
    padded_hw : tuple of int
        Grid size after padding ``(Hp, Wp)``.
    """
    b, h, w, c = x.shape
    pad_h, pad_w = -h % window, -w % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.transpose(2, 3).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`, dropping the padding.

    Parameters
    ----------
    windows : torch.Tensor
        ``(B * nWh * nWw) x window x window x C``.
    window : int
        Window side.
    padded_hw, hw : tuple of int
        Padded and original grid sizes.

    Returns
    -------
    torch.Tensor
        ``B x H x W x C``.
    """
    hp, wp = padded_hw
    h, w = hw
    nh, nw = hp // window, wp // window
    b = windows.shape[0] // (nh * nw)
    x = windows.view(b, nh, nw, window, window, -1).transpose(2, 3).reshape(b, hp, wp, -1)
    # contiguous: a strided input would make the next Linear expand its weight per row
    return x[:, :h, :w].contiguous() if (hp > h or wp > w) else x


def window_partition_filled(x: torch.Tensor, window: int,
                            fill: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Padding bottom / right to whole windows with the token `fill`, then
    :func:`window_partition`, in one pass over ``x``.

    Parameters
    ----------
    x : torch.Tensor
        ``B x H x W x C``.
    window : int
        Window side.
    fill : torch.Tensor
        ``C`` values of the padding token (bottom / right).

    Returns
    -------
    windows : torch.Tensor
        ``(B * nWh * nWw) x window x window x C``, contiguous.
    padded_hw : tuple of int
        ``(Hp, Wp)``.
    """
    b, h, w, c = x.shape
    nh, nw = -(-h // window), -(-w // window)
    if (nh * window, nw * window) == (h, w):
        return window_partition(x, window)
    out = x.new_empty(b, nh, nw, window, window, c)
    grid = out.permute(0, 1, 3, 2, 4, 5)  # B x nWh x win x nWw x win x C: the padded grid
    fh, fw = h // window, w // window  # whole windows
    rh, rw = h - fh * window, w - fw * window  # rows / columns of the partial ones
    fill = fill.to(x.dtype)
    if rh:
        grid[:, fh, rh:] = fill  # the padding rows
    if rw:
        grid[:, :, :, fw, rw:] = fill  # the padding columns
    grid[:, :fh, :, :fw] = x[:, :fh * window, :fw * window].view(b, fh, window, fw, window, c)
    if rh:
        grid[:, fh, :rh, :fw] = x[:, fh * window:, :fw * window].view(b, rh, fw, window, c)
    if rw:
        grid[:, :fh, :, fw, :rw] = x[:, :fh * window, fw * window:].view(b, fh, window, rw, c)
    if rh and rw:
        grid[:, fh, :rh, fw, :rw] = x[:, fh * window:, fw * window:]
    return out.view(-1, window, window, c), (nh * window, nw * window)


def relative_position_table(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings for every (query, key) pair along one axis.

    Parameters
    ----------
    q_size, k_size : int
        Query and key lengths along the axis.
    rel_pos : torch.Tensor
        Learned table ``L x C``; linearly resampled when ``L != 2 * max(q, k) - 1``.

    Returns
    -------
    torch.Tensor
        ``q_size x k_size x C``.
    """
    length = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(rel_pos.t()[None], size=length, mode="linear")[0].t()
    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    q_pos = torch.arange(q_size, device=rel_pos.device)[:, None] * q_scale
    k_pos = torch.arange(k_size, device=rel_pos.device)[None, :] * k_scale
    index = (q_pos - k_pos + (k_size - 1) * k_scale).long()
    return rel_pos[index]


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    table_h: torch.Tensor,
    table_w: torch.Tensor,
    q_hw: tuple[int, int],
    k_hw: tuple[int, int],
) -> torch.Tensor:
    """Additive attention bias of decomposed relative positions (MViTv2), materialised.

    ``bias[q, k] = <q, T_h[q_row, k_row]> + <q, T_w[q_col, k_col]>``. The encoder passes the
    two terms (:func:`decomposed_rel_pos_terms`) to `napari_focsam.models.common.attend_rel_pos`
    instead, whose kernels materialise the bias per chunk of queries or not at all.

    Parameters
    ----------
    q : torch.Tensor
        Unscaled queries of ``qh`` whole grid rows, ``B x heads x (qh * qw) x C``.
    table_h, table_w : torch.Tensor
        Per-pair tables from :func:`relative_position_table` for those query rows,
        ``qh x kh x C`` and ``qw x kw x C``.
    q_hw, k_hw : tuple of int
        Query and key grid sizes.

    Returns
    -------
    torch.Tensor
        ``B x heads x (qh * qw) x (kh * kw)``, dtype of ``q``.
    """
    (qh, qw), (kh, kw) = q_hw, k_hw
    rel_h, rel_w = decomposed_rel_pos_terms(q, table_h, table_w, q_hw)
    bias = rel_h[..., :, None] + rel_w[..., None, :]
    return bias.reshape(*q.shape[:2], qh * qw, kh * kw)


def decomposed_rel_pos_terms(
    q: torch.Tensor,
    table_h: torch.Tensor,
    table_w: torch.Tensor,
    q_hw: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of :func:`decomposed_rel_pos_bias`, not yet summed over the key grid.

    Parameters
    ----------
    q : torch.Tensor
        Unscaled queries of a ``qh x qw`` grid, ``B x heads x (qh * qw) x C``.
    table_h, table_w : torch.Tensor
        ``qh x kh x C`` and ``qw x kw x C`` from :func:`relative_position_table`.
    q_hw : tuple of int
        Query grid size.

    Returns
    -------
    rel_h, rel_w : torch.Tensor
        ``B x heads x (qh * qw) x kh`` and ``B x heads x (qh * qw) x kw`` in ``q``'s dtype:
        ``bias[.., i, (r, c)] = rel_h[.., i, r] + rel_w[.., i, c]``
        (`napari_focsam.models.common.attend_rel_pos`).
    """
    qh, qw = q_hw
    b, heads, _, c = q.shape
    grid = q.reshape(b, heads, qh, qw, c)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid, table_h.to(q.dtype))
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid, table_w.to(q.dtype))
    return rel_h.reshape(b, heads, qh * qw, -1), rel_w.reshape(b, heads, qh * qw, -1)


class Attention(nn.Module):
    """Multi-head self-attention over a token grid with decomposed rel-pos bias.

    Parameters
    ----------
    dim, num_heads : int
        Width and heads.
    qkv_bias : bool
        Bias on the fused qkv projection.
    use_rel_pos : bool
        Add the decomposed relative-position bias.
    input_size : tuple of int
        Grid the rel-pos tables are sized for.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, use_rel_pos: bool,
                 input_size: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor, window: int = 0) -> torch.Tensor:
        """Attend globally (``window == 0``) or within ``window x window`` windows.

        ``B x H x W x C`` -> ``B x H x W x C``. Windows pad the grid bottom/right; as in the
        official model the padding tokens take part in attention as zero inputs, i.e. their
        q/k/v are the qkv bias, so the projection runs on the unpadded grid only.
        """
        b, h, w, c = x.shape
        qkv = self.qkv(x)  # B x H x W x 3C
        if window:
            bias = self.qkv.bias if self.qkv.bias is not None else qkv.new_zeros(3 * c)
            windows, padded_hw = window_partition_filled(qkv, window, bias)  # nB x win x win x 3C
            out = window_unpartition(self._attend(windows), window, padded_hw, (h, w))
        else:
            out = self._attend(qkv)
        return self.proj(out)

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """Multi-head attention within each grid, ``B x H x W x 3C`` -> ``B x H x W x C``.

        The kernel is chosen by measurement (`napari_focsam.models.kernels`): op
        ``"attention_rel_pos"`` with the rel-pos bias, ``"attention"`` without.
        """
        b, h, w, c3 = qkv.shape
        # B x N x 3 x heads x Ch -> 3 x B x heads x N x Ch
        q, k, v = qkv.reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.use_rel_pos:
            table_h = relative_position_table(h, h, self.rel_pos_h)
            table_w = relative_position_table(w, w, self.rel_pos_w)
            rel_h, rel_w = decomposed_rel_pos_terms(q, table_h, table_w, (h, w))
            out = attend_rel_pos(q, k, v, rel_h, rel_w)
        else:
            out = attend(q, k, v)
        return out.transpose(1, 2).reshape(b, h, w, c3 // 3)  # B x heads x N x Ch -> B x H x W x C


class Block(nn.Module):
    """Pre-norm transformer block with window (``window > 0``) or global attention."""

    def __init__(self, cfg: ViTEncoderConfig, window: int) -> None:
        super().__init__()
        grid = cfg.grid_size
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = Attention(
            cfg.embed_dim, cfg.num_heads, cfg.qkv_bias, cfg.use_rel_pos,
            input_size=(window, window) if window else (grid, grid),
        )
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = MLPBlock(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio), nn.GELU)
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x H x W x C`` -> ``B x H x W x C``."""
        x = x + self.attn(self.norm1(x), self.window)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection, ``B x 3 x S x S`` -> ``B x S/p x S/p x C``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a channels-last input makes the conv write B x S/p x S/p x C directly: the tokens are
        # contiguous, so the blocks' norms and residual sums need no layout copies
        return self.proj(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """SAM's ViT image encoder.

    Parameters
    ----------
    cfg : ViTEncoderConfig
        Architecture.

    Notes
    -----
    Input ``B x 3 x S x S`` (normalised, padded), output ``B x out_chans x S/p x S/p``.
    """

    def __init__(self, cfg: ViTEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.img_size = cfg.image_size
        grid = cfg.grid_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, grid, grid, cfg.embed_dim)) if cfg.use_abs_pos else None
        )
        self.blocks = nn.ModuleList(
            Block(cfg, 0 if i in cfg.global_attn_indexes else cfg.window_size)
            for i in range(cfg.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x S x S`` -> ``B x out_chans x S/p x S/p``."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
