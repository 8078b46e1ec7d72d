"""Prompts for a stack evaluation, simulated from its ground truth: one positive click per
object, at the interior point farthest from the object's boundary, on the frame where the
object is largest (or on its first frame)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt

from ..api.prompts_file import ObjectPrompt
from .dataset_files import DatasetError

__all__ = ["prompts_from_ground_truth"]


def prompts_from_ground_truth(gt: np.ndarray, where: str = "largest") -> list[ObjectPrompt]:
    """One click per ground-truth object.

    Parameters
    ----------
    gt : np.ndarray
        ``(T, H, W)`` integer labels, frames along axis 0.
    where : {"largest", "first"}
        Frame of the click: where the object has most pixels, or its first frame.

    Returns
    -------
    list of ObjectPrompt
        Object ids equal the ground-truth ids; points in (row, col).
    """
    gt = np.asarray(gt)
    if gt.ndim != 3:
        raise DatasetError(f"ground truth must be (T, H, W), got shape {gt.shape}")
    if where not in ("largest", "first"):
        raise ValueError(f"where must be 'largest' or 'first', got {where!r}")
    prompts = []
    for obj in (int(i) for i in np.unique(gt[gt > 0])):
        sizes = (gt == obj).reshape(len(gt), -1).sum(axis=1)
        frame = int(np.argmax(sizes)) if where == "largest" else int(np.flatnonzero(sizes)[0])
        # pad so the image border counts as background
        dist = distance_transform_edt(np.pad(gt[frame] == obj, 1))[1:-1, 1:-1]
        r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
        prompts.append(ObjectPrompt(obj, frame, np.array([[float(r), float(c)]]), np.array([1])))
    return prompts
