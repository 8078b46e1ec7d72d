"""The division actions: one object becomes two daughters from a given frame on
(`divide_object`), and a division is undone (`undo_division`: the daughters become the
mother again, e.g. a false division found by "Track all").

On the division frame the mother's mask is split in two: its two largest connected components
when it already shows two cells, otherwise the halves on either side of the line through its
centroid perpendicular to its long axis. On later frames each of the mother's pixels goes to
the nearer daughter (by distance to the daughters' pixels on the previous frame), so an
already propagated mother is divided all the way; re-propagating the daughters from the
division frame refines that. Earlier frames are untouched.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from .table import TrackingError, TrackTable

__all__ = ["DivisionError", "divide_object", "undo_division"]

logger = logging.getLogger(__name__)


class DivisionError(TrackingError):
    """A division that cannot be done (no such object on the frame, too small to split...)."""


def _split_in_two(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    comps, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n >= 2:
        sizes = ndimage.sum(mask, comps, index=range(1, n + 1))
        first, second = (np.argsort(sizes)[::-1][:2] + 1).tolist()
        # smaller fragments go to the nearer of the two main parts
        a, b = comps == first, comps == second
        rest = mask & ~a & ~b
        if rest.any():
            da = ndimage.distance_transform_edt(~a)
            db = ndimage.distance_transform_edt(~b)
            a |= rest & (da <= db)
            b |= rest & (da > db)
        return a, b
    coords = np.argwhere(mask).astype(float)
    if len(coords) < 2:
        raise DivisionError("the object has fewer than 2 pixels on this frame")
    centre = coords.mean(axis=0)
    cov = np.cov((coords - centre).T)
    _, vecs = np.linalg.eigh(cov)
    long_axis = vecs[:, -1]
    side = (coords - centre) @ long_axis >= 0
    a = np.zeros_like(mask)
    a[tuple(coords[side].astype(int).T)] = True
    b = mask & ~a
    if not a.any() or not b.any():
        raise DivisionError("the object cannot be split in two on this frame")
    return a, b


def divide_object(labels: np.ndarray, parent: int, frame: int,
                  table: TrackTable | None = None,
                  daughters: tuple[int, int] | None = None) -> tuple[np.ndarray, TrackTable,
                                                                      tuple[int, int]]:
    """Divide object `parent` into two daughters from `frame` on.

    Parameters
    ----------
    labels : np.ndarray
        ``(T, H, W)`` integer labels (time along axis 0); not modified.
    parent : int
        The mother's id; it must be present on `frame` and on an earlier frame.
    frame : int
        First frame of the daughters.
    table : TrackTable, optional
        Lineage so far (default: built from `labels`).
    daughters : tuple of int, optional
        Ids for the daughters (default: the next two unused ids).

    Returns
    -------
    new_labels : np.ndarray
        A copy with the mother's pixels from `frame` on given to the daughters.
    table : TrackTable
        The lineage with the division recorded (and the daughters' frames).
    daughters : tuple of int

    Raises
    ------
    DivisionError
        The mother is absent on `frame` or on every earlier frame, or cannot be split.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise DivisionError(f"labels must be (T, H, W), got shape {labels.shape}")
    parent, frame = int(parent), int(frame)
    if not 0 < frame < len(labels):
        raise DivisionError(f"the division frame must be 1..{len(labels) - 1} (the mother needs an "
                            f"earlier frame), got {frame}")
    if not (labels[frame] == parent).any():
        raise DivisionError(f"object {parent} is not on frame {frame}")
    if not (labels[:frame] == parent).any():
        raise DivisionError(f"object {parent} has no frame before {frame}: nothing to divide from")
    if daughters is None:
        top = int(labels.max())
        if table is not None and table.begin:
            top = max(top, max(table.begin))
        daughters = (top + 1, top + 2)
    d1, d2 = (int(d) for d in daughters)
    out = labels.copy()
    a, b = _split_in_two(labels[frame] == parent)
    out[frame][a], out[frame][b] = d1, d2
    for t in range(frame + 1, len(labels)):
        mother = labels[t] == parent
        if not mother.any():
            continue
        dist_a = ndimage.distance_transform_edt(out[t - 1] != d1)
        dist_b = ndimage.distance_transform_edt(out[t - 1] != d2)
        to_a = mother & (dist_a <= dist_b)
        out[t][to_a] = d1
        out[t][mother & ~to_a] = d2
    new_table = TrackTable.from_labels(out).keep_links(table, except_parent=parent)
    new_table.divide(parent, frame, (d1, d2))
    logger.info("object %d divided into %d and %d at frame %d", parent, d1, d2, frame)
    return out, new_table, (d1, d2)


def undo_division(labels: np.ndarray, track_id: int,
                  table: TrackTable) -> tuple[np.ndarray, TrackTable, int]:
    """Undo the division of a mother (or of the mother of a daughter) `track_id`.

    Both daughters' pixels become the mother's from the frame they begin; the mother's track
    runs on to the daughters' last frame. A daughter that divides again must have that later
    division undone first.

    Parameters
    ----------
    labels : np.ndarray
        ``(T, H, W)`` (or ``(T, Z, Y, X)``) integer labels, time first; not modified.
    track_id : int
        The mother, or one of its daughters.
    table : TrackTable
        The lineage holding the division.

    Returns
    -------
    new_labels : np.ndarray
        A copy with the daughters relabelled as the mother.
    table : TrackTable
        The lineage without the division (a new table).
    mother : int

    Raises
    ------
    DivisionError
        `track_id` is neither a mother nor a daughter in `table`, or a daughter divides
        again.
    """
    labels = np.asarray(labels)
    if labels.ndim < 3:
        raise DivisionError(f"labels must be a stack with time first, got shape {labels.shape}")
    track_id = int(track_id)
    if track_id not in table:
        raise DivisionError(f"there is no track {track_id}")
    children = table.children_of(track_id)
    if children:
        mother = track_id
    elif table.parent_of(track_id) is not None:
        mother = int(table.parent_of(track_id))
        children = table.children_of(mother)
    else:
        raise DivisionError(f"track {track_id} has no recorded division (it is neither a mother "
                            "nor a daughter)")
    later = [c for c in children if table.children_of(c)]
    if later:
        raise DivisionError(f"daughter {later[0]} of {mother} divides again: reject that division "
                            "first")
    dtype = labels.dtype
    if mother > np.iinfo(dtype).max:
        raise DivisionError(f"id {mother} does not fit the labels' {dtype}")
    out = labels.copy()
    begin = min(table.begin.get(c, len(labels)) for c in children)
    for t in range(begin, len(labels)):
        out[t][np.isin(labels[t], children)] = mother
    new_table = TrackTable.from_labels(out)
    new_table.keep_links(table, except_parent=mother)
    logger.info("division of %d into %s undone", mother, children)
    return out, new_table, mother
