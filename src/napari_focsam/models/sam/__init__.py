"""SAM 1 model (segment-anything 1.0 architecture, and MobileSAM's TinyViT) in plain PyTorch."""

from .config import SAM_CONFIGS, MaskDecoderConfig, SamConfig, TinyViTConfig, ViTEncoderConfig
from .image_encoder import ImageEncoderViT
from .infer_config import derive_sam_config, infer_sam_config, known_config
from .loading import is_sam_checkpoint, load_sam, sam_state_dict
from .mask_decoder import MaskDecoder, MaskDecoderOutput
from .model import SamModel, build_image_encoder, build_sam
from .prompt_encoder import PromptEncoder
from .tiny_vit import ImageEncoderTinyViT
from .transformer import TwoWayTransformer

__all__ = [
    "ImageEncoderTinyViT",
    "ImageEncoderViT",
    "MaskDecoder",
    "MaskDecoderConfig",
    "MaskDecoderOutput",
    "PromptEncoder",
    "SAM_CONFIGS",
    "SamConfig",
    "SamModel",
    "TinyViTConfig",
    "TwoWayTransformer",
    "ViTEncoderConfig",
    "build_image_encoder",
    "build_sam",
    "derive_sam_config",
    "infer_sam_config",
    "is_sam_checkpoint",
    "known_config",
    "load_sam",
    "sam_state_dict",
]
