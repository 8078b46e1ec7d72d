"""Turn a microscope's or a camera's 2D image into the ``(H, W, 3)`` uint8 RGB of the encoders.

Ordinary 8-bit photographs (gray, RGB, RGBA) pass through untouched so that results match the
official SAM predictor bit for bit. Everything else (16-bit, float, signed, bool, 2-channel
composites) is contrast-stretched per channel between robust percentiles of its finite values.
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import UserError

__all__ = ["MAX_CHANNELS", "ImageError", "check_image_dtype", "check_percentiles", "contrast_work_dtype",
           "scale_to_uint8", "to_rgb_uint8"]

logger = logging.getLogger(__name__)

#: A channel axis longer than this is almost certainly a z / t / stack axis.
MAX_CHANNELS = 16

_ACCEPTED_KINDS = {"b": "bool", "u": "unsigned int", "i": "int", "f": "float"}


class ImageError(UserError, ValueError):
    """The image cannot be converted to an RGB encoder input."""


def to_rgb_uint8(
    image: np.ndarray,
    *,
    channel_axis: int | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Convert one 2D image (optionally with channels) to ``(H, W, 3)`` uint8 RGB.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` grayscale, or 3D with one channel axis: ``(H, W, C)`` by default, any axis
        via `channel_axis`. ``C`` may be 1 (gray), 2 (composite: red = channel 0, green =
        channel 1, blue = 0), 3 (RGB), 4 (RGBA, alpha dropped) or up to `MAX_CHANNELS` (the
        first three are used, with a warning). dtype bool, unsigned/signed int or float.
    channel_axis : int or None
        Axis of `image` holding the channels. ``None`` means the last axis for 3D input and no
        channel axis for 2D input.
    percentiles : tuple of float
        ``(low, high)`` percentiles, in ``[0, 100]``, mapped to 0 and 255 when an image is
        contrast-stretched. Not used for uint8 input.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` uint8, C-contiguous. uint8 input keeps its values (and may share memory
        with `image`). bool input maps to 0 / 255. Other dtypes are stretched per channel:
        the percentiles are computed over finite values only, mapped linearly to 0..255,
        clipped and rounded; NaN / inf pixels become 0, and a constant (or all-NaN) channel
        becomes all zeros. When the two percentiles coincide (a sparse channel, e.g. a few
        bright spots on a flat background), the channel's finite min / max are used instead.

    Raises
    ------
    ImageError
        The image is not 2D / 3D, is empty or smaller than 2 x 2, has an unsupported dtype, or
        its channel axis is invalid or longer than `MAX_CHANNELS`.
    """
    image = np.asarray(image)
    check_image_dtype(image.dtype)
    lo_pct, hi_pct = check_percentiles(percentiles)
    hwc = _to_hwc(image, channel_axis)  # (H, W, C), a view when possible
    height, width, n_channels = hwc.shape
    if height < 2 or width < 2:
        raise ImageError(f"the image is {height} x {width} pixels; expected at least 2 x 2.")

    if n_channels == 4:
        logger.debug("4-channel image: treating it as RGBA and dropping the alpha channel")
    elif n_channels > 4:
        logger.warning(
            "image has %d channels: only the first three are used as red, green and blue",
            n_channels,
        )
    channels = [hwc[..., i] for i in range(min(n_channels, 3))]

    if image.dtype == np.uint8:
        if n_channels >= 3:
            return np.ascontiguousarray(hwc[..., :3])
        planes = channels
    elif image.dtype == np.bool_:
        planes = [np.where(c, np.uint8(255), np.uint8(0)) for c in channels]
    else:
        planes = [_stretch_to_uint8(c, lo_pct, hi_pct) for c in channels]

    if len(planes) == 1:
        planes = planes * 3
    elif len(planes) == 2:
        planes = [planes[0], planes[1], np.zeros((height, width), dtype=np.uint8)]
    return np.stack(planes, axis=-1)


def check_image_dtype(dtype: np.dtype) -> None:
    """Raise `ImageError` unless `dtype` holds pixels (bool, integer or real float)."""
    if dtype.kind not in _ACCEPTED_KINDS:
        raise ImageError(
            f"cannot segment an image of dtype {dtype}; expected bool, integer or real float "
            "pixels (complex, object and string arrays are not images)."
        )


