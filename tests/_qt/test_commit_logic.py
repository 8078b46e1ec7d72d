"""Commit / undo / propagation writes and the axis layout: pure numpy, no viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_focsam._qt.axes import AxesError, ImageAxes, stack_axis_choices
from napari_focsam._qt.commit import (
    ObjectBook,
    next_label_id,
    paint_frame,
    paint_object,
    undo_edit,
)
from napari_focsam.api.prompts_file import ObjectPrompt


def _disc(shape, r, c, radius):
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    return (rr - r) ** 2 + (cc - c) ** 2 <= radius ** 2


def test_paint_object_then_undo_restores_exactly():
    plane = np.zeros((20, 30), dtype=np.int32)
    plane[0:5, 0:5] = 3
    before = plane.copy()
    mask = _disc(plane.shape, 4, 4, 3)
    edit = paint_object(plane, mask, 7)
    assert (plane[mask] == 7).all()
    assert edit.n_pixels == int(mask.sum())
    assert (plane[~mask] == before[~mask]).all()
    undo_edit(plane, edit)
    np.testing.assert_array_equal(plane, before)


def test_only_background_keeps_other_objects():
    plane = np.zeros((20, 30), dtype=np.int32)
    plane[2:6, 2:6] = 3
    mask = _disc(plane.shape, 4, 4, 4)
    edit = paint_object(plane, mask, 7, only_background=True)
    assert (plane[2:6, 2:6] == 3).all()
    assert (plane[mask & (plane != 3)] == 7).all()
    assert (3, 3) not in set(zip(edit.rows.tolist(), edit.cols.tolist(), strict=True))


def test_replace_moves_the_object_on_its_plane():
    plane = np.zeros((20, 30), dtype=np.int32)
    plane[_disc(plane.shape, 5, 5, 2)] = 4
    new = _disc(plane.shape, 12, 20, 2)
    before = plane.copy()
    edit = paint_object(plane, new, 4, replace=True)
    assert set(np.unique(plane[~new])) == {0}
    undo_edit(plane, edit)
    np.testing.assert_array_equal(plane, before)
    kept = paint_object(plane, new, 4, replace=False)
    assert (plane == 4).sum() == before.astype(bool).sum() + new.sum()
    assert kept.n_pixels == int(new.sum())


def test_paint_frame_only_touches_the_propagated_ids():
    plane = np.zeros((10, 10), dtype=np.int32)
    plane[0:3, 0:3] = 1  # propagated object, old position
    plane[7:10, 7:10] = 9  # another object: never touched
    frame = np.zeros((10, 10), dtype=np.int32)
    frame[4:6, 4:6] = 1
    frame[8:10, 8:10] = 1  # overlaps object 9: not painted there
    frame[0:2, 8:10] = 2  # an id that is not propagated: ignored
    paint_frame(plane, frame, {1})
    assert (plane[0:3, 0:3] == 0).all()
    assert (plane[4:6, 4:6] == 1).all()
    assert (plane[7:10, 7:10] == 9).all()
    assert (plane[0:2, 8:10] == 0).all()


def test_next_label_id():
    assert next_label_id(np.zeros((3, 3), np.uint8)) == 1
    assert next_label_id(np.array([[0, 5]])) == 6
    assert next_label_id(np.array([[0, 5]]), 8, 2) == 9
    assert next_label_id(np.zeros(0)) == 1


def test_object_book_records_and_pops():
    book = ObjectBook()
    plane = np.zeros((5, 5), np.int32)
    e1 = paint_object(plane, plane == 0, 1)
    p1 = ObjectPrompt(1, 2, np.array([[1.0, 1.0]]), np.array([1]))
    book.record(1, p1, e1)
    p2 = ObjectPrompt(1, 4, np.array([[2.0, 2.0]]), np.array([1]))
    book.record(1, p2, e1)
    p3 = ObjectPrompt(1, 4, np.array([[3.0, 3.0]]), np.array([1]))
    book.record(1, p3, e1)  # a second commit on the same plane replaces its prompt
    assert book.ids == [1]
    assert [p.frame for p in book.all_prompts()] == [2, 4]
    assert book.prompts[1][(None, 4)] is p3
    assert book.pop().obj_id == 1
    assert book.prompts[1][(None, 4)] is p2
    book.pop()
    assert list(book.prompts[1]) == [(None, 2)]
    book.pop()
    assert book.ids == [] and book.pop() is None


def test_image_axes():
    assert stack_axis_choices(2) == [None]
    assert stack_axis_choices(3) == [0]
    assert stack_axis_choices(4) == [0, 1]
    with pytest.raises(AxesError):
        stack_axis_choices(5)
    axes = ImageAxes(4, 1)
    assert axes.outer_axis == 0 and axes.is_stack
    assert axes.plane_index(3, 2) == (2, 3)
    assert axes.position([2.2, 2.7, 10, 10]) == (3, 2)
    rgb = ImageAxes(3, 0, rgb=True)
    assert rgb.channel_axis == 3
    assert rgb.labels_shape((5, 10, 12, 3)) == (5, 10, 12)
    flat = ImageAxes(2)
    assert flat.plane_index(None, None) == () and flat.position([1, 2]) == (None, None)
    assert not axes.in_range((2, 4, 8, 8), 4, 0) and axes.in_range((2, 4, 8, 8), 3, 1)
    with pytest.raises(AxesError):
        ImageAxes(3, None)
