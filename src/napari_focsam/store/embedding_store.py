"""The embedding store: each frame of a stack is encoded once, then served from RAM or disk.

`EmbeddingStore` ties a `StackSource`, an encoder adapter (see :mod:`.encoders`), a byte-bounded
RAM LRU (:mod:`.ram_cache`) and a zarr disk cache (:mod:`.disk_cache`) keyed by the stack's
content hash, the encoder's model id and its preprocessing version. ``store(i)`` / ``store[i]``
return the consumer's features of frame ``i`` (RAM, else disk, else encode); `compute` is a
generator that fills the cache in batches and can be cancelled at any time. It implements the
propagation engine's ``FeatureProvider`` protocol (``__call__`` and ``__len__``), and
`EmbeddingStore.view` gives one provider per outer index of a t x z hyperstack. Over a
`TileSource` its items are the tiles of the frames (see :mod:`.tiles`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.cancel import Interrupted, stop_on
from .cache_spec import CacheCorruptError, CacheSpec, CacheWriteError, resolve_cache_root
from .disk_cache import DiskCache
from .encoder_base import FrameEncoder
from .hashing import cache_key, content_hash
from .ram_cache import RamCache
from .stack_source import StackSource
from .tiles import TileSource
from .views import ComputeProgress, StackView

__all__ = ["EmbeddingStore"]

logger = logging.getLogger(__name__)


class EmbeddingStore:
    """Per-frame encoder features of one stack, cached in RAM and on disk.

    Parameters
    ----------
    source : StackSource or TileSource
        The frames (or the tiles of the frames: the store's items are then tiles).
    encoder : FrameEncoder
        E.g. `SamEncoder`, `Sam2Encoder`.
    cache_root : path-like, None or False
        Folder of the disk cache (entry ``<cache_root>/<key>.zarr``); None: `default_cache_root`
        (``$NAPARI_FOCSAM_CACHE_DIR`` or the user cache dir); False: RAM only.
    ram_bytes : int
        Bound of the RAM LRU (float32 arrays).
    ram_items : int or None
        Optional bound on the number of frames in RAM.
    disk_dtype : {"float32", "float16"}
        Storage precision. With float16 every served frame (also straight after encoding) has
        float16-rounded values, so results do not depend on where a frame came from.
    batch_size : int
        Frames per encoder call in `compute`.
    strict : bool
        Raise `CacheMismatchError` / `CacheCorruptError` on an unusable disk entry instead of
        rebuilding it.
    content_hash : str, callable or None
        Caller-provided identity of the content, or a function returning it (called once, on
        first use; e.g. the tiles' identity derived from the whole frames' store); None hashes
        every frame's pixels (on first use: reads the whole stack once, slice by slice).

    Attributes
    ----------
    encoder_calls : int
        Frames actually encoded (all batches), for tests and benchmarks.
    """

    def __init__(self, source: StackSource | TileSource, encoder: FrameEncoder, *,
                 cache_root: str | os.PathLike[str] | None | bool = None,
                 ram_bytes: int = 1 << 30, ram_items: int | None = None,
                 disk_dtype: str = "float32", batch_size: int = 1, strict: bool = False,
                 content_hash: str | Callable[[], str] | None = None) -> None:
        if disk_dtype not in ("float32", "float16"):
            raise ValueError(f"disk_dtype must be 'float32' or 'float16', got {disk_dtype!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if cache_root is True:
            cache_root = None
        self.source = source
        self.encoder = encoder
        self.frame_shape = source.frame_shape
        self.disk_dtype = disk_dtype
        self.batch_size = int(batch_size)
        self.strict = strict
        self.spec = {name: tuple(int(s) for s in shape)
                     for name, (shape, _) in encoder.feature_spec(self.frame_shape).items()}
        self.frame_nbytes = sum(int(np.prod(s)) * 4 for s in self.spec.values())
        self.cache_root: Path | None = None if cache_root is False else resolve_cache_root(cache_root)
        self.ram = RamCache(ram_bytes, ram_items)
        self.encoder_calls = 0
        self._content_hash = content_hash
        self._disk: DiskCache | None = None
        self._opened = False
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ identity
    def __len__(self) -> int:
        return len(self.source)

    @property
    def encoded(self) -> int:
        """Alias of `encoder_calls` (the name ``StackFeatures`` uses)."""
        return self.encoder_calls

    @property
    def content_hash(self) -> str:
        """Hash of the stack's content (computed on first use)."""
        with self._lock:
            if self._content_hash is None:
                if not isinstance(self.source, StackSource):
                    raise TypeError("a store over tiles needs its content_hash")
                self._content_hash = content_hash(self.source)
            elif callable(self._content_hash):
                self._content_hash = self._content_hash()
            return self._content_hash

    @property
    def key(self) -> str:
        """Cache key of (content, model, preprocessing)."""
        return cache_key(self.content_hash, self.encoder.model_id, self.encoder.preprocess_version,
                         self.disk_dtype)

    @property
    def path(self) -> Path | None:
        """The disk entry (None in RAM-only mode)."""
        return None if self.cache_root is None else self.cache_root / f"{self.key}.zarr"

    def open(self) -> None:
        """Hash the content and open (or create / rebuild) the disk entry; idempotent.

        Called on first use; call it early (in a worker thread) to front-load the hashing.
        """
        with self._lock:
            if self._opened:
                return
            if self.cache_root is not None:
                spec = CacheSpec(model_id=self.encoder.model_id,
                                 preprocess_version=self.encoder.preprocess_version,
                                 content_hash=self.content_hash, n_frames=len(self),
                                 features=self.spec, dtype=self.disk_dtype,
                                 metadata=self.encoder.metadata(self.frame_shape))
                assert self.path is not None
                self._disk = DiskCache.open(self.path, spec, strict=self.strict)
            self._opened = True

    # ------------------------------------------------------------------ queries
    def is_cached(self, index: int) -> bool:
        """Whether frame `index` is in RAM or done on disk (no encoding needed)."""
        i = self.source.check_index(index)
        self.open()
        return i in self.ram or (self._disk is not None and self._disk.is_done(i))

    def missing(self, frames: Iterable[int] | None = None) -> list[int]:
        """Frames (of `frames`, default all) that would need encoding."""
        indices = range(len(self)) if frames is None else frames
        return [self.source.check_index(i) for i in indices if not self.is_cached(i)]

    # ------------------------------------------------------------------ features
    def arrays(self, index: int) -> dict[str, np.ndarray]:
        """The cached float32 arrays of frame `index` (RAM, else disk, else encoded now).

        Returns
        -------
        dict of str to np.ndarray
            Per feature name, its per-frame shape (see ``encoder.feature_spec``). Shared with
            the RAM cache: do not modify.
        """
        i = self.source.check_index(index)
        hit = self.ram.get(i)
        if hit is not None:
            return hit
        with self._lock:
            hit = self.ram.get(i)
            if hit is not None:
                return hit
            self.open()
            arrays = self._read_disk(i)
            if arrays is not None:
                return arrays
            with self._disk_lock():
                batch = self._to_encode([i])  # another process may have written it meanwhile
                if not batch:
                    arrays = self._read_disk(i)
                    if arrays is not None:
                        return arrays
                results, error = self._encode_and_store([i])
            if error is not None:
                logger.warning("%s; frame %d is not cached on disk", error, i)
            return results[0]

    def _read_disk(self, i: int) -> dict[str, np.ndarray] | None:
        """Frame `i` from disk into RAM; None if it is not done or fails its checksum."""
        if self._disk is None or not self._disk.is_done(i):
            return None
        try:
            arrays = self._disk.read(i)
        except CacheCorruptError as err:
            if self.strict:
                raise
            logger.warning("%s; recomputing the frame", err)
            return None
        self.ram.put(i, arrays)
        return arrays

    def _disk_lock(self, cancel_event: threading.Event | None = None):
        """The disk entry's cross-process lock (a no-op context in RAM-only mode)."""
        return contextlib.nullcontext() if self._disk is None else self._disk.lock(cancel_event)

    def _to_encode(self, frames: Iterable[int]) -> list[int]:
        """Of `frames`, those neither in RAM nor done and sound on disk (call with the disk lock
        held: re-reads the done flags, clears those of corrupt frames)."""
        disk = self._disk
        if disk is not None:
            disk.refresh()
        out = []
        for i in frames:
            if i in self.ram:
                continue
            if disk is not None and disk.is_done(i):
                if disk.verify(i):
                    continue
                if self.strict:
                    raise CacheCorruptError(f"frame {i} of {disk.path} fails its checksum")
                disk.invalidate(i)
            out.append(i)
        return out

    def features(self, index: int) -> Any:
        """The consumer's features of frame `index` (``encoder.to_features``)."""
        return self.encoder.to_features(self.arrays(index), self.frame_shape)

    #: ``store[i]``, and ``store(i)`` (the propagation ``FeatureProvider`` interface).
    __getitem__ = __call__ = features

    def _encode_and_store(
        self, indices: list[int]
    ) -> tuple[list[dict[str, np.ndarray]], CacheWriteError | None]:
        """Encode frames in one encoder call, write them to disk then RAM (lock held).

        Returns
        -------
        results : list of dict
            The frames' arrays.
        error : CacheWriteError or None
            A disk write failed: frames before it are done on disk; it and the rest of the
            batch are in RAM only.
        """
        start = time.perf_counter()
        frames = [self.source[i] for i in indices]
        outputs = self.encoder.encode(frames)
        self.encoder_calls += len(indices)
        if len(outputs) != len(indices):
            raise RuntimeError(f"encoder returned {len(outputs)} results for {len(indices)} frames")
        results = [self._normalise(out) for out in outputs]
        write_error: CacheWriteError | None = None
        for i, arrays in zip(indices, results, strict=True):
            if self._disk is not None and write_error is None:
                try:
                    self._disk.write(i, arrays)
                except CacheWriteError as err:
                    write_error = err
            self.ram.put(i, arrays)
        logger.debug("encoded frames %s in %.3f s", indices, time.perf_counter() - start)
        return results, write_error

    def _normalise(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = {}
        for name, shape in self.spec.items():
            a = np.asarray(out[name])
            if a.shape != shape:
                raise RuntimeError(f"encoder gave {name} of shape {a.shape}, expected {shape}")
            if self.disk_dtype == "float16":
                a = a.astype(np.float16)
            arrays[name] = np.ascontiguousarray(a, dtype=np.float32)
        return arrays

    # ------------------------------------------------------------------ bulk
    def compute(self, frames: Iterable[int] | None = None, *,
                cancel_event: threading.Event | None = None) -> Iterator[ComputeProgress]:
        """Encode every missing frame (of `frames`, default all), in batches.

        A generator: cached frames are reported first (``from_cache=True``), then each encoded
        frame once its batch is written to disk and RAM. Stop it at any time (stop iterating /
        ``close()``, or set `cancel_event`: checked before each batch and between the encoder's
        blocks, see `engine.cancel.stop_on`): frames already written stay valid, and a later
        call encodes only the rest.

        Yields
        ------
        ComputeProgress

        Raises
        ------
        CacheWriteError
            Writing to disk failed (e.g. disk full); frames reported so far stay valid.
        """
        self.open()
        indices = list(dict.fromkeys(
            self.source.check_index(i) for i in (range(len(self)) if frames is None else frames)))
        total, done = len(indices), 0
        todo = []
        for i in indices:
            # a done flag is trusted only once the frame reads back and passes its checksum
            if i in self.ram or (self._disk is not None and self._disk.is_done(i)
                                 and self._disk.verify(i)):
                done += 1
                yield ComputeProgress(done, total, i, True)
            else:
                todo.append(i)
        if self._disk is None and len(todo) * self.frame_nbytes > self.ram.max_bytes:
            logger.warning("RAM-only store: %d frames (%.0f MiB) do not fit in ram_bytes; evicted "
                           "frames will be encoded again", len(todo),
                           len(todo) * self.frame_nbytes / 2**20)
        for start in range(0, len(todo), self.batch_size):
            if cancel_event is not None and cancel_event.is_set():
                logger.info("embedding computation cancelled after %d / %d frames", done, total)
                return
            chunk = todo[start:start + self.batch_size]
            batch: list[int] = []
            with self._lock:
                try:
                    with self._disk_lock(cancel_event), \
                            stop_on(cancel_event, *self.encoder.modules()):
                        batch = self._to_encode(chunk)
                        error = self._encode_and_store(batch)[1] if batch else None
                except Interrupted:
                    logger.info("embedding computation cancelled during frames %s", batch or chunk)
                    return
            if error is not None:
                raise error
            for i in chunk:
                done += 1
                yield ComputeProgress(done, total, i, i not in batch)

    def clear_ram(self) -> None:
        """Drop the RAM cache (the disk entry stays)."""
        self.ram.clear()

    def view(self, outer: int) -> StackView:
        """The frames along the stack axis at one outer index (a ``FeatureProvider``)."""
        if not isinstance(self.source, StackSource):
            raise TypeError("a store over tiles has no per-outer-index views")
        return StackView(self, outer)

    def __repr__(self) -> str:
        return (f"EmbeddingStore({self.source!r}, model_id={self.encoder.model_id!r}, "
                f"cache_root={self.cache_root}, disk_dtype={self.disk_dtype})")
