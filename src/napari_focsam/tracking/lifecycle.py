"""How tracks begin, end and divide while "Track all" walks a stack (pure numpy).

- `TrackOptions`: the settings (defaults a biologist does not need to change).
- `paint_frame`: the tracked objects' masks of one frame -> one label frame plus each object's
  visible area and bounding box, in one pass.
- `uncovered_masks`: which automatically found masks are new objects (covered by tracked
  objects, or by each other, for less than ``min_overlap`` of their area).
- `LostWatch`: an object absent (presence score <= 0, or no visible pixel) for ``lost_after``
  frames in a row ends its track.
- `DivisionWatch`: an object whose visible mask is two connected parts of comparable size
  (smaller / larger >= ``division_area_ratio``, each >= ``min_area``) on
  ``division_min_frames`` frames in a row divides, from the first of them.

Every watch holds at most a few frames per live object (``division_min_frames`` crops of a
mask in its bounding box), so nothing grows with the length of the stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .table import TrackingError

__all__ = ["DivisionWatch", "FrameObjects", "LostWatch", "Split", "TrackOptions", "paint_frame",
           "split_in_two", "uncovered_masks"]


@dataclass(frozen=True)
class TrackOptions:
    """Settings of "Track all".

    Attributes
    ----------
    seed_frame : int
        Frame (index along the stack axis) the objects are seeded on; tracking runs from it
        to `last_frame`.
    last_frame : int or None
        Last frame tracked (inclusive); None: the end of the stack.
    discover_every : int
        Look for new objects every this many frames after the seed frame (0: never; only
        used with a ``discover`` callable).
    min_overlap : float
        A found mask covered by tracked objects for at least this fraction of its area is
        one of them; below it, its uncovered part starts a new track.
    lost_after : int
        Frames in a row an object must be absent (presence score <= 0 or no visible pixel)
        for its track to end.
    division_min_frames : int
        Frames in a row an object must be split in two for the split to be a division (0:
        objects never divide, e.g. in a z-stack).
    division_area_ratio : float
        The smaller part of a split is at least this fraction of the larger one.
    min_area : int
        Pixels: smaller seeds and found masks are ignored, smaller parts do not make a split.
    """

    seed_frame: int = 0
    last_frame: int | None = None
    discover_every: int = 10
    min_overlap: float = 0.3
    lost_after: int = 5
    division_min_frames: int = 3
    division_area_ratio: float = 0.4
    min_area: int = 10

    def __post_init__(self) -> None:
        checks = [
            (self.seed_frame >= 0, "seed_frame must be >= 0"),
            (self.last_frame is None or self.last_frame >= self.seed_frame,
             "last_frame must be None or >= seed_frame"),
            (self.discover_every >= 0, "discover_every must be >= 0 (0: never)"),
            (0.0 < self.min_overlap <= 1.0, "min_overlap must be in (0, 1]"),
            (self.lost_after >= 1, "lost_after must be >= 1"),
            (self.division_min_frames >= 0, "division_min_frames must be >= 0 (0: never)"),
            (0.0 < self.division_area_ratio <= 1.0, "division_area_ratio must be in (0, 1]"),
            (self.min_area >= 1, "min_area must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrackingError(f"{message}, got {self}")

    def discovers_on(self, frame: int) -> bool:
        """Whether new objects are looked for on `frame` (after the seed frame)."""
        step = self.discover_every
        return step > 0 and frame > self.seed_frame and (frame - self.seed_frame) % step == 0


@dataclass
class FrameObjects:
    """The visible objects of one frame.

    Attributes
    ----------
    ids : np.ndarray
        ``(K,)`` int64 object ids, ascending.
    rank : np.ndarray
        ``(H, W)`` int32: 0 background, ``k + 1`` where ``ids[k]`` is visible.
    areas : np.ndarray
        ``(K,)`` int64 visible pixels per object.
    slices : list
        Per object its bounding box ``(rows, cols)``, or None when nothing of it is visible.
    """

    ids: np.ndarray
    rank: np.ndarray
    areas: np.ndarray
    slices: list

    def crop(self, k: int) -> np.ndarray:
        """Bool mask of object ``ids[k]`` inside its bounding box (it must be visible)."""
        return self.rank[self.slices[k]] == k + 1

    def labels(self, dtype) -> np.ndarray:
        """``(H, W)`` labels in `dtype`."""
        table = np.zeros(len(self.ids) + 1, dtype=dtype)
        table[1:] = self.ids
        return table[self.rank]


def paint_frame(masks: np.ndarray, ids) -> FrameObjects:
    """Paint objects' masks into one frame, higher ids over lower ones, and measure them.

    Parameters
    ----------
    masks : np.ndarray
        ``(K, H, W)`` bool.
    ids : sequence of int
        ``(K,)`` distinct object ids, in the order of `masks`.

    Returns
    -------
    FrameObjects
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or masks.shape[0] != ids.size:
        raise ValueError(f"masks of shape {masks.shape} for {ids.size} ids")
    order = np.argsort(ids, kind="stable")
    k = ids.size
    if k:
        # the highest id wins a pixel: first True along the descending id order (a view, not
        # a copy of the K masks, when the ids come ascending as the engine gives them)
        descending = masks[::-1] if (np.diff(ids) > 0).all() else masks[order[::-1]]
        stacked = descending.view(np.uint8)
        top = np.argmax(stacked, axis=0)
        rank = np.where(stacked.any(axis=0), k - top, 0).astype(np.int32)
    else:
        rank = np.zeros(masks.shape[1:], dtype=np.int32)
    areas = np.bincount(rank.ravel(), minlength=k + 1)[1:].astype(np.int64)
    slices = list(ndimage.find_objects(rank, max_label=k)) if k else []
    return FrameObjects(ids[order], rank, areas, slices)


