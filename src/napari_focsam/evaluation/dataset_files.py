"""Reading the files of the segmentation benchmarks: images, masks, SBD ``.mat`` instances,
mask decoding (object / ignored pixels) and cheap image-size checks from file headers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError

__all__ = ["VOID_POLICIES", "DatasetError", "check_header_size", "check_pair_headers", "check_void",
           "decode_object_mask", "read_image", "read_mask", "read_sbd_instances"]


class DatasetError(UserError, ValueError):
    """A dataset folder that is missing, has an unknown layout, no samples or bad files."""


def read_image(path: Path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB (grey is repeated, other dtypes stretched).

    Raises
    ------
    DatasetError
        The file cannot be read.
    """
    from ..engine.image import to_rgb_uint8

    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            return to_rgb_uint8(np.squeeze(tifffile.imread(path)))
        if suffix == ".npy":
            return to_rgb_uint8(np.load(path, allow_pickle=False))
        from PIL import Image

        with Image.open(path) as img:
            if img.mode in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                return np.array(img.convert("RGB"))  # a writable copy
            return to_rgb_uint8(np.asarray(img))  # 16-bit / float grey
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def read_mask(path: Path) -> np.ndarray:
    """A mask / label file as a 2D integer array (first channel of a colour file; palette
    PNGs give their indices).

    Raises
    ------
    DatasetError
        The file cannot be read or is not 2D.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            mask = np.squeeze(tifffile.imread(path))
        elif suffix == ".npy":
            mask = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as img:
                mask = np.asarray(img)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot read mask {path}: {exc}") from exc
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise DatasetError(f"mask {path} has shape {mask.shape}; expected a 2D image")
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if mask.dtype.kind not in "iu":
        if not np.all(np.isfinite(mask)) or not np.all(mask == np.round(mask)):
            raise DatasetError(f"mask {path} holds non-integer values")
        mask = mask.astype(np.int64)
    return mask


def read_sbd_instances(path: Path) -> np.ndarray:
    """``GTinst.Segmentation`` of an SBD ``inst/*.mat`` file, ``(H, W)`` integer labels.

    Raises
    ------
    DatasetError
        Not a MATLAB file with a ``GTinst`` struct.
    """
    from scipy.io import loadmat

    try:
        gt = loadmat(path)["GTinst"]
        names = gt.dtype.names or ()
        seg = gt["Segmentation"][0, 0] if "Segmentation" in names else gt[0][0][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise DatasetError(f"{path} is not an SBD instance file (GTinst.Segmentation): "
                           f"{exc}") from exc
    seg = np.asarray(seg)
    if seg.ndim != 2 or seg.dtype.kind not in "iu":
        raise DatasetError(f"{path}: GTinst.Segmentation is {seg.dtype} {seg.shape}, expected "
                           "a 2D integer label image")
    return seg


#: What void pixels (GrabCut's unknown band, label 255) are: background, as FocSAM's test loop
#: has it (IoU without an ignore index), or left out of the IoU and never clicked (RITM).
VOID_POLICIES = ("background", "ignore")


def check_void(void: str) -> str:
    """`void` if it is one of `VOID_POLICIES`, else `DatasetError`."""
    if void not in VOID_POLICIES:
        raise DatasetError(f"void pixels are 'background' or 'ignore', got {void!r}")
    return void


def decode_object_mask(values: np.ndarray, void: str = "background"
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """A single-object mask file (GrabCut, Berkeley, DAVIS) as (object, ignore).

    Parameters
    ----------
    values : np.ndarray
        ``(H, W)`` integers: indexed (object 1, void 255) or 8-bit RITM style (object > 128,
        void 128).
    void : {"background", "ignore"}
        What void pixels become (see `VOID_POLICIES`).

    Returns
    -------
    gt : np.ndarray
        ``(H, W)`` bool.
    ignore : np.ndarray or None
        ``(H, W)`` bool void pixels with ``void="ignore"``; None when nothing is ignored.
    """
    present = np.unique(values)
    indexed = 1 in present and set(present.tolist()) <= {0, 1, 255}
    if indexed or present.max(initial=0) <= 1:
        gt, ignore = values == 1, values == 255
    else:  # RITM: 128 is GrabCut's unknown band
        gt, ignore = values > 128, values == 128
    if check_void(void) == "background" or not ignore.any():
        return gt, None
    return gt, ignore


def check_header_size(image: Path, mask_hw: tuple[int, ...], mask: Path) -> None:
    """Compare sizes when the image header tells it cheaply (PIL formats)."""
    hw = _header_hw(image)
    if hw is not None and hw != tuple(mask_hw):
        raise DatasetError(f"image {image} is {hw[0]} x {hw[1]} but its mask {mask} is "
                           f"{mask_hw[0]} x {mask_hw[1]}")


def _header_hw(path: Path) -> tuple[int, int] | None:
    if path.suffix.lower() in (".tif", ".tiff", ".npy"):
        return None
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def check_pair_headers(image: Path, mask: Path) -> None:
    """Compare sizes when both headers tell them cheaply (PIL formats)."""
    mask_hw = _header_hw(mask)
    if mask_hw is not None:
        check_header_size(image, mask_hw, mask)
