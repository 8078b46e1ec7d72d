"""What a disk cache entry holds (`CacheSpec`), where entries live, and the cache errors."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = [
    "ATTRS_KEY",
    "ENV_CACHE_DIR",
    "FORMAT_VERSION",
    "CacheCorruptError",
    "CacheError",
    "CacheMismatchError",
    "CacheSpec",
    "CacheWriteError",
    "default_cache_root",
    "resolve_cache_root",
    "write_error",
]

FORMAT_VERSION = 1
ATTRS_KEY = "napari_focsam_embeddings"
ENV_CACHE_DIR = "NAPARI_FOCSAM_CACHE_DIR"
DISK_DTYPES = ("float32", "float16")
RESERVED_NAMES = ("done", "crc")


class CacheError(UserError):
    """Base class of the disk cache's errors."""


class CacheMismatchError(CacheError):
    """The entry on disk was written for another model, content, version or layout."""


class CacheCorruptError(CacheError):
    """The entry (or one frame of it) cannot be read or fails its checksum."""


class CacheWriteError(CacheError):
    """Writing to the cache failed (e.g. the disk is full); ``errno`` tells why."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


def default_cache_root() -> Path:
    """``$NAPARI_FOCSAM_CACHE_DIR`` if set, else ``<user cache dir>/napari-focsam/embeddings``."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_cache_dir
    except ImportError:  # pragma: no cover - platformdirs comes with napari / pooch
        return Path.home() / ".cache" / "napari-focsam" / "embeddings"
    return Path(user_cache_dir("napari-focsam")) / "embeddings"


def resolve_cache_root(cache_root: str | os.PathLike[str] | None) -> Path:
    """The explicit `cache_root`, or `default_cache_root` for None."""
    return default_cache_root() if cache_root is None else Path(cache_root).expanduser()


@dataclass(frozen=True)
class CacheSpec:
    """What a cache entry must hold.

    Attributes
    ----------
    model_id, preprocess_version, content_hash : str
        Identity of encoder weights / precision, preprocessing, and stack content.
    n_frames : int
        ``N``.
    features : mapping of str to tuple of int
        Per-frame shape of each feature array.
    dtype : str
        ``"float32"`` or ``"float16"`` on disk.
    metadata : mapping
        JSON-able per-frame metadata the consumer needs (e.g. SAM's original / input size).
    """

    model_id: str
    preprocess_version: str
    content_hash: str
    n_frames: int
    features: Mapping[str, tuple[int, ...]]
    dtype: str = "float32"
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in DISK_DTYPES:
            raise ValueError(f"disk dtype must be one of {DISK_DTYPES}, got {self.dtype!r}.")
        bad = [name for name in self.features if name in RESERVED_NAMES or "/" in name]
        if bad or not self.features:
            raise ValueError(f"invalid feature names {list(self.features)}.")

    def to_attrs(self) -> dict[str, Any]:
        """The JSON attributes of an entry."""
        return {"format_version": FORMAT_VERSION, "model_id": self.model_id,
                "preprocess_version": self.preprocess_version, "content_hash": self.content_hash,
                "n_frames": int(self.n_frames), "dtype": self.dtype,
                "features": {k: [int(s) for s in v] for k, v in sorted(self.features.items())},
                "metadata": _jsonable(self.metadata)}


def _jsonable(value: Any) -> Any:
    """Tuples to lists, recursively (the form attributes read back in)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_error(message: str, err: OSError) -> CacheWriteError:
    """A `CacheWriteError` for an OSError (naming a full disk)."""
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        message += ": the disk is full"
    return CacheWriteError(f"{message} ({err})", err.errno)
