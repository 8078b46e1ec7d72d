"""Frozen dataclass configs for FocSAM: a SAM (ViT encoder, prompt encoder, decoder) plus the
FocusRefiner.

:meth:`FocSamConfig.from_official_kwargs` reads the constructor kwargs of the official
``ClickMixSegmentorRefine`` model config (``backbone`` = ``SAMWindowViT``, ``neck`` =
``SAMPromptEncoder``, ``decode_head`` = ``SAMDecoderForRefiner``, ``refine_head`` =
``FocusRefiner``), as stored in the parity fixtures' ``config.model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..sam.config import MaskDecoderConfig, SamConfig, ViTEncoderConfig

#: FocSAM's ViT blocks use ``nn.LayerNorm`` without an eps argument (SAM: 1e-6).
FOCSAM_VIT_NORM_EPS = 1e-5


def _pair(value: Any) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    first, second = value
    return (float(first), float(second))


def _square(value: Any, what: str) -> int:
    if isinstance(value, int):
        return value
    first, second = (int(v) for v in value)
    if first != second:
        raise ValueError(f"{what} {tuple(value)} is not square; only square sizes are supported")
    return first


@dataclass(frozen=True)
class FocusRefinerConfig:
    """FocSAM's FocusRefiner.

    Parameters
    ----------
    embed_dim : int
        Width of the image embeddings and the mask token (= SAM's prompt width).
    depth : int
        Refine blocks; even ones use plain windows, odd ones windows shifted by half a window.
    num_heads : int
        Attention heads.
    mlp_ratio : float
        Hidden width of the token MLP as a multiple of ``embed_dim``.
    window_size : int
        Side of the windows on the embedding grid.
    expand_ratio : tuple of float
        (height, width) factors by which the coarse mask's box grows about its centre.
    canvas_size : int
        Side of the square model input on which the focus box is computed (SAM's image size;
        not an official constructor argument: the official code takes the input's size).
    """

    embed_dim: int = 256
    depth: int = 12
    num_heads: int = 8
    mlp_ratio: float = 4.0
    window_size: int = 16
    expand_ratio: tuple[float, float] = (1.4, 1.4)
    canvas_size: int = 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "expand_ratio", _pair(self.expand_ratio))
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"refiner embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.window_size < 2:
            raise ValueError(f"refiner window_size {self.window_size} must be >= 2")
        if self.depth < 1:
            raise ValueError(f"refiner depth {self.depth} must be >= 1")

    @property
    def mlp_dim(self) -> int:
        """Hidden width of the token MLP."""
        return int(self.mlp_ratio * self.embed_dim)

    @classmethod
    def from_official_kwargs(cls, kwargs: Mapping[str, Any],
                             canvas_size: int = 1024) -> FocusRefinerConfig:
        """Build from the official ``FocusRefiner`` kwargs (official defaults otherwise)."""
        return cls(
            canvas_size=int(canvas_size),
            embed_dim=int(kwargs.get("embed_dim", 256)),
            depth=int(kwargs.get("depth", 12)),
            num_heads=int(kwargs.get("num_heads", 8)),
            mlp_ratio=float(kwargs.get("mlp_ratio", 4.0)),
            window_size=int(kwargs.get("window_size", 14)),
            expand_ratio=_pair(kwargs.get("expand_ratio", 1.4)),
        )


@dataclass(frozen=True)
class FocSamConfig:
    """A whole FocSAM model.

    Parameters
    ----------
    name : str
        Identifier (e.g. ``"focsam_vit_h"``).
    sam : SamConfig
        Image encoder (LayerNorm eps 1e-5), prompt encoder and (retrained) mask decoder.
    refiner : FocusRefinerConfig
        FocusRefiner; its ``embed_dim`` must equal ``sam.prompt_embed_dim``.
    refine_start_step : int
        Interactive step (0-based click index) at which the embeddings are refined.
    """

    name: str
    sam: SamConfig
    refiner: FocusRefinerConfig
    refine_start_step: int = 1

    def __post_init__(self) -> None:
        if self.refiner.embed_dim != self.sam.prompt_embed_dim:
            raise ValueError(
                f"refiner embed_dim {self.refiner.embed_dim} must equal the SAM embedding width "
                f"{self.sam.prompt_embed_dim}"
            )
        if self.refiner.canvas_size != self.sam.image_size:
            raise ValueError(
                f"refiner canvas_size {self.refiner.canvas_size} must equal the SAM input size "
                f"{self.sam.image_size}"
            )

    @classmethod
    def from_official_kwargs(cls, model: Mapping[str, Any], name: str = "custom",
                             refine_start_step: int = 1) -> FocSamConfig:
        """Build from an official ``ClickMixSegmentorRefine`` model config.

        Parameters
        ----------
        model : mapping
            With sub-dicts ``backbone`` (``img_size``, ``patch_size``, ``in_dim``,
            ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``, ``out_dim``, ``qkv_bias``,
            ``use_abs_pos_embed``, ``use_rel_pos_embed``, ``window_size``,
            ``global_attn_indexes``), ``neck`` (``embed_dim``, ``image_embed_size``,
            ``input_image_size``, ``mask_in_dim``), ``decode_head`` (``in_dim``,
            ``attn_cfg`` {``depth``, ``mlp_dim``, ``num_heads``}, ``num_multimask_outputs``,
            ``iou_head_depth``, ``iou_head_hidden_dim``) and ``refine_head`` (see
            :meth:`FocusRefinerConfig.from_official_kwargs`); optionally ``data_preprocessor``
            (``mean``, ``std``).
        name : str
            Name of the resulting config.
        refine_start_step : int
            Step at which the refiner runs (``test_cfg.refine_start_step``, official 1).

        Raises
        ------
        ValueError
            When the parts disagree (widths, grid, input size).
        """
        bb, neck, head = model["backbone"], model["neck"], model["decode_head"]
        width = int(bb.get("out_dim", 256))
        encoder = ViTEncoderConfig(
            embed_dim=int(bb["embed_dim"]),
            depth=int(bb["depth"]),
            num_heads=int(bb["num_heads"]),
            global_attn_indexes=tuple(bb.get("global_attn_indexes", ())),
            out_chans=width,
            image_size=int(bb.get("img_size", 1024)),
            patch_size=int(bb.get("patch_size", 16)),
            window_size=int(bb.get("window_size", 0)),
            mlp_ratio=float(bb.get("mlp_ratio", 4.0)),
            norm_eps=FOCSAM_VIT_NORM_EPS,
            qkv_bias=bool(bb.get("qkv_bias", True)),
            use_rel_pos=bool(bb.get("use_rel_pos_embed", False)),
            use_abs_pos=bool(bb.get("use_abs_pos_embed", True)),
            in_chans=int(bb.get("in_dim", 3)),
        )
        attn = head.get("attn_cfg", {})
        decoder = MaskDecoderConfig(
            transformer_dim=int(head.get("in_dim", width)),
            depth=int(attn.get("depth", 2)),
            num_heads=int(attn.get("num_heads", 8)),
            mlp_dim=int(attn.get("mlp_dim", 2048)),
            num_multimask_outputs=int(head.get("num_multimask_outputs", 3)),
            iou_head_depth=int(head.get("iou_head_depth", 3)),
            iou_head_hidden_dim=int(head.get("iou_head_hidden_dim", 256)),
        )
        prompt_width = int(neck.get("embed_dim", width))
        grid = _square(neck.get("image_embed_size", encoder.grid_size), "neck image_embed_size")
        size = _square(neck.get("input_image_size", encoder.image_size), "neck input_image_size")
        if (prompt_width, grid, size) != (width, encoder.grid_size, encoder.image_size):
            raise ValueError(
                f"neck (embed_dim {prompt_width}, grid {grid}, input {size}) does not match the "
                f"backbone (out_dim {width}, grid {encoder.grid_size}, img_size "
                f"{encoder.image_size})"
            )
        extra = {}
        pre = model.get("data_preprocessor") or {}
        if "mean" in pre and "std" in pre:
            extra = {"pixel_mean": tuple(float(v) for v in pre["mean"]),
                     "pixel_std": tuple(float(v) for v in pre["std"])}
        sam = SamConfig(name=f"{name}/sam", encoder=encoder, decoder=decoder,
                        mask_in_chans=int(neck.get("mask_in_dim", 16)), **extra)
        refiner = FocusRefinerConfig.from_official_kwargs(model["refine_head"],
                                                          canvas_size=encoder.image_size)
        return cls(name=name, sam=sam, refiner=refiner, refine_start_step=int(refine_start_step))


def _vit_h_sam() -> SamConfig:
    return SamConfig(
        name="focsam_vit_h/sam",
        encoder=ViTEncoderConfig(embed_dim=1280, depth=32, num_heads=16,
                                 global_attn_indexes=(7, 15, 23, 31), norm_eps=FOCSAM_VIT_NORM_EPS),
    )


#: The released FocSAM (ViT-H, ``iter_160000.pth``) and a tiny random-weight test variant.
FOCSAM_CONFIGS: dict[str, FocSamConfig] = {
    "focsam_vit_h": FocSamConfig(name="focsam_vit_h", sam=_vit_h_sam(),
                                 refiner=FocusRefinerConfig()),
    # Full 1024 input and 64x64 grid but tiny widths, for tests.
    "focsam_test_tiny": FocSamConfig(
        name="focsam_test_tiny",
        sam=SamConfig(
            name="focsam_test_tiny/sam",
            encoder=ViTEncoderConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,),
                                     out_chans=32, norm_eps=FOCSAM_VIT_NORM_EPS),
            decoder=MaskDecoderConfig(transformer_dim=32, depth=2, num_heads=4, mlp_dim=64,
                                      iou_head_hidden_dim=32),
            mask_in_chans=8,
        ),
        refiner=FocusRefinerConfig(embed_dim=32, depth=2, num_heads=4, window_size=16),
    ),
}
