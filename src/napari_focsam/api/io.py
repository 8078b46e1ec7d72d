"""Reading images and stacks lazily, and writing label files atomically.

Inputs are checked when they are opened, before anything is computed: a damaged or truncated
TIFF, a file holding several image series, or frames larger than the machine's memory raise
`InputError`; pixel data that turns out damaged when it is decoded later raises it too.
Label files are ImageJ hyperstacks (axes ``YX``, ``ZYX``, ``TYX`` or ``TZYX``) that keep the
input's calibration; `check_output_path` refuses an output that would replace an input.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import secrets
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

__all__ = ["LABEL_SUFFIXES", "ImageInfo", "InputError", "OutputError", "check_fits_in_memory",
           "check_output_folder", "check_output_path", "labels_axes", "open_image", "present_ids",
           "read_array", "read_image_info", "write_labels_tiff", "write_problem"]

logger = logging.getLogger(__name__)

#: Suffixes of the label files written (TIFF only).
LABEL_SUFFIXES = (".tif", ".tiff")
#: The axis letters ImageJ hyperstacks use, in their order (labels have no C or S axis).
IMAGEJ_ORDER = "TZYX"
#: Largest integer float32 holds exactly (2**24): ids up to it survive a float32 ImageJ file.
FLOAT32_EXACT = 1 << 24
#: What tifffile's parser raises on a damaged TIFF (only caught around the parsing of a file):
#: it meets impossible offsets, counts and sizes (ValueError, KeyError, IndexError,
#: ZeroDivisionError, OverflowError, RuntimeError "incompatible keyframe", struct.error) and
#: corrupt compressed strips (zlib.error).
_DAMAGED_TIFF = (ValueError, KeyError, IndexError, ZeroDivisionError, RuntimeError,
                 OverflowError, EOFError, struct.error, zlib.error)


class InputError(UserError, ValueError):
    """An input file that cannot be read as an image or stack."""


class OutputError(UserError, OSError):
    """An output that cannot (or must not) be written: it would replace an input, its folder
    is read-only or full, its name is too long, it is a folder..."""


@dataclass(frozen=True)
class ImageInfo:
    """What an image file says about its axes and calibration.

    Attributes
    ----------
    axes : str or None
        One letter per axis of the array `open_image` returns, as tifffile names them (``T``
        time, ``Z`` depth, ``C`` channel, ``S`` sample (RGB), ``Y``, ``X``); None when the file
        does not name its axes (plain TIFF pages, ``.npy``, ``.zarr``, PNG).
    pixel_size : tuple of float or None
        ``(y, x)`` size of a pixel in `unit`.
    unit : str or None
        Unit of `pixel_size` and `z_spacing` (e.g. ``"um"``).
    z_spacing : float or None
        Distance between z slices, in `unit`.
    frame_interval : float or None
        Time between frames (seconds in ImageJ files).
    """

    axes: str | None = None
    pixel_size: tuple[float, float] | None = None
    unit: str | None = None
    z_spacing: float | None = None
    frame_interval: float | None = None


# ------------------------------------------------------------------------------ memory
def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits_in_memory(nbytes: int, what: str) -> None:
    """Raise `InputError` when `nbytes` exceed the memory this machine has available now.

    Parameters
    ----------
    nbytes : int
        Bytes about to be allocated.
    what : str
        What they hold, for the message (``"one 100000 x 100000 frame"``).
    """
    import psutil

    available = psutil.virtual_memory().available
    if nbytes > available:
        raise InputError(f"{what} needs {_gib(nbytes)} of memory; {_gib(available)} are "
                         "available. Is the file's header right? Otherwise crop or bin the data "
                         "first")


# ------------------------------------------------------------------------------ reading
def open_image(path: str | Path):
    """An array-like view of an image or stack file, read lazily where the format allows.

    TIFF files are memory-mapped when uncompressed and contiguous, else opened as a zarr view
    (pages decoded on access; a page that turns out damaged raises `InputError`); ``.npy`` is
    memory-mapped; ``.zarr`` folders are opened read-only; PNG / JPEG are read whole (they are
    single 2D images).

    Raises
    ------
    InputError
        Missing file, unknown extension, a file the reader rejects, a damaged or truncated
        TIFF, a TIFF with several image series, or a page larger than the available memory.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    data = _open(path)
    if not all(hasattr(data, a) for a in ("shape", "dtype", "__getitem__")):
        raise InputError(f"{path} holds several arrays (a zarr group or multi-series file); "
                         "open the array you want and pass it to the Python API")
    return data


