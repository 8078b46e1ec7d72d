"""Lazy 2D frames of an image, a z-stack / time-lapse, or a t x z hyperstack.

`StackSource` wraps any array-like (numpy array or memmap, dask array, zarr array, tifffile
memmap, h5py dataset...) with an axis spec and hands out one ``(H, W, 3)`` uint8 RGB frame at a
time, reading only that frame's slice. Contrast is stretched with ONE set of percentile limits
per channel for the whole stack, computed from a bounded sample of slices, so that intensities
are consistent from frame to frame (which tracking relies on).

Frame indexing
--------------
Frames are numbered ``0 .. len(source) - 1`` in outer-major order: frame ``i`` is position
``i % n_stack`` along `stack_axis` at position ``i // n_stack`` along `outer_axis`
(`frame_index` / `split_index` convert). Without an outer axis this is just the position along
the stack axis; a 2D image has one frame, 0.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..engine.image import MAX_CHANNELS, ImageError, check_image_dtype, check_percentiles
from .contrast import CONTRAST_VERSION, Limits, apply_limits, stack_limits

__all__ = ["StackError", "StackSource"]

logger = logging.getLogger(__name__)

#: Values per channel used for the stack's percentiles, at most (spread over the sampled slices).
DEFAULT_MAX_SAMPLE_VALUES = 1 << 22


class StackError(ImageError):
    """The array / axis spec cannot be turned into encoder frames (a `ValueError`)."""


def _norm_axis(axis: int | None, ndim: int, name: str, shape: tuple[int, ...]) -> int | None:
    if axis is None:
        return None
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise StackError(f"{name} must be an int or None, got {axis!r}.")
    if not -ndim <= axis < ndim:
        raise StackError(f"{name}={axis} is out of range for an array of shape {shape}.")
    return int(axis) % ndim


class StackSource:
    """Lazy ``(H, W, 3)`` uint8 frames of a 2D / 3D / 4D array-like.

    Parameters
    ----------
    data : array-like
        Anything with ``shape``, ``dtype`` and numpy-style ``__getitem__`` (numpy, memmap, dask,
        zarr, h5py...); other objects go through ``np.asarray``. dtype bool, integer or float.
        Its dimensions are the two spatial axes (in their order: rows, then columns) plus the
        axes named below.
    stack_axis : int or None
        The z or t axis whose positions are the frames; None for one 2D image.
    channel_axis : int or None
        Channel axis (1 gray, 2 composite, 3 RGB, 4 RGBA, up to `MAX_CHANNELS`; only the first
        three are read), or None.
    outer_axis : int or None
        For 4D hyperstacks, the other non-spatial axis (e.g. t when the frames run along z);
        frames are indexed outer-major (see the module docstring). Needs `stack_axis`.
    percentiles : tuple of float
        ``(low, high)`` percentiles mapped to 0 and 255 (not used for uint8 and bool data).
    sample_slices : int
        At most this many evenly spaced frames are read to compute the stack's limits.
    max_sample_values : int
        Values per channel the limits are computed from, at most: a sampled slice with more
        than its share is subsampled with a regular stride. A single 2D image of up to this
        many pixels gets exactly `to_rgb_uint8`'s result.

    Raises
    ------
    StackError
        Axis out of range or repeated, outer axis without stack axis, ndim not matching the
        axis spec, an empty axis, frames smaller than 2 x 2, too many channels, an unsupported
        dtype (complex, object, string...) or invalid percentiles.
    """

    def __init__(self, data: Any, *, stack_axis: int | None, channel_axis: int | None = None,
                 outer_axis: int | None = None, percentiles: tuple[float, float] = (0.5, 99.5),
                 sample_slices: int = 16,
                 max_sample_values: int = DEFAULT_MAX_SAMPLE_VALUES) -> None:
        if not all(hasattr(data, a) for a in ("shape", "dtype", "__getitem__")):
            data = np.asarray(data)
        self.data = data
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = np.dtype(data.dtype)
        try:
            check_image_dtype(self.dtype)
            self.percentiles = check_percentiles(percentiles)
        except ImageError as err:
            raise StackError(str(err)) from err
        ndim = len(self.shape)
        self.stack_axis = _norm_axis(stack_axis, ndim, "stack_axis", self.shape)
        self.channel_axis = _norm_axis(channel_axis, ndim, "channel_axis", self.shape)
        self.outer_axis = _norm_axis(outer_axis, ndim, "outer_axis", self.shape)
        named = {"stack_axis": self.stack_axis, "channel_axis": self.channel_axis,
                 "outer_axis": self.outer_axis}
        given = {k: v for k, v in named.items() if v is not None}
        if len(set(given.values())) != len(given):
            raise StackError(f"axes must be distinct, got {given} for shape {self.shape}.")
        if self.outer_axis is not None and self.stack_axis is None:
            raise StackError("outer_axis needs a stack_axis (the axis the frames run along).")
        if ndim != 2 + len(given):
            raise StackError(
                f"an array with {', '.join(given) or 'no extra axes'} must have {2 + len(given)} "
                f"dimensions (2 spatial + those), got {ndim}: shape {self.shape}."
            )
        if sample_slices < 1 or max_sample_values < 1:
            raise StackError("sample_slices and max_sample_values must be positive.")
        self.sample_slices = int(sample_slices)
        self.max_sample_values = int(max_sample_values)
        self._spatial = tuple(a for a in range(ndim) if a not in given.values())
        if 0 in self.shape:
            raise StackError(f"the stack is empty: shape {self.shape} has a zero-length axis.")
        h, w = (self.shape[a] for a in self._spatial)
        if h < 2 or w < 2:
            raise StackError(f"frames are {h} x {w} pixels; expected at least 2 x 2.")
        self.n_channels = 1 if self.channel_axis is None else self.shape[self.channel_axis]
        if self.n_channels > MAX_CHANNELS:
            raise StackError(
                f"the channel axis ({self.channel_axis}) of shape {self.shape} has "
                f"{self.n_channels} entries; at most {MAX_CHANNELS} channels are supported. "
                "Is it a z / time axis? Pass it as stack_axis or outer_axis."
            )
        if self.n_channels > 4:
            logger.warning("%d channels: only the first three are used as red, green and blue",
                           self.n_channels)
        self._lock = threading.Lock()
        self._limits: list[Limits] | None = None

    # ------------------------------------------------------------------ geometry
    @property
    def n_stack(self) -> int:
        """Length of the stack axis (1 for a 2D image)."""
        return 1 if self.stack_axis is None else self.shape[self.stack_axis]

    @property
    def n_outer(self) -> int:
        """Length of the outer axis (1 without one)."""
        return 1 if self.outer_axis is None else self.shape[self.outer_axis]

    def __len__(self) -> int:
        return self.n_outer * self.n_stack

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of every frame."""
        return self.shape[self._spatial[0]], self.shape[self._spatial[1]]

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-able description of the data and axis spec (hashed with the content)."""
        return {"shape": list(self.shape), "dtype": self.dtype.str,
                "stack_axis": self.stack_axis, "channel_axis": self.channel_axis,
                "outer_axis": self.outer_axis, "percentiles": list(self.percentiles),
                "sample_slices": self.sample_slices, "max_sample_values": self.max_sample_values,
                "contrast": CONTRAST_VERSION}

    def frame_index(self, outer: int, stack: int) -> int:
        """Flat frame index of position `stack` along the stack axis at `outer`."""
        if not (0 <= outer < self.n_outer and 0 <= stack < self.n_stack):
            raise IndexError(f"(outer, stack) = ({outer}, {stack}) is out of range "
                             f"({self.n_outer}, {self.n_stack}).")
        return outer * self.n_stack + stack

    def split_index(self, index: int) -> tuple[int, int]:
        """``(outer, stack)`` positions of flat frame `index`."""
        return divmod(self.check_index(index), self.n_stack)

    def check_index(self, index: int) -> int:
        """`index` as ``0 .. len - 1`` (negative ones count from the end); IndexError if out of
        range."""
        n = len(self)
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"frame {index} is out of range for {n} frames.")
        return i % n

    # ------------------------------------------------------------------ reading
    def raw(self, index: int, rows: tuple[int, int] | None = None,
            cols: tuple[int, int] | None = None) -> np.ndarray:
        """The raw pixels of frame `index` (or of a region of it), read lazily.

        Parameters
        ----------
        index : int
            Flat frame index.
        rows, cols : tuple of int or None
            Half-open pixel ranges ``(start, stop)`` of a region; None: the whole axis. Only
            the region is read from the array-like (one slice per spatial axis).

        Returns
        -------
        np.ndarray
            ``(h, w, C')`` in the data's dtype, ``C' = min(C, 3)`` (1 without a channel axis);
            ``(h, w)`` is the region's size (the frame's without one).
        """
        outer, stack = self.split_index(index)
        h, w = self.frame_shape
        key: list[Any] = [slice(None)] * len(self.shape)
        if rows is not None:
            key[self._spatial[0]] = slice(*self._check_range(rows, h, "rows"))
        if cols is not None:
            key[self._spatial[1]] = slice(*self._check_range(cols, w, "cols"))
        rows, cols = self._check_range(rows, h, "rows"), self._check_range(cols, w, "cols")
        if self.stack_axis is not None:
            key[self.stack_axis] = stack
        if self.outer_axis is not None:
            key[self.outer_axis] = outer
        if self.channel_axis is not None and self.n_channels > 3:
            key[self.channel_axis] = slice(0, 3)
        arr = np.asarray(self.data[tuple(key)])
        if self.channel_axis is None:
            arr = arr[..., None]
        else:
            kept = [a for a in range(len(self.shape)) if a not in (self.stack_axis, self.outer_axis)]
            arr = np.moveaxis(arr, kept.index(self.channel_axis), -1)
        expected = (rows[1] - rows[0], cols[1] - cols[0], min(self.n_channels, 3))
        if arr.shape != expected:
            raise StackError(f"reading frame {index} gave shape {arr.shape}, expected {expected}; "
                             "the array-like does not slice like numpy.")
        return arr

    @staticmethod
    def _check_range(span: tuple[int, int] | None, size: int, name: str) -> tuple[int, int]:
        if span is None:
            return 0, size
        start, stop = (int(v) for v in span)
        if not 0 <= start < stop <= size:
            raise IndexError(f"{name} {tuple(span)} is not a range inside 0..{size}")
        return start, stop

    @property
    def limits(self) -> list[Limits]:
        """Per-channel ``(lo, hi)`` contrast limits of the whole stack (computed once).

        None for uint8 / bool data (no stretch) and for a channel without finite values or a
        constant one (it maps to zeros).
        """
        with self._lock:
            if self._limits is None:
                self._limits = self._compute_limits()
            return self._limits

    def sample_indices(self) -> list[int]:
        """Frames read to compute the limits: up to `sample_slices`, evenly spaced."""
        n = len(self)
        k = min(n, self.sample_slices)
        return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})

    def _compute_limits(self) -> list[Limits]:
        n_used = min(self.n_channels, 3)
        if self.dtype in (np.uint8, np.bool_):
            return [None] * n_used
        indices = self.sample_indices()
        limits = stack_limits((self.raw(i) for i in indices), n_used, self.percentiles,
                              max(1, self.max_sample_values // len(indices)))
        logger.debug("stack contrast limits %s from frames %s", limits, indices)
        return limits

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame `index` as ``(H, W, 3)`` uint8 RGB (reads only that slice).

        Channels: 1 -> gray replicated, 2 -> (red, green, 0), 3 -> RGB, 4 -> RGBA with alpha
        dropped. uint8 keeps its values, bool maps to 0 / 255, other dtypes use `limits`.
        NaN / inf pixels become 0; an all-NaN frame becomes black (with a warning).
        """
        return self._rgb(self.raw(index), f"frame {index}")

    def region(self, index: int, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """A region of frame `index` as ``(h, w, 3)`` uint8 RGB: exactly
        ``self[index][rows[0]:rows[1], cols[0]:cols[1]]`` (the stack's contrast `limits`), but
        reading only the region from the array-like.

        Parameters
        ----------
        index : int
            Flat frame index.
        rows, cols : tuple of int
            Half-open pixel ranges ``(start, stop)``.
        """
        return self._rgb(self.raw(index, rows, cols), f"region {rows} x {cols} of frame {index}")

    def _rgb(self, raw: np.ndarray, what: int | str) -> np.ndarray:
        """``(h, w, C')`` raw pixels (of `what`, for messages) -> ``(h, w, 3)`` uint8 (see
        `__getitem__`)."""
        h, w = raw.shape[:2]
        n = raw.shape[-1]
        if self.dtype == np.uint8:
            if n >= 3:
                return np.ascontiguousarray(raw[..., :3])
            planes = [raw[..., c] for c in range(n)]
        elif self.dtype == np.bool_:
            planes = [np.where(raw[..., c], np.uint8(255), np.uint8(0)) for c in range(n)]
        else:
            limits = self.limits
            if self.dtype.kind == "f" and not np.isfinite(raw).any():
                logger.warning("%s has no finite values; it is encoded as black", what)
            planes = [apply_limits(raw[..., c], limits[c]) for c in range(n)]
        if len(planes) == 1:
            planes = planes * 3
        elif len(planes) == 2:
            planes = [planes[0], planes[1], np.zeros((h, w), dtype=np.uint8)]
        return np.stack(planes, axis=-1)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (f"StackSource(shape={self.shape}, dtype={self.dtype}, stack_axis={self.stack_axis}, "
                f"channel_axis={self.channel_axis}, outer_axis={self.outer_axis})")
