"""Axis layout of an image layer: which axis the frames run along, which is the outer axis.

Pure Python (no Qt, no napari): the widget builds an `ImageAxes` from the image layer and the
user's choice, and everything else (the `Segmenter` axes, the labels shape, the index of one
frame in a labels array) is derived from it.

Conventions: the two *last* axes of the layer (after dropping the RGB(A) channel of an RGB
layer) are the spatial ones (rows, columns); every other axis is either the stack axis (z or
t, the frames) or, for 4D data, the outer axis. A stack whose planes are segmented on their
own (`StackKind.PLANES`, "none (2D slices)") still has a stack axis for the `Segmenter`; it is
only never propagated.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import UserError

__all__ = ["STACK_META_KEY", "AxesError", "AxisOption", "ImageAxes", "StackKind", "axis_options",
           "stack_axis_choices", "stack_metadata", "time_axis"]

#: Key of the labels layer's ``metadata`` entry the dock writes: ``{"axis": int, "kind": str}``.
STACK_META_KEY = "focsam_stack"
_TIME_NAMES = frozenset({"t", "time", "frame", "frames", "timepoint", "timepoints"})
_Z_NAMES = frozenset({"z", "depth", "slice", "slices", "plane", "planes"})

#: Non-spatial axes the Segmenter supports (stack + outer).
MAX_EXTRA_AXES = 2


class AxesError(UserError, ValueError):
    """An image layout the widget cannot segment (e.g. 5D data, 1D data)."""


def stack_axis_choices(ndim: int) -> list[int | None]:
    """The stack axes a user can choose for a layer with `ndim` (non-channel) dimensions.

    ``[None]`` for a 2D image, ``[0]`` for a 3D stack, ``[0, 1]`` for 4D data (the other one
    becomes the outer axis).

    Raises
    ------
    AxesError
        Fewer than 2 or more than 4 dimensions.
    """
    if ndim < 2:
        raise AxesError(f"the image has {ndim} dimension(s); at least 2 (rows, columns) are needed")
    if ndim - 2 > MAX_EXTRA_AXES:
        raise AxesError(f"the image has {ndim} dimensions; at most 4 are supported (two spatial "
                        "axes, a stack axis and an outer axis): slice it first")
    return [None] if ndim == 2 else list(range(ndim - 2))


class StackKind(str, enum.Enum):
    """What the stack axis is: z (slices), t (frames), or planes segmented on their own."""

    Z = "z"
    T = "t"
    PLANES = "planes"


@dataclass(frozen=True)
class ImageAxes:
    """The axis layout of one image layer.

    Attributes
    ----------
    ndim : int
        Dimensions of the layer without the RGB(A) channel (napari's ``layer.ndim``).
    stack_axis : int or None
        Axis of the frames; None for a 2D image.
    rgb : bool
        Whether the data has a trailing channel axis (napari's ``layer.rgb``).
    kind : StackKind
        z or t (propagated through), or `StackKind.PLANES` (each plane on its own).
    """

    ndim: int
    stack_axis: int | None = None
    rgb: bool = False
    kind: StackKind = StackKind.Z

    def __post_init__(self) -> None:
        choices = stack_axis_choices(self.ndim)
        if self.stack_axis not in choices:
            raise AxesError(f"stack axis {self.stack_axis} is not one of {choices} for a "
                            f"{self.ndim}D image")

    @property
    def outer_axis(self) -> int | None:
        """The other non-spatial axis of 4D data, else None."""
        if self.ndim < 4:
            return None
        return 1 - int(self.stack_axis or 0)

    @property
    def channel_axis(self) -> int | None:
        """The data's channel axis (the last one for RGB layers), else None."""
        return self.ndim if self.rgb else None

    @property
    def is_stack(self) -> bool:
        """Whether there are frames (a stack axis for the `Segmenter`)."""
        return self.stack_axis is not None

    @property
    def propagates(self) -> bool:
        """Whether objects can be propagated along the stack axis (z or t, not planes)."""
        return self.is_stack and self.kind is not StackKind.PLANES

    @property
    def is_time(self) -> bool:
        return self.is_stack and self.kind is StackKind.T

    def labels_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of a labels array for image data of `data_shape` (channel axis dropped)."""
        shape = tuple(int(s) for s in data_shape)
        return shape[:-1] if self.rgb else shape

    def position(self, data_point) -> tuple[int | None, int | None]:
        """``(frame, outer)`` of a point in the image's data coordinates (rounded).

        ``frame`` is None for a 2D image, ``outer`` None without an outer axis.
        """
        frame = None if self.stack_axis is None else int(round(float(data_point[self.stack_axis])))
        outer = None if self.outer_axis is None else int(round(float(data_point[self.outer_axis])))
        return frame, outer

    def plane_index(self, frame: int | None, outer: int | None) -> tuple[int, ...]:
        """Index of the ``(H, W)`` plane of (`frame`, `outer`) in a labels array."""
        index = [0] * (self.ndim - 2)
        if self.stack_axis is not None:
            index[self.stack_axis] = int(frame or 0)
        if self.outer_axis is not None:
            index[self.outer_axis] = int(outer or 0)
        return tuple(index)

    def plane_name(self, frame: int | None, outer: int | None = None) -> str:
        """How the dock names plane (`frame`, `outer`): ``"slice z=3"``, ``"frame t=3"``,
        ``"plane 3"``, ``"the image"``; with ``" (outer 1)"`` on 4D data."""
        if not self.is_stack:
            return "the image"
        name = {StackKind.Z: f"slice z={frame}", StackKind.T: f"frame t={frame}",
                StackKind.PLANES: f"plane {frame}"}[self.kind]
        return name if self.outer_axis is None else f"{name} (outer {outer})"

    def in_range(self, labels_shape: tuple[int, ...], frame: int | None, outer: int | None) -> bool:
        """Whether (`frame`, `outer`) is a plane of a labels array of `labels_shape`."""
        for axis, value in ((self.stack_axis, frame), (self.outer_axis, outer)):
            if axis is not None and not (value is not None and 0 <= value < labels_shape[axis]):
                return False
        return True


@dataclass(frozen=True)
class AxisOption:
    """One entry of the stack-axis choice.

    Attributes
    ----------
    text : str
        What the combo shows, e.g. ``"axis 0 as z (32 slices)"``.
    axis : int or None
        The stack axis (None: a 2D image, or "none (2D slices)").
    kind : StackKind
    """

    text: str
    axis: int | None
    kind: StackKind

    def axes(self, ndim: int, rgb: bool) -> ImageAxes:
        """The `ImageAxes` of this choice for a layer of `ndim` dimensions."""
        if self.kind is StackKind.PLANES and ndim > 2:
            return ImageAxes(ndim, ndim - 3, rgb, StackKind.PLANES)  # planes, outer-major
        return ImageAxes(ndim, self.axis, rgb, self.kind)


def _named_kind(name: str) -> StackKind | None:
    name = name.strip().lower()
    if name in _TIME_NAMES:
        return StackKind.T
    if name in _Z_NAMES:
        return StackKind.Z
    return None


def axis_options(shape: Sequence[int], axis_labels: Sequence[str] = ()) -> tuple[list[AxisOption], int]:
    """The stack-axis choices for a layer of `shape` (channel axis dropped), and the default.

    Each non-spatial axis is offered as z and as t; 3D and 4D data also get
    ``"none (2D slices)"``. The default is the axis just before the spatial ones, as t when
    its napari axis label names time (``t``, ``time``...), else as z.

    Raises
    ------
    AxesError
        Fewer than 2 or more than 4 dimensions.
    """
    ndim = len(shape)
    axes = stack_axis_choices(ndim)
    if axes == [None]:
        return [AxisOption("none (2D image)", None, StackKind.Z)], 0
    options, default = [], 0
    for axis in axes:
        label = axis_labels[axis] if axis < len(axis_labels) else ""
        named = _named_kind(label)
        shown = f" '{label}'" if label and not label.lstrip("-").isdigit() else ""
        first = len(options)
        options.append(AxisOption(f"axis {axis}{shown} as z ({shape[axis]} slices)", axis, StackKind.Z))
        options.append(AxisOption(f"axis {axis}{shown} as t ({shape[axis]} frames)", axis, StackKind.T))
        default = first + (1 if named is StackKind.T else 0)
    options.append(AxisOption("none (2D slices)", None, StackKind.PLANES))
    return options, default


def stack_metadata(axes: ImageAxes) -> dict:
    """The `STACK_META_KEY` entry of a labels layer written with `axes`."""
    return {"axis": axes.stack_axis, "kind": axes.kind.value}


def time_axis(metadata: Mapping, axis_labels: Sequence[str] = ()) -> int | None:
    """The time axis of a labels layer: from the dock's `STACK_META_KEY` metadata (a stack
    axis marked t), else from a napari axis label naming time; None when neither says."""
    entry = metadata.get(STACK_META_KEY) if isinstance(metadata, Mapping) else None
    if isinstance(entry, Mapping):  # the dock's record wins over the axis labels
        axis = entry.get("axis")
        return int(axis) if entry.get("kind") == StackKind.T.value and isinstance(axis, int) else None
    for axis, label in enumerate(axis_labels):
        if _named_kind(str(label)) is StackKind.T:
            return axis
    return None
