"""Reading checkpoints safely and checking them against our modules.

Every failure is a :class:`CheckpointError` whose message names the file, what was found and
what was expected: a truncated download, an HTML page saved instead of the file, a pickled
object that is not allowed, or a state_dict whose keys or shapes do not fit the chosen config.
Which family a checkpoint belongs to is told by the family records
(`napari_focsam.families.detect_family`).

Reading follows the policy of :mod:`napari_focsam.models.safe_pickle`: globals are listed
from the pickle before anything is unpickled, objects of named training frameworks become
inert stand-ins, anything else is refused, and ``torch.load(weights_only=True)`` does the
loading.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MissingFileError, UserError
from .safe_pickle import InertStub, pickle_globals, resolve_globals

logger = logging.getLogger(__name__)

__all__ = [
    "TRAINING_PACKAGES",
    "ZIP_MAGIC",
    "CheckpointError",
    "ConfigNotInferredError",
    "build_and_load",
    "check_state_dict",
    "check_values",
    "load_checked",
    "load_torch_file",
    "open_zip",
    "read_checkpoint",
    "read_head",
    "tensor_keys",
    "torch_pickle_member",
]

_MAX_LISTED_KEYS = 8
#: torch.save writes a zip archive; legacy files (and plain pickles) start with PROTO 0x80.
ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"
_HTML_MARKERS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml")
#: A legacy (non-zip) torch file is a magic number, a protocol version and sys_info, each
#: pickled, then the pickled object; the storages' raw bytes follow.
_LEGACY_PICKLES = 4
#: Training frameworks whose pickled objects :func:`read_checkpoint` reads as inert stand-ins
#: (micro-sam's checkpoints are torch_em training checkpoints).
TRAINING_PACKAGES: tuple[str, ...] = ("torch_em", "micro_sam")


class CheckpointError(UserError, ValueError):
    """A checkpoint file cannot be used for the requested model."""


class ConfigNotInferredError(CheckpointError):
    """No config was given and none can be told from the file's tensor shapes."""


# --------------------------------------------------------------------------- reading files


def read_head(path: Path, source: str) -> bytes:
    """First 512 bytes of `path` after checking it is a non-empty torch file or zip archive.

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointError
        Empty file, an HTML/XML page (a download that saved an error or confirmation page), or
        anything else that is neither a zip archive nor a pickle.
    """
    if not path.is_file():
        raise MissingFileError(f"checkpoint file not found: {source}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{source} is empty (0 bytes): an interrupted download?")
    with path.open("rb") as f:
        head = f.read(512)
    if head.startswith((ZIP_MAGIC, _PICKLE_MAGIC)):
        return head
    lowered = head.lstrip().lower()
    if lowered.startswith(b"<") or any(marker in lowered for marker in _HTML_MARKERS):
        raise CheckpointError(
            f"{source} ({size} bytes) is an HTML/XML page, not a checkpoint: the download saved an "
            "error, login or confirmation page (Google Drive shows one for large files) instead "
            "of the file"
        )
    raise CheckpointError(
        f"{source} ({size} bytes) is not a PyTorch checkpoint or zip archive: it starts with "
        f"{head[:16]!r}"
    )


def open_zip(path: Path, source: str) -> zipfile.ZipFile:
    """Open a zip archive; a `CheckpointError` names a truncated or corrupt one."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"{source} ({path.stat().st_size} bytes) is not a readable zip archive (truncated or "
            f"corrupt download?): {exc}"
        ) from exc


def torch_pickle_member(archive: zipfile.ZipFile) -> str | None:
    """Name of the ``<folder>/data.pkl`` record that makes a zip a ``torch.save`` file."""
    for name in archive.namelist():
        parts = name.split("/")
        if len(parts) == 2 and parts[1] == "data.pkl":
            return name
    return None


def _scan_globals(path: Path, is_zip: bool, source: str) -> tuple[set[str], Exception | None]:
    """Globals referenced by a torch file's pickles, and the parse error that stopped the scan."""
    found: set[str] = set()
    try:
        if is_zip:
            with open_zip(path, source) as archive:
                member = torch_pickle_member(archive)
                if member is None:
                    raise CheckpointError(f"{source} is a zip archive but not a torch.save file")
                with archive.open(member) as stream:
                    pickle_globals(stream, found)
        else:
            with path.open("rb") as stream:
                for _ in range(_LEGACY_PICKLES):
                    pickle_globals(stream, found)
    except CheckpointError:
        raise
    except Exception as exc:  # a parser over untrusted bytes: any failure means a bad file
        return found, exc
    return found, None


