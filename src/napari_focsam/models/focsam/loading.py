"""Load FocSAM's released checkpoint (``iter_160000.pth``) without mmengine.

The release is an mmengine checkpoint, usually inside a zip archive: a dict with ``meta``,
``state_dict`` (``backbone.*``, ``neck.*``, ``decode_head.*``, ``refine_head.*`` tensors) and
possibly ``message_hub``, ``optimizer`` and ``param_schedulers``, where pickled mmengine
objects (``MessageHub``, ``HistoryBuffer``) and numpy values may appear. Only ``state_dict`` is
kept.

Safety: before anything is unpickled, every global the pickle refers to is listed by reading
its opcodes (nothing is imported or called). The file is refused unless each one is

* allowed by ``torch.load(weights_only=True)`` by default (tensor rebuilding, ``OrderedDict``,
  torch dtypes and the like),
* one of the numpy names needed for arrays, scalars and dtypes (:data:`NUMPY_GLOBALS`), or
* a name under ``mmengine.``: it is bound to an inert stand-in class
  (:class:`MmengineStub`) that only records the pickled arguments and state; mmengine is
  never imported.

Then the file is read with ``torch.load(weights_only=True)`` with just those names
allowlisted, so torch's restricted unpickler checks every global again while loading.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import pickletools
import re
import shutil
import tempfile
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from ...errors import MissingFileError
from ...families import FOCSAM, detect_family, expect_family
from ..checkpoint import CheckpointError, build_and_load, tensor_keys
from .config import FOCSAM_CONFIGS, FocSamConfig
from .keys import REFINER_PREFIX, SAM_PREFIXES
from .model import FocSamModel, build_focsam

logger = logging.getLogger(__name__)

__all__ = [
    "NUMPY_GLOBALS",
    "RELEASED_CHECKPOINT_NAME",
    "STUBBED_PACKAGES",
    "MmengineStub",
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
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"
_HTML_MARKERS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml")
#: A legacy (non-zip) torch file is a magic number, a protocol version and sys_info, each
#: pickled, then the pickled object; the storages' raw bytes follow.
_LEGACY_PICKLES = 4
_EXTRACT_CHUNK = 16 << 20
_SPACE_MARGIN = 64 << 20
_MAX_LISTED = 8
_UNRESOLVED_GLOBAL = "<STACK_GLOBAL not resolvable statically>"


def _numpy_globals() -> dict[str, Any]:
    try:
        from numpy._core import multiarray  # numpy >= 2 (and 1.26's forward shim)
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray
    reconstruct, scalar = multiarray._reconstruct, multiarray.scalar
    return {
        "numpy.ndarray": np.ndarray,
        "numpy.dtype": np.dtype,
        # numpy 1.x writes numpy.core.*, numpy 2 numpy._core.*; both name the same functions.
        "numpy.core.multiarray._reconstruct": reconstruct,
        "numpy._core.multiarray._reconstruct": reconstruct,
        "numpy.core.multiarray.scalar": scalar,
        "numpy._core.multiarray.scalar": scalar,
    }


def _numpy_dtype_classes() -> dict[str, type]:
    # numpy >= 1.25 makes each dtype an instance of a numpy.dtypes class, which torch must be
    # allowed to BUILD (set the pickled dtype state on); older numpy has no such module.
    module = getattr(np, "dtypes", None)
    return {
        f"numpy.dtypes.{name}": cls for name, cls in vars(module or object).items()
        if isinstance(cls, type) and issubclass(cls, np.dtype) and cls is not np.dtype
    }


#: Numpy globals allowed in a checkpoint (arrays, scalars, dtypes), by pickled name.
NUMPY_GLOBALS: dict[str, Any] = _numpy_globals()
#: Classes of numpy dtype instances, allowed (by class, not as globals) when numpy is present.
_NUMPY_DTYPE_CLASSES: dict[str, type] = _numpy_dtype_classes()


class MmengineStub:
    """Inert stand-in for a pickled mmengine object (or the result of a pickled mmengine call).

    Subclasses named like the original (``__module__``, ``__qualname__``) are made per
    checkpoint; they accept any constructor arguments and state and keep them as plain data,
    running no mmengine code.

    Attributes
    ----------
    pickled_args : tuple
        Arguments given to the class when unpickling.
    pickled_state : object
        State given to ``__setstate__`` (usually the original ``__dict__``), or None.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> MmengineStub:
        obj = super().__new__(cls)
        obj.__dict__.update(pickled_args=args, pickled_state=None)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["pickled_state"] = state

    def __repr__(self) -> str:
        return f"<inert stand-in for {type(self).__module__}.{type(self).__qualname__}>"


def _stub_class(full_name: str) -> type[MmengineStub]:
    module, _, name = full_name.rpartition(".")
    return type(name, (MmengineStub,), {"__module__": module, "__qualname__": name,
                                        "__doc__": f"Inert stand-in for {full_name}."})


def _is_stubbed(name: str) -> bool:
    return any(name.startswith(package + ".") for package in STUBBED_PACKAGES)


def _torch_default_globals() -> set[str] | None:
    """Names ``torch.load(weights_only=True)`` allows by default, or None if torch hides them."""
    try:
        from torch import _weights_only_unpickler

        return set(_weights_only_unpickler._get_allowed_globals())
    except (ImportError, AttributeError):  # private API moved: torch's own check still applies
        logger.warning("cannot list torch's weights_only allowlist; relying on torch.load's check")
        return None


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" (+{more} more)" if more > 0 else "")


# --------------------------------------------------------------------------- reading the file


