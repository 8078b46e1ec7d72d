"""A stand-in interactive model with SAM's geometry, for benchmarks and tests without weights.

It sees a frame exactly as SAM does and answers like a perfect but resolution-bound model:

- **encoder** (`BrightComponentEncoder`): the frame resized so that its longest side is the
  model input (SAM's `resize_longest_side`, PIL bilinear with antialiasing), zero-padded to a
  square, averaged over 4 x 4 pixels: a ``(1, S/4, S/4)`` gray image on SAM's low-resolution
  logit grid (256² for a 1024 input), values in [0, 1];
- **predictor** (`BrightComponentPredictor`): the bright connected component (gray above
  `THRESHOLD`) under the first positive click (or the brightest one next to it), minus those
  under negative clicks, or the largest one in a box; its low-resolution logits follow the
  gray level (``gray - THRESHOLD`` inside the component, negative elsewhere) and are upscaled
  to the frame as SAM's masks are (bilinear to the input, cropped, bilinear to the frame).

So an object smaller than a few low-resolution pixels fades below the threshold when a large
frame is resized, as fine detail does for SAM. `standin_model` wraps the pair as a
`LoadedModel` of an unregistered family, so it runs through the real `Segmenter`, embedding
stores and tiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ..api.models import LoadedModel
from ..engine.image import to_rgb_uint8
from ..engine.interactive import MaskPrediction
from ..engine.prompts import Prompts, validate_prompts
from ..engine.sam_predictor import PredictorStateError
from ..engine.session import ClickSession
from ..engine.transforms import longest_side_shape, rc_to_model_xy, resize_longest_side
from ..families import FamilyParts, ModelFamily, Role

__all__ = ["THRESHOLD", "BrightComponentEncoder", "BrightComponentPredictor", "standin_model"]

#: Gray level (0..1) above which a low-resolution pixel is part of an object.
THRESHOLD = 0.5
#: Model input pixels per low-resolution logit pixel (SAM: 1024 -> 256).
LOW_RES_STRIDE = 4
#: Logit of low-resolution pixels of bright components that were not chosen.
_OTHER = -1.0


def low_res_gray(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(S/4, S/4)`` float32 mean gray in [0, 1] of the padded,
    resized frame (SAM's model input, averaged over 4 x 4 pixels)."""
    resized = resize_longest_side(np.ascontiguousarray(rgb), image_size)  # (h, w, 3) uint8
    canvas = np.zeros((image_size, image_size), np.float32)
    canvas[: resized.shape[0], : resized.shape[1]] = resized.mean(axis=-1) / 255.0
    m = image_size // LOW_RES_STRIDE
    return canvas.reshape(m, LOW_RES_STRIDE, m, LOW_RES_STRIDE).mean(axis=(1, 3))


