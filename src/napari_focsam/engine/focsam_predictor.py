"""Interactive FocSAM predictor: SAM's API with FocSAM's preprocessing and refinement.

FocSAM differs from SAM in three places, all following the official test-time code:

- **Preprocessing.** The model was trained on BGR images normalised with SAM's RGB mean and
  std; the normalised image is zero-padded bottom/right to a multiple of 32, then resized
  (bilinear, no antialiasing) so its longest side is 1024, then zero-padded to 1024 x 1024.
- **Coordinates.** Clicks are scaled by the resized size over the 32-padded size; masks are
  upscaled to the canvas, cropped to the resized size, resized to the 32-padded size and
  cropped to the image.
- **Refinement.** At click `refine_start_step` (the second click) of a click session, a coarse
  pass yields logits and the mask token, the FocusRefiner turns the image embeddings into
  refined ones, and this and every later click of the object decode on them.

Plain `predict` calls decode on the image's (unrefined) embeddings; the refinement lives in
click sessions (`start_session`), which keep it per object.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .interactive import MaskPrediction
from .precision import autocast_context, resolve_encoder_dtype
from .prompts import Prompts
from .sam_predictor import SamPredictor
from .transforms import longest_side_shape

__all__ = ["FocSamPredictor", "SIZE_DIVISOR"]

logger = logging.getLogger(__name__)

#: The official data preprocessor pads images to a multiple of this before resizing.
SIZE_DIVISOR = 32


def padded_shape(h: int, w: int, divisor: int = SIZE_DIVISOR) -> tuple[int, int]:
    """``(H, W)`` rounded up to multiples of `divisor`."""
    return math.ceil(h / divisor) * divisor, math.ceil(w / divisor) * divisor


class FocSamPredictor(SamPredictor):
    """Encode one 2D image with FocSAM and predict masks, refining per object.

    Parameters
    ----------
    model : nn.Module
        A `napari_focsam.models.focsam.FocSamModel` (``sam``, ``refiner``, ``config``).
    device : str or torch.device
        ``"auto"`` or a torch device.
    encoder_dtype : str or torch.dtype
        Image-encoder precision (``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``).
    refiner_dtype : str or torch.dtype or None
        Refiner precision, same choices; None means the encoder's.
    refine_start_step : int or None
        Click index (0-based) at which a session refines; None takes the model config's
        (official: 1, the second click); a negative value never refines.
    """

    preprocess_version = "focsam-bgr-pad32-v1"

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "auto",
        encoder_dtype: str | torch.dtype = "auto",
        refiner_dtype: str | torch.dtype | None = None,
        refine_start_step: int | None = None,
    ) -> None:
        super().__init__(model, device=device, encoder_dtype=encoder_dtype)
        self.refiner_dtype = (self.encoder_dtype if refiner_dtype is None
                              else resolve_encoder_dtype(self.device, refiner_dtype))
        step = model.config.refine_start_step if refine_start_step is None else refine_start_step
        self._refine_start_step = int(step)

    @property
    def sam(self) -> nn.Module:
        """The SAM part (image encoder, prompt encoder, FocSAM's retrained decoder)."""
        return self.model.sam

    @property
    def refiner(self) -> nn.Module:
        """The FocusRefiner."""
        return self.model.refiner

    @property
    def refine_start_step(self) -> int | None:
        """Click index at which a session refines (None: never)."""
        return self._refine_start_step if self._refine_start_step >= 0 else None

    @property
    def padded_size(self) -> tuple[int, int] | None:
        """``(Hp, Wp)``: the image size padded to a multiple of 32, or None."""
        if self._original_size is None:
            return None
        return padded_shape(*self._original_size)

    # ------------------------------------------------------------------ model frame
    def model_input(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(H, W, 3)`` uint8 RGB -> ``(1, 3, S, S)`` model input and ``(h, w)`` inside it."""
        size = self.image_size
        h0, w0 = rgb.shape[:2]
        hp, wp = padded_shape(h0, w0)
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # FocSAM was trained on BGR input
        x = torch.from_numpy(bgr).to(self.device).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        mean = self.sam.pixel_mean.reshape(1, 3, 1, 1)
        std = self.sam.pixel_std.reshape(1, 3, 1, 1)
        x = F.pad((x - mean) / std, (0, wp - w0, 0, hp - h0))  # (1, 3, Hp, Wp)
        h, w = longest_side_shape(hp, wp, size)
        x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False, antialias=False)
        return F.pad(x, (0, size - w, 0, size - h)), (h, w)

    def expected_input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` the image of `original_size` occupies inside the model input."""
        return longest_side_shape(*padded_shape(int(original_size[0]), int(original_size[1])),
                                  self.image_size)

    def _scales(self) -> tuple[float, float]:
        """(row, col) factors from original pixels to the model frame."""
        assert self._input_size is not None
        hp, wp = self.padded_size  # type: ignore[misc]
        return self._input_size[0] / hp, self._input_size[1] / wp

    def points_to_model(self, points_rc: np.ndarray) -> np.ndarray:
        """``(N, 2)`` (row, col) in original pixels -> ``(N, 2)`` float32 (x, y) in the model
        frame, scaled by the resized over the 32-padded size (before the encoder's +0.5)."""
        sy, sx = self._scales()
        rc = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
        return np.stack([rc[:, 1] * sx, rc[:, 0] * sy], axis=-1).astype(np.float32)

    def box_to_model(self, box_rc: np.ndarray) -> np.ndarray:
        """``(4,)`` (row0, col0, row1, col1) -> ``(4,)`` float32 (x0, y0, x1, y1), model frame."""
        return self.points_to_model(np.asarray(box_rc, dtype=np.float64).reshape(2, 2)).reshape(4)

    def postprocess(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """``(1, K, 4E, 4E)`` -> ``(1, K, H, W)``: canvas, crop to the resized size, resize to
        the 32-padded size, crop to the image."""
        assert self._original_size is not None and self._input_size is not None
        size = self.image_size
        x = F.interpolate(low_res_logits, (size, size), mode="bilinear", align_corners=False)
        x = x[..., : self._input_size[0], : self._input_size[1]]
        x = F.interpolate(x, self.padded_size, mode="bilinear", align_corners=False)
        return x[..., : self._original_size[0], : self._original_size[1]]

    # ------------------------------------------------------------------ refinement
    @torch.no_grad()
    def refine(self, prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Coarse pass on the image's embeddings, then the FocusRefiner.

        Parameters
        ----------
        prompts : Prompts
            All clicks so far and the previous logits (from `validate`).

        Returns
        -------
        refined : torch.Tensor
            ``(1, C, E, E)`` float32 refined embeddings.
        focus_box : torch.Tensor
            ``(1, 1, 4)`` int64 (left, up, right, bottom) on the model canvas.
        """
        coarse = self.decode_raw(prompts, multimask=False)
        box = self.refiner.focus_box(coarse.low_res_logits.float())
        with autocast_context(self.device, self.refiner_dtype):
            refined = self.refiner(self.features, None, coarse.mask_tokens[:, :1], box=box)
        logger.debug("refined embeddings in focus box %s", box.flatten().tolist())
        return refined.float(), box

    def session_step(
        self,
        prompts: Prompts,
        step: int,
        embeddings: torch.Tensor | None,
    ) -> tuple[MaskPrediction, torch.Tensor | None]:
        """One click of FocSAM's protocol: refine at `refine_start_step`, then decode.

        Parameters
        ----------
        prompts : Prompts
            All clicks of the object so far, its box, and the previous logits.
        step : int
            0-based index of the click.
        embeddings : torch.Tensor or None
            The object's refined embeddings, or None before its refine step.

        Returns
        -------
        prediction : MaskPrediction
            Single mask.
        embeddings : torch.Tensor or None
            Embeddings for the object's next steps.
        """
        if embeddings is None and step == self.refine_start_step:
            embeddings, _ = self.refine(prompts)
        return self.decode(prompts, multimask=False, embeddings=embeddings), embeddings
