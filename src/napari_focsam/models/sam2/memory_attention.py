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

**Fast path** (``MemoryAttention.fast``, default True; False runs the plain formulation above,
kept as the reference the tests compare with). Same numbers up to fp32 rounding:

* *Values folded into the output projection* (where the attention runs as GEMMs: bf16 on a
  CPU with native bf16 GEMMs, see `RoPEAttention.fold_values`). The cross-attention projects
  the ``Cm``-wide memory up to the internal width for keys and values. Softmax rows sum to 1
  (every object keeps at least one key; padded keys get weight 0), so per head
  ``softmax(S) (M W_v^T + b_v) = (softmax(S) M) W_v^T + b_v``: the attention averages the raw
  ``Cm``-wide memory and one ``(heads * Cm) -> C`` matrix ``W_o W_v`` (bias ``W_o b_v + b_o``)
  replaces the value and output projections. The attention's second product is
  ``internal / (heads * Cm)`` times cheaper (4x for SAM 2: 64 vs 256 channels). Not in fp32 on
  CPU: PyTorch's fused (flash) CPU kernel needs equal query/key/value widths, and with 64-wide
  values SDPA falls back to its unfused kernel, which is slower than the fused one with
  256-wide values (measured 0.26 s vs 0.14 s, 1024 queries x 7168 keys, 2 threads), as is a
  blocked GEMM version (0.19-0.21 s). Keys cannot be folded: RoPE rotates the *projected* keys
  by their position ``j`` and the queries by ``i``, so ``q_i . k_j`` involves ``R_i^T R_j``
  between the two projections, a different matrix for every (query, key) position pair.
* *RoPE as one complex multiply* (the official formulation) instead of real arithmetic on
  split channel pairs (about 6x faster on CPU, same values).
* *Work shared by the objects of a frame done once.* With ``1 x HW x C`` current tokens, the
  first layer's norms, self-attention and cross-attention query (projection and RoPE) run
  once for all objects; `MemoryAttention.forward_groups` runs several groups of objects (e.g.
  objects with different memory lengths, so that nothing is padded) after that shared part.
