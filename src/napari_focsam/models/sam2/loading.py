"""Load official SAM 2 / 2.1 checkpoints (``{"model": state_dict}``) into `Sam2Model`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from ...families import SAM2, expect_family
from ..checkpoint import (
    CheckpointError,
    build_and_load,
    load_checked,
    read_checkpoint,
    tensor_keys,
)
from .config import SAM2_CONFIGS, Sam2Config
from .model import Sam2Model, build_sam2

__all__ = ["infer_sam2_config", "is_sam2_checkpoint", "load_sam2", "sam2_state_dict"]

logger = logging.getLogger(__name__)

#: Keys only SAM 2.1 checkpoints have.
SAM21_ONLY_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight")
#: Key prefix only SAM 2 state_dicts have (the Hiera trunk).
TRUNK_PREFIX = "image_encoder.trunk."


def is_sam2_checkpoint(obj: object) -> bool:
    """Whether a read checkpoint is SAM 2's (``{"model": state_dict}`` or a bare state_dict)."""
    if isinstance(obj, Mapping) and any(k.startswith(TRUNK_PREFIX)
                                        for k in tensor_keys(obj.get("model"))):
        return True
    return any(k.startswith(TRUNK_PREFIX) for k in tensor_keys(obj))


def sam2_state_dict(obj: object, source: str = "checkpoint") -> Mapping[str, torch.Tensor]:
    """The state_dict of a loaded SAM 2 checkpoint (``obj["model"]``, or a bare state_dict)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        return obj["model"]
    if isinstance(obj, Mapping) and any(str(k).startswith(TRUNK_PREFIX) for k in obj):
        return obj
    raise CheckpointError(f"{source} holds no SAM 2 state_dict (expected {{'model': ...}})")


def infer_sam2_config(state_dict: Mapping[str, torch.Tensor]) -> Sam2Config | None:
    """The released config (2.0 or 2.1; tiny/small/base_plus/large) a state_dict fits.

    Decided by the trunk width, the number of trunk blocks and the 2.1-only keys.
    """
    pos = state_dict.get("image_encoder.trunk.pos_embed")
    if pos is None:
        return None
    width = pos.shape[1]
    depth = 1 + max((int(k.split(".")[3]) for k in state_dict
                     if k.startswith("image_encoder.trunk.blocks.")), default=-1)
    version = "sam2.1" if all(k in state_dict for k in SAM21_ONLY_KEYS) else "sam2"
    for name, cfg in SAM2_CONFIGS.items():
        trunk = cfg.image_encoder.trunk
        if name.startswith(version + "_hiera_") and trunk.embed_dim == width \
                and sum(trunk.stages) == depth:
            return cfg
    return None


def load_sam2(path: str | Path, config: Sam2Config | None = None,
              device: str | torch.device = "cpu") -> Sam2Model:
    """Build SAM 2 and load an official ``sam2*_hiera_*.pt`` file into it.

    Parameters
    ----------
    path : str or Path
        Official checkpoint (``{"model": state_dict}``).
    config : Sam2Config, optional
        Architecture; inferred among the released 2.0 / 2.1 configs when omitted.
    device : str or torch.device
        Where the model goes.

    Returns
    -------
    Sam2Model
        In eval mode.

    Raises
    ------
    CheckpointError
        Unreadable file, another model family, or keys/shapes that do not fit the config (the
        message names the released config the file fits, if any).
    """
    obj = read_checkpoint(path)
    expect_family(obj, SAM2, path)
    state_dict = sam2_state_dict(obj, str(path))
    inferred = infer_sam2_config(state_dict)
    model = build_and_load(state_dict, config, inferred, build=build_sam2, load=load_checked,
                           source=str(path), released="a SAM 2 checkpoint of no released size")
    return model.to(device)
