"""Inference engine: numpy/torch only, never napari or Qt.

- :mod:`.image` -- any 2D microscopy image to the ``(H, W, 3)`` uint8 the encoders eat,
- :mod:`.transforms` -- longest-side resizing and napari (row, col) to model (x, y) mapping,
- :mod:`.prompts` -- validation of points, labels, boxes and mask inputs,
- :mod:`.precision` -- device choice and encoder precision (bf16 where the CPU has it),
- :mod:`.interactive` -- the interactive predictor protocol and its predictions,
- :mod:`.sam_predictor` -- the interactive SAM predictor,
- :mod:`.focsam_predictor` -- the FocSAM predictor (SAM's API plus per-object refinement),
- :mod:`.sam2_image_predictor` -- SAM 2 in image mode (its interactive protocol on one frame),
- :mod:`.session` -- click sessions: one object's clicks, undo and edits,
- :mod:`.automatic` -- automatic mask generation (a grid of clicks, filters, crops, NMS), with
  :mod:`.nms` (box non-maximum suppression) and :mod:`.regions` (small holes and islands),
- :mod:`.tiling` -- tiles of frames larger than the model input: settings and geometry,
- :mod:`.frame_features`, :mod:`.propagation`, :mod:`.propagation_state`, :mod:`.holes` --
  SAM 2 propagation through a stack.
"""

from .automatic import AutoMask, AutoMaskParams, AutoMaskParamsError, AutomaticMaskGenerator
from .focsam_predictor import FocSamPredictor
from .image import ImageError, to_rgb_uint8
from .interactive import BatchPrediction, BatchPredictor, InteractivePredictor, MaskPrediction
from .precision import (
    DeviceError,
    DtypeError,
    autocast_context,
    fp32_context,
    resolve_device,
    resolve_encoder_dtype,
)
from .prompts import PromptError, Prompts, validate_prompts
from .sam2_image_predictor import Sam2ImagePredictor
from .sam_predictor import PredictorStateError, SamPredictor
from .session import Click, ClickSession, SessionStep, StaleSessionError
from .tiling import TileGrid, Tiling, TilingError
from .transforms import (
    box_rc_to_model_xyxy,
    longest_side_shape,
    model_xy_to_rc,
    rc_to_model_xy,
    resize_longest_side,
)

__all__ = [
    "AutoMask",
    "AutoMaskParams",
    "AutoMaskParamsError",
    "AutomaticMaskGenerator",
    "BatchPrediction",
    "BatchPredictor",
    "Click",
    "ClickSession",
    "DeviceError",
    "DtypeError",
    "FocSamPredictor",
    "ImageError",
    "InteractivePredictor",
    "MaskPrediction",
    "PredictorStateError",
    "PromptError",
    "Prompts",
    "Sam2ImagePredictor",
    "SamPredictor",
    "SessionStep",
    "StaleSessionError",
    "TileGrid",
    "Tiling",
    "TilingError",
    "autocast_context",
    "box_rc_to_model_xyxy",
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
