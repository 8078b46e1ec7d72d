"""FocSAM (refocusing SAM): SAM plus the FocusRefiner, in plain PyTorch."""

from .config import FOCSAM_CONFIGS, FocSamConfig, FocusRefinerConfig
from .deform_conv import DeformLayer, ModulatedDeformConv3x3, modulated_deform_conv3x3
from .focus import box_grid_mask, box_mask, expand_bbox, focus_box, mask_bbox
from .keys import focsam_to_sam_state_dict, refiner_state_dict, sam_to_focsam_state_dict
from .loading import infer_focsam_config, is_focsam_checkpoint, load_focsam, read_focsam_checkpoint
from .model import FocSamModel, build_focsam
from .refiner import FocusRefiner, RefineBlock

__all__ = [
    "DeformLayer",
    "FOCSAM_CONFIGS",
    "FocSamConfig",
    "FocSamModel",
    "FocusRefiner",
    "FocusRefinerConfig",
    "ModulatedDeformConv3x3",
    "RefineBlock",
    "box_grid_mask",
    "box_mask",
    "build_focsam",
    "expand_bbox",
    "focsam_to_sam_state_dict",
    "focus_box",
    "infer_focsam_config",
    "is_focsam_checkpoint",
    "load_focsam",
    "mask_bbox",
    "modulated_deform_conv3x3",
    "read_focsam_checkpoint",
    "refiner_state_dict",
    "sam_to_focsam_state_dict",
]