class BrightComponentEncoder:
    """The stand-in's embedding-store encoder (the ``FrameEncoder`` protocol).

    Parameters
    ----------
    image_size : int
        Side of the square model input (a multiple of 4).
    """

    model_id = "stand-in:bright-component"
    preprocess_version = "standin-longest-side-v1"

    def __init__(self, image_size: int = 1024) -> None:
        self.image_size = int(image_size)

    def feature_spec(self, frame_shape: tuple[int, int]) -> dict:
        m = self.image_size // LOW_RES_STRIDE
        return {"gray": ((1, m, m), np.dtype(np.float32))}

    def metadata(self, frame_shape: tuple[int, int]) -> dict[str, Any]:
        h, w = (int(s) for s in frame_shape)
        return {"original_size": [h, w],
                "input_size": list(longest_side_shape(h, w, self.image_size))}

    def encode(self, frames: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """``B`` ``(H, W, 3)`` uint8 frames -> ``B`` ``{"gray": (1, S/4, S/4) float32}``."""
        return [{"gray": low_res_gray(f, self.image_size)[None]} for f in frames]

    def to_features(self, arrays: Mapping[str, np.ndarray],
                    frame_shape: tuple[int, int]) -> np.ndarray:
        """``(S/4, S/4)`` float32 (a copy)."""
        return np.array(arrays["gray"][0], dtype=np.float32)

    def modules(self) -> tuple[nn.Module, ...]:
        return ()


class BrightComponentPredictor:
    """The stand-in's interactive predictor (the ``InteractivePredictor`` protocol).

    Parameters
    ----------
    image_size : int
        Side of the square model input.
    threshold : float
        Gray level of objects (see `THRESHOLD`).
    """

    def __init__(self, image_size: int = 1024, threshold: float = THRESHOLD) -> None:
        self._image_size = int(image_size)
        self.threshold = float(threshold)
        self.image_generation = 0
        self._gray: np.ndarray | None = None
        self._original_size: tuple[int, int] | None = None

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def mask_input_size(self) -> int:
        return self._image_size // LOW_RES_STRIDE

    @property
    def original_size(self) -> tuple[int, int] | None:
        return self._original_size

    def set_frame(self, features: np.ndarray, frame_shape: tuple[int, int]) -> None:
        """Use ``(S/4, S/4)`` gray features of a frame of `frame_shape`."""
        self._gray = np.asarray(features, dtype=np.float32).reshape(self.mask_input_size,
                                                                    self.mask_input_size)
        self._original_size = (int(frame_shape[0]), int(frame_shape[1]))
        self.image_generation += 1

    def set_image(self, image: np.ndarray, *, channel_axis: int | None = None) -> None:
        rgb = to_rgb_uint8(image, channel_axis=channel_axis)
        self.set_frame(low_res_gray(rgb, self._image_size), rgb.shape[:2])

    def validate(self, points: np.ndarray | None = None, labels: np.ndarray | None = None,
                 box: np.ndarray | None = None, mask_input: np.ndarray | None = None) -> Prompts:
        if self._gray is None or self._original_size is None:
            raise PredictorStateError("no frame is set")
        m = self.mask_input_size
        return validate_prompts(points, labels, box, mask_input, image_hw=self._original_size,
                                mask_input_hw=(m, m))

    def predict(self, points: np.ndarray | None = None, labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_input: np.ndarray | None = None,
                multimask: bool = True) -> MaskPrediction:
        """One mask (whatever `multimask` says) from the prompts."""
        return self._decode(self.validate(points, labels, box, mask_input))

    def start_session(self, box: np.ndarray | None = None) -> ClickSession:
        return ClickSession(self, box=box)

    def session_step(self, prompts: Prompts, step: int, state: Any) -> tuple[MaskPrediction, None]:
        return self._decode(prompts), None

    # ------------------------------------------------------------------ decoding
    def _low_res(self, points_rc: np.ndarray) -> np.ndarray:
        """``(N, 2)`` (row, col) frame pixels -> ``(N, 2)`` int (row, col) low-res pixels."""
        assert self._original_size is not None
        xy = rc_to_model_xy(points_rc, self._original_size, self._image_size)
        m = self.mask_input_size
        return np.clip(np.floor(xy[:, ::-1] / LOW_RES_STRIDE), 0, m - 1).astype(int)

    def _component_at(self, comps: np.ndarray, rc: np.ndarray) -> int:
        """The component under low-res pixel `rc`, else the brightest one touching its 3 x 3
        neighbourhood (0: none)."""
        r, c = (int(v) for v in rc)
        if comps[r, c]:
            return int(comps[r, c])
        assert self._gray is not None
        r0, c0 = max(r - 1, 0), max(c - 1, 0)
        near = comps[r0:r + 2, c0:c + 2]
        if not near.any():
            return 0
        gray = np.where(near > 0, self._gray[r0:r + 2, c0:c + 2], -1.0)
        return int(near.flat[int(np.argmax(gray))])

    def _decode(self, prompts: Prompts) -> MaskPrediction:
        gray = self._gray
        assert gray is not None and self._original_size is not None
        comps, _ = ndimage.label(gray > self.threshold)
        chosen: set[int] = set()
        if prompts.points is not None:
            low = self._low_res(prompts.points)
            labels = prompts.labels
            assert labels is not None
            positive = [self._component_at(comps, rc) for rc, v in zip(low, labels, strict=True)
                        if v == 1]
            negative = {self._component_at(comps, rc) for rc, v in zip(low, labels, strict=True)
                        if v == 0}
            chosen = {c for c in positive[:1] if c} - negative
        elif prompts.box is not None:
            (r0, c0), (r1, c1) = self._low_res(prompts.box.reshape(2, 2))
            inside = comps[r0:r1 + 1, c0:c1 + 1]
            ids, counts = np.unique(inside[inside > 0], return_counts=True)
            if len(ids):
                chosen = {int(ids[np.argmax(counts)])}
        selected = np.isin(comps, list(chosen)) if chosen else np.zeros(comps.shape, bool)
        low_res = np.where(selected, gray - self.threshold,
                           np.where(comps > 0, _OTHER, np.minimum(gray - self.threshold, -1e-3)))
        low_res = low_res.astype(np.float32)[None]  # (1, M, M)
        logits = self._upscale(low_res)  # (1, H, W)
        return MaskPrediction(masks=logits > 0, scores=np.ones(1, np.float32),
                              low_res_logits=low_res, logits=logits)

    def _upscale(self, low_res: np.ndarray) -> np.ndarray:
        """``(1, M, M)`` -> ``(1, H, W)`` float32 as SAM's ``postprocess_masks``."""
        assert self._original_size is not None
        h, w = self._original_size
        size = self._image_size
        input_h, input_w = longest_side_shape(h, w, size)
        x = torch.from_numpy(low_res)[None]  # (1, 1, M, M)
        x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False)
        x = x[..., :input_h, :input_w]
        x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False)
        return x[0].numpy()


class _StandInNet(nn.Module):
    """The stand-in's (parameterless) `net`: its input size, nothing to run."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size


def standin_model(image_size: int = 1024) -> LoadedModel:
    """The stand-in as a `LoadedModel` (an interactive model of an unregistered family)."""

    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise NotImplementedError("the stand-in model has no checkpoints")

    parts = FamilyParts(
        configs={}, build=unavailable, load=unavailable, read=unavailable,
        detect=lambda _checkpoint: False,
        interactive_predictor=lambda net, device, dtype: BrightComponentPredictor(net.image_size),
        stack_encoder=lambda net, device, dtype, model_id: BrightComponentEncoder(net.image_size))
    family = ModelFamily(name="stand-in", title="stand-in (bright component)",
                         roles=frozenset({Role.INTERACTIVE}), layout="none", checkpoints=(),
                         test_configs=(), load_parts=lambda: parts)
    return LoadedModel("stand-in", family, _StandInNet(int(image_size)), torch.device("cpu"),
                       torch.float32, "none", "stand-in")
