"""The simulated user of the NoC protocol: where the next click goes.

The protocol of the official FocSAM evaluation (and of RITM, SimpleClick...): after every
prediction the two error regions are compared,

- false negatives ``gt & ~pred`` (object pixels the mask misses) and
- false positives ``~gt & pred`` (background pixels the mask covers),

each with the pixels already clicked (and any ignore region) removed. Each region gets its
exact Euclidean distance transform, computed on the region padded by one background pixel so
that the image border counts as background. The region whose largest distance is larger wins
(ties go to the false positives): the click goes to a pixel of maximal distance, the point of
that region farthest from its boundary, positive on a false negative, negative on a false
positive. Equal-distance maxima are broken by a seeded `numpy.random.Generator`, so a run is
reproducible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt

__all__ = ["Click", "error_distance", "next_click"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Click:
    """One simulated click on a pixel.

    Attributes
    ----------
    row, col : int
        Pixel indices in the image.
    positive : bool
        True on the object (a missed object pixel), False on the background (a pixel the
        mask wrongly covers).
    """

    row: int
    col: int
    positive: bool


def error_distance(region: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of every pixel of `region` to its nearest non-region pixel.

    The region is padded by one background pixel on every side first, so a pixel on the image
    border is at distance 1 (the border counts as background).

    Parameters
    ----------
    region : np.ndarray
        ``(H, W)`` bool.

    Returns
    -------
    np.ndarray
        ``(H, W)`` float64, 0 outside `region`, >= 1 inside.
    """
    region = np.asarray(region, dtype=bool)
    out = np.zeros(region.shape, dtype=np.float64)
    rows, cols = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    if rows.size == 0:
        return out
    # Exact on the bounding box padded by one background pixel: for a pixel inside the box,
    # any background pixel outside the padded box is farther than its projection on the pad.
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    padded = np.pad(region[r0:r1, c0:c1], 1, mode="constant", constant_values=False)
    out[r0:r1, c0:c1] = distance_transform_edt(padded)[1:-1, 1:-1]
    return out


def _check_masks(gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray,
                 ignore: np.ndarray | None) -> tuple[np.ndarray, ...]:
    arrays = [np.asarray(gt), np.asarray(pred), np.asarray(clicked)]
    if ignore is not None:
        arrays.append(np.asarray(ignore))
    names = ("gt", "pred", "clicked", "ignore")
    for name, a in zip(names, arrays, strict=False):
        if a.ndim != 2:
            raise ValueError(f"{name} must be a 2D (H, W) mask, got shape {a.shape}")
        if a.shape != arrays[0].shape:
            raise ValueError(f"{name} has shape {a.shape}, gt has {arrays[0].shape}")
    return tuple(a.astype(bool, copy=False) for a in arrays)


def next_click(gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray,
               rng: np.random.Generator, ignore: np.ndarray | None = None) -> Click | None:
    """The protocol's next click for the prediction `pred` of the object `gt`.

    Parameters
    ----------
    gt : np.ndarray
        ``(H, W)`` bool ground-truth object.
    pred : np.ndarray
        ``(H, W)`` bool current prediction (all False before the first click).
    clicked : np.ndarray
        ``(H, W)`` bool, True on the pixels clicked so far; they are never clicked again.
    rng : numpy.random.Generator
        Breaks ties between pixels of equal (maximal) distance.
    ignore : np.ndarray or None
        ``(H, W)`` bool pixels that are neither object nor background (e.g. GrabCut's
        unknown band): never errors, never clicked.

    Returns
    -------
    Click or None
        None when no error pixel is left to click (``pred == gt`` outside `ignore`).

    Raises
    ------
    ValueError
        The masks are not 2D or their shapes differ.
    """
    masks = _check_masks(gt, pred, clicked, ignore)
    gt_b, pred_b, clicked_b = masks[:3]
    candidates = ~clicked_b if ignore is None else ~(clicked_b | masks[3])
    fn_dist = error_distance(gt_b & ~pred_b & candidates)
    fp_dist = error_distance(~gt_b & pred_b & candidates)
    fn_max, fp_max = float(fn_dist.max()), float(fp_dist.max())
    if fn_max == 0.0 and fp_max == 0.0:
        return None
    positive = fn_max > fp_max  # ties: negative
    dist, best = (fn_dist, fn_max) if positive else (fp_dist, fp_max)
    # distances are square roots of integers: equal distances are bit-identical floats
    rows, cols = np.nonzero(dist == best)  # row-major order, so the draw is reproducible
    pick = int(rng.integers(rows.size))  # one draw per click, tie or not
    click = Click(int(rows[pick]), int(cols[pick]), positive)
    logger.debug("next click %s (distance %.2f, %d tied maxima)", click, best, rows.size)
    return click
