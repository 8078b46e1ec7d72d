"""The SAM 2 model: image encoder, prompt encoder and mask decoder, memory encoder, memory
attention and object pointers, with the per-frame steps the propagation engine composes.

Parameter names follow the official checkpoints (``image_encoder.``, ``sam_prompt_encoder.``,
``sam_mask_decoder.``, ``memory_attention.``, ``memory_encoder.``, ``maskmem_tpos_enc``,
``no_mem_embed``, ``no_mem_pos_enc``, ``no_obj_ptr``, ``no_obj_embed_spatial``,
``mask_downsample``, ``obj_ptr_proj``, ``obj_ptr_tpos_proj``), so ``checkpoint["model"]`` loads
with every key and shape checked. All steps work on a batch of ``B`` objects sharing one frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..common import MLP
from ..sam.prompt_encoder import PromptEncoder
from .config import Sam2Config
from .image_encoder import Sam2ImageEncoder
from .mask_decoder import Sam2MaskDecoder
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder

__all__ = ["NO_OBJ_SCORE", "Sam2FrameFeatures", "Sam2HeadsOutput", "Sam2Model", "build_sam2"]

#: Logit the official model gives to every pixel of an absent object.
NO_OBJ_SCORE = -1024.0
#: ``mask_as_output`` turns a binary mask into these logits (sigmoid(-10) ~ 4.5e-5).
MASK_LOGIT_SCALE, MASK_LOGIT_BIAS = 20.0, -10.0


@dataclass(frozen=True)
class Sam2FrameFeatures:
    """Image features of one frame, as the heads and the memory use them.

    Attributes
    ----------
    features : torch.Tensor
        ``(1, C, E, E)`` stride-16 features.
    pos : torch.Tensor
        ``(1, C, E, E)`` their sine position encoding.
    high_res : tuple of torch.Tensor
        ``(1, C/8, 4E, 4E)`` and ``(1, C/4, 2E, 2E)`` decoder skip features (already through
        ``conv_s0`` / ``conv_s1``), or empty without high-resolution features.
    """

    features: torch.Tensor
    pos: torch.Tensor
    high_res: tuple[torch.Tensor, ...]

    def nbytes(self) -> int:
        """Bytes held by the tensors."""
        return sum(t.numel() * t.element_size() for t in (self.features, self.pos, *self.high_res))


@dataclass(frozen=True)
class Sam2HeadsOutput:
    """Output of the SAM heads for ``B`` objects.

    Attributes
    ----------
    low_res_masks : torch.Tensor
        ``(B, 1, 4E, 4E)`` logits of the chosen mask (``NO_OBJ_SCORE`` when absent).
    high_res_masks : torch.Tensor
        ``(B, 1, S, S)`` the same upsampled to the model input.
    ious : torch.Tensor
        ``(B, K)`` predicted IoUs.
    obj_ptr : torch.Tensor
        ``(B, C)`` object pointers.
    object_score_logits : torch.Tensor
        ``(B, 1)`` object presence logits.
    """

    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    ious: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor


def sine_pe_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1D sine/cosine embedding, ``(P,)`` -> ``(P, dim)`` (sines then cosines)."""
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=positions.device)
    freqs = temperature ** (2 * (steps // 2) / half)
    angles = positions.float()[:, None] / freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Sam2Model(nn.Module):
    """SAM 2 / 2.1.

    Parameters
    ----------
    config : Sam2Config
        Architecture and inference flags.
    """

    def __init__(self, config: Sam2Config) -> None:
        super().__init__()
        self.config = cfg = config
        hidden, mem = cfg.hidden_dim, cfg.mem_dim
        grid = cfg.image_embedding_size
        self.image_encoder = Sam2ImageEncoder(cfg.image_encoder)
        self.sam_prompt_encoder = PromptEncoder(hidden, grid, cfg.image_size, cfg.mask_in_chans)
        self.sam_mask_decoder = Sam2MaskDecoder(
            transformer_dim=hidden,
            num_multimask_outputs=cfg.num_multimask_outputs,
            transformer_depth=cfg.transformer_depth,
            transformer_num_heads=cfg.transformer_num_heads,
            transformer_mlp_dim=cfg.transformer_mlp_dim,
            attention_downsample_rate=cfg.attention_downsample_rate,
            iou_head_depth=cfg.iou_head_depth,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim,
            use_high_res_features=cfg.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=cfg.iou_prediction_use_sigmoid,
            dynamic_multimask_via_stability=cfg.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=cfg.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=cfg.dynamic_multimask_stability_thresh,
            pred_obj_scores=cfg.pred_obj_scores,
            pred_obj_scores_mlp=cfg.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=cfg.use_multimask_token_for_obj_ptr,
        )
        ma = cfg.memory_attention
        self.memory_attention = MemoryAttention(
            d_model=ma.d_model, num_layers=ma.num_layers, pos_enc_at_input=ma.pos_enc_at_input,
            dim_feedforward=ma.dim_feedforward, kv_in_dim=ma.kv_dim, activation=ma.activation,
            pos_enc_at_attn=ma.pos_enc_at_attn,
            pos_enc_at_cross_attn_keys=ma.pos_enc_at_cross_attn_keys,
            pos_enc_at_cross_attn_queries=ma.pos_enc_at_cross_attn_queries,
            self_attn_num_heads=ma.num_heads, self_attn_downsample_rate=ma.downsample_rate,
            cross_attn_num_heads=ma.num_heads, cross_attn_downsample_rate=ma.downsample_rate,
            cross_attn_rope_k_repeat=ma.rope_k_repeat, rope_theta=ma.rope_theta,
            feat_sizes=tuple(ma.feat_sizes),
        )
        me = cfg.memory_encoder
        self.memory_encoder = MemoryEncoder(
            out_dim=me.out_dim, in_dim=me.in_dim,
            mask_downsampler_kernel_size=me.mask_downsampler_kernel_size,
            mask_downsampler_stride=me.mask_downsampler_stride,
            mask_downsampler_padding=me.mask_downsampler_padding,
            mask_downsampler_total_stride=me.mask_downsampler_total_stride,
            fuser_num_layers=me.fuser_num_layers, fuser_kernel_size=me.fuser_kernel_size,
            fuser_padding=me.fuser_padding,
            fuser_layer_scale_init_value=me.fuser_layer_scale_init_value,
            fuser_use_dwconv=me.fuser_use_dwconv, fuser_input_projection=me.fuser_input_projection,
            pos_num_feats=me.num_pos_feats, pos_temperature=me.temperature,
            pos_normalize=me.normalize, pos_scale=me.scale,
        )
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, mem))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, hidden))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, hidden))
        if cfg.use_obj_ptrs_in_encoder:
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.obj_ptr_proj: nn.Module = nn.Identity()
        if cfg.use_obj_ptrs_in_encoder:
            self.obj_ptr_proj = (MLP(hidden, hidden, hidden, 3) if cfg.use_mlp_for_obj_ptr_proj
                                 else nn.Linear(hidden, hidden))
        self.obj_ptr_tpos_proj: nn.Module = (nn.Linear(hidden, mem) if cfg.proj_tpos_enc_in_obj_ptrs
                                             else nn.Identity())
        self.no_obj_ptr = (nn.Parameter(torch.zeros(1, hidden))
                           if cfg.pred_obj_scores and cfg.use_obj_ptrs_in_encoder else None)
        self.no_obj_embed_spatial = (nn.Parameter(torch.zeros(1, mem)) if cfg.no_obj_embed_spatial
                                     else None)
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr,
                  self.no_obj_embed_spatial):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        self._maskmem_pos_cache: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ basics
    @property
    def image_size(self) -> int:
        """Side of the square model input (1024 when released)."""
        return int(self.config.image_size)

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    def use_multimask(self, is_init_cond_frame: bool, num_points: int) -> bool:
        """Whether the heads output three masks (official ``_use_multimask``)."""
        cfg = self.config
        return bool(cfg.multimask_output_in_sam
                    and (is_init_cond_frame or cfg.multimask_output_for_tracking)
                    and cfg.multimask_min_pt_num <= num_points <= cfg.multimask_max_pt_num)

    # ------------------------------------------------------------------ image
    def encode_image(self, x: torch.Tensor) -> Sam2FrameFeatures:
        """Run the image encoder on one frame.

        Parameters
        ----------
        x : torch.Tensor
            ``(1, 3, S, S)`` normalised model input.

        Returns
        -------
        Sam2FrameFeatures
            fp32 features.
        """
        out = self.image_encoder(x)
        levels = out.backbone_fpn[-self.config.num_feature_levels:]
        pos = out.vision_pos_enc[-1]
        high_res: tuple[torch.Tensor, ...] = ()
        if self.config.use_high_res_features_in_sam:
            s0, s1 = self.sam_mask_decoder.project_high_res_features(levels[0].float(),
                                                                     levels[1].float())
            high_res = (s0.contiguous(), s1.contiguous())
        return Sam2FrameFeatures(levels[-1].float().contiguous(), pos.float().contiguous(),
                                 high_res)

    # ------------------------------------------------------------------ memory conditioning
    def pix_without_memory(self, feats: Sam2FrameFeatures, batch: int) -> torch.Tensor:
        """Features of an initial conditioning frame (no memory yet), ``(B, C, E, E)``."""
        if self.config.directly_add_no_mem_embed:
            pix = feats.features + self.no_mem_embed.view(1, -1, 1, 1)
            return pix.expand(batch, -1, -1, -1)
        memory = self.no_mem_embed.expand(batch, 1, -1)
        memory_pos = self.no_mem_pos_enc.expand(batch, 1, -1)
        return self._attend(feats, memory, memory_pos, 0, None, batch)

    def pix_with_memory(
        self,
        feats: Sam2FrameFeatures,
        frames_per_obj: list[list[tuple[int, torch.Tensor]]],
        pointers_per_obj: list[list[tuple[int, torch.Tensor]]],
        max_ptrs: int,
    ) -> torch.Tensor:
        """Condition the frame's features on each object's memory (memory attention).

        Parameters
        ----------
        feats : Sam2FrameFeatures
            The current frame.
        frames_per_obj : list of list of (int, torch.Tensor)
            Per object, its memory frames as ``(t_pos, maskmem (1, Cm, E, E))``; ``t_pos`` 0
            for conditioning frames, 1..num_maskmem-1 for recent frames.
        pointers_per_obj : list of list of (int, torch.Tensor)
            Per object, its object pointers as ``(temporal distance, obj_ptr (1, C))``.
        max_ptrs : int
            Normaliser of the pointers' temporal encoding (``min(frames, max_obj_ptrs)``).

        Returns
        -------
        torch.Tensor
            ``(B, C, E, E)``.
        """
        batch = len(frames_per_obj)
        c, h, w = feats.features.shape[1:]
        if not self.memory_attention.fast:  # reference: one batch, padded and masked
            memory, memory_pos, padding, n_ptr_tokens = self._memory_tokens(
                feats, frames_per_obj, pointers_per_obj, max_ptrs)
            return self._attend(feats, memory, memory_pos, n_ptr_tokens, padding, batch)
        # Objects grouped by memory layout (frames, pointers): nothing is padded, and the
        # memory attention's work on the frame alone is shared by the groups.
        layouts: dict[tuple[int, int], list[int]] = {}
        for b, (frames, pointers) in enumerate(zip(frames_per_obj, pointers_per_obj, strict=True)):
            layouts.setdefault((len(frames), len(pointers)), []).append(b)
        groups, members = [], []
        for rows in layouts.values():
            memory, memory_pos, _, n_ptr_tokens = self._memory_tokens(
                feats, [frames_per_obj[b] for b in rows], [pointers_per_obj[b] for b in rows],
                max_ptrs)
            groups.append((memory, memory_pos, n_ptr_tokens, None))
            members.append(rows)
        curr = feats.features.flatten(2).transpose(1, 2)  # (1, HW, C)
        curr_pos = feats.pos.flatten(2).transpose(1, 2)
        outs = self.memory_attention.forward_groups(curr, groups, curr_pos)  # each (B_g, HW, C)
        if len(outs) == 1:
            out = outs[0]
        else:
            out = outs[0].new_empty(batch, h * w, c)
            for rows, group_out in zip(members, outs, strict=True):
                out[torch.as_tensor(rows, device=out.device)] = group_out
        return out.transpose(1, 2).reshape(batch, c, h, w)

    def _memory_tokens(
        self,
        feats: Sam2FrameFeatures,
        frames_per_obj: list[list[tuple[int, torch.Tensor]]],
        pointers_per_obj: list[list[tuple[int, torch.Tensor]]],
        max_ptrs: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Memory tokens of a batch of objects, padded to the longest: ``memory``,
        ``memory_pos`` ``(B, M, Cm)``, ``padding`` ``(B, M)`` (True = padding) and the padded
        number of pointer tokens (see `pix_with_memory`)."""
        cfg = self.config
        device = self.device
        batch = len(frames_per_obj)
        c, h, w = feats.features.shape[1:]
        hw = h * w
        mem = cfg.mem_dim
        n_frames = max(len(f) for f in frames_per_obj)
        split = c // mem if mem < c else 1
        n_ptr_tokens = max((len(p) for p in pointers_per_obj), default=0) * split
        total = n_frames * hw + n_ptr_tokens
        memory = torch.zeros(batch, total, mem, device=device)
        memory_pos = torch.zeros(batch, total, mem, device=device)
        padding = torch.ones(batch, total, dtype=torch.bool, device=device)
        maskmem_pos = self.maskmem_pos(h, w)  # (HW, Cm)
        for b, frames in enumerate(frames_per_obj):
            for i, (t_pos, maskmem) in enumerate(frames):
                rows = slice(i * hw, (i + 1) * hw)
                memory[b, rows] = maskmem.to(device).float().flatten(2)[0].transpose(0, 1)
                memory_pos[b, rows] = (maskmem_pos
                                       + self.maskmem_tpos_enc[cfg.num_maskmem - t_pos - 1].view(1, -1))
                padding[b, rows] = False
        for b, pointers in enumerate(pointers_per_obj):
            if not pointers:
                continue
            dists = torch.tensor([d for d, _ in pointers], dtype=torch.float32, device=device)
            ptrs = torch.cat([p.to(device) for _, p in pointers])  # (P, C)
            if cfg.add_tpos_enc_to_obj_ptrs:
                t_diff_max = max_ptrs - 1
                tpos_dim = c if cfg.proj_tpos_enc_in_obj_ptrs else mem
                pos = self.obj_ptr_tpos_proj(sine_pe_1d(dists / t_diff_max, tpos_dim))
            else:
                pos = ptrs.new_zeros(len(pointers), mem)
            if mem < c:
                ptrs = ptrs.reshape(-1, split, mem).flatten(0, 1)  # each pointer -> split tokens
                pos = pos.repeat_interleave(split, dim=0)
            start = n_frames * hw
            rows = slice(start, start + ptrs.shape[0])
            memory[b, rows] = ptrs
            memory_pos[b, rows] = pos
            padding[b, rows] = False
        return memory, memory_pos, padding, n_ptr_tokens

    def _attend(self, feats: Sam2FrameFeatures, memory: torch.Tensor, memory_pos: torch.Tensor,
                n_ptr_tokens: int, padding: torch.Tensor | None, batch: int) -> torch.Tensor:
        c, h, w = feats.features.shape[1:]
        curr = feats.features.flatten(2).transpose(1, 2)  # (1, HW, C)
        curr_pos = feats.pos.flatten(2).transpose(1, 2)
        out = self.memory_attention(curr, memory, curr_pos=curr_pos, memory_pos=memory_pos,
                                    num_obj_ptr_tokens=n_ptr_tokens,
                                    memory_key_padding_mask=padding)  # (B, HW, C)
        return out.transpose(1, 2).reshape(batch, c, h, w)

    def maskmem_pos(self, h: int, w: int) -> torch.Tensor:
        """Sine position encoding of memory features, ``(H*W, Cm)`` (cached per size)."""
        key = (h, w, self.device)
        cached = self._maskmem_pos_cache.get(key)
        if cached is None:
            enc = self.memory_encoder.position_encoding.encode_grid(h, w, device=self.device)
            cached = enc.reshape(enc.shape[-3], h * w).transpose(0, 1).contiguous()
            self._maskmem_pos_cache[key] = cached
        return cached

    # ------------------------------------------------------------------ heads
    def sam_heads(
        self,
        pix: torch.Tensor,
        feats: Sam2FrameFeatures,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> Sam2HeadsOutput:
        """Prompt encoder + mask decoder + object pointer (official ``_forward_sam_heads``).

        Parameters
        ----------
        pix : torch.Tensor
            ``(B, C, E, E)`` (memory-conditioned) features.
        feats : Sam2FrameFeatures
            The frame (for the high-resolution skip features).
        points : tuple of torch.Tensor, optional
            ``(B, P, 2)`` (x, y) in the model frame and ``(B, P)`` int labels.
        mask_input : torch.Tensor, optional
            ``(B, 1, h, w)`` mask logits (resized to ``4E`` if needed).
        multimask : bool
            Three candidate masks; the best by predicted IoU is chosen.

        Returns
        -------
        Sam2HeadsOutput
        """
        cfg = self.config
        batch = pix.shape[0]
        device = pix.device
        if points is None:
            coords = torch.zeros(batch, 1, 2, device=device)
            labels = -torch.ones(batch, 1, dtype=torch.int32, device=device)
        else:
            coords, labels = points
        if mask_input is not None:
            size = cfg.low_res_mask_size
            if tuple(mask_input.shape[-2:]) != (size, size):
                mask_input = F.interpolate(mask_input.float(), (size, size), mode="bilinear",
                                           align_corners=False, antialias=True)
        sparse, dense = self.sam_prompt_encoder((coords, labels), None, mask_input)
        out = self.sam_mask_decoder(pix, self.sam_prompt_encoder.get_dense_pe(), sparse, dense,
                                    multimask_output=multimask, repeat_image=False,
                                    high_res_features=[f.expand(batch, -1, -1, -1)
                                                       for f in feats.high_res] or None)
        masks, ious, tokens, obj_scores = (out.masks, out.iou_predictions, out.sam_tokens_out,
                                           out.object_score_logits)
        appearing = obj_scores > 0
        if cfg.pred_obj_scores:
            masks = torch.where(appearing[:, :, None, None], masks,
                                torch.as_tensor(NO_OBJ_SCORE, dtype=masks.dtype))
        masks = masks.float()
        token = tokens[:, 0]
        if multimask:
            best = ious.argmax(dim=-1)
            rows = torch.arange(batch, device=device)
            low = masks[rows, best][:, None]
            if tokens.shape[1] > 1:
                token = tokens[rows, best]
        else:
            low = masks
        high = F.interpolate(low, (self.image_size, self.image_size), mode="bilinear",
                             align_corners=False)
        obj_ptr = self.obj_ptr_proj(token)
        obj_ptr = self._occlusion_pointer(obj_ptr, appearing.float(), obj_scores)
        return Sam2HeadsOutput(low, high, ious, obj_ptr, obj_scores)

    def _occlusion_pointer(self, obj_ptr: torch.Tensor, appearing: torch.Tensor,
                           obj_scores: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if not cfg.pred_obj_scores or self.no_obj_ptr is None:
            return obj_ptr
        weight = obj_scores.sigmoid() if cfg.soft_no_obj_ptr else appearing
        if cfg.fixed_no_obj_ptr:
            obj_ptr = weight * obj_ptr
        return obj_ptr + (1 - weight) * self.no_obj_ptr

    def mask_as_output(self, feats: Sam2FrameFeatures, masks: torch.Tensor) -> Sam2HeadsOutput:
        """A mask prompt used directly as the output (official ``_use_mask_as_output``).

        Parameters
        ----------
        feats : Sam2FrameFeatures
            The frame.
        masks : torch.Tensor
            ``(B, 1, S, S)`` float 0/1.

        Returns
        -------
        Sam2HeadsOutput
        """
        batch = masks.shape[0]
        high = masks.float() * MASK_LOGIT_SCALE + MASK_LOGIT_BIAS
        low = F.interpolate(high, (high.shape[-2] // 4, high.shape[-1] // 4), mode="bilinear",
                            align_corners=False, antialias=True)
        ious = masks.new_ones(batch, 1).float()
        if not self.config.use_obj_ptrs_in_encoder:
            obj_ptr = masks.new_zeros(batch, self.config.hidden_dim).float()
        else:
            raw = feats.features.expand(batch, -1, -1, -1)
            obj_ptr = self.sam_heads(raw, feats, mask_input=self.mask_downsample(masks.float())).obj_ptr
        appearing = (masks.flatten(1).float() > 0).any(dim=1, keepdim=True).float()
        obj_scores = MASK_LOGIT_SCALE * appearing + MASK_LOGIT_BIAS
        if self.config.pred_obj_scores and self.no_obj_ptr is not None:
            if self.config.fixed_no_obj_ptr:
                obj_ptr = appearing * obj_ptr
            obj_ptr = obj_ptr + (1 - appearing) * self.no_obj_ptr
        return Sam2HeadsOutput(low, high, ious, obj_ptr, obj_scores)

    # ------------------------------------------------------------------ memory encoder
    def encode_memory(self, feats: Sam2FrameFeatures, high_res_masks: torch.Tensor,
                      object_score_logits: torch.Tensor, from_points: bool) -> torch.Tensor:
        """Encode the frame and ``B`` predicted masks into memory (official ``_encode_new_memory``).

        Parameters
        ----------
        feats : Sam2FrameFeatures
            The frame.
        high_res_masks : torch.Tensor
            ``(B, 1, S, S)`` mask logits.
        object_score_logits : torch.Tensor
            ``(B, 1)``.
        from_points : bool
            The masks come from prompts (binarised when ``binarize_mask_from_pts_for_mem_enc``).

        Returns
        -------
        torch.Tensor
            ``(B, Cm, E, E)`` float32 memory features.
        """
        cfg = self.config
        masks = high_res_masks.float()
        if cfg.non_overlap_masks_for_mem_enc and masks.shape[0] > 1:
            winner = masks.argmax(dim=0, keepdim=True)
            index = torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
            masks = torch.where(winner == index, masks, masks.clamp(max=-10.0))
        if cfg.binarize_mask_from_pts_for_mem_enc and from_points:
            masks = (masks > 0).float()
        else:
            masks = torch.sigmoid(masks)
        if cfg.sigmoid_scale_for_mem_enc != 1.0:
            masks = masks * cfg.sigmoid_scale_for_mem_enc
        if cfg.sigmoid_bias_for_mem_enc != 0.0:
            masks = masks + cfg.sigmoid_bias_for_mem_enc
        maskmem, _ = self.memory_encoder(feats.features, masks, skip_mask_sigmoid=True)
        if self.no_obj_embed_spatial is not None:
            absent = 1.0 - (object_score_logits > 0).float()  # (B, 1)
            maskmem = maskmem + absent[:, :, None, None] * self.no_obj_embed_spatial[..., None, None]
        return maskmem


def build_sam2(config: Sam2Config) -> Sam2Model:
    """Build a randomly initialised SAM 2 in eval mode."""
    return Sam2Model(config).eval()
