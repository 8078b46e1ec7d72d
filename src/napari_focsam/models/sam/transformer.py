"""SAM's two-way transformer: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common import MLPBlock, merge_heads, split_heads


class Attention(nn.Module):
    """Multi-head attention with an optional internal width reduction.

    Parameters
    ----------
    embedding_dim : int
        Input / output width.
    num_heads : int
        Heads.
    downsample_rate : int
        The q/k/v projections map to ``embedding_dim // downsample_rate``.
    kv_in_dim : int or None
        Width of the key/value inputs when it differs from ``embedding_dim``.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1,
                 kv_in_dim: int | None = None) -> None:
        super().__init__()
        internal = embedding_dim // downsample_rate
        kv_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, internal)
        self.k_proj = nn.Linear(kv_dim, internal)
        self.v_proj = nn.Linear(kv_dim, internal)
        self.out_proj = nn.Linear(internal, embedding_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``B x Nq x C``, ``B x Nk x Ckv``, ``B x Nk x Ckv`` -> ``B x Nq x C``."""
        heads = self.num_heads
        q, k, v = (split_heads(p(t), heads) for p, t in ((self.q_proj, q), (self.k_proj, k),
                                                          (self.v_proj, v)))
        out = F.scaled_dot_product_attention(q, k, v)  # B x heads x Nq x Ch
        return self.out_proj(merge_heads(out))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image, token MLP, image->token (post-norm each).

    Parameters
    ----------
    embedding_dim, num_heads, mlp_dim : int
        Width, heads and MLP hidden width.
    attention_downsample_rate : int
        Width reduction of the two cross-attentions.
    skip_first_layer_pe : bool
        First block: the self-attention sees no positional encoding and has no residual.
    """

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int,
                 attention_downsample_rate: int, skip_first_layer_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``B x N x C`` and image ``B x HW x C`` (with their encodings) -> updated pair."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        keys_pe = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, keys_pe, keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(keys_pe, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Stack of :class:`TwoWayAttentionBlock` plus a final token->image attention.

    Parameters
    ----------
    depth, embedding_dim, num_heads, mlp_dim : int
        Blocks, width, heads, MLP hidden width.
    attention_downsample_rate : int
        Width reduction of the cross-attentions.
    """

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer.

        Parameters
        ----------
        image_embedding, image_pe : torch.Tensor
            ``B x C x H x W``.
        point_embedding : torch.Tensor
            ``B x N x C`` tokens (also their positional encoding).

        Returns
        -------
        queries : torch.Tensor
            ``B x N x C`` processed tokens.
        keys : torch.Tensor
            ``B x HW x C`` processed image tokens.
        """
        # B x C x H x W -> B x HW x C, contiguous for the linear layers
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys
