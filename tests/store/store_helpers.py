"""Helpers of the embedding-store tests: a fake deterministic encoder and a lazy
array-like that records every read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class FakeEncoder:
    """Deterministic stand-in for an image encoder (no torch): features depend on the pixels.

    ``emb`` ``(4, 8, 8)`` and ``aux`` ``(2, 4, 4)`` by default; `calls` records batch sizes.
    """

    preprocess_version = "fake-v1"

    def __init__(self, model_id: str = "fake:model", spec: dict | None = None) -> None:
        self.model_id = model_id
        self.spec = spec or {"emb": (4, 8, 8), "aux": (2, 4, 4)}
        self.calls: list[int] = []

    def feature_spec(self, frame_shape):
        return {k: (v, np.dtype(np.float32)) for k, v in self.spec.items()}

    def metadata(self, frame_shape):
        return {"original_size": [int(s) for s in frame_shape]}

    def encode(self, frames: Sequence[np.ndarray]):
        self.calls.append(len(frames))
        out = []
        for f in frames:
            assert f.dtype == np.uint8 and f.ndim == 3 and f.shape[-1] == 3
            mean = float(f.mean())
            item = {}
            for k, (name, shape) in enumerate(self.spec.items()):
                a = np.empty(shape, np.float32)
                flat = a.reshape(-1)
                flat[:] = mean / 255.0 + k
                flat[: min(flat.size, f.size)] += f.reshape(-1)[: flat.size] / 1000.0
                item[name] = a
            out.append(item)
        return out

    def to_features(self, arrays, frame_shape):
        return dict(arrays)

    def modules(self):
        return ()

    @property
    def frames_encoded(self) -> int:
        return sum(self.calls)


class RecordingArray:
    """Array-like over a numpy array that records every ``__getitem__`` key and refuses any read
    of more than `max_frames` frames along `stack_axes` (so a whole-array read fails)."""

    def __init__(self, data: np.ndarray, stack_axes: tuple[int, ...]) -> None:
        self._data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.ndim = data.ndim
        self.stack_axes = stack_axes
        self.keys: list[tuple] = []

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        self.keys.append(key)
        for ax in self.stack_axes:
            if ax >= len(key) or not isinstance(key[ax], (int, np.integer)):
                raise AssertionError(f"read of more than one frame: {key}")
        return self._data[key]

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole array was read")


def make_stack(n: int = 6, hw: tuple[int, int] = (24, 32), dtype=np.uint16, seed: int = 0) -> np.ndarray:
    """``(n, H, W)`` stack with a bright square moving right and a frame-dependent offset."""
    rng = np.random.default_rng(seed)
    h, w = hw
    out = rng.integers(100, 200, size=(n, h, w)).astype(dtype)
    for t in range(n):
        out[t, 5:12, 2 + 3 * t: 9 + 3 * t] = 1000 + 50 * t
    return out
