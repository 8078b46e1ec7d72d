"""Building blocks of FocSAM's FocusRefiner, per window of the embedding grid.

Attribute names follow the official ``refine_head.blocks.{i}.{img2cls,cls2img}`` keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common import merge_heads, split_heads
from .deform_conv import DeformLayer


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
        """``B x Nq x C``, ``B x Nk x C``, ``B x Nk x C`` -> ``B x Nq x C``."""
        heads = self.num_heads
        q, k, v = (split_heads(p(t), heads) for p, t in ((self.q_proj, q), (self.k_proj, k),
                                                          (self.v_proj, v)))
        k = F.pad(k, (0, 0, 0, 1))  # B x heads x (Nk + 1) x Ch, last key all zero
        v = F.pad(v, (0, 0, 0, 1))
        out = F.scaled_dot_product_attention(q, k, v)  # B x heads x Nq x Ch
        return self.proj(merge_heads(out))


class CrossAttentionBlock(nn.Module):
    """The window's class token reads the window's image tokens (``img2cls``).

    ``u = cls + gamma1 * Attn(LN_q(cls), LN_kv(t), LN_kv(t))``;
    ``out = u + gamma2 * MLP(LN(u))``.

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

    def forward(self, cls: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``cls`` ``N x 1 x C`` and window tokens ``N x T x C`` -> ``N x 1 x C``."""
        kv = self.norm_kv(tokens)
        x = cls + self.gamma1 * self.attn(self.norm_q(cls), kv, kv)
        return x + self.gamma2 * self.mlp(self.norm(x))


class PDyReLU(nn.Module):
    """Prompt-conditioned dynamic ReLU: the max of a pixel-wise and a channel-wise affine map.

    Pixel branch: ``s = x . cls`` per token, ``theta = tanh(MLP(s)) * exp(pixel_scale) +
    pixel_bias`` (1 -> C -> 2C). Channel branch: the same on the token mean (C -> C -> 2C).
    Each ``theta`` gives slopes (first C) and offsets (last C); the output is the elementwise
    max of the two affine maps.

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

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Tokens ``N x T x C`` conditioned on ``cls`` ``N x 1 x C`` -> ``N x T x C``."""
        c = self.channels
        pixel = self.pixel_mlp(x @ cls.transpose(-1, -2))  # N x T x 2C
        pixel = pixel * self.pixel_scale.exp() + self.pixel_bias
        pixel_act = pixel[..., :c] * x + pixel[..., c:]
        channel = self.channel_mlp(x.mean(dim=1, keepdim=True))  # N x 1 x 2C
        channel = channel * self.channel_scale.exp() + self.channel_bias
        channel_act = channel[..., :c] * x + channel[..., c:]
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
        """Windows ``N x C x h x w`` with their class tokens ``N x 1 x C`` -> ``N x C x h x w``."""
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # N x hw x C
        a = self.relu1(self.norm1(self.attn(tokens, tokens, tokens)), self.cls_proj(cls))
        y = x + self.gamma1 * a.transpose(1, 2).reshape(n, c, h, w)
        return x + self.gamma2 * F.relu(self.norm2(self.conv2(y)))
