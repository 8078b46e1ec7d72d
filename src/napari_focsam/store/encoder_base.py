"""The encoder protocol of the embedding store and helpers shared by its adapters."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

__all__ = ["FeatureSpec", "FrameEncoder", "check_frames", "dtype_name", "model_fingerprint",
           "split_batch"]

FeatureSpec = dict[str, tuple[tuple[int, ...], np.dtype]]


@runtime_checkable
class FrameEncoder(Protocol):
    """What `EmbeddingStore` needs from an encoder.

    Attributes
    ----------
    model_id : str
        Identity of the weights and precision (features of different ids never mix).
    preprocess_version : str
        Version of the frame -> model input preprocessing.
    """

    model_id: str
    preprocess_version: str

    def feature_spec(self, frame_shape: tuple[int, int]) -> FeatureSpec:
        """``{name: (per-frame shape, np.float32)}`` of the arrays `encode` returns."""

    def metadata(self, frame_shape: tuple[int, int]) -> dict[str, Any]:
        """JSON-able metadata stored with the features."""

    def encode(self, frames: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """``B`` ``(H, W, 3)`` uint8 frames -> ``B`` dicts of float32 arrays."""

    def to_features(self, arrays: Mapping[str, np.ndarray], frame_shape: tuple[int, int]) -> Any:
        """Cached arrays of one frame -> the consumer's features."""

    def modules(self) -> tuple[nn.Module, ...]:
        """The modules `encode` runs (their blocks check a cancel event, see
        `napari_focsam.engine.cancel.stop_on`)."""


def model_fingerprint(module: nn.Module, samples: int = 1024) -> str:
    """Cheap, deterministic fingerprint of a module's weights.

    Hashes every parameter's and buffer's name, shape, dtype and `samples` evenly spaced
    values (as float64), so different checkpoints of one architecture get different ids
    without hashing gigabytes.

    Returns
    -------
    str
        16 hex characters.
    """
    h = hashlib.blake2b(digest_size=8)
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}|".encode())
            flat = t.detach().reshape(-1)
            if flat.numel() > samples:
                idx = torch.linspace(0, flat.numel() - 1, samples, device=flat.device).long()
                flat = flat[idx]
            h.update(flat.to("cpu", torch.float64).numpy().tobytes())
    return h.hexdigest()


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(
        dtype, str(dtype))


def check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = [np.asarray(f) for f in frames]
    for f in out:
        if f.ndim != 3 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise ValueError(f"frames must be (H, W, 3) uint8, got {f.shape} {f.dtype}")
    return out


def split_batch(batch: torch.Tensor) -> list[np.ndarray]:
    """``(B, ...)`` tensor -> ``B`` float32 numpy arrays (copies when ``B > 1``)."""
    arr = batch.detach().float().cpu().numpy()
    return [arr[0]] if len(arr) == 1 else [a.copy() for a in arr]
