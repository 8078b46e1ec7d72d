"""Small building blocks shared by the SAM-family models."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu, kernels

_T = TypeVar("_T")
#: ``(args, batch, heads, rows, keys) -> args``: an attention op's arguments cut to their first
#: batch entries, heads, query rows and keys (`_probe_part`, `_screen_part`).
_Part = Callable[[tuple, int, int, int, int], tuple]


def _autocast_available(device_type: str) -> bool:
    check = getattr(torch.amp, "is_autocast_available", None)
    return device_type in ("cpu", "cuda") if check is None else bool(check(device_type))


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for `device`'s type, or None when autocast is off there (or
    does not exist there, e.g. on the ``meta`` device)."""
    if _autocast_available(device.type) and torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Context that switches an enclosing autocast off on `device` (nothing when it is off)."""
    if autocast_dtype(device) is not None:
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def cached_derived(owner: nn.Module, name: str, sources: Sequence[torch.Tensor],
                   build: Callable[[], _T]) -> _T:
    """A value derived from parameters (cast or fused weights, tables), cached on `owner`
    until one of `sources` changes (storage, in-place update, dtype or device).

    Nothing is cached while autograd records through a source (the value must then be part of
    the graph) or for inference-mode tensors, which have no version counter.

    Parameters
    ----------
    owner : nn.Module
        Holds the cache (outside its state_dict).
    name : str
        Key of the value on `owner`.
    sources : sequence of torch.Tensor
        The tensors the value is computed from.
    build : callable
        Computes the value.

    Returns
    -------
    object
        ``build()`` or its cached result.
    """
    if needs_grad(*sources):
        return build()
    try:
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
    except RuntimeError:  # inference tensors do not track versions
        return build()
    store: dict[str, tuple[tuple, object]] = owner.__dict__.setdefault("_derived_cache", {})
    hit = store.get(name)
    if hit is not None and hit[0] == key:
        return hit[1]  # type: ignore[return-value]
    store.pop(name, None)  # free a stale value before building its successor
    # ordinary tensors even when first built in inference mode: later autograd use may save them
    with torch.inference_mode(False), torch.no_grad():
        value = build()
    store[name] = (key, value)
    return value


def drop_derived(module: nn.Module) -> None:
    """Free every value `cached_derived` keeps on `module` and its submodules."""
    for m in module.modules():
        m.__dict__.pop("_derived_cache", None)


class Linear(nn.Linear):
    """`nn.Linear` whose weights are cast to the autocast dtype once, not on every call.

    Under ``torch.autocast`` (e.g. a bf16 encoder), ``nn.Linear`` casts its float32 weight and
    bias on every call (85 M parameters for ViT-B: 0.12 s per image on 2 cores of an AMD EPYC;
    630 M for ViT-H: 0.8 s). Here the cast copies are made on the first call and kept (see
    `cached_derived`: rebuilt when the parameters change in place, move or are replaced), and
    the layer computes ``F.linear`` in the autocast dtype, as autocast would: the outputs are
    identical. Without autocast, with parameters already in that dtype, or while autograd
    records through them, it is ``nn.Linear``. Same parameters and state_dict keys.

    The copies take half the float32 weights' memory (ViT-H: +1.2 GiB) once the model has run
    in bf16 / fp16; ``cache_casts = False`` (on the class or a layer) casts per call instead,
    and `drop_derived` frees the copies.
    """

    #: Keep the cast weights (False: cast on every call, as autocast does).
    cache_casts: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``... x in_features`` -> ``... x out_features``."""
        dtype = autocast_dtype(x.device)
        if (dtype is None or self.weight.dtype == dtype or not x.is_floating_point()
                or not self.cache_casts):
            return F.linear(x, self.weight, self.bias)
        weight, bias = self.cast_parameters(dtype)
        return F.linear(x.to(dtype), weight, bias)

    def cast_parameters(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight ``out x in`` and bias ``out`` (or None) in `dtype`, cached."""
        sources = (self.weight,) if self.bias is None else (self.weight, self.bias)
        return cached_derived(self, f"cast_{dtype}", sources, lambda: (
            self.weight.to(dtype), None if self.bias is None else self.bias.to(dtype)))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a ``B x C x H x W`` tensor.

    Parameters
    ----------
    num_channels : int
        Number of channels ``C``.
    eps : float
        Added to the variance.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B x C x H x W -> B x H x W x C so the fused layer_norm kernel can be used.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class MLPBlock(nn.Module):
    """Two-layer feed-forward block ``lin2(act(lin1(x)))``.

    Parameters
    ----------
    embedding_dim : int
        Input and output width.
    mlp_dim : int
        Hidden width.
    act : type of nn.Module
        Activation class.
    """

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = Linear(embedding_dim, mlp_dim)
        self.lin2 = Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """Stack of ``num_layers`` linear layers with ReLU between them.

    Parameters
    ----------
    input_dim, hidden_dim, output_dim : int
        Widths of the first input, the hidden layers and the last output.
    num_layers : int
        Number of linear layers (>= 1).
    sigmoid_output : bool
        Apply a sigmoid to the output.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out, strict=True))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``B x N x C`` -> ``B x heads x N x C/heads``."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``B x heads x N x Ch`` -> ``B x N x (heads * Ch)``; inverse of :func:`split_heads`."""
    b, _, n, _ = x.shape
    return x.transpose(1, 2).reshape(b, n, -1)


