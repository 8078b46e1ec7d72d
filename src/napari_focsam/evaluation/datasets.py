"""Readers of the interactive-segmentation benchmarks: one sample per object.

Every dataset is a sequence of `Sample` (unpacks as ``(name, image, gt)``): the image as
``(H, W, 3)`` uint8 RGB, the object as an ``(H, W)`` bool mask, and optionally the pixels to
leave out of the evaluation (`Sample.ignore`). Samples are listed (sorted by name) when the
dataset is opened and read one at a time when iterated.

Layouts (``root`` is the folder given to `open_dataset`; each reader also looks one level down,
in the folder the official archive unpacks to, e.g. ``root/GrabCut``):

``grabcut``
    RITM: ``data_GT/<name>.jpg|bmp`` + ``boundary_GT/<name>.bmp``; FocusCut / FocSAM:
    ``img/<name>.*`` + ``gt/<name>#001.png``.
``berkeley``
    RITM: ``images/<name>.jpg`` + ``masks/<name>.png``; FocusCut / FocSAM: ``img/`` + ``gt/``.
``davis``
    ``img/<name>.jpg`` + ``gt/<name>.png`` (RITM) or ``gt/<name>#001.png``, ``#002``...
    (FocusCut / FocSAM; one sample per instance file).
``sbd``
    ``img/<name>.jpg`` + ``inst/<name>.mat`` (MATLAB ``GTinst`` struct, field
    ``Segmentation``), under ``root``, ``root/dataset`` or ``root/benchmark_RELEASE/dataset``;
    restricted to the names of ``val.txt`` when it is there (as FocSAM); one sample per
    instance id.
``cod10k``
    ``Test/Image/<name>.jpg`` + ``Test/GT_Object/<name>.png`` (COD10K-v3), restricted to the
    camouflaged test images of ``Info/CAM_test.txt`` when it is there (as FocSAM).
``mvtec``
    MVTec AD: ``<category>/test/<defect>/<n>.png`` + ``<category>/ground_truth/<defect>/
    <n>_mask.png``, defect-free (``good``) images and the two transistor defects FocSAM leaves
    out (``cut_lead``, ``misplaced``) skipped; all defect pixels of an image are one object.
``folder``
    Any data: ``images/<name>.*`` + ``masks/<name>.*`` (PNG, BMP, JPEG, TIFF or ``.npy``); a
    mask with one non-zero value is one object, a label image gives one sample per label.

Mask values: single-object files (GrabCut, Berkeley, DAVIS) holding only 0, 1 (and 255) are
indexed (object = 1, 255 = void); other 8-bit files follow RITM: > 128 object, 128 = the
"unknown" band of GrabCut (void), < 128 background. COD10K and MVTec masks are object where
> 127. SBD label 255 (if any) is void. Void pixels are background by default, as in FocSAM's
test loop (its object is ``mask == id``, everything else background, IoU without an ignore
index), so NoC figures compare with the paper's; ``void="ignore"`` leaves them out of the IoU
and the clicks instead (RITM's protocol).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset_files import (
    DatasetError,
    check_header_size,
    check_pair_headers,
    check_void,
    decode_object_mask,
    read_image,
    read_mask,
    read_sbd_instances,
)

__all__ = ["DATASETS", "Dataset", "Sample", "SampleRef", "open_dataset"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".npy")
#: Preferred mask file when one stem has several.
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".npy", ".gif", ".jpg", ".jpeg")
_INSTANCE = re.compile(r"^(?P<stem>.+)#(?P<index>\d+)$")
#: MVTec AD (category, defect) pairs FocSAM's evaluation leaves out.
MVTEC_SKIPPED_DEFECTS = (("transistor", "cut_lead"), ("transistor", "misplaced"))


@dataclass(frozen=True, eq=False)
class Sample:
    """One object of one image.

    Unpacks as ``name, image, gt = sample``.

    Attributes
    ----------
    name : str
        Unique within the dataset (``<image>`` or ``<image>#<instance>``).
    image : np.ndarray
        ``(H, W, 3)`` uint8 RGB.
    gt : np.ndarray
        ``(H, W)`` bool object.
    ignore : np.ndarray or None
        ``(H, W)`` bool pixels that are neither object nor background, or None.
    """

    name: str
    image: np.ndarray
    gt: np.ndarray
    ignore: np.ndarray | None = None

    def __iter__(self) -> Iterator:
        return iter((self.name, self.image, self.gt))


@dataclass(frozen=True)
class SampleRef:
    """Where one sample is read from.

    Attributes
    ----------
    name : str
        Sample name.
    image_path, mask_path : Path
        The files.
    decode : {"object", "binary", "label", "sbd"}
        How the mask file becomes (gt, ignore) (see the module docstring).
    label : int or None
        The object's label for ``"label"`` and ``"sbd"``.
    """

    name: str
    image_path: Path
    mask_path: Path
    decode: str
    label: int | None = None


class Dataset(Sequence):
    """The samples of one benchmark, read on access.

    Parameters
    ----------
    name : str
        Dataset kind (see `DATASETS`).
    root : Path
        The folder it was opened from.
    refs : sequence of SampleRef
        The samples.
    void : {"background", "ignore"}
        What void pixels become (see the module docstring).
    """

    def __init__(self, name: str, root: Path, refs: Sequence[SampleRef],
                 void: str = "background") -> None:
        self.name = name
        self.root = Path(root)
        self.refs = tuple(refs)
        self.void = check_void(void)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Dataset(self.name, self.root, self.refs[index], self.void)
        return load_sample(self.refs[index], self.void)

    def __iter__(self) -> Iterator[Sample]:
        for ref in self.refs:
            yield load_sample(ref, self.void)

    @property
    def names(self) -> tuple[str, ...]:
        """Sample names, in order."""
        return tuple(r.name for r in self.refs)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {str(self.root)!r}, {len(self)} samples)"


# ---------------------------------------------------------------------- reading files


def load_sample(ref: SampleRef, void: str = "background") -> Sample:
    """Read one sample (`void`: what void pixels are, see the module docstring).

    Raises
    ------
    DatasetError
        Unreadable files, or image and mask of different sizes.
    """
    image = read_image(ref.image_path)
    values = read_sbd_instances(ref.mask_path) if ref.decode == "sbd" else read_mask(ref.mask_path)
    if values.shape != image.shape[:2]:
        raise DatasetError(f"sample {ref.name}: image {ref.image_path} is {image.shape[0]} x "
                           f"{image.shape[1]} but its mask {ref.mask_path} is {values.shape[0]} x "
                           f"{values.shape[1]}")
    ignore = None
    if ref.decode == "object":
        gt, ignore = decode_object_mask(values, void)
    elif ref.decode == "binary":
        gt = values > 127
    elif ref.decode in ("label", "sbd"):
        gt = values == ref.label
        if ref.decode == "sbd" and check_void(void) == "ignore" and np.any(values == 255):
            ignore = values == 255
    else:
        raise DatasetError(f"unknown mask decoding {ref.decode!r}")
    return Sample(ref.name, image, gt, ignore)


# ---------------------------------------------------------------------- listing
def _files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes)


def _by_stem(files: Sequence[Path]) -> dict[str, Path]:
    """Stem -> file, preferring the suffixes of `MASK_SUFFIXES` in order."""
    rank = {s: i for i, s in enumerate(MASK_SUFFIXES)}
    out: dict[str, Path] = {}
    for p in sorted(files, key=lambda p: (p.stem, rank.get(p.suffix.lower(), len(rank)))):
        if p.stem in out:
            logger.warning("%s and %s: using the first", out[p.stem].name, p.name)
            continue
        out[p.stem] = p
    return out


def _find_layout(root: Path, kind: str, pairs: Sequence[tuple[str, str]],
                 subfolders: Sequence[str]) -> tuple[Path, Path]:
    bases = [root] + [root / s for s in subfolders]
    for base in bases:
        for images, masks in pairs:
            if (base / images).is_dir() and (base / masks).is_dir():
                return base / images, base / masks
    expected = " or ".join(f"{i}/ + {m}/" for i, m in pairs)
    raise DatasetError(f"{root} does not look like a {kind} dataset: expected the folders "
                       f"{expected} in it (or in {', '.join(subfolders)})")


def _list_object_files(image_dir: Path, mask_dir: Path) -> Iterator[SampleRef]:
    """Images with ``<stem>.*`` and / or ``<stem>#NNN.*`` masks: one sample per mask file."""
    masks = _by_stem(_files(mask_dir, MASK_SUFFIXES))
    instances: dict[str, list[str]] = {}
    for stem in masks:
        m = _INSTANCE.match(stem)
        if m:
            instances.setdefault(m["stem"], []).append(stem)
    unmatched = 0
    for image in _files(image_dir, IMAGE_SUFFIXES):
        if _INSTANCE.match(image.stem):
            continue  # an instance mask stored next to the images
        names = ([image.stem] if image.stem in masks else []) + sorted(instances.get(image.stem, []))
        if not names:
            unmatched += 1
        for name in names:
            yield SampleRef(name, image, masks[name], "object")
    if unmatched:
        logger.warning("%d images in %s have no mask in %s", unmatched, image_dir, mask_dir)


def _list_grabcut(root: Path) -> Iterator[SampleRef]:
    images, masks = _find_layout(root, "GrabCut", [("data_GT", "boundary_GT"), ("img", "gt")],
                                 ["GrabCut", "grabcut"])
    return _list_object_files(images, masks)


def _list_berkeley(root: Path) -> Iterator[SampleRef]:
    images, masks = _find_layout(root, "Berkeley", [("images", "masks"), ("img", "gt")],
                                 ["Berkeley", "berkeley"])
    return _list_object_files(images, masks)


def _list_davis(root: Path) -> Iterator[SampleRef]:
    images, masks = _find_layout(root, "DAVIS", [("img", "gt"), ("images", "masks")],
                                 ["DAVIS", "davis"])
    return _list_object_files(images, masks)


def _list_sbd(root: Path) -> Iterator[SampleRef]:
    images, insts = _find_layout(root, "SBD", [("img", "inst")],
                                 ["dataset", "benchmark_RELEASE/dataset"])
    split = images.parent / "val.txt"
    wanted = None
    if split.is_file():
        wanted = {line.strip() for line in split.read_text().splitlines() if line.strip()}
        logger.info("SBD: the %d images of %s", len(wanted), split)
    image_files = {p.stem: p for p in _files(images, IMAGE_SUFFIXES)}
    for mat in _files(insts, (".mat",)):
        if wanted is not None and mat.stem not in wanted:
            continue
        image = image_files.get(mat.stem)
        if image is None:
            logger.warning("SBD: no image for %s", mat.name)
            continue
        seg = read_sbd_instances(mat)
        check_header_size(image, seg.shape, mat)
        for label in np.unique(seg):
            if label not in (0, 255):
                yield SampleRef(f"{mat.stem}#{int(label):03d}", image, mat, "sbd", int(label))


def _list_cod10k(root: Path) -> Iterator[SampleRef]:
    images, masks = _find_layout(root, "COD10K", [("Image", "GT_Object")],
                                 ["Test", "COD10K-v3/Test"])
    wanted = None
    for info in (images.parent.parent / "Info" / "CAM_test.txt", root / "Info" / "CAM_test.txt"):
        if info.is_file():
            wanted = {Path(line.split()[0]).stem for line in info.read_text().splitlines()
                      if line.strip()}
            logger.info("COD10K: the %d camouflaged test images of %s", len(wanted), info)
            break
    mask_files = _by_stem(_files(masks, MASK_SUFFIXES))
    for image in _files(images, IMAGE_SUFFIXES):
        if wanted is not None and image.stem not in wanted:
            continue
        if image.stem in mask_files:
            yield SampleRef(image.stem, image, mask_files[image.stem], "binary")


def _list_mvtec(root: Path) -> Iterator[SampleRef]:
    categories = ([root] if (root / "test").is_dir() and (root / "ground_truth").is_dir()
                  else sorted(p for p in root.iterdir() if (p / "test").is_dir()))
    if not categories:
        raise DatasetError(f"{root} does not look like MVTec AD: expected <category>/test/ and "
                           "<category>/ground_truth/ folders")
    for cat in categories:
        for defect in sorted(p for p in (cat / "test").iterdir() if p.is_dir()):
            if defect.name == "good" or (cat.name, defect.name) in MVTEC_SKIPPED_DEFECTS:
                continue
            truth = cat / "ground_truth" / defect.name
            for image in _files(defect, IMAGE_SUFFIXES):
                mask = truth / f"{image.stem}_mask.png"
                if mask.is_file():
                    yield SampleRef(f"{cat.name}_{defect.name}_{image.stem}", image, mask, "binary")
                else:
                    logger.warning("MVTec: no mask %s", mask)


def _list_folder(root: Path) -> Iterator[SampleRef]:
    images, masks = _find_layout(root, "folder", [("images", "masks"), ("images", "labels")], [])
    mask_files = _by_stem(_files(masks, MASK_SUFFIXES))
    for image in _files(images, IMAGE_SUFFIXES):
        mask = mask_files.get(image.stem)
        if mask is None:
            logger.warning("no mask for %s in %s", image.name, masks)
            continue
        values = read_mask(mask)
        check_header_size(image, values.shape, mask)
        labels = [int(v) for v in np.unique(values) if v != 0]
        if len(labels) == 1:
            yield SampleRef(image.stem, image, mask, "label", labels[0])
        else:
            for label in labels:
                yield SampleRef(f"{image.stem}#{label:03d}", image, mask, "label", label)


#: Dataset kinds -> sample listers.
DATASETS: dict[str, Callable[[Path], Iterator[SampleRef]]] = {
    "grabcut": _list_grabcut,
    "berkeley": _list_berkeley,
    "davis": _list_davis,
    "sbd": _list_sbd,
    "cod10k": _list_cod10k,
    "mvtec": _list_mvtec,
    "folder": _list_folder,
}


def open_dataset(name: str, root: str | Path, *, limit: int | None = None,
                 void: str = "background") -> Dataset:
    """List the samples of a benchmark folder.

    Parameters
    ----------
    name : str
        One of `DATASETS` (case-insensitive): ``grabcut``, ``berkeley``, ``davis``, ``sbd``,
        ``cod10k``, ``mvtec``, ``folder``.
    root : str or Path
        The dataset folder (see the module docstring for the layouts).
    limit : int or None
        Keep the first `limit` samples (in name order) only.
    void : {"background", "ignore"}
        What void pixels become (default: background, FocSAM's protocol).

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        Unknown name, missing folder, unknown layout, no samples, or (where it can be seen
        from the file headers) an image and its mask of different sizes.
    """
    check_void(void)
    kind = str(name).lower()
    if kind not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be >= 1, got {limit}")
    refs: list[SampleRef] = []
    for ref in DATASETS[kind](root):
        if ref.decode in ("object", "binary"):
            check_pair_headers(ref.image_path, ref.mask_path)
        refs.append(ref)
        if limit is not None and len(refs) >= limit:
            break
    if not refs:
        raise DatasetError(f"no {kind} samples (image + mask pairs) found in {root}")
    logger.info("%s: %d samples in %s", kind, len(refs), root)
    return Dataset(kind, root, refs, void)


