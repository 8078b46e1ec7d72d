"""Resize to the encoder's longest side and map napari (row, col) prompts into that frame.

The model frame is the image resized so that its longest side is ``target`` (1024 for SAM),
before padding. Model coordinates are ``(x, y)`` = (column, row) in that frame; napari
coordinates are ``(row, col)`` in original pixels. The rounding of the resized shape and the
per-axis scaling follow the official segment-anything ``ResizeLongestSide``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = [
    "box_rc_to_model_xyxy",
    "longest_side_shape",
    "model_xy_to_rc",
    "rc_to_model_xy",
    "resize_longest_side",
]


def longest_side_shape(h: int, w: int, target: int) -> tuple[int, int]:
    """Shape of an ``h x w`` image resized so that its longest side is `target`.

    Parameters
    ----------
    h, w : int
        Original height and width, positive.
    target : int
        Length of the longest side after resizing, positive.

    Returns
    -------
    tuple of int
        ``(new_h, new_w)``, each rounded half up (``int(x * scale + 0.5)``).
    """
    if min(h, w, target) <= 0:
        raise ValueError(f"sizes must be positive, got h={h}, w={w}, target={target}.")
    scale = target * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_longest_side(rgb: np.ndarray, target: int) -> np.ndarray:
    """Bilinearly resize an RGB image so that its longest side is `target`.

    Uses PIL's bilinear filter (with its antialiasing when shrinking), which is what the
    official predictor does through torchvision on a PIL image, so the result is identical.

    Parameters
    ----------
    rgb : np.ndarray
        ``(H, W, 3)`` uint8.
    target : int
        Longest side of the result.

    Returns
    -------
    np.ndarray
        ``(new_h, new_w, 3)`` uint8 with ``(new_h, new_w) = longest_side_shape(H, W, target)``.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 image, got shape {rgb.shape} and dtype {rgb.dtype}; "
            "convert it with napari_focsam.engine.image.to_rgb_uint8 first."
        )
    new_h, new_w = longest_side_shape(rgb.shape[0], rgb.shape[1], target)
    pil = Image.fromarray(np.ascontiguousarray(rgb))  # mode "RGB"
    return np.array(pil.resize((new_w, new_h), Image.Resampling.BILINEAR))


def _scales(original_hw: tuple[int, int], target: int) -> tuple[float, float]:
    """``(sy, sx)``: model-frame pixels per original pixel along rows and columns."""
    old_h, old_w = int(original_hw[0]), int(original_hw[1])
    new_h, new_w = longest_side_shape(old_h, old_w, target)
    return new_h / old_h, new_w / old_w


def _as_points(points: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {arr.shape}.")
    return arr


def rc_to_model_xy(
    points_rc: np.ndarray, original_hw: tuple[int, int], target: int
) -> np.ndarray:
    """Map ``(row, col)`` points in original pixels to ``(x, y)`` in the resized frame.

    Parameters
    ----------
    points_rc : np.ndarray
        ``(N, 2)`` points as (row, col) in original pixels.
    original_hw : tuple of int
        ``(H, W)`` of the original image.
    target : int
        Longest side of the model frame (``model.config.image_size``).

    Returns
    -------
    np.ndarray
        ``(N, 2)`` float32 points as (x, y) with ``x = col * new_w / W`` and
        ``y = row * new_h / H``.
    """
    rc = _as_points(points_rc, "points_rc")
    sy, sx = _scales(original_hw, target)
    return np.stack([rc[:, 1] * sx, rc[:, 0] * sy], axis=-1).astype(np.float32)


def model_xy_to_rc(
    points_xy: np.ndarray, original_hw: tuple[int, int], target: int
) -> np.ndarray:
    """Inverse of `rc_to_model_xy`: ``(x, y)`` in the resized frame to original (row, col).

    Parameters
    ----------
    points_xy : np.ndarray
        ``(N, 2)`` points as (x, y) in the resized frame.
    original_hw : tuple of int
        ``(H, W)`` of the original image.
    target : int
        Longest side of the model frame.

    Returns
    -------
    np.ndarray
        ``(N, 2)`` float64 points as (row, col) in original pixels.
    """
    xy = _as_points(points_xy, "points_xy")
    sy, sx = _scales(original_hw, target)
    return np.stack([xy[:, 1] / sy, xy[:, 0] / sx], axis=-1)


def box_rc_to_model_xyxy(
    box_rc: np.ndarray, original_hw: tuple[int, int], target: int
) -> np.ndarray:
    """Map a ``(row0, col0, row1, col1)`` box in original pixels to the resized frame.

    Parameters
    ----------
    box_rc : np.ndarray
        ``(4,)`` box corners as (row0, col0, row1, col1) in original pixels.
    original_hw : tuple of int
        ``(H, W)`` of the original image.
    target : int
        Longest side of the model frame.

    Returns
    -------
    np.ndarray
        ``(4,)`` float32 box as (x0, y0, x1, y1) in the resized frame.
    """
    box = np.asarray(box_rc, dtype=np.float64)
    if box.shape != (4,):
        raise ValueError(f"box_rc must have shape (4,) (row0, col0, row1, col1), got {box.shape}.")
    return rc_to_model_xy(box.reshape(2, 2), original_hw, target).reshape(4)
