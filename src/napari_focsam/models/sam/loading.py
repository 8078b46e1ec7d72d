"""Load SAM checkpoints (ViT or MobileSAM TinyViT) into :class:`SamModel`.

Accepted layouts, all with the official segment-anything / MobileSAM keys
(``image_encoder.``, ``prompt_encoder.``, ``mask_decoder.``):

* a bare state_dict (Meta's ``sam_vit_*.pth``, MobileSAM's ``mobile_sam.pt``, micro-sam's
  exported models);
* torch_em's training checkpoint (micro-sam's fine-tuning): a dict whose ``model_state`` holds
  the state_dict with a ``sam.`` key prefix, next to optimizer / scheduler state and pickled
  torch_em or micro-sam objects, which are read as inert stand-ins and dropped (see
  `napari_focsam.models.checkpoint.read_checkpoint`);
* either of them with the wrapper prefixes of DataParallel (``module.``) or ``torch.compile``
  (``_orig_mod.``).

The config is told from the tensor shapes (:mod:`.infer_config`) unless given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ...families import SAM, expect_family
from ..checkpoint import (
    CheckpointError,
    ConfigNotInferredError,
    build_and_load,
    load_checked,
    read_checkpoint,
)
from .config import SamConfig
from .infer_config import derive_sam_config
from .model import SamModel, build_sam
from .tiny_vit import attention_bias_index

logger = logging.getLogger(__name__)

__all__ = ["MODEL_STATE_KEY", "SAM_PARTS", "is_sam_checkpoint", "load_sam", "sam_state_dict"]

#: Top-level modules of every SAM state_dict.
SAM_PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
#: Image-encoder containers: ViT blocks or TinyViT stages.
_ENCODER_BODIES = ("image_encoder.blocks.", "image_encoder.layers.")
#: Where torch_em's training checkpoints keep the model's state_dict.
MODEL_STATE_KEY = "model_state"
#: Key prefixes of training wrappers: micro-sam's trainable SAM, DataParallel, torch.compile.
_WRAPPER_PREFIXES = ("sam.", "module.", "_orig_mod.")
#: Non-persistent buffer of TinyViT attention that some checkpoints may carry.
_BIAS_INDEX_SUFFIX = ".attention_bias_idxs"


def _unwrap_key(key: str) -> str:
    while not key.startswith(SAM_PARTS):
        prefix = next((p for p in _WRAPPER_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            return key
        key = key[len(prefix):]
    return key


def _candidate(obj: object) -> tuple[Mapping[Any, Any] | None, str]:
    """The mapping that should hold SAM's tensors, and where it was found."""
    if isinstance(obj, Mapping) and isinstance(obj.get(MODEL_STATE_KEY), Mapping):
        return obj[MODEL_STATE_KEY], f"its '{MODEL_STATE_KEY}' (torch_em training checkpoint)"
    if isinstance(obj, Mapping):
        return obj, "it"
    return None, "it"


def _sam_keys(obj: object) -> list[str]:
    mapping, _ = _candidate(obj)
    if mapping is None:
        return []
    return [_unwrap_key(k) for k, v in mapping.items()
            if isinstance(k, str) and isinstance(v, torch.Tensor)]


def is_sam_checkpoint(obj: object) -> bool:
    """Whether a read checkpoint holds a SAM state_dict (bare, prefixed or torch_em's).

    Every part must be present: an image encoder (ViT blocks or TinyViT stages), a prompt
    encoder and a mask decoder.
    """
    keys = _sam_keys(obj)
    return (any(k.startswith(_ENCODER_BODIES) for k in keys)
            and all(any(k.startswith(p) for k in keys) for p in SAM_PARTS[1:]))


def sam_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The SAM state_dict of a read checkpoint, in the official key layout.

    Parameters
    ----------
    obj : object
        What `read_checkpoint` returned: a state_dict, or torch_em's ``{"model_state": ...}``.
    source : str
        The file, for messages.

    Returns
    -------
    dict of str to torch.Tensor
        Keys without wrapper prefixes (``sam.``, ``module.``, ``_orig_mod.``); TinyViT's
        ``attention_bias_idxs`` buffers, if present, checked and dropped.

    Raises
    ------
    CheckpointError
        Non-tensor entries in the state_dict, keys that collide once unwrapped, or bias index
        buffers that differ from TinyViT's offset numbering.
    """
    mapping, where = _candidate(obj)
    if mapping is None:
        raise CheckpointError(f"{source} holds no state_dict")
    bad = [repr(k) for k, v in mapping.items()
           if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(f"{source}: entries of {where} that are not tensors: "
                              f"{', '.join(bad[:8])}")
    state_dict: dict[str, torch.Tensor] = {}
    for key, value in mapping.items():
        name = _unwrap_key(key)
        if name in state_dict:
            raise CheckpointError(f"{source}: {key} and another key both give {name}")
        state_dict[name] = value
    _drop_bias_indexes(state_dict, source)
    if mapping is not obj:
        ignored = sorted(str(k) for k in obj if k != MODEL_STATE_KEY)  # type: ignore[union-attr]
        logger.info("%s: read %d tensors from %s; ignored %s", source, len(state_dict), where,
                    ", ".join(ignored) or "nothing")
    return state_dict


def _drop_bias_indexes(state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Remove TinyViT ``attention_bias_idxs`` entries after checking them (the model computes
    them; official checkpoints do not store them)."""
    for key in [k for k in state_dict if k.endswith(_BIAS_INDEX_SUFFIX)]:
        value = state_dict.pop(key)
        window = math.isqrt(value.shape[-1]) if value.ndim == 2 else 0
        if value.ndim != 2 or not torch.equal(value.long(), attention_bias_index(window)):
            raise CheckpointError(f"{source}: {key} {tuple(value.shape)} is not TinyViT's "
                                  "attention-bias index of a square window")


def load_sam(path: str | Path, config: SamConfig | None = None,
             device: str | torch.device = "cpu") -> SamModel:
    """Build a SAM model and load a checkpoint into it, every key and shape checked.

    Parameters
    ----------
    path : str or Path
        Official ``sam_vit_*.pth`` / ``mobile_sam.pt``, a fine-tuned state_dict, or a
        torch_em / micro-sam training checkpoint (see the module docstring).
    config : SamConfig, optional
        Architecture; told from the tensor shapes when omitted (a released config such as
        ``sam_vit_b`` or ``sam_vit_t`` when it matches).
    device : str or torch.device
        Where the model goes.

    Returns
    -------
    SamModel
        In eval mode.

    Raises
    ------
    CheckpointError
        Unreadable or unsafe file, another model family, or keys/shapes that do not fit
        ``config`` (the message then also names the config the file does fit).
    ConfigNotInferredError
        No config given and the shapes are incomplete or contradictory.
    """
    source = str(path)
    obj = read_checkpoint(path)
    expect_family(obj, SAM, path)
    state_dict = sam_state_dict(obj, source)
    try:
        inferred: SamConfig | None = derive_sam_config(state_dict)
    except ConfigNotInferredError as exc:
        if config is None:
            raise ConfigNotInferredError(
                f"{source}: the SAM config cannot be told from the tensor shapes ({exc}); pass "
                "its config") from exc
        inferred = None
    model = build_and_load(state_dict, config, inferred, build=build_sam, load=load_checked,
                           source=source, released="a SAM state_dict")
    return model.to(device)
