"""Small building blocks shared by the SAM-family models."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels


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
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
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


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention, with the kernel chosen by measurement.

    Two kernels compute it, equal up to rounding (`napari_focsam.models.kernels`, op
    ``"attention"``): ``"sdpa"`` (``F.scaled_dot_product_attention``) and ``"blocked"``
    (`attend_blocked`: batched GEMMs over blocks of query rows). On inference-sized inputs the
    faster on this machine is measured once per shape bucket and remembered; otherwise, and
    when measuring is off, the default rule applies: ``"blocked"`` for bf16 on a CPU with native
    bf16 GEMMs (PyTorch's CPU SDPA kernels gain nothing from bf16: 1.28 s bf16 vs 1.08 s fp32
    for 4096 queries x 28672 keys x 256 channels on 2 threads of an AMD EPYC with avx512_bf16,
    while its bf16 GEMMs are about 2.5x faster), ``"sdpa"`` for everything else.

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
    out = q.new_empty(b * h, nq, vv.shape[-1])
    for start in range(0, nq, ATTENTION_QUERY_BLOCK):
        rows = slice(start, start + ATTENTION_QUERY_BLOCK)
        scores = torch.bmm(q[:, rows], kt)
        if bias is not None:
            scores += bias
        torch.bmm(torch.softmax(scores, dim=-1), vv, out=out[:, rows])
    return out.view(b, h, nq, -1)


def _attention_default(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       key_padding_mask: torch.Tensor | None = None) -> str:
    """The built-in rule: ``"blocked"`` for bf16 on a CPU with native bf16 GEMMs, else
    ``"sdpa"`` (without them bf16 GEMMs are emulated: 30-100x slower than SDPA, measured on an
    AMD EPYC without avx512_bf16)."""
    bf16_cpu = q.device.type == "cpu" and q.dtype == k.dtype == v.dtype == torch.bfloat16
    return "blocked" if bf16_cpu and kernels.cpu_native_bf16() else "sdpa"


def _attention_key(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   key_padding_mask: torch.Tensor | None = None) -> kernels.KernelKey | None:
    """Shape bucket of an attention call: ``B*h``, ``Nq``, ``Nk`` rounded up to powers of two,
    ``D`` and ``Dv`` exact; None for mixed dtypes or devices (not measured)."""
    if not (q.dtype == k.dtype == v.dtype and q.device == k.device == v.device) or q.dim() != 4:
        return None
    b, h, nq, d = q.shape
    nk, dv = k.shape[-2], v.shape[-1]
    p2 = kernels.next_pow2
    shape = f"bh{p2(b * h)}.nq{p2(nq)}.nk{p2(nk)}.d{d}.dv{dv}"
    flops = 2.0 * b * h * nq * nk * (d + dv)
    return kernels.KernelKey(q.device, q.dtype, shape, "" if key_padding_mask is None else "mask",
                             flops)


def _attention_probe(args: tuple, flops: float) -> tuple:
    """A part of an attention call of about `flops` FLOPs to time the kernels on.

    Fewer query rows (at least 128 per thread, so the kernels still use every thread), then
    fewer keys (at least 1024), then fewer batch entries and heads.
    """
    q, k, v, mask = args
    b, h, nq, d = q.shape
    nk, dv = k.shape[-2], v.shape[-1]
    unit = 2.0 * (d + dv)  # FLOPs per query row and key
    rows = min(nq, max(128 * torch.get_num_threads(), math.ceil(flops / (b * h * nk * unit))))
    keys = min(nk, max(1024, math.ceil(flops / (b * h * rows * unit))))
    bb = min(b, max(1, math.ceil(flops / (h * rows * keys * unit))))
    hh = min(h, max(1, math.ceil(flops / (bb * rows * keys * unit))))
    q, k, v = q[:bb, :hh, :rows], k[:bb, :hh, :keys], v[:bb, :hh, :keys]
    return q, k, v, None if mask is None else mask[:bb, :keys]


kernels.register(kernels.KernelOp("attention", {"sdpa": attend_sdpa, "blocked": attend_blocked},
                                  _attention_default, _attention_key, _attention_probe))


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
