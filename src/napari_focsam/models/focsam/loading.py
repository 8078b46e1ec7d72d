"""Load FocSAM's released checkpoint (``iter_160000.pth``) without mmengine.

The release is an mmengine checkpoint, usually inside a zip archive: a dict with ``meta``,
``state_dict`` (``backbone.*``, ``neck.*``, ``decode_head.*``, ``refine_head.*`` tensors) and
possibly ``message_hub``, ``optimizer`` and ``param_schedulers``, where pickled mmengine
objects (``MessageHub``, ``HistoryBuffer``) and numpy values may appear. Only ``state_dict`` is
kept.

Safety: the file is read by `napari_focsam.models.checkpoint.load_torch_file` with
``mmengine`` as the only stubbed package (see :mod:`napari_focsam.models.safe_pickle`): every
global is listed from the pickle's opcodes before anything is unpickled, ``mmengine.*`` names
become inert stand-ins (mmengine is never imported), numpy arrays and scalars and what
``torch.load(weights_only=True)`` allows are accepted, anything else is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from ...families import FOCSAM, detect_family, expect_family
from ..checkpoint import (
    ZIP_MAGIC,
    CheckpointError,
    build_and_load,
    load_torch_file,
    open_zip,
    read_head,
    tensor_keys,
    torch_pickle_member,
)
from .config import FOCSAM_CONFIGS, FocSamConfig
from .keys import REFINER_PREFIX, SAM_PREFIXES
from .model import FocSamModel, build_focsam

logger = logging.getLogger(__name__)

__all__ = [
    "RELEASED_CHECKPOINT_NAME",
    "STUBBED_PACKAGES",
    "infer_focsam_config",
    "is_focsam_checkpoint",
    "load_focsam",
    "read_focsam_checkpoint",
]

#: File name of the released FocSAM checkpoint, preferred when an archive holds several.
RELEASED_CHECKPOINT_NAME = "iter_160000.pth"
#: Top-level packages whose pickled classes and functions become inert stand-ins.
STUBBED_PACKAGES: tuple[str, ...] = ("mmengine",)
#: Released configs :func:`infer_focsam_config` can recognise.
_RELEASED_CONFIGS = ("focsam_vit_h",)
_CHECKPOINT_SUFFIXES = (".pth", ".pt")
_EXTRACT_CHUNK = 16 << 20
_SPACE_MARGIN = 64 << 20
_MAX_LISTED = 8


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" (+{more} more)" if more > 0 else "")


def _load_torch_file(path: Path, head: bytes, source: str) -> Any:
    """A checked torch file loaded with mmengine objects as inert stand-ins."""
    return load_torch_file(path, stubbed_packages=STUBBED_PACKAGES, source=source, head=head)


def _is_focsam_state_dict(obj: object) -> bool:
    keys = tensor_keys(obj)
    return any(k.startswith("backbone.") for k in keys) and any(
        k.startswith(("decode_head.", REFINER_PREFIX)) for k in keys)


def is_focsam_checkpoint(obj: object) -> bool:
    """Whether a read checkpoint is FocSAM's (``{"state_dict": ...}`` with FocSAM keys)."""
    return isinstance(obj, Mapping) and _is_focsam_state_dict(obj.get("state_dict"))


