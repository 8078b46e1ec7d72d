"""The tiles of a stack as the items of an embedding store.

`TileSource` presents a `StackSource` cut by a `napari_focsam.engine.tiling.TileGrid` as a
sequence of blocks: item ``i`` is tile ``i % n_tiles`` of frame ``i // n_tiles``, read with
`StackSource.region` (only the block's pixels, with the stack's contrast limits). An
`EmbeddingStore` over it caches per-tile features with everything it does for frames (RAM LRU,
zarr disk entry with locks and checksums, lazy encoding, `compute` with progress and cancel);
`tiled_content_hash` gives the tiles an identity of their own, derived from the stack's
content hash and the tile geometry, so their cache entry never mixes with the whole frames'.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..engine.tiling import TileGrid
from .stack_source import StackSource

__all__ = ["TileSource", "tiled_content_hash"]


def tiled_content_hash(stack_hash: str, grid: TileGrid) -> str:
    """Identity of a stack's tiles: its `content_hash` combined with the tile geometry.

    Returns
    -------
    str
        40 hex characters, different from `stack_hash` and from other geometries'.
    """
    payload = json.dumps({"stack": stack_hash, "tiles": grid.spec}, sort_keys=True)
    return hashlib.blake2b(payload.encode(), digest_size=20).hexdigest()


class TileSource:
    """The tiles of every frame of a stack, as ``(bh, bw, 3)`` uint8 items.

    Parameters
    ----------
    source : StackSource
        The stack.
    grid : TileGrid
        Tiles of the stack's frame shape.

    Notes
    -----
    Items are numbered frame-major: ``index = frame * n_tiles + tile`` (`index`, `split`).
    """

    def __init__(self, source: StackSource, grid: TileGrid) -> None:
        if tuple(grid.frame_shape) != tuple(source.frame_shape):
            raise ValueError(f"the tile grid is for frames of {grid.frame_shape}, the stack's are "
                             f"{source.frame_shape}")
        self.source = source
        self.grid = grid

    @property
    def n_tiles(self) -> int:
        """Tiles per frame."""
        return self.grid.n_tiles

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(bh, bw)`` of every item (a block)."""
        return self.grid.block

    def __len__(self) -> int:
        return len(self.source) * self.n_tiles

    def check_index(self, index: int) -> int:
        """`index` as ``0 .. len - 1`` (negative ones count from the end); IndexError if out of
        range."""
        n = len(self)
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"tile item {index} is out of range for {n} tiles "
                             f"({len(self.source)} frames x {self.n_tiles})")
        return i % n

    def index(self, frame: int, tile: int) -> int:
        """Item index of tile `tile` of flat frame `frame`."""
        if not 0 <= tile < self.n_tiles:
            raise IndexError(f"tile {tile} is out of range for {self.n_tiles} tiles")
        return self.source.check_index(frame) * self.n_tiles + int(tile)

    def split(self, index: int) -> tuple[int, int]:
        """``(frame, tile)`` of item `index`."""
        return divmod(self.check_index(index), self.n_tiles)

    def items_of(self, frames: Iterable[int]) -> list[int]:
        """Item indices of every tile of `frames` (flat frame indices), frame by frame."""
        return [self.index(f, t) for f in frames for t in range(self.n_tiles)]

    def __getitem__(self, index: int) -> np.ndarray:
        """Item `index` as ``(bh, bw, 3)`` uint8: its block of its frame (only that region is
        read)."""
        frame, tile = self.split(index)
        rows, cols = self.grid.region(tile)
        return self.source.region(frame, rows, cols)

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-able description: the stack's spec and the tile geometry."""
        return {**self.source.spec, "tiles": self.grid.spec}

    def __repr__(self) -> str:
        return (f"TileSource({self.source!r}, {self.n_tiles} tiles of {self.grid.block} per "
                f"frame, halo {self.grid.halo})")
