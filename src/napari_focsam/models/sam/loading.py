"""Load official SAM 1 checkpoints (bare state_dicts) into :class:`SamModel`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from ...families import SAM, expect_family
from ..checkpoint import build_and_load, load_checked, read_checkpoint, tensor_keys
from .config import SAM_CONFIGS, SamConfig
from .model import SamModel, build_sam

logger = logging.getLogger(__name__)

#: Key prefixes every SAM (segment-anything) state_dict has.
SAM_KEY_PREFIXES = ("image_encoder.blocks.", "prompt_encoder.", "mask_decoder.")


def is_sam_checkpoint(obj: object) -> bool:
    """Whether a read checkpoint is a bare SAM state_dict (every part's keys present)."""
    keys = tensor_keys(obj)
    return all(any(k.startswith(p) for k in keys) for p in SAM_KEY_PREFIXES)


def infer_sam_config(state_dict: Mapping[str, torch.Tensor]) -> SamConfig | None:
    """Find the released config whose encoder width and depth match a state_dict.

    Parameters
    ----------
    state_dict : mapping
        SAM 1 state_dict.

    Returns
    -------
    SamConfig or None
        The matching released config, or None when no released config fits.
    """
    pos = state_dict.get("image_encoder.pos_embed")
    if pos is None:
        return None
    width = pos.shape[-1]
    depth = 1 + max(
        (int(k.split(".")[2]) for k in state_dict if k.startswith("image_encoder.blocks.")),
        default=-1,
    )
    for name in ("sam_vit_b", "sam_vit_l", "sam_vit_h"):
        cfg = SAM_CONFIGS[name]
        if cfg.encoder.embed_dim == width and cfg.encoder.depth == depth:
            return cfg
    return None


def load_sam(path: str | Path, config: SamConfig | None = None,
             device: str | torch.device = "cpu") -> SamModel:
    """Build a SAM model and load an official ``sam_vit_*.pth`` file into it.

    Parameters
    ----------
    path : str or Path
        Official SAM 1 checkpoint (bare state_dict).
    config : SamConfig, optional
        Architecture; inferred from the file among ViT-B/L/H when omitted.
    device : str or torch.device
        Where the model goes.

    Returns
    -------
    SamModel
        In eval mode.

    Raises
    ------
    CheckpointError
        Unreadable file, another model family, or keys/shapes that do not fit ``config``
        (the message then also names the released config the file does fit, if any).
    """
    obj = read_checkpoint(path)
    expect_family(obj, SAM, path)
    state_dict = obj
    inferred = infer_sam_config(state_dict)
    model = build_and_load(state_dict, config, inferred, build=build_sam, load=load_checked,
                           source=str(path),
                           released="a SAM 1 state_dict of no released size (ViT-B/L/H)")
    return model.to(device)
