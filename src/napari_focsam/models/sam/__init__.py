"""SAM 1 model (segment-anything 1.0 architecture) in plain PyTorch."""

from .config import SAM_CONFIGS, MaskDecoderConfig, SamConfig, ViTEncoderConfig
from .image_encoder import ImageEncoderViT
from .loading import infer_sam_config, is_sam_checkpoint, load_sam
from .mask_decoder import MaskDecoder, MaskDecoderOutput
from .model import SamModel, build_sam
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayTransformer

__all__ = [
    "ImageEncoderViT",
    "MaskDecoder",
    "MaskDecoderConfig",
    "MaskDecoderOutput",
    "PromptEncoder",
    "SAM_CONFIGS",
    "SamConfig",
    "SamModel",
    "TwoWayTransformer",
    "ViTEncoderConfig",
    "build_sam",
    "infer_sam_config",
    "is_sam_checkpoint",
    "load_sam",
]
