"""Prompts for a stack evaluation, simulated from its ground truth: one positive click per
object, at the interior point farthest from the object's boundary, on the frame where the
object is largest (or on its first frame)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt, find_objects

from ..api.prompts_file import ObjectPrompt
from .dataset_files import DatasetError
from .stack import check_ground_truth, object_ranks

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

    Raises
    ------
    DatasetError
        Not ``(T, H, W)``, or no object at all.
    """
    gt = np.asarray(gt)
    if gt.ndim != 3:
        raise DatasetError(f"ground truth must be (T, H, W), got shape {gt.shape}")
    if where not in ("largest", "first"):
        raise ValueError(f"where must be 'largest' or 'first', got {where!r}")
    check_ground_truth(gt)
    ids, rank = object_ranks(gt)
    n = len(ids)
    # (T, n + 1) pixels of each object on each frame, in one pass
    sizes = np.bincount((np.arange(len(gt))[:, None, None] * (n + 1) + rank).ravel(),
                        minlength=len(gt) * (n + 1)).reshape(len(gt), n + 1)[:, 1:]
    frames = (np.argmax(sizes, axis=0) if where == "largest"
              else np.argmax(sizes > 0, axis=0))
    prompts = []
    boxes: dict[int, list] = {}
    for k, obj in enumerate(int(i) for i in ids):
        frame = int(frames[k])
        if frame not in boxes:
            boxes[frame] = find_objects(rank[frame], max_label=n)
        rows, cols = boxes[frame][k]
        # the object's bounding box, padded so the border (image or box) counts as background:
        # the nearest background pixel of any object pixel lies in it
        inside = np.pad(rank[frame, rows, cols] == k + 1, 1)
        dist = distance_transform_edt(inside)[1:-1, 1:-1]
        r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
        prompts.append(ObjectPrompt(obj, frame, np.array([[float(r + rows.start),
                                                           float(c + cols.start)]]),
                                    np.array([1])))
    return prompts
