"""SAM 2 memory attention: current-frame tokens attend to themselves and to an object's memory.

Layout: everything is **batch first**, one batch row per tracked object:

* ``curr`` / ``curr_pos``: ``B x HW x C`` current-frame tokens (row-major over the ``H x W``
  grid, x fastest) — or ``1 x HW x C`` when every object sees the same frame, in which case the
  first layer's self-attention runs once and is broadcast (same numbers, B times less work);
* ``memory`` / ``memory_pos``: ``B x M x Cm`` memory tokens laid out as
  ``[spatial memories (a multiple of HW tokens, frame after frame), object-pointer tokens]``.
  The last ``num_obj_ptr_tokens`` tokens get no rotary encoding; every spatial token ``j`` is
  rotated with the position of grid cell ``j mod HW`` (``rope_k_repeat``).

Objects with different memory lengths are batched by padding each object's spatial part with
whole dummy frames and its pointer part with dummy tokens (so the layout above still holds) and
passing ``memory_key_padding_mask`` (``B x M``, True = padding): the result for each object is
that of running it alone. The official code takes sequence-first tensors (``HW x B x C``); the
computation is the same.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..common import attend, merge_heads, split_heads
from ..sam.transformer import Attention

logger = logging.getLogger(__name__)

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def compute_axial_rope(dim: int, end_x: int, end_y: int, theta: float = 10000.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of SAM 2's 2D axial rotary encoding (official ``compute_axial_cis``).

    Token ``t`` sits at ``(x, y) = (t mod end_x, t div end_x)``. Its ``dim / 2`` rotation
    angles are ``x * f_i`` for the first ``dim / 4`` channel pairs and ``y * f_i`` for the last
    ``dim / 4``, with ``f_i = theta ** (-4 i / dim)``.

    Parameters
    ----------
    dim : int
        Head width (a multiple of 4).
    end_x, end_y : int
        Grid width and height.
    theta : float
        Frequency base.

    Returns
    -------
    cos, sin : torch.Tensor
        ``(end_x * end_y) x dim/2`` float32 each; ``cos + i sin`` equals the official
        complex ``freqs_cis``.
    """
    if dim % 4:
        raise ValueError(f"axial RoPE needs a head width divisible by 4, got {dim}")
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs ``(x[2i], x[2i+1])`` by the given angles, in float32.

    Equals ``view_as_real(view_as_complex(x) * (cos + i sin))`` of the official code.

    Parameters
    ----------
    x : torch.Tensor
        ``... x N x D``.
    cos, sin : torch.Tensor
        ``N x D/2`` (broadcast over the leading dimensions).

    Returns
    -------
    torch.Tensor
        ``... x N x D`` in ``x``'s dtype.
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    re, im = pairs[..., 0], pairs[..., 1]
    out = torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