def read_array(path: str | Path, what: str = "the data") -> np.ndarray:
    """The whole content of an image or stack file as a numpy array (checked to fit in memory
    before it is read; damaged pages raise `InputError`).

    Parameters
    ----------
    path : str or Path
    what : str
        What the file is, for messages (``"the ground truth"``).
    """
    data = open_image(path)
    shape = tuple(int(s) for s in data.shape)
    check_fits_in_memory(math.prod(shape) * np.dtype(data.dtype).itemsize,
                         f"{what} ({path}, shape {shape}, {np.dtype(data.dtype)})")
    return np.asarray(data[...])


def read_image_info(path: str | Path) -> ImageInfo:
    """The axes and calibration an image file declares (ImageJ or OME TIFF metadata).

    Files other than TIFF, and TIFFs without ImageJ / OME metadata, give an `ImageInfo` with
    every field None (a tifffile-written TIFF with an ``axes`` entry gives its axes).
    """
    path = Path(path)
    if not path.suffix.lower().endswith((".tif", ".tiff")) or not path.is_file():
        return ImageInfo()
    import tifffile

    with _tifffile_errors(path), tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes = series.axes if series.kind in ("imagej", "ome", "shaped") else None
        if axes is not None and not set(axes) <= set("TZCSYX"):
            axes = None  # tifffile's Q / I: an axis the file does not name
        if tif.is_imagej:
            return _imagej_info(tif, axes)
        if tif.is_ome:
            return _ome_info(tif.ome_metadata, axes)
        return ImageInfo(axes=axes)


def _imagej_info(tif, axes: str | None) -> ImageInfo:
    meta = tif.imagej_metadata or {}
    unit = meta.get("unit")
    pixel_size = None
    page = tif.pages.first
    if "XResolution" in page.tags and "YResolution" in page.tags:
        x_res, y_res = page.get_resolution()
        if x_res > 0 and y_res > 0 and (unit or (x_res, y_res) != (1, 1)):
            pixel_size = (1.0 / y_res, 1.0 / x_res)
    spacing = meta.get("spacing")
    interval = meta.get("finterval")
    return ImageInfo(axes=axes, pixel_size=pixel_size, unit=_unit(unit) if unit else None,
                     z_spacing=float(spacing) if spacing else None,
                     frame_interval=float(interval) if interval else None)


