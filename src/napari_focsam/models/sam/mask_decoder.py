"""SAM mask decoder: two-way transformer, upscaling and hypernetwork mask heads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..common import MLP, LayerNorm2d, conv_transpose_2x2_channels_last
from .config import MaskDecoderConfig
from .transformer import TwoWayTransformer


@dataclass(frozen=True)
class MaskDecoderOutput:
    """What the mask decoder returns.

    Attributes
    ----------
    low_res_logits : torch.Tensor
        ``B x K x 4E x 4E`` mask logits (K = 3 in multimask mode, else 1).
    iou_predictions : torch.Tensor
        ``B x K`` predicted IoU of each mask.
    mask_tokens : torch.Tensor
        ``B x M x C`` all M mask-token outputs of the transformer (after the final attention
        and norm, before the hypernetwork MLPs); token 0 is the single-mask token that
        FocSAM's refiner consumes.
    """

    low_res_logits: torch.Tensor
    iou_predictions: torch.Tensor
    mask_tokens: torch.Tensor


class MaskDecoder(nn.Module):
    """Predicts masks from image embeddings and prompt tokens.

    Parameters
    ----------
    cfg : MaskDecoderConfig
        Architecture.
    """

    def __init__(self, cfg: MaskDecoderConfig) -> None:
        super().__init__()
        dim = cfg.transformer_dim
        self.num_multimask_outputs = cfg.num_multimask_outputs
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(cfg.depth, dim, cfg.num_heads, cfg.mlp_dim,
                                             cfg.attention_downsample_rate)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, cfg.iou_head_hidden_dim, self.num_mask_tokens,
                                       cfg.iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> MaskDecoderOutput:
        """Decode masks.

        Parameters
        ----------
        image_embeddings : torch.Tensor
            ``1 x C x E x E`` or ``B x C x E x E``.
        image_pe : torch.Tensor
            ``1 x C x E x E`` positional encoding of the grid.
        sparse_prompt_embeddings : torch.Tensor
            ``B x T x C`` point/box tokens.
        dense_prompt_embeddings : torch.Tensor
            ``B x C x E x E`` mask embedding.
        multimask_output : bool
            Return the multimask tokens 1..M-1 instead of token 0.

        Returns
        -------
        MaskDecoderOutput
        """
        b = sparse_prompt_embeddings.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens[None].expand(b, -1, -1), sparse_prompt_embeddings], dim=1)

        src = image_embeddings.expand(b, -1, -1, -1) + dense_prompt_embeddings
        pos = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape  # E x E grid

        hs, src = self.transformer(src, pos, tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1:1 + self.num_mask_tokens]

        hyper = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # B x M x C/8
        masks = upscale_and_project(src.reshape(b, h, w, c), self.output_upscaling, hyper)
        iou = self.iou_prediction_head(iou_token_out)

        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return MaskDecoderOutput(masks[:, chosen], iou[:, chosen], mask_tokens_out)


def upscale_and_project(tokens: torch.Tensor, upscaling: nn.Sequential,
                        hyper: torch.Tensor) -> torch.Tensor:
    """SAM's 4x mask upscaling followed by the hypernetwork dot products.

    Equivalent to ``hyper @ upscaling(tokens as B x C x H x W)`` with ``upscaling`` =
    ConvTranspose2d(2, 2) -> LayerNorm2d -> GELU -> ConvTranspose2d(2, 2) -> GELU, computed
    channels-last so that no large tensor is transposed.

    Parameters
    ----------
    tokens : torch.Tensor
        ``B x H x W x C`` image tokens out of the two-way transformer.
    upscaling : nn.Sequential
        The decoder's ``output_upscaling`` (indices 0, 1, 3 hold parameters).
    hyper : torch.Tensor
        ``B x M x C/8`` hypernetwork outputs, one per mask token.

    Returns
    -------
    torch.Tensor
        ``B x M x 4H x 4W`` mask logits.
    """
    b, h, w, _ = tokens.shape
    up1, norm1, act1, up2, act2 = upscaling
    x = conv_transpose_2x2_channels_last(tokens, up1)  # B x H x W x 2 x 2 x C1
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, -1)  # B x 2H x 2W x C1
    x = act1(F.layer_norm(x, x.shape[-1:], norm1.weight, norm1.bias, norm1.eps))
    x = act2(conv_transpose_2x2_channels_last(x, up2))  # B x 2H x 2W x 2 x 2 x C2
    m = hyper.shape[1]
    logits = x.reshape(b, -1, x.shape[-1]) @ hyper.transpose(1, 2)  # B x (2H 2W 2 2) x M
    logits = logits.view(b, 2 * h, 2 * w, 2, 2, m).permute(0, 5, 1, 3, 2, 4)
    return logits.reshape(b, m, 4 * h, 4 * w)
