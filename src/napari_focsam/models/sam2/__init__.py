"""SAM 2 / 2.1 in plain PyTorch: Hiera image encoder with FPN neck, prompt encoder and mask
decoder, memory encoder, memory attention with 2D RoPE, object pointers."""

from .config import SAM2_CONFIGS, Sam2Config, released_sam2_config
from .loading import infer_sam2_config, is_sam2_checkpoint, load_sam2, sam2_state_dict
from .model import NO_OBJ_SCORE, Sam2FrameFeatures, Sam2HeadsOutput, Sam2Model, build_sam2

__all__ = [
    "NO_OBJ_SCORE",
    "SAM2_CONFIGS",
    "Sam2Config",
    "Sam2FrameFeatures",
    "Sam2HeadsOutput",
    "Sam2Model",
    "build_sam2",
    "infer_sam2_config",
    "is_sam2_checkpoint",
    "load_sam2",
    "released_sam2_config",
    "sam2_state_dict",
]
