"""Inference engine: numpy/torch only, never napari or Qt.

- :mod:`.image` -- any 2D microscopy image to the ``(H, W, 3)`` uint8 the encoders eat,
- :mod:`.transforms` -- longest-side resizing and napari (row, col) to model (x, y) mapping,
- :mod:`.prompts` -- validation of points, labels, boxes and mask inputs,
- :mod:`.precision` -- device choice and encoder precision (bf16 where the CPU has it),
- :mod:`.sam_predictor` -- the interactive SAM predictor,
- :mod:`.focsam_predictor` -- the FocSAM predictor (SAM's API plus per-object refinement),
- :mod:`.session` -- click sessions: one object's clicks, undo and edits.
"""

from .focsam_predictor import FocSamPredictor
from .image import ImageError, to_rgb_uint8
from .precision import (
    DeviceError,
    DtypeError,
    autocast_context,
    cpu_has_native_bf16,
    fp32_context,
    resolve_device,
    resolve_encoder_dtype,
)
from .prompts import PromptError, Prompts, validate_prompts
from .sam_predictor import PredictorStateError, SamPrediction, SamPredictor
from .session import Click, ClickSession, SessionStep, StaleSessionError
from .transforms import (
    box_rc_to_model_xyxy,
    longest_side_shape,
    model_xy_to_rc,
    rc_to_model_xy,
    resize_longest_side,
)

__all__ = [
    "Click",
    "ClickSession",
    "FocSamPredictor",
    "SessionStep",
    "StaleSessionError",
    "DeviceError",
    "DtypeError",
    "ImageError",
    "PredictorStateError",
    "PromptError",
    "Prompts",
    "SamPrediction",
    "SamPredictor",
    "autocast_context",
    "box_rc_to_model_xyxy",
    "cpu_has_native_bf16",
    "fp32_context",
    "longest_side_shape",
    "model_xy_to_rc",
    "rc_to_model_xy",
    "resize_longest_side",
    "resolve_device",
    "resolve_encoder_dtype",
    "to_rgb_uint8",
    "validate_prompts",
]
