"""Per-frame SAM 2 image features of a stack, computed once per frame and kept in memory.

A minimal `FeatureProvider` for the propagation engine: frame ``t`` is preprocessed, encoded
on first use and cached (optionally only the most recent ``max_cached`` frames). The persistent
RAM + disk store of stacks builds on the same interface.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .precision import autocast_context

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "StackFeatures", "sam2_model_input"]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sam2_model_input(frame: np.ndarray | torch.Tensor, image_size: int,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """SAM 2's input for one RGB frame.

    ``x / 255`` -> bilinear resize (no antialiasing) to ``image_size`` squared -> ImageNet
    normalisation, the same formula as the parity fixtures.

    Parameters
    ----------
    frame : array-like
        ``(H, W, 3)`` uint8 RGB.
    image_size : int
        Model input side.
    device : str or torch.device
        Where the result goes.

    Returns
    -------
    torch.Tensor
        ``(1, 3, image_size, image_size)`` float32.
    """
    x = torch.as_tensor(np.asarray(frame)).to(device)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"frame must be (H, W, 3) RGB, got shape {tuple(x.shape)}")
    x = x.float().div(255).permute(2, 0, 1)[None]
    x = F.interpolate(x, (image_size, image_size), mode="bilinear", align_corners=False,
                      antialias=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class StackFeatures:
    """Encode the frames of a stack on demand, once each.

    Parameters
    ----------
    model : napari_focsam.models.sam2.Sam2Model
        The model whose `encode_image` is used.
    frames : sequence of np.ndarray
        ``T`` frames ``(H, W, 3)`` uint8 RGB (e.g. a ``(T, H, W, 3)`` array).
    encoder_dtype : torch.dtype
        Encoder precision (features are stored as float32).
    max_cached : int or None
        Keep at most this many frames' features (least recently used dropped); None keeps all.
    """

    def __init__(self, model, frames: Sequence[np.ndarray] | np.ndarray, *,
                 encoder_dtype: torch.dtype = torch.float32, max_cached: int | None = None) -> None:
        self.model = model
        self.frames = frames
        self.encoder_dtype = encoder_dtype
        self.max_cached = max_cached
        self._cache: OrderedDict[int, object] = OrderedDict()
        self.encoded = 0  # number of encoder runs, for tests and benchmarks

    def __len__(self) -> int:
        return len(self.frames)

    @torch.no_grad()
    def __call__(self, frame_idx: int):
        """Features of frame `frame_idx` (a `Sam2FrameFeatures`)."""
        feats = self._cache.get(frame_idx)
        if feats is not None:
            self._cache.move_to_end(frame_idx)
            return feats
        x = sam2_model_input(self.frames[frame_idx], self.model.image_size, self.model.device)
        with autocast_context(self.model.device, self.encoder_dtype):
            feats = self.model.encode_image(x)
        self.encoded += 1
        self._cache[frame_idx] = feats
        if self.max_cached is not None:
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return feats
