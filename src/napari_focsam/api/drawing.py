"""One object drawn on one frame by the interactive model: on the whole frame or on a tile.

`ObjectDrawer` turns an object's points, labels and box on a frame into its ``(H, W)`` mask.
Without tiles the model sees the whole frame (resized to its input). With a tile grid (frames
larger than the model input, see `napari_focsam.engine.tiling`) the prompts go to the block
that holds them all with the most context (`TileGrid.pick`), shifted into its pixels; the
block's features come from the tiles' embedding store (encoded on first use, one tile per
click), and its mask is pasted back into the frame at full resolution. The whole frame is used
instead when no block holds every prompt (a box or a set of clicks wider than a block), and
when the block's mask reaches one of its inner borders (within one low-resolution logit pixel:
the object probably continues outside the block).

Click sessions (`napari_focsam.engine.session`) belong to a *location* (a frame and a tile, or
the whole frame): a few locations keep a predictor with their features set (least recently
used ones are dropped with their sessions), so going back and forth between two objects, or
between a tile and the whole frame of an object that crosses a block border, recomputes only
the clicks that changed.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine.interactive import InteractivePredictor
from ..engine.session import ClickSession
from ..engine.tiling import TileGrid
from ..store import EmbeddingStore, TileSource

__all__ = ["Location", "ObjectDrawer"]

logger = logging.getLogger(__name__)

#: Locations (frame, tile) whose predictor and click sessions are kept, by default.
DEFAULT_LOCATIONS = 4


@dataclass(frozen=True)
class Location:
    """Where an object is decoded.

    Attributes
    ----------
    frame : int
        Flat frame index.
    tile : int or None
        Tile of the frame, or None for the whole frame (resized to the model input).
    """

    frame: int
    tile: int | None = None


@dataclass
class _Slot:
    """A predictor with the features of one location set, and the click sessions there (by
    object id, with the box they were started with)."""

    predictor: InteractivePredictor
    sessions: dict[int, tuple[tuple | None, ClickSession]] = field(default_factory=dict)


class ObjectDrawer:
    """Draw objects with the interactive model, on whole frames or on their tiles.

    Parameters
    ----------
    predictor : InteractivePredictor
        The first predictor (more are made with `new_predictor`, up to `max_locations`).
    new_predictor : callable
        ``() -> InteractivePredictor`` of the same model.
    frames : EmbeddingStore
        The whole frames' features (a store over the `StackSource`).
    tiles : EmbeddingStore or None
        The tiles' features (a store over a `TileSource`); None: no tiling.
    max_locations : int
        Locations whose predictor and sessions are kept.
    """

    def __init__(self, predictor: InteractivePredictor,
                 new_predictor: Callable[[], InteractivePredictor], frames: EmbeddingStore,
                 tiles: EmbeddingStore | None = None, *,
                 max_locations: int = DEFAULT_LOCATIONS) -> None:
        if tiles is not None and not isinstance(tiles.source, TileSource):
            raise TypeError("tiles must be a store over a TileSource")
        self.frames = frames
        self.tiles = tiles
        self.grid: TileGrid | None = None if tiles is None else tiles.source.grid
        self.max_locations = max(1, int(max_locations))
        self._new_predictor = new_predictor
        self._spare: InteractivePredictor | None = predictor
        self._first = predictor
        self._slots: OrderedDict[Location, _Slot] = OrderedDict()
        #: Pixels along a block's inner border that count as "against" it: one low-resolution
        #: logit pixel of the block.
        self.border_band = 1 if self.grid is None else max(
            1, math.ceil(max(self.grid.block) / predictor.mask_input_size))

    # ------------------------------------------------------------------ state
    @property
    def predictor(self) -> InteractivePredictor:
        """The predictor used last (its frame is the last location drawn on)."""
        return next(reversed(self._slots.values())).predictor if self._slots else self._first

    @property
    def current(self) -> Location | None:
        """The location drawn on last."""
        return next(reversed(self._slots)) if self._slots else None

    def session(self, obj_id: int, location: Location) -> ClickSession | None:
        """Object `obj_id`'s kept click session at `location`, if any."""
        slot = self._slots.get(location)
        cached = None if slot is None else slot.sessions.get(int(obj_id))
        return None if cached is None else cached[1]

    def clear(self) -> None:
        """Forget every location's features and sessions."""
        self._slots.clear()

    # ------------------------------------------------------------------ placement
    def location(self, frame: int, points: np.ndarray | None, box: np.ndarray | None) -> Location:
        """Where prompts on flat frame `frame` are decoded first: the tile holding them with the
        most context, else the whole frame (a mask against the tile's border still falls back
        to the whole frame, see `draw`)."""
        if self.grid is None:
            return Location(int(frame))
        return Location(int(frame), self.grid.pick(points, box))

    def needs_encoding(self, frame: int, points: np.ndarray | None,
                       box: np.ndarray | None) -> bool:
        """Whether drawing these prompts first has to run the encoder (its frame or tile is in
        neither cache)."""
        loc = self.location(frame, points, box)
        if loc in self._slots:
            return False
        if loc.tile is None:
            return not self.frames.is_cached(loc.frame)
        assert self.tiles is not None
        return not self.tiles.is_cached(self.tiles.source.index(loc.frame, loc.tile))

    # ------------------------------------------------------------------ drawing
    def draw(self, frame: int, obj_id: int, points: np.ndarray | None, labels: np.ndarray | None,
             box: np.ndarray | None, *, keep: bool = True) -> np.ndarray:
        """Object `obj_id`'s ``(H, W)`` bool mask on flat frame `frame` from its prompts.

        Parameters
        ----------
        frame : int
            Flat frame index.
        obj_id : int
            The object (its click session is looked up by it).
        points : np.ndarray or None
            ``(N, 2)`` (row, col) frame pixels in click order (``N`` may be 0).
        labels : np.ndarray or None
            ``(N,)`` 1 / 0.
        box : np.ndarray or None
            ``(4,)`` (row0, col0, row1, col1) frame pixels.
        keep : bool
            Keep a new click session for the next call (the live preview); without, only an
            existing one is reused and updated.

        Returns
        -------
        np.ndarray
            ``(H, W)`` bool at the frame's full resolution.
        """
        loc = self.location(frame, points, box)
        if loc.tile is not None:
            assert self.grid is not None
            pts, bx = self.grid.to_tile(loc.tile, points, box)
            mask = self._run(loc, obj_id, pts, labels, bx, keep)
            if not self.grid.touches_inner_border(loc.tile, mask, self.border_band):
                return self.grid.paste(loc.tile, mask)
            logger.info("object %d reaches an inner border of tile %d of frame %d: drawn on "
                        "the whole frame", obj_id, loc.tile, frame)
        return self._run(Location(int(frame)), obj_id, points, labels, box, keep)

    def _run(self, loc: Location, obj_id: int, points: np.ndarray | None,
             labels: np.ndarray | None, box: np.ndarray | None, keep: bool) -> np.ndarray:
        """The mask at `loc` (its frame's or block's shape) through the object's session."""
        slot = self._slot(loc)
        predictor = slot.predictor
        if points is None or len(points) == 0:
            slot.sessions.pop(obj_id, None)
            return predictor.predict(box=box, multimask=False).masks[0]
        box_key = None if box is None else tuple(np.asarray(box, dtype=np.float64).tolist())
        cached = slot.sessions.get(obj_id)
        if cached is None or cached[0] != box_key:
            cached = (box_key, predictor.start_session(box=box))
            if keep:
                slot.sessions[obj_id] = cached
            else:
                slot.sessions.pop(obj_id, None)
        session = cached[1]
        session.set_clicks(np.asarray(points, dtype=np.float64).reshape(-1, 2),
                           np.asarray(labels).reshape(-1))
        return session.mask

    def _features(self, loc: Location) -> tuple[Any, tuple[int, int]]:
        """The features of `loc` (encoded now if neither cache has them) and its shape."""
        if loc.tile is None:
            return self.frames.features(loc.frame), self.frames.frame_shape
        assert self.tiles is not None
        index = self.tiles.source.index(loc.frame, loc.tile)
        return self.tiles.features(index), self.tiles.frame_shape

    def _slot(self, loc: Location) -> _Slot:
        """The slot of `loc`, its features set (the least recently used slot is reused, and its
        sessions dropped, when all are taken)."""
        slot = self._slots.get(loc)
        if slot is not None:
            self._slots.move_to_end(loc)
            return slot
        features, shape = self._features(loc)  # before evicting: encoding may be cancelled
        if self._spare is not None:
            predictor, self._spare = self._spare, None
        elif len(self._slots) < self.max_locations:
            predictor = self._new_predictor()
        else:
            _, old = self._slots.popitem(last=False)
            predictor = old.predictor
        predictor.set_frame(features, shape)
        slot = self._slots[loc] = _Slot(predictor)
        logger.debug("drawing on %s (%d locations kept)", loc, len(self._slots))
        return slot
