"""The rules of "Track all" on their own: painting, new / lost objects, divisions, options."""

from __future__ import annotations

import numpy as np
import pytest

from napari_focsam.tracking import TrackingError
from napari_focsam.tracking.lifecycle import (
    DivisionWatch,
    LostWatch,
    TrackOptions,
    paint_frame,
    split_in_two,
    uncovered_masks,
)


def _box(shape, r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


# ---------------------------------------------------------------------- painting
def test_paint_frame_higher_ids_win_and_objects_are_measured():
    shape = (10, 12)
    masks = np.stack([_box(shape, 0, 4, 0, 4), _box(shape, 2, 6, 2, 6), _box(shape, 8, 9, 8, 9),
                      np.zeros(shape, bool)])
    painted = paint_frame(masks, [9, 3, 5, 7])
    assert painted.ids.tolist() == [3, 5, 7, 9]
    labels = painted.labels(np.int32)
    assert labels[1, 1] == 9 and labels[3, 3] == 9 and labels[5, 5] == 3 and labels[8, 8] == 5
    assert painted.areas.tolist() == [16 - 4, 1, 0, 16]
    assert painted.slices[0] == (slice(2, 6), slice(2, 6)) and painted.slices[2] is None
    np.testing.assert_array_equal(painted.crop(0), labels[2:6, 2:6] == 3)
    ascending = paint_frame(masks[[1, 2, 3, 0]], [3, 5, 7, 9])  # the engine's usual order
    np.testing.assert_array_equal(ascending.rank, painted.rank)
    empty = paint_frame(np.zeros((0, *shape), bool), [])
    assert empty.labels(np.int64).shape == shape and not empty.rank.any()
    with pytest.raises(ValueError):
        paint_frame(masks, [1, 2])


# ---------------------------------------------------------------------- new objects
def test_found_masks_are_new_when_mostly_uncovered():
    shape = (20, 20)
    covered = _box(shape, 0, 10, 0, 10)
    inside = _box(shape, 2, 6, 2, 6)  # wholly covered: a tracked object
    edge = _box(shape, 5, 15, 5, 15)  # 25 of 100 pixels covered: new at 0.3, not at 0.2
    dup = _box(shape, 6, 14, 6, 14)  # inside `edge`: the same object found twice
    speck = _box(shape, 18, 20, 18, 20)  # 4 pixels
    new = uncovered_masks([inside, dup, speck, edge], covered, 0.3, 5)
    assert len(new) == 1
    np.testing.assert_array_equal(new[0], edge & ~covered)
    assert uncovered_masks([edge], covered, 0.2, 5) == []
    assert len(uncovered_masks([speck], covered, 0.3, 4)) == 1
    with pytest.raises(TrackingError, match="shape"):
        uncovered_masks([np.zeros((3, 3), bool)], covered, 0.3, 1)


# ---------------------------------------------------------------------- lost objects
def test_an_object_is_lost_after_enough_absent_frames_in_a_row():
    watch = LostWatch(3)
    assert [watch.update(1, p) for p in (False, False, True, False, False)] == [False] * 5
    assert watch.update(1, False) is True
    watch.forget(1)
    assert len(watch) == 0 and watch.update(2, True) is False and len(watch) == 0


# ---------------------------------------------------------------------- divisions
def test_split_in_two_needs_two_comparable_parts():
    crop = np.zeros((6, 20), bool)
    crop[1:5, 0:8] = True  # 32 px
    crop[1:5, 10:16] = True  # 24 px
    a, b = split_in_two(crop, 5, 0.5)
    assert a.sum() == 32 and b.sum() == 24 and not (a & b).any()
    assert split_in_two(crop, 5, 0.8) is None  # 24 / 32 = 0.75
    assert split_in_two(crop, 25, 0.5) is None  # the smaller part is too small
    crop[0, 19] = True  # a fragment goes to the nearer part
    a, b = split_in_two(crop, 5, 0.5)
    assert b[0, 19] and (a | b).sum() == crop.sum()
    assert split_in_two(np.ones((4, 4), bool), 1, 0.1) is None


def _two_blobs(shape, t):
    """A cell at columns 2-7 and one at 12-16 moving right by `t`."""
    m = np.zeros(shape, bool)
    m[2:8, 2:8] = True
    m[2:8, 12 + t:17 + t] = True
    return m


def test_a_division_is_confirmed_after_enough_split_frames_in_a_row():
    shape = (10, 30)
    watch = DivisionWatch(3, 5, 0.5)
    whole = (slice(0, 10), slice(0, 30))
    one = _box(shape, 2, 8, 2, 20)
    assert watch.update(4, 10, whole, one) is None
    assert watch.update(4, 11, whole, _two_blobs(shape, 0)) is None
    assert watch.update(4, 12, whole, one) is None  # the split did not hold: start again
    assert len(watch) == 0
    assert watch.update(4, 13, whole, _two_blobs(shape, 0)) is None
    assert watch.update(4, 14, whole, _two_blobs(shape, 1)) is None
    window = watch.update(4, 15, whole, _two_blobs(shape, 2))
    assert [s.frame for s in window] == [13, 14, 15] and len(watch) == 0
    # part 0 is the same (left) cell on every frame
    for s in window:
        assert s.centroids()[0, 1] < s.centroids()[1, 1]
        assert s.part_mask(0, shape)[5, 4] and s.part_mask(1, shape)[5, 14]
    # a gap in the frames starts the window again
    watch.update(5, 1, whole, _two_blobs(shape, 0))
    assert watch.update(5, 3, whole, _two_blobs(shape, 0)) is None
    assert len(watch.update(5, 4, whole, _two_blobs(shape, 0)) or []) == 0
    watch.forget(5)
    assert len(watch) == 0
    off = DivisionWatch(0, 5, 0.5)  # divisions switched off: nothing is kept
    assert all(off.update(1, t, whole, _two_blobs(shape, 0)) is None for t in range(5))
    assert len(off) == 0


def test_division_parts_keep_their_order_when_the_cells_move_past_each_other():
    shape = (12, 30)
    whole = (slice(0, 12), slice(0, 30))
    watch = DivisionWatch(2, 4, 0.5)
    first = np.zeros(shape, bool)
    first[1:4, 2:6] = True  # top-left cell
    first[8:11, 20:24] = True  # bottom-right cell
    then = np.zeros(shape, bool)
    then[1:4, 4:8] = True  # the top cell moved right
    then[8:11, 18:22] = True
    window = watch.update(1, 0, whole, first)
    window = watch.update(1, 1, whole, then)
    assert window[0].centroids()[0, 0] < 5 and window[1].centroids()[0, 0] < 5


# ---------------------------------------------------------------------- options
def test_options_are_checked_and_say_when_to_discover():
    opts = TrackOptions(seed_frame=2, discover_every=3)
    assert [t for t in range(12) if opts.discovers_on(t)] == [5, 8, 11]
    assert not any(TrackOptions(discover_every=0).discovers_on(t) for t in range(20))
    for bad in ({"seed_frame": -1}, {"last_frame": 0, "seed_frame": 1}, {"discover_every": -1},
                {"min_overlap": 0.0}, {"lost_after": 0}, {"division_min_frames": -1},
                {"division_area_ratio": 1.5}, {"min_area": 0}):
        with pytest.raises(TrackingError):
            TrackOptions(**bad)
