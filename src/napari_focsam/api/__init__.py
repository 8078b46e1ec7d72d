"""Headless API: what the napari widgets and the ``napari-focsam`` command call.

- :mod:`.models` -- a registry id or config name -> a loaded model (weights fetched and
  verified, device and precision chosen),
- :mod:`.prompts_file` -- CSV / JSON prompts (points and boxes per object and frame),
- :mod:`.segmenter` -- `Segmenter`: one image or z / t stack, cached embeddings, objects drawn
  on frames and propagated through the stack into labels,
- :mod:`.drawing` -- `ObjectDrawer`: one object on one frame, on the whole frame or on the tile
  holding its prompts (`Tiling`: tiles for frames larger than the model input),
- :mod:`.automatic` -- "segment everything": new objects from a grid of clicks on frames,
- :mod:`.io` -- lazy reading of image files, atomic label writing.
"""

from ..engine.tiling import Tiling, TilingError
from ..families import ModelChoiceError
from .automatic import automatic_discover, default_params, segment_everything, segment_everything_stack
from .drawing import Location, ObjectDrawer
from .io import (
    ImageInfo,
    InputError,
    OutputError,
    check_output_path,
    open_image,
    read_image_info,
    write_labels_tiff,
)
from .models import RANDOM_WEIGHTS, LoadedModel, load_model
from .prompts_file import MAX_OBJECT_ID, ObjectPrompt, PromptsFileError, group_prompts, read_prompts
from .segmenter import Progress, PromptPlacementError, Segmenter

__all__ = [
    "MAX_OBJECT_ID",
    "RANDOM_WEIGHTS",
    "ImageInfo",
    "InputError",
    "LoadedModel",
    "Location",
    "ModelChoiceError",
    "ObjectDrawer",
    "ObjectPrompt",
    "OutputError",
    "Progress",
    "PromptPlacementError",
    "PromptsFileError",
    "Segmenter",
    "Tiling",
    "TilingError",
    "automatic_discover",
    "check_output_path",
    "default_params",
    "group_prompts",
    "load_model",
    "open_image",
    "read_image_info",
    "read_prompts",
    "segment_everything",
    "segment_everything_stack",
    "write_labels_tiff",
]