#: Query rows per block of the blocked attention kernel (bounds the score buffer to
#: ``rows x Nk`` per batch and head).
ATTENTION_QUERY_BLOCK = 512


def native_bf16_gemms(*tensors: torch.Tensor) -> bool:
    """Whether `tensors` are all bf16 on a CPU with native bf16 GEMMs
    (`napari_focsam.models.cpu.cpu_native_bf16`).

    There attention as batched GEMMs beats PyTorch's CPU SDPA kernels, which gain nothing from
    bf16; without native bf16 the GEMMs are emulated, 30-100x slower than SDPA (measured on an
    AMD EPYC without avx512_bf16). The default rule of the ``"attention"`` and
    ``"attention_rel_pos"`` ops (``"blocked"`` here, ``"sdpa"`` elsewhere) and of SAM 2's value
    fold.
    """
    return (all(t.device.type == "cpu" and t.dtype == torch.bfloat16 for t in tensors)
            and cpu.cpu_native_bf16())


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd records through any of `tensors`."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _query_blocks(n: int, size: int) -> list[slice]:
    """Consecutive slices of `size` query rows covering ``0..n``."""
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


def _bmm_rows(blocks: Sequence[slice], weights: Callable[[slice], torch.Tensor],
              v: torch.Tensor, grad: bool) -> torch.Tensor:
    """``weights(rows) @ v`` for each block of query rows, stacked along the rows.

    Parameters
    ----------
    blocks : sequence of slice
        Query rows, consecutive, covering all ``N`` rows.
    weights : callable
        ``rows -> BH x len(rows) x Nk`` attention weights in ``v``'s dtype.
    v : torch.Tensor
        ``BH x Nk x Dv``.
    grad : bool
        Autograd records: the blocks are concatenated (``out=`` has no gradient); otherwise
        they are written into one buffer.

    Returns
    -------
    torch.Tensor
        ``BH x N x Dv``.
    """
    if grad:
        return torch.cat([torch.bmm(weights(rows), v) for rows in blocks], dim=1)
    out = v.new_empty(v.shape[0], blocks[-1].stop, v.shape[-1])
    for rows in blocks:
        torch.bmm(weights(rows), v, out=out[:, rows])
    return out


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention, with the kernel chosen by measurement.

    Two kernels compute it, equal up to rounding (`napari_focsam.models.kernels`, op
    ``"attention"``): ``"sdpa"`` (``F.scaled_dot_product_attention``) and ``"blocked"``
    (`attend_blocked`: batched GEMMs over blocks of query rows). On inference-sized inputs they
    are timed once per shape bucket and the choice is remembered (the default rule's kernel
    unless the other is clearly faster); otherwise, and when measuring is off, the default rule
    applies (`native_bf16_gemms`): ``"blocked"`` for bf16 on a CPU with native bf16 GEMMs
    (PyTorch's CPU SDPA kernels gain nothing from bf16: 1.28 s bf16 vs 1.08 s fp32 for 4096
    queries x 28672 keys x 256 channels on 2 threads of an AMD EPYC with avx512_bf16, while its
    bf16 GEMMs are about 2.5x faster), ``"sdpa"`` for everything else.

    Parameters
    ----------
    q : torch.Tensor
        ``B x h x Nq x D`` queries.
    k, v : torch.Tensor
        ``B x h x Nk x D`` keys and values (``Dv`` may differ from ``D`` for values).
    key_padding_mask : torch.Tensor or None
        ``B x Nk`` bool, True for keys to ignore (every query must keep at least one key).

    Returns
    -------
    torch.Tensor
        ``B x h x Nq x Dv``.
    """
    return kernels.run("attention", q, k, v, key_padding_mask)


def attend_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`attend` with ``F.scaled_dot_product_attention`` (the ``"sdpa"`` kernel)."""
    mask = None if key_padding_mask is None else ~key_padding_mask.to(torch.bool)[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def attend_blocked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`attend` with batched GEMMs over blocks of `ATTENTION_QUERY_BLOCK` query rows (the
    ``"blocked"`` kernel), in the inputs' dtype.

    For bf16 the softmax runs in fp32 inside the kernel and its output is rounded to bf16, as in
    the GEMM-based attention of GPU autocast.
    """
    b, h, nq, d = q.shape
    q = (q * d ** -0.5).reshape(b * h, nq, d)
    kt = k.reshape(b * h, -1, d).transpose(1, 2)
    vv = v.reshape(b * h, v.shape[-2], v.shape[-1])
    bias = None
    if key_padding_mask is not None:
        bias = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device)
        bias.masked_fill_(key_padding_mask.to(torch.bool), float("-inf"))
        bias = bias[:, None, None, :].expand(b, h, 1, -1).reshape(b * h, 1, -1)

    def weights(rows: slice) -> torch.Tensor:
        scores = torch.bmm(q[:, rows], kt)
        if bias is not None:
            scores += bias
        return torch.softmax(scores, dim=-1)

    out = _bmm_rows(_query_blocks(nq, ATTENTION_QUERY_BLOCK), weights, vv,
                    needs_grad(q, k, v))
    return out.view(b, h, nq, -1)


def _attention_default(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       key_padding_mask: torch.Tensor | None = None) -> str:
    """The built-in rule: ``"blocked"`` for bf16 on a CPU with native bf16 GEMMs, else
    ``"sdpa"`` (`native_bf16_gemms`)."""
    return "blocked" if native_bf16_gemms(q, k, v) else "sdpa"


def _attention_shape(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, flags: str,
                     extra: str = "", extra_flops: float = 0.0) -> kernels.KernelKey | None:
    """Shape bucket of a call of an attention op: ``B*h``, ``Nq``, ``Nk`` rounded up to powers
    of two, ``D`` and ``Dv`` exact, plus `extra` in the shape and `extra_flops`; None for mixed
    dtypes or devices (not measured)."""
    if not (q.dtype == k.dtype == v.dtype and q.device == k.device == v.device) or q.dim() != 4:
        return None
    b, h, nq, d = q.shape
    nk, dv = k.shape[-2], v.shape[-1]
    p2 = kernels.next_pow2
    shape = f"bh{p2(b * h)}.nq{p2(nq)}.nk{p2(nk)}.d{d}.dv{dv}{extra}"
    return kernels.KernelKey(q.device, q.dtype, shape, flags,
                             2.0 * b * h * nq * nk * (d + dv) + extra_flops)


def _attention_key(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   key_padding_mask: torch.Tensor | None = None) -> kernels.KernelKey | None:
    """Shape bucket of an ``"attention"`` call (`_attention_shape`), flag ``"mask"`` with a key
    padding mask."""
    return _attention_shape(q, k, v, "" if key_padding_mask is None else "mask")


def _probe_part(part: _Part, args: tuple, flops: float) -> tuple:
    """The part of an attention op's call its kernels are timed on (`kernels.KernelOp.probe`):
    every batch entry, head and key, and the first query rows, about `flops` FLOPs of them but
    at least one full block (`ATTENTION_QUERY_BLOCK` rows) and 128 per thread (all when fewer).

    The kernels' order on the whole call is set by their buffers' working set, which only the
    query rows leave unchanged: the blocked kernels hold the scores of a block of query rows
    for every batch entry, head and key, the biased ones read a bias row per head and key.
    On a part with fewer of those that fits in the caches, SAM 2's memory attention at one
    thread chose ``"blocked"`` (10.7 vs 11.4 ms), which then took 3.7-4x one object's time for
    3 objects instead of 3x; SAM's ViT rel-pos ``"blocked"`` won on 2 heads x 256 rows x 4096
    keys and took 1.7x as long as ``"sdpa"`` on the whole global block.

    Parameters
    ----------
    part : callable
        ``(args, batch, heads, rows, keys) -> args`` of the op: its arguments cut to the first
        entries along those axes.
    args : tuple
        The call's arguments, starting with ``q`` ``B x h x Nq x D``, ``k`` ``B x h x Nk x D``
        and ``v`` ``B x h x Nk x Dv``.
    flops : float
        Size aimed at.

    Returns
    -------
    tuple
        The part's arguments (the call's own when it is the whole call).
    """
    q, k, v = args[:3]
    b, h, nq, d = q.shape
    nk = k.shape[-2]
    per_row = 2.0 * b * h * nk * (d + v.shape[-1])
    rows = min(nq, max(ATTENTION_QUERY_BLOCK, 128 * torch.get_num_threads(),
                       math.ceil(flops / per_row)))
    return args if rows == nq else part(args, b, h, rows, nk)


def _screen_part(part: _Part, args: tuple, flops: float, all_keys: bool = False) -> tuple:
    """A small part of an attention op's call, about `flops` FLOPs, every candidate runs on
    first (`kernels.KernelOp.screen`): fewer query rows (at least 128 per thread), then fewer
    keys (at least 1024; all with `all_keys`), then fewer batch entries and heads. Parameters
    as for `_probe_part`."""
    q, k, v = args[:3]
    b, h, nq, d = q.shape
    nk = k.shape[-2]
    unit = 2.0 * (d + v.shape[-1])  # FLOPs per query row and key
    rows = min(nq, max(128 * torch.get_num_threads(), math.ceil(flops / (b * h * nk * unit))))
    keys = nk if all_keys else min(nk, max(1024, math.ceil(flops / (b * h * rows * unit))))
    batch = min(b, max(1, math.ceil(flops / (h * rows * keys * unit))))
    heads = min(h, max(1, math.ceil(flops / (batch * rows * keys * unit))))
    return part(args, batch, heads, rows, keys)


def _attention_part(args: tuple, batch: int, heads: int, rows: int, keys: int) -> tuple:
    """An ``"attention"`` call cut to its first batch entries, heads, query rows and keys."""
    q, k, v, mask = args
    return (q[:batch, :heads, :rows], k[:batch, :heads, :keys], v[:batch, :heads, :keys],
            None if mask is None else mask[:batch, :keys])


kernels.register(kernels.KernelOp(
    "attention", {"sdpa": attend_sdpa, "blocked": attend_blocked}, _attention_default,
    _attention_key, functools.partial(_probe_part, _attention_part),
    functools.partial(_screen_part, _attention_part)))


# ---------------------------------------------------------------------------------------------
# attention with an additive bias (TinyViT's learned per-offset bias)
# ---------------------------------------------------------------------------------------------
def attend_bias(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(D) + bias) v``, with the kernel chosen by measurement.

    Op ``"attention_bias"`` (`napari_focsam.models.kernels`): ``"sdpa"``
    (`attend_bias_sdpa`) or ``"blocked"`` (`attend_bias_blocked`); default rule ``"sdpa"``.

    Parameters
    ----------
    q : torch.Tensor
        ``B x h x Nq x D``.
    k, v : torch.Tensor
        ``B x h x Nk x D`` and ``B x h x Nk x Dv``.
    bias : torch.Tensor
        Additive logits broadcastable to ``B x h x Nq x Nk`` (e.g. ``h x Nq x Nk``), in the
        inputs' dtype.

    Returns
    -------
    torch.Tensor
        ``B x h x Nq x Dv``.
    """
    return kernels.run("attention_bias", q, k, v, bias)


