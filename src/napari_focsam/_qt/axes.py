"""Axis layout of an image layer: which axis the frames run along, which is the outer axis.

Pure Python (no Qt, no napari): the widget builds an `ImageAxes` from the image layer and the
user's choice, and everything else (the `Segmenter` axes, the labels shape, the index of one
frame in a labels array) is derived from it.

Conventions: the two *last* axes of the layer (after dropping the RGB(A) channel of an RGB
layer) are the spatial ones (rows, columns); every other axis is either the stack axis (z or
t, the frames) or, for 4D data, the outer axis.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

__all__ = ["AxesError", "ImageAxes", "stack_axis_choices"]

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
    """

    ndim: int
    stack_axis: int | None = None
    rgb: bool = False

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
        return self.stack_axis is not None

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

    def in_range(self, labels_shape: tuple[int, ...], frame: int | None, outer: int | None) -> bool:
        """Whether (`frame`, `outer`) is a plane of a labels array of `labels_shape`."""
        for axis, value in ((self.stack_axis, frame), (self.outer_axis, outer)):
            if axis is not None and not (value is not None and 0 <= value < labels_shape[axis]):
                return False
        return True
