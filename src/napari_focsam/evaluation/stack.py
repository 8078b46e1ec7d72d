"""Quality of propagated objects against ground-truth label stacks (3D volumes, time-lapses).

Predicted objects are matched one-to-one to ground-truth objects by their IoU over the whole
stack (Hungarian assignment; pairs with no overlap stay unmatched). For each matched pair:

- per-frame IoU (the region similarity J of video segmentation) on every frame where either
  the prediction or the ground truth has the object (frames where both lack it are skipped),
- mean J over those frames,
- drift: the least-squares slope of J against the distance (in frames) from the object's
  prompted frame — how fast quality decays away from where the user clicked — and the mean
  centroid error in pixels on frames where both exist.

Unmatched ground-truth objects count as J = 0 in the overall mean (a missed object), unmatched
predictions are listed as false positives.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .dataset_files import DatasetError

__all__ = ["ObjectScore", "StackScore", "evaluate_stack", "write_stack_report"]

logger = logging.getLogger(__name__)


@dataclass
class ObjectScore:
    """Scores of one ground-truth object (and the prediction matched to it, if any).

    Attributes
    ----------
    gt_id, pred_id : int
        Ids in the two label stacks (``pred_id`` 0 when unmatched).
    prompt_frame : int or None
        Frame the object was prompted on (drift is measured from it).
    frames : list of int
        Frames scored.
    iou : list of float
        Per-frame IoU (J) on those frames.
    mean_j : float
        Mean of `iou` (0 when unmatched).
    drift_per_frame : float or None
        Slope of J against the distance from `prompt_frame` (negative: quality decays).
    centroid_error_px : float or None
        Mean centroid distance on frames where both masks exist.
    """

    gt_id: int
    pred_id: int
    prompt_frame: int | None
    frames: list[int] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    mean_j: float = 0.0
    drift_per_frame: float | None = None
    centroid_error_px: float | None = None


@dataclass
class StackScore:
    """Scores of a whole stack.

    Attributes
    ----------
    objects : list of ObjectScore
        One per ground-truth object.
    mean_j : float
        Mean of the objects' mean J (missed objects count 0).
    false_positive_ids : list of int
        Predicted ids matched to no ground-truth object.
    """

    objects: list[ObjectScore]
    mean_j: float
    false_positive_ids: list[int]


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise DatasetError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if pred.ndim < 3:
        raise DatasetError(f"label stacks are (T, H, W) or (T, Z, H, W), got shape {pred.shape}")
    for name, a in (("prediction", pred), ("ground truth", gt)):
        if a.dtype.kind not in "iu":
            raise DatasetError(f"{name} labels must be integers, got {a.dtype}")
        if a.size and a.min() < 0:
            raise DatasetError(f"{name} labels must be >= 0")
    return pred, gt


def _overlaps(pred: np.ndarray, gt: np.ndarray):
    """Intersection and sizes of every (pred id, gt id) pair over the stack."""
    p_ids = np.unique(pred[pred > 0])
    g_ids = np.unique(gt[gt > 0])
    both = (pred > 0) & (gt > 0)
    pairs, counts = np.unique(np.stack([pred[both], gt[both]]), axis=1, return_counts=True) \
        if both.any() else (np.zeros((2, 0), int), np.zeros(0, int))
    inter = np.zeros((len(p_ids), len(g_ids)))
    p_index = {int(i): k for k, i in enumerate(p_ids)}
    g_index = {int(i): k for k, i in enumerate(g_ids)}
    for (p, g), c in zip(pairs.T, counts, strict=True):
        inter[p_index[int(p)], g_index[int(g)]] = c
    p_size = np.bincount(pred.ravel())[p_ids].astype(float)  # one pass, not one per id
    g_size = np.bincount(gt.ravel())[g_ids].astype(float)
    return p_ids, g_ids, inter, p_size, g_size


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def evaluate_stack(pred: np.ndarray, gt: np.ndarray,
                   prompt_frames: dict[int, int] | None = None) -> StackScore:
    """Score predicted label stacks against the ground truth.

    Parameters
    ----------
    pred, gt : np.ndarray
        ``(T, H, W)`` (or ``(T, Z, H, W)``) integer labels, frames along axis 0.
    prompt_frames : dict, optional
        Ground-truth id -> frame it was prompted on; default: the first frame where the ground
        truth has it.

    Returns
    -------
    StackScore
    """
    from scipy.optimize import linear_sum_assignment

    pred, gt = _check(pred, gt)
    p_ids, g_ids, inter, p_size, g_size = _overlaps(pred, gt)
    union = p_size[:, None] + g_size[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    rows, cols = linear_sum_assignment(-iou) if iou.size else (np.zeros(0, int), np.zeros(0, int))
    match = {int(g_ids[c]): int(p_ids[r]) for r, c in zip(rows, cols, strict=True) if iou[r, c] > 0}
    prompt_frames = dict(prompt_frames or {})
    objects = []
    for g in (int(i) for i in g_ids):
        g_frames = np.flatnonzero((gt == g).reshape(len(gt), -1).any(axis=1))
        t0 = prompt_frames.get(g, int(g_frames[0]))
        p = match.get(g, 0)
        score = ObjectScore(g, p, t0)
        if p:
            g_mask = gt == g
            p_mask = pred == p
            present = (g_mask | p_mask).reshape(len(gt), -1).any(axis=1)
            centroid_err = []
            for t in np.flatnonzero(present):
                a, b = p_mask[t], g_mask[t]
                score.frames.append(int(t))
                score.iou.append(float((a & b).sum() / (a | b).sum()))
                if a.any() and b.any():
                    centroid_err.append(float(np.linalg.norm(_centroid(a) - _centroid(b))))
            score.mean_j = float(np.mean(score.iou))
            dist = np.abs(np.asarray(score.frames) - t0)
            if len(np.unique(dist)) > 1:
                score.drift_per_frame = float(np.polyfit(dist, score.iou, 1)[0])
            score.centroid_error_px = float(np.mean(centroid_err)) if centroid_err else None
        else:
            score.frames = [int(t) for t in g_frames]
            score.iou = [0.0] * len(g_frames)
        objects.append(score)
    mean_j = float(np.mean([o.mean_j for o in objects])) if objects else 0.0
    fps = sorted(int(i) for i in set(map(int, p_ids)) - set(match.values()))
    return StackScore(objects, mean_j, fps)


def write_stack_report(score: StackScore, out_dir: str | Path, settings: dict | None = None) -> Path:
    """Write ``per_frame.csv`` (gt_id, pred_id, frame, iou) and ``summary.json``, atomically.

    Returns
    -------
    Path
        `out_dir`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [(o.gt_id, o.pred_id, t, j) for o in score.objects for t, j in zip(o.frames, o.iou,
                                                                              strict=True)]
    summary = {
        "mean_j": score.mean_j,
        "objects": [{k: v for k, v in asdict(o).items() if k not in ("frames", "iou")}
                    for o in score.objects],
        "false_positive_ids": score.false_positive_ids,
        "settings": settings or {},
    }
    for name, writer in (("per_frame.csv", lambda fh: _write_csv(fh, rows)),
                         ("summary.json", lambda fh: json.dump(summary, fh, indent=2))):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
        try:
            with os.fdopen(fd, "w", newline="") as fh:
                writer(fh)
            os.replace(tmp, out / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    logger.info("stack evaluation: mean J %.4f over %d objects -> %s", score.mean_j,
                len(score.objects), out)
    return out


def _write_csv(fh, rows) -> None:
    w = csv.writer(fh)
    w.writerow(["gt_id", "pred_id", "frame", "iou"])
    w.writerows(rows)