def _read_head(path: Path, source: str) -> bytes:
    """First bytes of ``path`` after checking it is a non-empty torch file or zip archive."""
    if not path.is_file():
        raise MissingFileError(f"checkpoint file not found: {source}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{source} is empty (0 bytes): an interrupted download?")
    with path.open("rb") as f:
        head = f.read(512)
    if head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
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


def _open_zip(path: Path, source: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(
            f"{source} ({path.stat().st_size} bytes) is not a readable zip archive (truncated or "
            f"corrupt download?): {exc}"
        ) from exc


def _torch_pickle_member(archive: zipfile.ZipFile) -> str | None:
    """Name of the ``<folder>/data.pkl`` record that makes a zip a ``torch.save`` file."""
    for name in archive.namelist():
        parts = name.split("/")
        if len(parts) == 2 and parts[1] == "data.pkl":
            return name
    return None


def _global_name(module: str, name: str) -> str:
    # Same Python 2 name fixes as torch's weights_only unpickler.
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _pickle_globals(stream: Any, found: set[str]) -> None:
    """Add to ``found`` every global referenced by the next pickle in ``stream``.

    Reads opcodes up to the pickle's STOP; nothing is imported or called.
    """
    recent: list[str | None] = []  # strings pushed by the latest opcodes (None: anything else)
    memo: dict[int, str | None] = {}
    for op, arg, _ in pickletools.genops(stream):
        kind = op.name
        if kind == "GLOBAL":
            module, name = str(arg).split(" ", 1)
            found.add(_global_name(module, name))
            recent.append(None)
        elif kind == "STACK_GLOBAL":
            module, name = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
            found.add(_global_name(module, name) if module and name else _UNRESOLVED_GLOBAL)
            recent.append(None)
        elif kind in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            recent.append(str(arg))
        elif kind == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif kind in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = recent[-1] if recent else None
        elif kind in ("GET", "BINGET", "LONG_BINGET"):
            recent.append(memo.get(int(arg)))
        elif kind != "FRAME":
            recent.append(None)
        del recent[:-2]


def _scan_globals(path: Path, is_zip: bool, source: str) -> tuple[set[str], Exception | None]:
    """Globals referenced by a torch file's pickles, and the parse error that stopped the scan."""
    found: set[str] = set()
    try:
        if is_zip:
            with _open_zip(path, source) as archive:
                member = _torch_pickle_member(archive)
                if member is None:
                    raise CheckpointError(f"{source} is a zip archive but not a torch.save file")
                with archive.open(member) as stream:
                    _pickle_globals(stream, found)
        else:
            with path.open("rb") as stream:
                for _ in range(_LEGACY_PICKLES):
                    _pickle_globals(stream, found)
    except CheckpointError:
        raise
    except Exception as exc:  # a parser over untrusted bytes: any failure means a bad file
        return found, exc
    return found, None


def _allowlist(found: set[str], source: str) -> list[tuple[Callable[..., Any], str]]:
    """Check the globals of a checkpoint; return the extra ``(object, name)`` pairs to allow."""
    torch_defaults = _torch_default_globals()
    allowed: list[tuple[Callable[..., Any], str]] = []
    forbidden: list[str] = []
    for name in sorted(found):
        if name in NUMPY_GLOBALS:
            allowed.append((NUMPY_GLOBALS[name], name))
        elif _is_stubbed(name):
            allowed.append((_stub_class(name), name))
        elif torch_defaults is not None and name not in torch_defaults:
            forbidden.append(name)
    if any(name == "numpy.dtype" for _, name in allowed):
        allowed.extend((cls, name) for name, cls in _NUMPY_DTYPE_CLASSES.items())
    if forbidden:
        raise CheckpointError(
            f"{source} refers to pickled Python code that is not allowed: {_listing(forbidden)}. "
            "Only tensors, containers, numpy arrays/scalars and mmengine objects (read as inert "
            "stand-ins) are accepted; the file was not loaded and nothing in it was executed."
        )
    stubs = [name for _, name in allowed if _is_stubbed(name)]
    if stubs:
        logger.debug("%s: reading %s as inert stand-ins", source, ", ".join(stubs))
    return allowed


def _load_torch_file(path: Path, head: bytes, source: str) -> Any:
    """``torch.load(weights_only=True)`` of a checked torch file, mmengine objects stubbed."""
    is_zip = head.startswith(_ZIP_MAGIC)
    found, scan_error = _scan_globals(path, is_zip, source)
    extra = _allowlist(found, source)
    if scan_error is not None:
        raise CheckpointError(
            f"{source} ({path.stat().st_size} bytes) is not a readable PyTorch checkpoint "
            f"(truncated or corrupt download?): {scan_error}"
        ) from scan_error
    try:
        with torch.serialization.safe_globals(extra):
            if is_zip:
                # Memory-mapped: tensors not kept (e.g. optimizer state) are never read.
                try:
                    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except (RuntimeError, OSError) as exc:
                    logger.debug("mmap load of %s failed (%s); reading it whole", source, exc)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # torch wraps the reason in boilerplate about weights_only defaults: keep the reason.
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", text, re.S)
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
    with _open_zip(path, str(path)) as archive:
        info = _member_choice(archive, str(path))
        source = f"{path}:{info.filename}"
        with _extracted(archive, info, path.parent, source) as member:
            head = _read_head(member, source)
            if head.startswith(_ZIP_MAGIC):
                with _open_zip(member, source) as inner:
                    if _torch_pickle_member(inner) is None:
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
    head = _read_head(path, source)
    if head.startswith(_ZIP_MAGIC):
        with _open_zip(path, source) as archive:
            is_torch_file = _torch_pickle_member(archive) is not None
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
