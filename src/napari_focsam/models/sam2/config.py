"""Frozen dataclass configs for SAM 2 / SAM 2.1 (sam2 1.1.0 architecture).

Field names are the official constructor / yaml names in snake_case, so a value of the
official config ``model.image_encoder.trunk.window_spec`` lives at
``Sam2Config.image_encoder.trunk.window_spec`` and the flag ``model.pred_obj_scores`` at
``Sam2Config.pred_obj_scores``. Nested official modules that have no class of their own here
are flattened with a prefix (``memory_encoder.mask_downsampler.stride`` ->
``MemoryEncoderConfig.mask_downsampler_stride``).

Defaults
--------
* :class:`Sam2Config` flags: the defaults of the official ``SAM2Base.__init__`` /
  ``SAM2VideoPredictor.__init__`` (note ``image_size=512`` there; every released config sets
  1024).
* Sub-configs: the value the released SAM 2.1 yaml files set, else the official class default.
  :class:`HieraConfig` defaults are the official ``Hiera`` defaults (base-plus stages and
  windows at the tiny/small width 96), and :class:`FpnNeckConfig` defaults fit them.
* :meth:`Sam2Config.from_official_config` fills keys missing from an official config with the
  official *class* defaults (what hydra would instantiate), not with the dataclass defaults.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

#: ImageNet statistics (0..1 range, RGB) used by the official SAM 2 preprocessing.
PIXEL_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
PIXEL_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Flags the official ``build_sam2_video_predictor(..., apply_postprocessing=True)`` adds as
#: hydra overrides on top of a released yaml (``build_sam2`` adds only the first three).
VIDEO_PREDICTOR_OVERRIDES: dict[str, Any] = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
    "binarize_mask_from_pts_for_mem_enc": True,
    "fill_hole_area": 8,
}


def _ints(value: Sequence[Any] | None) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(v) for v in value)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = (int(v) for v in value)
    return (first, second)


@dataclass(frozen=True)
class HieraBlockSpec:
    """Shape of one Hiera ``MultiScaleBlock`` (derived from :class:`HieraConfig`).

    Attributes
    ----------
    dim, dim_out : int
        Input and output width; ``dim != dim_out`` adds the ``proj`` shortcut projection.
    num_heads : int
        Attention heads (of ``dim_out``).
    window_size : int
        Side of the attention windows on the block's *input* grid; 0 = global attention.
    q_stride : tuple of int or None
        Query max-pool stride ``(sh, sw)`` (stage transition), or None.
    """

    dim: int
    dim_out: int
    num_heads: int
    window_size: int
    q_stride: tuple[int, int] | None


@dataclass(frozen=True)
class HieraConfig:
    """Hiera trunk (``sam2.modeling.backbones.hieradet.Hiera``).

    Parameters
    ----------
    embed_dim, num_heads : int
        Width and heads of the first stage.
    stages : tuple of int
        Blocks per stage.
    global_att_blocks : tuple of int
        Blocks with global attention; all others use windows of ``window_spec[stage]``.
    window_spec : tuple of int
        Window side per stage (the first block of a stage still uses the previous stage's).
    window_pos_embed_bkg_spatial_size : tuple of int
        Size of the learned background position embedding (``pos_embed``), interpolated
        bicubically to the patch grid.
    q_pool : int
        Number of stage transitions (from the first) that max-pool the queries.
    q_stride : tuple of int
        Pooling stride at those transitions.
    dim_mul, head_mul : float
        Width / head multipliers at every stage transition.
    mlp_ratio : float
        MLP hidden width as a multiple of the block width.
    norm_eps : float
        LayerNorm epsilon in the blocks (official: 1e-6).
    patch_kernel_size, patch_stride, patch_padding : tuple of int
        Patch embedding convolution (official: 7x7, stride 4, padding 3).
    in_chans : int
        Input image channels.
    drop_path_rate : float
        Stochastic depth during training; irrelevant at inference (kept for completeness).
    return_interm_layers : bool
        Return every stage's output (True in every released model).
    """

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)
    global_att_blocks: tuple[int, ...] = (12, 16, 20)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    patch_kernel_size: tuple[int, int] = (7, 7)
    patch_stride: tuple[int, int] = (4, 4)
    patch_padding: tuple[int, int] = (3, 3)
    in_chans: int = 3
    drop_path_rate: float = 0.0
    return_interm_layers: bool = True

    def __post_init__(self) -> None:
        for name in ("stages", "global_att_blocks", "window_spec"):
            object.__setattr__(self, name, _ints(getattr(self, name)))
        for name in ("window_pos_embed_bkg_spatial_size", "q_stride", "patch_kernel_size",
                     "patch_stride", "patch_padding"):
            object.__setattr__(self, name, _pair(getattr(self, name)))
        if len(self.stages) != len(self.window_spec):
            raise ValueError(f"stages {self.stages} and window_spec {self.window_spec} differ in length")
        if not 0 <= self.q_pool <= len(self.stages) - 1:
            raise ValueError(f"q_pool {self.q_pool} outside 0..{len(self.stages) - 1}")
        bad = [i for i in self.global_att_blocks if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"global_att_blocks {bad} outside 0..{self.depth - 1}")
        for i, spec in enumerate(self.block_specs):
            if spec.dim_out % spec.num_heads:
                raise ValueError(f"block {i}: width {spec.dim_out} not divisible by {spec.num_heads} heads")
            if spec.q_stride and spec.window_size and (
                    spec.window_size % spec.q_stride[0] or spec.window_size % spec.q_stride[1]):
                raise ValueError(
                    f"block {i}: window {spec.window_size} is not a multiple of q_stride {spec.q_stride}"
                    " (the official code cannot run such a config either)")

    @property
    def depth(self) -> int:
        """Total number of blocks."""
        return sum(self.stages)

    @property
    def stage_ends(self) -> tuple[int, ...]:
        """Index of the last block of every stage."""
        ends, total = [], 0
        for n in self.stages:
            total += n
            ends.append(total - 1)
        return tuple(ends)

    @property
    def q_pool_blocks(self) -> tuple[int, ...]:
        """Blocks that pool their queries (the first block of the first ``q_pool`` new stages)."""
        return tuple(end + 1 for end in self.stage_ends[:-1])[: self.q_pool]

    @property
    def block_specs(self) -> tuple[HieraBlockSpec, ...]:
        """Per-block widths, heads, window and q-pool stride, as the official trunk builds them."""
        specs = []
        dim, heads, stage = self.embed_dim, self.num_heads, 0
        ends, pools, global_blocks = self.stage_ends, self.q_pool_blocks, set(self.global_att_blocks)
        for i in range(self.depth):
            # The window lags by one block: a stage's first block uses the previous stage's window.
            window = 0 if i in global_blocks else self.window_spec[stage]
            dim_out = dim
            if i - 1 in ends:
                dim_out = int(dim * self.dim_mul)
                heads = int(heads * self.head_mul)
                stage += 1
            specs.append(HieraBlockSpec(dim, dim_out, heads, window,
                                        self.q_stride if i in pools else None))
            dim = dim_out
        return tuple(specs)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Output width of every stage, highest resolution first."""
        specs = self.block_specs
        return tuple(specs[end].dim_out for end in self.stage_ends)

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Widths of the returned features, lowest resolution first (official ``channel_list``)."""
        dims = self.stage_dims
        return tuple(reversed(dims)) if self.return_interm_layers else (dims[-1],)

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """Stride (w.r.t. the input image) of every stage's output, highest resolution first."""
        stride = self.patch_stride[0]
        strides = []
        for s in range(len(self.stages)):
            if 1 <= s <= self.q_pool:
                stride *= self.q_stride[0]
            strides.append(stride)
        return tuple(strides)


@dataclass(frozen=True)
class FpnNeckConfig:
    """FPN neck with sine position encoding (``FpnNeck`` + ``PositionEmbeddingSine``).

    Parameters
    ----------
    d_model : int
        Output width of every level (= SAM 2's ``hidden_dim``).
    backbone_channel_list : tuple of int
        Trunk widths, lowest resolution first (must equal ``HieraConfig.channel_list``).
    fpn_top_down_levels : tuple of int or None
        Levels (0 = highest resolution) that receive the upsampled coarser level; None = all.
    fpn_interp_model : str
        ``F.interpolate`` mode of the top-down path (released: ``"nearest"``; class default
        ``"bilinear"``).
    fuse_type : str
        ``"sum"`` or ``"avg"`` of lateral and top-down features.
    kernel_size, stride, padding : int
        Lateral convolutions (official: 1x1).
    num_pos_feats : int
        Channels of the sine position encoding (half for y, half for x).
    temperature : float
        Frequency base of the sine encoding.
    normalize : bool
        Normalise positions to ``(0, scale]``.
    scale : float or None
        Position scale when normalising (None = 2*pi).
    """

    d_model: int = 256
    backbone_channel_list: tuple[int, ...] = (768, 384, 192, 96)
    fpn_top_down_levels: tuple[int, ...] | None = (2, 3)
    fpn_interp_model: str = "nearest"
    fuse_type: str = "sum"
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0
    num_pos_feats: int = 256
    temperature: float = 10000.0
    normalize: bool = True
    scale: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone_channel_list", _ints(self.backbone_channel_list))
        object.__setattr__(self, "fpn_top_down_levels", _ints(self.fpn_top_down_levels))
        if self.fuse_type not in ("sum", "avg"):
            raise ValueError(f"fuse_type {self.fuse_type!r} is not 'sum' or 'avg'")
        if self.num_pos_feats % 2:
            raise ValueError(f"num_pos_feats {self.num_pos_feats} must be even")
        if self.scale is not None and not self.normalize:
            raise ValueError("a position scale needs normalize=True")

    @property
    def top_down_levels(self) -> tuple[int, ...]:
        """``fpn_top_down_levels`` with None resolved to every level."""
        if self.fpn_top_down_levels is None:
            return tuple(range(len(self.backbone_channel_list)))
        return self.fpn_top_down_levels


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Image encoder = Hiera trunk + FPN neck, minus the ``scalp`` coarsest levels.

    Parameters
    ----------
    trunk : HieraConfig
        Backbone.
    neck : FpnNeckConfig
        Neck; its ``backbone_channel_list`` must equal ``trunk.channel_list``.
    scalp : int
        Number of lowest-resolution levels dropped (released: 1; class default 0).
    """

    trunk: HieraConfig = field(default_factory=HieraConfig)
    neck: FpnNeckConfig = field(default_factory=FpnNeckConfig)
    scalp: int = 1

    def __post_init__(self) -> None:
        if tuple(self.trunk.channel_list) != tuple(self.neck.backbone_channel_list):
            raise ValueError(
                f"trunk channel_list {self.trunk.channel_list} does not match the neck's "
                f"backbone_channel_list {self.neck.backbone_channel_list}")
        if not 0 <= self.scalp < len(self.neck.backbone_channel_list):
            raise ValueError(f"scalp {self.scalp} leaves no feature level")

    @property
    def d_model(self) -> int:
        """Width of every output level."""
        return self.neck.d_model

    @property
    def num_levels(self) -> int:
        """Levels in ``backbone_fpn`` (after the scalp)."""
        return len(self.neck.backbone_channel_list) - self.scalp

    @property
    def level_strides(self) -> tuple[int, ...]:
        """Stride of every output level, highest resolution first (4, 8, 16 when released)."""
        strides = self.trunk.stage_strides
        if not self.trunk.return_interm_layers:
            strides = strides[-1:]
        return tuple(strides[: self.num_levels])


@dataclass(frozen=True)
class MemoryAttentionConfig:
    """Memory attention (``MemoryAttention`` of ``MemoryAttentionLayer`` with RoPE attention).

    Self- and cross-attention share ``num_heads``, ``rope_theta``, ``feat_sizes`` and
    ``downsample_rate`` in every released config (the parser refuses configs where they differ).

    Parameters
    ----------
    d_model : int
        Width of the current-frame tokens (= SAM 2's ``hidden_dim``).
    num_layers : int
        Layers.
    dim_feedforward : int
        FFN hidden width.
    num_heads : int
        Heads of both attentions.
    rope_theta : float
        RoPE frequency base.
    feat_sizes : tuple of int
        Grid the RoPE table is precomputed for (recomputed for other token counts).
    kv_in_dim : int or None
        Width of the memory tokens fed to cross-attention keys/values (= memory ``out_dim``);
        None = ``d_model``.
    pos_enc_at_input : bool
        Add ``0.1 * pos`` to the current-frame tokens before the first layer.
    pos_enc_at_attn : bool
        Add pos to self-attention queries/keys.
    pos_enc_at_cross_attn_keys, pos_enc_at_cross_attn_queries : bool
        Add pos to cross-attention keys (memory pos) / queries (current pos).
    rope_k_repeat : bool
        Cross-attention repeats the query RoPE table over the memory frames.
    activation : str
        FFN activation (``"relu"``, ``"gelu"`` or ``"glu"``).
    downsample_rate : int
        Internal attention width divisor.
    dropout : float
        Training dropout (irrelevant at inference).
    batch_first : bool
        Official layout flag (True in every released config).
    """

    d_model: int = 256
    num_layers: int = 4
    dim_feedforward: int = 2048
    num_heads: int = 1
    rope_theta: float = 10000.0
    feat_sizes: tuple[int, int] = (64, 64)
    kv_in_dim: int | None = 64
    pos_enc_at_input: bool = True
    pos_enc_at_attn: bool = False
    pos_enc_at_cross_attn_keys: bool = True
    pos_enc_at_cross_attn_queries: bool = False
    rope_k_repeat: bool = True
    activation: str = "relu"
    downsample_rate: int = 1
    dropout: float = 0.1
    batch_first: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "feat_sizes", _pair(self.feat_sizes))
        if self.activation not in ("relu", "gelu", "glu"):
            raise ValueError(f"activation {self.activation!r} is not relu, gelu or glu")
        internal = self.d_model // self.downsample_rate
        if internal % self.num_heads or (internal // self.num_heads) % 4:
            raise ValueError(
                f"memory attention width {internal} / {self.num_heads} heads must be a multiple of 4 "
                "(axial RoPE)")

    @property
    def kv_dim(self) -> int:
        """Width of the memory tokens (``kv_in_dim`` or ``d_model``)."""
        return self.d_model if self.kv_in_dim is None else self.kv_in_dim


@dataclass(frozen=True)
class MemoryEncoderConfig:
    """Memory encoder (``MemoryEncoder``: ``MaskDownSampler`` + pixel projection + ``Fuser``).

    Parameters
    ----------
    in_dim : int
        Width of the pixel features (= SAM 2's ``hidden_dim``).
    out_dim : int
        Width of the memory features (``out_proj``; none when equal to ``in_dim``).
    mask_downsampler_embed_dim : int
        Output width of the mask downsampler (must equal ``in_dim``).
    mask_downsampler_kernel_size, mask_downsampler_stride, mask_downsampler_padding : int
        Each downsampling conv (released: 3, 2, 1; class defaults 4, 4, 0).
    mask_downsampler_total_stride : int
        Product of all strides (``log_stride(total)`` conv + LayerNorm2d + GELU steps).
    fuser_num_layers : int
        ConvNeXt blocks (``CXBlock``) in the fuser.
    fuser_dim : int
        Width of the CXBlocks (must equal ``in_dim``).
    fuser_kernel_size, fuser_padding : int
        CXBlock depth-wise conv.
    fuser_layer_scale_init_value : float
        Initial ``gamma``; ``<= 0`` means the CXBlocks have no ``gamma`` parameter.
    fuser_use_dwconv : bool
        Depth-wise (True) or dense CXBlock conv.
    fuser_input_projection : bool
        1x1 conv before the fuser blocks (``fuser.proj``).
    num_pos_feats, temperature, normalize, scale
        Sine position encoding of the memory features (see :class:`FpnNeckConfig`).
    """

    in_dim: int = 256
    out_dim: int = 64
    mask_downsampler_embed_dim: int = 256
    mask_downsampler_kernel_size: int = 3
    mask_downsampler_stride: int = 2
    mask_downsampler_padding: int = 1
    mask_downsampler_total_stride: int = 16
    fuser_num_layers: int = 2
    fuser_dim: int = 256
    fuser_kernel_size: int = 7
    fuser_padding: int = 3
    fuser_layer_scale_init_value: float = 1e-6
    fuser_use_dwconv: bool = True
    fuser_input_projection: bool = False
    num_pos_feats: int = 64
    temperature: float = 10000.0
    normalize: bool = True
    scale: float | None = None

    def __post_init__(self) -> None:
        if self.mask_downsampler_embed_dim != self.in_dim or self.fuser_dim != self.in_dim:
            raise ValueError(
                f"memory encoder widths differ: in_dim {self.in_dim}, mask downsampler "
                f"{self.mask_downsampler_embed_dim}, fuser {self.fuser_dim}")
        n = self.mask_downsampler_num_layers
        if self.mask_downsampler_stride ** n != self.mask_downsampler_total_stride:
            raise ValueError(
                f"mask_downsampler_total_stride {self.mask_downsampler_total_stride} is not a power of "
                f"the stride {self.mask_downsampler_stride}")
        if self.num_pos_feats % 2:
            raise ValueError(f"num_pos_feats {self.num_pos_feats} must be even")

    @property
    def mask_downsampler_num_layers(self) -> int:
        """Strided conv steps of the mask downsampler (4 when released)."""
        n, stride = 0, 1
        while stride < self.mask_downsampler_total_stride and self.mask_downsampler_stride > 1:
            stride *= self.mask_downsampler_stride
            n += 1
        return n

    @property
    def mem_dim(self) -> int:
        """Width of the stored memory features."""
        return self.out_dim


@dataclass(frozen=True)
class Sam2Config:
    """A whole SAM 2 / 2.1 model as built by the official video predictor.

    Parameters
    ----------
    name : str
        Identifier (e.g. ``"sam2.1_hiera_tiny"``).
    image_encoder, memory_attention, memory_encoder
        Sub-module configs.
    num_maskmem : int
        Memory frames attended to (1 conditioning slot + ``num_maskmem - 1`` recent frames).
    image_size : int
        Side of the square model input.
    backbone_stride : int
        Stride of ``vision_features`` (image embedding grid = ``image_size // backbone_stride``).
    sigmoid_scale_for_mem_enc, sigmoid_bias_for_mem_enc : float
        Mask logits enter the memory encoder as ``sigmoid(scale * logits + bias)`` inputs.
    binarize_mask_from_pts_for_mem_enc : bool
        Binarise masks of frames with clicks before the memory encoder (eval).
    use_mask_input_as_output_without_sam : bool
        Frames with a mask input output that mask directly.
    max_cond_frames_in_attn : int
        Conditioning frames in memory attention (-1 = all).
    directly_add_no_mem_embed : bool
        Frames without memory get ``features + no_mem_embed`` instead of memory attention.
    use_high_res_features_in_sam : bool
        Mask decoder uses the stride-4/8 features.
    multimask_output_in_sam : bool
        Multimask output for the first click(s) of a conditioning frame.
    multimask_min_pt_num, multimask_max_pt_num : int
        Point counts for which multimask output is used.
    multimask_output_for_tracking : bool
        Multimask output also during tracking.
    use_multimask_token_for_obj_ptr : bool
        Object pointer from the multimask tokens.
    iou_prediction_use_sigmoid : bool
        Sigmoid on the IoU head.
    memory_temporal_stride_for_eval : int
        Temporal stride ``r`` of the non-conditioning memory frames.
    non_overlap_masks_for_mem_enc : bool
        Non-overlap constraint on masks before the memory encoder (eval).
    use_obj_ptrs_in_encoder : bool
        Memory attention also attends to object pointers.
    max_obj_ptrs_in_encoder : int
        Maximum number of object pointers.
    add_tpos_enc_to_obj_ptrs, proj_tpos_enc_in_obj_ptrs, use_signed_tpos_enc_to_obj_ptrs : bool
        Temporal encoding of object pointers: added / linearly projected / signed distance.
    only_obj_ptrs_in_the_past_for_eval : bool
        Only pointers of past frames (in tracking direction) during eval.
    pred_obj_scores, pred_obj_scores_mlp : bool
        Object-presence score head (an MLP instead of a Linear).
    fixed_no_obj_ptr, soft_no_obj_ptr : bool
        How ``no_obj_ptr`` replaces / mixes into the pointer of absent objects.
    use_mlp_for_obj_ptr_proj : bool
        3-layer MLP (instead of Linear) for ``obj_ptr_proj``.
    no_obj_embed_spatial : bool
        Learned embedding added to memory features of absent objects (SAM 2.1).
    compile_image_encoder : bool
        Official ``torch.compile`` switch (ignored here).
    num_multimask_outputs, transformer_depth, transformer_num_heads, transformer_mlp_dim,
    attention_downsample_rate, iou_head_depth, iou_head_hidden_dim : int
        Mask decoder dimensions (hard-coded in the official ``_build_sam_heads``:
        3, 2, 8, 2048, 2, 3, 256), named as :class:`~.mask_decoder.Sam2MaskDecoder` arguments.
    mask_in_chans : int
        Prompt encoder mask-downscaling channels (official: 16).
    dynamic_multimask_via_stability : bool
        Single-mask output falls back to multimask output when unstable
        (``sam_mask_decoder_extra_args``).
    dynamic_multimask_stability_delta, dynamic_multimask_stability_thresh : float
        Stability threshold offset and minimum score.
    fill_hole_area : int
        Video predictor: fill holes up to this area in low-res masks (0 = off).
    non_overlap_masks : bool
        Video predictor: per pixel keep only the highest-scoring object.
    clear_non_cond_mem_around_input : bool
        Video predictor: drop non-conditioning memory next to corrected frames.
    add_all_frames_to_correct_as_cond : bool
        Video predictor: frames receiving corrections become conditioning frames.
    """

    name: str
    image_encoder: ImageEncoderConfig
    memory_attention: MemoryAttentionConfig
    memory_encoder: MemoryEncoderConfig
    num_maskmem: int = 7
    image_size: int = 512
    backbone_stride: int = 16
    sigmoid_scale_for_mem_enc: float = 1.0
    sigmoid_bias_for_mem_enc: float = 0.0
    binarize_mask_from_pts_for_mem_enc: bool = False
    use_mask_input_as_output_without_sam: bool = False
    max_cond_frames_in_attn: int = -1
    directly_add_no_mem_embed: bool = False
    use_high_res_features_in_sam: bool = False
    multimask_output_in_sam: bool = False
    multimask_min_pt_num: int = 1
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = False
    use_multimask_token_for_obj_ptr: bool = False
    iou_prediction_use_sigmoid: bool = False
    memory_temporal_stride_for_eval: int = 1
    non_overlap_masks_for_mem_enc: bool = False
    use_obj_ptrs_in_encoder: bool = False
    max_obj_ptrs_in_encoder: int = 16
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = False
    use_signed_tpos_enc_to_obj_ptrs: bool = False
    only_obj_ptrs_in_the_past_for_eval: bool = False
    pred_obj_scores: bool = False
    pred_obj_scores_mlp: bool = False
    fixed_no_obj_ptr: bool = False
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = False
    no_obj_embed_spatial: bool = False
    compile_image_encoder: bool = False
    # mask decoder / prompt encoder (hard-coded in the official _build_sam_heads)
    num_multimask_outputs: int = 3
    transformer_depth: int = 2
    transformer_num_heads: int = 8
    transformer_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    # sam_mask_decoder_extra_args
    dynamic_multimask_via_stability: bool = False
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    # SAM2VideoPredictor
    fill_hole_area: int = 0
    non_overlap_masks: bool = False
    clear_non_cond_mem_around_input: bool = False
    add_all_frames_to_correct_as_cond: bool = False

    def __post_init__(self) -> None:
        hidden = self.hidden_dim
        if self.proj_tpos_enc_in_obj_ptrs and not self.add_tpos_enc_to_obj_ptrs:
            raise ValueError("proj_tpos_enc_in_obj_ptrs needs add_tpos_enc_to_obj_ptrs")
        if self.fixed_no_obj_ptr and not (self.pred_obj_scores and self.use_obj_ptrs_in_encoder):
            raise ValueError("fixed_no_obj_ptr needs pred_obj_scores and use_obj_ptrs_in_encoder")
        if self.memory_attention.d_model != hidden:
            raise ValueError(f"memory_attention.d_model {self.memory_attention.d_model} != image "
                             f"encoder d_model {hidden}")
        if self.memory_encoder.in_dim != hidden:
            raise ValueError(f"memory_encoder.in_dim {self.memory_encoder.in_dim} != image encoder "
                             f"d_model {hidden}")
        if self.memory_attention.kv_dim != self.mem_dim:
            raise ValueError(f"memory_attention.kv_in_dim {self.memory_attention.kv_dim} != memory "
                             f"width {self.mem_dim}")
        internal = hidden // self.attention_downsample_rate
        if hidden % self.transformer_num_heads or internal % self.transformer_num_heads:
            raise ValueError(f"decoder heads {self.transformer_num_heads} must divide {hidden} and "
                             f"{internal}")
        if self.image_size % self.backbone_stride:
            raise ValueError(f"image_size {self.image_size} is not a multiple of backbone_stride "
                             f"{self.backbone_stride}")

    # ------------------------------------------------------------------ derived sizes
    @property
    def hidden_dim(self) -> int:
        """Width of image embeddings, prompts, decoder and object pointers (256 when released)."""
        return self.image_encoder.d_model

    @property
    def mem_dim(self) -> int:
        """Width of memory features (official: ``out_proj`` width, else ``hidden_dim``)."""
        enc = self.memory_encoder
        return enc.out_dim if enc.out_dim != enc.in_dim else self.hidden_dim

    @property
    def image_embedding_size(self) -> int:
        """Side of the stride-16 embedding grid (64 at 1024)."""
        return self.image_size // self.backbone_stride

    @property
    def low_res_mask_size(self) -> int:
        """Side of the low-resolution mask logits (256 at 1024)."""
        return 4 * self.image_embedding_size

    @property
    def num_feature_levels(self) -> int:
        """Backbone levels used by the model (3 with high-res features, else 1)."""
        return 3 if self.use_high_res_features_in_sam else 1

    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        """Normalisation mean (0..1 range, RGB)."""
        return PIXEL_MEAN

    @property
    def pixel_std(self) -> tuple[float, float, float]:
        """Normalisation std (0..1 range, RGB)."""
        return PIXEL_STD

    def replace(self, **changes: Any) -> Sam2Config:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ official configs
    @classmethod
    def from_official_config(cls, cfg: Mapping[str, Any], name: str = "custom") -> Sam2Config:
        """Build a config from a resolved official (hydra) model config.

        Parameters
        ----------
        cfg : mapping
            Either the ``model`` node itself (``_target_``, ``image_encoder``, flags at top
            level, as in the parity fixtures' ``config``) or a mapping ``{"model": {...}}``.
            Missing keys take the official class defaults, as hydra's ``instantiate`` would.
        name : str
            Name of the result.

        Returns
        -------
        Sam2Config

        Raises
        ------
        ValueError
            An unsupported module type (``_target_``), or self- and cross-attention settings
            that this implementation cannot represent.
        KeyError
            A required official argument is missing.
        """
        model = cfg
        if "image_encoder" not in model and isinstance(model.get("model"), Mapping):
            model = model["model"]
        image_encoder = _parse_image_encoder(model["image_encoder"])
        memory_attention = _parse_memory_attention(model["memory_attention"])
        memory_encoder = _parse_memory_encoder(model["memory_encoder"])

        flags: dict[str, Any] = {}
        known = {"_target_", "image_encoder", "memory_attention", "memory_encoder",
                 "sam_mask_decoder_extra_args"}
        for f in dataclasses.fields(cls):
            if f.name in _FLAG_FIELDS and f.name in model:
                flags[f.name] = _coerce(model[f.name], f.default)
                known.add(f.name)
        extra = model.get("sam_mask_decoder_extra_args") or {}
        for key, value in extra.items():
            if key not in _DECODER_EXTRA_FIELDS:
                raise ValueError(f"unsupported sam_mask_decoder_extra_args key {key!r}")
            flags[key] = _coerce(value, _FIELD_DEFAULTS[key])
        unknown = sorted(set(model) - known)
        if unknown:
            logger.warning("ignoring unknown SAM 2 config keys: %s", ", ".join(unknown))
        target = str(model.get("_target_", ""))
        if target and not target.endswith(("SAM2Base", "SAM2VideoPredictor", "SAM2VideoPredictorVOS",
                                           "SAM2Train")):
            logger.warning("SAM 2 model _target_ %s is not a known SAM2Base subclass", target)
        return cls(name=name, image_encoder=image_encoder, memory_attention=memory_attention,
                   memory_encoder=memory_encoder, **flags)


_DECODER_DIM_FIELDS = frozenset({
    "num_multimask_outputs", "transformer_depth", "transformer_num_heads", "transformer_mlp_dim",
    "attention_downsample_rate", "iou_head_depth", "iou_head_hidden_dim", "mask_in_chans"})
_DECODER_EXTRA_FIELDS = frozenset({
    "dynamic_multimask_via_stability", "dynamic_multimask_stability_delta",
    "dynamic_multimask_stability_thresh"})
#: Sam2Config fields read directly from the top level of an official model config.
_FLAG_FIELDS = frozenset(
    f.name for f in dataclasses.fields(Sam2Config)
    if f.name not in {"name", "image_encoder", "memory_attention", "memory_encoder"}
    and f.name not in _DECODER_DIM_FIELDS and f.name not in _DECODER_EXTRA_FIELDS
)
_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Sam2Config)}


def _coerce(value: Any, default: Any) -> Any:
    """Cast an official value to the type of the dataclass default (bool/int/float)."""
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def _check_target(node: Mapping[str, Any], *names: str) -> None:
    target = node.get("_target_")
    if target is not None and not str(target).endswith(names):
        raise ValueError(f"unsupported SAM 2 module {target!r}; expected one of {names}")


def _parse_sine(node: Mapping[str, Any]) -> dict[str, Any]:
    _check_target(node, "PositionEmbeddingSine")
    scale = node.get("scale")
    return {
        "num_pos_feats": int(node["num_pos_feats"]),
        "temperature": float(node.get("temperature", 10000)),
        "normalize": bool(node.get("normalize", True)),
        "scale": None if scale is None else float(scale),
    }


def _parse_image_encoder(node: Mapping[str, Any]) -> ImageEncoderConfig:
    _check_target(node, "ImageEncoder")
    t, n = node["trunk"], node["neck"]
    _check_target(t, "Hiera")
    _check_target(n, "FpnNeck")
    defaults = HieraConfig()  # official Hiera defaults
    trunk = HieraConfig(
        embed_dim=int(t.get("embed_dim", defaults.embed_dim)),
        num_heads=int(t.get("num_heads", defaults.num_heads)),
        stages=t.get("stages", defaults.stages),
        global_att_blocks=t.get("global_att_blocks", defaults.global_att_blocks),
        window_spec=t.get("window_spec", defaults.window_spec),
        window_pos_embed_bkg_spatial_size=t.get("window_pos_embed_bkg_spatial_size",
                                                defaults.window_pos_embed_bkg_spatial_size),
        q_pool=int(t.get("q_pool", defaults.q_pool)),
        q_stride=t.get("q_stride", defaults.q_stride),
        dim_mul=float(t.get("dim_mul", defaults.dim_mul)),
        head_mul=float(t.get("head_mul", defaults.head_mul)),
        drop_path_rate=float(t.get("drop_path_rate", 0.0)),
        return_interm_layers=bool(t.get("return_interm_layers", True)),
    )
    top_down = n.get("fpn_top_down_levels")
    neck = FpnNeckConfig(
        d_model=int(n["d_model"]),
        backbone_channel_list=n["backbone_channel_list"],
        fpn_top_down_levels=top_down,
        fpn_interp_model=str(n.get("fpn_interp_model", "bilinear")),
        fuse_type=str(n.get("fuse_type", "sum")),
        kernel_size=int(n.get("kernel_size", 1)),
        stride=int(n.get("stride", 1)),
        padding=int(n.get("padding", 0)),
        **_parse_sine(n["position_encoding"]),
    )
    return ImageEncoderConfig(trunk=trunk, neck=neck, scalp=int(node.get("scalp", 0)))


def _parse_memory_attention(node: Mapping[str, Any]) -> MemoryAttentionConfig:
    _check_target(node, "MemoryAttention")
    layer = node["layer"]
    _check_target(layer, "MemoryAttentionLayer")
    sa, ca = layer["self_attention"], layer["cross_attention"]
    _check_target(sa, "RoPEAttention")
    _check_target(ca, "RoPEAttention")
    d_model = int(node["d_model"])

    def attn(a: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "embedding_dim": int(a["embedding_dim"]),
            "num_heads": int(a["num_heads"]),
            "downsample_rate": int(a.get("downsample_rate", 1)),
            "rope_theta": float(a.get("rope_theta", 10000.0)),
            "feat_sizes": _pair(a.get("feat_sizes", (64, 64))),
        }

    sa_kw, ca_kw = attn(sa), attn(ca)
    if sa_kw != ca_kw:
        raise ValueError(f"self-attention {sa_kw} and cross-attention {ca_kw} settings differ")
    if sa_kw["embedding_dim"] != d_model or int(layer["d_model"]) != d_model:
        raise ValueError("memory attention layer widths differ from d_model")
    if bool(sa.get("rope_k_repeat", False)):
        raise ValueError("rope_k_repeat on the self-attention is not supported")
    if sa.get("kv_in_dim") not in (None, d_model):
        raise ValueError("a self-attention kv_in_dim other than d_model is not supported")
    kv = ca.get("kv_in_dim")
    return MemoryAttentionConfig(
        d_model=d_model,
        num_layers=int(node["num_layers"]),
        dim_feedforward=int(layer["dim_feedforward"]),
        num_heads=sa_kw["num_heads"],
        rope_theta=sa_kw["rope_theta"],
        feat_sizes=sa_kw["feat_sizes"],
        kv_in_dim=None if kv is None else int(kv),
        pos_enc_at_input=bool(node["pos_enc_at_input"]),
        pos_enc_at_attn=bool(layer["pos_enc_at_attn"]),
        pos_enc_at_cross_attn_keys=bool(layer["pos_enc_at_cross_attn_keys"]),
        pos_enc_at_cross_attn_queries=bool(layer["pos_enc_at_cross_attn_queries"]),
        rope_k_repeat=bool(ca.get("rope_k_repeat", False)),
        activation=str(layer["activation"]),
        downsample_rate=sa_kw["downsample_rate"],
        dropout=float(layer.get("dropout", 0.0)),
        batch_first=bool(node.get("batch_first", True)),
    )


def _parse_memory_encoder(node: Mapping[str, Any]) -> MemoryEncoderConfig:
    _check_target(node, "MemoryEncoder")
    md, fuser = node["mask_downsampler"], node["fuser"]
    _check_target(md, "MaskDownSampler")
    _check_target(fuser, "Fuser")
    block = fuser["layer"]
    _check_target(block, "CXBlock")
    return MemoryEncoderConfig(
        in_dim=int(node.get("in_dim", 256)),
        out_dim=int(node["out_dim"]),
        mask_downsampler_embed_dim=int(md.get("embed_dim", 256)),
        mask_downsampler_kernel_size=int(md.get("kernel_size", 4)),
        mask_downsampler_stride=int(md.get("stride", 4)),
        mask_downsampler_padding=int(md.get("padding", 0)),
        mask_downsampler_total_stride=int(md.get("total_stride", 16)),
        fuser_num_layers=int(fuser["num_layers"]),
        fuser_dim=int(block["dim"]),
        fuser_kernel_size=int(block.get("kernel_size", 7)),
        fuser_padding=int(block.get("padding", 3)),
        fuser_layer_scale_init_value=float(block.get("layer_scale_init_value", 1e-6)),
        fuser_use_dwconv=bool(block.get("use_dwconv", True)),
        fuser_input_projection=bool(fuser.get("input_projection", False)),
        **_parse_sine(node["position_encoding"]),
    )


# ---------------------------------------------------------------------- released models
#: Hiera trunks of the released models (identical in SAM 2 and SAM 2.1).
_TRUNKS: dict[str, HieraConfig] = {
    "tiny": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
                        window_pos_embed_bkg_spatial_size=(7, 7)),
    "small": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2),
                         global_att_blocks=(7, 10, 13), window_pos_embed_bkg_spatial_size=(7, 7)),
    "base_plus": HieraConfig(embed_dim=112, num_heads=2),
    "large": HieraConfig(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4),
                         global_att_blocks=(23, 33, 43), window_pos_embed_bkg_spatial_size=(7, 7),
                         window_spec=(8, 4, 16, 8)),
}

#: Top-level flags every released yaml (2.0 and 2.1) sets.
_RELEASED_FLAGS: dict[str, Any] = {
    "num_maskmem": 7,
    "image_size": 1024,
    "sigmoid_scale_for_mem_enc": 20.0,
    "sigmoid_bias_for_mem_enc": -10.0,
    "use_mask_input_as_output_without_sam": True,
    "directly_add_no_mem_embed": True,
    "use_high_res_features_in_sam": True,
    "multimask_output_in_sam": True,
    "iou_prediction_use_sigmoid": True,
    "use_obj_ptrs_in_encoder": True,
    "only_obj_ptrs_in_the_past_for_eval": True,
    "pred_obj_scores": True,
    "pred_obj_scores_mlp": True,
    "fixed_no_obj_ptr": True,
    "multimask_output_for_tracking": True,
    "use_multimask_token_for_obj_ptr": True,
    "multimask_min_pt_num": 0,
    "multimask_max_pt_num": 1,
    "use_mlp_for_obj_ptr_proj": True,
    "compile_image_encoder": False,
}

#: What SAM 2.1 yaml files set beyond SAM 2.0 ones (2.0: no_obj_embed_spatial unset = False,
#: add_tpos_enc_to_obj_ptrs false, the other two unset = False).
_SAM21_FLAGS: dict[str, Any] = {
    "no_obj_embed_spatial": True,
    "add_tpos_enc_to_obj_ptrs": True,
    "proj_tpos_enc_in_obj_ptrs": True,
    "use_signed_tpos_enc_to_obj_ptrs": True,
}
_SAM20_FLAGS: dict[str, Any] = {"add_tpos_enc_to_obj_ptrs": False}


def released_sam2_config(name: str, video_postprocessing: bool = True) -> Sam2Config:
    """Config of a released SAM 2 / 2.1 model.

    Parameters
    ----------
    name : str
        ``sam2.1_hiera_{tiny,small,base_plus,large}`` or ``sam2_hiera_{...}``.
    video_postprocessing : bool
        Apply :data:`VIDEO_PREDICTOR_OVERRIDES` (what ``build_sam2_video_predictor`` does);
        False gives the bare yaml.

    Returns
    -------
    Sam2Config
    """
    version, _, size = name.partition("_hiera_")
    if version not in ("sam2", "sam2.1") or size not in _TRUNKS:
        raise KeyError(f"no released SAM 2 model {name!r}")
    trunk = _TRUNKS[size]
    image_encoder = ImageEncoderConfig(
        trunk=trunk,
        neck=FpnNeckConfig(d_model=256, backbone_channel_list=trunk.channel_list,
                           fpn_top_down_levels=(2, 3), fpn_interp_model="nearest", num_pos_feats=256),
        scalp=1,
    )
    flags = {**_RELEASED_FLAGS, **(_SAM21_FLAGS if version == "sam2.1" else _SAM20_FLAGS)}
    if video_postprocessing:
        flags.update(VIDEO_PREDICTOR_OVERRIDES)
    return Sam2Config(name=name, image_encoder=image_encoder, memory_attention=MemoryAttentionConfig(),
                      memory_encoder=MemoryEncoderConfig(), **flags)


#: Small widths like the ``sam2_dev`` parity fixture (a SAM 2.1-tiny structure with random weights):
#: full 1024 input and the released grids, builds in milliseconds; for tests.
_TEST_TINY = released_sam2_config("sam2.1_hiera_tiny").replace(
    name="sam2_test_tiny",
    image_encoder=ImageEncoderConfig(
        trunk=HieraConfig(embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
                          window_pos_embed_bkg_spatial_size=(7, 7)),
        neck=FpnNeckConfig(d_model=64, backbone_channel_list=(128, 64, 32, 16), num_pos_feats=64),
        scalp=1,
    ),
    memory_attention=MemoryAttentionConfig(d_model=64, num_layers=2, dim_feedforward=256, kv_in_dim=32),
    memory_encoder=MemoryEncoderConfig(in_dim=64, out_dim=32, mask_downsampler_embed_dim=64, fuser_dim=64,
                                       num_pos_feats=32),
)

#: Released SAM 2 / 2.1 models as the official video predictor builds them, plus a tiny test model.
SAM2_CONFIGS: dict[str, Sam2Config] = {
    **{f"sam2.1_hiera_{size}": released_sam2_config(f"sam2.1_hiera_{size}") for size in _TRUNKS},
    **{f"sam2_hiera_{size}": released_sam2_config(f"sam2_hiera_{size}") for size in _TRUNKS},
    "sam2_test_tiny": _TEST_TINY,
}