def uncovered_masks(masks, covered: np.ndarray, min_overlap: float,
                    min_area: int) -> list[np.ndarray]:
    """The found masks that are new objects, each without the pixels already taken.

    Masks are taken largest first; a mask is new when less than `min_overlap` of its area is
    `covered` or taken by a mask accepted before it, and what is left of it has at least
    `min_area` pixels.

    Parameters
    ----------
    masks : sequence of np.ndarray
        ``(H, W)`` bool masks.
    covered : np.ndarray
        ``(H, W)`` bool: pixels of tracked objects.

    Returns
    -------
    list of np.ndarray
        ``(H, W)`` bool masks (their free pixels), largest found mask first.
    """
    taken = np.array(covered, dtype=bool, copy=True)
    found = [np.asarray(m, dtype=bool) for m in masks]
    for m in found:
        if m.shape != taken.shape:
            raise TrackingError(f"a found mask has shape {m.shape}, the frame {taken.shape}")
    areas = [int(np.count_nonzero(m)) for m in found]
    out = []
    for i in sorted(range(len(found)), key=lambda i: -areas[i]):
        m, area = found[i], areas[i]
        if area < min_area:
            continue
        overlap = int(np.count_nonzero(m & taken))
        if overlap >= min_overlap * area or area - overlap < min_area:
            continue
        free = m & ~taken
        taken |= free
        out.append(free)
    return out


class LostWatch:
    """Counts the frames in a row each object is absent.

    Parameters
    ----------
    lost_after : int
        Absent frames in a row that end a track.
    """

    def __init__(self, lost_after: int) -> None:
        self.lost_after = int(lost_after)
        self._absent: dict[int, int] = {}

    def update(self, obj_id: int, present: bool) -> bool:
        """Record one frame of `obj_id`; True when it is now lost."""
        if present:
            self._absent.pop(obj_id, None)
            return False
        self._absent[obj_id] = count = self._absent.get(obj_id, 0) + 1
        return count >= self.lost_after

    def forget(self, obj_id: int) -> None:
        self._absent.pop(obj_id, None)

    def __len__(self) -> int:
        return len(self._absent)


