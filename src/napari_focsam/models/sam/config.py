"""Frozen dataclass configs for SAM (segment-anything 1.0) models.

Every dimension of the model is a field here, so the same code builds ViT-B/L/H, MobileSAM's
TinyViT (``vit_t``), the tiny test variants and any model described by a parity fixture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: ImageNet statistics in the 0..255 range, RGB order (the official ``Sam`` defaults).
PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
PIXEL_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ViTEncoderConfig:
    """ViT image encoder (ViTDet style, windowed + global attention, decomposed rel-pos).

    Parameters
    ----------
    embed_dim, depth, num_heads : int
        Transformer width, number of blocks and attention heads.
    global_attn_indexes : tuple of int
        Blocks that attend globally; all others use ``window_size`` windows.
    out_chans : int
        Channels of the neck output (= prompt / decoder width).
    image_size, patch_size : int
        Square input side and patch side; the embedding grid is ``image_size // patch_size``.
    window_size : int
        Side of the local attention windows.
    mlp_ratio : float
        MLP hidden width as a multiple of ``embed_dim``.
    norm_eps : float
        LayerNorm epsilon inside the blocks (1e-6 official SAM, 1e-5 in FocSAM's copy).
    qkv_bias, use_rel_pos, use_abs_pos : bool
        Architectural switches (all True for the released models).
    in_chans : int
        Input image channels.
    """

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    out_chans: int = 256
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    qkv_bias: bool = True
    use_rel_pos: bool = True
    use_abs_pos: bool = True
    in_chans: int = 3

    def __post_init__(self) -> None:
        indexes = tuple(int(i) for i in self.global_attn_indexes)
        object.__setattr__(self, "global_attn_indexes", indexes)
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        bad = [i for i in self.global_attn_indexes if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"global_attn_indexes {bad} outside 0..{self.depth - 1}")

    @property
    def grid_size(self) -> int:
        """Side of the patch grid (64 for the released models)."""
        return self.image_size // self.patch_size


#: Output widths after which the official TinyViT's PatchMerging keeps the resolution
#: (``stride_c = 1`` in MobileSAM's ``tiny_vit_sam.py``); every other merge halves it.
OFFICIAL_STRIDE_ONE_DIMS = (320, 448, 576)


def official_merge_strides(embed_dims: tuple[int, ...]) -> tuple[int, ...]:
    """Strides of the official TinyViT's PatchMerging layers for stage widths `embed_dims`."""
    return tuple(1 if d in OFFICIAL_STRIDE_ONE_DIMS else 2 for d in embed_dims[1:])


@dataclass(frozen=True)
class TinyViTConfig:
    """MobileSAM's TinyViT image encoder: a conv stage, then windowed-attention stages.

    Stage 0 is ``depths[0]`` MBConv blocks on the stride-4 patch grid; every later stage is
    TinyViT blocks (windowed attention with learned per-offset biases, a depthwise conv and an
    MLP). A PatchMerging between stages changes the width and divides the resolution by its
    stride. A neck (as in SAM's ViT) maps the last stage to ``out_chans``.

    Parameters
    ----------
    embed_dims, depths, num_heads, window_sizes : tuple of int
        Width, blocks, heads and window side of each stage (heads and window of stage 0 are
        unused, as in the official code).
    merge_strides : tuple of int
        Stride (1 or 2) of the PatchMerging after each stage but the last (official: 1 when the
        next width is 320, 448 or 576, see :func:`official_merge_strides`).
    out_chans : int
        Channels of the neck output (= prompt / decoder width).
    image_size : int
        Square input side; the embedding grid is ``image_size / (4 * prod(merge_strides))``.
    mlp_ratio, mbconv_expand_ratio : float
        MLP hidden width and MBConv hidden width as multiples of the stage width.
    local_conv_size : int
        Kernel of the depthwise conv between attention and MLP.
    num_classes : int
        Outputs of the ImageNet classifier head the official checkpoints carry (unused; 0:
        no ``head`` weights).
    norm_eps, neck_norm_eps, bn_eps : float
        LayerNorm epsilon in the blocks and the head, in the neck's LayerNorm2d, and the
        BatchNorm epsilon of the conv layers.
    in_chans : int
        Input image channels.
    """

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    merge_strides: tuple[int, ...] = (2, 2, 1)
    out_chans: int = 256
    image_size: int = 1024
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    num_classes: int = 1000
    norm_eps: float = 1e-5
    neck_norm_eps: float = 1e-6
    bn_eps: float = 1e-5
    in_chans: int = 3

    def __post_init__(self) -> None:
        for name in ("embed_dims", "depths", "num_heads", "window_sizes", "merge_strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        stages = len(self.embed_dims)
        if stages < 2:
            raise ValueError("TinyViT needs a conv stage and at least one attention stage")
        lengths = {len(self.depths), len(self.num_heads), len(self.window_sizes)}
        if lengths != {stages} or len(self.merge_strides) != stages - 1:
            raise ValueError(
                f"TinyViT stage lists disagree: {stages} embed_dims, {len(self.depths)} depths, "
                f"{len(self.num_heads)} num_heads, {len(self.window_sizes)} window_sizes and "
                f"{len(self.merge_strides)} merge_strides (expected {stages - 1})")
        if any(s not in (1, 2) for s in self.merge_strides):
            raise ValueError(f"merge_strides {self.merge_strides} must be 1 or 2")
        for i in range(1, stages):
            if self.embed_dims[i] % self.num_heads[i] or self.window_sizes[i] < 1:
                raise ValueError(
                    f"stage {i}: embed_dim {self.embed_dims[i]} is not divisible by num_heads "
                    f"{self.num_heads[i]} or window_size {self.window_sizes[i]} < 1")
        if self.embed_dims[0] % 2:
            raise ValueError(f"embed_dims[0] {self.embed_dims[0]} must be even (patch embed)")
        if self.image_size % self.stride:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of the encoder stride "
                f"{self.stride}")

    @property
    def stride(self) -> int:
        """Input pixels per embedding cell (16 for the released model)."""
        return 4 * math.prod(self.merge_strides)

    @property
    def grid_size(self) -> int:
        """Side of the output grid (64 for the released model)."""
        return self.image_size // self.stride

    def resolutions(self) -> tuple[int, ...]:
        """Grid side of each stage (256, 128, 64, 64 for the released model)."""
        sides = [self.image_size // 4]
        for s in self.merge_strides:
            sides.append(-(-sides[-1] // s))  # a 3x3 conv with padding 1: ceil(side / stride)
        return tuple(sides)

    @classmethod
    def from_official_kwargs(cls, kwargs: Mapping[str, Any], out_chans: int = 256) -> TinyViTConfig:
        """Build a config from the official ``TinyViT`` constructor arguments.

        Parameters
        ----------
        kwargs : mapping
            ``img_size``, ``in_chans``, ``num_classes``, ``embed_dims``, ``depths``,
            ``num_heads``, ``window_sizes``, ``mlp_ratio``, ``mbconv_expand_ratio``,
            ``local_conv_size`` (official defaults of ``build_sam_vit_t`` otherwise) and
            optionally ``merge_strides`` (else the official rule) and the epsilons
            ``norm_eps``, ``neck_norm_eps``, ``bn_eps``.
        out_chans : int
            Neck width (256 in the official code, where it is fixed).
        """
        dims = tuple(kwargs.get("embed_dims", cls.embed_dims))
        strides = kwargs.get("merge_strides")
        return cls(
            embed_dims=dims,
            depths=tuple(kwargs.get("depths", cls.depths)),
            num_heads=tuple(kwargs.get("num_heads", cls.num_heads)),
            window_sizes=tuple(kwargs.get("window_sizes", cls.window_sizes)),
            merge_strides=official_merge_strides(dims) if strides is None else tuple(strides),
            out_chans=int(out_chans),
            image_size=int(kwargs.get("img_size", 1024)),
            mlp_ratio=float(kwargs.get("mlp_ratio", 4.0)),
            mbconv_expand_ratio=float(kwargs.get("mbconv_expand_ratio", 4.0)),
            local_conv_size=int(kwargs.get("local_conv_size", 3)),
            num_classes=int(kwargs.get("num_classes", 1000)),
            norm_eps=float(kwargs.get("norm_eps", 1e-5)),
            neck_norm_eps=float(kwargs.get("neck_norm_eps", 1e-6)),
            bn_eps=float(kwargs.get("bn_eps", 1e-5)),
            in_chans=int(kwargs.get("in_chans", 3)),
        )


@dataclass(frozen=True)
class MaskDecoderConfig:
    """Two-way-transformer mask decoder.

    Parameters
    ----------
    transformer_dim : int
        Token / image-embedding width (= ``ViTEncoderConfig.out_chans``).
    depth, num_heads, mlp_dim : int
        Two-way transformer layers, heads and MLP hidden width.
    attention_downsample_rate : int
        Internal width divisor of the cross-attention layers.
    num_multimask_outputs : int
        Masks returned in multimask mode (one more mask token exists for single-mask mode).
    iou_head_depth, iou_head_hidden_dim : int
        IoU prediction MLP.
    """

    transformer_dim: int = 256
    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256

    def __post_init__(self) -> None:
        internal = self.transformer_dim // self.attention_downsample_rate
        if self.transformer_dim % self.num_heads or internal % self.num_heads:
            raise ValueError(
                f"decoder num_heads {self.num_heads} must divide transformer_dim "
                f"{self.transformer_dim} and its downsampled width {internal}"
            )

    @classmethod
    def from_official_kwargs(cls, kwargs: Mapping[str, Any]) -> MaskDecoderConfig:
        """The decoder part of the official ``_build_sam`` keyword arguments (see
        :meth:`SamConfig.from_official_kwargs`)."""
        return cls(
            transformer_dim=int(kwargs.get("prompt_embed_dim", 256)),
            depth=int(kwargs.get("decoder_depth", 2)),
            num_heads=int(kwargs.get("decoder_num_heads", 8)),
            mlp_dim=int(kwargs.get("decoder_mlp_dim", 2048)),
            num_multimask_outputs=int(kwargs.get("num_multimask_outputs", 3)),
            iou_head_depth=int(kwargs.get("iou_head_depth", 3)),
            iou_head_hidden_dim=int(kwargs.get("iou_head_hidden_dim", 256)),
        )


@dataclass(frozen=True)
class SamConfig:
    """A whole SAM model: image encoder, prompt encoder and mask decoder.

    Parameters
    ----------
    name : str
        Identifier (e.g. ``"sam_vit_b"``).
    encoder : ViTEncoderConfig or TinyViTConfig
        Image encoder (SAM's ViT, or MobileSAM's TinyViT).
    decoder : MaskDecoderConfig
        Mask decoder; its ``transformer_dim`` must equal ``encoder.out_chans``.
    mask_in_chans : int
        Hidden channels of the prompt encoder's mask downscaling.
    pixel_mean, pixel_std : tuple of float
        Input normalisation (0..255 range, channel order of the model input).
    """

    name: str
    encoder: ViTEncoderConfig | TinyViTConfig
    decoder: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    mask_in_chans: int = 16
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD

    def __post_init__(self) -> None:
        if self.decoder.transformer_dim != self.encoder.out_chans:
            raise ValueError(
                f"decoder transformer_dim {self.decoder.transformer_dim} must equal the encoder "
                f"output channels {self.encoder.out_chans}"
            )

    @property
    def prompt_embed_dim(self) -> int:
        """Width of prompt tokens, image embeddings and decoder (256 when released)."""
        return self.encoder.out_chans

    @property
    def image_size(self) -> int:
        """Side of the square model input (1024)."""
        return self.encoder.image_size

    @property
    def image_embedding_size(self) -> int:
        """Side of the image-embedding grid (64)."""
        return self.encoder.grid_size

    @property
    def mask_input_size(self) -> int:
        """Side of low-resolution mask logits, in and out (256)."""
        return 4 * self.encoder.grid_size

    @classmethod
    def from_official_kwargs(cls, kwargs: Mapping[str, Any], name: str = "custom") -> SamConfig:
        """Build a config from the keyword arguments of the official builders.

        Parameters
        ----------
        kwargs : mapping
            As stored in the parity fixtures. Decoder: optionally ``prompt_embed_dim``,
            ``decoder_mlp_dim``, ``decoder_num_heads``, ``decoder_depth``,
            ``iou_head_hidden_dim``, ``iou_head_depth``, ``mask_in_chans``,
            ``num_multimask_outputs`` (official defaults otherwise). Encoder: either
            ``tiny_vit``, the official ``TinyViT`` constructor arguments (see
            :meth:`TinyViTConfig.from_official_kwargs`), or the ViT keys of ``_build_sam``:
            ``encoder_embed_dim``, ``encoder_depth``, ``encoder_num_heads``,
            ``encoder_global_attn_indexes`` and optionally ``image_size``, ``patch_size``,
            ``window_size``, ``mlp_ratio``, ``norm_eps``.
        name : str
            Name of the resulting config.
        """
        width = int(kwargs.get("prompt_embed_dim", 256))
        encoder: ViTEncoderConfig | TinyViTConfig
        if "tiny_vit" in kwargs:
            encoder = TinyViTConfig.from_official_kwargs(kwargs["tiny_vit"], out_chans=width)
        else:
            encoder = ViTEncoderConfig(
                embed_dim=int(kwargs["encoder_embed_dim"]),
                depth=int(kwargs["encoder_depth"]),
                num_heads=int(kwargs["encoder_num_heads"]),
                global_attn_indexes=tuple(kwargs["encoder_global_attn_indexes"]),
                out_chans=width,
                image_size=int(kwargs.get("image_size", 1024)),
                patch_size=int(kwargs.get("patch_size", 16)),
                window_size=int(kwargs.get("window_size", 14)),
                mlp_ratio=float(kwargs.get("mlp_ratio", 4.0)),
                norm_eps=float(kwargs.get("norm_eps", 1e-6)),
            )
        return cls(name=name, encoder=encoder,
                   decoder=MaskDecoderConfig.from_official_kwargs(kwargs),
                   mask_in_chans=int(kwargs.get("mask_in_chans", 16)))

def _released(name: str, embed_dim: int, depth: int, num_heads: int,
              global_attn_indexes: tuple[int, ...]) -> SamConfig:
    return SamConfig(
        name=name,
        encoder=ViTEncoderConfig(embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                 global_attn_indexes=global_attn_indexes),
    )


#: Released SAM 1 models and small random-weight variants for tests.
SAM_CONFIGS: dict[str, SamConfig] = {
    "sam_vit_b": _released("sam_vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "sam_vit_l": _released("sam_vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "sam_vit_h": _released("sam_vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    # MobileSAM (official build_sam_vit_t; micro-sam's vit_t models): TinyViT-5M encoder with
    # SAM's prompt encoder and mask decoder.
    "sam_vit_t": SamConfig(name="sam_vit_t", encoder=TinyViTConfig()),
    # Full 1024 input and 64x64 grid (so prompts and masks behave as in the real models)
    # but tiny widths: builds in milliseconds, for tests.
    "sam_test_tiny": SamConfig(
        name="sam_test_tiny",
        encoder=ViTEncoderConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,),
                                 out_chans=32),
        decoder=MaskDecoderConfig(transformer_dim=32, depth=2, num_heads=4, mlp_dim=64,
                                  iou_head_hidden_dim=32),
        mask_in_chans=8,
    ),
    # The TinyViT structure (4 stages, the stride-1 last merge, windows 7/14 with padding) at
    # tiny widths, for tests.
    "sam_test_tinyvit": SamConfig(
        name="sam_test_tinyvit",
        encoder=TinyViTConfig(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1),
                              num_heads=(1, 1, 2, 2), num_classes=0, out_chans=32),
        decoder=MaskDecoderConfig(transformer_dim=32, depth=2, num_heads=4, mlp_dim=64,
                                  iou_head_hidden_dim=32),
        mask_in_chans=8,
    ),
}
