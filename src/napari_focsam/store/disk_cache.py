"""Per-frame encoder features of one stack on disk, as a zarr group ``<cache_root>/<key>.zarr``.

Layout: one array per feature name shaped ``(N, *feature_shape)`` (one frame per chunk, float32
or float16), a ``crc`` array ``(N,)`` uint32 (CRC-32 of each frame's stored bytes, checked on
every read) and a ``done`` array ``(N,)`` bool set only after a frame's arrays and CRC are
written; the group attributes (written last) describe what the entry holds. A store that does
not match the expected `CacheSpec`, or cannot be read, is moved aside, deleted and recreated
(with a warning) unless ``strict``; a frame whose data fails its CRC or cannot be decoded is
recomputed.

Several processes (and threads) may use one entry at once. Everything that changes it (create,
rebuild, write, invalidate) happens under the entry's lock, a file ``<key>.zarr.lock`` next to
it (`filelock`: released by the OS when a process dies); writers re-read the done flags under
the lock (`DiskCache.refresh`) and encode only what is still missing, so no frame is encoded
twice and nobody deletes what another process is writing. Readers need no lock: a frame's done
flag is set only after its data and checksum are complete.

Works with zarr 3 (tested) and should with zarr >= 2.16 (same group / array calls).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import uuid
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from filelock import FileLock, Timeout

from ..engine.cancel import Interrupted
from .cache_spec import (
    ATTRS_KEY,
    FORMAT_VERSION,
    CacheCorruptError,
    CacheError,
    CacheMismatchError,
    CacheSpec,
    write_error,
)

__all__ = ["LOCK_SUFFIX", "DiskCache", "entry_lock"]

logger = logging.getLogger(__name__)

#: Suffix of an entry's lock file (``<key>.zarr.lock``).
LOCK_SUFFIX = ".lock"
#: Seconds between "waiting for another process" messages while an entry is locked.
LOCK_POLL_S = 5.0


@contextlib.contextmanager
def entry_lock(path: Path, cancel_event: threading.Event | None = None) -> Iterator[None]:
    """Hold the cross-process lock of the entry at `path` (waiting for other holders).

    Raises
    ------
    napari_focsam.engine.cancel.Interrupted
        `cancel_event` was set while waiting.
    CacheWriteError
        The lock file cannot be created (no permission, no space).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + LOCK_SUFFIX)
    except OSError as err:
        raise write_error(f"cannot create the lock of embedding cache {path}", err) from err
    step = 0.5 if cancel_event is not None else LOCK_POLL_S
    waited = logged = 0.0
    while True:
        try:
            lock.acquire(timeout=step)
            break
        except Timeout:
            waited += step
            if cancel_event is not None and cancel_event.is_set():
                raise Interrupted(f"stopped while waiting for the lock of {path}") from None
            if waited - logged >= LOCK_POLL_S:
                logger.info("waiting for another process using embedding cache %s", path)
                logged = waited
        except OSError as err:
            raise write_error(f"cannot lock embedding cache {path}", err) from err
    try:
        yield
    finally:
        lock.release()


def _find_oserror(exc: BaseException) -> OSError | None:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError):
            return e
        stack.extend([e.__cause__, e.__context__, *getattr(e, "exceptions", ())])
    return None


def _frame_crc(arrays: Mapping[str, np.ndarray]) -> int:
    crc = 0
    for name in sorted(arrays):
        crc = zlib.crc32(np.ascontiguousarray(arrays[name]).view(np.uint8).reshape(-1), crc)
    return crc


def _store_frame(array: Any, index: int, value: np.ndarray) -> None:
    """Write one frame (one chunk) of a zarr array (the single write hook)."""
    array[index] = value


