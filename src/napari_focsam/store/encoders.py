"""Encoder adapters of the embedding store: one per model family, one common protocol.

An adapter turns RGB frames into named float32 arrays (what is cached) and cached arrays back
into what its consumer eats:

- `SamEncoder` / `FocSamEncoder`: ``image_embeddings`` ``(C, E, E)``; `to_features` gives the
  keyword arguments of ``SamPredictor.set_features`` / ``FocSamPredictor.set_features``.
  Preprocessing is the predictor's own ``_model_input``, so features equal ``set_image``'s.
- `Sam2Encoder`: ``features`` ``(C, E, E)``, ``high_res_0`` ``(C/8, 4E, 4E)`` and
  ``high_res_1`` ``(C/4, 2E, 2E)``; `to_features` gives a ``Sam2FrameFeatures`` whose
  (deterministic) sine position encoding is recomputed by the model, not stored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine.focsam_predictor import FocSamPredictor
from ..engine.precision import autocast_context
from ..engine.sam_predictor import SamPredictor
from .encoder_base import (
    FeatureSpec,
    FrameEncoder,
    check_frames,
    dtype_name,
    model_fingerprint,
    split_batch,
)
from .sam2_encoder import Sam2Encoder

__all__ = ["FocSamEncoder", "FrameEncoder", "Sam2Encoder", "SamEncoder", "model_fingerprint"]

logger = logging.getLogger(__name__)


class SamEncoder:
    """SAM image encoder (features identical to ``SamPredictor.set_image``).

    Parameters
    ----------
    model : nn.Module
        A ``SamModel``.
    device : str or torch.device or None
        None keeps the model's device; ``"auto"`` or any torch device otherwise.
    encoder_dtype : str or torch.dtype
        ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"`` (autocast of the image encoder).
    model_id : str or None
        Identity of the weights; None derives ``"<family>:<config name>:<fingerprint>"``.
        The encoder precision is appended either way.
    """

    family = "sam"
    preprocess_version = "sam-longest-side-v1"
    predictor_class: type[SamPredictor] = SamPredictor

    def __init__(self, model: nn.Module, *, device: str | torch.device | None = None,
                 encoder_dtype: str | torch.dtype = "auto", model_id: str | None = None) -> None:
        device = next(model.parameters()).device if device is None else device
        self._init(self.predictor_class(model, device=device, encoder_dtype=encoder_dtype),
                   model_id)

    def _init(self, predictor: SamPredictor, model_id: str | None) -> None:
        self.predictor = predictor
        if model_id is None:
            name = getattr(predictor.model.config, "name", type(predictor.model).__name__)
            model_id = f"{self.family}:{name}:{model_fingerprint(predictor.sam.image_encoder)}"
        self.model_id = f"{model_id}@{dtype_name(predictor.encoder_dtype)}"

    @classmethod
    def from_predictor(cls, predictor: SamPredictor, *, model_id: str | None = None) -> SamEncoder:
        """Adapter using an existing predictor (its model, device and precision); a
        ``FocSamPredictor`` gives a `FocSamEncoder`."""
        klass = FocSamEncoder if isinstance(predictor, FocSamPredictor) else SamEncoder
        self = klass.__new__(klass)
        self._init(predictor, model_id)
        return self

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    @property
    def encoder_dtype(self) -> torch.dtype:
        return self.predictor.encoder_dtype

    def feature_spec(self, frame_shape: tuple[int, int]) -> FeatureSpec:
        cfg = self.predictor.sam.config
        grid = int(cfg.image_embedding_size)
        return {"image_embeddings": ((int(cfg.prompt_embed_dim), grid, grid), np.dtype(np.float32))}

    def metadata(self, frame_shape: tuple[int, int]) -> dict[str, Any]:
        h, w = (int(s) for s in frame_shape)
        return {"original_size": [h, w],
                "input_size": list(self.predictor.expected_input_size((h, w))),
                "image_size": self.predictor.image_size}

    @torch.no_grad()
    def encode(self, frames: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Encode a batch of frames in one encoder call.

        Parameters
        ----------
        frames : sequence of np.ndarray
            ``B`` ``(H, W, 3)`` uint8 RGB frames.

        Returns
        -------
        list of dict
            ``B`` ``{"image_embeddings": (C, E, E) float32}``.
        """
        pred = self.predictor
        inputs = []
        for rgb in check_frames(frames):
            x, input_size = pred._model_input(rgb)  # (1, 3, S, S)
            expected = pred.expected_input_size(rgb.shape[:2])
            if tuple(input_size) != tuple(expected):
                raise RuntimeError(f"model input size {input_size} != expected {expected}")
            inputs.append(x)
        with autocast_context(pred.device, pred.encoder_dtype):
            emb = pred.sam.image_encoder(torch.cat(inputs))  # (B, C, E, E)
        return [{"image_embeddings": e} for e in split_batch(emb)]

    def to_features(self, arrays: Mapping[str, np.ndarray],
                    frame_shape: tuple[int, int]) -> dict[str, Any]:
        """Keyword arguments of ``predictor.set_features``.

        Returns
        -------
        dict
            ``features`` ``(1, C, E, E)`` float32 tensor on the device, ``original_size``
            ``(H, W)`` and ``input_size`` ``(h, w)``.
        """
        h, w = (int(s) for s in frame_shape)
        emb = torch.from_numpy(np.array(arrays["image_embeddings"], dtype=np.float32))[None]
        return {"features": emb.to(self.device), "original_size": (h, w),
                "input_size": tuple(self.predictor.expected_input_size((h, w)))}


class FocSamEncoder(SamEncoder):
    """FocSAM image encoder (BGR, pad to 32, FocSAM's input size; identical to
    ``FocSamPredictor.set_image``). Parameters as `SamEncoder`, with a ``FocSamModel``."""

    family = "focsam"
    preprocess_version = "focsam-bgr-pad32-v1"
    predictor_class = FocSamPredictor
