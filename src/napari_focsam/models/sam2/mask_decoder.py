"""SAM 2 mask decoder: SAM's two-way decoder plus high-resolution skips and an object score.

Differences from SAM 1's :class:`~napari_focsam.models.sam.mask_decoder.MaskDecoder`:

* an optional ``obj_score_token`` is placed *before* the IoU token (token order
  ``[obj_score, iou, mask_0 .. mask_M-1, prompts...]``) and read by ``pred_obj_score_head``;
* the 4x upscaling adds the stride-8 / stride-4 backbone features between its steps. The
  ``conv_s0`` / ``conv_s1`` 1x1 projections of those features belong to this module's
  parameters, but the official model applies them once per image (``SAM2Base.forward_image``),
  not in the decoder: :meth:`Sam2MaskDecoder.forward` expects already projected features, made
  with :meth:`Sam2MaskDecoder.project_high_res_features`;
* the IoU head may end with a sigmoid, and single-mask output can fall back to the best
  multimask output when the single mask is unstable;
* the token MLP of the two-way transformer is stored as ``mlp.layers.{0,1}`` (SAM 1:
  ``mlp.lin1`` / ``mlp.lin2``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..common import MLP, LayerNorm2d, conv_transpose_2x2_channels_last
from ..sam.transformer import TwoWayTransformer

logger = logging.getLogger(__name__)

#: Object score logit reported when the decoder has no object-score head (sigmoid(10) ~ 1).
DEFAULT_OBJECT_SCORE_LOGIT = 10.0


@dataclass(frozen=True)
class Sam2DecoderOutput:
    """What :class:`Sam2MaskDecoder` returns (the official 4-tuple, named).

    Attributes
    ----------
    masks : torch.Tensor
        ``B x K x 4E x 4E`` low-resolution mask logits; ``K = num_multimask_outputs`` in
        multimask mode, else 1.
    iou_predictions : torch.Tensor
        ``B x K`` predicted IoU of each returned mask.
    sam_tokens_out : torch.Tensor
        ``B x T x C`` mask-token outputs for the object pointer: the multimask tokens
        ``1..M-1`` (``T = K``) when ``multimask_output`` and ``use_multimask_token_for_obj_ptr``,
        otherwise the single-mask token 0 (``T = 1``), even when a dynamic fallback replaced the
        returned mask by a multimask output.
    object_score_logits : torch.Tensor
        ``B x 1`` object-presence logits (constant 10 without ``pred_obj_scores``).
    """

    masks: torch.Tensor
    iou_predictions: torch.Tensor
    sam_tokens_out: torch.Tensor
    object_score_logits: torch.Tensor


class Sam2TwoWayTransformer(TwoWayTransformer):
    """SAM's two-way transformer with SAM 2's parameter layout.

    Same computation as :class:`~napari_focsam.models.sam.transformer.TwoWayTransformer`; only
    the token MLP of each block is an ``MLP`` (``mlp.layers.0`` / ``mlp.layers.1``, ReLU).

    Parameters
    ----------
    depth, embedding_dim, num_heads, mlp_dim : int
        Blocks, width, heads, MLP hidden width.
    attention_downsample_rate : int
        Width reduction of the cross-attentions.
    """

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 attention_downsample_rate: int = 2) -> None:
        super().__init__(depth, embedding_dim, num_heads, mlp_dim, attention_downsample_rate)
        for layer in self.layers:
            layer.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2)


def stability_scores(mask_logits: torch.Tensor, delta: float) -> torch.Tensor:
    """IoU between the masks thresholded at ``+delta`` and at ``-delta``.

    Parameters
    ----------
    mask_logits : torch.Tensor
        ``... x H x W`` logits.
    delta : float
        Threshold offset.

    Returns
    -------
    torch.Tensor
        ``...`` float scores in ``[0, 1]``; 1 where no pixel exceeds ``-delta``.
    """
    flat = mask_logits.flatten(-2)
    inter = (flat > delta).sum(-1).float()
    union = (flat > -delta).sum(-1).float()
    return torch.where(union > 0, inter / union, torch.ones_like(inter))


def select_single_mask_with_fallback(
    masks: torch.Tensor, iou: torch.Tensor, delta: float, thresh: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token 0's mask, or the best multimask output where token 0's mask is unstable.

    Parameters
    ----------
    masks : torch.Tensor
        ``B x M x H x W`` logits of all M mask tokens (token 0 = single-mask token).
    iou : torch.Tensor
        ``B x M`` predicted IoUs.
    delta, thresh : float
        Token 0's mask is kept where its :func:`stability_scores` (with ``delta``) is
        ``>= thresh``; otherwise the multimask output (tokens 1..M-1) with the highest
        predicted IoU (first on ties) replaces it, together with its IoU.

    Returns
    -------
    masks : torch.Tensor
        ``B x 1 x H x W``.
    iou : torch.Tensor
        ``B x 1``.
    """
    best = iou[:, 1:].argmax(dim=-1) + 1  # B, index into all M tokens
    rows = torch.arange(masks.shape[0], device=masks.device)
    best_masks, best_iou = masks[rows, best][:, None], iou[rows, best][:, None]
    stable = stability_scores(masks[:, 0], delta) >= thresh  # B
    out_masks = torch.where(stable[:, None, None, None], masks[:, :1], best_masks)
    out_iou = torch.where(stable[:, None], iou[:, :1], best_iou)
    return out_masks, out_iou


