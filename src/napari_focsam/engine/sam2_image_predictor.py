"""SAM 2 in image mode: objects drawn on one frame from clicks, a box and previous logits.

The same computation as SAM 2's video predictor on a frame without memory (an initial
conditioning frame): the frame's features plus the no-memory embedding go through the prompt
encoder and mask decoder, a box enters as two corner points (labels 2, 3) before the clicks,
the previous step's logits (clamped to +-32) are the mask input, SAM 2 decides single or
multi-mask output itself, and small background holes of the low-resolution logits are filled.
A click session therefore gives exactly what `VideoPropagator.add_points` gives when the clicks
are added one at a time (``clear_old=False``), and a one-shot `predict` what it gives for all
prompts at once. It runs under autocast in the model's precision, as the propagation does.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.sam2.model import Sam2FrameFeatures
from .frame_features import sam2_model_input
from .holes import fill_small_holes
from .image import to_rgb_uint8
from .interactive import MASK_THRESHOLD, BatchPrediction, MaskPrediction, check_batch_prompts
from .precision import autocast_context, resolve_device, resolve_encoder_dtype
from .prompts import Prompts, validate_prompts
from .propagation import PREV_LOGIT_CLAMP
from .sam_predictor import PredictorStateError

if TYPE_CHECKING:
    from .automatic import AutoMaskParams
    from .session import ClickSession

__all__ = ["Sam2ImagePredictor"]

logger = logging.getLogger(__name__)

#: Prompt-encoder labels of a box's top-left and bottom-right corners.
BOX_CORNER_LABELS = (2, 3)
#: The official image predictor returns low-resolution logits clamped to this.
LOW_RES_CLAMP = 32.0


class Sam2ImagePredictor:
    """Draw objects on single frames with SAM 2 (the `InteractivePredictor` of SAM 2).

    Parameters
    ----------
    model : napari_focsam.models.sam2.Sam2Model
        The model (moved to `device` unless None; put in eval mode).
    device : str or torch.device or None
        None keeps the model's device.
    dtype : str or torch.dtype
        Autocast precision of the encoder and heads (``"auto"``, ``"fp32"``, ``"bf16"``...).
    fill_hole_area : int or None
        Largest background hole (low-resolution pixels) filled; None takes the model's.
    """

    def __init__(self, model: nn.Module, *, device: str | torch.device | None = None,
                 dtype: str | torch.dtype = "auto", fill_hole_area: int | None = None) -> None:
        if device is not None:
            model = model.to(resolve_device(device))
        self.model = model.eval()
        self.device = model.device
        self.dtype = resolve_encoder_dtype(self.device, dtype)
        self.fill_hole_area = int(model.config.fill_hole_area if fill_hole_area is None
                                  else fill_hole_area)
        self.image_generation = 0
        self._features: Sam2FrameFeatures | None = None
        self._original_size: tuple[int, int] | None = None

    @property
    def original_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of the current frame, or None."""
        return self._original_size

    @property
    def image_size(self) -> int:
        """Side of the square model input (1024)."""
        return int(self.model.image_size)

    @property
    def mask_input_size(self) -> int:
        """Side of the low-resolution logits (256 at a 1024 input)."""
        return int(self.model.config.low_res_mask_size)

    # ------------------------------------------------------------------ frame
    def set_frame(self, features: Sam2FrameFeatures, frame_shape: tuple[int, int]) -> None:
        """Use a frame's features (float32, batch 1, as `store.Sam2Encoder` gives them)."""
        self._features = features
        self._original_size = (int(frame_shape[0]), int(frame_shape[1]))
        self.image_generation += 1

    @torch.no_grad()
    def set_image(self, image: np.ndarray, *, channel_axis: int | None = None) -> None:
        """Encode one 2D image (any dtype `to_rgb_uint8` takes) as the frame."""
        rgb = to_rgb_uint8(image, channel_axis=channel_axis)  # (H, W, 3) uint8
        x = sam2_model_input(rgb, self.model.image_size, self.device)  # (1, 3, S, S)
        with autocast_context(self.device, self.dtype):
            features = self.model.encode_image(x)
        self.set_frame(features, rgb.shape[:2])

    def _require_frame(self) -> Sam2FrameFeatures:
        if self._features is None:
            raise PredictorStateError("no frame is set: call set_image(image) or "
                                      "set_frame(features, frame_shape) first")
        return self._features

    # ------------------------------------------------------------------ prompts
    def validate(self, points: np.ndarray | None = None, labels: np.ndarray | None = None,
                 box: np.ndarray | None = None, mask_input: np.ndarray | None = None) -> Prompts:
        """Check prompts against the current frame (see `SamPredictor.validate`)."""
        self._require_frame()
        assert self._original_size is not None
        size = self.mask_input_size
        return validate_prompts(points, labels, box, mask_input, image_hw=self._original_size,
                                mask_input_hw=(size, size))

    def predict(self, points: np.ndarray | None = None, labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_input: np.ndarray | None = None,
                multimask: bool = False) -> MaskPrediction:
        """One mask from (row, col) points, 1 / 0 labels, a (row0, col0, row1, col1) box and
        ``(M, M)`` logits; SAM 2 chooses among its candidate masks itself, so one mask is
        returned whatever `multimask` says.

        Raises
        ------
        PredictorStateError
            No frame set.
        napari_focsam.engine.prompts.PromptError
            Missing or invalid prompts.
        """
        return self._decode(self.validate(points, labels, box, mask_input))

    def start_session(self, box: np.ndarray | None = None) -> ClickSession:
        """The click history of a new object on the current frame."""
        from .session import ClickSession

        return ClickSession(self, box=box)

    def session_step(self, prompts: Prompts, step: int, state: None) -> tuple[MaskPrediction, None]:
        """One click of SAM 2's interactive protocol (used by `ClickSession`)."""
        return self._decode(prompts), None

    # ------------------------------------------------------------------ decoding
    def _model_points(self, prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(1, P, 2)`` (x, y) in the model frame and ``(1, P)`` int32 labels: the box corners
        first, then the clicks (the arithmetic of `VideoPropagator.add_points`)."""
        parts, labels = [], []
        if prompts.box is not None:
            parts.append(np.asarray(prompts.box, dtype=np.float32)[[1, 0, 3, 2]].reshape(2, 2))
            labels.append(np.asarray(BOX_CORNER_LABELS, dtype=np.int32))
        if prompts.points is not None:
            parts.append(np.asarray(prompts.points, dtype=np.float32)[:, ::-1])
            labels.append(np.asarray(prompts.labels, dtype=np.int32))
        if not parts:
            return None
        h, w = self._original_size  # type: ignore[misc]
        xy = torch.from_numpy(np.ascontiguousarray(np.concatenate(parts)))
        coords = (xy / torch.tensor([w, h], dtype=torch.float32) * self.model.image_size)[None]
        return coords.to(self.device), torch.from_numpy(np.concatenate(labels))[None].to(self.device)

    @torch.no_grad()
    def _decode(self, prompts: Prompts) -> MaskPrediction:
        feats = self._require_frame()
        model = self.model
        points = self._model_points(prompts)
        mask_input = None
        if prompts.mask_input is not None:
            mask_input = torch.from_numpy(prompts.mask_input).to(self.device)[None]  # (1, 1, M, M)
            mask_input = mask_input.clamp(-PREV_LOGIT_CLAMP, PREV_LOGIT_CLAMP)
        n_points = 0 if points is None else points[1].shape[1]
        multimask = model.use_multimask(True, n_points)
        with autocast_context(self.device, self.dtype):
            pix = model.pix_without_memory(feats, 1)
            heads = model.sam_heads(pix, feats, points=points, mask_input=mask_input,
                                    multimask=multimask)
        low = heads.low_res_masks.float()  # (1, 1, M, M)
        if self.fill_hole_area > 0:
            low = fill_small_holes(low, self.fill_hole_area)
        logits = F.interpolate(low, self._original_size, mode="bilinear", align_corners=False)
        ious = heads.ious.float()
        score = ious.max(dim=-1).values if multimask else ious[:, 0]
        logits_np = logits[0].cpu().numpy()
        return MaskPrediction(masks=logits_np > MASK_THRESHOLD, scores=score.cpu().numpy(),
                              low_res_logits=low[0].cpu().numpy(), logits=logits_np)

    # ------------------------------------------------------------------ batched decoding
    @torch.no_grad()
    def predict_batch(self, points: np.ndarray, labels: np.ndarray, *, multimask: bool = True,
                      mask_input: np.ndarray | torch.Tensor | None = None,
                      min_region_area: int = 0) -> BatchPrediction:
        """Decode ``B`` prompt sets on the frame in one pass, as sam2's `SAM2ImagePredictor`
        does for its automatic mask generator (``_predict``).

        Unlike `predict` (the video predictor's protocol), the requested outputs are returned
        as they are: three masks in multimask mode (single-mask mode: the decoder's own
        stability fallback), no object-score gating. The frame's features get the no-memory
        embedding as in `predict` (what the official image predictor does for every released
        model).

        Parameters
        ----------
        points : array-like
            ``(B, N, 2)`` (row, col) frame pixels.
        labels : array-like
            ``(B, N)`` 1 / 0.
        multimask : bool
            Three masks per prompt set instead of one.
        mask_input : array-like or None
            ``(B, 1, M, M)`` logits (e.g. ``low_res_logits`` of an earlier call), used as given.
        min_region_area : int
            The official ``max_hole_area`` = ``max_sprinkle_area``: background holes and
            foreground specks of at most this many low-resolution pixels are flipped
            (`engine.regions.clean_low_res_logits`) before upscaling; 0: none.

        Returns
        -------
        BatchPrediction
            ``scores (B, K)``, ``low_res_logits (B, K, M, M)`` clamped to +-32 (official), and
            the unclamped logits bilinearly resized to the frame on request.
        """
        from .regions import clean_low_res_logits

        feats = self._require_frame()
        assert self._original_size is not None
        pts, labs = check_batch_prompts(points, labels, self._original_size, mask_input,
                                        self.mask_input_size)
        model = self.model
        h, w = self._original_size
        xy = torch.from_numpy(np.ascontiguousarray(pts[..., ::-1], dtype=np.float32))
        coords = (xy / torch.tensor([w, h], dtype=torch.float32) * model.image_size).to(self.device)
        labels_t = torch.from_numpy(labs.astype(np.int32)).to(self.device)
        mask = None if mask_input is None else torch.as_tensor(mask_input).float().to(self.device)
        with autocast_context(self.device, self.dtype):
            pix = model.pix_without_memory(feats, 1)
            sparse, dense = model.sam_prompt_encoder((coords, labels_t), None, mask)
            out = model.sam_mask_decoder(pix, model.sam_prompt_encoder.get_dense_pe(), sparse,
                                         dense, multimask_output=multimask, repeat_image=True,
                                         high_res_features=list(feats.high_res) or None)
        low = out.masks.float()  # (B, K, M, M)
        size = self._original_size

        def upscale(index: torch.Tensor) -> torch.Tensor:
            chosen = low.flatten(0, 1)[index.to(low.device)]  # (n, M, M)
            if min_region_area > 0:
                chosen = clean_low_res_logits(chosen, min_region_area, min_region_area)
            return F.interpolate(chosen[:, None], size, mode="bilinear",
                                 align_corners=False)[:, 0]  # (n, H, W)

        return BatchPrediction(out.iou_predictions.float(),
                               low.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP), upscale)

    def automatic_defaults(self) -> AutoMaskParams:
        """sam2's `SAM2AutomaticMaskGenerator` defaults (`AutoMaskParams.sam2()`)."""
        from .automatic import AutoMaskParams

        return AutoMaskParams.sam2()