def _ome_info(xml: str | None, axes: str | None) -> ImageInfo:
    import tifffile

    try:
        image = tifffile.xml2dict(xml or "")["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
    except (KeyError, IndexError, TypeError, ValueError):
        return ImageInfo(axes=axes)

    def number(key: str) -> float | None:
        try:
            value = float(pixels[key])
        except (KeyError, TypeError, ValueError):
            return None
        return value if math.isfinite(value) and value > 0 else None

    x, y = number("PhysicalSizeX"), number("PhysicalSizeY")
    unit = pixels.get("PhysicalSizeXUnit", "µm") if x and y else None
    return ImageInfo(axes=axes, pixel_size=(y, x) if x and y else None,
                     unit=_unit(unit) if unit else None, z_spacing=number("PhysicalSizeZ"),
                     frame_interval=number("TimeIncrement"))


def _unit(unit: str) -> str:
    """ImageJ's spellings of micrometres (``micron``, ``µm``, ``\\u00B5m``) as ``um``."""
    text = str(unit).strip()
    return "um" if text.lower() in ("micron", "microns", "µm", "μm", "\\u00b5m", "um") else text


def _open(path: Path):
    suffix = path.suffix.lower()
    try:
        if suffix.endswith((".tif", ".tiff")):
            return _open_tiff(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    try:
        if suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        if suffix == ".zarr":
            import zarr

            return zarr.open(str(path), mode="r")
        if suffix in (".png", ".jpg", ".jpeg", ".bmp"):
            import skimage.io

            return skimage.io.imread(path)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    raise InputError(f"{path}: unsupported input format {suffix or '(none)'}; use TIFF, .npy, "
                     ".zarr, PNG or JPEG")


class _TiffDamage(logging.Filter):
    """Collects (and keeps off the console) what tifffile logs on this thread while it parses
    a file: it logs, then works around, offsets beyond the end of the file, series metadata
    that does not match the pages, and the like."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or threading.get_ident() != self.thread:
            return True
        (self.errors if record.levelno >= logging.ERROR else self.warnings).append(
            record.getMessage())
        return False


@contextlib.contextmanager
def _tifffile_errors(path: Path) -> Iterator[None]:
    """Turn the failures of tifffile's parser on a damaged file (and the errors it only logs)
    into `InputError`; its warnings are logged at INFO."""
    damage = _TiffDamage()
    tiff_logger = logging.getLogger("tifffile")
    tiff_logger.addFilter(damage)
    try:
        yield
    except InputError:
        raise
    except _DAMAGED_TIFF as exc:
        raise InputError(f"cannot read {path}: not a valid TIFF, or a damaged one "
                         f"({type(exc).__name__}: {exc})") from exc
    finally:
        tiff_logger.removeFilter(damage)
        for message in damage.warnings:
            logger.info("%s: %s", path, message)
    if damage.errors:
        found = damage.errors[0].replace(f"<tifffile.TiffFile {path.name!r}> ", "")
        raise InputError(f"cannot read {path}: the file is damaged or truncated ({found})")


def _open_tiff(path: Path):
    """A checked lazy view of the one image series of a TIFF file."""
    import tifffile

    with _tifffile_errors(path), tifffile.TiffFile(path) as tif:
        all_series = tif.series
        if len(all_series) > 1:
            listed = "; ".join(f"{i}: {tuple(s.shape)} {s.dtype} {s.axes}"
                               for i, s in enumerate(all_series[:6]))
            more = f" and {len(all_series) - 6} more" if len(all_series) > 6 else ""
            raise InputError(
                f"{path} holds {len(all_series)} image series ({listed}{more}); napari-focsam "
                "reads one. Save the one you want on its own, e.g. python -c \"import tifffile; "
                f"tifffile.imwrite('series1.tif', tifffile.imread('{path}', series=1))\"")
        series = all_series[0]
        _check_tiff_extent(path, tif, series)
        page = series.keyframe
        if page is not None:
            check_fits_in_memory(int(page.nbytes), f"one {page.shape} {page.dtype} page of {path}")
        contiguous = series.dataoffset is not None
    if contiguous:
        try:
            return tifffile.memmap(path, mode="r")
        except ValueError:  # not memory-mappable after all (byte order, ...): decode instead
            pass
    import zarr

    with _tifffile_errors(path):
        store = tifffile.imread(path, aszarr=True)
    return _CheckedPages(zarr.open(store, mode="r"), path)


def _check_tiff_extent(path: Path, tif, series) -> None:
    """InputError unless every byte the series' pages point to lies inside the file."""
    size = tif.filehandle.size
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
    else:
        end = max((off + count for page in series.pages
                   if page is not None and page.parent is tif  # not another file's (OME)
                   for off, count in zip(page.dataoffsets, page.databytecounts, strict=False)),
                  default=0)
    if end > size:
        raise InputError(f"cannot read {path}: the file is truncated (its pages need {end} "
                         f"bytes, it has {size})")


class _CheckedPages:
    """A lazy TIFF view whose reads turn damaged pixel data into `InputError`.

    Only ``shape``, ``dtype``, ``ndim`` and numpy-style ``__getitem__`` (all the embedding
    store uses) are offered.
    """

    def __init__(self, array: Any, path: Path) -> None:
        self._array = array
        self._path = path
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        import tifffile

        try:
            return np.asarray(self._array[key])
        except (tifffile.TiffFileError, struct.error, zlib.error) as exc:
            raise InputError(f"cannot read {self._path}: damaged pixel data "
                             f"({type(exc).__name__}: {exc})") from exc

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)


# ------------------------------------------------------------------------------ writing
def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output_path(path: str | Path, inputs: Iterable[str | Path | None] = (), *,
                      option: str = "--output") -> Path:
    """Check, before any work, that a labels TIFF can be written at `path`.

    Parameters
    ----------
    path : str or Path
        The output file.
    inputs : iterable of path
        Files read by the same run (image, prompts, ground truth; None entries skipped): the
        output must not be one of them (symbolic links, relative paths and hard links are
        followed).
    option : str
        The option naming `path`, for messages.

    Returns
    -------
    Path
        `path`.

    Raises
    ------
    OutputError
        Not a ``.tif`` / ``.tiff`` name, an input, a folder, a name too long for its file
        system, or a folder that is a file or cannot be written.
    """
    path = Path(path)
    if path.suffix.lower() not in LABEL_SUFFIXES:
        raise OutputError(f"{option} {path}: labels are written as TIFF; give a .tif or .tiff "
                          "file name")
    folder = path.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise OutputError(f"{option} {path}: {existing} is a file, not a folder")
    limit = _name_max(existing or Path("."))
    name, extra = len(path.name.encode()), len(_part_name(path).encode()) - len(path.name.encode())
    if limit and name + extra > limit:
        raise OutputError(f"{option} {path}: the file name is too long ({name} bytes; at most "
                          f"{limit - extra} here)")
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise OutputError(f"{option} {path} is the input {source}: it would be replaced by "
                              "the labels; choose another file name")
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name such as "
                          f"{path / 'labels.tif'}")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: no permission to write in {existing}")
    return path


