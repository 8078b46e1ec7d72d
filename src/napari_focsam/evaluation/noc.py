"""Number of clicks (NoC) of one interactive model on one object, and their summary.

Protocol (official FocSAM evaluation): the simulated user of :mod:`.clicker` clicks, the model
predicts from all clicks so far, and the IoU of the prediction with the ground truth is taken
*after* each click, for `max_clicks` clicks (20). NoC@t is the first click whose IoU is >= t, or
`max_clicks` when none is; a sample "fails" at t when no click reaches t. The summary gives the
mean NoC@85/90/95, the mean IoU after k clicks (mIoU@k) and the failure counts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .clicker import Click, next_click
from .dataset_files import DatasetError

if TYPE_CHECKING:
    from ..engine.interactive import InteractivePredictor

__all__ = [
    "DEFAULT_THRESHOLDS",
    "SampleResult",
    "evaluate_sample",
    "mask_iou",
    "noc_label",
    "number_of_clicks",
    "summarize",
]

logger = logging.getLogger(__name__)

#: IoU thresholds of the reported NoC figures.
DEFAULT_THRESHOLDS = (0.85, 0.90, 0.95)


@dataclass(frozen=True)
class SampleResult:
    """The clicks and IoUs of one object.

    Attributes
    ----------
    name : str
        Sample name.
    ious : tuple of float
        IoU after click 1, 2, ..., `max_clicks`. When the simulated user has nothing left to
        click (the mask is exact), the last IoU is repeated.
    clicks : tuple of Click
        The clicks actually made (at most `max_clicks`).
    thresholds : tuple of float
        The IoU thresholds of `noc`.
    noc : tuple of int
        NoC at each threshold.
    """

    name: str
    ious: tuple[float, ...]
    clicks: tuple[Click, ...]
    thresholds: tuple[float, ...]
    noc: tuple[int, ...]

    @property
    def max_clicks(self) -> int:
        """Clicks of the protocol (length of `ious`)."""
        return len(self.ious)

    def failed(self, threshold: float) -> bool:
        """Whether no click reached `threshold`."""
        return not any(iou >= threshold for iou in self.ious)


def noc_label(threshold: float) -> str:
    """``"NoC@90"`` for 0.9 (one decimal kept when needed: ``"NoC@92.5"``)."""
    pct = round(float(threshold) * 100.0, 6)
    text = f"{pct:.0f}" if float(pct).is_integer() else f"{pct:g}"
    return f"NoC@{text}"


def mask_iou(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two ``(H, W)`` bool masks, outside `ignore`.

    Returns 1.0 when both masks are empty (outside `ignore`).
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        gt, pred = gt & keep, pred & keep
    union = int(np.count_nonzero(gt | pred))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(gt & pred)) / union


def number_of_clicks(ious: Sequence[float], threshold: float) -> int:
    """First click (1-based) whose IoU is >= `threshold`; ``len(ious)`` when none is."""
    for k, iou in enumerate(ious, start=1):
        if iou >= threshold:
            return k
    return len(ious)


def _as_mask(prediction, shape: tuple[int, int]) -> np.ndarray:
    """A session's prediction (its ``masks[0]``) as an ``(H, W)`` bool mask."""
    mask = np.asarray(prediction.masks[0])
    if mask.shape != shape:
        raise ValueError(f"the predictor returned a mask of shape {mask.shape}, expected {shape}")
    return mask.astype(bool, copy=False)