"""

from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..common import attend, merge_heads, native_bf16_gemms, split_heads
from ..sam.transformer import Attention

logger = logging.getLogger(__name__)

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


@functools.lru_cache(maxsize=1)
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


def apply_rope_complex(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """`apply_rope` as one complex multiply (the official formulation; faster on CPU).

    Parameters
    ----------
    x : torch.Tensor
        ``... x N x D``.
    freqs : torch.Tensor
        ``N x D/2`` complex64 ``cos + i sin`` (broadcast over the leading dimensions).

    Returns
    -------
    torch.Tensor
        ``... x N x D`` in ``x``'s dtype.
    """
    xf = x.float()
    if xf.stride(-1) != 1 or xf.storage_offset() % 2 or any(st % 2 for st in xf.stride()[:-1]):
        xf = xf.contiguous()
    out = torch.view_as_real(torch.view_as_complex(xf.unflatten(-1, (-1, 2))) * freqs)
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
        self._freqs_cache: dict[tuple[int, str], torch.Tensor] = {}
        #: Fast path (`forward_fast`); False: the plain formulation.
        self.fast = True
        #: Fold the values into the output projection (fast path, when `folds_values`): None =
        #: where the attention is GEMM-based (bf16 on a CPU with native bf16 GEMMs:
        #: `models.common.native_bf16_gemms`), where it pays; True / False force it.
        self.fold_values: bool | None = None

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

    def forward(self, q: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor,
                num_k_exclude_rope: int = 0, key_padding_mask: torch.Tensor | None = None, *,
                q_heads: torch.Tensor | None = None) -> torch.Tensor:
        """Attend with rotary encoding (`forward_fast` when `fast`, else `forward_reference`).

        Parameters
        ----------
        q : torch.Tensor or None
            ``Bq x Nq x C`` queries (a grid of Nq tokens); None with `q_heads`.
        k, v : torch.Tensor
            ``Bk x Nk x Ckv`` keys and values; the batch sizes broadcast (1 or B).
        num_k_exclude_rope : int
            The last ``num_k_exclude_rope`` keys are not rotated (object pointers).
        key_padding_mask : torch.Tensor or None
            ``B x Nk`` bool, True for keys to ignore.
        q_heads : torch.Tensor or None
            ``query_heads(q)`` computed beforehand (fast path only).

        Returns
        -------
        torch.Tensor
            ``B x Nq x C``.
        """
        if self.fast:
            return self.forward_fast(q, k, v, num_k_exclude_rope, key_padding_mask, q_heads=q_heads)
        if q_heads is not None:
            raise ValueError("precomputed query heads need the fast path")
        return self.forward_reference(q, k, v, num_k_exclude_rope, key_padding_mask)

    def forward_reference(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          num_k_exclude_rope: int = 0,
                          key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The plain formulation (the reference of the fast path).

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

    # ------------------------------------------------------------------ fast path
    def rope_freqs(self, num_tokens: int, device: torch.device) -> torch.Tensor:
        """``num_tokens x head_dim/2`` complex64 ``cos + i sin`` (see `rope_tables`)."""
        key = (num_tokens, str(device))
        freqs = self._freqs_cache.get(key)
        if freqs is None:
            cos, sin = self.rope_tables(num_tokens, device)
            freqs = self._freqs_cache[key] = torch.complex(cos, sin)
        return freqs

    @property
    def folds_values(self) -> bool:
        """Whether attending the raw values and projecting afterwards is cheaper
        (``heads * Ckv < internal width``; SAM 2's cross-attention: 64 < 256)."""
        return self.num_heads * self.v_proj.in_features < self.v_proj.out_features

    def folded_value_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``W_o W_v`` per head, ``C x (heads * Ckv)``, and ``W_o b_v + b_o`` (in float32, then
        the output projection's dtype)."""
        h = self.num_heads
        d = self.v_proj.out_features // h
        wv, bv = self.v_proj.weight, self.v_proj.bias
        wo, bo = self.out_proj.weight, self.out_proj.bias
        with torch.autocast(wv.device.type, enabled=False):
            wo32 = wo.float()
            weight = torch.einsum("chd,hdm->chm", wo32.view(wo.shape[0], h, d),
                                  wv.float().view(h, d, wv.shape[1])).reshape(wo.shape[0], -1)
            bias = torch.addmv(bo.float(), wo32, bv.float())
        return weight.to(wo.dtype), bias.to(wo.dtype)

    def query_heads(self, q: torch.Tensor) -> torch.Tensor:
        """Projected, rotated queries ``Bq x h x Nq x D`` (shareable by every key set)."""
        q = split_heads(self.q_proj(q), self.num_heads)
        return apply_rope_complex(q, self.rope_freqs(q.shape[-2], q.device))

    def key_heads(self, k: torch.Tensor, num_queries: int, num_k_exclude_rope: int = 0) -> torch.Tensor:
        """Projected keys ``Bk x h x Nk x D``, all but the last `num_k_exclude_rope` rotated."""
        k = split_heads(self.k_proj(k), self.num_heads)
        nk = k.shape[-2]
        if nk != num_queries and not self.rope_k_repeat:
            raise ValueError(f"{nk} keys for {num_queries} queries need rope_k_repeat")
        n_rope = nk - num_k_exclude_rope
        if n_rope <= 0:
            return k
        if n_rope % num_queries:
            raise ValueError(f"{n_rope} rotated keys are not a whole number of {num_queries}-token frames")
        freqs = self.rope_freqs(num_queries, k.device)
        rotated = apply_rope_complex(k[..., :n_rope, :].unflatten(-2, (n_rope // num_queries, num_queries)),
                                     freqs).flatten(-3, -2)
        if not num_k_exclude_rope:
            return rotated
        k = k.contiguous()
        k[..., :n_rope, :] = rotated
        return k

    def forward_fast(self, q: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor,
                     num_k_exclude_rope: int = 0, key_padding_mask: torch.Tensor | None = None, *,
                     q_heads: torch.Tensor | None = None) -> torch.Tensor:
        """`forward`, with folded values when `folds_values` and precomputed query heads.

        Parameters
        ----------
        q : torch.Tensor or None
            As in `forward` (ignored when `q_heads` is given).
        k, v, num_k_exclude_rope, key_padding_mask
            As in `forward`.
        q_heads : torch.Tensor or None
            ``query_heads(q)``, computed once when several key sets share the queries.

        Returns
        -------
        torch.Tensor
            ``B x Nq x C``.
        """
        if q_heads is None:
            q_heads = self.query_heads(q)
        k = self.key_heads(k, q_heads.shape[-2], num_k_exclude_rope)
        fold = self.folds_values and (
            self.fold_values if self.fold_values is not None
            else native_bf16_gemms(k, q_heads))
        if fold:  # softmax rows sum to 1: attend the raw values, project afterwards
            v = v.to(k.dtype)[:, None].expand(-1, self.num_heads, -1, -1)
        else:
            v = split_heads(self.v_proj(v), self.num_heads)
        b = max(q_heads.shape[0], k.shape[0], v.shape[0])
        q_heads, k, v = (t.expand(b, -1, -1, -1) for t in (q_heads, k, v))
        out = merge_heads(attend(q_heads, k, v, key_padding_mask))
        if fold:
            return F.linear(out, *self.folded_value_output())
        return self.out_proj(out)


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
        #: Fast path (`forward_fast`); False: the plain formulation.
        self.fast = True

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        num_k_exclude_rope: int = 0,
        memory_key_padding_mask: torch.Tensor | None = None,
        *,
        prepared: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One layer (`forward_fast` when `fast`).

        ``prepared`` is ``prepare(tgt, query_pos)``, computed once when several memories share
        the current tokens (fast path only); the other arguments are those of
        `forward_reference`.
        """
        if self.fast:
            return self.forward_fast(tgt, memory, pos, query_pos, num_k_exclude_rope,
                                     memory_key_padding_mask, prepared=prepared)
        if prepared is not None:
            raise ValueError("prepared current tokens need the fast path")
        return self.forward_reference(tgt, memory, pos, query_pos, num_k_exclude_rope,
                                      memory_key_padding_mask)

    def forward_reference(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        num_k_exclude_rope: int = 0,
        memory_key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One layer, plain formulation.

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

    # ------------------------------------------------------------------ fast path
    def prepare(self, tgt: torch.Tensor, query_pos: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The part of the layer that does not read the memory: the residual self-attention and
        the cross-attention's projected, rotated queries, ``(tgt, q_heads)``."""
        t = self.norm1(tgt)
        q = t + query_pos if self.pos_enc_at_attn else t
        tgt = tgt + self.self_attn(q, q, t)
        t = self.norm2(tgt)
        q = t + query_pos if self.pos_enc_at_cross_attn_queries else t
        return tgt, self.cross_attn_image.query_heads(q)

    def forward_fast(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor | None = None,
                     query_pos: torch.Tensor | None = None, num_k_exclude_rope: int = 0,
                     memory_key_padding_mask: torch.Tensor | None = None, *,
                     prepared: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """`forward_reference` through the fast path (same arguments and result)."""
        tgt, q_heads = self.prepare(tgt, query_pos) if prepared is None else prepared
        k = memory + pos if self.pos_enc_at_cross_attn_keys else memory
        tgt = tgt + self.cross_attn_image(None, k, memory, num_k_exclude_rope,
                                          memory_key_padding_mask, q_heads=q_heads)
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

    @property
    def fast(self) -> bool:
        """Fast path (see the module docstring; default True); False runs the plain reference
        formulation. Setting it sets every layer's and attention's flag."""
        return all(m.fast for m in self.modules() if isinstance(m, (MemoryAttentionLayer, RoPEAttention)))

    @fast.setter
    def fast(self, value: bool) -> None:
        for m in self.modules():
            if isinstance(m, (MemoryAttentionLayer, RoPEAttention)):
                m.fast = bool(value)

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
        if self.fast:
            return self.forward_groups(curr, [(memory, memory_pos, num_obj_ptr_tokens,
                                               memory_key_padding_mask)], curr_pos)[0]
        memory_key_padding_mask = self._check_padding(memory, memory_key_padding_mask)
        output = curr
        if self.pos_enc_at_input and curr_pos is not None:
            output = output + 0.1 * curr_pos
        for layer in self.layers:
            output = layer(output, memory, memory_pos, curr_pos, num_obj_ptr_tokens,
                           memory_key_padding_mask)
        return self.norm(output)

    def forward_groups(
        self,
        curr: torch.Tensor,
        groups: list[tuple[torch.Tensor, torch.Tensor | None, int, torch.Tensor | None]],
        curr_pos: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Condition one frame's tokens on several groups of objects' memories (fast path).

        The groups share the current tokens; with ``1 x HW x C`` tokens the first layer's
        self-attention and cross-attention queries run once for all groups. Grouping objects by
        memory layout (frames, pointers) batches them without padding.

        Parameters
        ----------
        curr : torch.Tensor
            ``1 x HW x C`` (or ``B x HW x C`` with a single group of B objects).
        groups : list of tuple
            Per group ``(memory, memory_pos, num_obj_ptr_tokens, memory_key_padding_mask)`` as
            in `forward` (``B_g x M_g x Cm``; the mask may be None).
        curr_pos : torch.Tensor or None
            Encoding of ``curr``.

        Returns
        -------
        list of torch.Tensor
            Per group ``B_g x HW x C`` (after the final norm).
        """
        if curr.shape[0] != 1 and len(groups) != 1:
            raise ValueError("several groups need one shared frame (curr of batch 1)")
        if not self.fast:
            return [self._reference_group(curr, curr_pos, *group) for group in groups]
        masks = [self._check_padding(memory, mask) for memory, _, _, mask in groups]
        output = curr
        if self.pos_enc_at_input and curr_pos is not None:
            output = output + 0.1 * curr_pos
        first, rest = self.layers[0], self.layers[1:]
        prepared = first.prepare(output, curr_pos)  # shared by every group when batch 1
        results = []
        for (memory, memory_pos, n_ptr, _), mask in zip(groups, masks, strict=True):
            x = first(output, memory, memory_pos, curr_pos, n_ptr, mask, prepared=prepared)
            for layer in rest:
                x = layer(x, memory, memory_pos, curr_pos, n_ptr, mask)
            results.append(self.norm(x))
        return results

    def _reference_group(self, curr, curr_pos, memory, memory_pos, n_ptr, mask) -> torch.Tensor:
        fast, self.fast = self.fast, False
        try:
            return self(curr, memory, curr_pos, memory_pos, n_ptr, mask)
        finally:
            self.fast = fast

    @staticmethod
    def _check_padding(memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Validate a padding mask; None when nothing is padded (mask-free kernels)."""
        if memory.shape[1] == 0:
            raise ValueError("an object has only padding memory tokens (the memory is empty)")
        if mask is None:
            return None
        if mask.shape != memory.shape[:2]:
            raise ValueError(f"padding mask {tuple(mask.shape)} does not match "
                             f"the memory {tuple(memory.shape[:2])}")
        padded = mask.sum(dim=1).tolist()  # one host sync per call
        if any(p == memory.shape[1] for p in padded):
            raise ValueError("an object has only padding memory tokens")
        return mask if any(padded) else None