def split_in_two(crop: np.ndarray, min_area: int,
                 area_ratio: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The two parts of a mask that is two connected parts of comparable size, else None.

    Parts are 4-connected; the two largest must each have `min_area` pixels and the smaller
    at least `area_ratio` of the larger. Smaller fragments go to the nearer part, so the two
    parts hold every pixel of `crop`.

    Parameters
    ----------
    crop : np.ndarray
        ``(h, w)`` bool mask (e.g. inside its bounding box).

    Returns
    -------
    tuple of np.ndarray or None
        Two ``(h, w)`` bool masks, the larger first.
    """
    comps, n = ndimage.label(crop)
    if n < 2:
        return None
    sizes = np.bincount(comps.ravel())[1:]
    first, second = np.argsort(sizes, kind="stable")[::-1][:2]
    if sizes[second] < min_area or sizes[second] < area_ratio * sizes[first]:
        return None
    a, b = comps == first + 1, comps == second + 1
    rest = crop & ~a & ~b
    if rest.any():
        nearer_a = ndimage.distance_transform_edt(~a) <= ndimage.distance_transform_edt(~b)
        a = a | (rest & nearer_a)
        b = b | (rest & ~nearer_a)
    return a, b


@dataclass(frozen=True)
class Split:
    """One object seen as two parts on one frame.

    Attributes
    ----------
    frame : int
        Frame index (along the stack).
    slices : tuple of slice
        The object's bounding box ``(rows, cols)``.
    parts : tuple of np.ndarray
        The two parts as bool masks inside the box, in the same order on every frame of a
        `DivisionWatch` window (matched by nearest centroids).
    """

    frame: int
    slices: tuple[slice, slice]
    parts: tuple[np.ndarray, np.ndarray]

    def centroids(self) -> np.ndarray:
        """``(2, 2)`` (row, col) of the parts in frame coordinates."""
        offset = np.array([self.slices[0].start, self.slices[1].start], dtype=np.float64)
        return np.array([np.argwhere(p).mean(axis=0) + offset for p in self.parts])

    def swapped(self) -> Split:
        return Split(self.frame, self.slices, (self.parts[1], self.parts[0]))

    def part_mask(self, i: int, shape: tuple[int, int]) -> np.ndarray:
        """``(H, W)`` bool mask of part `i`."""
        out = np.zeros(shape, dtype=bool)
        out[self.slices] = self.parts[i]
        return out


class DivisionWatch:
    """Split candidates of every object, confirmed after enough frames in a row.

    Parameters
    ----------
    min_frames : int
        Frames in a row an object must be split (0: never; nothing is recorded).
    min_area : int
        Smallest part (pixels).
    area_ratio : float
        Smallest ratio of the smaller to the larger part.
    """

    def __init__(self, min_frames: int, min_area: int, area_ratio: float) -> None:
        self.min_frames = int(min_frames)
        self.min_area = int(min_area)
        self.area_ratio = float(area_ratio)
        self._windows: dict[int, list[Split]] = {}

    def update(self, obj_id: int, frame: int, slices: tuple[slice, slice] | None,
               crop: np.ndarray | None) -> list[Split] | None:
        """Record object `obj_id`'s visible mask on `frame` (None: not visible).

        Returns
        -------
        list of Split or None
            The window of `min_frames` consecutive splits once the division is confirmed
            (the object's window is then cleared); None otherwise.
        """
        if self.min_frames <= 0:
            return None
        parts = None if crop is None else split_in_two(crop, self.min_area, self.area_ratio)
        if parts is None:
            self._windows.pop(obj_id, None)
            return None
        split = Split(int(frame), (slices[0], slices[1]), parts)
        window = self._windows.get(obj_id)
        if window and abs(window[-1].frame - split.frame) != 1:
            window = None
        if window:
            before, now = window[-1].centroids(), split.centroids()
            straight = np.linalg.norm(before - now, axis=1).sum()
            crossed = np.linalg.norm(before - now[::-1], axis=1).sum()
            if crossed < straight:
                split = split.swapped()
            window.append(split)
        else:
            # the first frame fixes the order: the part nearer the top-left first
            c = split.centroids()
            if tuple(c[1]) < tuple(c[0]):
                split = split.swapped()
            window = [split]
        self._windows[obj_id] = window
        if len(window) >= self.min_frames:
            del self._windows[obj_id]
            return window
        return None

    def forget(self, obj_id: int) -> None:
        self._windows.pop(obj_id, None)

    def __len__(self) -> int:
        return len(self._windows)
