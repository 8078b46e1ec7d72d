"""The interactive predictor protocol: one model drawing objects on one frame at a time.

`SamPredictor`, `FocSamPredictor` and `Sam2ImagePredictor` implement it (each family record
says which serves its models); the `Segmenter` (and through it the widgets) and the NoC
evaluation use only what is declared here. A frame comes either from an image
(`InteractivePredictor.set_image`) or from the embedding store (`set_frame`, with the features
the family's stack encoder gives); prompts are napari's (row, col) in pixels of that frame.
Objects are drawn by one-shot predictions (`predict`) or click sessions (`start_session`, see
:mod:`.session`), which keep every step so that undo and edited clicks recompute only what
changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from .prompts import Prompts
    from .session import ClickSession

__all__ = ["MASK_THRESHOLD", "InteractivePredictor", "MaskPrediction"]

#: Logits above this are inside the mask (the official ``Sam.mask_threshold``).
MASK_THRESHOLD = 0.0


@dataclass(frozen=True)
class MaskPrediction:
    """Masks predicted from one set of prompts; ``K`` is 3 in multimask mode, else 1.

    Attributes
    ----------
    masks : np.ndarray
        ``(K, H, W)`` bool at the frame's size.
    scores : np.ndarray
        ``(K,)`` float32 predicted IoU of each mask.
    low_res_logits : np.ndarray
        ``(K, M, M)`` float32 (256 x 256 at a 1024 input); ``low_res_logits[k]`` can be passed
        back as ``mask_input`` of the next prediction.
    logits : np.ndarray
        ``(K, H, W)`` float32 logits at the frame's size (``masks == logits > 0``).
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray
    logits: np.ndarray

    @property
    def best(self) -> int:
        """Index of the mask with the highest predicted IoU."""
        return int(np.argmax(self.scores))


@runtime_checkable
class InteractivePredictor(Protocol):
    """What the Segmenter and the evaluation need from an interactive model.

    Attributes
    ----------
    image_generation : int
        Bumped whenever the frame changes (click sessions of an older frame become stale).
    original_size : tuple of int or None
        ``(H, W)`` of the current frame.
    image_size : int
        Side of the model's square input (1024): larger frames are seen resized to it (or
        tiled, see :mod:`.tiling`).
    mask_input_size : int
        Side ``M`` of the low-resolution logits a `mask_input` must have.
    """

    image_generation: int

    @property
    def original_size(self) -> tuple[int, int] | None: ...

    @property
    def image_size(self) -> int: ...

    @property
    def mask_input_size(self) -> int: ...

    def set_image(self, image: np.ndarray, *, channel_axis: int | None = None) -> None:
        """Encode one 2D image (any dtype `engine.image.to_rgb_uint8` takes) as the frame."""

    def set_frame(self, features: Any, frame_shape: tuple[int, int]) -> None:
        """Use a frame's cached features, as the family's stack encoder's ``to_features``
        gives them, for a frame of `frame_shape` ``(H, W)``."""

    def predict(self, points: np.ndarray | None = None, labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_input: np.ndarray | None = None,
                multimask: bool = True) -> MaskPrediction:
        """One prediction from ``(N, 2)`` (row, col) points, ``(N,)`` 1 / 0 labels, a ``(4,)``
        (row0, col0, row1, col1) box and ``(M, M)`` logits."""

    def start_session(self, box: np.ndarray | None = None) -> ClickSession:
        """The click history of a new object on the current frame (its box sent every click)."""

    def validate(self, points: np.ndarray | None = None, labels: np.ndarray | None = None,
                 box: np.ndarray | None = None, mask_input: np.ndarray | None = None) -> Prompts:
        """Check prompts against the current frame (``PromptError`` when unusable)."""

    def session_step(self, prompts: Prompts, step: int,
                     state: Any) -> tuple[MaskPrediction, Any]:
        """Click `step` (0-based) of a session: all clicks so far, the box and the previous
        step's logits in `prompts`; `state` is what the previous step returned (None first;
        FocSAM: the object's refined embeddings). Returns the single-mask prediction and the
        state for the next step."""
