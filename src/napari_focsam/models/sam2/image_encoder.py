"""SAM 2 image encoder: Hiera trunk + FPN neck (official ``ImageEncoder`` semantics).

Module names ``trunk`` and ``neck`` match the official ones, so the ``image_encoder.*`` entries
of an official checkpoint (prefix removed) load into :class:`Sam2ImageEncoder` unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import torch
from torch import nn

from .config import ImageEncoderConfig
from .hiera import Hiera
from .neck import FpnNeck

logger = logging.getLogger(__name__)


@dataclass
class Sam2ImageEncoderOutput:
    """What :class:`Sam2ImageEncoder` returns (the official output dict, as attributes).

    Also indexable like the official dict (``out["vision_features"]``).

    Attributes
    ----------
    vision_features : torch.Tensor
        ``B x d x S/16 x S/16`` (released: stride 16), the coarsest kept level
        (= ``backbone_fpn[-1]``).
    vision_pos_enc : list of torch.Tensor
        Sine position encodings ``B x num_pos_feats x H_l x W_l`` of every kept level, highest
        resolution first. Batch-expanded views of cached tensors: do not modify in place.
    backbone_fpn : list of torch.Tensor
        ``B x d x H_l x W_l`` features of every kept level, highest resolution first
        (released: strides 4, 8, 16). NCHW tensors that may have channels-last strides.
    """

    vision_features: torch.Tensor
    vision_pos_enc: list[torch.Tensor]
    backbone_fpn: list[torch.Tensor]

    def __getitem__(self, key: str) -> torch.Tensor | list[torch.Tensor]:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> tuple[str, ...]:
        """Names of the outputs (official dict keys)."""
        return tuple(f.name for f in fields(self))

    def as_dict(self) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """The official ``{"vision_features", "vision_pos_enc", "backbone_fpn"}`` dict."""
        return {name: getattr(self, name) for name in self.keys()}


class Sam2ImageEncoder(nn.Module):
    """Hiera trunk, FPN neck, and the ``scalp`` coarsest levels dropped.

    Parameters
    ----------
    cfg : ImageEncoderConfig
        Architecture.

    Notes
    -----
    Input ``B x 3 x S x S`` normalised images; ``S`` must be a multiple of the coarsest trunk
    stride (32 when released; 1024 for the released models). Position encodings of dropped
    levels are not computed (the official code computes and discards them).
    """

    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = Hiera(cfg.trunk)
        self.neck = FpnNeck(cfg.neck)
        self.scalp = cfg.scalp

    @property
    def input_multiple(self) -> int:
        """Input sides must be multiples of this (the coarsest trunk stride)."""
        return self.cfg.trunk.stage_strides[-1]

    def forward(self, x: torch.Tensor) -> Sam2ImageEncoderOutput:
        """Encode a batch of images.

        Parameters
        ----------
        x : torch.Tensor
            ``B x 3 x S x S`` (any ``H x W`` that are multiples of :attr:`input_multiple`).

        Returns
        -------
        Sam2ImageEncoderOutput
        """
        if x.ndim != 4 or x.shape[1] != self.cfg.trunk.in_chans:
            raise ValueError(f"expected B x {self.cfg.trunk.in_chans} x H x W images, got {tuple(x.shape)}")
        m = self.input_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of {m}")
        features = self.neck.fpn(self.trunk(x))
        if self.scalp > 0:
            features = features[: -self.scalp]
        pos = [self.neck.position_encoding(f) for f in features]
        return Sam2ImageEncoderOutput(vision_features=features[-1], vision_pos_enc=pos,
                                      backbone_fpn=features)