def check_percentiles(percentiles: tuple[float, float]) -> tuple[float, float]:
    """``(low, high)`` as floats with ``0 <= low < high <= 100``, else `ImageError`."""
    try:
        lo, hi = (float(p) for p in percentiles)
    except (TypeError, ValueError) as err:
        raise ImageError(
            f"percentiles must be two numbers (low, high), got {percentiles!r}."
        ) from err
    if not (0.0 <= lo < hi <= 100.0):
        raise ImageError(f"percentiles must satisfy 0 <= low < high <= 100, got ({lo}, {hi}).")
    return lo, hi


def _to_hwc(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """Return `image` as ``(H, W, C)`` (a view when possible)."""
    if image.ndim not in (2, 3):
        raise ImageError(
            f"expected one 2D image, (H, W) or (H, W, C), but got {image.ndim} dimensions "
            f"{image.shape}; z-stacks and time-lapses go through the stack API, one 2D slice "
            "at a time."
        )
    if 0 in image.shape:
        raise ImageError(f"the image is empty: shape {image.shape} has a zero-length axis.")
    if image.ndim == 2:
        if channel_axis is not None:
            raise ImageError(
                f"channel_axis={channel_axis} was given but the image is 2D {image.shape}; "
                "use channel_axis=None for grayscale images."
            )
        return image[..., None]
    axis = -1 if channel_axis is None else channel_axis
    if not -3 <= axis <= 2:
        raise ImageError(
            f"channel_axis={channel_axis} is out of range for a 3D image of shape {image.shape}."
        )
    hwc = np.moveaxis(image, axis, -1)
    if hwc.shape[-1] > MAX_CHANNELS:
        raise ImageError(
            f"the channel axis ({axis}) of the image {image.shape} has {hwc.shape[-1]} entries; "
            f"at most {MAX_CHANNELS} channels are supported. This is probably a z / time / "
            "stack axis: pass the right channel_axis, or segment one 2D slice at a time."
        )
    return hwc


def contrast_work_dtype(dtype: np.dtype) -> type:
    """Float type of the contrast arithmetic for pixels of `dtype`."""
    return np.float64 if dtype in (np.float64, np.int64, np.uint64) else np.float32


def scale_to_uint8(channel: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map one channel linearly to uint8: `lo` to 0 and `hi` to 255 (``hi > lo``).

    Parameters
    ----------
    channel : np.ndarray
        ``(H, W)`` integer or float values.
    lo, hi : float
        The limits.

    Returns
    -------
    np.ndarray
        ``(H, W)`` uint8, clipped and rounded; NaN / inf pixels become 0.
    """
    work_dtype = contrast_work_dtype(channel.dtype)
    values = channel.astype(work_dtype, copy=False)
    finite = np.isfinite(values)
    out = np.zeros(channel.shape, dtype=np.uint8)
    if not finite.any():
        return out
    with np.errstate(over="ignore", invalid="ignore"):
        scale = 255.0 / (hi - lo)
        scaled = (np.where(finite, values, work_dtype(lo)) - work_dtype(lo)) * scale
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled[~np.isfinite(scaled)] = 0.0
    np.rint(scaled, out=scaled)
    out[...] = scaled
    return out


def _stretch_to_uint8(channel: np.ndarray, lo_pct: float, hi_pct: float) -> np.ndarray:
    """Contrast-stretch one ``(H, W)`` channel to uint8 between robust percentiles."""
    values = channel.astype(contrast_work_dtype(channel.dtype), copy=False)
    finite_values = values[np.isfinite(values)]
    if finite_values.size == 0:
        return np.zeros(channel.shape, dtype=np.uint8)
    lo, hi = (float(v) for v in np.percentile(finite_values, [lo_pct, hi_pct]))
    if not hi > lo:  # sparse channel: fall back to the full range
        lo, hi = float(finite_values.min()), float(finite_values.max())
    if not hi > lo:  # constant channel
        return np.zeros(channel.shape, dtype=np.uint8)
    return scale_to_uint8(channel, lo, hi)
