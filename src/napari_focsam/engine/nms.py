"""Greedy non-maximum suppression of axis-aligned boxes (numpy, no torchvision).

The rule is torchvision's ``nms``, which the official automatic mask generators use: boxes are
visited by decreasing score (ties in their given order), a box is kept unless an already kept
box overlaps it with an IoU above the threshold. Areas and IoUs are computed in float32 and the
IoU is compared with the threshold in float64, as torchvision's CPU kernel does, so the same
boxes are kept even for overlaps right at the threshold. A pair of degenerate boxes (area 0)
has an undefined IoU (0 / 0), which suppresses nothing.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_area", "box_iou", "nms"]


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` boxes ``(a0, b0, a1, b1)`` -> ``(N,)`` float32 ``(a1 - a0) * (b1 - b0)``."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with each of `boxes`.

    Parameters
    ----------
    box : np.ndarray
        ``(4,)`` ``(a0, b0, a1, b1)`` (any axis order, the same for both arguments).
    boxes : np.ndarray
        ``(N, 4)``.

    Returns
    -------
    np.ndarray
        ``(N,)`` float32; NaN where both areas are 0.
    """
    one = np.asarray(box, dtype=np.float32).reshape(4)
    many = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    lo = np.maximum(one[:2], many[:, :2])
    hi = np.minimum(one[2:], many[:, 2:])
    extent = np.maximum(np.float32(0), hi - lo)
    inter = extent[:, 0] * extent[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (box_area(one[None])[0] + box_area(many) - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression.

    Parameters
    ----------
    boxes : np.ndarray
        ``(N, 4)`` ``(a0, b0, a1, b1)`` with ``a1 >= a0``, ``b1 >= b0``.
    scores : np.ndarray
        ``(N,)``; higher is better.
    iou_threshold : float
        A box whose IoU with a kept, better box is above this is dropped.

    Returns
    -------
    np.ndarray
        ``(K,)`` int64 indices into `boxes`, by decreasing score (ties: lower index first).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    order = np.argsort(-scores.astype(np.float64), kind="stable")
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep: list[int] = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        with np.errstate(invalid="ignore"):
            suppressed |= box_iou(boxes[i], boxes).astype(np.float64) > float(iou_threshold)
    return np.asarray(keep, dtype=np.int64)
