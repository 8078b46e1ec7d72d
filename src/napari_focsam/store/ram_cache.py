"""A thread-safe least-recently-used cache bounded by bytes (and optionally by entries)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

__all__ = ["RamCache", "estimate_nbytes"]

logger = logging.getLogger(__name__)


def estimate_nbytes(value: Any) -> int:
    """Bytes held by arrays / tensors in `value` (recursing into mappings and sequences).

    Objects with an ``nbytes`` attribute (numpy) or method (e.g. ``Sam2FrameFeatures``), torch
    tensors (``numel * element_size``); anything else counts 0.
    """
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "numel") and hasattr(value, "element_size"):  # torch.Tensor
        return int(value.numel() * value.element_size())
    if isinstance(value, Mapping):
        return sum(estimate_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(estimate_nbytes(v) for v in value)
    nbytes = getattr(value, "nbytes", None)
    if callable(nbytes):
        return int(nbytes())
    if isinstance(nbytes, (int, np.integer)):
        return int(nbytes)
    return 0


class RamCache:
    """LRU mapping bounded by the total bytes of its values.

    Parameters
    ----------
    max_bytes : int
        Bound on the summed sizes; least recently used entries are dropped beyond it. A value
        larger than the bound on its own is not stored.
    max_items : int or None
        Optional bound on the number of entries.

    Notes
    -----
    All methods are thread-safe (one lock). Sizes come from `estimate_nbytes` unless `put` is
    given one.
    """

    def __init__(self, max_bytes: int, max_items: int | None = None) -> None:
        if max_bytes < 0 or (max_items is not None and max_items < 0):
            raise ValueError("max_bytes and max_items must be >= 0.")
        self.max_bytes = int(max_bytes)
        self.max_items = max_items
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        with self._lock:
            return self._nbytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def keys(self) -> list[Hashable]:
        """Keys, least recently used first."""
        with self._lock:
            return list(self._data)

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value of `key` (marked most recently used), or `default`."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.misses += 1
                return default
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int | None = None) -> bool:
        """Store `value` under `key` and evict least recently used entries beyond the bounds.

        Returns
        -------
        bool
            Whether the value was stored (False when it alone exceeds `max_bytes`).
        """
        size = estimate_nbytes(value) if nbytes is None else int(nbytes)
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]
            if size > self.max_bytes or self.max_items == 0:
                logger.debug("not caching %r: %d bytes > bound %d", key, size, self.max_bytes)
                return False
            self._data[key] = (value, size)
            self._nbytes += size
            while self._nbytes > self.max_bytes or (
                    self.max_items is not None and len(self._data) > self.max_items):
                _, (_, dropped) = self._data.popitem(last=False)
                self._nbytes -= dropped
                self.evictions += 1
            return True

    def pop(self, key: Hashable, default: Any = None) -> Any:
        """Remove `key` and return its value (or `default`)."""
        with self._lock:
            item = self._data.pop(key, None)
            if item is None:
                return default
            self._nbytes -= item[1]
            return item[0]

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()
            self._nbytes = 0
