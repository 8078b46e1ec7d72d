"""SAM 2 adapter of the embedding store: multi-level Hiera features per frame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine.frame_features import sam2_model_input
from ..engine.precision import autocast_context, resolve_device, resolve_encoder_dtype
from .encoder_base import FeatureSpec, check_frames, dtype_name, model_fingerprint, split_batch

__all__ = ["Sam2Encoder"]


class Sam2Encoder:
    """SAM 2 image encoder (features identical to ``StackFeatures`` / ``encode_image``).

    Parameters
    ----------
    model : Sam2Model
        The model (moved to `device` unless None).
    device : str or torch.device or None
        None keeps the model's device.
    encoder_dtype : str or torch.dtype
        ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``.
    model_id : str or None
        Identity of the weights; None derives ``"<config name>:<fingerprints>"``. The encoder
        precision is appended either way.
    """

    preprocess_version = "sam2-square-bilinear-v1"

    def __init__(self, model: nn.Module, *, device: str | torch.device | None = None,
                 encoder_dtype: str | torch.dtype = "auto", model_id: str | None = None) -> None:
        if device is not None:
            model = model.to(resolve_device(device))
        self.model = model.eval()
        self.device = model.device
        self.encoder_dtype = resolve_encoder_dtype(self.device, encoder_dtype)
        if model_id is None:
            model_id = (f"{model.config.name}:"
                        f"{model_fingerprint(model.image_encoder)}:"
                        f"{model_fingerprint(model.sam_mask_decoder)}")  # conv_s0 / conv_s1
        self.model_id = f"{model_id}@{dtype_name(self.encoder_dtype)}"
        self._pos: dict[int, torch.Tensor] = {}

    def feature_spec(self, frame_shape: tuple[int, int]) -> FeatureSpec:
        cfg = self.model.config
        c, e = int(cfg.hidden_dim), int(cfg.image_embedding_size)
        f32 = np.dtype(np.float32)
        spec: FeatureSpec = {"features": ((c, e, e), f32)}
        if cfg.use_high_res_features_in_sam:
            spec["high_res_0"] = ((c // 8, 4 * e, 4 * e), f32)
            spec["high_res_1"] = ((c // 4, 2 * e, 2 * e), f32)
        return spec

    def metadata(self, frame_shape: tuple[int, int]) -> dict[str, Any]:
        return {"original_size": [int(s) for s in frame_shape],
                "image_size": int(self.model.image_size)}

    @torch.no_grad()
    def encode(self, frames: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Encode a batch of frames in one encoder call.

        Returns
        -------
        list of dict
            ``B`` dicts ``features`` ``(C, E, E)`` and, with high-resolution features,
            ``high_res_0`` ``(C/8, 4E, 4E)``, ``high_res_1`` ``(C/4, 2E, 2E)``, float32.
        """
        size = self.model.image_size
        x = torch.cat([sam2_model_input(f, size, self.device) for f in check_frames(frames)])
        with autocast_context(self.device, self.encoder_dtype):
            feats = self.model.encode_image(x)  # batch B
        e = feats.features.shape[-1]
        if e not in self._pos:
            self._pos[e] = feats.pos[:1].float().contiguous()
        columns = {"features": split_batch(feats.features)}
        for k, t in enumerate(feats.high_res):
            columns[f"high_res_{k}"] = split_batch(t)
        return [{name: col[b] for name, col in columns.items()} for b in range(len(x))]

    def position_encoding(self, grid: int) -> torch.Tensor:
        """``(1, C, E, E)`` float32 sine encoding of the stride-16 grid, as ``encode_image``
        gives it (computed in the dtype the encoder's coarsest level has under autocast)."""
        pos = self._pos.get(grid)
        if pos is None:
            pe = self.model.image_encoder.neck.position_encoding
            dtype = torch.float32 if self.encoder_dtype == torch.float32 else self._level_dtype()
            pos = pe.encode_grid(grid, grid, self.device, dtype).float().contiguous()
            self._pos[grid] = pos
        return pos

    def _level_dtype(self) -> torch.dtype:
        """dtype of the coarsest kept pyramid level under autocast: float32 when it gets the
        (float32) top-down path, else the dtype of its lateral conv (probed on a tiny tensor)."""
        enc = self.model.image_encoder
        n = len(enc.neck.convs) - 1
        last = n - enc.scalp
        if last < n and last in enc.neck.top_down_levels:
            return torch.float32
        conv = enc.neck.convs[n - last].conv
        x = torch.zeros(1, conv.in_channels, 2, 2, device=self.device)
        with torch.no_grad(), autocast_context(self.device, self.encoder_dtype):
            return conv(x).dtype

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.model.image_encoder,)

    def to_features(self, arrays: Mapping[str, np.ndarray], frame_shape: tuple[int, int]):
        """A ``Sam2FrameFeatures`` (batch 1, float32, on the model's device)."""
        from ..models.sam2.model import Sam2FrameFeatures

        def tensor(name: str) -> torch.Tensor:
            a = np.array(arrays[name], dtype=np.float32)  # a copy: the cache stays untouched
            return torch.from_numpy(a)[None].to(self.device)

        feats = tensor("features")
        high_res = tuple(tensor(f"high_res_{k}") for k in range(2) if f"high_res_{k}" in arrays)
        return Sam2FrameFeatures(feats, self.position_encoding(int(feats.shape[-1])), high_res)