def check_output_folder(path: str | Path, inputs: Iterable[str | Path | None] = (), *,
                        option: str = "--out",
                        names: Iterable[str] = ("per_frame.csv", "summary.json",
                                                "pred_labels.tif")) -> Path:
    """Check, before any work, that files can be written in the folder `path`.

    Parameters
    ----------
    path : str or Path
        The output folder (created when written to).
    inputs : iterable of path
        Files read by the same run: none of the files `names` in `path` may be one of them.
    option : str
        The option naming `path`, for messages.
    names : iterable of str
        The files written in the folder.

    Raises
    ------
    OutputError
        `path` or one of its parents is a file, the folder cannot be written, or a file
        written there would replace an input.
    """
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "is a file" if existing == path else f"is inside {existing}, a file"
        raise OutputError(f"{option} {path} {what}; give a folder")
    for name in names:
        for source in inputs:
            if source is not None and _same_file(path / name, Path(source)):
                raise OutputError(f"{option} {path}: {name} written there would replace the input "
                                  f"{source}; choose another folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: no permission to write in {existing}")
    return path


def _name_max(folder: Path) -> int | None:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return None


def _part_name(path: Path) -> str:
    """Name of the temporary file `write_labels_tiff` writes next to `path`."""
    return f".{path.name}.{secrets.token_hex(6)}.part"


def write_problem(exc: OSError, path: Path) -> str:
    """Why writing `path` failed, in words."""
    reasons = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: f"{path.parent} is on a read-only file system",
        errno.EACCES: f"no permission to write in {path.parent}",
        errno.EPERM: f"no permission to write in {path.parent}",
        errno.ENAMETOOLONG: "the file name is too long",
        errno.EISDIR: f"{path} is a folder; give a file name",
        errno.EEXIST: f"a file is in the way of the folder {path.parent}",
        errno.ENOTDIR: f"a file is in the way of the folder {path.parent}",
    }
    return reasons.get(exc.errno, exc.strerror or str(exc))


