"""Building blocks of FocSAM's FocusRefiner, per window of the embedding grid.

Attribute names follow the official ``refine_head.blocks.{i}.{img2cls,cls2img}`` keys.

Speed (CPU) without changing the parameters or the maths beyond float reordering:

* self-attention runs the q/k/v projections as one GEMM (weights concatenated and cached);
* the appended zero key / value is `napari_focsam.models.common.attend_zero_key`, whose kernel
  is chosen by measurement (the CPU default handles it analytically: it adds ``exp(0)`` to each
  softmax denominator and nothing to the numerator, i.e. it scales the plain attention output
  by ``sigmoid(logsumexp)``);
* a class token attending to a window (few queries, ``k is v``) folds the key projection into
  the query and the value projection behind the attention-weighted token sum, so the window's
  keys and values are never computed;
* P-DyReLU's pixel MLP ``Linear(1, C) -> ReLU -> Linear(C, 2C)`` of a scalar is a piecewise-linear
  function of that scalar with ``C`` breakpoints: it is evaluated from a cached per-interval
  table (slope and value), one fused gather per token instead of a ``C x 2C`` GEMM, and its
  tanh is computed as ``2 sigmoid(2u) - 1``.

Under autocast the token projections, the attention and the deformable convolution run in the
autocast dtype; the class-token path, the norms, P-DyReLU and the residuals stay float32.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..common import (
    attend_zero_key,
    autocast_dtype,
    cached_derived,
    merge_heads,
    needs_grad,
    no_autocast,
    split_heads,
)
from .deform_conv import DeformLayer

logger = logging.getLogger(__name__)

#: Windows whose attention and P-DyReLU run together: big enough for efficient GEMMs, small
#: enough for the intermediates to stay in the CPU cache and be recycled by the allocator.
ATTENTION_CHUNK_WINDOWS = 4


def window_chunks(n: int, per_chunk: int = ATTENTION_CHUNK_WINDOWS) -> list[slice]:
    """``n`` windows split into ``ceil(n / per_chunk)`` consecutive chunks of (nearly) equal size."""
    count = max(1, -(-n // per_chunk))
    bounds = [i * n // count for i in range(count + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class ZeroKeyAttention(nn.Module):
    """Multi-head attention to which an all-zero key and value are appended.

    The extra key gives every query a "sink" with logit 0 and value 0, so a query can attend
    to nothing. Scale ``head_dim ** -0.5``, no mask.

    Parameters
    ----------
    embed_dim, num_heads : int
        Width and heads (q/k/v/proj are ``embed_dim -> embed_dim`` with bias).
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``B x Nq x C``, ``B x Nk x C``, ``B x Nk x C`` -> ``B x Nq x C``.

        Self-attention (``q is k is v``) and few-query attention with ``k is v`` take the fast
        paths of the module notes; the result is the same up to float rounding.
        """
        if q is k and k is v:
            return self.self_attention(q)
        if k is v and self.num_heads * q.shape[1] < q.shape[-1]:
            return self.folded_attention(q, k)
        heads = self.num_heads
        q, k, v = (split_heads(p(t), heads) for p, t in ((self.q_proj, q), (self.k_proj, k),
                                                          (self.v_proj, v)))
        return self.proj(merge_heads(attend_zero_key(q, k, v)))

    def _fused_qkv(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """q/k/v weights ``3C x C`` and biases ``3C`` stacked, in ``dtype`` (cached)."""
        params = (self.q_proj.weight, self.k_proj.weight, self.v_proj.weight,
                  self.q_proj.bias, self.k_proj.bias, self.v_proj.bias)
        return cached_derived(self, f"qkv_{dtype}", params,
                              lambda: (torch.cat(params[:3]).to(dtype), torch.cat(params[3:]).to(dtype)))

    def self_attention(self, x: torch.Tensor) -> torch.Tensor:
        """``B x N x C`` -> ``B x N x C``, the q/k/v projections as one GEMM (weights cast to the
        autocast dtype once, not per call)."""
        b, n, c = x.shape
        weight, bias = self._fused_qkv(autocast_dtype(x.device) or self.q_proj.weight.dtype)
        qkv = F.linear(x, weight, bias).view(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B x heads x N x Ch
        return self.proj(merge_heads(attend_zero_key(q, k, v)))

    def folded_attention(self, q: torch.Tensor, kv: torch.Tensor | Sequence[torch.Tensor],
                         kv_norm: nn.Module | None = None) -> torch.Tensor:
        """Few queries attending to ``kv`` (keys = values), float32, without projecting ``kv``.

        Per head ``h``: ``logits = (Wk_h^T q_h) . kv + q_h . bk_h``; the output is
        ``Wv_h (sum_t p_t kv_t) + bv_h sum_t p_t``, where ``p`` are the softmax weights of the real
        keys (the zero key takes the rest). Costs ``O(heads * Nq * Nk * C)`` instead of the
        ``O(Nk * C^2)`` of the key / value projections.

        Parameters
        ----------
        q : torch.Tensor
            ``B x Nq x C`` queries (before ``q_proj``).
        kv : torch.Tensor or sequence of torch.Tensor
            ``B x Nk x C`` keys and values (before ``k_proj`` / ``v_proj``), or consecutive
            batch chunks ``Bi x Nk x C`` of them (only one chunk is then normalised at a time).
        kv_norm : nn.Module, optional
            Applied to ``kv`` first (per chunk).

        Returns
        -------
        torch.Tensor
            ``B x Nq x C`` (float32).
        """
        heads = self.num_heads
        b, nq, c = q.shape
        ch = c // heads
        chunks = [kv] if isinstance(kv, torch.Tensor) else list(kv)
        with no_autocast(q.device):
            qh = split_heads(self.q_proj(q.float()), heads) * ch ** -0.5  # B x heads x Nq x Ch
            qk = torch.einsum("bhqd,hdc->bhqc", qh, self.k_proj.weight.view(heads, ch, c))
            qk = qk.reshape(b, heads * nq, c)
            qb = torch.einsum("bhqd,hd->bhq", qh, self.k_proj.bias.view(heads, ch))
            qb = qb.reshape(b, heads * nq, 1)
            sums, weights, start = [], [], 0
            for chunk in chunks:
                part = slice(start, start + chunk.shape[0])
                start = part.stop
                chunk = chunk.float() if kv_norm is None else kv_norm(chunk.float())
                logits = torch.baddbmm(qb[part], qk[part], chunk.transpose(1, 2))
                top = logits.amax(dim=-1, keepdim=True).clamp(min=0)  # the zero key's logit is 0
                p = (logits - top).exp()
                p = p / (p.sum(dim=-1, keepdim=True) + (-top).exp())  # Bi x (heads * Nq) x Nk
                sums.append(torch.bmm(p, chunk))  # Bi x (heads * Nq) x C
                weights.append(p.sum(dim=-1))
            if start != b:
                raise ValueError(f"kv chunks cover {start} of the {b} queries' batch")
            z = (sums[0] if len(sums) == 1 else torch.cat(sums)).view(b, heads, nq, c)
            total = (weights[0] if len(weights) == 1 else torch.cat(weights)).view(b, heads, nq, 1)
            out = torch.einsum("bhqc,hdc->bhqd", z, self.v_proj.weight.view(heads, ch, c))
            out = out + self.v_proj.bias.view(1, heads, 1, ch) * total
            return self.proj(merge_heads(out))


class CrossAttentionBlock(nn.Module):
    """The window's class token reads the window's image tokens (``img2cls``).

    ``u = cls + gamma1 * Attn(LN_q(cls), LN_kv(t), LN_kv(t))``;
    ``out = u + gamma2 * MLP(LN(u))``. Runs in float32 (autocast off): the class token is
    carried through all blocks.

    Parameters
    ----------
    embed_dim, num_heads, mlp_dim : int
        Width, heads and MLP hidden width.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(embed_dim)
        self.norm_kv = nn.LayerNorm(embed_dim)
        self.attn = ZeroKeyAttention(embed_dim, num_heads)
        self.gamma1 = nn.Parameter(torch.ones(embed_dim))
        self.norm = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, embed_dim))
        self.gamma2 = nn.Parameter(torch.ones(embed_dim))

    def forward(self, cls: torch.Tensor, tokens: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``cls`` ``N x 1 x C`` and window tokens ``N x T x C`` -> ``N x 1 x C`` (float32).

        ``tokens`` may also be consecutive chunks ``Ni x T x C`` of the windows.
        """
        with no_autocast(cls.device):
            cls = cls.float()
            if isinstance(tokens, torch.Tensor):
                kv = self.norm_kv(tokens.float())
                attn = self.attn(self.norm_q(cls), kv, kv)
            else:
                attn = self.attn.folded_attention(self.norm_q(cls), tokens, kv_norm=self.norm_kv)
            x = cls + self.gamma1 * attn
            return x + self.gamma2 * self.mlp(self.norm(x))


def _pixel_table(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                 factor: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-interval form of ``s -> factor * (w2 @ relu(w1 * s + b1) + b2)`` (scalar ``s``),
    float64 maths.

    Hidden unit ``i`` switches at ``t_i = -b1_i / w1_i``; between consecutive sorted switch
    points the map is affine. Interval ``k`` (``k`` switch points below ``s``) is stored as a
    slope ``A_k`` and the value ``D_k`` at an anchor ``c_k`` inside it (the midpoint; the end
    point for the two unbounded intervals), so ``f(s) = A_k (s - c_k) + D_k`` stays accurate
    (no cancellation of large terms).

    Parameters
    ----------
    w1, b1 : torch.Tensor
        ``H``: first layer (``Linear(1, H)``) weight column and bias.
    w2, b2 : torch.Tensor
        ``M x H`` and ``M``: second layer.
    factor : float
        Scales the result (a power of two keeps it exact).

    Returns
    -------
    table : torch.Tensor
        ``2 (m + 1) x M`` float32: slopes (rows ``0..m``) then values (rows ``m+1..2m+1``);
        ``m`` is the number of units with ``w1 != 0``.
    breaks : torch.Tensor
        ``m`` sorted switch points, float32.
    anchors : torch.Tensor
        ``m + 1`` anchors, float32 (exactly the values the table was computed at).
    """
    w1, b1, w2, b2 = (t.detach().double() for t in (w1, b1, w2, b2))
    moving = w1 != 0
    const = w2[:, ~moving] @ b1[~moving].clamp(min=0) + b2  # units that never switch
    w1, b1, w2 = w1[moving], b1[moving], w2[:, moving]
    breaks, order = (-b1 / w1).sort()
    w1, b1, w2 = w1[order], b1[order], w2[:, order]
    m = breaks.numel()
    interval = torch.arange(m + 1, dtype=torch.int64)[:, None]
    rank = torch.arange(m, dtype=torch.int64)[None]
    # a unit with w1 > 0 is on above its switch point, with w1 < 0 below it
    active = torch.where(w1 > 0, rank < interval, rank >= interval).double()  # (m+1) x m
    if m:
        anchors = torch.cat([breaks[:1], (breaks[:-1] + breaks[1:]) / 2, breaks[-1:]])
    else:
        anchors = breaks.new_zeros(1)
    anchors = anchors.float().double()  # the float32 anchors the lookup subtracts, exactly
    slope = (active * w1) @ w2.T
    value = (active * (w1 * anchors[:, None] + b1)) @ w2.T + const
    return (factor * torch.cat([slope, value])).float(), breaks.float(), anchors.float()


class PDyReLU(nn.Module):
    """Prompt-conditioned dynamic ReLU: the max of a pixel-wise and a channel-wise affine map.

    Pixel branch: ``s = x . cls`` per token, ``theta = tanh(MLP(s)) * exp(pixel_scale) +
    pixel_bias`` (1 -> C -> 2C). Channel branch: the same on the token mean (C -> C -> 2C).
    Each ``theta`` gives slopes (first C) and offsets (last C); the output is the elementwise
    max of the two affine maps. Float32 throughout (autocast off).

    Parameters
    ----------
    channels : int
        ``C``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.pixel_scale = nn.Parameter(torch.zeros(2 * channels))
        self.pixel_bias = nn.Parameter(torch.zeros(2 * channels))
        self.pixel_mlp = nn.Sequential(nn.Linear(1, channels), nn.ReLU(),
                                       nn.Linear(channels, 2 * channels), nn.Tanh())
        self.channel_scale = nn.Parameter(torch.zeros(2 * channels))
        self.channel_bias = nn.Parameter(torch.zeros(2 * channels))
        self.channel_mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(),
                                         nn.Linear(channels, 2 * channels), nn.Tanh())

    def pixel_table(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cached :func:`_pixel_table` of ``2 * pixel_mlp`` before its tanh (on its device)."""
        first, second = self.pixel_mlp[0], self.pixel_mlp[2]
        params = (first.weight, first.bias, second.weight, second.bias)

        def build() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            device = first.weight.device
            table = _pixel_table(*(p.cpu() for p in (first.weight[:, 0], *params[1:])), factor=2.0)
            return tuple(t.to(device) for t in table)  # type: ignore[return-value]

        return cached_derived(self, "pixel_table", params, build)

    def pixel_preact_twice(self, s: torch.Tensor) -> torch.Tensor:
        """Twice ``pixel_mlp`` before its tanh, ``... x 1`` float32 -> ``... x 2C``.

        Exact piecewise-linear evaluation (one fused gather per value) where autograd does not
        need the MLP's weights; the MLP itself otherwise.
        """
        first, second = self.pixel_mlp[0], self.pixel_mlp[2]
        if needs_grad(*self.pixel_mlp.parameters()):
            return 2 * second(F.relu(first(s)))
        table, breaks, anchors = self.pixel_table()
        flat = s.reshape(-1)
        k = torch.searchsorted(breaks, flat)  # intervals
        index = torch.stack((k, k + anchors.numel()), dim=1)
        weight = torch.stack((flat - anchors[k], torch.ones_like(flat)), dim=1)
        out = F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")
        return out.view(*s.shape[:-1], table.shape[1])

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Tokens ``N x T x C`` conditioned on ``cls`` ``N x 1 x C`` -> ``N x T x C`` (float32).

        The pixel branch uses ``tanh(u) = 2 sigmoid(2u) - 1`` (sigmoid is several times faster
        than tanh on CPUs), folded into its scale and bias.
        """
        c = self.channels
        with no_autocast(x.device):
            x, cls = x.float(), cls.float()
            gate = self.pixel_preact_twice(torch.bmm(x, cls.transpose(-1, -2))).sigmoid_()  # N x T x 2C
            scale = self.pixel_scale.exp()
            pixel = torch.addcmul(self.pixel_bias - scale, gate, 2 * scale)
            channel = self.channel_mlp(x.mean(dim=1, keepdim=True))  # N x 1 x 2C
            channel = torch.addcmul(self.channel_bias, channel, self.channel_scale.exp())
            pixel_act = torch.addcmul(pixel[..., c:], pixel[..., :c], x)
            channel_act = torch.addcmul(channel[..., c:], channel[..., :c], x)
            return torch.maximum(pixel_act, channel_act)


class MSAModule(nn.Module):
    """Window self-attention, P-DyReLU and a deformable convolution (``cls2img``).

    ``a = PDyReLU(LN(Attn(t, t, t)), LN(Linear(cls)))``; ``y = x + gamma1 * a``;
    ``out = x + gamma2 * ReLU(GroupNorm(DCN(y)))`` (both residuals to the input ``x``).

    Parameters
    ----------
    embed_dim, num_heads : int
        Width and heads.
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.cls_proj = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.LayerNorm(embed_dim))
        self.attn = ZeroKeyAttention(embed_dim, num_heads)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.relu1 = PDyReLU(embed_dim)
        self.conv2 = DeformLayer(embed_dim, embed_dim)
        self.norm2 = nn.GroupNorm(1, embed_dim)
        self.gamma1 = nn.Parameter(torch.ones(1, embed_dim, 1, 1))
        self.gamma2 = nn.Parameter(torch.ones(1, embed_dim, 1, 1))

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Windows ``N x C x h x w`` with their class tokens ``N x 1 x C`` -> ``N x C x h x w``
        (float32, channels-last memory)."""
        n, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
        return self.forward_tokens(tokens, (h, w), cls).view(n, h, w, c).permute(0, 3, 1, 2)

    def forward_tokens(self, tokens: torch.Tensor, hw: tuple[int, int],
                       cls: torch.Tensor) -> torch.Tensor:
        """The module on windows as token rows: :meth:`mix` and :meth:`finish` per chunk of
        windows around one deformable convolution of all of them.

        Parameters
        ----------
        tokens : torch.Tensor
            ``N x (h*w) x C``, row-major within each ``h x w`` window.
        hw : tuple of int
            ``(h, w)`` of the windows.
        cls : torch.Tensor
            ``N x 1 x C`` class tokens.

        Returns
        -------
        torch.Tensor
            ``N x (h*w) x C`` float32.
        """
        chunks = window_chunks(tokens.shape[0])
        parts = [self.mix(tokens[p], cls[p]) for p in chunks]
        y = parts[0] if len(parts) == 1 else torch.cat(parts)
        d = self.deform(y, hw)
        parts = [self.finish(tokens[p], d[p]) for p in chunks]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def mix(self, tokens: torch.Tensor, cls: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``y = x + gamma1 * PDyReLU(LN(Attn(x, x, x)), LN(Linear(cls)))``.

        Parameters
        ----------
        tokens : torch.Tensor
            ``N x T x C`` windows.
        cls : torch.Tensor
            ``N x 1 x C`` class tokens.
        out : torch.Tensor, optional
            ``N x T x C`` float32 buffer to write the result into (not while autograd records).

        Returns
        -------
        torch.Tensor
            ``N x T x C`` float32.
        """
        c = tokens.shape[-1]
        a = self.attn(tokens, tokens, tokens)  # autocast dtype, if any
        with no_autocast(tokens.device):
            a = self.relu1(self.norm1(a.float()), self.cls_proj(cls.float()))
            return torch.addcmul(tokens.float(), self.gamma1.view(1, 1, c), a, out=out)

    def deform(self, y: torch.Tensor, hw: tuple[int, int], out: torch.Tensor | None = None) -> torch.Tensor:
        """``DCN(y)`` of windows as token rows, ``N x T x C`` -> ``N x T x C`` (``conv2``, called
        as a module; autocast dtype, if any).

        Parameters
        ----------
        y : torch.Tensor
            ``N x (h*w) x C``.
        hw : tuple of int
            ``(h, w)``.
        out : torch.Tensor, optional
            ``N x h x w x C`` contiguous buffer of the result's dtype to write into.

        Returns
        -------
        torch.Tensor
            ``N x (h*w) x C``.
        """
        n, t, c = y.shape
        d = self.conv2(y.view(n, *hw, c).permute(0, 3, 1, 2), out=out)  # N x C x h x w, channels-last
        return d.permute(0, 2, 3, 1).reshape(n, t, -1)

    def finish(self, tokens: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``out = x + gamma2 * ReLU(GroupNorm(d))`` for windows ``N x T x C`` and their
        convolved ``d`` (``N x T x C``) -> ``N x T x C`` float32."""
        n, t, c = tokens.shape
        with no_autocast(tokens.device):
            d = d.float().reshape(n, t, 1, c).permute(0, 3, 1, 2)  # N x C x T x 1, channels-last
            g = F.relu(self.norm2(d)).permute(0, 2, 3, 1).reshape(n, t, c)
            return torch.addcmul(tokens.float(), self.gamma2.view(1, 1, c), g)
