"""Reading official checkpoints safely and checking them against our modules.

Every failure is a :class:`CheckpointError` whose message names the file, what was found and
what was expected: a truncated download, a file that is not a checkpoint, or a state_dict whose
keys or shapes do not fit the chosen config. Which family a checkpoint belongs to is told by
the family records (`napari_focsam.families.detect_family`).
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MissingFileError, UserError

logger = logging.getLogger(__name__)

_MAX_LISTED_KEYS = 8
#: torch.save writes a zip archive ("PK\x03\x04"); legacy files are pickles (protocol >= 2).
_TORCH_MAGICS = (b"PK\x03\x04", b"\x80")


class CheckpointError(UserError, ValueError):
    """A checkpoint file cannot be used for the requested model."""


class ConfigNotInferredError(CheckpointError):
    """No config was given and the file fits no known config of its family."""


def read_checkpoint(path: str | Path) -> Any:
    """Load a checkpoint with ``torch.load(weights_only=True)`` on the CPU.

    Parameters
    ----------
    path : str or Path
        The ``.pth`` / ``.pt`` file.

    Returns
    -------
    object
        Whatever the file holds (a state_dict, or a dict around one).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    CheckpointError
        Empty, truncated or corrupt file, not a PyTorch file, or a file holding pickled
        Python objects other than tensors and containers.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): an interrupted download?")
    with path.open("rb") as f:
        head = f.read(4)
    if not head.startswith(_TORCH_MAGICS):
        raise CheckpointError(
            f"{path} ({size} bytes) is not a PyTorch checkpoint: it starts with {head!r}, not a zip "
            "archive or a pickle (an error page saved instead of the file?)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise CheckpointError(
                f"{path} holds pickled Python objects besides tensors, which are not loaded for "
                "safety (a FocSAM checkpoint is read when a FocSAM model is chosen)."
            ) from exc
        raise CheckpointError(f"{path} ({size} bytes) is not a PyTorch checkpoint: {exc}") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} ({size} bytes) is not a readable PyTorch checkpoint (truncated or corrupt "
            f"download?): {exc}"
        ) from exc


def tensor_keys(obj: Any) -> list[str]:
    """The string keys of `obj` whose values are tensors (none if it is not a mapping)."""
    if isinstance(obj, Mapping):
        return [k for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)]
    return []


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return shown + (f" (+{more} more)" if more > 0 else "")


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                     source: str = "checkpoint") -> None:
    """Check that every key and shape of ``state_dict`` fits ``model`` exactly.

    Parameters
    ----------
    model : nn.Module
        Target module.
    state_dict : mapping of str to torch.Tensor
        Parameters and persistent buffers to load.
    source : str
        What to call the state_dict in the message (usually the file name).

    Raises
    ------
    CheckpointError
        Listing missing keys, unexpected keys and shape mismatches (key, file shape, model shape).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))


def check_values(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Refuse NaN / inf weights; warn about integer tensors (weights are floating point).

    Raises
    ------
    CheckpointError
        Naming the tensors that hold NaN or inf values.
    """
    bad, integer = [], []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        if value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                bad.append(key)
        elif value.dtype != torch.bool and value.numel() > 1:
            integer.append(f"{key} ({str(value.dtype).replace('torch.', '')})")
    if bad:
        raise CheckpointError(f"{source} holds NaN or infinite values in {len(bad)} tensors "
                              f"({_listing(bad)}): the weights are broken (a failed training run "
                              "or a damaged file?)")
    if integer:
        logger.warning("%s stores %d weight tensors as integers (%s); they are converted to "
                       "floating point, which is unusual for trained weights", source, len(integer),
                       _listing(integer))


def load_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                 source: str = "checkpoint") -> nn.Module:
    """:func:`check_state_dict`, then load strictly; returns ``model``."""
    check_state_dict(model, state_dict, source)
    model.load_state_dict(dict(state_dict), strict=True)
    return model


def build_and_load(
    state_dict: Mapping[str, torch.Tensor],
    config: Any,
    inferred: Any,
    *,
    build: Callable[[Any], nn.Module],
    load: Callable[[nn.Module, Mapping[str, torch.Tensor], str], object],
    source: str,
    released: str,
) -> nn.Module:
    """Build a model for `config` (or the `inferred` released one) and load `state_dict`.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        Weights in the layout `load` expects.
    config : object or None
        The caller's config; None means `inferred`.
    inferred : object or None
        The released config the weights fit (by shape), or None.
    build : callable
        ``config -> model``.
    load : callable
        ``(model, state_dict, source)``; raises `CheckpointError` on keys or shapes that do not fit.
    source : str
        The file, for messages.
    released : str
        What "released" means for this family, e.g. ``"a SAM 1 state_dict of no released size
        (ViT-B/L/H)"``, used when nothing fits and no config is given.

    Returns
    -------
    nn.Module
        The loaded model (not moved).

    Raises
    ------
    CheckpointError
        No config and none inferred, or weights that do not fit `config` (the message then also
        names the released config the file looks like, if any).
    """
    if config is None:
        if inferred is None:
            raise ConfigNotInferredError(f"{source} is {released}; pass its config")
        config = inferred
    check_values(state_dict, source)
    model = build(config)
    try:
        load(model, state_dict, source)
    except CheckpointError as exc:
        hint = f" The file looks like {inferred.name}." if inferred and inferred != config else ""
        raise CheckpointError(f"{exc} (config {config.name}).{hint}") from exc
    logger.info("loaded %s from %s", config.name, source)
    return model
