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
predictions are listed as false positives. A ground truth without objects is an error (there
is nothing to score). The cost is linear in the voxels and in the objects (per-frame counts
by object index, not one pass over the stack per object).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..api.io import OutputError, write_problem
from .dataset_files import DatasetError

if TYPE_CHECKING:
    from .ctc_scores import CtcScores

__all__ = ["ObjectScore", "StackScore", "check_ground_truth", "evaluate_stack", "object_ranks",
           "write_stack_report"]

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


def check_ground_truth(gt: np.ndarray, name: str = "the ground truth") -> None:
    """Raise `DatasetError` unless `gt` holds at least one object (a label > 0)."""
    gt = np.asarray(gt)
    if gt.size == 0 or not gt.any():
        raise DatasetError(f"{name} has no objects (every label is 0): there is nothing to score")


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
    check_ground_truth(gt)
    return pred, gt


def object_ranks(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positive ids of `labels`, sorted, and each voxel's 1-based rank among them (0 for
    the background): ids of any size index arrays of the object count, not of the largest id."""
    ids = np.unique(labels[labels > 0])
    rank = np.searchsorted(ids, labels).astype(np.intp) + 1
    rank[labels <= 0] = 0
    return ids, rank


def _per_frame(frames: np.ndarray, rank: np.ndarray, n: int,
               weights: np.ndarray | None = None) -> np.ndarray:
    """``(T, n + 1)`` sums (counts without `weights`) of each rank on each frame."""
    t = len(frames)
    return np.bincount((frames * (n + 1) + rank).ravel(),
                       weights=None if weights is None else weights.ravel(),
                       minlength=t * (n + 1)).reshape(t, n + 1)


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

    Raises
    ------
    DatasetError
        Shapes differ, not integer labels, negative labels, or no ground-truth object.
    """
    from scipy.optimize import linear_sum_assignment

    pred, gt = _check(pred, gt)
    p_ids, p_rank = object_ranks(pred)
    g_ids, g_rank = object_ranks(gt)
    n_p, n_g = len(p_ids), len(g_ids)
    # overlaps of every (pred, gt) pair over the stack, from the pairs' ranks
    both = (p_rank > 0) & (g_rank > 0)
    inter = np.bincount((p_rank[both] - 1) * n_g + (g_rank[both] - 1),
                        minlength=n_p * n_g).reshape(n_p, n_g).astype(float)
    p_size = np.bincount(p_rank.ravel(), minlength=n_p + 1)[1:].astype(float)
    g_size = np.bincount(g_rank.ravel(), minlength=n_g + 1)[1:].astype(float)
    union = p_size[:, None] + g_size[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    rows, cols = linear_sum_assignment(-iou) if iou.size else (np.zeros(0, int), np.zeros(0, int))
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] > 0]
    match = {int(g_ids[c]): int(p_ids[r]) for r, c in pairs}

    # per-frame counts by ground-truth rank: its voxels, its matched prediction's voxels, their
    # intersection, and the coordinate sums of both (centroids)
    frames = np.broadcast_to(np.arange(len(gt)).reshape(-1, *([1] * (gt.ndim - 1))), gt.shape)
    matched_to = np.zeros(n_p + 1, dtype=np.intp)  # pred rank -> matched gt rank (0: none)
    for r, c in pairs:
        matched_to[r + 1] = c + 1
    m_rank = matched_to[p_rank]
    g_count = _per_frame(frames, g_rank, n_g)
    p_count = _per_frame(frames, m_rank, n_g)
    i_count = _per_frame(frames, np.where(m_rank == g_rank, g_rank, 0), n_g)
    coords = np.indices(gt.shape[1:], sparse=True)
    g_sums = [_per_frame(frames, g_rank, n_g, np.broadcast_to(c, gt.shape)) for c in coords]
    p_sums = [_per_frame(frames, m_rank, n_g, np.broadcast_to(c, gt.shape)) for c in coords]

    prompt_frames = dict(prompt_frames or {})
    objects = []
    for k, g in enumerate(int(i) for i in g_ids):
        col = k + 1
        g_frames = np.flatnonzero(g_count[:, col])
        t0 = prompt_frames.get(g, int(g_frames[0]))
        p = match.get(g, 0)
        score = ObjectScore(g, p, t0)
        if p:
            union_t = g_count[:, col] + p_count[:, col] - i_count[:, col]
            present = np.flatnonzero(union_t)
            score.frames = [int(t) for t in present]
            score.iou = [float(i_count[t, col] / union_t[t]) for t in present]
            both_t = [t for t in present if g_count[t, col] and p_count[t, col]]
            centroid_err = [
                float(np.linalg.norm([ps[t, col] / p_count[t, col] - gs[t, col] / g_count[t, col]
                                      for ps, gs in zip(p_sums, g_sums, strict=True)]))
                for t in both_t]
            score.mean_j = float(np.mean(score.iou))
            dist = np.abs(np.asarray(score.frames) - t0)
            if len(np.unique(dist)) > 1:
                score.drift_per_frame = float(np.polyfit(dist, score.iou, 1)[0])
            score.centroid_error_px = float(np.mean(centroid_err)) if centroid_err else None
        else:
            score.frames = [int(t) for t in g_frames]
            score.iou = [0.0] * len(g_frames)
        objects.append(score)
    mean_j = float(np.mean([o.mean_j for o in objects]))
    fps = sorted(int(i) for i in set(map(int, p_ids)) - set(match.values()))
    return StackScore(objects, mean_j, fps)


def write_stack_report(score: StackScore, out_dir: str | Path, settings: dict | None = None,
                       ctc: CtcScores | None = None) -> Path:
    """Write ``per_frame.csv`` (gt_id, pred_id, frame, iou) and ``summary.json`` (with the
    Cell Tracking Challenge measures under ``"ctc"`` when `ctc` is given), atomically.

    Returns
    -------
    Path
        `out_dir`.

    Raises
    ------
    OutputError
        The folder or a file cannot be written (a file in the way, no permission, disk full).
    """
    out = Path(out_dir)
    try:
        _write_report(score, out, settings, ctc)
    except OSError as exc:
        raise OutputError(f"cannot write the report in {out}: {write_problem(exc, out)} "
                          f"({exc})") from exc
    logger.info("stack evaluation: mean J %.4f over %d objects -> %s", score.mean_j,
                len(score.objects), out)
    return out


def _write_report(score: StackScore, out: Path, settings: dict | None, ctc: CtcScores | None) -> None:
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
    if ctc is not None:
        summary["ctc"] = ctc.to_dict()
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


def _write_csv(fh, rows) -> None:
    w = csv.writer(fh)
    w.writerow(["gt_id", "pred_id", "frame", "iou"])
    w.writerows(rows)
