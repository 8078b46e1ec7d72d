"""The division action on label stacks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_focsam.tracking import TrackTable
from napari_focsam.tracking.division import DivisionError, divide_object, undo_division


def _stack():
    """Frames 0-1: one elongated cell (id 3); frames 2-3: two blobs still labelled 3; id 5
    elsewhere throughout."""
    lab = np.zeros((4, 20, 30), np.int32)
    lab[:2, 8:12, 5:21] = 3
    lab[2:, 8:12, 4:10] = 3
    lab[2:, 8:12, 16:22] = 3
    lab[:, 15:18, 25:28] = 5
    return lab


def test_two_blobs_become_the_two_daughters_and_the_lineage_records_it():
    lab = _stack()
    out, table, (d1, d2) = divide_object(lab, parent=3, frame=2)
    assert (d1, d2) == (6, 7)
    np.testing.assert_array_equal(out[:2], lab[:2])  # earlier frames untouched
    for t in (2, 3):
        assert not (out[t] == 3).any()
        left, right = out[t, 8:12, 4:10], out[t, 8:12, 16:22]
        assert {int(np.unique(left)[0]), int(np.unique(right)[0])} == {6, 7}
        assert np.unique(left).size == 1 and np.unique(right).size == 1
    np.testing.assert_array_equal(out == 5, lab == 5)  # other objects untouched
    assert table.end[3] == 1 and table.begin[6] == table.begin[7] == 2
    assert table.parent_of(6) == table.parent_of(7) == 3 and table.parent_of(5) is None
    assert (lab[2:] == 3).any()  # the input is not modified


def test_one_blob_is_split_across_its_long_axis():
    lab = _stack()
    out, _, (d1, d2) = divide_object(lab, parent=3, frame=1)
    left, right = out[1, 8:12, 5:13], out[1, 8:12, 13:21]
    assert {int(v) for v in np.unique(left)} | {int(v) for v in np.unique(right)} == {d1, d2}
    assert np.unique(left).size == 1 and np.unique(right).size == 1
    assert (out[1] == d1).sum() + (out[1] == d2).sum() == (lab[1] == 3).sum()


def test_chained_divisions_keep_earlier_links():
    lab = _stack()
    out, table, (d1, _) = divide_object(lab, 3, 2)
    out2, table2, (e1, e2) = divide_object(out, d1, 3, table)
    assert table2.parent_of(d1) == 3 and table2.parent_of(e1) == d1 == table2.parent_of(e2)
    assert table2.end[d1] == 2


def test_errors():
    lab = _stack()
    with pytest.raises(DivisionError, match="not on frame"):
        divide_object(lab, 9, 2)
    with pytest.raises(DivisionError, match="earlier frame"):
        divide_object(lab, 3, 0)
    lonely = np.zeros((3, 5, 5), np.int32)
    lonely[:, 2, 2] = 1
    with pytest.raises(DivisionError, match="fewer than 2 pixels"):
        divide_object(lonely, 1, 1)
    with pytest.raises(DivisionError, match=r"\(T, H, W\)"):
        divide_object(lab[0], 3, 1)
    assert isinstance(TrackTable.from_labels(lab), TrackTable)


def test_keep_links_copies_only_links_whose_tracks_still_exist():
    old = TrackTable(begin={1: 0, 2: 3, 3: 3, 4: 5}, end={1: 2, 2: 4, 3: 4, 4: 6},
                     parents={2: 1, 3: 1, 4: 2})
    lab = np.zeros((6, 4, 4), np.int32)
    lab[:3, 0, 0], lab[3:, 1, 1], lab[3:, 2, 2] = 1, 2, 3  # track 4 is gone
    fresh = TrackTable.from_labels(lab).keep_links(old)
    assert fresh.parents == {2: 1, 3: 1}
    assert TrackTable.from_labels(lab).keep_links(old, except_parent=1).parents == {}
    assert TrackTable.from_labels(lab).keep_links(None).parents == {}


def test_undo_division_gives_the_daughters_back_to_the_mother():
    lab = _stack()
    out, table, (d1, d2) = divide_object(lab, 3, 2)
    for which in (3, d1, d2):  # the mother or either daughter names the division
        back, restored, mother = undo_division(out, which, table)
        assert mother == 3
        np.testing.assert_array_equal(back, lab)
        assert restored.begin[3] == 0 and restored.end[3] == 3 and not restored.parents
        assert d1 not in restored and d2 not in restored
    assert (out[2:] == d1).any()  # the input is not modified


def test_chained_divisions_are_undone_latest_first():
    lab = _stack()
    out, table, (d1, d2) = divide_object(lab, 3, 2)
    out2, table2, (e1, e2) = divide_object(out, d1, 3, table)
    with pytest.raises(DivisionError, match=f"daughter {d1} of 3 divides again"):
        undo_division(out2, 3, table2)
    back, restored, mother = undo_division(out2, e2, table2)
    assert mother == d1
    np.testing.assert_array_equal(back, out)
    assert restored.parents == {d1: 3, d2: 3}  # the earlier division is kept
    back2, restored2, _ = undo_division(back, d2, restored)
    np.testing.assert_array_equal(back2, lab)
    assert not restored2.parents


def test_undo_division_needs_a_division():
    lab = _stack()
    table = TrackTable.from_labels(lab)
    with pytest.raises(DivisionError, match="no recorded division"):
        undo_division(lab, 5, table)
    with pytest.raises(DivisionError, match="no track 9"):
        undo_division(lab, 9, table)
