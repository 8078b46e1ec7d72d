"""Hiera trunk of SAM 2 (hierarchical ViT with windowed / global attention and query pooling).

Parameter names follow the official ``sam2.modeling.backbones.hieradet.Hiera`` so the
``image_encoder.trunk.*`` entries of an official checkpoint load unchanged:
``patch_embed.proj.*``, ``pos_embed``, ``pos_embed_window``, ``blocks.{i}.norm1``,
``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.proj``, ``blocks.{i}.norm2``,
``blocks.{i}.mlp.layers.{0,1}`` and, where the width changes, ``blocks.{i}.proj``.

Tokens travel as ``B x H x W x C`` tensors. As in the official code, windows pad the grid
bottom/right with zero tokens *after* ``norm1``; those padding tokens take part in attention
(their q/k/v are the qkv bias) and in the per-window query max-pooling.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..common import Linear, attend
from ..sam.image_encoder import window_partition
from .config import HieraBlockSpec, HieraConfig

logger = logging.getLogger(__name__)


def max_pool_tokens(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Max-pool a token grid with kernel = stride (``nn.MaxPool2d(stride, stride)`` semantics).

    Trailing rows/columns that do not fill a whole cell are dropped (``ceil_mode=False``).

    Parameters
    ----------
    x : torch.Tensor
        ``B x H x W x C`` tokens; may be a strided view (e.g. the query slice of a qkv tensor).
    stride : tuple of int
        ``(sh, sw)``.

    Returns
    -------
    torch.Tensor
        ``B x H//sh x W//sw x C``, contiguous.
    """
    b, h, w, c = x.shape
    sh, sw = stride
    ho, wo = h // sh, w // sw
    if (ho * sh, wo * sw) != (h, w):
        x = x[:, : ho * sh, : wo * sw]
    if x.is_contiguous():
        # channels-last max_pool2d is the fastest path for a dense grid
        return F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=stride, stride=stride).permute(0, 2, 3, 1)
    # strided input (e.g. the query slice of qkv): elementwise maxima avoid a dense copy first
    rows = x.unflatten(1, (ho, sh))
    out = rows[:, :, 0]
    for j in range(1, sh):
        out = torch.maximum(out, rows[:, :, j])
    cols = out.unflatten(2, (wo, sw))
    out = cols[:, :, :, 0]
    for j in range(1, sw):
        out = torch.maximum(out, cols[:, :, :, j])
    return out.contiguous()  # no-op for the maxima (allocated in grid order)


def window_unpartition_heads(
    out: torch.Tensor, batch: int, grid_windows: tuple[int, int], window: tuple[int, int]
) -> torch.Tensor:
    """Merge attention heads and windows back into one token grid (one copy).

    Parameters
    ----------
    out : torch.Tensor
        Attention output ``(B * nWh * nWw) x heads x (wh * ww) x Ch``.
    batch : int
        ``B``.
    grid_windows : tuple of int
        Windows per column and row ``(nWh, nWw)``.
    window : tuple of int
        Window size ``(wh, ww)`` of ``out``.

    Returns
    -------
    torch.Tensor
        ``B x (nWh * wh) x (nWw * ww) x (heads * Ch)``, padding included.
    """
    nh, nw = grid_windows
    wh, ww = window
    heads, ch = out.shape[1], out.shape[3]
    x = out.view(batch, nh, nw, heads, wh, ww, ch)
    # B, nWh, win_y, nWw, win_x, heads, Ch
    return x.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, nh * wh, nw * ww, heads * ch)


