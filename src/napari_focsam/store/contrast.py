"""One contrast stretch for a whole stack: percentile limits from sampled frames, mapped to
uint8 by `napari_focsam.engine.image.scale_to_uint8` (the arithmetic of `to_rgb_uint8`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np

from ..engine.image import contrast_work_dtype, scale_to_uint8

__all__ = ["CONTRAST_VERSION", "Limits", "apply_limits", "stack_limits"]

logger = logging.getLogger(__name__)

#: Bumped whenever the mapping raw slice -> RGB uint8 changes (part of the content hash).
CONTRAST_VERSION = "stack-contrast-v1"

#: ``(lo, hi)`` mapped to 0 and 255, or None (the channel maps to zeros).
Limits = tuple[float, float] | None


def apply_limits(channel: np.ndarray, limits: Limits) -> np.ndarray:
    """Map one ``(H, W)`` channel to uint8 with given limits (`scale_to_uint8`; None: zeros)."""
    if limits is None:
        return np.zeros(channel.shape, dtype=np.uint8)
    return scale_to_uint8(channel, *limits)


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
        work = contrast_work_dtype(raw.dtype)
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
