"""Click sessions: the interactive protocol of one object on one image.

Every click sends *all* clicks of the object so far plus the previous step's raw
low-resolution logits (single-mask mode), as in the official FocSAM / SAM click evaluation and
SAM 2's interactive protocol. Any `InteractivePredictor` drives the steps; a step may carry
predictor-specific state to the object's next clicks (FocSAM refines the image embeddings
once, at its ``refine_start_step``, and the object's later clicks use the refined embeddings;
a new session starts from the image's embeddings again). Every step is kept, so undoing a
click, or replacing the clicks by an edited list, restores the exact earlier state and only
recomputes what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FocSamError
from .prompts import PromptError, Prompts

if TYPE_CHECKING:
    from .interactive import InteractivePredictor, MaskPrediction

__all__ = ["Click", "ClickSession", "SessionStep", "StaleSessionError"]

logger = logging.getLogger(__name__)


class StaleSessionError(FocSamError, RuntimeError):
    """The predictor's image changed after the session started."""


@dataclass(frozen=True)
class Click:
    """One click in napari coordinates of the original 2D image.

    Attributes
    ----------
    row, col : float
        Position in pixels.
    positive : bool
        True on the object, False on the background.
    """

    row: float
    col: float
    positive: bool


@dataclass(frozen=True)
class SessionStep:
    """State after one click.

    Attributes
    ----------
    click : Click
        The click of this step.
    prediction : MaskPrediction
        Single-mask prediction of this step.
    state : object
        What the predictor carries to the object's next steps; None for nothing (FocSAM: the
        ``(1, C, E, E)`` refined embeddings from its refine step on).
    """

    click: Click
    prediction: MaskPrediction
    state: Any

    @property
    def refined(self) -> bool:
        """Whether the object's embeddings are refined after this step (FocSAM)."""
        return self.state is not None


class ClickSession:
    """Click history of one object on the predictor's current image.

    Parameters
    ----------
    predictor : InteractivePredictor
        A predictor with a frame set.
    box : array-like or None
        ``(4,)`` (row0, col0, row1, col1) sent with every click of the object.

    Raises
    ------
    PredictorStateError
        The predictor has no image.
    PromptError
        Invalid box.
    """

    def __init__(self, predictor: InteractivePredictor, box: np.ndarray | None = None) -> None:
        self.predictor = predictor
        self.box = None if box is None else predictor.validate(box=box).box
        self._generation = predictor.image_generation
        self._steps: list[SessionStep] = []

    # ------------------------------------------------------------------ state
    @property
    def steps(self) -> tuple[SessionStep, ...]:
        """Every step so far, oldest first."""
        return tuple(self._steps)

    @property
    def clicks(self) -> tuple[Click, ...]:
        """The object's clicks, oldest first."""
        return tuple(step.click for step in self._steps)

    @property
    def prediction(self) -> MaskPrediction | None:
        """The latest prediction, or None before the first click."""
        return self._steps[-1].prediction if self._steps else None

    @property
    def mask(self) -> np.ndarray | None:
        """``(H, W)`` bool mask of the latest prediction, or None before the first click."""
        pred = self.prediction
        return None if pred is None else pred.masks[0]

    @property
    def refined(self) -> bool:
        """Whether the object's embeddings are refined (FocSAM after its refine step)."""
        return bool(self._steps) and self._steps[-1].refined

    def __len__(self) -> int:
        return len(self._steps)

    # ------------------------------------------------------------------ editing
    def add_click(self, row: float, col: float, positive: bool = True) -> MaskPrediction:
        """Add a click and predict.

        Parameters
        ----------
        row, col : float
            Position in original pixels.
        positive : bool
            Object (True) or background (False).

        Returns
        -------
        MaskPrediction
            Single mask.

        Raises
        ------
        PromptError
            The click is outside the image or not finite (the session is unchanged).
        StaleSessionError
            The predictor's image changed since the session started.
        """
        self._check_fresh()
        click = Click(float(row), float(col), bool(positive))
        self._steps.append(self._compute(len(self._steps), click))
        return self._steps[-1].prediction

    def undo(self) -> MaskPrediction | None:
        """Remove the last click and return to the exact state before it.

        Undoing FocSAM's refining click also drops the refined embeddings.

        Returns
        -------
        MaskPrediction or None
            The prediction now current, None when no click is left.

        Raises
        ------
        IndexError
            No click to undo.
        """
        if not self._steps:
            raise IndexError("no click to undo")
        self._steps.pop()
        return self.prediction

    def set_clicks(self, points: np.ndarray | Sequence[Sequence[float]],
                   labels: np.ndarray | Sequence[int]) -> MaskPrediction | None:
        """Replace the clicks by an edited list, e.g. from a napari Points layer.

        Steps of the longest unchanged prefix are kept as they are; only the clicks after it
        are recomputed, in order. If any new click is invalid, nothing changes.

        Parameters
        ----------
        points : array-like
            ``(N, 2)`` (row, col) in original pixels, in click order; ``N`` may be 0.
        labels : array-like
            ``(N,)`` 1 positive / 0 negative.

        Returns
        -------
        MaskPrediction or None
            The latest prediction, None for an empty list.

        Raises
        ------
        PromptError
            Invalid points or labels (the session is unchanged).
        StaleSessionError
            The predictor's image changed since the session started.
        """
        self._check_fresh()
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) if len(points) else np.zeros((0, 2))
        lab = np.asarray(labels).reshape(-1)
        if pts.shape[0]:
            prompts = self.predictor.validate(pts, lab)  # whole list first: all or nothing
            assert prompts.points is not None and prompts.labels is not None
            pts, lab = prompts.points, prompts.labels
        elif lab.size:
            raise PromptError(f"{lab.size} labels given for 0 points")
        clicks = [Click(float(r), float(c), bool(v)) for (r, c), v in zip(pts, lab, strict=True)]
        keep = 0
        while keep < min(len(clicks), len(self._steps)) and self._steps[keep].click == clicks[keep]:
            keep += 1
        steps = self._steps[:keep]
        for k in range(keep, len(clicks)):
            steps.append(self._compute(k, clicks[k], steps))
        self._steps = steps
        return self.prediction

    # ------------------------------------------------------------------ internals
    def _check_fresh(self) -> None:
        if self.predictor.image_generation != self._generation:
            raise StaleSessionError(
                "the predictor's image changed after this session started; start a new session"
            )

    def _compute(self, index: int, click: Click,
                 steps: list[SessionStep] | None = None) -> SessionStep:
        """Run step `index` (= number of earlier steps) with `click` after `steps`."""
        steps = self._steps if steps is None else steps
        earlier = steps[:index]
        points = np.array([[s.click.row, s.click.col] for s in earlier] + [[click.row, click.col]])
        labels = np.array([int(s.click.positive) for s in earlier] + [int(click.positive)])
        previous = earlier[-1].prediction.low_res_logits if earlier else None  # (1, M, M)
        prompts: Prompts = self.predictor.validate(points, labels, self.box, previous)
        state = earlier[-1].state if earlier else None
        prediction, state = self.predictor.session_step(prompts, index, state)
        logger.debug("click %d at (%.1f, %.1f) %s, state=%s", index, click.row, click.col,
                     "+" if click.positive else "-", state is not None)
        return SessionStep(click=click, prediction=prediction, state=state)
