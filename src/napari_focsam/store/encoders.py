"""The embedding store's adapter of SAM-style interactive predictors (SAM, FocSAM).

`SamEncoder` turns RGB frames into ``image_embeddings`` ``(C, E, E)`` float32 arrays (what is
cached) with its predictor's own preprocessing (`SamPredictor.model_input`, so features equal
``set_image``'s), and cached arrays back into what the predictor's ``set_frame`` takes. The
SAM 2 adapter is `napari_focsam.store.sam2_encoder.Sam2Encoder`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..engine.precision import autocast_context
from ..engine.sam_predictor import SamPredictor
from .encoder_base import FeatureSpec, check_frames, dtype_name, model_fingerprint, split_batch

__all__ = ["SamEncoder"]

logger = logging.getLogger(__name__)


class SamEncoder:
    """The image encoder of a SAM or FocSAM predictor (features identical to its
    ``set_image``).

    Parameters
    ----------
    predictor : SamPredictor
        A `SamPredictor` or `FocSamPredictor`: its model, device, encoder precision and
        preprocessing are used.
    model_id : str or None
        Identity of the weights; None derives ``"<config name>:<fingerprint>"``. The encoder
        precision is appended either way.
    """

    def __init__(self, predictor: SamPredictor, *, model_id: str | None = None) -> None:
        self.predictor = predictor
        if model_id is None:
            name = getattr(predictor.model.config, "name", type(predictor.model).__name__)
            model_id = f"{name}:{model_fingerprint(predictor.sam.image_encoder)}"
        self.model_id = f"{model_id}@{dtype_name(predictor.encoder_dtype)}"
        self.preprocess_version = predictor.preprocess_version

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
            x, input_size = pred.model_input(rgb)  # (1, 3, S, S)
            expected = pred.expected_input_size(rgb.shape[:2])
            if tuple(input_size) != tuple(expected):
                raise RuntimeError(f"model input size {input_size} != expected {expected}")
            inputs.append(x)
        with autocast_context(pred.device, pred.encoder_dtype):
            emb = pred.sam.image_encoder(torch.cat(inputs))  # (B, C, E, E)
        return [{"image_embeddings": e} for e in split_batch(emb)]

    def modules(self) -> tuple[torch.nn.Module, ...]:
        return (self.predictor.sam.image_encoder,)

    def to_features(self, arrays: Mapping[str, np.ndarray],
                    frame_shape: tuple[int, int]) -> torch.Tensor:
        """``(1, C, E, E)`` float32 embeddings on the device, for ``predictor.set_frame``."""
        emb = torch.from_numpy(np.array(arrays["image_embeddings"], dtype=np.float32))[None]
        return emb.to(self.device)
