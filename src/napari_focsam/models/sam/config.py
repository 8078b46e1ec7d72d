"""Frozen dataclass configs for SAM (segment-anything 1.0) models.

Every dimension of the model is a field here, so the same code builds ViT-B/L/H, the tiny
test variants and any model described by a parity fixture.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class SamConfig:
    """A whole SAM model: image encoder, prompt encoder and mask decoder.

    Parameters
    ----------
    name : str
        Identifier (e.g. ``"sam_vit_b"``).
    encoder : ViTEncoderConfig
        Image encoder.
    decoder : MaskDecoderConfig
        Mask decoder; its ``transformer_dim`` must equal ``encoder.out_chans``.
    mask_in_chans : int
        Hidden channels of the prompt encoder's mask downscaling.
    pixel_mean, pixel_std : tuple of float
        Input normalisation (0..255 range, channel order of the model input).
    """

    name: str
    encoder: ViTEncoderConfig
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
        """Build a config from the keyword arguments of the official ``_build_sam``.

        Parameters
        ----------
        kwargs : mapping
            Keys ``encoder_embed_dim``, ``encoder_depth``, ``encoder_num_heads``,
            ``encoder_global_attn_indexes`` and optionally ``prompt_embed_dim``,
            ``decoder_mlp_dim``, ``decoder_num_heads``, ``decoder_depth``,
            ``iou_head_hidden_dim``, ``iou_head_depth``, ``mask_in_chans``,
            ``num_multimask_outputs``, ``image_size``, ``patch_size``, ``window_size``,
            ``mlp_ratio`` (official defaults otherwise), as stored in the parity fixtures.
        name : str
            Name of the resulting config.
        """
        width = int(kwargs.get("prompt_embed_dim", 256))
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
        decoder = MaskDecoderConfig(
            transformer_dim=width,
            depth=int(kwargs.get("decoder_depth", 2)),
            num_heads=int(kwargs.get("decoder_num_heads", 8)),
            mlp_dim=int(kwargs.get("decoder_mlp_dim", 2048)),
            num_multimask_outputs=int(kwargs.get("num_multimask_outputs", 3)),
            iou_head_depth=int(kwargs.get("iou_head_depth", 3)),
            iou_head_hidden_dim=int(kwargs.get("iou_head_hidden_dim", 256)),
        )
        return cls(name=name, encoder=encoder, decoder=decoder,
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
}