class PatchEmbed(nn.Module):
    """Overlapping patch embedding, ``B x 3 x S x S`` -> ``B x S/4 x S/4 x C`` (7x7 conv, stride 4)."""

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_kernel_size,
                              stride=cfg.patch_stride, padding=cfg.patch_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x C_in x H x W`` -> ``B x H' x W' x C`` (contiguous)."""
        # a channels-last input makes the conv write B x H' x W' x C directly (and runs ~2x faster
        # on CPU than the NCHW conv followed by a transposing copy)
        y = self.proj(x.contiguous(memory_format=torch.channels_last))
        return y.permute(0, 2, 3, 1).contiguous()


class HieraMLP(nn.Module):
    """Two linear layers with GELU between (official ``MLP`` with ``layers.{0,1}``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Linear(dim, hidden_dim), Linear(hidden_dim, dim)])
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``... x C`` -> ``... x C``."""
        return self.layers[1](self.act(self.layers[0](x)))


class MultiScaleAttention(nn.Module):
    """Multi-head attention over windows or the whole grid, with optional query max-pooling.

    Parameters
    ----------
    dim, dim_out : int
        Input and output widths (qkv maps ``dim`` -> ``3 * dim_out``).
    num_heads : int
        Heads.
    q_stride : tuple of int or None
        Pool the queries by this stride (stage transition).
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None) -> None:
        super().__init__()
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = Linear(dim, dim_out * 3)
        self.proj = Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor, window: int) -> torch.Tensor:
        """Attend within ``window x window`` windows (``window > 0``) or globally.

        Parameters
        ----------
        x : torch.Tensor
            Normalised tokens ``B x H x W x dim``.
        window : int
            Window side on the input grid; 0 = global attention.

        Returns
        -------
        torch.Tensor
            ``B x H' x W' x dim_out`` with ``H' = H // sh`` when pooling, else ``H``. May be a
            non-contiguous view (padding cropped).
        """
        b, h, w, _ = x.shape
        stride = self.q_stride or (1, 1)
        out_hw = (h // stride[0], w // stride[1])
        if window:
            tokens, (hp, wp) = window_partition(x, window)  # (B*nW) x win x win x dim
        else:
            tokens = x
        qkv = self.qkv(tokens)  # B' x gh x gw x 3*dim_out
        bw, gh, gw, _ = qkv.shape
        heads, ch = self.num_heads, self.dim_out // self.num_heads
        parts = qkv.view(bw, gh * gw, 3, heads, ch)
        k = parts[:, :, 1].transpose(1, 2)  # B' x heads x N x Ch
        v = parts[:, :, 2].transpose(1, 2)
        if self.q_stride:
            q = max_pool_tokens(qkv[..., : self.dim_out], self.q_stride)  # B' x gh' x gw' x dim_out
            qh, qw = q.shape[1:3]
            q = q.view(bw, qh * qw, heads, ch).transpose(1, 2)
        else:
            qh, qw = gh, gw
            q = parts[:, :, 0].transpose(1, 2)
        out = attend(q, k, v)  # B' x heads x Nq x Ch
        if window:
            out = window_unpartition_heads(out, b, (hp // window, wp // window),
                                           (window // stride[0], window // stride[1]))
        else:
            out = out.transpose(1, 2).reshape(b, qh, qw, self.dim_out)
        out = self.proj(out)
        if out.shape[1:3] != out_hw:
            out = out[:, : out_hw[0], : out_hw[1]]
        return out


class MultiScaleBlock(nn.Module):
    """Pre-norm Hiera block; at a stage change it widens (``proj``) and may pool the grid.

    Parameters
    ----------
    spec : HieraBlockSpec
        Widths, heads, window and q-pool stride.
    mlp_ratio : float
        MLP hidden width as a multiple of ``dim_out``.
    norm_eps : float
        LayerNorm epsilon.
    """

    def __init__(self, spec: HieraBlockSpec, mlp_ratio: float, norm_eps: float) -> None:
        super().__init__()
        self.dim, self.dim_out = spec.dim, spec.dim_out
        self.window_size = spec.window_size
        self.q_stride = spec.q_stride
        self.norm1 = nn.LayerNorm(spec.dim, eps=norm_eps)
        self.attn = MultiScaleAttention(spec.dim, spec.dim_out, spec.num_heads, spec.q_stride)
        self.norm2 = nn.LayerNorm(spec.dim_out, eps=norm_eps)
        self.mlp = HieraMLP(spec.dim_out, int(spec.dim_out * mlp_ratio))
        if spec.dim != spec.dim_out:
            self.proj = Linear(spec.dim, spec.dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x H x W x dim`` -> ``B x H' x W' x dim_out`` (``H' = H // stride`` when pooling)."""
        normed = self.norm1(x)
        if self.dim != self.dim_out:
            # the official shortcut projects the *normalised* tokens, then pools them
            shortcut = self.proj(normed)
            if self.q_stride:
                shortcut = max_pool_tokens(shortcut, self.q_stride)
        else:
            shortcut = x
        x = shortcut + self.attn(normed, self.window_size)
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """Hiera image trunk.

    Parameters
    ----------
    cfg : HieraConfig
        Architecture.

    Notes
    -----
    ``forward``: ``B x 3 x S x S`` -> list of per-stage features ``B x C_s x S/r_s x S/r_s``,
    highest resolution first (strides 4, 8, 16, 32 when released), or only the last stage when
    ``return_interm_layers`` is False. As in the official code the features are NCHW *views* of
    channels-last data.
    """

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size))
        window0 = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, cfg.embed_dim, window0, window0))
        self.blocks = nn.ModuleList(
            MultiScaleBlock(spec, cfg.mlp_ratio, cfg.norm_eps) for spec in cfg.block_specs
        )
        self.stage_ends = cfg.stage_ends
        self.channel_list = list(cfg.channel_list)
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def _pos_key(self, hw: tuple[int, int], device: torch.device) -> tuple:
        return (hw, device, self.pos_embed.dtype, self.pos_embed._version, self.pos_embed_window._version,
                self.pos_embed.data_ptr(), self.pos_embed_window.data_ptr())

    def get_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """Position embedding of a ``h x w`` patch grid: bicubic background + tiled window embed.

        Parameters
        ----------
        hw : tuple of int
            Patch grid ``(h, w)``.

        Returns
        -------
        torch.Tensor
            ``1 x h x w x C``. Cached per size while gradients are off (the cache key includes the
            parameters' version counters, so loading new weights invalidates it).
        """
        caching = not torch.is_grad_enabled()
        key = self._pos_key(hw, self.pos_embed.device) if caching else None
        if caching and key in self._pos_cache:
            return self._pos_cache[key]
        if not caching:
            return self._make_pos_embed(hw)
        # an ordinary tensor even under inference_mode, so a later no_grad call may reuse it
        with torch.inference_mode(False):
            pos = self._make_pos_embed(hw)
        self._pos_cache.clear()  # one size at a time is the common case; keep memory bounded
        self._pos_cache[key] = pos
        return pos

    def _make_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """Uncached :meth:`get_pos_embed`."""
        h, w = hw
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        wh, ww = win.shape[-2:]
        tiled = win.tile(1, 1, -(-h // wh), -(-w // ww))[..., :h, :w]
        return (pos + tiled).permute(0, 2, 3, 1).contiguous()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``B x 3 x S x S`` -> per-stage ``B x C_s x H_s x W_s`` (highest resolution first)."""
        x = self.patch_embed(x)
        x = x + self.get_pos_embed((x.shape[1], x.shape[2]))
        outputs = []
        last = self.stage_ends[-1]
        ends = set(self.stage_ends)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == last or (i in ends and self.cfg.return_interm_layers):
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
