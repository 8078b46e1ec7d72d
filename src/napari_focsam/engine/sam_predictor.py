"""Interactive SAM predictor: encode an image once, then predict masks from napari prompts.

Prompts are napari's ``(row, col)`` in original pixels; masks and logits come back at the
original image size. The image encoder runs under autocast in the chosen precision (see
:mod:`napari_focsam.engine.precision`); the prompt encoder and mask decoder always run in fp32.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..errors import FocSamError
from ..models.sam.mask_decoder import MaskDecoderOutput
from .image import to_rgb_uint8
from .interactive import MASK_THRESHOLD, BatchPrediction, MaskPrediction, check_batch_prompts
from .precision import autocast_context, fp32_context, resolve_device, resolve_encoder_dtype
from .prompts import Prompts, validate_prompts
from .transforms import (
    box_rc_to_model_xyxy,
    longest_side_shape,
    rc_to_model_xy,
    resize_longest_side,
)

if TYPE_CHECKING:
    from .automatic import AutoMaskParams
    from .session import ClickSession

__all__ = ["PredictorStateError", "SamPredictor"]

logger = logging.getLogger(__name__)

class PredictorStateError(FocSamError, RuntimeError):
    """The predictor was asked to predict before an image (or its features) was set."""


class SamPredictor:
    """Encode one 2D image with a SAM model and predict masks for prompts on it.

    Parameters
    ----------
    model : nn.Module
        A SAM model (``napari_focsam.models.sam.SamModel`` interface: ``config``,
        ``preprocess``, ``image_encoder``, ``decode``, ``postprocess_masks``). It is moved to
        `device` and put in eval mode.
    device : str or torch.device
        ``"auto"`` or a torch device (see `resolve_device`).
    encoder_dtype : str or torch.dtype
        Image-encoder precision, ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see
        `resolve_encoder_dtype`).
    """

    #: Version of the frame -> model input preprocessing (part of embedding-cache keys).
    preprocess_version = "sam-longest-side-v1"

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "auto",
        encoder_dtype: str | torch.dtype = "auto",
    ) -> None:
        self.device = resolve_device(device)
        self.encoder_dtype = resolve_encoder_dtype(self.device, encoder_dtype)
        self.model = model.to(self.device).eval()
        self._features: torch.Tensor | None = None
        self._original_size: tuple[int, int] | None = None
        self._input_size: tuple[int, int] | None = None
        #: Bumped whenever the image changes, so click sessions notice a stale image.
        self.image_generation = 0
        logger.info("%s on %s, encoder in %s", type(self).__name__, self.device, self.encoder_dtype)

    # ------------------------------------------------------------------ state
    @property
    def sam(self) -> nn.Module:
        """The SAM part of the model (image encoder, prompt encoder, mask decoder)."""
        return self.model

    @property
    def image_size(self) -> int:
        """Side of the square model input (1024 for SAM)."""
        return int(self.sam.config.image_size)

    @property
    def mask_input_size(self) -> int:
        """Side of the low-resolution mask logits (256 for SAM)."""
        return int(self.sam.config.mask_input_size)

    @property
    def refine_start_step(self) -> int | None:
        """Click index at which a click session refines the embeddings (None: never)."""
        return None

    @property
    def is_image_set(self) -> bool:
        """Whether an image (or precomputed features) is set."""
        return self._features is not None

    @property
    def original_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of the current image, or None."""
        return self._original_size

    @property
    def input_size(self) -> tuple[int, int] | None:
        """``(h, w)`` of the current image resized to the model's longest side, or None."""
        return self._input_size

    @property
    def features(self) -> torch.Tensor:
        """``(1, C, E, E)`` float32 image embeddings of the current image."""
        self._require_image()
        assert self._features is not None
        return self._features

    def reset_image(self) -> None:
        """Forget the current image and its features."""
        self._features = None
        self._original_size = None
        self._input_size = None
        self.image_generation += 1

    def _require_image(self) -> None:
        if self._features is None:
            raise PredictorStateError(
                "no image is set: call set_image(image) (or set_features(...)) before predict()."
            )

    # ------------------------------------------------------------------ image
    @torch.no_grad()
    def set_image(self, image: np.ndarray, *, channel_axis: int | None = None) -> None:
        """Compute and keep the image embeddings of one 2D image.

        Parameters
        ----------
        image : np.ndarray
            ``(H, W)`` or ``(H, W, C)`` (or with the channel axis at `channel_axis`), any dtype
            accepted by `napari_focsam.engine.image.to_rgb_uint8`.
        channel_axis : int or None
            Channel axis of a 3D `image`; None means the last one.
        """
        self.reset_image()
        rgb = to_rgb_uint8(image, channel_axis=channel_axis)  # (H, W, 3) uint8
        start = time.perf_counter()
        x, input_size = self.model_input(rgb)  # (1, 3, S, S), (h, w)
        with autocast_context(self.device, self.encoder_dtype):
            features = self.sam.image_encoder(x)  # (1, C, E, E)
        self._features = features.float()
        self._original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        self._input_size = input_size
        logger.debug(
            "encoded %s image in %.3f s (%s)",
            self._original_size, time.perf_counter() - start, self.encoder_dtype,
        )

    def model_input(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """The encoder input of an RGB image.

        Parameters
        ----------
        rgb : np.ndarray
            ``(H, W, 3)`` uint8.

        Returns
        -------
        x : torch.Tensor
            ``(1, 3, S, S)`` normalised, padded model input on `device`.
        input_size : tuple of int
            ``(h, w)`` of the image inside the padded input.
        """
        resized = resize_longest_side(rgb, self.image_size)  # (h, w, 3) uint8
        x = torch.from_numpy(np.ascontiguousarray(resized)).to(self.device)
        x = x.permute(2, 0, 1)[None].float()  # (1, 3, h, w) 0..255
        return self.sam.preprocess(x), (int(resized.shape[0]), int(resized.shape[1]))

    def expected_input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` the image of `original_size` occupies inside the model input."""
        return longest_side_shape(int(original_size[0]), int(original_size[1]), self.image_size)

    def set_features(
        self,
        features: torch.Tensor | np.ndarray,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
    ) -> None:
        """Use precomputed image embeddings (e.g. from the embedding cache).

        Parameters
        ----------
        features : torch.Tensor or np.ndarray
            ``(1, C, E, E)`` or ``(C, E, E)`` embeddings of the model's encoder.
        original_size : tuple of int
            ``(H, W)`` of the original image.
        input_size : tuple of int
            ``(h, w)`` of the image inside the model input; must equal
            ``expected_input_size(original_size)``.
        """
        feats = torch.as_tensor(features)
        if feats.ndim == 3:
            feats = feats[None]
        grid = int(self.sam.config.image_embedding_size)
        if feats.ndim != 4 or feats.shape[0] != 1 or tuple(feats.shape[-2:]) != (grid, grid):
            raise ValueError(
                f"features must have shape (1, C, {grid}, {grid}) for this model, got "
                f"{tuple(torch.as_tensor(features).shape)}."
            )
        if not feats.is_floating_point():
            raise TypeError(f"features must be floating point, got {feats.dtype}.")
        original = (int(original_size[0]), int(original_size[1]))
        expected = self.expected_input_size(original)
        given = (int(input_size[0]), int(input_size[1]))
        if given != expected:
            raise ValueError(
                f"input_size {given} does not match original_size {original}: this model's "
                f"preprocessing gives {expected}."
            )
        self.reset_image()
        self._features = feats.to(self.device, torch.float32)
        self._original_size = original
        self._input_size = given

    def set_frame(self, features: torch.Tensor | np.ndarray, frame_shape: tuple[int, int]) -> None:
        """Use cached embeddings of a frame of `frame_shape` ``(H, W)`` (see `set_features`)."""
        self.set_features(features, frame_shape, self.expected_input_size(frame_shape))

    # ------------------------------------------------------------------ prompts
    @torch.no_grad()
    def predict(
        self,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask: bool = True,
    ) -> MaskPrediction:
        """Predict masks on the current image.

        Parameters
        ----------
        points : array-like or None
            ``(N, 2)`` (row, col) in original pixels.
        labels : array-like or None
            ``(N,)`` 1 positive / 0 negative.
        box : array-like or None
            ``(4,)`` (row0, col0, row1, col1) in original pixels.
        mask_input : array-like or None
            ``(4E, 4E)`` or ``(1, 4E, 4E)`` logits, e.g. ``previous.low_res_logits[k]``.
        multimask : bool
            Return three candidate masks instead of one.

        Returns
        -------
        MaskPrediction

        Raises
        ------
        PredictorStateError
            No image set.
        napari_focsam.engine.prompts.PromptError
            Missing or invalid prompts.
        """
        prompts = self.validate(points, labels, box, mask_input)
        return self.decode(prompts, multimask=multimask)

    def validate(
        self,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
    ) -> Prompts:
        """Check prompts against the current image (see `predict` for the arguments).

        Returns
        -------
        Prompts
            The canonical prompts.

        Raises
        ------
        PredictorStateError
            No image set.
        napari_focsam.engine.prompts.PromptError
            Missing or invalid prompts.
        """
        self._require_image()
        assert self._original_size is not None
        size = self.mask_input_size
        return validate_prompts(
            points, labels, box, mask_input,
            image_hw=self._original_size, mask_input_hw=(size, size),
        )

    def start_session(self, box: np.ndarray | None = None) -> ClickSession:
        """Start the click history of a new object on the current image.

        Parameters
        ----------
        box : array-like or None
            ``(4,)`` (row0, col0, row1, col1) sent with every click of the object.

        Returns
        -------
        ClickSession
        """
        from .session import ClickSession

        return ClickSession(self, box=box)

    # ------------------------------------------------------------------ model frame
    def points_to_model(self, points_rc: np.ndarray) -> np.ndarray:
        """``(N, 2)`` (row, col) in original pixels -> ``(N, 2)`` float32 (x, y) in the model
        input frame (before the prompt encoder's +0.5)."""
        assert self._original_size is not None
        return rc_to_model_xy(points_rc, self._original_size, self.image_size)

    def box_to_model(self, box_rc: np.ndarray) -> np.ndarray:
        """``(4,)`` (row0, col0, row1, col1) in original pixels -> ``(4,)`` float32
        (x0, y0, x1, y1) in the model input frame."""
        assert self._original_size is not None
        return box_rc_to_model_xyxy(box_rc, self._original_size, self.image_size)

    def postprocess(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """``(1, K, 4E, 4E)`` low-resolution logits -> ``(1, K, H, W)`` logits at the original
        image size."""
        assert self._original_size is not None and self._input_size is not None
        return self.sam.postprocess_masks(
            low_res_logits, input_size=self._input_size, original_size=self._original_size
        )

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def decode(
        self,
        prompts: Prompts,
        *,
        multimask: bool,
        embeddings: torch.Tensor | None = None,
    ) -> MaskPrediction:
        """Decode validated prompts into masks at the original image size.

        Parameters
        ----------
        prompts : Prompts
            From `validate`.
        multimask : bool
            Three candidate masks instead of one.
        embeddings : torch.Tensor, optional
            ``(1, C, E, E)`` embeddings to decode on instead of the image's (e.g. FocSAM's
            refined embeddings).

        Returns
        -------
        MaskPrediction
        """
        out = self.decode_raw(prompts, multimask=multimask, embeddings=embeddings)
        return self.prediction(out.low_res_logits, out.iou_predictions)

    @torch.no_grad()
    def decode_raw(
        self,
        prompts: Prompts,
        *,
        multimask: bool,
        embeddings: torch.Tensor | None = None,
    ) -> MaskDecoderOutput:
        """Prompt encoder + mask decoder, fp32, without post-processing.

        Parameters
        ----------
        prompts : Prompts
            From `validate`.
        multimask : bool
            Three candidate masks instead of one.
        embeddings : torch.Tensor, optional
            ``(1, C, E, E)``; the image's embeddings when None.

        Returns
        -------
        MaskDecoderOutput
            ``low_res_logits (1, K, 4E, 4E)``, ``iou_predictions (1, K)``, ``mask_tokens``.
        """
        self._require_image()
        coords = labels_t = boxes = mask = None
        if prompts.points is not None:
            xy = self.points_to_model(prompts.points)
            coords = torch.from_numpy(xy).to(self.device)[None]  # (1, N, 2)
            labels_t = torch.from_numpy(prompts.labels).to(self.device)[None]  # (1, N)
        if prompts.box is not None:
            boxes = torch.from_numpy(self.box_to_model(prompts.box)).to(self.device)[None]  # (1, 4)
        if prompts.mask_input is not None:
            mask = torch.from_numpy(prompts.mask_input).to(self.device)[None]  # (1, 1, M, M)
        with fp32_context(self.device):  # the decoder always runs in fp32
            return self.sam.decode(
                self._features if embeddings is None else embeddings,
                point_coords=coords,
                point_labels=labels_t,
                boxes=boxes,
                mask_input=mask,
                multimask=multimask,
            )

    @torch.no_grad()
    def prediction(self, low_res_logits: torch.Tensor, scores: torch.Tensor) -> MaskPrediction:
        """Wrap decoder outputs, upscaled to the original image, as a `MaskPrediction`.

        Parameters
        ----------
        low_res_logits : torch.Tensor
            ``(1, K, 4E, 4E)``.
        scores : torch.Tensor
            ``(1, K)`` predicted IoU.

        Returns
        -------
        MaskPrediction
        """
        with fp32_context(self.device):
            low_res = low_res_logits.float()
            logits = self.postprocess(low_res)  # (1, K, H, W)
        logits_np = logits[0].cpu().numpy().astype(np.float32, copy=False)
        return MaskPrediction(
            masks=logits_np > MASK_THRESHOLD,
            scores=scores[0].float().cpu().numpy(),
            low_res_logits=low_res[0].cpu().numpy(),
            logits=logits_np,
        )

    def session_step(
        self,
        prompts: Prompts,
        step: int,
        embeddings: torch.Tensor | None,
    ) -> tuple[MaskPrediction, torch.Tensor | None]:
        """One click of the interactive protocol (used by `ClickSession`).

        SAM decodes all clicks so far plus the previous step's low-resolution logits in
        single-mask mode, always on the image's embeddings.

        Parameters
        ----------
        prompts : Prompts
            All clicks of the object so far, its box, and the previous logits as mask input.
        step : int
            0-based index of the click.
        embeddings : torch.Tensor or None
            Embeddings the object's previous steps used (None: the image's).

        Returns
        -------
        prediction : MaskPrediction
            Single mask.
        embeddings : torch.Tensor or None
            Embeddings for the object's next steps (None: the image's).
        """
        return self.decode(prompts, multimask=False, embeddings=embeddings), embeddings

    # ------------------------------------------------------------------ batched decoding
    @torch.no_grad()
    def predict_batch(
        self,
        points: np.ndarray,
        labels: np.ndarray,
        *,
        multimask: bool = True,
        mask_input: np.ndarray | torch.Tensor | None = None,
        min_region_area: int = 0,
    ) -> BatchPrediction:
        """Decode ``B`` prompt sets on the current image in one pass (the official
        ``SamPredictor.predict_torch``), e.g. the single clicks of automatic mask generation.

        Parameters
        ----------
        points : array-like
            ``(B, N, 2)`` (row, col) in original pixels.
        labels : array-like
            ``(B, N)`` 1 positive / 0 negative.
        multimask : bool
            Three masks per prompt set instead of one.
        mask_input : array-like or None
            ``(B, 1, 4E, 4E)`` logits.
        min_region_area : int
            Flip background holes and foreground specks of at most this many low-resolution
            pixels before upscaling (`engine.regions.clean_low_res_logits`); 0: none.

        Returns
        -------
        BatchPrediction
            ``scores (B, K)``, ``low_res_logits (B, K, 4E, 4E)``, logits at the image size on
            request.
        """
        from .regions import clean_low_res_logits

        self._require_image()
        assert self._original_size is not None
        pts, labs = check_batch_prompts(points, labels, self._original_size, mask_input,
                                        self.mask_input_size)
        b, n = labs.shape
        xy = self.points_to_model(pts.reshape(-1, 2)).reshape(b, n, 2)
        coords = torch.from_numpy(np.ascontiguousarray(xy)).to(self.device)
        labels_t = torch.from_numpy(labs).to(self.device)
        mask = None if mask_input is None else torch.as_tensor(mask_input).float().to(self.device)
        with fp32_context(self.device):
            out = self.sam.decode(self._features, point_coords=coords, point_labels=labels_t,
                                  mask_input=mask, multimask=multimask)
        low = out.low_res_logits.float()  # (B, K, 4E, 4E)

        def upscale(index: torch.Tensor) -> torch.Tensor:
            chosen = low.flatten(0, 1)[index.to(low.device)]  # (n, 4E, 4E)
            if min_region_area > 0:
                chosen = clean_low_res_logits(chosen, min_region_area, min_region_area)
            with fp32_context(self.device):
                return self.postprocess(chosen[:, None])[:, 0]  # (n, H, W)

        return BatchPrediction(out.iou_predictions.float(), low, upscale)

    def automatic_defaults(self) -> AutoMaskParams:
        """segment-anything's `SamAutomaticMaskGenerator` defaults (`AutoMaskParams()`)."""
        from .automatic import AutoMaskParams

        return AutoMaskParams()
