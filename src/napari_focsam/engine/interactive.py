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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

    from .automatic import AutoMaskParams
    from .prompts import Prompts
    from .session import ClickSession

__all__ = ["MASK_THRESHOLD", "BatchPrediction", "BatchPredictor", "InteractivePredictor",
           "MaskPrediction", "check_batch_prompts"]

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


@dataclass(frozen=True)
class BatchPrediction:
    """Masks predicted for ``B`` prompt sets on the current frame in one decoder pass.

    Full-resolution logits are computed on request (`logits`), for the masks asked for only:
    automatic mask generation drops most candidates on their scores first.

    Attributes
    ----------
    scores : torch.Tensor
        ``(B, K)`` float32 predicted IoU (``K`` = 3 in multimask mode, else 1).
    low_res_logits : torch.Tensor
        ``(B, K, M, M)`` float32 low-resolution logits, as a later `predict_batch` takes them
        for `mask_input`.
    upscale : callable
        ``index (n,) int64`` flat indices into the ``B * K`` masks -> ``(n, H, W)`` float32
        logits at the frame's size (``> MASK_THRESHOLD`` inside).
    """

    scores: torch.Tensor
    low_res_logits: torch.Tensor
    upscale: Callable[[torch.Tensor], torch.Tensor]

    def logits(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, H, W)`` logits of masks `index` (flat into ``B * K``; None: all of them)."""
        import torch

        if index is None:
            index = torch.arange(self.scores.numel())
        return self.upscale(index)


def check_batch_prompts(points: np.ndarray, labels: np.ndarray, frame_hw: tuple[int, int],
                        mask_input: Any = None,
                        mask_input_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check the prompts of `BatchPredictor.predict_batch`.

    Parameters
    ----------
    points : array-like
        ``(B, N, 2)`` (row, col) frame pixels, finite, inside ``[0, H] x [0, W]``.
    labels : array-like
        ``(B, N)``, 1 positive / 0 negative.
    frame_hw : tuple of int
        ``(H, W)`` of the frame.
    mask_input : array-like or None
        ``(B, 1, M, M)`` logits.
    mask_input_size : int or None
        ``M``.

    Returns
    -------
    points : np.ndarray
        ``(B, N, 2)`` float64.
    labels : np.ndarray
        ``(B, N)`` int64.

    Raises
    ------
    napari_focsam.engine.prompts.PromptError
        Malformed prompts.
    """
    from .prompts import PromptError

    pts = np.asarray(points, dtype=np.float64)
    labs = np.asarray(labels)
    if pts.ndim != 3 or pts.shape[-1] != 2 or pts.shape[0] == 0 or pts.shape[1] == 0:
        raise PromptError(f"batched points must be (B, N, 2) with B, N >= 1, got {pts.shape}")
    if labs.shape != pts.shape[:2] or not np.isin(labs, (0, 1)).all():
        raise PromptError(f"batched labels must be (B, N) = {pts.shape[:2]} of 1 / 0, got "
                          f"shape {labs.shape}")
    h, w = frame_hw
    inside = (pts >= 0).all(-1) & (pts[..., 0] <= h) & (pts[..., 1] <= w)
    if not np.isfinite(pts).all() or not inside.all():
        raise PromptError(f"batched points must be finite and inside the {h} x {w} frame")
    if mask_input is not None:
        shape = tuple(mask_input.shape)
        if shape != (pts.shape[0], 1, mask_input_size, mask_input_size):
            raise PromptError(f"batched mask inputs must be (B, 1, {mask_input_size}, "
                              f"{mask_input_size}), got {shape}")
    return pts, labs.astype(np.int64)


@runtime_checkable
class BatchPredictor(Protocol):
    """An interactive predictor that also decodes many prompt sets at once (automatic mask
    generation, `napari_focsam.engine.automatic`). All three families implement it."""

    @property
    def original_size(self) -> tuple[int, int] | None: ...

    @property
    def mask_input_size(self) -> int: ...

    def set_image(self, image: np.ndarray, *, channel_axis: int | None = None) -> None:
        """Encode one 2D image as the frame."""

    def set_frame(self, features: Any, frame_shape: tuple[int, int]) -> None:
        """Use a frame's cached features."""

    def predict_batch(self, points: np.ndarray, labels: np.ndarray, *, multimask: bool = True,
                      mask_input: np.ndarray | torch.Tensor | None = None,
                      min_region_area: int = 0) -> BatchPrediction:
        """``B`` prompt sets of ``(B, N, 2)`` (row, col) points with ``(B, N)`` labels (and
        ``(B, 1, M, M)`` mask inputs) in one decoder pass. With `min_region_area`, background
        holes and foreground specks of at most that many low-resolution pixels are flipped
        before upscaling (SAM 2's image-predictor clean-up)."""

    def automatic_defaults(self) -> AutoMaskParams:
        """The official automatic mask generator's defaults for this model family."""


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
