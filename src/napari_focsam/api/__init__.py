"""Headless API: what the napari widgets and the ``napari-focsam`` command call.

- :mod:`.models` -- a registry id or config name -> a loaded model (weights fetched and
  verified, device and precision chosen),
- :mod:`.prompts_file` -- CSV / JSON prompts (points and boxes per object and frame),
- :mod:`.segmenter` -- `Segmenter`: one image or z / t stack, cached embeddings, objects drawn
  on frames and propagated through the stack into labels,
- :mod:`.io` -- lazy reading of image files, atomic label writing.
"""

from ..families import ModelChoiceError
from .io import InputError, open_image, write_labels_tiff
from .models import RANDOM_WEIGHTS, LoadedModel, load_model
from .prompts_file import ObjectPrompt, PromptsFileError, group_prompts, read_prompts
from .segmenter import Progress, PromptPlacementError, Segmenter

__all__ = [
    "RANDOM_WEIGHTS",
    "InputError",
    "LoadedModel",
    "ModelChoiceError",
    "ObjectPrompt",
    "Progress",
    "PromptPlacementError",
    "PromptsFileError",
    "Segmenter",
    "group_prompts",
    "load_model",
    "open_image",
    "read_prompts",
    "write_labels_tiff",
]