class DiskCache:
    """One stack's features on disk; use `DiskCache.open`.

    Attributes
    ----------
    path : Path
        The ``.zarr`` directory.
    spec : CacheSpec
        What it holds.
    """

    def __init__(self, path: Path, group: Any, spec: CacheSpec, done: np.ndarray) -> None:
        self.path = path
        self.spec = spec
        self._group = group
        self._arrays = {name: group[name] for name in spec.features}
        self._done_arr = group["done"]
        self._crc_arr = group["crc"]
        self._done = done

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike[str], spec: CacheSpec, *,
             strict: bool = False) -> DiskCache:
        """Open the entry at `path`, creating it, or rebuilding it when it does not match.

        Parameters
        ----------
        path : path-like
            The ``.zarr`` directory.
        spec : CacheSpec
            Expected content.
        strict : bool
            Raise instead of rebuilding a mismatching or unreadable entry.

        Returns
        -------
        DiskCache

        Raises
        ------
        CacheMismatchError
            ``strict`` and the entry was written for another model / content / version.
        CacheCorruptError
            ``strict`` and the entry cannot be read.
        CacheWriteError
            The entry cannot be created (e.g. no space, no permission).
        """
        path = Path(path)
        with entry_lock(path):
            if path.exists():
                try:
                    return cls._validate(path, spec)
                except CacheError as err:
                    if strict:
                        raise
                    logger.warning("embedding cache %s is unusable (%s); rebuilding it", path, err)
            return cls._create(path, spec)

    @classmethod
    def _validate(cls, path: Path, spec: CacheSpec) -> DiskCache:
        try:
            group = zarr.open_group(str(path), mode="r+")
            attrs = dict(group.attrs).get(ATTRS_KEY)
        except Exception as err:  # noqa: BLE001 - any failure to read means unusable
            raise CacheCorruptError(f"cannot open the zarr group: {err!r}") from err
        if not isinstance(attrs, Mapping):
            raise CacheCorruptError(f"missing or invalid {ATTRS_KEY!r} attributes")
        expected = spec.to_attrs()
        if attrs.get("format_version") != FORMAT_VERSION:
            raise CacheMismatchError(
                f"format version {attrs.get('format_version')!r}, expected {FORMAT_VERSION}")
        for key, value in expected.items():
            if attrs.get(key) != value:
                raise CacheMismatchError(
                    f"{key} is {_short(attrs.get(key))}, expected {_short(value)}")
        n = spec.n_frames
        for name, shape in spec.features.items():
            cls._check_array(group, name, (n, *shape), (1, *shape), np.dtype(spec.dtype))
        cls._check_array(group, "crc", (n,), (1,), np.dtype(np.uint32))
        cls._check_array(group, "done", (n,), (1,), np.dtype(bool))
        done = cls._read_done(group["done"], n)
        logger.info("opened embedding cache %s: %d / %d frames done", path, int(done.sum()), n)
        return cls(path, group, spec, done)

    @staticmethod
    def _check_array(group: Any, name: str, shape: tuple[int, ...], chunks: tuple[int, ...],
                     dtype: np.dtype) -> None:
        try:
            arr = group[name]
            ok = (tuple(arr.shape) == shape and tuple(arr.chunks) == chunks
                  and np.dtype(arr.dtype) == dtype)
        except Exception as err:  # noqa: BLE001 - missing or unreadable
            raise CacheCorruptError(f"array {name!r} is missing or unreadable: {err!r}") from err
        if not ok:
            raise CacheCorruptError(f"array {name!r} has the wrong shape, chunks or dtype")

    @staticmethod
    def _read_done(arr: Any, n: int) -> np.ndarray:
        try:
            done = np.asarray(arr[:], dtype=bool)
            if done.shape == (n,):
                return done.copy()
        except Exception as err:  # noqa: BLE001 - fall back to frame-by-frame reading
            logger.warning("cannot read the done flags at once (%r); reading them one by one", err)
        done = np.zeros(n, dtype=bool)
        for i in range(n):
            try:
                done[i] = bool(arr[i])
            except Exception:  # noqa: BLE001 - an unreadable flag means: not done
                logger.warning("done flag of frame %d is unreadable; the frame will be recomputed", i)
        return done

    @classmethod
    def _create(cls, path: Path, spec: CacheSpec) -> DiskCache:
        try:
            _remove(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            group = zarr.open_group(str(path), mode="w")
            n = spec.n_frames
            for name, shape in spec.features.items():
                group.zeros(name=name, shape=(n, *shape), chunks=(1, *shape), dtype=spec.dtype)
            group.zeros(name="crc", shape=(n,), chunks=(1,), dtype="uint32")
            group.zeros(name="done", shape=(n,), chunks=(1,), dtype=bool)
            group.attrs.update({ATTRS_KEY: spec.to_attrs()})  # last: marks the entry complete
        except OSError as err:
            raise write_error(f"cannot create embedding cache {path}", err) from err
        logger.info("created embedding cache %s (%d frames, %s)", path, spec.n_frames, spec.dtype)
        return cls(path, group, spec, np.zeros(spec.n_frames, dtype=bool))

    # ------------------------------------------------------------------ frames
    @property
    def n_frames(self) -> int:
        return self.spec.n_frames

    def done_mask(self) -> np.ndarray:
        """``(N,)`` bool copy: frames whose features are on disk."""
        return self._done.copy()

    def lock(self, cancel_event: threading.Event | None = None) -> contextlib.AbstractContextManager:
        """The entry's cross-process lock (see the module docstring), as a context manager."""
        return entry_lock(self.path, cancel_event)

    def refresh(self) -> None:
        """Re-read the done flags from disk (frames other processes wrote); call it with the
        lock held."""
        self._done = self._read_done(self._done_arr, self.n_frames)

    def verify(self, index: int) -> bool:
        """Whether done frame `index` reads back and passes its checksum (False otherwise)."""
        try:
            self.read(index)
        except CacheCorruptError as err:
            logger.warning("%s", err)
            return False
        return True

    def is_done(self, index: int) -> bool:
        return bool(self._done[index])

    def read(self, index: int) -> dict[str, np.ndarray]:
        """The features of a done frame.

        Returns
        -------
        dict of str to np.ndarray
            ``feature_shape`` float32 arrays.

        Raises
        ------
        KeyError
            The frame is not done.
        CacheCorruptError
            Its data cannot be decoded or fails its CRC.
        """
        if not self._done[index]:
            raise KeyError(f"frame {index} is not in the cache")
        try:
            stored = {name: np.asarray(arr[index]) for name, arr in self._arrays.items()}
            crc = int(self._crc_arr[index])
        except Exception as err:  # noqa: BLE001 - any decoding failure
            raise CacheCorruptError(f"frame {index} of {self.path} is unreadable: {err!r}") from err
        for name, shape in self.spec.features.items():
            if stored[name].shape != tuple(shape):
                raise CacheCorruptError(f"frame {index}: {name} has shape {stored[name].shape}")
        if _frame_crc(stored) != crc:
            raise CacheCorruptError(f"frame {index} of {self.path} fails its checksum")
        return {name: a.astype(np.float32) for name, a in stored.items()}

    def write(self, index: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write one frame, then mark it done.

        Parameters
        ----------
        index : int
            Frame.
        arrays : mapping of str to np.ndarray
            Every feature of the spec, ``feature_shape`` (cast to the disk dtype).

        Raises
        ------
        CacheWriteError
            An OSError while writing (ENOSPC: disk full); the frame stays not done and frames
            written before stay valid.
        """
        stored = {}
        for name, shape in self.spec.features.items():
            a = np.ascontiguousarray(arrays[name], dtype=self.spec.dtype)
            if a.shape != tuple(shape):
                raise ValueError(f"{name} of frame {index} has shape {a.shape}, expected {shape}")
            stored[name] = a
        try:
            for name, a in stored.items():
                _store_frame(self._arrays[name], index, a)
            _store_frame(self._crc_arr, index, np.uint32(_frame_crc(stored)))
            _store_frame(self._done_arr, index, True)
        except Exception as err:
            os_err = _find_oserror(err)
            if os_err is None:
                raise
            raise write_error(f"cannot write frame {index} to {self.path}", os_err) from err
        self._done[index] = True

    def invalidate(self, index: int) -> None:
        """Mark a frame not done (e.g. after a failed checksum)."""
        self._done[index] = False
        try:
            _store_frame(self._done_arr, index, False)
        except Exception as err:  # noqa: BLE001 - it is recomputed and rewritten anyway
            logger.warning("could not clear the done flag of frame %d: %r", index, err)

    def delete(self) -> None:
        """Remove the entry from disk."""
        with self.lock():
            _remove(self.path)
        self._done[:] = False


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _remove(path: Path) -> None:
    """Delete an entry: renamed aside first (atomic), so nobody sees it half deleted."""
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink():
        trash = path.with_name(f".{path.name}.trash-{uuid.uuid4().hex[:8]}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        path.unlink()