class Sam2MaskDecoder(nn.Module):
    """SAM 2's mask decoder (official parameter names, so ``sam_mask_decoder.*`` keys load).

    Parameters
    ----------
    transformer_dim : int
        Width ``C`` of tokens and image embeddings.
    num_multimask_outputs : int
        Multimask outputs; the decoder has ``num_multimask_outputs + 1`` mask tokens.
    transformer_depth, transformer_num_heads, transformer_mlp_dim : int
        Two-way transformer blocks, heads and token-MLP width (official: 2, 8, 2048).
    attention_downsample_rate : int
        Width reduction of the transformer's cross-attentions (official: 2).
    iou_head_depth, iou_head_hidden_dim : int
        IoU prediction MLP (official: 3, 256).
    use_high_res_features : bool
        Add projected stride-4/stride-8 features during upscaling (``conv_s0`` / ``conv_s1``).
    iou_prediction_use_sigmoid : bool
        Sigmoid on the IoU head output.
    dynamic_multimask_via_stability : bool
        In eval mode, single-mask output falls back to the best multimask output when token 0's
        mask is unstable (see :func:`select_single_mask_with_fallback`).
    dynamic_multimask_stability_delta, dynamic_multimask_stability_thresh : float
        Stability threshold offset and minimum score.
    pred_obj_scores : bool
        Add ``obj_score_token`` and ``pred_obj_score_head``.
    pred_obj_scores_mlp : bool
        The object-score head is a 3-layer MLP instead of a Linear.
    use_multimask_token_for_obj_ptr : bool
        In multimask mode return the multimask tokens as ``sam_tokens_out``.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        num_multimask_outputs: int = 3,
        transformer_depth: int = 2,
        transformer_num_heads: int = 8,
        transformer_mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
    ) -> None:
        super().__init__()
        dim = transformer_dim
        self.transformer_dim = dim
        self.transformer = Sam2TwoWayTransformer(transformer_depth, dim, transformer_num_heads,
                                                 transformer_mlp_dim, attention_downsample_rate)
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth,
                                       sigmoid_output=iou_prediction_use_sigmoid)
        if pred_obj_scores:
            self.pred_obj_score_head: nn.Module = (
                MLP(dim, dim, 1, 3) if pred_obj_scores_mlp else nn.Linear(dim, 1)
            )
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def project_high_res_features(
        self, feat_s0: torch.Tensor, feat_s1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project backbone features for the decoder (once per image; official ``forward_image``).

        Parameters
        ----------
        feat_s0 : torch.Tensor
            ``N x C x 4E x 4E`` stride-4 FPN level.
        feat_s1 : torch.Tensor
            ``N x C x 2E x 2E`` stride-8 FPN level.

        Returns
        -------
        tuple of torch.Tensor
            ``N x C/8 x 4E x 4E`` and ``N x C/4 x 2E x 2E``: the ``high_res_features`` of
            :meth:`forward`.
        """
        if not self.use_high_res_features:
            raise RuntimeError("this decoder was built with use_high_res_features=False")
        return self.conv_s0(feat_s0), self.conv_s1(feat_s1)

    def _output_tokens(self) -> tuple[torch.Tensor, int]:
        """Learned output tokens ``T0 x C`` and the index of the IoU token."""
        parts = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            parts.insert(0, self.obj_score_token.weight)
        return torch.cat(parts, dim=0), int(self.pred_obj_scores)

    def _upscale(self, keys: torch.Tensor, hw: tuple[int, int],
                 high_res_features: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """4x upscaling of the transformer's image tokens, channels last.

        Parameters
        ----------
        keys : torch.Tensor
            ``B x HW x C`` image tokens.
        hw : tuple of int
            ``(H, W)`` = ``(E, E)``.
        high_res_features : (``N x C/8 x 4H x 4W``, ``N x C/4 x 2H x 2W``) or None
            Projected features, ``N`` = 1 (shared image, broadcast) or ``B``.

        Returns
        -------
        torch.Tensor
            ``B x 2H x 2W x 2 x 2 x C/8``: output pixel ``(2i + di, 2j + dj)`` of the 4H x 4W
            grid at ``[:, i, j, di, dj]``.
        """
        b = keys.shape[0]
        h, w = hw
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        x = conv_transpose_2x2_channels_last(keys.reshape(b, h, w, -1), dc1)  # B x H x W x 2 x 2 x C1
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, -1)  # B x 2H x 2W x C1
        if high_res_features is not None:
            feat_s0, feat_s1 = high_res_features
            x = x + feat_s1.permute(0, 2, 3, 1)
        x = act1(F.layer_norm(x, x.shape[-1:], ln1.weight, ln1.bias, ln1.eps))
        x = conv_transpose_2x2_channels_last(x, dc2)  # B x 2H x 2W x 2 x 2 x C2
        if high_res_features is not None:
            n, c2 = feat_s0.shape[:2]
            # N x C2 x 4H x 4W -> N x 2H x 2W x 2 x 2 x C2 (same pixel order as x)
            x = x + feat_s0.reshape(n, c2, 2 * h, 2, 2 * w, 2).permute(0, 2, 4, 3, 5, 1)
        return act2(x)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor] | None = None,
    ) -> Sam2DecoderOutput:
        """Decode masks for ``B`` prompt sets (official ``MaskDecoder.forward`` semantics).

        Parameters
        ----------
        image_embeddings : torch.Tensor
            ``B x C x E x E``, or ``1 x C x E x E`` with ``repeat_image`` (one image shared by
            the B objects; broadcast, not copied).
        image_pe : torch.Tensor
            ``1 x C x E x E`` positional encoding of the grid.
        sparse_prompt_embeddings : torch.Tensor
            ``B x T x C`` point/box tokens.
        dense_prompt_embeddings : torch.Tensor
            ``B x C x E x E`` (or ``1 x C x E x E``) mask embedding.
        multimask_output : bool
            Return the multimask outputs (tokens 1..M-1) instead of a single mask.
        repeat_image : bool
            ``image_embeddings`` holds one image for all B prompt sets.
        high_res_features : (``N x C/8 x 4E x 4E``, ``N x C/4 x 2E x 2E``) or None
            Already projected (:meth:`project_high_res_features`) stride-4 and stride-8
            features, ``N`` = 1 or B; required when ``use_high_res_features``.

        Returns
        -------
        Sam2DecoderOutput
        """
        b = sparse_prompt_embeddings.shape[0]
        if not repeat_image and image_embeddings.shape[0] != b:
            raise ValueError(f"{image_embeddings.shape[0]} image embeddings for {b} prompt sets "
                             "(pass repeat_image=True to share one image)")
        if repeat_image and image_embeddings.shape[0] != 1:
            raise ValueError("repeat_image needs a single image embedding (1 x C x E x E)")
        if self.use_high_res_features and high_res_features is None:
            raise ValueError("this decoder needs high_res_features (use_high_res_features=True)")
        high_res = tuple(high_res_features) if self.use_high_res_features else None

        out_tokens, s = self._output_tokens()
        tokens = torch.cat([out_tokens[None].expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        src = image_embeddings + dense_prompt_embeddings
        if src.shape[0] != b:  # neither image nor dense prompt is per object
            src = src.expand(b, -1, -1, -1)
        pos = image_pe.expand(b, -1, -1, -1)
        h, w = src.shape[-2:]

        hs, keys = self.transformer(src, pos, tokens)  # B x T' x C, B x HW x C
        iou_token_out = hs[:, s]
        mask_tokens_out = hs[:, s + 1:s + 1 + self.num_mask_tokens]  # B x M x C

        hyper = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # B x M x C/8
        up = self._upscale(keys, (h, w), high_res)  # B x 2H x 2W x 2 x 2 x C/8
        m = hyper.shape[1]
        logits = up.reshape(b, -1, up.shape[-1]) @ hyper.transpose(1, 2)  # B x (2H 2W 2 2) x M
        masks = logits.view(b, 2 * h, 2 * w, 2, 2, m).permute(0, 5, 1, 3, 2, 4)
        masks = masks.reshape(b, m, 4 * h, 4 * w)

        iou = self.iou_prediction_head(iou_token_out)  # B x M
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0])
        else:
            object_score_logits = iou.new_full((b, 1), DEFAULT_OBJECT_SCORE_LOGIT)

        if multimask_output:
            masks, iou = masks[:, 1:], iou[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou = select_single_mask_with_fallback(
                masks, iou, self.dynamic_multimask_stability_delta,
                self.dynamic_multimask_stability_thresh)
        else:
            masks, iou = masks[:, :1], iou[:, :1]

        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            sam_tokens_out = mask_tokens_out[:, :1]
        return Sam2DecoderOutput(masks, iou, sam_tokens_out, object_score_logits)
