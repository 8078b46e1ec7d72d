"""Small companions of `EmbeddingStore`: progress steps and per-outer-index views."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .embedding_store import EmbeddingStore

__all__ = ["ComputeProgress", "StackView"]


@dataclass(frozen=True)
class ComputeProgress:
    """One step of `EmbeddingStore.compute`.

    Attributes
    ----------
    done, total : int
        Frames available so far / asked for.
    frame : int
        The frame this step is about (flat index).
    from_cache : bool
        It was already cached (RAM or disk) rather than encoded now.
    """

    done: int
    total: int
    frame: int
    from_cache: bool


class StackView:
    """One outer index of a hyperstack's store: frames ``0 .. n_stack - 1`` along the stack
    axis, as a propagation ``FeatureProvider``.

    Parameters
    ----------
    store : EmbeddingStore
        The whole hyperstack's store.
    outer : int
        Position along the source's outer axis.
    """

    def __init__(self, store: EmbeddingStore, outer: int) -> None:
        n = store.source.n_outer
        if not -n <= outer < n:
            raise IndexError(f"outer index {outer} is out of range for {n}.")
        self.store = store
        self.outer = int(outer) % n

    def __len__(self) -> int:
        return self.store.source.n_stack

    def frame_index(self, stack: int) -> int:
        """Flat store index of position `stack` of this view."""
        n = len(self)
        if not -n <= stack < n:
            raise IndexError(f"frame {stack} is out of range for {n} frames.")
        return self.store.source.frame_index(self.outer, int(stack) % n)

    def __call__(self, frame_idx: int) -> Any:
        return self.store.features(self.frame_index(frame_idx))

    __getitem__ = __call__

    def compute(self, *, cancel_event: threading.Event | None = None) -> Iterator[ComputeProgress]:
        """`EmbeddingStore.compute` restricted to this view's frames (flat indices reported)."""
        return self.store.compute((self.frame_index(s) for s in range(len(self))),
                                  cancel_event=cancel_event)