class RoPEAttention(Attention):
    """Multi-head attention with 2D axial rotary position encoding of queries and keys.

    Parameters
    ----------
    embedding_dim : int
        Query input / output width.
    num_heads : int
        Heads.
    downsample_rate : int
        Projections map to ``embedding_dim // downsample_rate``.
    kv_in_dim : int or None
        Key/value input width (``None``: ``embedding_dim``).
    rope_theta : float
        RoPE frequency base.
    rope_k_repeat : bool
        Keys may be a whole multiple of the queries' length (several memory frames): key ``j``
        is rotated like query ``j mod Nq``.
    feat_sizes : tuple of int
        ``(w, h)`` of the query grid (official order); another query length ``N`` is taken as a
        ``sqrt(N) x sqrt(N)`` grid.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1,
                 kv_in_dim: int | None = None, *, rope_theta: float = 10000.0,
                 rope_k_repeat: bool = False, feat_sizes: tuple[int, int] = (64, 64)) -> None:
        super().__init__(embedding_dim, num_heads, downsample_rate, kv_in_dim)
        self.head_dim = embedding_dim // downsample_rate // num_heads
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = (int(feat_sizes[0]), int(feat_sizes[1]))
        # Not a buffer: kept in float32 whatever dtype the module is cast to.
        self._rope_cache: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def rope_tables(self, num_tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_tokens x head_dim/2`` float32 cos and sin for a query grid of that many tokens."""
        end_x, end_y = self.feat_sizes
        if end_x * end_y != num_tokens:
            side = math.isqrt(num_tokens)
            if side * side != num_tokens:
                raise ValueError(f"{num_tokens} query tokens are neither the {end_x} x {end_y} grid "
                                 "nor a square grid")
            end_x = end_y = side
        key = (end_x, end_y, str(device))
        tables = self._rope_cache.get(key)
        if tables is None:
            cos, sin = compute_axial_rope(self.head_dim, end_x, end_y, self.rope_theta)
            tables = (cos.to(device), sin.to(device))
            self._rope_cache[key] = tables
        return tables

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend with rotary encoding.

        Parameters
        ----------
        q : torch.Tensor
            ``Bq x Nq x C`` queries (a grid of Nq tokens).
        k, v : torch.Tensor
            ``Bk x Nk x Ckv`` keys and values; the batch sizes broadcast (1 or B).
        num_k_exclude_rope : int
            The last ``num_k_exclude_rope`` keys are not rotated (object pointers).
        key_padding_mask : torch.Tensor or None
            ``B x Nk`` bool, True for keys to ignore.

        Returns
        -------
        torch.Tensor
            ``B x Nq x C``.
        """
        heads = self.num_heads
        q = split_heads(self.q_proj(q), heads)  # Bq x h x Nq x D
        k = split_heads(self.k_proj(k), heads)  # Bk x h x Nk x D
        v = split_heads(self.v_proj(v), heads)
        nq, nk = q.shape[-2], k.shape[-2]
        if nk != nq and not self.rope_k_repeat:
            raise ValueError(f"{nk} keys for {nq} queries need rope_k_repeat")
        cos, sin = self.rope_tables(nq, q.device)
        q = apply_rope(q, cos, sin)
        n_rope = nk - num_k_exclude_rope
        if n_rope > 0:
            if n_rope % nq:
                raise ValueError(f"{n_rope} rotated keys are not a whole number of {nq}-token frames")
            k_rope = k[..., :n_rope, :].unflatten(-2, (n_rope // nq, nq))  # Bk x h x r x Nq x D
            k_rope = apply_rope(k_rope, cos, sin).flatten(-3, -2)
            k = torch.cat([k_rope, k[..., n_rope:, :]], dim=-2) if num_k_exclude_rope else k_rope

        b = max(q.shape[0], k.shape[0], v.shape[0])
        q, k, v = (t.expand(b, -1, -1, -1) for t in (q, k, v))
        out = attend(q, k, v, key_padding_mask)
        return self.out_proj(merge_heads(out))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm block: RoPE self-attention, RoPE cross-attention to the memory, feed-forward.

    Parameters
    ----------
    d_model : int
        Token width ``C``.
    dim_feedforward : int
        Feed-forward hidden width.
    kv_in_dim : int
        Memory width ``Cm`` (official ``cross_attention.kv_in_dim``).
    activation : str
        ``"relu"`` or ``"gelu"``.
    pos_enc_at_attn : bool
        Add ``query_pos`` to the self-attention queries and keys.
    pos_enc_at_cross_attn_keys : bool
        Add the memory positions to the cross-attention keys.
    pos_enc_at_cross_attn_queries : bool
        Add ``query_pos`` to the cross-attention queries.
    self_attn_num_heads, self_attn_downsample_rate : int
        Self-attention heads and width reduction.
    cross_attn_num_heads, cross_attn_downsample_rate : int
        Cross-attention heads and width reduction.
    cross_attn_rope_k_repeat : bool
        Memory keys span several frames (official: True).
    rope_theta : float
        RoPE base of both attentions.
    feat_sizes : tuple of int
        ``(w, h)`` of the current-frame grid.
    """

    def __init__(
        self,
        *,
        d_model: int,
        dim_feedforward: int,
        kv_in_dim: int,
        activation: str = "relu",
        pos_enc_at_attn: bool = False,
        pos_enc_at_cross_attn_keys: bool = True,
        pos_enc_at_cross_attn_queries: bool = False,
        self_attn_num_heads: int = 1,
        self_attn_downsample_rate: int = 1,
        cross_attn_num_heads: int = 1,
        cross_attn_downsample_rate: int = 1,
        cross_attn_rope_k_repeat: bool = True,
        rope_theta: float = 10000.0,
        feat_sizes: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.self_attn = RoPEAttention(d_model, self_attn_num_heads, self_attn_downsample_rate,
                                       rope_theta=rope_theta, feat_sizes=feat_sizes)
        self.cross_attn_image = RoPEAttention(d_model, cross_attn_num_heads, cross_attn_downsample_rate,
                                              kv_in_dim=kv_in_dim, rope_theta=rope_theta,
                                              rope_k_repeat=cross_attn_rope_k_repeat, feat_sizes=feat_sizes)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.activation = _ACTIVATIONS[activation]
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        num_k_exclude_rope: int = 0,
        memory_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One layer.

        Parameters
        ----------
        tgt : torch.Tensor
            ``B x HW x C`` (or ``1 x HW x C``) current tokens.
        memory : torch.Tensor
            ``B x M x Cm`` memory tokens.
        pos : torch.Tensor or None
            ``B x M x Cm`` memory positional encoding.
        query_pos : torch.Tensor or None
            ``B x HW x C`` (or ``1 x HW x C``) encoding of the current tokens.
        num_k_exclude_rope : int
            Trailing memory tokens without rotary encoding (object pointers).
        memory_key_padding_mask : torch.Tensor or None
            ``B x M`` bool, True = padding.

        Returns
        -------
        torch.Tensor
            ``B x HW x C``.
        """
        t = self.norm1(tgt)
        q = t + query_pos if self.pos_enc_at_attn else t
        tgt = tgt + self.self_attn(q, q, t)

        t = self.norm2(tgt)
        q = t + query_pos if self.pos_enc_at_cross_attn_queries else t
        k = memory + pos if self.pos_enc_at_cross_attn_keys else memory
        tgt = tgt + self.cross_attn_image(q, k, memory, num_k_exclude_rope, memory_key_padding_mask)

        t = self.norm3(tgt)
        return tgt + self.linear2(self.activation(self.linear1(t)))


class MemoryAttention(nn.Module):
    """Stack of :class:`MemoryAttentionLayer` (``layers.{i}``) and a final LayerNorm (``norm``).

    Parameters
    ----------
    d_model : int
        Token width ``C``.
    num_layers : int
        Layers.
    pos_enc_at_input : bool
        Add ``0.1 * curr_pos`` to the input tokens.
    dim_feedforward, kv_in_dim, activation, pos_enc_at_attn, pos_enc_at_cross_attn_keys, \
pos_enc_at_cross_attn_queries, self_attn_num_heads, self_attn_downsample_rate, \
cross_attn_num_heads, cross_attn_downsample_rate, cross_attn_rope_k_repeat, rope_theta, feat_sizes
        Of every layer, see :class:`MemoryAttentionLayer` (released configs: 2048, 64, relu,
        False, True, False, 1, 1, 1, 1, True, 1e4, (64, 64)).
    """

    def __init__(
        self,
        *,
        d_model: int,
        num_layers: int,
        pos_enc_at_input: bool = True,
        dim_feedforward: int = 2048,
        kv_in_dim: int = 64,
        activation: str = "relu",
        pos_enc_at_attn: bool = False,
        pos_enc_at_cross_attn_keys: bool = True,
        pos_enc_at_cross_attn_queries: bool = False,
        self_attn_num_heads: int = 1,
        self_attn_downsample_rate: int = 1,
        cross_attn_num_heads: int = 1,
        cross_attn_downsample_rate: int = 1,
        cross_attn_rope_k_repeat: bool = True,
        rope_theta: float = 10000.0,
        feat_sizes: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.pos_enc_at_input = pos_enc_at_input
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(
                d_model=d_model, dim_feedforward=dim_feedforward, kv_in_dim=kv_in_dim,
                activation=activation, pos_enc_at_attn=pos_enc_at_attn,
                pos_enc_at_cross_attn_keys=pos_enc_at_cross_attn_keys,
                pos_enc_at_cross_attn_queries=pos_enc_at_cross_attn_queries,
                self_attn_num_heads=self_attn_num_heads, self_attn_downsample_rate=self_attn_downsample_rate,
                cross_attn_num_heads=cross_attn_num_heads,
                cross_attn_downsample_rate=cross_attn_downsample_rate,
                cross_attn_rope_k_repeat=cross_attn_rope_k_repeat, rope_theta=rope_theta,
                feat_sizes=feat_sizes,
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        curr: torch.Tensor,
        memory: torch.Tensor,
        curr_pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        num_obj_ptr_tokens: int = 0,
        memory_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Condition the current frame's tokens on each object's memory.

        Parameters
        ----------
        curr : torch.Tensor
            ``B x HW x C`` current-frame tokens, or ``1 x HW x C`` shared by all B objects.
        memory : torch.Tensor
            ``B x M x Cm``: spatial memory tokens (whole frames of HW tokens), then
            ``num_obj_ptr_tokens`` object-pointer tokens.
        curr_pos : torch.Tensor or None
            ``B x HW x C`` or ``1 x HW x C`` positional encoding of ``curr``.
        memory_pos : torch.Tensor or None
            ``B x M x Cm`` positional (spatial + temporal) encoding of ``memory``.
        num_obj_ptr_tokens : int
            Trailing pointer tokens (excluded from RoPE); with padding, the padded pointer
            count.
        memory_key_padding_mask : torch.Tensor or None
            ``B x M`` bool, True where a memory token is padding.

        Returns
        -------
        torch.Tensor
            ``B x HW x C`` memory-conditioned tokens (after the final norm).
        """
        if memory_key_padding_mask is not None:
            if memory_key_padding_mask.shape != memory.shape[:2]:
                raise ValueError(f"padding mask {tuple(memory_key_padding_mask.shape)} does not match "
                                 f"the memory {tuple(memory.shape[:2])}")
            padded = memory_key_padding_mask.sum(dim=1).tolist()  # one host sync per call
            if any(p == memory.shape[1] for p in padded):
                raise ValueError("an object has only padding memory tokens")
            if not any(padded):  # nothing padded: keep the fastest (mask-free) attention kernels
                memory_key_padding_mask = None
        output = curr
        if self.pos_enc_at_input and curr_pos is not None:
            output = output + 0.1 * curr_pos
        for layer in self.layers:
            output = layer(output, memory, memory_pos, curr_pos, num_obj_ptr_tokens,
                           memory_key_padding_mask)
        return self.norm(output)