def labels_axes(ndim: int, *, stack_axis: int | None = None, outer_axis: int | None = None,
                channel_axis: int | None = None, file_axes: str | None = None,
                stack_kind: str = "Z") -> str:
    """The axis letters of the labels of data with these axes, in data order.

    Labels have the data's axes without the channel axis: ``Y`` and ``X`` (the two spatial
    axes, in order), the stack axis and the outer axis. Each of the last two is ``T`` or ``Z``
    as `file_axes` (the input file's own letters) names it, else `stack_kind` for the stack
    axis and the other letter for the outer axis.

    Parameters
    ----------
    ndim : int
        Dimensions of the data (channel axis included).
    stack_axis, outer_axis, channel_axis : int or None
        As in `napari_focsam.store.StackSource`.
    file_axes : str or None
        `ImageInfo.axes` of the input.
    stack_kind : {"Z", "T"}
        What the stack axis is when the file does not say.
    """
    stack_kind = stack_kind.upper()
    if stack_kind not in ("Z", "T"):
        raise ValueError(f"stack_kind must be 'Z' or 'T', got {stack_kind!r}")
    named = file_axes if file_axes is not None and len(file_axes) == ndim else None

    def said(axis: int | None) -> str | None:
        letter = None if named is None or axis is None else named[axis]
        return letter if letter in ("T", "Z") else None

    stack = said(stack_axis) or stack_kind
    outer = said(outer_axis)
    if outer is None or outer == stack:
        outer = "T" if stack == "Z" else "Z"
    if said(outer_axis) == stack:  # the file names both T or both Z: trust the stack's letter
        outer = "T" if stack == "Z" else "Z"
    letters = []
    spatial = iter("YX")
    for axis in range(ndim):
        if axis == channel_axis:
            continue
        letters.append(stack if axis == stack_axis else outer if axis == outer_axis
                       else next(spatial))
    return "".join(letters)


def _default_axes(ndim: int) -> str | None:
    return {2: "YX", 3: "ZYX", 4: "TZYX"}.get(ndim)


def _label_dtype(labels: np.ndarray) -> tuple[np.dtype, bool]:
    """The dtype labels are written in and whether ImageJ can read it.

    uint16 when every id fits, int16 for small negative values, float32 (ImageJ's 32-bit type,
    exact for integers up to 2**24) above that, and beyond float32's exact range the smallest
    integer type that holds the values (not an ImageJ type).
    """
    if labels.dtype.kind not in "iub" or labels.size == 0:
        return (np.dtype(np.float32), True) if labels.dtype.kind == "f" else \
            (np.dtype(np.uint16), True)
    lo, hi = int(labels.min()), int(labels.max())
    if lo >= 0 and hi < 2**16:
        return np.dtype(np.uint16), True
    if lo >= -(2**15) and hi < 2**15:
        return np.dtype(np.int16), True
    if -FLOAT32_EXACT <= lo and hi <= FLOAT32_EXACT:
        return np.dtype(np.float32), True
    if lo >= 0:
        return np.dtype(np.uint32 if hi < 2**32 else np.uint64), False
    return np.dtype(np.int64), False


