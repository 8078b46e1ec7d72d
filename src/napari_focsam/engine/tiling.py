"""Tiles for frames larger than the model input: settings, geometry, prompt placement.

A SAM-style encoder sees a frame resized so that its longest side is the model input (1024
px): a 4096² field reaches it at a quarter of its resolution. Tiling encodes such a frame as
overlapping *blocks* of the model input's size instead, each seen at full resolution:

- blocks are ``tile x tile`` pixels (or the frame's size along an axis shorter than that),
  all of one size (no edge tile is upsampled: one scale for all tiles);
- along each axis the fewest blocks whose spacing is at most ``tile - 2 * halo`` cover the
  frame, spread evenly from the first to the last pixel, so neighbours overlap by at least
  ``2 * halo``: every pixel lies at least `halo` pixels inside some block (its *core*), so a
  click always has a block with `halo` pixels of context around it.

`Tiling` is the user's setting (mode auto / on / off, tile side, halo); `TileGrid` is the pure
geometry of one frame shape: block origins, which block holds a set of prompts with the most
context (`TileGrid.pick`), whether a block's mask touches one of its inner borders (the object
probably continues outside it), and the shifts between frame and block coordinates.
Coordinates are napari's ``(row, col)`` in pixels of the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError

__all__ = ["TILING_MODES", "TILING_VERSION", "TileGrid", "Tiling", "TilingError", "axis_origins"]

#: ``auto``: tiles when a frame is larger than the model input; ``on``: when it is larger than
#: the tile; ``off``: never (frames are resized to the model input).
TILING_MODES = ("auto", "on", "off")
#: Bumped whenever the tile geometry changes (part of the tiles' cache identity).
TILING_VERSION = "tiles-even-v1"
#: The default halo is this fraction of the tile side (128 px for 1024 px tiles).
DEFAULT_HALO_FRACTION = 8
#: Smallest tile side accepted (pixels).
MIN_TILE = 16


class TilingError(UserError, ValueError):
    """Tiling settings that cannot be used (unknown mode, halo too large for the tile...)."""


@dataclass(frozen=True)
class Tiling:
    """How frames larger than the model input are encoded.

    Attributes
    ----------
    mode : {"auto", "on", "off"}
        ``auto`` (default): tiles for frames larger than the interactive model's input in
        either dimension; ``on``: tiles for frames larger than `tile` (e.g. a smaller `tile`
        to zoom in on small objects); ``off``: the whole frame resized, as without tiling.
    tile : int or None
        Block side in pixels; None: the model input's side (1024 for every released model).
    halo : int or None
        Context kept around every pixel, in pixels (neighbouring blocks overlap by at least
        twice this); None: ``tile // 8`` (128 px for 1024 px tiles). ``2 * halo < tile``.
    """

    mode: str = "auto"
    tile: int | None = None
    halo: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in TILING_MODES:
            raise TilingError(f"tiling mode must be one of {', '.join(TILING_MODES)}, got "
                              f"{self.mode!r}")
        for name in ("tile", "halo"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value):
                raise TilingError(f"the {name} size must be a whole number of pixels, got {value!r}")
        if self.tile is not None and self.tile < MIN_TILE:
            raise TilingError(f"the tile size must be at least {MIN_TILE} px, got {self.tile}")
        if self.halo is not None and self.halo < 0:
            raise TilingError(f"the tile halo must be >= 0 px, got {self.halo}")
        if self.tile is not None and self.halo is not None and 2 * self.halo >= self.tile:
            raise TilingError(f"a halo of {self.halo} px leaves nothing of a {self.tile} px tile: "
                              f"it must be below half the tile ({(self.tile - 1) // 2} px at most)")

    def sizes(self, input_size: int) -> tuple[int, int]:
        """``(tile, halo)`` in pixels for a model whose input side is `input_size`."""
        tile = int(self.tile if self.tile is not None else input_size)
        halo = int(self.halo if self.halo is not None else tile // DEFAULT_HALO_FRACTION)
        if 2 * halo >= tile:
            raise TilingError(f"a halo of {halo} px leaves nothing of a {tile} px tile: it must "
                              f"be below half the tile ({(tile - 1) // 2} px at most)")
        return tile, halo

    def grid(self, frame_shape: tuple[int, int], input_size: int) -> TileGrid | None:
        """The tiles of frames of `frame_shape` ``(H, W)``, or None when they are not tiled.

        Parameters
        ----------
        frame_shape : tuple of int
            ``(H, W)``.
        input_size : int
            Side of the interactive model's square input (the `auto` threshold).
        """
        if self.mode == "off":
            return None
        tile, halo = self.sizes(input_size)
        h, w = (int(s) for s in frame_shape)
        limit = input_size if self.mode == "auto" else tile
        if h <= limit and w <= limit:
            return None
        grid = TileGrid.build((h, w), tile, halo)
        return grid if grid.n_tiles > 1 else None


def axis_origins(size: int, block: int, halo: int) -> tuple[int, ...]:
    """Start of each block along one axis.

    Parameters
    ----------
    size : int
        Length of the axis (pixels).
    block : int
        Block length, ``<= size``.
    halo : int
        Neighbouring blocks overlap by at least ``2 * halo`` (``2 * halo < block``).

    Returns
    -------
    tuple of int
        ``n`` increasing origins from 0 to ``size - block``, the fewest whose spacing is at
        most ``block - 2 * halo``, spread evenly (rounded).
    """
    if not 0 < block <= size:
        raise ValueError(f"block {block} must be in 1..{size}")
    if size == block:
        return (0,)
    stride = block - 2 * halo
    if stride <= 0:
        raise TilingError(f"halo {halo} is too large for blocks of {block} px")
    n = math.ceil((size - block) / stride) + 1
    starts = np.floor(np.linspace(0, size - block, n) + 0.5).astype(int)
    return tuple(int(s) for s in starts)


@dataclass(frozen=True)
class TileGrid:
    """The blocks of one frame shape (see the module docstring); build with `TileGrid.build`.

    Tiles are numbered row-major: tile ``t`` starts at ``(rows[t // len(cols)],
    cols[t % len(cols)])``.

    Attributes
    ----------
    frame_shape : tuple of int
        ``(H, W)`` of the frames.
    block : tuple of int
        ``(bh, bw)`` of every block: the tile side, or the frame's size along a shorter axis.
    halo : int
        Context in pixels (neighbours overlap by at least ``2 * halo``).
    rows, cols : tuple of int
        Block origins along each axis.
    """

    frame_shape: tuple[int, int]
    block: tuple[int, int]
    halo: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @classmethod
    def build(cls, frame_shape: tuple[int, int], tile: int, halo: int) -> TileGrid:
        """The grid of ``tile x tile`` blocks (clipped to the frame) with `halo` pixels of
        context over frames of `frame_shape`."""
        h, w = (int(s) for s in frame_shape)
        bh, bw = min(int(tile), h), min(int(tile), w)
        return cls((h, w), (bh, bw), int(halo), axis_origins(h, bh, halo),
                   axis_origins(w, bw, halo))

    # ------------------------------------------------------------------ geometry
    @property
    def n_tiles(self) -> int:
        """Blocks per frame."""
        return len(self.rows) * len(self.cols)

    def __len__(self) -> int:
        return self.n_tiles

    def origin(self, tile: int) -> tuple[int, int]:
        """``(row, col)`` of the top-left pixel of block `tile` in the frame."""
        if not 0 <= tile < self.n_tiles:
            raise IndexError(f"tile {tile} is out of range for {self.n_tiles} tiles")
        i, j = divmod(int(tile), len(self.cols))
        return self.rows[i], self.cols[j]

    def region(self, tile: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((row0, row1), (col0, col1))`` of block `tile` (half-open pixel ranges)."""
        r0, c0 = self.origin(tile)
        return (r0, r0 + self.block[0]), (c0, c0 + self.block[1])

    def inner_sides(self, tile: int) -> tuple[bool, bool, bool, bool]:
        """Whether the (top, bottom, left, right) side of block `tile` lies inside the frame
        (a side on the frame's border is not inner)."""
        (r0, r1), (c0, c1) = self.region(tile)
        h, w = self.frame_shape
        return r0 > 0, r1 < h, c0 > 0, c1 < w

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-able identity of the geometry (hashed into the tiles' cache key)."""
        return {"version": TILING_VERSION, "frame_shape": list(self.frame_shape),
                "block": list(self.block), "halo": self.halo, "rows": list(self.rows),
                "cols": list(self.cols)}

    # ------------------------------------------------------------------ prompts
    def pick(self, points: np.ndarray | None = None, box: np.ndarray | None = None) -> int | None:
        """The block holding every prompt with the most context.

        Parameters
        ----------
        points : np.ndarray or None
            ``(N, 2)`` (row, col) in frame pixels.
        box : np.ndarray or None
            ``(4,)`` (row0, col0, row1, col1) in frame pixels.

        Returns
        -------
        int or None
            The block whose inner borders are farthest from the prompts' extent (the smallest
            distance to an inner border counts; ties go to the lower index), or None when no
            block holds them all (or there are none).
        """
        # per axis: the smallest coordinate, the largest point (on a pixel: < the block's
        # end) and the box's far edge (<= the block's end)
        lo, pts_hi, box_hi = [math.inf, math.inf], [-math.inf, -math.inf], [-math.inf, -math.inf]
        if points is not None and len(points):
            pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            lo = [min(lo[a], float(pts[:, a].min())) for a in range(2)]
            pts_hi = [float(pts[:, a].max()) for a in range(2)]
        if box is not None:
            b = np.asarray(box, dtype=np.float64).reshape(2, 2)
            lo = [min(lo[a], float(b[:, a].min())) for a in range(2)]
            box_hi = [float(b[:, a].max()) for a in range(2)]
        if math.isinf(lo[0]):
            return None
        best = [self._best(origins, self.block[a], self.frame_shape[a], lo[a], pts_hi[a],
                           box_hi[a]) for a, origins in enumerate((self.rows, self.cols))]
        if best[0] is None or best[1] is None:
            return None
        return best[0] * len(self.cols) + best[1]

    @staticmethod
    def _best(origins: tuple[int, ...], block: int, size: int, lo: float, pts_hi: float,
              box_hi: float) -> int | None:
        """Index of the origin whose block holds ``[lo, max(pts_hi, box_hi)]`` with the largest
        margin to its inner ends (None: none holds it). The 2D margin is the smaller of the two
        axes', so the best block is the pair of per-axis bests."""
        best, best_margin = None, -math.inf
        hi = max(pts_hi, box_hi)
        for k, origin in enumerate(origins):
            end = origin + block
            if lo < origin or pts_hi >= end or box_hi > end:
                continue
            before = lo - origin if origin > 0 else math.inf
            after = end - hi if end < size else math.inf
            margin = min(before, after)
            if margin > best_margin:
                best, best_margin = k, margin
        return best

    def to_tile(self, tile: int, points: np.ndarray | None = None,
                box: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Prompts in frame pixels -> ``(points (N, 2), box (4,))`` in block `tile`'s pixels."""
        r0, c0 = self.origin(tile)
        pts = None if points is None else (np.asarray(points, dtype=np.float64).reshape(-1, 2)
                                           - (r0, c0))
        bx = None if box is None else (np.asarray(box, dtype=np.float64).reshape(4)
                                       - (r0, c0, r0, c0))
        return pts, bx

    def touches_inner_border(self, tile: int, mask: np.ndarray, band: int = 1) -> bool:
        """Whether ``(bh, bw)`` `mask` of block `tile` has a pixel within `band` pixels of an
        inner side (the object probably continues outside the block)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.block:
            raise ValueError(f"mask of shape {mask.shape}, expected the block's {self.block}")
        band = max(1, int(band))
        top, bottom, left, right = self.inner_sides(tile)
        return bool((top and mask[:band].any()) or (bottom and mask[-band:].any())
                    or (left and mask[:, :band].any()) or (right and mask[:, -band:].any()))

    def paste(self, tile: int, mask: np.ndarray) -> np.ndarray:
        """``(bh, bw)`` bool `mask` of block `tile` -> ``(H, W)`` bool frame mask (False
        outside the block)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.block:
            raise ValueError(f"mask of shape {mask.shape}, expected the block's {self.block}")
        (r0, r1), (c0, c1) = self.region(tile)
        out = np.zeros(self.frame_shape, dtype=bool)
        out[r0:r1, c0:c1] = mask
        return out