def attend_bias_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     bias: torch.Tensor) -> torch.Tensor:
    """`attend_bias` with ``F.scaled_dot_product_attention(attn_mask=bias)`` (``"sdpa"``)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def attend_bias_blocked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        bias: torch.Tensor) -> torch.Tensor:
    """`attend_bias` with batched GEMMs over blocks of `ATTENTION_QUERY_BLOCK` query rows
    (``"blocked"``), in the inputs' dtype; the bias is added in place to each block's scores,
    never expanded over the batch."""
    b, h, nq, d = q.shape
    nk, dv = k.shape[-2], v.shape[-1]
    bias = bias.expand(b, h, nq, nk)  # a view: broadcast dimensions keep stride 0
    qs = (q * d ** -0.5).reshape(b * h, nq, d)
    kt = k.reshape(b * h, nk, d).transpose(1, 2)
    vv = v.reshape(b * h, nk, dv)

    def weights(rows: slice) -> torch.Tensor:
        scores = torch.bmm(qs[:, rows], kt)
        scores.view(b, h, -1, nk).add_(bias[:, :, rows])
        return torch.softmax(scores, dim=-1)

    with no_autocast(q.device):
        out = _bmm_rows(_query_blocks(nq, ATTENTION_QUERY_BLOCK), weights, vv,
                        needs_grad(q, k, v, bias))
    return out.view(b, h, nq, dv)


def _attention_bias_default(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            bias: torch.Tensor) -> str:
    """The built-in rule: ``"sdpa"`` (TinyViT's attention before kernels were measured)."""
    return "sdpa"


def _attention_bias_key(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        bias: torch.Tensor) -> kernels.KernelKey | None:
    """Shape bucket as for ``"attention"``, flag ``"bias"`` (``"bias-b"`` when the bias has its
    own batch entries)."""
    if bias.dtype != q.dtype:
        return None
    per_batch = bias.dim() == 4 and bias.shape[0] > 1
    return _attention_shape(q, k, v, "bias-b" if per_batch else "bias")


def _attention_bias_part(args: tuple, batch: int, heads: int, rows: int, keys: int) -> tuple:
    """An ``"attention_bias"`` call cut to its first batch entries, heads, query rows and keys
    (the bias as a broadcast view)."""
    q, k, v, bias = args
    b, h, nq, _ = q.shape
    bias = bias.expand(b, h, nq, k.shape[-2])[:batch, :heads, :rows, :keys]
    return q[:batch, :heads, :rows], k[:batch, :heads, :keys], v[:batch, :heads, :keys], bias


kernels.register(kernels.KernelOp(
    "attention_bias", {"sdpa": attend_bias_sdpa, "blocked": attend_bias_blocked},
    _attention_bias_default, _attention_bias_key,
    functools.partial(_probe_part, _attention_bias_part),
    functools.partial(_screen_part, _attention_bias_part)))


# ---------------------------------------------------------------------------------------------
# attention with a decomposed relative-position bias (SAM's ViT, MViTv2)
# ---------------------------------------------------------------------------------------------
#: Upper bounds on the bytes of one materialised bias chunk of the ``"sdpa"`` and ``"blocked"``
#: rel-pos kernels (measured best on a 2-core AVX-512 CPU for a global ViT-B block: 4 query
#: grid rows for fp32 SDPA, 2 for the bf16 matmul path). A global ViT-H block's whole bias
#: would otherwise be ~1 GiB.
REL_POS_SDPA_CHUNK_BYTES = 56 * 2**20
REL_POS_BMM_CHUNK_BYTES = 16 * 2**20


def attend_rel_pos(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
                   rel_w: torch.Tensor) -> torch.Tensor:
    """Attention over a ``kh x kw`` key grid with a decomposed relative-position bias.

    ``out = softmax(q k^T / sqrt(D) + bias) v`` with ``bias[.., i, (r, c)] = rel_h[.., i, r] +
    rel_w[.., i, c]`` for key ``(r, c)`` of the grid (row-major). Op ``"attention_rel_pos"``
    (`napari_focsam.models.kernels`), three kernels equal up to rounding:

    ``"sdpa"`` (`attend_rel_pos_sdpa`)
        SDPA with the bias materialised per chunk of query rows.
    ``"blocked"`` (`attend_rel_pos_blocked`)
        Batched GEMMs with the bias materialised per chunk, in the inputs' dtype.
    ``"augmented"`` (`attend_rel_pos_augmented`)
        No bias at all: SDPA (flash) on queries ``[q / sqrt(D), rel_h, rel_w]`` and keys
        ``[k, onehot(r), onehot(c)]``, whose dot products are exactly the biased logits.

    The default rule (unmeasured calls) is that of `attend`: ``"blocked"`` for bf16 on a CPU
    with native bf16 GEMMs, ``"sdpa"`` otherwise (`native_bf16_gemms`).

    Parameters
    ----------
    q : torch.Tensor
        ``B x h x Nq x D`` queries (unscaled).
    k, v : torch.Tensor
        ``B x h x (kh * kw) x D`` keys and values.
    rel_h, rel_w : torch.Tensor
        ``B x h x Nq x kh`` and ``B x h x Nq x kw``: each query's bias per key row and column,
        in the inputs' dtype.

    Returns
    -------
    torch.Tensor
        ``B x h x Nq x D``.
    """
    return kernels.run("attention_rel_pos", q, k, v, rel_h, rel_w)


def _rel_pos_bias(rel_h: torch.Tensor, rel_w: torch.Tensor,
                  buffer: torch.Tensor | None = None) -> torch.Tensor:
    """``B x h x n x kh`` and ``B x h x n x kw`` -> the bias ``B x h x n x (kh * kw)``, written
    into the start of the flat `buffer` when given (chunk after chunk into the same memory: a
    fresh allocation of tens of MB is a fresh ``mmap``, page-faulted in again every time)."""
    b, h, n, kh = rel_h.shape
    kw = rel_w.shape[-1]
    terms = (rel_h[..., :, None], rel_w[..., None, :])
    if buffer is None:
        return torch.add(*terms).view(b, h, n, kh * kw)  # a new tensor, contiguous
    out = buffer[:b * h * n * kh * kw].view(b, h, n, kh, kw)
    return torch.add(*terms, out=out).view(b, h, n, kh * kw)


def _bias_buffer(rel_h: torch.Tensor, rel_w: torch.Tensor,
                 chunks: Sequence[slice]) -> torch.Tensor | None:
    """A flat buffer for the biggest chunk's bias, or None (one chunk, or autograd records)."""
    if len(chunks) < 2 or needs_grad(rel_h, rel_w):
        return None
    b, h, _, kh = rel_h.shape
    rows = max(c.stop - c.start for c in chunks)
    return rel_h.new_empty(b * h * rows * kh * rel_w.shape[-1])


def _row_chunks(rel_h: torch.Tensor, rel_w: torch.Tensor, budget: int) -> list[slice]:
    """Query-row slices whose materialised bias takes at most `budget` bytes (>= 1 row)."""
    b, h, n, kh = rel_h.shape
    row_bytes = b * h * kh * rel_w.shape[-1] * rel_h.element_size()
    rows = max(1, min(n, budget // max(1, row_bytes)))
    return [slice(r, min(n, r + rows)) for r in range(0, n, rows)]


def attend_rel_pos_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
                        rel_w: torch.Tensor) -> torch.Tensor:
    """`attend_rel_pos` with SDPA and the bias materialised per chunk of query rows of at most
    `REL_POS_SDPA_CHUNK_BYTES` (``"sdpa"``). Several chunks give a ``B x h x n x Dv`` view of
    a ``B x n x h x Dv`` tensor."""
    chunks = _row_chunks(rel_h, rel_w, REL_POS_SDPA_CHUNK_BYTES)
    if len(chunks) > 1:  # strided keys and values are read once per chunk: copy them once
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    buffer = _bias_buffer(rel_h, rel_w, chunks)
    if buffer is None:  # one chunk, or autograd records
        outs = [F.scaled_dot_product_attention(
            q[:, :, rows], k, v, attn_mask=_rel_pos_bias(rel_h[:, :, rows], rel_w[:, :, rows]))
            for rows in chunks]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    # the chunks go straight into a B x n x h x Dv buffer: the caller's merge of the heads
    # (``transpose(1, 2)``) is then a view, not a copy
    b, h, n, _ = q.shape
    out = q.new_empty(b, n, h, v.shape[-1]).transpose(1, 2)
    for rows in chunks:
        bias = _rel_pos_bias(rel_h[:, :, rows], rel_w[:, :, rows], buffer)
        out[:, :, rows] = F.scaled_dot_product_attention(q[:, :, rows], k, v, attn_mask=bias)
    return out


def attend_rel_pos_blocked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
                           rel_w: torch.Tensor) -> torch.Tensor:
    """`attend_rel_pos` with batched GEMMs in the inputs' dtype (autocast off), the bias
    materialised per chunk of query rows of at most `REL_POS_BMM_CHUNK_BYTES` (``"blocked"``)."""
    b, h, n, d = q.shape
    nk, dv = k.shape[-2], v.shape[-1]
    qq = q.reshape(b * h, n, d)
    kt = k.reshape(b * h, nk, d).transpose(1, 2)
    vv = v.reshape(b * h, nk, dv)

    chunks = _row_chunks(rel_h, rel_w, REL_POS_BMM_CHUNK_BYTES)
    buffer = _bias_buffer(rel_h, rel_w, chunks)

    def weights(rows: slice) -> torch.Tensor:
        bias = _rel_pos_bias(rel_h[:, :, rows], rel_w[:, :, rows], buffer).view(b * h, -1, nk)
        return torch.baddbmm(bias, qq[:, rows], kt, alpha=d ** -0.5).softmax(dim=-1)

    with no_autocast(q.device):
        out = _bmm_rows(chunks, weights, vv, needs_grad(q, k, v, rel_h, rel_w))
    return out.view(b, h, n, dv)


def rel_pos_key_codes(kh: int, kw: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """One-hot codes of the key grid's rows and columns, ``(kh * kw) x (kh + kw)``: key
    ``(r, c)`` has ones at ``r`` and ``kh + c`` (cached per size, dtype and device)."""
    return _key_codes(kh, kw, dtype, str(device))


@functools.lru_cache(maxsize=16)
def _key_codes(kh: int, kw: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    with torch.inference_mode(False), torch.no_grad():
        index = torch.arange(kh * kw, device=device)
        codes = torch.zeros(kh * kw, kh + kw, dtype=dtype, device=device)
        codes[index, index // kw] = 1
        codes[index, kh + index % kw] = 1
    return codes


def attend_rel_pos_augmented(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             rel_h: torch.Tensor, rel_w: torch.Tensor) -> torch.Tensor:
    """`attend_rel_pos` without a bias: one SDPA (flash) call on augmented queries and keys
    (``"augmented"``).

    ``[q / sqrt(D), rel_h, rel_w] . [k, onehot(r), onehot(c)] = q . k / sqrt(D) + rel_h[r] +
    rel_w[c]``: the one-hot products are exact, so the logits equal the biased ones up to the
    rounding of the scaled queries. The values are zero-padded to the augmented width (SDPA's
    fused CPU kernel needs equal widths) and the padding is cut off the output.
    """
    b, h, n, d = q.shape
    nk, dv = k.shape[-2], v.shape[-1]
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    width = d + kh + kw
    codes = rel_pos_key_codes(kh, kw, k.dtype, k.device)
    qa = torch.cat([q * d ** -0.5, rel_h.expand(b, h, n, kh), rel_w.expand(b, h, n, kw)], dim=-1)
    ka = torch.cat([k, codes.expand(b, h, nk, kh + kw)], dim=-1)
    va = F.pad(v, (0, width - dv)) if width > dv else v
    out = F.scaled_dot_product_attention(qa, ka, va, scale=1.0)
    return out[..., :dv] if width > dv else out


def _attention_rel_pos_default(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               rel_h: torch.Tensor, rel_w: torch.Tensor) -> str:
    """The built-in rule, that of ``"attention"`` (`native_bf16_gemms`): ``"blocked"`` for bf16
    on a CPU with native bf16 GEMMs (SAM's ViT measured ~290 ms vs ~510 ms with SDPA for a
    global ViT-B block on a 2-core CPU with avx512_bf16), ``"sdpa"`` otherwise."""
    return "blocked" if native_bf16_gemms(q, k, v) else "sdpa"


def _attention_rel_pos_key(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           rel_h: torch.Tensor, rel_w: torch.Tensor) -> kernels.KernelKey | None:
    """Shape bucket as for ``"attention"`` plus the key grid ``kh x kw`` (exact), flag
    ``"relpos"``; None for mixed dtypes or devices."""
    if not rel_h.dtype == rel_w.dtype == q.dtype:
        return None
    kh, kw = rel_h.shape[-1], rel_w.shape[-1]
    return _attention_shape(q, k, v, "relpos", f".kh{kh}.kw{kw}")


def _attention_rel_pos_part(args: tuple, batch: int, heads: int, rows: int, keys: int) -> tuple:
    """An ``"attention_rel_pos"`` call cut to its first batch entries, heads and query rows;
    every key (`keys` is ignored: the bias spans the whole key grid)."""
    q, k, v, rel_h, rel_w = args
    return (q[:batch, :heads, :rows], k[:batch, :heads], v[:batch, :heads],
            rel_h[:batch, :heads, :rows], rel_w[:batch, :heads, :rows])


kernels.register(kernels.KernelOp(
    "attention_rel_pos",
    {"sdpa": attend_rel_pos_sdpa, "blocked": attend_rel_pos_blocked,
     "augmented": attend_rel_pos_augmented},
    _attention_rel_pos_default, _attention_rel_pos_key,
    functools.partial(_probe_part, _attention_rel_pos_part),
    functools.partial(_screen_part, _attention_rel_pos_part, all_keys=True)))


# ---------------------------------------------------------------------------------------------
# attention with an appended all-zero key and value (FocSAM's refiner windows)
# ---------------------------------------------------------------------------------------------
_CPU_FLASH_ATTENTION = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def attend_zero_key(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention with an extra all-zero key and value appended (scale ``D ** -0.5``),
    with the kernel chosen by measurement.

    The zero key has logit 0 and contributes nothing to the output, only ``exp(0)`` to each
    softmax denominator: the result is the attention over the real keys times
    ``sigmoid(logsumexp of the real logits)``. Op ``"attention_zero_key"``
    (`napari_focsam.models.kernels`), kernels equal up to rounding: ``"flash_lse"``
    (`attend_zero_key_flash`), ``"padded"`` (`attend_zero_key_padded`) and ``"blocked"``
    (`attend_zero_key_blocked`). Default rule: ``"flash_lse"`` on the CPU where torch has
    its CPU flash kernel and no gradient is needed, ``"padded"`` otherwise.

    Parameters
    ----------
    q : torch.Tensor
        ``B x h x Nq x D``.
    k, v : torch.Tensor
        ``B x h x Nk x D``.

    Returns
    -------
    torch.Tensor
        ``B x h x Nq x D``.
    """
    return kernels.run("attention_zero_key", q, k, v)


def attend_zero_key_padded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`attend_zero_key` as written: SDPA over the keys and values with a zero row appended
    (``"padded"``)."""
    k = F.pad(k, (0, 0, 0, 1))  # B x h x (Nk + 1) x D, last key all zero
    v = F.pad(v, (0, 0, 0, 1))
    return F.scaled_dot_product_attention(q, k, v)


def attend_zero_key_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`attend_zero_key` with torch's CPU flash kernel, which also returns the logsumexp: its
    output times ``sigmoid(lse)`` (``"flash_lse"``). Off the CPU, without that kernel or when
    a gradient is needed, `attend_zero_key_padded`."""
    if q.device.type != "cpu" or _CPU_FLASH_ATTENTION is None or needs_grad(q, k, v):
        return attend_zero_key_padded(q, k, v)
    out, lse = _CPU_FLASH_ATTENTION(q, k, v)  # lse: B x h x Nq, float32
    return out.mul_(torch.sigmoid(lse).unsqueeze(-1).to(out.dtype))


def attend_zero_key_blocked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`attend_zero_key` with batched GEMMs over blocks of `ATTENTION_QUERY_BLOCK` query rows
    in the inputs' dtype (``"blocked"``): ``exp(s - m) / (sum exp(s - m) + exp(-m))`` with
    ``m = max(0, max s)``."""
    b, h, nq, d = q.shape
    nk, dv = k.shape[-2], v.shape[-1]
    qs = (q * d ** -0.5).reshape(b * h, nq, d)
    kt = k.reshape(b * h, nk, d).transpose(1, 2)
    vv = v.reshape(b * h, nk, dv)
    grad = needs_grad(q, k, v)

    def weights(rows: slice) -> torch.Tensor:
        scores = torch.bmm(qs[:, rows], kt).float()
        top = scores.amax(dim=-1, keepdim=True).clamp(min=0)  # the zero key's logit is 0
        if grad:
            p = (scores - top).exp()
            return (p / (p.sum(dim=-1, keepdim=True) + (-top).exp())).to(q.dtype)
        p = scores.sub_(top).exp_()
        return p.div_(p.sum(dim=-1, keepdim=True).add_(top.neg_().exp_())).to(q.dtype)

    with no_autocast(q.device):
        out = _bmm_rows(_query_blocks(nq, ATTENTION_QUERY_BLOCK), weights, vv, grad)
    return out.view(b, h, nq, dv)


def _attention_zero_key_default(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """The built-in rule (FocSAM's refiner before kernels were measured): ``"flash_lse"`` on
    the CPU with torch's CPU flash kernel and no gradient needed, else ``"padded"``."""
    flash = q.device.type == "cpu" and _CPU_FLASH_ATTENTION is not None and not needs_grad(q, k, v)
    return "flash_lse" if flash else "padded"


def _attention_zero_key_key(q: torch.Tensor, k: torch.Tensor,
                            v: torch.Tensor) -> kernels.KernelKey | None:
    """Shape bucket as for ``"attention"``, flag ``"zerokey"``."""
    return _attention_shape(q, k, v, "zerokey")


def _attention_zero_key_part(args: tuple, batch: int, heads: int, rows: int, keys: int) -> tuple:
    """An ``"attention_zero_key"`` call cut to its first batch entries, heads, query rows and
    keys."""
    q, k, v = args
    return q[:batch, :heads, :rows], k[:batch, :heads, :keys], v[:batch, :heads, :keys]


kernels.register(kernels.KernelOp(
    "attention_zero_key",
    {"flash_lse": attend_zero_key_flash, "padded": attend_zero_key_padded,
     "blocked": attend_zero_key_blocked},
    _attention_zero_key_default, _attention_zero_key_key,
    functools.partial(_probe_part, _attention_zero_key_part),
    functools.partial(_screen_part, _attention_zero_key_part)))


def conv_transpose_2x2_channels_last(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A kernel-2, stride-2 transposed convolution as one matmul, channels last.

    The kernel windows do not overlap, so each input pixel produces its own 2 x 2 output block.

    Parameters
    ----------
    x : torch.Tensor
        ``B x H x W x Cin``.
    conv : nn.ConvTranspose2d
        Weight ``Cin x Cout x 2 x 2`` and bias ``Cout``.

    Returns
    -------
    torch.Tensor
        ``B x H x W x 2 x 2 x Cout``: output pixel ``(2i + di, 2j + dj)`` at ``[:, i, j, di, dj]``.
    """
    cin, cout = conv.weight.shape[:2]
    weight = conv.weight.permute(0, 2, 3, 1).reshape(cin, 4 * cout)  # Cin x (di, dj, Cout)
    y = torch.addmm(conv.bias.repeat(4), x.reshape(-1, cin), weight)
    return y.view(*x.shape[:3], 2, 2, cout)