def load_torch_file(path: Path, *, stubbed_packages: tuple[str, ...], source: str | None = None,
                    head: bytes | None = None) -> Any:
    """``torch.load(weights_only=True)`` of a torch file, objects of `stubbed_packages` inert.

    Parameters
    ----------
    path : Path
        A ``torch.save`` file (zip or legacy format).
    stubbed_packages : tuple of str
        Top-level packages (e.g. ``("mmengine",)``) whose pickled classes and functions become
        `napari_focsam.models.safe_pickle.InertStub` subclasses; none of them is imported.
    source : str, optional
        What to call the file in messages (default: `path`).
    head : bytes, optional
        The file's first bytes from :func:`read_head` (read here when omitted).

    Returns
    -------
    object
        The unpickled content on the CPU. Tensors of a zip-format file are memory-mapped from
        it (copy-on-write), so entries that are never used (e.g. optimizer state) are not read.

    Raises
    ------
    CheckpointError
        Unreadable, truncated or corrupt file, or a pickled global that is neither allowed by
        ``torch.load(weights_only=True)``, a numpy array/scalar/dtype name, nor under
        `stubbed_packages` (refused before anything is unpickled).
    """
    source = str(path) if source is None else source
    head = read_head(path, source) if head is None else head
    is_zip = head.startswith(ZIP_MAGIC)
    found, scan_error = _scan_globals(path, is_zip, source)
    extra, forbidden = resolve_globals(found, stubbed_packages)
    if forbidden:
        stubbed = ", ".join(stubbed_packages)
        raise CheckpointError(
            f"{source} refers to pickled Python objects that are not allowed: "
            f"{_listing(forbidden)}. Only tensors, containers, numpy arrays/scalars"
            + (f" and {stubbed} objects (read as inert stand-ins)" if stubbed else "")
            + " are accepted; the file was not loaded and nothing in it was executed."
        )
    stubs = [name for obj, name in extra if isinstance(obj, type) and issubclass(obj, InertStub)]
    if stubs:
        logger.debug("%s: reading %s as inert stand-ins", source, _listing(stubs))
    if scan_error is not None:
        raise CheckpointError(
            f"{source} ({path.stat().st_size} bytes) is not a readable PyTorch checkpoint "
            f"(truncated or corrupt download?): {scan_error}"
        ) from scan_error
    try:
        with torch.serialization.safe_globals(extra):
            if is_zip:
                try:
                    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except (RuntimeError, OSError) as exc:
                    logger.debug("mmap load of %s failed (%s); reading it whole", source, exc)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # torch wraps the reason in boilerplate about weights_only defaults: keep the reason.
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)",
                           text, re.S)
        reason = " ".join((detail.group(1) if detail else text).split())
        raise CheckpointError(
            f"{source} was refused by torch's weights-only unpickler (nothing in it was executed; "
            f"a truncated or corrupt file can also cause this): {reason}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{source} ({path.stat().st_size} bytes) is not a readable PyTorch checkpoint "
            f"(truncated or corrupt download?): {exc}"
        ) from exc


def read_checkpoint(path: str | Path) -> Any:
    """Read a checkpoint file safely on the CPU, without building a model.

    Parameters
    ----------
    path : str or Path
        The ``.pth`` / ``.pt`` file (zip or legacy ``torch.save`` format).

    Returns
    -------
    object
        Whatever the file holds (a state_dict, or a dict around one). Objects of
        :data:`TRAINING_PACKAGES` (torch_em / micro-sam training checkpoints) come back as
        inert stand-ins; zip-format tensors are memory-mapped (see :func:`load_torch_file`).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    CheckpointError
        Empty, truncated or corrupt file, not a PyTorch file, or a file holding pickled
        Python objects other than tensors, containers, numpy values and training-framework
        objects (refused before anything is unpickled).
    """
    path = Path(path)
    return load_torch_file(path, stubbed_packages=TRAINING_PACKAGES)


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
