"""Objects from a label image (cellpose, StarDist, a Labels layer, an earlier session).

Each label of a 2D label image becomes one object with the label's id: its mask is the prompt,
with its bounding box and an interior point (the pixel furthest inside the mask: the maximum of
its distance transform, the image border counting as background) for models that want those.
All labels are measured in one pass (`scipy.ndimage.find_objects` and a bincount); each label
is then only looked at inside its bounding box, so hundreds of labels cost about one pass over
the frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import UserError
from .prompts_file import MAX_OBJECT_ID, ObjectPrompt

__all__ = ["MIN_AREA", "PROMPT_KINDS", "LabelSeeds", "SeedError", "interior_point", "label_seeds",
           "prompts_from_labels"]

logger = logging.getLogger(__name__)

#: Labels smaller than this many pixels are left out by default (specks of a segmentation).
MIN_AREA = 10
#: What `prompts_from_labels` puts in each prompt.
PROMPT_KINDS = ("mask", "box", "point", "box+point")
#: Ids above this (and above the pixel count) are compacted before `find_objects`, whose
#: output has one entry per id up to the largest.
_DENSE_IDS = 1 << 20


class SeedError(UserError, ValueError):
    """A label image that cannot seed objects (not 2D, not integers, negative ids...)."""


@dataclass(frozen=True)
class LabelSeeds:
    """The labels of one frame, measured once.

    Attributes
    ----------
    shape : tuple of int
        ``(H, W)`` of the label image.
    ids : np.ndarray
        ``(N,)`` int64 label ids, ascending.
    slices : tuple of tuple of slice
        Per label, its bounding box as ``(rows, cols)`` slices.
    crops : tuple of np.ndarray
        Per label, its ``(h, w)`` bool mask inside its bounding box.
    areas : np.ndarray
        ``(N,)`` int64 pixel counts.
    boxes_rc : np.ndarray
        ``(N, 4)`` float64 ``(row0, col0, row1, col1)`` on pixel edges (``row1`` = last row + 1),
        the box convention of `ObjectPrompt`.
    points_rc : np.ndarray
        ``(N, 2)`` float64 ``(row, col)`` of each label's pixel furthest from its outline.
    """

    shape: tuple[int, int]
    ids: np.ndarray
    slices: tuple[tuple[slice, slice], ...]
    crops: tuple[np.ndarray, ...]
    areas: np.ndarray
    boxes_rc: np.ndarray
    points_rc: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def mask(self, k: int) -> np.ndarray:
        """``(H, W)`` bool mask of the `k`-th label (an array of the full frame)."""
        out = np.zeros(self.shape, dtype=bool)
        out[self.slices[k]] = self.crops[k]
        return out


def interior_point(crop: np.ndarray) -> tuple[int, int]:
    """``(row, col)`` in `crop` of the pixel furthest inside the mask (first in raster order
    among equals); pixels outside `crop` count as background.

    Parameters
    ----------
    crop : np.ndarray
        ``(h, w)`` bool, not empty.
    """
    dist = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(r), int(c)


def _checked(labels) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise SeedError(f"a label image is 2D (H, W), got shape {lab.shape}")
    if lab.dtype == bool:
        return lab.astype(np.uint8)
    if lab.dtype.kind not in "iu":
        raise SeedError(f"a label image holds integers, got {lab.dtype}")
    if lab.size and lab.dtype.kind == "i" and lab.min() < 0:
        raise SeedError("a label image must not hold negative ids")
    if lab.size and int(lab.max()) > MAX_OBJECT_ID:
        raise SeedError(f"label ids must be at most {MAX_OBJECT_ID}, got {int(lab.max())}")
    return lab


def label_seeds(labels, min_area: int = MIN_AREA) -> LabelSeeds:
    """Measure every label of a 2D label image.

    Parameters
    ----------
    labels : array-like
        ``(H, W)`` integer (or bool) labels, 0 = background.
    min_area : int
        Labels with fewer pixels are left out (logged).

    Returns
    -------
    LabelSeeds
        Sorted by id.

    Raises
    ------
    SeedError
        `labels` is not a 2D image of non-negative integer ids.
    """
    lab = _checked(labels)
    shape = (int(lab.shape[0]), int(lab.shape[1]))
    top = int(lab.max()) if lab.size else 0
    if top <= max(lab.size, _DENSE_IDS):
        dense, id_of = lab, None
    else:  # a few huge ids: number them 1..n first
        uniq, inverse = np.unique(lab, return_inverse=True)
        dense = inverse.reshape(shape) + (0 if uniq[0] == 0 else 1)
        id_of = uniq[uniq != 0].astype(np.int64)
    areas_all = np.bincount(dense.ravel().astype(np.intp, copy=False))
    found = ndimage.find_objects(dense) if top else []
    ids, slices, crops, areas, boxes, points = [], [], [], [], [], []
    small = 0
    for index, sl in enumerate(found, start=1):
        if sl is None:
            continue
        area = int(areas_all[index])
        if area < min_area:
            small += 1
            continue
        crop = dense[sl] == index
        r, c = interior_point(crop)
        ids.append(int(index if id_of is None else id_of[index - 1]))
        slices.append((sl[0], sl[1]))
        crops.append(crop)
        areas.append(area)
        boxes.append((sl[0].start, sl[1].start, sl[0].stop, sl[1].stop))
        points.append((sl[0].start + r, sl[1].start + c))
    if small:
        logger.info("%d label(s) smaller than %d pixels left out", small, min_area)
    return LabelSeeds(shape, np.asarray(ids, dtype=np.int64), tuple(slices), tuple(crops),
                      np.asarray(areas, dtype=np.int64),
                      np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                      np.asarray(points, dtype=np.float64).reshape(-1, 2))


def prompts_from_labels(labels, frame: int | None, outer: int | None = None, *,
                        min_area: int = MIN_AREA, prompt: str = "mask") -> list[ObjectPrompt]:
    """One `ObjectPrompt` per label of a 2D label image, ids kept.

    Parameters
    ----------
    labels : array-like
        ``(H, W)`` integer labels of one frame, 0 = background.
    frame : int or None
        The frame they are on (None for a 2D image).
    outer : int, optional
        Outer index of 4D data.
    min_area : int
        Labels with fewer pixels are left out.
    prompt : {"mask", "box", "point", "box+point"}
        ``"mask"``: the label's mask alone, which is the object (it enters SAM 2 as a mask
        prompt). Otherwise the box and / or interior point, from which the interactive model
        draws the object again (e.g. to refine rough labels); no mask is carried then.

    Returns
    -------
    list of ObjectPrompt
        Sorted by id. A ``"mask"`` prompt holds a full ``(H, W)`` bool mask: ``H * W`` bytes
        per object.

    Raises
    ------
    SeedError
        Bad `labels` or `prompt`.
    """
    if prompt not in PROMPT_KINDS:
        raise SeedError(f"prompt must be one of {PROMPT_KINDS}, got {prompt!r}")
    seeds = label_seeds(labels, min_area)
    out = []
    for k, obj_id in enumerate(seeds.ids.tolist()):
        p = ObjectPrompt(obj_id, frame, outer=outer)
        if prompt == "mask":
            p.mask = seeds.mask(k)
        if "box" in prompt:
            p.box_rc = seeds.boxes_rc[k].copy()
        if "point" in prompt:
            p.points_rc = seeds.points_rc[k:k + 1].copy()
            p.labels = np.ones(1, dtype=np.int64)
        out.append(p)
    return out