def _state_dict_of(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a loaded FocSAM checkpoint (or the object itself if it is one)."""
    wrapped = is_focsam_checkpoint(obj)
    bare = (not wrapped and isinstance(obj, Mapping) and "state_dict" not in obj
            and _is_focsam_state_dict(obj))  # re-saved without mmengine's wrapper
    if not wrapped and not bare:
        if isinstance(obj, Mapping) and "state_dict" not in obj and detect_family(obj) is None:
            keys = [str(k) for k in obj]
            raise CheckpointError(
                f"{source} has no 'state_dict' entry (top-level keys: {_listing(keys) or 'none'}); "
                "expected a FocSAM mmengine checkpoint"
            )
        expect_family(obj, FOCSAM, source)  # raises, naming what the file is instead
    state_dict = obj if bare else obj["state_dict"]
    bad = [repr(k) for k, v in state_dict.items()
           if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(f"{source}: state_dict entries that are not tensors: {_listing(bad)}")
    dropped = [] if bare else sorted(str(k) for k in obj if k != "state_dict")
    logger.info("read %d tensors from %s%s", len(state_dict), source,
                f" (ignored: {', '.join(dropped)})" if dropped else "")
    return dict(state_dict)


def _member_choice(archive: zipfile.ZipFile, source: str) -> zipfile.ZipInfo:
    """The checkpoint inside a distribution zip: its only ``.pth``, else the released one."""
    infos = [
        info for info in archive.infolist()
        if not info.is_dir()
        and info.filename.lower().endswith(_CHECKPOINT_SUFFIXES)
        and not info.filename.startswith("__MACOSX/")
        and not PurePosixPath(info.filename).name.startswith("._")
    ]
    if len(infos) == 1:
        return infos[0]
    if not infos:
        names = [info.filename for info in archive.infolist()]
        raise CheckpointError(
            f"{source} is a zip archive without a .pth checkpoint inside "
            f"(it holds: {_listing(names) or 'nothing'})"
        )
    released = [i for i in infos if PurePosixPath(i.filename).name == RELEASED_CHECKPOINT_NAME]
    if len(released) == 1:
        return released[0]
    raise CheckpointError(
        f"{source} holds several checkpoints and none is the single {RELEASED_CHECKPOINT_NAME}: "
        f"{_listing([i.filename for i in infos])}; unzip it and pass the one to load"
    )


def _extract_dir(near: Path, size: int, source: str) -> Path:
    """A writable folder with room for ``size`` bytes: next to the archive, else the temp dir."""
    candidates = [near, Path(tempfile.gettempdir())]
    for folder in candidates:
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        if free >= size + _SPACE_MARGIN and os.access(folder, os.W_OK):
            return folder
    raise CheckpointError(
        f"no room to extract {source} ({size} bytes): not enough free space or not writable in "
        f"{' or '.join(str(c) for c in candidates)}; unzip it yourself and pass the .pth"
    )


@contextlib.contextmanager
def _extracted(archive: zipfile.ZipFile, info: zipfile.ZipInfo, near: Path,
               source: str) -> Iterator[Path]:
    """Extract one archive member into a temporary folder, removed afterwards."""
    folder = _extract_dir(near, info.file_size, source)
    with tempfile.TemporaryDirectory(prefix=".focsam-extract-", dir=folder,
                                     ignore_cleanup_errors=True) as tmp:
        target = Path(tmp) / PurePosixPath(info.filename).name
        try:
            with archive.open(info) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, _EXTRACT_CHUNK)
        except NotImplementedError as exc:
            raise CheckpointError(
                f"{source} uses a zip compression Python cannot read ({exc}; e.g. Deflate64 from "
                "Windows); unzip it with another tool and pass the .pth"
            ) from exc
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise CheckpointError(
                f"cannot extract {source} (truncated or corrupt archive?): {exc}") from exc
        logger.debug("extracted %s to %s", source, target)
        yield target


def _read_from_archive(path: Path) -> dict[str, torch.Tensor]:
    with open_zip(path, str(path)) as archive:
        info = _member_choice(archive, str(path))
        source = f"{path}:{info.filename}"
        with _extracted(archive, info, path.parent, source) as member:
            head = read_head(member, source)
            if head.startswith(ZIP_MAGIC):
                with open_zip(member, source) as inner:
                    if torch_pickle_member(inner) is None:
                        raise CheckpointError(
                            f"{source} is a zip archive, not a torch.save checkpoint")
            loaded = _load_torch_file(member, head, source)
            mapped = _state_dict_of(loaded, source)
            # The temporary file goes away: copy the (possibly memory-mapped) tensors, and drop
            # every reference to the mapping before the file is removed (needed on Windows).
            state_dict = {k: v.clone() for k, v in mapped.items()}
            del loaded, mapped
    return state_dict


def read_focsam_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the ``state_dict`` of a FocSAM checkpoint, safely and without mmengine.

    Parameters
    ----------
    path : str or Path
        An mmengine ``.pth`` (zip or legacy ``torch.save`` format; ``meta``, ``message_hub``,
        ``optimizer`` and other entries are ignored), a plain ``{"state_dict": ...}`` file, a
        bare FocSAM state_dict, or a ``.zip`` distribution archive holding one ``.pth``
        (with several, ``iter_160000.pth`` is taken).

    Returns
    -------
    dict of str to torch.Tensor
        FocSAM-layout keys (``backbone.``, ``neck.``, ``decode_head.``, ``refine_head.``) on
        the CPU. Tensors read straight from a zip-format ``.pth`` may be memory-mapped from it
        (copy-on-write).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    CheckpointError
        Empty, truncated or corrupt file; an HTML page saved instead of the file; a zip without
        a ``.pth``; a pickled global other than tensors, containers, numpy values and mmengine
        objects (refused before anything is unpickled); no ``state_dict``; a SAM 1 / SAM 2 or
        other non-FocSAM checkpoint.
    """
    path = Path(path)
    source = str(path)
    head = read_head(path, source)
    if head.startswith(ZIP_MAGIC):
        with open_zip(path, source) as archive:
            is_torch_file = torch_pickle_member(archive) is not None
        if not is_torch_file:
            return _read_from_archive(path)
    return _state_dict_of(_load_torch_file(path, head, source), source)


# --------------------------------------------------------------------------- building the model


def infer_focsam_config(state_dict: Mapping[str, torch.Tensor]) -> FocSamConfig | None:
    """Find the released FocSAM config whose image encoder width and depth match a state_dict.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        FocSAM-layout state_dict; only ``backbone.pos_embed`` (shape ``(1, H, W, C)``) and the
        ``backbone.blocks.<i>.`` key names are looked at.

    Returns
    -------
    FocSamConfig or None
        ``focsam_vit_h`` when it fits, None otherwise.
    """
    backbone = next(prefix for prefix, ours in SAM_PREFIXES.items() if ours == "image_encoder.")
    pos = state_dict.get(f"{backbone}pos_embed")
    if pos is None:
        return None
    width = pos.shape[-1]
    depth = 1 + max(
        (int(k.split(".")[2]) for k in state_dict
         if k.startswith(f"{backbone}blocks.") and k.split(".")[2].isdigit()),
        default=-1,
    )
    for name in _RELEASED_CONFIGS:
        cfg = FOCSAM_CONFIGS[name]
        if cfg.sam.encoder.embed_dim == width and cfg.sam.encoder.depth == depth:
            return cfg
    return None


def load_focsam(path: str | Path, config: FocSamConfig | None = None,
                device: str | torch.device = "cpu") -> FocSamModel:
    """Build FocSAM and load a released checkpoint (or its zip archive) into it.

    Parameters
    ----------
    path : str or Path
        See :func:`read_focsam_checkpoint`.
    config : FocSamConfig, optional
        Architecture; inferred from the file (``focsam_vit_h``) when omitted.
    device : str or torch.device
        Where the model goes.

    Returns
    -------
    FocSamModel
        In eval mode.

    Raises
    ------
    CheckpointError
        Unreadable or unsafe file, another model family, or keys/shapes that do not fit
        ``config`` (the message then also names the released config the file does fit, if any).
    """
    state_dict = read_focsam_checkpoint(path)
    inferred = infer_focsam_config(state_dict)
    model = build_and_load(
        state_dict, config, inferred, build=build_focsam,
        load=lambda m, sd, src: m.load_official_state_dict(sd, source=src), source=str(path),
        released=f"a FocSAM state_dict of no released size ({', '.join(_RELEASED_CONFIGS)})")
    return model.to(device).eval()
