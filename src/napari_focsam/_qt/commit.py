"""Writing objects into a labels array, and undoing it (numpy, no Qt).

Every write returns a `PixelEdit`: the coordinates of exactly the pixels it changed and their
previous values, so undo restores those pixels and nothing else. `ObjectBook` remembers the
committed objects, the prompts that drew each of them on each frame (what propagation
re-uses) and the undo history of commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..api.prompts_file import ObjectPrompt
from ..errors import UserError
from .axes import STACK_META_KEY, ImageAxes, stack_metadata

__all__ = ["CommitRecord", "LabelsLayerError", "ObjectBook", "PixelEdit", "next_label_id",
           "paint_frame", "paint_object", "record_stack", "undo_edit", "writable_plane"]

#: (outer, frame) of one plane; None entries for data without that axis.
PlaneKey = tuple[int | None, int | None]


class LabelsLayerError(UserError, TypeError):
    """A labels layer FocSAM cannot write into (its data is not an in-memory numpy array)."""


def writable_plane(layer, plane: tuple[int, ...]) -> np.ndarray:
    """The ``(H, W)`` plane `plane` of a Labels layer's data, as a writable view (``()``: all).

    Raises
    ------
    LabelsLayerError
        The layer's data is not an in-memory numpy array (e.g. dask, zarr).
    """
    data = layer.data
    if not isinstance(data, np.ndarray):
        raise LabelsLayerError(f"the labels layer '{layer.name}' is not an in-memory numpy array "
                               f"({type(data).__name__}): FocSAM cannot write into it")
    return data[plane] if plane else data


def record_stack(layer, axes: ImageAxes) -> None:
    """Note in a labels layer's ``metadata`` what its stack axis is (z, t or planes), so the
    tracking dock knows a time-lapse; 2D layers get nothing."""
    if not axes.is_stack:
        return
    entry = stack_metadata(axes)
    if layer.metadata.get(STACK_META_KEY) != entry:
        layer.metadata = {**layer.metadata, STACK_META_KEY: entry}  # assigned: napari's event fires


@dataclass
class PixelEdit:
    """Pixels changed in one ``(H, W)`` plane of a labels array.

    Attributes
    ----------
    plane : tuple of int
        Index of the plane in the labels array (see `ImageAxes.plane_index`).
    rows, cols : np.ndarray
        Coordinates of the changed pixels.
    old : np.ndarray
        Their values before the edit.
    """

    plane: tuple[int, ...]
    rows: np.ndarray
    cols: np.ndarray
    old: np.ndarray

    @property
    def n_pixels(self) -> int:
        return len(self.rows)


def _edit(plane_index: tuple[int, ...], plane: np.ndarray, new: np.ndarray) -> PixelEdit:
    """Write `new` into `plane` where they differ; return what changed."""
    rows, cols = np.nonzero(plane != new)
    edit = PixelEdit(plane_index, rows, cols, np.asarray(plane[rows, cols]).copy())
    plane[rows, cols] = new[rows, cols]
    return edit


def paint_object(plane: np.ndarray, mask: np.ndarray, obj_id: int, *, only_background: bool = False,
                 replace: bool = True, plane_index: tuple[int, ...] = ()) -> PixelEdit:
    """Paint one object into one ``(H, W)`` labels plane, in place.

    Parameters
    ----------
    plane : np.ndarray
        ``(H, W)`` integer labels (a view into the layer's data: written in place).
    mask : np.ndarray
        ``(H, W)`` bool, the object.
    obj_id : int
        Its label value (>= 1).
    only_background : bool
        Paint only pixels that are 0 (other objects are never overwritten).
    replace : bool
        First remove the pixels of `obj_id` outside `mask` (an object's new outline on this
        plane replaces its old one).
    plane_index : tuple of int
        Recorded in the returned edit.

    Returns
    -------
    PixelEdit
        Exactly the pixels that changed, with their old values.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != plane.shape:
        raise ValueError(f"mask of shape {mask.shape} does not match the labels plane {plane.shape}")
    new = np.array(plane, copy=True)
    if replace:
        new[(new == obj_id) & ~mask] = 0
    target = mask & (plane == 0) if only_background else mask
    if only_background:
        target |= mask & (plane == obj_id)
    new[target] = obj_id
    return _edit(plane_index, plane, new)


def paint_frame(plane: np.ndarray, frame_labels: np.ndarray, ids, *,
                plane_index: tuple[int, ...] = ()) -> PixelEdit:
    """Write propagated objects into one plane: clear `ids`, then paint them from `frame_labels`.

    Pixels of other objects (ids not in `ids`) are left untouched: a propagated object is only
    painted over the background or over the propagated objects.

    Parameters
    ----------
    plane : np.ndarray
        ``(H, W)`` integer labels, written in place.
    frame_labels : np.ndarray
        ``(H, W)`` the segmenter's labels of this frame.
    ids : iterable of int
        The propagated object ids.
    """
    ids = np.asarray(sorted({int(i) for i in ids}), dtype=np.int64)
    frame_labels = np.asarray(frame_labels)
    if frame_labels.shape != plane.shape:
        raise ValueError(f"frame of shape {frame_labels.shape} does not match the labels plane "
                         f"{plane.shape}")
    new = np.array(plane, copy=True)
    ours = np.isin(new, ids)
    new[ours] = 0
    paint = np.isin(frame_labels, ids) & (ours | (plane == 0))
    new[paint] = frame_labels[paint]
    return _edit(plane_index, plane, new)


def undo_edit(plane: np.ndarray, edit: PixelEdit) -> None:
    """Restore the pixels of `edit` in `plane` (in place)."""
    plane[edit.rows, edit.cols] = edit.old


def next_label_id(labels: np.ndarray, *taken: int) -> int:
    """A new object id: one more than the largest of `labels` and `taken`."""
    top = int(np.max(labels)) if np.size(labels) else 0
    return max([top, *[int(t) for t in taken], 0]) + 1


@dataclass
class CommitRecord:
    """One commit, as the undo history keeps it."""

    obj_id: int
    key: PlaneKey
    edit: PixelEdit
    previous_prompt: ObjectPrompt | None
    new_object: bool


@dataclass
class ObjectBook:
    """Committed objects: their prompts per plane and the undo history of commits."""

    prompts: dict[int, dict[PlaneKey, ObjectPrompt]] = field(default_factory=dict)
    history: list[CommitRecord] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return sorted(self.prompts)

    def record(self, obj_id: int, prompt: ObjectPrompt, edit: PixelEdit) -> CommitRecord:
        """Remember a commit of `obj_id` drawn from `prompt` (replacing its prompt on that plane)."""
        key: PlaneKey = (prompt.outer, prompt.frame)
        planes = self.prompts.get(obj_id)
        new_object = planes is None
        planes = self.prompts.setdefault(obj_id, {})
        record = CommitRecord(obj_id, key, edit, planes.get(key), new_object)
        planes[key] = prompt
        self.history.append(record)
        return record

    def pop(self) -> CommitRecord | None:
        """Forget the last commit (its prompt; the object too if it was new); return it."""
        if not self.history:
            return None
        record = self.history.pop()
        planes = self.prompts.get(record.obj_id, {})
        if record.previous_prompt is not None:
            planes[record.key] = record.previous_prompt
        else:
            planes.pop(record.key, None)
        if record.new_object or not planes:
            self.prompts.pop(record.obj_id, None)
        return record

    def forget_history(self) -> None:
        """Drop the undo history (after a propagation rewrote the planes it refers to)."""
        self.history.clear()

    def all_prompts(self) -> list[ObjectPrompt]:
        """Every object's prompts on every plane it was committed on."""
        return [p for obj in self.ids for _, p in sorted(self.prompts[obj].items(),
                                                           key=lambda kv: (kv[0][0] or 0, kv[0][1] or 0))]

    def frames_of(self, obj_id: int) -> list[PlaneKey]:
        return sorted(self.prompts.get(obj_id, {}), key=lambda k: (k[0] or 0, k[1] or 0))

    def clear(self) -> None:
        self.prompts.clear()
        self.history.clear()
