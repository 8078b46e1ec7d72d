"""napari_focsam.tracking: centroid tracks, the track table, CTC export / import."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile

from napari_focsam.tracking import (
    TrackTable,
    export_ctc,
    export_labels_tiff,
    label_frames,
    lineage_graph,
    read_ctc_tracks,
    split_gaps,
    tracks_from_labels,
)


def _stack(n_frames: int, shape=(4, 6)) -> np.ndarray:
    return np.zeros((n_frames, *shape), dtype=np.uint16)


@pytest.fixture
def gap_stack() -> np.ndarray:
    """Id 1 in frames 0-1; id 4 in frames 0 and 2-3 (gap at 1); ids 2, 3 in frames 2-3."""
    labels = _stack(4)
    labels[0:2, 0:2, 0:2] = 1
    labels[2:4, 0:2, 0:1] = 2
    labels[2:4, 0:2, 2:3] = 3
    labels[0, 3, 4:6] = 4
    labels[2:4, 3, 4:6] = 4
    return labels


# ---- tracks_from_labels ----------------------------------------------------------------------


def test_tracks_centroids_are_exact():
    labels = _stack(3, (5, 6))
    labels[0, 0:2, 0:2] = 1  # centroid (0.5, 0.5)
    labels[1, 2:5, 3] = 1  # (3, 3)
    labels[2, 4, 5] = 1  # (4, 5)
    labels[0, 4, 0:3] = 7  # (4, 1)
    labels[2, 0, 4:6] = 7  # (0, 4.5); absent in frame 1: skipped
    tracks, graph = tracks_from_labels(labels)
    expected = [[1, 0, 0.5, 0.5], [1, 1, 3, 3], [1, 2, 4, 5], [7, 0, 4, 1], [7, 2, 0, 4.5]]
    np.testing.assert_array_equal(tracks, np.asarray(expected, dtype=np.float64))
    assert tracks.dtype == np.float64
    assert graph == {}


def test_tracks_from_4d_labels_and_empty():
    labels = np.zeros((2, 2, 3, 3), dtype=np.int32)
    labels[1, 1, 0:2, 2] = 5
    tracks, _ = tracks_from_labels(labels)
    np.testing.assert_array_equal(tracks, [[5, 1, 1, 0.5, 2]])
    tracks, graph = tracks_from_labels(np.zeros((3, 4, 4), dtype=np.uint8))
    assert tracks.shape == (0, 4) and graph == {}


def test_tracks_graph_from_every_lineage_form(caplog):
    labels = _stack(2)
    labels[0, 0, 0] = 1
    labels[1, 0, 0] = 2
    labels[1, 3, 5] = 3
    table = TrackTable.from_labels(labels)
    table.divide(1, 1, (2, 3))
    expected = {2: [1], 3: [1]}
    rows = np.array([[1, 0, 0, 0], [2, 1, 1, 1], [3, 1, 1, 1]])
    for lineage in (table, {2: 1, 3: [1], 1: 0}, rows, table.to_rows()):
        assert tracks_from_labels(labels, lineage)[1] == expected
    with caplog.at_level(logging.WARNING):
        _, graph = tracks_from_labels(labels, {2: 1, 3: 9, 8: 1})
    assert graph == {2: [1]}
    assert "not in the labels" in caplog.text
    assert lineage_graph(None) == {}
    with pytest.raises(ValueError, match="N x 4"):
        lineage_graph(np.zeros((2, 3)))


def test_tracks_reject_bad_labels():
    with pytest.raises(ValueError, match="integer"):
        tracks_from_labels(np.zeros((2, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="negative"):
        tracks_from_labels(-np.ones((2, 3, 3), dtype=np.int32))
    with pytest.raises(ValueError, match="time first"):
        tracks_from_labels(np.zeros((3, 3), dtype=np.int32))


# ---- TrackTable ------------------------------------------------------------------------------


def test_table_from_labels_and_division(gap_stack):
    assert {k: v.tolist() for k, v in label_frames(gap_stack).items()} == {
        1: [0, 1], 2: [2, 3], 3: [2, 3], 4: [0, 2, 3]}
    table = TrackTable.from_labels(gap_stack)
    assert table.begin == {1: 0, 2: 2, 3: 2, 4: 0}
    assert table.end == {1: 1, 2: 3, 3: 3, 4: 3}
    assert table.parent_of(2) is None
    table.divide(1, 2, (2, 3))
    assert table.end[1] == 1 and table.begin[2] == table.begin[3] == 2
    assert table.parent_of(2) == table.parent_of(3) == 1
    assert table.children_of(1) == [2, 3]
    assert table.graph == {2: [1], 3: [1]}
    assert table.to_ctc_lines() == ["1 0 1 0", "2 2 3 1", "3 2 3 1", "4 0 3 0"]
    table.validate()
    with pytest.raises(KeyError):
        table.parent_of(99)


def test_divide_ends_the_parent_and_adds_new_daughters():
    table = TrackTable(begin={1: 0}, end={1: 9})
    table.divide(1, 5, (7, 8))
    assert (table.begin[1], table.end[1]) == (0, 4)
    assert (table.begin[7], table.end[7], table.parent_of(7)) == (5, 5, 1)
    assert 8 in table and len(table) == 3
    table.extend(7, 9)
    assert table.end[7] == 9
    np.testing.assert_array_equal(table.to_rows(), [[1, 0, 4, 0], [7, 5, 9, 1], [8, 5, 5, 1]])


@pytest.mark.parametrize(("parent", "frame", "daughters", "message"), [
    (9, 3, (2, 3), "no track 9"),
    (1, 0, (2, 3), "cannot divide"),
    (1, 2, (2, 2), "two distinct"),
    (1, 2, (1, 3), "bad daughter"),
    (1, 2, (0, 3), "bad daughter"),
    (1, 3, (2, 3), "begins at frame 2, not 3"),
])
def test_divide_rejects_bad_divisions(gap_stack, parent, frame, daughters, message):
    table = TrackTable.from_labels(gap_stack)
    with pytest.raises(ValueError, match=message):
        table.divide(parent, frame, daughters)


def test_divide_only_once_and_one_parent(gap_stack):
    table = TrackTable.from_labels(gap_stack)
    table.divide(1, 2, (2, 3))
    with pytest.raises(ValueError, match="already divided"):
        table.divide(1, 2, (5, 6))
    table.divide(4, 2, (5, 6))
    with pytest.raises(ValueError, match="already has parent"):
        TrackTable(begin={1: 0, 2: 0, 3: 1}, end={1: 0, 2: 0, 3: 1}, parents={3: 2}).divide(1, 1, (3, 4))


def test_validate_and_from_rows():
    with pytest.raises(ValueError, match="ends at frame 2"):
        TrackTable(begin={1: 0, 2: 2}, end={1: 2, 2: 3}, parents={2: 1}).validate()
    with pytest.raises(ValueError, match="parent 5 is not a track"):
        TrackTable(begin={2: 2}, end={2: 3}, parents={2: 5}).validate()
    with pytest.raises(ValueError, match="bad frame range"):
        TrackTable(begin={1: 3}, end={1: 2}).validate()
    with pytest.raises(ValueError, match="twice"):
        TrackTable.from_rows([[1, 0, 0, 0], [1, 1, 1, 0]])
    with pytest.raises(ValueError, match="4 values"):
        TrackTable.from_rows([[1, 0, 0]])


# ---- split_gaps and CTC export -----------------------------------------------------------------


def test_split_gaps(gap_stack):
    table = TrackTable.from_labels(gap_stack)
    table.divide(1, 2, (2, 3))
    labels, out = split_gaps(gap_stack, table)
    assert labels.dtype == gap_stack.dtype
    assert out.to_ctc_lines() == ["1 0 1 0", "2 2 3 1", "3 2 3 1", "4 0 0 0", "5 2 3 4"]
    np.testing.assert_array_equal(labels[0], gap_stack[0])
    np.testing.assert_array_equal(labels[2:], np.where(gap_stack[2:] == 4, 5, gap_stack[2:]))
    assert (gap_stack == 4).sum() == 6  # input untouched
    same, _ = split_gaps(labels, out)
    assert same is labels  # nothing left to split


def test_split_gaps_of_a_mother_reattaches_the_daughters():
    labels = _stack(4)
    labels[[0, 2], 0, 0] = 1  # mother, missing in frame 1
    labels[3, 0, 0] = 2
    labels[3, 3, 5] = 3
    table = TrackTable.from_labels(labels)
    table.divide(1, 3, (2, 3))
    _, out = split_gaps(labels, table)
    assert out.to_ctc_lines() == ["1 0 0 0", "2 3 3 4", "3 3 3 4", "4 2 2 1"]


def test_export_ctc_files_are_exact(tmp_path, gap_stack):
    table = TrackTable.from_labels(gap_stack)
    table.divide(1, 2, (2, 3))
    out = export_ctc(gap_stack, tmp_path / "01_RES", table)
    assert out == tmp_path / "01_RES"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["mask000.tif", "mask001.tif", "mask002.tif", "mask003.tif", "res_track.txt"]
    assert (out / "res_track.txt").read_text() == "1 0 1 0\n2 2 3 1\n3 2 3 1\n4 0 0 0\n5 2 3 4\n"
    for t in range(4):
        mask = tifffile.imread(out / f"mask{t:03d}.tif")
        assert mask.dtype == np.uint16 and mask.shape == (4, 6)
        np.testing.assert_array_equal(mask, np.where((gap_stack[t] == 4) & (t >= 2), 5, gap_stack[t]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_RES"]  # no temporary left


def test_export_ctc_ground_truth_names_and_round_trip(tmp_path, gap_stack):
    table = TrackTable.from_labels(gap_stack)
    table.divide(1, 2, (2, 3))
    out = export_ctc(gap_stack, tmp_path / "TRA", table, kind="GT", compression="zlib")
    assert (out / "man_track.txt").is_file() and (out / "man_track003.tif").is_file()
    expected = split_gaps(gap_stack, table)[1]
    assert read_ctc_tracks(out) == expected
    assert read_ctc_tracks(out / "man_track.txt") == expected
    with pytest.raises(ValueError, match="kind"):
        export_ctc(gap_stack, tmp_path / "x", kind="SEG")


def test_export_ctc_round_trip_of_the_sample_timelapse(tmp_path):
    from napari_focsam.samples import synthetic_cell_timelapse

    _, labels, lineage = synthetic_cell_timelapse(n_frames=8, shape=(96, 128), n_cells=3, seed=3,
                                                  n_divisions=1)
    out = export_ctc(labels, tmp_path / "GT", TrackTable.from_rows(lineage), kind="GT")
    np.testing.assert_array_equal(read_ctc_tracks(out).to_rows(), lineage)
    masks = np.stack([tifffile.imread(out / f"man_track{t:03d}.tif") for t in range(8)])
    np.testing.assert_array_equal(masks, labels)


def test_export_ctc_four_digit_names(tmp_path):
    labels = np.zeros((1000, 1, 2), dtype=np.uint16)
    labels[:, 0, 0] = 1
    out = export_ctc(labels, tmp_path / "long", compression=None)
    assert (out / "mask0000.tif").is_file() and (out / "mask0999.tif").is_file()
    assert not (out / "mask000.tif").exists()
    assert (out / "res_track.txt").read_text() == "1 0 999 0\n"


def test_export_ctc_refuses_to_overwrite(tmp_path, gap_stack):
    out = tmp_path / "RES"
    out.mkdir()
    export_ctc(gap_stack, out)  # an empty folder is fine
    with pytest.raises(FileExistsError, match="holds a CTC RES result; pass overwrite=True"):
        export_ctc(gap_stack[:2], out)
    assert (out / "mask003.tif").exists()
    export_ctc(gap_stack[:2], out, overwrite=True)  # an earlier result is replaced
    assert sorted(p.name for p in out.iterdir()) == ["mask000.tif", "mask001.tif", "res_track.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RES"]
    (out / "notes.txt").write_text("keep me")  # anything else is never replaced
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="holds files other than a CTC RES result"):
            export_ctc(gap_stack, out, overwrite=overwrite)
    assert (out / "notes.txt").read_text() == "keep me" and (out / "mask001.tif").exists()
    with pytest.raises(FileExistsError, match="other than a CTC GT result"):
        export_ctc(gap_stack[:2], tmp_path / "RES", kind="GT", overwrite=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="not a folder"):
        export_ctc(gap_stack, tmp_path / "file", overwrite=True)


def test_export_ctc_leaves_nothing_when_a_write_fails(tmp_path, gap_stack, monkeypatch):
    real_imwrite = tifffile.imwrite
    calls = []

    def failing_imwrite(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise OSError("disk full")
        return real_imwrite(*args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", failing_imwrite)
    with pytest.raises(OSError, match="disk full"):
        export_ctc(gap_stack, tmp_path / "RES")
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one

    # a failed overwrite keeps the previous result intact
    monkeypatch.setattr(tifffile, "imwrite", real_imwrite)
    export_ctc(gap_stack[:2], tmp_path / "RES")
    calls.clear()
    monkeypatch.setattr(tifffile, "imwrite", failing_imwrite)
    with pytest.raises(OSError, match="disk full"):
        export_ctc(gap_stack, tmp_path / "RES", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RES"]
    assert sorted(p.name for p in (tmp_path / "RES").iterdir()) == ["mask000.tif", "mask001.tif",
                                                                   "res_track.txt"]


def test_export_ctc_rejects_a_lineage_that_breaks_the_rules(tmp_path, gap_stack):
    table = TrackTable.from_labels(gap_stack)
    table.divide(1, 2, (2, 3))
    labels = gap_stack.copy()
    labels[2, 1, 1] = 1  # the mother is still present when her daughters begin
    with pytest.raises(ValueError, match="parent 1 ends at frame 2"):
        export_ctc(labels, tmp_path / "RES", table)
    big = np.zeros((1, 1, 2), dtype=np.int64)
    big[0, 0, 1] = 70000
    with pytest.raises(ValueError, match="uint16"):
        export_ctc(big, tmp_path / "RES")
    assert list(tmp_path.iterdir()) == []


def test_read_ctc_tracks_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_ctc_tracks(tmp_path)
    bad = tmp_path / "res_track.txt"
    bad.write_text("1 0 3 0\n\n2 1 x 0\n")
    with pytest.raises(ValueError, match=r"res_track.txt:3: expected 'L B E P'"):
        read_ctc_tracks(bad)
    bad.write_text("1 0 3\n")
    with pytest.raises(ValueError, match=r":1:"):
        read_ctc_tracks(tmp_path)


def test_export_labels_tiff(tmp_path):
    labels = np.zeros((3, 4, 5), dtype=np.int64)
    labels[1, 1:3, 2:4] = 300
    path = export_labels_tiff(labels, tmp_path / "sub" / "labels.tif")
    saved = tifffile.imread(path)
    assert saved.dtype == np.uint16
    np.testing.assert_array_equal(saved, labels)
    with tifffile.TiffFile(path) as tif:  # a time-lapse, as Fiji should see it
        assert tif.is_imagej and tif.series[0].axes == "TYX"
