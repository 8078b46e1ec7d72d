"""Content hashes of stacks and the cache keys derived from them.

`content_hash` streams every frame's raw pixels (read one slice at a time, never the whole
array) through BLAKE2b together with the data's shape, dtype, axis spec and contrast settings;
`cache_key` combines it with the encoder's identity into the name of a disk cache entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable

import numpy as np

from .stack_source import StackSource

__all__ = ["HASH_VERSION", "cache_key", "content_hash"]

logger = logging.getLogger(__name__)

#: Bumped whenever what `content_hash` covers changes.
HASH_VERSION = "napari-focsam-content-v1"


def content_hash(source: StackSource, *,
                 progress: Callable[[int, int], None] | None = None) -> str:
    """BLAKE2b digest of a stack's pixels and of everything that shapes its frames.

    Parameters
    ----------
    source : StackSource
        The stack; frames are read with `StackSource.raw`, one at a time.
    progress : callable, optional
        Called as ``progress(done, total)`` after each frame.

    Returns
    -------
    str
        40 hex characters. Covers `HASH_VERSION`, ``source.spec`` (shape, dtype, axes,
        percentiles, contrast version) and, per frame, its shape, dtype and raw bytes (the
        channels actually used).
    """
    start = time.perf_counter()
    h = hashlib.blake2b(digest_size=20)
    header = json.dumps({"version": HASH_VERSION, **source.spec}, sort_keys=True)
    h.update(header.encode())
    total = len(source)
    for i in range(total):
        raw = np.ascontiguousarray(source.raw(i))
        h.update(f"|{i}:{raw.shape}:{raw.dtype.str}|".encode())
        h.update(memoryview(raw).cast("B"))
        if progress is not None:
            progress(i + 1, total)
    digest = h.hexdigest()
    logger.debug("content hash of %r: %s (%.3f s)", source, digest, time.perf_counter() - start)
    return digest


def cache_key(content_hash: str, model_id: str, preprocess_version: str,
              disk_dtype: str = "float32") -> str:
    """Name of the cache entry of one stack encoded by one model, stored in one dtype.

    Parameters
    ----------
    content_hash : str
        From `content_hash` (or any caller-chosen identifier of the content).
    model_id : str
        Identity of the encoder's weights and precision.
    preprocess_version : str
        Version of the encoder's preprocessing.
    disk_dtype : str
        Storage dtype of the entry (entries of different dtypes live side by side).

    Returns
    -------
    str
        32 hex characters (safe as a file name).
    """
    payload = json.dumps([HASH_VERSION, content_hash, model_id, preprocess_version, disk_dtype])
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()
