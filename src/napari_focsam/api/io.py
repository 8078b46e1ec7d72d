"""Reading images and stacks lazily, and writing label files atomically."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import numpy as np

from ..errors import UserError

__all__ = ["InputError", "open_image", "write_labels_tiff"]

logger = logging.getLogger(__name__)


class InputError(UserError, ValueError):
    """An input file that cannot be read as an image or stack."""


def open_image(path: str | Path):
    """An array-like view of an image or stack file, read lazily where the format allows.

    TIFF files are memory-mapped when uncompressed and contiguous, else opened as a zarr view
    (pages decoded on access); ``.npy`` is memory-mapped; ``.zarr`` folders are opened
    read-only; PNG / JPEG are read whole (they are single 2D images).

    Raises
    ------
    InputError
        Missing file, unknown extension, or a file the reader rejects.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    data = _open(path)
    if not all(hasattr(data, a) for a in ("shape", "dtype", "__getitem__")):
        raise InputError(f"{path} holds several arrays (a zarr group or multi-series file); "
                         "open the array you want and pass it to the Python API")
    return data


def _open(path: Path):
    suffix = path.suffix.lower()
    try:
        if suffix.endswith((".tif", ".tiff")):
            import tifffile

            try:
                return tifffile.memmap(path, mode="r")
            except ValueError:  # compressed or not contiguous: decode page by page
                import zarr

                return zarr.open(tifffile.imread(path, aszarr=True), mode="r")
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


def write_labels_tiff(path: str | Path, labels: np.ndarray) -> Path:
    """Write a label image / stack as TIFF, atomically.

    The data goes to a temporary file in the same folder that replaces `path` only once it is
    complete, so an interrupted or failed write never leaves a file that looks finished.
    """
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkstemp: its 0600 mode would end up on the output; O_EXCL with mode 0666
    # gives the permissions of any new file (umask applied)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        break
    try:
        # minisblack: without it tifffile stores a (3 | 4, H, W) stack as one planar RGB(A) image
        tifffile.imwrite(tmp, np.ascontiguousarray(_smallest_label_dtype(labels)),
                         compression="zlib", photometric="minisblack")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote labels %s %s to %s", labels.shape, labels.dtype, path)
    return path


def _smallest_label_dtype(labels: np.ndarray) -> np.ndarray:
    """uint16 when every id fits (what Fiji / ImageJ open as label images), else unchanged."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu" and labels.size and labels.min() >= 0 and labels.max() < 2**16:
        return labels.astype(np.uint16, copy=False)
    return labels
