"""One contrast stretch for a whole stack: percentile limits from sampled frames, and the
linear map to uint8 (the arithmetic of `napari_focsam.engine.image.to_rgb_uint8`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np

__all__ = ["CONTRAST_VERSION", "Limits", "apply_limits", "stack_limits"]

logger = logging.getLogger(__name__)

#: Bumped whenever the mapping raw slice -> RGB uint8 changes (part of the content hash).
CONTRAST_VERSION = "stack-contrast-v1"

#: ``(lo, hi)`` mapped to 0 and 255, or None (the channel maps to zeros).
Limits = tuple[float, float] | None


def _work_dtype(dtype: np.dtype) -> type:
    """Float type of the contrast arithmetic (as in `napari_focsam.engine.image`)."""
    return np.float64 if dtype in (np.float64, np.int64, np.uint64) else np.float32


def apply_limits(channel: np.ndarray, limits: Limits) -> np.ndarray:
    """Map one channel linearly to uint8 with given limits.

    Parameters
    ----------
    channel : np.ndarray
        ``(H, W)`` integer or float values.
    limits : tuple of float or None
        ``(lo, hi)`` mapped to 0 and 255 (``hi > lo``); None gives all zeros.

    Returns
    -------
    np.ndarray
        ``(H, W)`` uint8: clipped and rounded; NaN / inf pixels become 0 (as in
        `napari_focsam.engine.image.to_rgb_uint8`, whose arithmetic this repeats exactly).
    """
    work_dtype = _work_dtype(channel.dtype)
    values = channel.astype(work_dtype, copy=False)
    out = np.zeros(channel.shape, dtype=np.uint8)
    if limits is None:
        return out
    finite = np.isfinite(values)
    if not finite.any():
        return out
    lo, hi = limits
    with np.errstate(over="ignore", invalid="ignore"):
        scale = 255.0 / (hi - lo)
        scaled = (np.where(finite, values, work_dtype(lo)) - work_dtype(lo)) * scale
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled[~np.isfinite(scaled)] = 0.0
    np.rint(scaled, out=scaled)
    out[...] = scaled
    return out


def stack_limits(frames: Iterable[np.ndarray], n_channels: int, percentiles: tuple[float, float],
                 share: int) -> list[Limits]:
    """Per-channel limits of sampled frames, taken together.

    Parameters
    ----------
    frames : iterable of np.ndarray
        ``(H, W, C)`` raw sampled frames (integer or float), read one at a time.
    n_channels : int
        Channels used (``<= C``).
    percentiles : tuple of float
        ``(low, high)`` in ``[0, 100]``.
    share : int
        Finite values kept per frame and channel at most (a regular stride beyond it).

    Returns
    -------
    list of Limits
        The percentiles of the finite values; their min / max when the percentiles coincide
        (sparse channel); None for a constant channel or one without finite values.
    """
    samples: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    n_frames = 0
    for raw in frames:
        n_frames += 1
        work = _work_dtype(raw.dtype)
        for c in range(n_channels):
            values = raw[..., c].astype(work, copy=False)
            finite = values[np.isfinite(values)]
            if finite.size > share:
                finite = finite[:: math.ceil(finite.size / share)]
            samples[c].append(finite)
    lo_pct, hi_pct = percentiles
    limits: list[Limits] = []
    for c, parts in enumerate(samples):
        values = np.concatenate(parts)
        if values.size == 0:
            logger.warning("channel %d has no finite values in the %d sampled frames; it is "
                           "mapped to zeros", c, n_frames)
            limits.append(None)
            continue
        lo, hi = (float(v) for v in np.percentile(values, [lo_pct, hi_pct]))
        if not hi > lo:  # sparse channel: the full range
            lo, hi = float(values.min()), float(values.max())
        limits.append((lo, hi) if hi > lo else None)
    return limits
