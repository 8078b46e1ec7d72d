"""Check and normalise the prompts of one interactive prediction.

All coordinates are napari's: ``(row, col)`` in pixels of the original 2D image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError

__all__ = ["PromptError", "Prompts", "validate_prompts"]


class PromptError(UserError, ValueError):
    """A prompt (points, labels, box or mask input) is missing, malformed or out of bounds."""


@dataclass(frozen=True)
class Prompts:
    """Validated prompts of one prediction.

    Attributes
    ----------
    points : np.ndarray or None
        ``(N, 2)`` float64 (row, col) in original pixels, ``N >= 1``; None when no points.
    labels : np.ndarray or None
        ``(N,)`` int32, 1 = positive (object), 0 = negative (background); None when no points.
    box : np.ndarray or None
        ``(4,)`` float64 ``(row0, col0, row1, col1)`` with ``row0 < row1`` and ``col0 < col1``.
    mask_input : np.ndarray or None
        ``(1, h, w)`` float32 logits (e.g. a previous prediction's low-resolution logits).
    """

    points: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None
    mask_input: np.ndarray | None


def validate_prompts(
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    mask_input: np.ndarray | None = None,
    *,
    image_hw: tuple[int, int],
    mask_input_hw: tuple[int, int],
) -> Prompts:
    """Validate the prompts of one prediction and return them in canonical form.

    Parameters
    ----------
    points : array-like or None
        ``(N, 2)`` (row, col) in original pixels, finite and inside ``[0, H) x [0, W)``.
        An empty array (``N == 0``) counts as no points.
    labels : array-like or None
        ``(N,)`` integers or booleans in {0, 1}: 1 positive, 0 negative. Required with points.
    box : array-like or None
        ``(4,)`` (or ``(1, 4)``) ``(row0, col0, row1, col1)`` in original pixels; corners may
        come in any order. It must lie inside ``[0, H] x [0, W]`` and have positive area.
    mask_input : array-like or None
        ``(h, w)`` or ``(1, h, w)`` finite float logits with ``(h, w) == mask_input_hw``.
    image_hw : tuple of int
        ``(H, W)`` of the original image.
    mask_input_hw : tuple of int
        Expected spatial size of `mask_input` (256 x 256 for SAM).

    Returns
    -------
    Prompts
        The normalised prompts.

    Raises
    ------
    PromptError
        No prompt at all, or any prompt malformed; the message names the offending value.
    """
    height, width = (int(v) for v in image_hw)
    pts, lbl = _validate_points(points, labels, height, width)
    bx = None if box is None else _validate_box(box, height, width)
    mask = None if mask_input is None else _validate_mask(mask_input, mask_input_hw)
    if pts is None and bx is None and mask is None:
        raise PromptError(
            "no prompt given: give at least one point, a box or a mask (points need labels)."
        )
    return Prompts(points=pts, labels=lbl, box=bx, mask_input=mask)


def _real_array(value: object, name: str, kinds: str = "iuf") -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in kinds:
        raise PromptError(f"{name} must be real numbers, got an array of dtype {arr.dtype}.")
    return arr


def _validate_points(
    points: object, labels: object, height: int, width: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    pts = None if points is None else _real_array(points, "points")
    lbl = None if labels is None else _real_array(labels, "labels", "biuf")
    has_points = pts is not None and pts.size > 0
    has_labels = lbl is not None and lbl.size > 0
    if not has_points and not has_labels:
        return None, None
    if not has_labels:
        raise PromptError(
            "points were given without labels; give one label per point (1 positive, "
            "0 negative)."
        )
    if not has_points:
        raise PromptError(f"{lbl.size} label(s) were given without points.")

    if pts.ndim != 2 or pts.shape[1] != 2:
        raise PromptError(
            f"points must have shape (N, 2) as (row, col) in the 2D image, got {pts.shape}; "
            "wrap a single point as [[row, col]] and slice stack coordinates first."
        )
    pts = pts.astype(np.float64)
    if lbl.ndim != 1 or lbl.shape[0] != pts.shape[0]:
        raise PromptError(
            f"labels must have shape (N,) = ({pts.shape[0]},), one per point, got {lbl.shape}."
        )
    if lbl.dtype.kind == "f":
        raise PromptError(
            f"labels must be integers or booleans (1 positive, 0 negative), got dtype "
            f"{lbl.dtype}."
        )
    lbl = lbl.astype(np.int32)
    bad = np.flatnonzero((lbl != 0) & (lbl != 1))
    if bad.size:
        i = int(bad[0])
        raise PromptError(
            f"label {i} is {int(lbl[i])}; labels must be 1 (positive) or 0 (negative)."
        )

    for i, (row, col) in enumerate(pts):
        if not (np.isfinite(row) and np.isfinite(col)):
            raise PromptError(f"point {i} (row, col) = ({row}, {col}) is not finite.")
        if not (0.0 <= row < height and 0.0 <= col < width):
            raise PromptError(
                f"point {i} (row, col) = ({row:g}, {col:g}) is outside the image of "
                f"{height} x {width} pixels; expected 0 <= row < {height} and "
                f"0 <= col < {width}."
            )
    return pts, lbl


def _validate_box(box: object, height: int, width: int) -> np.ndarray:
    arr = _real_array(box, "box")
    if arr.shape not in ((4,), (1, 4)):
        raise PromptError(
            f"box must have shape (4,) as (row0, col0, row1, col1), got {arr.shape}."
        )
    r0, c0, r1, c1 = (float(v) for v in arr.reshape(4))
    desc = f"box (row0, col0, row1, col1) = ({r0:g}, {c0:g}, {r1:g}, {c1:g})"
    if not np.all(np.isfinite([r0, c0, r1, c1])):
        raise PromptError(f"{desc} is not finite.")
    r0, r1 = min(r0, r1), max(r0, r1)
    c0, c1 = min(c0, c1), max(c0, c1)
    if r0 < 0 or c0 < 0 or r1 > height or c1 > width:
        raise PromptError(
            f"{desc} reaches outside the image of {height} x {width} pixels; expected rows in "
            f"[0, {height}] and columns in [0, {width}]."
        )
    if r1 == r0 or c1 == c0:
        raise PromptError(f"{desc} has zero area; draw a box with a height and a width.")
    return np.array([r0, c0, r1, c1], dtype=np.float64)


def _validate_mask(mask_input: object, mask_input_hw: tuple[int, int]) -> np.ndarray:
    arr = _real_array(mask_input, "mask_input", "biuf")
    expected = tuple(int(v) for v in mask_input_hw)
    if arr.dtype == np.bool_:
        raise PromptError(
            "mask_input must be float logits (e.g. a previous prediction's low_res_logits[k]), "
            "not a boolean mask."
        )
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != (1, *expected):
        raise PromptError(
            f"mask_input must have shape {expected} or (1, {expected[0]}, {expected[1]}), got "
            f"{np.shape(mask_input)}; pick one mask of a previous prediction, e.g. "
            "low_res_logits[k]."
        )
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise PromptError("mask_input contains NaN or infinite values; expected finite logits.")
    return arr
