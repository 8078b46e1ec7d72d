"""Prompts files of the headless API: our CSV, napari Points-layer CSV exports and JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from api_helpers import write_csv

from napari_focsam.api.prompts_file import PromptsFileError, group_prompts, read_prompts


def _by_key(prompts):
    return {(p.obj_id, p.frame, p.outer): p for p in prompts}


# ---------------------------------------------------------------------- our CSV
def test_csv_groups_points_and_boxes_per_object_and_frame(tmp_path):
    path = write_csv(tmp_path / "p.csv", [
        "1,0,point,120.5,80,1,,,,",
        "2,3,box,,,,40,50,90,110",
        "1,0,point,140,95,0,,,,",
        "1,2,point,10,11,,,,,",
        "2,3,point,60,70,1,,,,",
    ])
    prompts = read_prompts(path)
    assert [(p.obj_id, p.frame) for p in prompts] == [(1, 0), (1, 2), (2, 3)]
    by = _by_key(prompts)
    first = by[(1, 0, None)]
    np.testing.assert_array_equal(first.points_rc, [[120.5, 80], [140, 95]])
    np.testing.assert_array_equal(first.labels, [1, 0])
    assert first.box_rc is None
    np.testing.assert_array_equal(by[(1, 2, None)].labels, [1])  # empty label = positive
    both = by[(2, 3, None)]
    np.testing.assert_array_equal(both.box_rc, [40, 50, 90, 110])
    np.testing.assert_array_equal(both.points_rc, [[60, 70]])
    assert both.points_rc.dtype == np.float64 and both.labels.dtype == np.int64


def test_csv_outer_column_splits_groups(tmp_path):
    path = write_csv(tmp_path / "p.csv", [
        "1,2,point,5,6,1,0",
        "1,2,point,7,8,1,1",
        "1,2,point,9,9,0,1",
    ], header="object_id,frame,kind,row,col,label,outer")
    by = _by_key(read_prompts(path))
    assert set(by) == {(1, 2, 0), (1, 2, 1)}
    np.testing.assert_array_equal(by[(1, 2, 1)].points_rc, [[7, 8], [9, 9]])
    np.testing.assert_array_equal(by[(1, 2, 1)].labels, [1, 0])


def test_csv_2d_file_without_frame_column(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["3,point,4,5,true", "3,point,6,7,neg", "1,box,,,,0,0,8,9"],
                     header="object_id,kind,row,col,label,row0,col0,row1,col1")
    prompts = read_prompts(path)
    assert [(p.obj_id, p.frame, p.outer) for p in prompts] == [(1, None, None), (3, None, None)]
    np.testing.assert_array_equal(prompts[1].labels, [1, 0])
    assert group_prompts(prompts).keys() == {None}


@pytest.mark.parametrize(("text", "expected"), [
    ("1", 1), ("0", 0), ("1.0", 1), ("True", 1), ("false", 0), ("positive", 1), ("neg", 0),
    ("+", 1), ("-", 0), ("", 1),
])
def test_csv_label_values(tmp_path, text, expected):
    path = write_csv(tmp_path / "p.csv", [f"1,0,point,1,2,{text}"],
                     header="object_id,frame,kind,row,col,label")
    assert read_prompts(path)[0].labels.tolist() == [expected]


def test_group_prompts_by_frame_in_object_order(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["5,1,point,1,1", "2,1,point,2,2", "3,0,point,3,3"],
                     header="object_id,frame,kind,row,col")
    groups = group_prompts(read_prompts(path))
    assert {f: [p.obj_id for p in ps] for f, ps in groups.items()} == {0: [3], 1: [2, 5]}


# ---------------------------------------------------------------------- napari exports
def test_napari_points_export_3d(tmp_path):
    path = write_csv(tmp_path / "pts.csv", [
        "0,2.0,10.5,20.25", "1,2.0,11,21", "2,4.0,30,40",
    ], header="index,axis-0,axis-1,axis-2")
    prompts = read_prompts(path)
    assert [(p.obj_id, p.frame, p.outer) for p in prompts] == [(1, 2, None), (1, 4, None)]
    np.testing.assert_array_equal(prompts[0].points_rc, [[10.5, 20.25], [11, 21]])
    assert prompts[0].labels.tolist() == [1, 1]


def test_napari_points_export_4d_with_features(tmp_path):
    path = write_csv(tmp_path / "pts.csv", [
        "0,1,3,10,20,2,True", "1,1,3,12,22,2,False", "2,0,3,5,6,1,True", "3,1,4,7,8,2,True",
    ], header="index,axis-0,axis-1,axis-2,axis-3,object_id,positive")
    prompts = read_prompts(path)
    by = _by_key(prompts)
    assert set(by) == {(2, 3, 1), (1, 3, 0), (2, 4, 1)}
    np.testing.assert_array_equal(by[(2, 3, 1)].points_rc, [[10, 20], [12, 22]])
    assert by[(2, 3, 1)].labels.tolist() == [1, 0]
    # sorted by object, then outer, then frame
    assert [(p.obj_id, p.outer, p.frame) for p in prompts] == [(1, 0, 3), (2, 1, 3), (2, 1, 4)]


def test_napari_points_export_2d_has_no_frame(tmp_path):
    path = write_csv(tmp_path / "pts.csv", ["0,3,4,0"], header="index,axis-0,axis-1,label")
    (p,) = read_prompts(path)
    assert (p.frame, p.outer) == (None, None)
    assert p.points_rc.tolist() == [[3, 4]] and p.labels.tolist() == [0]


def test_napari_export_non_integer_frame_is_an_error(tmp_path):
    path = write_csv(tmp_path / "pts.csv", ["0,2.5,3,4"], header="index,axis-0,axis-1,axis-2")
    with pytest.raises(PromptsFileError, match="frame must be an integer"):
        read_prompts(path)


# ---------------------------------------------------------------------- JSON
def test_json_object_form(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"objects": [
        {"object_id": 1, "frame": 0, "points": [[120.5, 80], [140, 95]], "labels": [1, 0]},
        {"object_id": 2, "frame": 3, "box": [40, 50, 90, 110]},
        {"object_id": 2, "frame": 3, "outer": 1, "points": [[1, 2]]},
    ]}))
    by = _by_key(read_prompts(path))
    assert set(by) == {(1, 0, None), (2, 3, None), (2, 3, 1)}
    np.testing.assert_array_equal(by[(1, 0, None)].points_rc, [[120.5, 80], [140, 95]])
    assert by[(1, 0, None)].labels.tolist() == [1, 0]
    np.testing.assert_array_equal(by[(2, 3, None)].box_rc, [40, 50, 90, 110])
    assert len(by[(2, 3, None)].points_rc) == 0
    assert by[(2, 3, 1)].labels.tolist() == [1]


def test_json_bare_list_2d(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"object_id": 4, "points": [[3, 4]], "labels": [True]}]))
    (p,) = read_prompts(path)
    assert (p.obj_id, p.frame) == (4, None) and p.labels.tolist() == [1]


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(("header", "rows", "match"), [
    ("frame,kind,row,col", ["0,point,1,2"], r"missing column\(s\) object_id"),
    ("object_id,frame,row,col", ["1,0,1,2"], r"missing column\(s\) kind"),
    ("object_id,frame,kind,label", ["1,0,point,1"], r"point rows need column\(s\) row, col"),
    ("object_id,frame,kind,row,col", ["1,0,box,1,2"], r"box rows need column\(s\) row0, col0"),
    ("object_id,frame,kind,row,col", ["1,0,point,abc,2"], "row must be a number, got 'abc'"),
    ("object_id,frame,kind,row,col", ["1,0,point,nan,2"], "row must be finite"),
    ("object_id,frame,kind,row,col", ["1,0,point,1,inf"], "col must be finite"),
    ("object_id,frame,kind,row,col", ["1,0,point,,2"], "row must be a number"),
    ("object_id,frame,kind,row,col", ["x,0,point,1,2"], "object_id must be a number"),
    ("object_id,frame,kind,row,col", ["0,0,point,1,2"], "object_id must be an integer >= 1"),
    ("object_id,frame,kind,row,col", ["1,-1,point,1,2"], "frame must be an integer >= 0"),
    ("object_id,frame,kind,row,col", ["1,1.5,point,1,2"], "frame must be an integer >= 0"),
    ("object_id,frame,kind,row,col,label", ["1,0,point,1,2,2"], "label must be 1 .positive. or 0"),
    ("object_id,frame,kind,row,col,label", ["1,0,point,1,2,maybe"], "label must be a number"),
    ("object_id,frame,kind,row,col", ["1,0,circle,1,2"], "kind must be 'point' or 'box', got 'circle'"),
    ("object_id,frame,kind,row0,col0,row1,col1", ["1,0,box,5,1,5,9"], "row1 > row0"),
    ("object_id,frame,kind,row0,col0,row1,col1", ["1,0,box,5,9,8,2"], "col1 > col0"),
    ("object_id,frame,kind,row0,col0,row1,col1", ["1,0,box,1,1,5,5", "1,0,box,2,2,6,6"],
     "object 1 already has a box on frame 0"),
    ("object_id,frame,kind,row,col", ["1,0,point,1,2", "2,,point,1,2"],
     "some prompts have a frame and others do not"),
    ("object_id,frame,kind,row,col", [], "no prompts in the file"),
])
def test_csv_errors(tmp_path, header, rows, match):
    path = write_csv(tmp_path / "p.csv", rows, header=header)
    with pytest.raises(PromptsFileError, match=match):
        read_prompts(path)


def test_error_names_file_and_line(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["1,0,point,1,2", "1,0,point,x,2"],
                     header="object_id,frame,kind,row,col")
    with pytest.raises(PromptsFileError, match=r"p\.csv:3: row must be a number"):
        read_prompts(path)


def test_empty_file(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("")
    with pytest.raises(PromptsFileError, match="empty file"):
        read_prompts(path)


def test_wrong_extension_and_missing_file(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("object_id,frame,kind,row,col\n1,0,point,1,2\n")
    with pytest.raises(PromptsFileError, match=r"\.csv or \.json, got \.txt"):
        read_prompts(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_prompts(tmp_path / "nope.csv")


def test_binary_csv_is_a_prompts_error(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"\xff\xfe\x00\x01object_id\x00\x00")
    with pytest.raises(PromptsFileError, match="not a UTF-8 text CSV"):
        read_prompts(path)


@pytest.mark.parametrize(("content", "match"), [
    ("{not json", "not valid JSON"),
    ('{"things": []}', "expected a list of objects"),
    ("[]", "no prompts in the file"),
    ('[{"frame": 0, "points": [[1, 2]]}]', "needs an 'object_id'"),
    ('[{"object_id": 1, "frame": 0}]', "give 'points' and/or a 'box'"),
    ('[{"object_id": 1, "frame": 0, "points": [[1, 2, 3]]}]', r"list of \[row, col\] pairs"),
    ('[{"object_id": 1, "frame": 0, "points": [[1, 2]], "labels": [1, 0]}]', "1 points but 2 labels"),
    ('[{"object_id": 1, "frame": 0, "points": [[1, 2]], "labels": 1}]', "labels must be a list"),
    ('[{"object_id": 1, "frame": 0, "points": [[1, 2]], "labels": [5]}]', "label must be 1"),
    ('[{"object_id": 1, "frame": 0, "points": [["a", 2]]}]', "row must be a number"),
    ('[{"object_id": 1, "frame": 0, "box": [1, 2, 3]}]', r"box must be \[row0, col0, row1, col1\]"),
    ('[{"object_id": 1, "frame": 0, "box": [5, 2, 3, 9]}]', "row1 > row0"),
    ('[{"object_id": 1, "frame": 0, "box": [1, 2, 3, NaN]}]', "box must be finite"),
    ('[{"object_id": 1, "frame": 0, "points": [[1, 2]]}, {"object_id": 2, "points": [[1, 2]]}]',
     "some prompts have a frame and others do not"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # RecursionError in json
    ('[{"object_id": ' + "9" * 5000 + ', "points": [[1, 2]]}]', "not valid JSON"),  # > int digits
    ('[{"object_id": 9223372036854775808, "points": [[1, 2]]}]',
     "object_id must be at most 9223372036854775807"),
])
def test_json_errors(tmp_path, content, match):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(PromptsFileError, match=match):
        read_prompts(path)


@pytest.mark.parametrize("text", ["2147483648", "9007199254740993", "9223372036854775807"])
def test_large_object_ids_are_read_exactly(tmp_path, text):
    """Ids beyond int32 (and beyond float64's exact integers) keep their value."""
    csv_path = write_csv(tmp_path / "p.csv", [f"{text},0,point,1,2,1"])
    json_path = tmp_path / "p.json"
    json_path.write_text(f'[{{"object_id": {text}, "frame": 0, "points": [[1, 2]]}}]')
    for path in (csv_path, json_path):
        (prompt,) = read_prompts(path)
        assert prompt.obj_id == int(text)


def test_object_ids_beyond_int64_are_refused_when_read(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["1e30,0,point,1,2,1"])
    with pytest.raises(PromptsFileError, match=r"p.csv:2: object_id must be at most"):
        read_prompts(path)