def evaluate_sample(
    predictor: InteractivePredictor,
    image: np.ndarray,
    gt: np.ndarray,
    max_clicks: int = 20,
    iou_thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    rng: np.random.Generator | int | None = None,
    *,
    ignore: np.ndarray | None = None,
    name: str = "",
) -> SampleResult:
    """Run the click protocol on one object.

    Parameters
    ----------
    predictor : InteractivePredictor
        Its ``set_image`` and ``start_session`` are used: each click of the session returns
        a prediction whose ``masks[0]`` is the ``(H, W)`` bool mask after that click.
    image : np.ndarray
        ``(H, W, 3)`` uint8.
    gt : np.ndarray
        ``(H, W)`` bool object.
    max_clicks : int
        Clicks per object (20 in the protocol).
    iou_thresholds : sequence of float
        Thresholds of the returned NoC figures.
    rng : numpy.random.Generator, int or None
        Tie-breaking of the clicker; an int seeds a new generator; None means seed 0.
    ignore : np.ndarray or None
        ``(H, W)`` bool pixels left out of the IoU and never clicked.
    name : str
        Sample name, kept in the result.

    Returns
    -------
    SampleResult

    Raises
    ------
    ValueError
        `max_clicks` < 1, empty object, mismatched shapes, or a mask of the wrong shape from
        the predictor.
    """
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    gt = np.asarray(gt, dtype=bool)
    image = np.asarray(image)
    if gt.ndim != 2 or image.shape[:2] != gt.shape:
        raise DatasetError(f"sample {name!r}: image {image.shape} and mask {gt.shape} do not match")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != gt.shape:
            raise DatasetError(f"sample {name!r}: ignore mask {ignore.shape} does not match the "
                               f"mask {gt.shape}")
    if not np.any(gt if ignore is None else gt & ~ignore):
        raise DatasetError(f"sample {name!r}: the object mask is empty")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(0 if rng is None else rng)
    thresholds = tuple(float(t) for t in iou_thresholds)

    predictor.set_image(image)
    session = predictor.start_session()
    pred = np.zeros(gt.shape, dtype=bool)
    clicked = np.zeros(gt.shape, dtype=bool)
    clicks: list[Click] = []
    ious: list[float] = []
    for _ in range(max_clicks):
        click = next_click(gt, pred, clicked, rng, ignore)
        if click is None:  # nothing left to correct: the mask stays as it is
            break
        clicked[click.row, click.col] = True
        clicks.append(click)
        pred = _as_mask(session.add_click(click.row, click.col, click.positive), gt.shape)
        ious.append(mask_iou(gt, pred, ignore))
    ious += [ious[-1]] * (max_clicks - len(ious))
    noc = tuple(number_of_clicks(ious, t) for t in thresholds)
    logger.debug("%s: IoU %s, NoC %s", name, [round(i, 3) for i in ious], noc)
    return SampleResult(name, tuple(ious), tuple(clicks), thresholds, noc)


def summarize(results: Sequence[SampleResult]) -> dict:
    """Mean NoC, mIoU@k and failure counts over samples.

    Parameters
    ----------
    results : sequence of SampleResult
        Samples evaluated with the same `max_clicks` and thresholds.

    Returns
    -------
    dict
        ``n``; ``"NoC@85"``, ``"NoC@90"``... (mean NoC per threshold); ``"mIoU@k"``: ``{"1":
        mean IoU after 1 click, ..., str(max_clicks): ...}``; ``"failures"``: ``{"NoC@85":
        samples never reaching 0.85, ...}``; ``"NoC@90 failures"`` (when 0.9 is a threshold).

    Raises
    ------
    ValueError
        No results, or results of different protocols.
    """
    if not results:
        raise ValueError("no samples to summarize")
    first = results[0]
    for r in results:
        if r.max_clicks != first.max_clicks or r.thresholds != first.thresholds:
            raise ValueError("the samples were evaluated with different protocols")
    ious = np.array([r.ious for r in results], dtype=np.float64)  # (N, max_clicks)
    summary: dict = {"n": len(results)}
    for i, t in enumerate(first.thresholds):
        summary[noc_label(t)] = float(np.mean([r.noc[i] for r in results]))
    summary["mIoU@k"] = {str(k + 1): float(v) for k, v in enumerate(ious.mean(axis=0))}
    summary["failures"] = {noc_label(t): int(sum(r.failed(t) for r in results))
                           for t in first.thresholds}
    if any(np.isclose(t, 0.9) for t in first.thresholds):
        summary["NoC@90 failures"] = int(sum(r.failed(0.9) for r in results))
    return summary
