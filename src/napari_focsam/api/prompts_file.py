"""Prompt files of the headless API and the CLI: points and boxes per object and frame.

Two formats, both in napari's (…, row, col) order and in the image's pixel (data) coordinates:

CSV (one prompt per row)::

    object_id,frame,kind,row,col,label,row0,col0,row1,col1
    1,0,point,120.5,80,1,,,,
    1,0,point,140,95,0,,,,
    2,3,box,,,,40,50,90,110

``kind`` is ``point`` (needs ``row``, ``col``; ``label`` 1 positive / 0 negative, default 1) or
``box`` (needs ``row0, col0, row1, col1``). ``frame`` is the index along the stack axis; leave
the column out (or empty) for a 2D image. For 4D data an ``outer`` column gives the index along
the outer axis (e.g. t when the frames run along z). A napari Points-layer export (``axis-0, axis-1, …``)
is read too: the last two axes are (row, col), the one before is the frame (and the one before that the
outer index of 4D data), and optional
``object_id`` / ``label`` (or ``positive``) columns give the object and the sign.

JSON::

    {"objects": [{"object_id": 1, "frame": 0, "points": [[120.5, 80], [140, 95]],
                  "labels": [1, 0]},
                 {"object_id": 2, "frame": 3, "box": [40, 50, 90, 110]}]}

(a bare list of such objects is accepted as well).
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MissingFileError, UserError

__all__ = ["MAX_OBJECT_ID", "ObjectPrompt", "PromptsFileError", "group_prompts", "read_prompts"]

#: Largest object id: labels are int32, or int64 when an id needs it.
MAX_OBJECT_ID = 2**63 - 1


class PromptsFileError(UserError, ValueError):
    """A prompts file that cannot be read: missing columns, bad values, unknown kinds."""


@dataclass
class ObjectPrompt:
    """All prompts of one object on one frame.

    Attributes
    ----------
    obj_id : int
        Object id (>= 1; it becomes the label value).
    frame : int or None
        Index along the stack axis; None for a 2D image.
    points_rc : np.ndarray
        ``(N, 2)`` float (row, col).
    labels : np.ndarray
        ``(N,)`` int, 1 positive / 0 negative.
    box_rc : np.ndarray or None
        ``(4,)`` (row0, col0, row1, col1).
    outer : int or None
        For 4D data, the index along the outer axis (e.g. t when frames run along z).
    mask : np.ndarray or None
        ``(H, W)`` bool mask prompt (a polygon or ellipse drawn in napari): on its own it *is*
        the object on this frame (and enters SAM 2 as a mask prompt); points and a box given
        with it take precedence for drawing.
    """

    obj_id: int
    frame: int | None
    points_rc: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    box_rc: np.ndarray | None = None
    outer: int | None = None
    mask: np.ndarray | None = None


def _number(value: object, what: str, where: str) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PromptsFileError(f"{where}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise PromptsFileError(f"{where}: {what} must be finite, got {value!r}")
    return x


def _integer(value: object, what: str, where: str, minimum: int,
             maximum: int | None = None) -> int:
    """`value` as an exact integer (``"2147483648"`` stays exact; ``"3.0"`` and ``1e3`` are
    accepted), ``minimum <= value <= maximum``."""
    x: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        x = value
    elif isinstance(value, str):
        try:
            x = int(value.strip())
        except ValueError:  # "3.0", "1e3", or not a number: read as a float below
            x = None
    if x is None:
        number = _number(value, what, where)
        if number != int(number):
            raise PromptsFileError(f"{where}: {what} must be an integer >= {minimum}, got {value!r}")
        x = int(number)
    if x < minimum:
        raise PromptsFileError(f"{where}: {what} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and x > maximum:
        raise PromptsFileError(f"{where}: {what} must be at most {maximum}, got {value!r}")
    return x


def _object_id(value: object, where: str) -> int:
    return _integer(value, "object_id", where, 1, MAX_OBJECT_ID)


def _frame(value: object, where: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _integer(value, "frame", where, 0)


def _label(value: object, where: str) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 1
    text = str(value).strip().lower()
    if text in ("true", "positive", "pos", "+"):
        return 1
    if text in ("false", "negative", "neg", "-"):
        return 0
    label = _integer(value, "label", where, 0)
    if label not in (0, 1):
        raise PromptsFileError(f"{where}: label must be 1 (positive) or 0 (negative), got {value!r}")
    return label


class _Collector:
    """Accumulates points and boxes per (object, frame)."""

    def __init__(self) -> None:
        self.points: dict[tuple[int, int | None], list[tuple[float, float, int]]] = defaultdict(list)
        self.boxes: dict[tuple[int, int | None], np.ndarray] = {}

    def point(self, key, row: float, col: float, label: int) -> None:
        self.points[key].append((row, col, label))

    def box(self, key, box: list[float], where: str) -> None:
        if key in self.boxes:
            raise PromptsFileError(f"{where}: object {key[0]} already has a box on frame {key[1]}")
        r0, c0, r1, c1 = box
        if r1 <= r0 or c1 <= c0:
            raise PromptsFileError(f"{where}: box {box} must have row1 > row0 and col1 > col0")
        self.boxes[key] = np.asarray(box, dtype=np.float64)

    def prompts(self) -> list[ObjectPrompt]:
        keys = sorted(set(self.points) | set(self.boxes),
                      key=lambda k: (k[0], k[2] or 0, -1 if k[1] is None else k[1]))
        out = []
        for key in keys:
            pts = self.points.get(key, [])
            out.append(ObjectPrompt(
                key[0], key[1],
                np.asarray([(r, c) for r, c, _ in pts], dtype=np.float64).reshape(-1, 2),
                np.asarray([lab for *_, lab in pts], dtype=np.int64),
                self.boxes.get(key), key[2]))
        frames = {p.frame is None for p in out}
        if len(frames) > 1:
            raise PromptsFileError("some prompts have a frame and others do not: give a frame to "
                                   "all of them (stack) or to none (2D image)")
        return out


def _read_csv(path: Path) -> list[ObjectPrompt]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise PromptsFileError(f"{path}: empty file (no header row)")
        columns = [c.strip() for c in reader.fieldnames]
        rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    axes = sorted((c for c in columns if c.startswith("axis-") and c[5:].isdigit()),
                  key=lambda c: int(c[5:]))
    collector = _Collector()
    if axes:  # napari Points-layer export
        if len(axes) < 2:
            raise PromptsFileError(f"{path}: a napari points file needs at least 2 axis columns")
        for i, row in enumerate(rows, start=2):
            where = f"{path}:{i}"
            obj = _object_id(row.get("object_id") or 1, where)
            frame = _integer(row[axes[-3]], "frame", where, 0) if len(axes) > 2 else None
            outer = _integer(row[axes[-4]], "outer", where, 0) if len(axes) > 3 else None
            label = _label(row.get("label", row.get("positive")), where)
            collector.point((obj, frame, outer), _number(row[axes[-2]], "row", where),
                            _number(row[axes[-1]], "col", where), label)
        return collector.prompts()
    missing = [c for c in ("object_id", "kind") if c not in columns]
    if missing:
        raise PromptsFileError(f"{path}: missing column(s) {', '.join(missing)}; columns are "
                               f"{', '.join(columns)} (see napari_focsam.api.prompts_file)")
    for i, row in enumerate(rows, start=2):
        where = f"{path}:{i}"
        obj = _object_id(row["object_id"], where)
        frame = _frame(row.get("frame"), where)
        outer = _frame(row.get("outer"), where)
        key = (obj, frame, outer)
        kind = (row["kind"] or "").strip().lower()
        if kind == "point":
            need = ("row", "col")
        elif kind == "box":
            need = ("row0", "col0", "row1", "col1")
        else:
            raise PromptsFileError(f"{where}: kind must be 'point' or 'box', got {row['kind']!r}")
        absent = [c for c in need if c not in columns]
        if absent:
            raise PromptsFileError(f"{path}: {kind} rows need column(s) {', '.join(absent)}")
        values = [_number(row[c], c, where) for c in need]
        if kind == "point":
            collector.point(key, values[0], values[1], _label(row.get("label"), where))
        else:
            collector.box(key, values, where)
    return collector.prompts()


def _read_json(path: Path) -> list[ObjectPrompt]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except RecursionError:
        raise PromptsFileError(f"{path}: nested too deeply to be a prompts file (expected "
                               "{'objects': [...]} with lists of points)") from None
    except ValueError as exc:  # JSONDecodeError, or an integer longer than Python reads
        raise PromptsFileError(f"{path}: not valid JSON ({exc})") from None
    objects = data.get("objects") if isinstance(data, dict) else data
    if not isinstance(objects, list):
        raise PromptsFileError(f"{path}: expected a list of objects or {{'objects': [...]}}")
    collector = _Collector()
    for i, item in enumerate(objects):
        where = f"{path}: objects[{i}]"
        if not isinstance(item, dict) or "object_id" not in item:
            raise PromptsFileError(f"{where}: each object needs an 'object_id'")
        obj = _object_id(item["object_id"], where)
        frame = _frame(item.get("frame"), where)
        key = (obj, frame, _frame(item.get("outer"), where))
        points, labels, box = item.get("points"), item.get("labels"), item.get("box")
        if points is None and box is None:
            raise PromptsFileError(f"{where}: give 'points' and/or a 'box'")
        if points is not None:
            pts = np.asarray(points, dtype=object)
            if pts.ndim != 2 or pts.shape[1] != 2:
                raise PromptsFileError(f"{where}: points must be a list of [row, col] pairs")
            if labels is not None and not isinstance(labels, list | tuple):
                raise PromptsFileError(f"{where}: labels must be a list (one per point), "
                                       f"got {labels!r}")
            labs = [1] * len(pts) if labels is None else list(labels)
            if len(labs) != len(pts):
                raise PromptsFileError(f"{where}: {len(pts)} points but {len(labs)} labels")
            for (r, c), lab in zip(pts, labs, strict=True):
                collector.point(key, _number(r, "row", where), _number(c, "col", where),
                                _label(lab, where))
        if box is not None:
            if not isinstance(box, list | tuple) or len(box) != 4:
                raise PromptsFileError(f"{where}: box must be [row0, col0, row1, col1]")
            collector.box(key, [_number(v, "box", where) for v in box], where)
    return collector.prompts()


def read_prompts(path: str | Path) -> list[ObjectPrompt]:
    """Read a CSV or JSON prompts file (format in the module docstring).

    Raises
    ------
    PromptsFileError
        Unknown extension, missing columns, bad values, or no prompts at all.
    FileNotFoundError
        No such file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"prompts file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            prompts = _read_csv(path)
        elif suffix == ".json":
            prompts = _read_json(path)
        else:
            raise PromptsFileError(f"{path}: prompts files are .csv or .json, got "
                                   f"{suffix or 'none'}")
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PromptsFileError(f"{path}: not a UTF-8 text {suffix[1:].upper()} file ({exc})") from None
    if not prompts:
        raise PromptsFileError(f"{path}: no prompts in the file")
    return prompts


def group_prompts(prompts: list[ObjectPrompt]) -> dict[int | None, list[ObjectPrompt]]:
    """Prompts by frame (None for 2D), in object-id order."""
    out: dict[int | None, list[ObjectPrompt]] = defaultdict(list)
    for p in sorted(prompts, key=lambda p: p.obj_id):
        out[p.frame].append(p)
    return dict(out)