def write_labels_tiff(path: str | Path, labels: np.ndarray, *, axes: str | None = None,
                      info: ImageInfo | None = None) -> Path:
    """Write a label image / stack as an ImageJ hyperstack TIFF, atomically.

    The data goes to a temporary file in the same folder that replaces `path` only once it is
    complete, so an interrupted or failed write never leaves a file that looks finished.

    Parameters
    ----------
    path : str or Path
        The ``.tif`` file.
    labels : np.ndarray
        Integer labels, axes as `axes` says.
    axes : str, optional
        Letters of the axes of `labels` (some order of ``T``, ``Z``, ``Y``, ``X``); default
        ``YX``, ``ZYX`` or ``TZYX`` by dimension. The file holds them in ImageJ's order
        (``TZYX``), transposed if needed.
    info : ImageInfo, optional
        Calibration of the input (pixel size, unit, z spacing, frame interval), written along.

    Notes
    -----
    Ids that fit are written as uint16 (what Fiji / ImageJ open as label images). ImageJ has no
    32-bit integer type: larger ids are written as float32, exact up to 16 777 216 (a warning
    says so); beyond that the file is a plain TIFF of the smallest integer type that holds them
    (axes in tifffile's metadata only; a warning says so).

    Returns
    -------
    Path
        `path`.

    Raises
    ------
    OutputError
        The file cannot be written (disk full, read-only folder, name too long, a folder...).
    """
    import tifffile

    path = Path(path)
    labels = np.asarray(labels)
    axes = (axes or _default_axes(labels.ndim) or "").upper()
    imagej_axes = len(axes) == labels.ndim and sorted(axes) == sorted(set(axes)) \
        and set(axes) <= set(IMAGEJ_ORDER) and {"Y", "X"} <= set(axes)
    if imagej_axes:
        order = sorted(range(labels.ndim), key=lambda a: IMAGEJ_ORDER.index(axes[a]))
        labels = np.transpose(labels, order)
        axes = "".join(axes[a] for a in order)
    dtype, imagej = _label_dtype(labels)
    imagej = imagej and imagej_axes
    kwargs: dict[str, Any] = {"compression": "zlib"}
    if imagej:
        metadata: dict[str, Any] = {"axes": axes}
        if info is not None:
            if info.unit:
                metadata["unit"] = info.unit
            if info.z_spacing and "Z" in axes:
                metadata["spacing"] = info.z_spacing
            if info.frame_interval and "T" in axes:
                metadata["finterval"] = info.frame_interval
            if info.pixel_size:
                kwargs["resolution"] = (1.0 / info.pixel_size[1], 1.0 / info.pixel_size[0])
        kwargs.update(imagej=True, metadata=metadata)
        if dtype.kind == "f" and labels.dtype.kind in "iu" and labels.size and labels.max() >= 2**16:
            logger.warning("object ids up to %d do not fit uint16; %s is written as float32 (ImageJ "
                           "has no 32-bit integer type; every id up to %d is exact)",
                           int(labels.max()), path, FLOAT32_EXACT)
    else:
        # minisblack: without it tifffile stores a (3 | 4, H, W) stack as one planar RGB image
        kwargs.update(photometric="minisblack", metadata={"axes": axes} if axes else None)
        logger.warning("%s is a plain %s TIFF, not an ImageJ hyperstack (%s); Fiji opens it as "
                       "a stack of pages", path, dtype,
                       f"ids up to {int(labels.max())} need more than float32's exact "
                       f"{FLOAT32_EXACT}" if imagej_axes else f"axes {axes or '?'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # not tempfile.mkstemp: its 0600 mode would end up on the output; O_EXCL with mode 0666
        # gives the permissions of any new file (umask applied)
        while True:
            tmp = path.parent / _part_name(path)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            os.close(fd)
            break
        try:
            tifffile.imwrite(tmp, np.ascontiguousarray(labels, dtype=dtype), **kwargs)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {write_problem(exc, path)} ({exc})") from exc
    logger.info("wrote labels %s %s (%s) to %s", labels.shape, dtype, axes, path)
    return path


def present_ids(labels: np.ndarray) -> list[int]:
    """The nonzero ids in `labels`, sorted."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    if labels.dtype.kind in "iu" and 0 <= labels.min() and labels.max() < max(1 << 16, labels.size):
        counts = np.bincount(labels.ravel().astype(np.intp, copy=False))
        return [int(i) for i in np.flatnonzero(counts) if i]
    return [int(i) for i in np.unique(labels) if i]
