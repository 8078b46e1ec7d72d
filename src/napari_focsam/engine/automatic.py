"""Automatic mask generation ("segment everything") with an interactive model.

The pipeline of the official generators (segment-anything 1.0 `SamAutomaticMaskGenerator`,
sam2 1.1.0 `SAM2AutomaticMaskGenerator`), which give the same masks, scores and order from the
same decoder outputs (see ``tests/engine/test_automatic_parity.py``):

1. **Crops**: the frame, plus for crop layer ``i = 1..crop_n_layers`` a ``2^i x 2^i`` grid of
   overlapping crops (`crop_boxes`); each crop is encoded as an image of its own.
2. **Points**: a regular grid of ``points_per_side / downscale^i`` points per side on each crop
   of layer ``i`` (`layer_point_grids`), decoded ``points_per_batch`` at a time as single
   positive clicks (`BatchPredictor.predict_batch`; three masks per click in multimask mode).
3. **Per batch**: masks whose predicted IoU is not above `pred_iou_thresh` are dropped, then
   those whose stability score (IoU of the logits thresholded at ``+-offset``) is below
   `stability_score_thresh`; masks are binarised and boxed, and those whose box lies within
   20 px of a crop edge that is not a frame edge are dropped. SAM 2's option
   `refine_with_mask` first decodes every mask again with its own logits as mask input.
4. **Per crop**: box NMS (`box_nms_thresh`, best predicted IoU first).
5. **Across crops**: box NMS (`crop_nms_thresh`) preferring masks of smaller crops.
6. **Clean-up** (`min_mask_region_area`): segment-anything fills holes and removes islands
   smaller than it in the final masks, then runs NMS again preferring untouched masks
   (``region_cleanup="masks"``); sam2 instead flips holes and specks of the low-resolution
   logits of every prediction (``"low_res"``, done by the predictor).
7. Ours, off by default: masks below `min_area` or above `max_area` pixels are dropped.

Differences that change no result: masks that fail the IoU filter are never upscaled, masks are
kept as the patch inside their box (not as run-length codes), and a frame may be split into
several top-level regions (tiles, `crops_of_regions`) whose masks are merged like crops.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, fields
from itertools import product

import numpy as np
import torch
from scipy import ndimage

from ..errors import UserError
from .interactive import BatchPrediction, BatchPredictor
from .nms import box_area, nms
from .regions import remove_small_regions

__all__ = [
    "REGION_CLEANUPS",
    "AutoMask",
    "AutoMaskParams",
    "AutoMaskParamsError",
    "AutomaticMaskGenerator",
    "Crop",
    "crop_boxes",
    "crops_of_regions",
    "layer_point_grids",
    "point_grid",
]

logger = logging.getLogger(__name__)

#: Where `min_mask_region_area` acts: on the final masks (segment-anything) or on the
#: low-resolution logits of every prediction (sam2).
REGION_CLEANUPS = ("masks", "low_res")
#: Masks whose box is within this many pixels of an inner crop edge are dropped (official).
CROP_EDGE_TOLERANCE = 20.0
#: Float32 values upscaled at once (bounds the memory of full-resolution logits: 128 MiB).
UPSCALE_BUDGET = 1 << 25

Box = tuple[int, int, int, int]


class AutoMaskParamsError(UserError, ValueError):
    """Automatic mask generation settings that cannot be used."""


@dataclass(frozen=True)
class AutoMaskParams:
    """Settings of automatic mask generation; the defaults are segment-anything's
    (`sam2` gives sam2's). Pixel values are frame pixels.

    Attributes
    ----------
    points_per_side : int
        Points along each side of the layer-0 grid (``points_per_side**2`` clicks).
    points_per_batch : int
        Clicks decoded at once (memory, not results).
    pred_iou_thresh : float
        Keep masks whose predicted IoU is above this (0: no filter).
    stability_score_thresh : float
        Keep masks whose stability score is at least this (0: no filter).
    stability_score_offset : float
        Logit offset of the stability score.
    mask_threshold : float
        Logits above this are inside a mask.
    box_nms_thresh : float
        Box IoU above which a mask of the same crop with a lower predicted IoU is dropped.
    crop_n_layers : int
        Crop layers besides the whole frame (layer ``i`` has ``4^i`` crops).
    crop_nms_thresh : float
        Box IoU above which a mask of a larger crop is dropped.
    crop_overlap_ratio : float
        Overlap of layer-1 crops as a fraction of the frame's shorter side.
    crop_n_points_downscale_factor : int
        Layer ``i`` has ``points_per_side / factor**i`` points per side.
    min_mask_region_area : int
        Holes and islands smaller than this are removed (0: none); see `region_cleanup`.
    region_cleanup : {"masks", "low_res"}
        Where `min_mask_region_area` acts: final masks (segment-anything) or the
        low-resolution logits of each prediction, holes and specks of at most that area (sam2).
    multimask : bool
        Three masks per click (sam2 can ask for one).
    refine_with_mask : bool
        Decode every mask again with its low-resolution logits as mask input before filtering
        (sam2's ``use_m2m``).
    min_area : int
        Drop masks of fewer pixels (ours; 0: none).
    max_area : int or None
        Drop masks of more pixels (ours; None: none).
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    region_cleanup: str = "masks"
    multimask: bool = True
    refine_with_mask: bool = False
    min_area: int = 0
    max_area: int | None = None

    def __post_init__(self) -> None:
        ints = {"points_per_side": 1, "points_per_batch": 1, "crop_n_layers": 0,
                "crop_n_points_downscale_factor": 1, "min_mask_region_area": 0, "min_area": 0}
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise AutoMaskParamsError(f"{name} must be a whole number >= {low}, got {value!r}")
        if self.max_area is not None and (isinstance(self.max_area, bool) or self.max_area < 1):
            raise AutoMaskParamsError(f"max_area must be None or >= 1 pixel, got {self.max_area!r}")
        if self.max_area is not None and self.max_area < self.min_area:
            raise AutoMaskParamsError(f"max_area ({self.max_area}) is below min_area "
                                      f"({self.min_area})")
        for name in ("box_nms_thresh", "crop_nms_thresh"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise AutoMaskParamsError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 <= float(self.crop_overlap_ratio) < 1.0:
            raise AutoMaskParamsError(f"crop_overlap_ratio must be in [0, 1), got "
                                      f"{self.crop_overlap_ratio!r}")
        if self.region_cleanup not in REGION_CLEANUPS:
            raise AutoMaskParamsError(f"region_cleanup must be one of {REGION_CLEANUPS}, got "
                                      f"{self.region_cleanup!r}")
        last = self.points_per_side // self.crop_n_points_downscale_factor ** self.crop_n_layers
        if last < 1:
            raise AutoMaskParamsError(
                f"crop layer {self.crop_n_layers} would get no points: {self.points_per_side} "
                f"points per side / {self.crop_n_points_downscale_factor}^{self.crop_n_layers}")

    @classmethod
    def sam2(cls, **overrides) -> AutoMaskParams:
        """sam2 1.1.0's `SAM2AutomaticMaskGenerator` defaults (predicted IoU above 0.8,
        `min_mask_region_area` on the low-resolution logits), with `overrides`."""
        return cls(**{"pred_iou_thresh": 0.8, "region_cleanup": "low_res", **overrides})

    @classmethod
    def from_official(cls, kwargs: dict, *, sam2: bool = False) -> AutoMaskParams:
        """Settings from an official generator's keyword arguments (``multimask_output`` ->
        `multimask`, ``use_m2m`` -> `refine_with_mask`; ``output_mode`` ignored; explicit
        ``point_grids`` are not supported); `sam2` starts from sam2's defaults."""
        renames = {"multimask_output": "multimask", "use_m2m": "refine_with_mask"}
        given = {renames.get(k, k): v for k, v in kwargs.items() if k != "output_mode"}
        if given.get("point_grids") is not None:
            raise AutoMaskParamsError("explicit point_grids are not supported: use "
                                      "points_per_side")
        given.pop("point_grids", None)
        base = cls.sam2() if sam2 else cls()
        return base.replace(**given)

    def replace(self, **changes) -> AutoMaskParams:
        """A copy with `changes` (unknown names raise `AutoMaskParamsError`)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise AutoMaskParamsError(f"unknown automatic mask setting(s) {unknown}; known: "
                                      f"{sorted(names)}")
        return type(self)(**{**{n: getattr(self, n) for n in names}, **changes})


@dataclass(frozen=True)
class Crop:
    """A region of the frame encoded as an image of its own.

    Attributes
    ----------
    box : tuple of int
        ``(row0, col0, row1, col1)`` half-open, frame pixels.
    layer : int
        Crop layer (0: a whole frame or tile); picks the point grid.
    """

    box: Box
    layer: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)`` of the crop."""
        r0, c0, r1, c1 = self.box
        return r1 - r0, c1 - c0

    @property
    def area(self) -> int:
        h, w = self.shape
        return h * w


@dataclass(frozen=True, eq=False)
class AutoMask:
    """One mask found by automatic mask generation (an official output record).

    Attributes
    ----------
    patch : np.ndarray
        ``(row1 - row0, col1 - col0)`` bool: the mask inside `box`.
    box : tuple of int
        ``(row0, col0, row1, col1)`` half-open bounding box in frame pixels; ``(0, 0, 0, 0)``
        for an empty mask.
    area : int
        Pixels in the mask.
    predicted_iou : float
        The model's predicted IoU.
    stability_score : float
        IoU of the mask's logits thresholded at ``threshold +- offset``.
    point : tuple of float
        ``(row, col)`` of the click that gave the mask, frame pixels.
    crop_box : tuple of int
        ``(row0, col0, row1, col1)`` half-open: the crop it was found in.
    frame_shape : tuple of int
        ``(H, W)``.
    """

    patch: np.ndarray
    box: Box
    area: int
    predicted_iou: float
    stability_score: float
    point: tuple[float, float]
    crop_box: Box
    frame_shape: tuple[int, int]

    def mask(self) -> np.ndarray:
        """``(H, W)`` bool mask."""
        out = np.zeros(self.frame_shape, dtype=bool)
        r0, c0, r1, c1 = self.box
        out[r0:r1, c0:c1] = self.patch
        return out

    def to_record(self) -> dict:
        """The official record: ``segmentation`` ``(H, W)`` bool, ``area``, ``bbox`` (x, y, w, h)
        with the official inclusive width (``w = x_max - x_min``), ``predicted_iou``,
        ``point_coords`` ``[[x, y]]``, ``stability_score``, ``crop_box`` (x, y, w, h)."""
        r0, c0, r1, c1 = self.box
        bbox = [0, 0, 0, 0] if self.area == 0 else [c0, r0, c1 - 1 - c0, r1 - 1 - r0]
        cr0, cc0, cr1, cc1 = self.crop_box
        return {"segmentation": self.mask(), "area": self.area, "bbox": bbox,
                "predicted_iou": self.predicted_iou, "point_coords": [[self.point[1], self.point[0]]],
                "stability_score": self.stability_score,
                "crop_box": [cc0, cr0, cc1 - cc0, cr1 - cr0]}


# ----------------------------------------------------------------------------- geometry


def point_grid(n_per_side: int) -> np.ndarray:
    """``(n*n, 2)`` float64 (x, y) in ``[0, 1]``: cell centres of an ``n x n`` grid, rows of
    constant y (the official ``build_point_grid``)."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """The point grid of each crop layer ``0..n_layers`` (``int(n / downscale**i)`` per side)."""
    return [point_grid(int(n_per_side / downscale ** i)) for i in range(n_layers + 1)]


def crop_boxes(frame_shape: tuple[int, int], n_layers: int, overlap_ratio: float) -> list[Crop]:
    """The frame and its crop layers, in the official order (``generate_crop_boxes``).

    Parameters
    ----------
    frame_shape : tuple of int
        ``(H, W)``.
    n_layers : int
        Crop layers besides the frame; layer ``i`` has ``2^i x 2^i`` crops, column-major.
    overlap_ratio : float
        Overlap of neighbouring layer-1 crops as a fraction of the shorter side (halved per
        layer).

    Returns
    -------
    list of Crop
    """
    h, w = (int(s) for s in frame_shape)
    crops = [Crop((0, 0, h, w), 0)]
    short = min(h, w)
    for layer in range(1, n_layers + 1):
        n = 2 ** layer
        overlap = int(overlap_ratio * short * (2 / n))
        crop_w = int(math.ceil((overlap * (n - 1) + w) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + h) / n))
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(x0s, y0s):
            crops.append(Crop((y0, x0, min(y0 + crop_h, h), min(x0 + crop_w, w)), layer))
    return crops


def crops_of_regions(regions: Sequence[Box], n_layers: int, overlap_ratio: float) -> list[Crop]:
    """`crop_boxes` of each region (e.g. the tiles of a large frame), shifted into the frame:
    each region, then its crop layers, region by region."""
    out = []
    for r0, c0, r1, c1 in regions:
        for crop in crop_boxes((r1 - r0, c1 - c0), n_layers, overlap_ratio):
            b = crop.box
            out.append(Crop((b[0] + r0, b[1] + c0, b[2] + r0, b[3] + c0), crop.layer))
    return out


# ----------------------------------------------------------------------------- candidates


@dataclass
class _Found:
    """Masks kept so far: parallel lists / arrays, boxes inclusive ``(r0, c0, r1, c1)`` in
    frame pixels (the official box convention, which the NMS sees)."""

    patches: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)  # (4,) int64 each
    ious: list[float] = field(default_factory=list)
    stabilities: list[float] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)
    crops: list[Box] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.patches)

    def extend(self, other: _Found) -> None:
        for name in ("patches", "boxes", "ious", "stabilities", "points", "crops"):
            getattr(self, name).extend(getattr(other, name))

    def take(self, index: Sequence[int]) -> _Found:
        """The masks `index`, in that order."""
        out = _Found()
        for name in ("patches", "boxes", "ious", "stabilities", "points", "crops"):
            values = getattr(self, name)
            setattr(out, name, [values[i] for i in index])
        return out

    def box_array(self) -> np.ndarray:
        return np.stack(self.boxes) if self.boxes else np.zeros((0, 4), dtype=np.int64)


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``(n, H, W)`` bool -> ``(n, 4)`` int64 inclusive (row0, col0, row1, col1); zeros for an
    empty mask (official ``batched_mask_to_box``)."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.int64)
    rows = masks.any(dim=2)  # (n, H)
    cols = masks.any(dim=1)  # (n, W)
    r_idx = torch.arange(h, device=masks.device)
    c_idx = torch.arange(w, device=masks.device)
    bottom = (rows * r_idx).amax(dim=1)
    top = torch.where(rows, r_idx, h).amin(dim=1)
    right = (cols * c_idx).amax(dim=1)
    left = torch.where(cols, c_idx, w).amin(dim=1)
    boxes = torch.stack([top, left, bottom, right], dim=1).to(torch.int64)
    empty = ~rows.any(dim=1)
    return torch.where(empty[:, None], torch.zeros_like(boxes), boxes)


def _near_inner_edge(boxes: np.ndarray, crop: Box, frame_shape: tuple[int, int]) -> np.ndarray:
    """``(n,)`` bool: a box side within `CROP_EDGE_TOLERANCE` of the crop's side but not of the
    frame's (official ``is_box_near_crop_edge``; boxes inclusive, frame pixels)."""
    b = boxes.astype(np.float32)
    crop_b = np.asarray(crop, dtype=np.float32)[None]
    frame_b = np.asarray((0, 0, *frame_shape), dtype=np.float32)[None]
    near_crop = np.abs(b - crop_b) <= CROP_EDGE_TOLERANCE
    near_frame = np.abs(b - frame_b) <= CROP_EDGE_TOLERANCE
    return (near_crop & ~near_frame).any(axis=1)


def _stability(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """``(n, H, W)`` logits -> ``(n,)`` float32 IoU of the masks at ``threshold +- offset``
    (official ``calculate_stability_score``; NaN for an empty outer mask)."""
    inner = (logits > (threshold + offset)).sum(dim=(-1, -2), dtype=torch.int32)
    outer = (logits > (threshold - offset)).sum(dim=(-1, -2), dtype=torch.int32)
    return inner / outer


# ----------------------------------------------------------------------------- generator


class AutomaticMaskGenerator:
    """Find every object of a frame with an interactive model (see the module docstring).

    Parameters
    ----------
    params : AutoMaskParams, optional
        Settings (default: segment-anything's; a predictor's `automatic_defaults` gives its
        family's).
    """

    def __init__(self, params: AutoMaskParams | None = None) -> None:
        self.params = AutoMaskParams() if params is None else params
        p = self.params
        self.point_grids = layer_point_grids(p.points_per_side, p.crop_n_layers,
                                             p.crop_n_points_downscale_factor)

    # ------------------------------------------------------------------ plan
    def crops(self, frame_shape: tuple[int, int],
              regions: Sequence[Box] | None = None) -> list[Crop]:
        """The crops of a frame: `crop_boxes` of the frame, or of each of `regions`
        (``(row0, col0, row1, col1)`` half-open, e.g. tiles) when given."""
        p = self.params
        if regions is None:
            return crop_boxes(frame_shape, p.crop_n_layers, p.crop_overlap_ratio)
        return crops_of_regions(regions, p.crop_n_layers, p.crop_overlap_ratio)

    def n_batches(self, crops: Sequence[Crop]) -> int:
        """Decoder batches of clicks run over `crops`."""
        per = self.params.points_per_batch
        return sum(math.ceil(len(self.point_grids[c.layer]) / per) for c in crops)

    # ------------------------------------------------------------------ run
    def generate(self, frame_shape: tuple[int, int],
                 predictor_for: Callable[[Crop], BatchPredictor],
                 crops: Sequence[Crop] | None = None) -> list[AutoMask]:
        """The masks of a frame (`run` consumed at once)."""
        steps = self.run(frame_shape, predictor_for, crops)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def generate_on_image(self, predictor: BatchPredictor, image: np.ndarray,
                          channel_axis: int | None = None) -> list[AutoMask]:
        """The masks of one 2D image, every crop encoded with ``predictor.set_image`` (as the
        official generators do)."""
        img = np.asarray(image)
        axis = None if img.ndim == 2 else (img.ndim - 1 if channel_axis is None else channel_axis)
        if axis is not None:
            img = np.moveaxis(img, axis, -1)
        shape = (int(img.shape[0]), int(img.shape[1]))

        def predictor_for(crop: Crop) -> BatchPredictor:
            r0, c0, r1, c1 = crop.box
            predictor.set_image(img[r0:r1, c0:c1], channel_axis=None if axis is None else -1)
            return predictor

        return self.generate(shape, predictor_for)

    def run(self, frame_shape: tuple[int, int], predictor_for: Callable[[Crop], BatchPredictor],
            crops: Sequence[Crop] | None = None) -> Generator[tuple[int, int], None, list[AutoMask]]:
        """Generate the masks of a frame step by step.

        Parameters
        ----------
        frame_shape : tuple of int
            ``(H, W)``.
        predictor_for : callable
            ``Crop -> BatchPredictor`` whose frame is that crop (its ``original_size`` is the
            crop's shape): the frame's or a tile's cached features, or the crop encoded.
        crops : sequence of Crop, optional
            Default: `crops` of the frame.

        Yields
        ------
        tuple of int
            ``(batches done, batches in all)`` after each decoder batch.

        Returns
        -------
        list of AutoMask
            In the official order (``StopIteration.value``; ``masks = yield from gen.run(...)``).
        """
        p = self.params
        shape = (int(frame_shape[0]), int(frame_shape[1]))
        crops = self.crops(shape) if crops is None else list(crops)
        total = self.n_batches(crops)
        done = 0
        found = _Found()
        for crop in crops:
            predictor = predictor_for(crop)
            if tuple(predictor.original_size or ()) != crop.shape:
                raise ValueError(f"the predictor for crop {crop.box} holds a frame of "
                                 f"{predictor.original_size}, expected {crop.shape}")
            h, w = crop.shape
            points = self.point_grids[crop.layer] * np.array([[w, h]], dtype=np.float64)  # (x, y)
            in_crop = _Found()
            for start in range(0, len(points), p.points_per_batch):
                in_crop.extend(self._batch(predictor, points[start:start + p.points_per_batch],
                                           crop, shape))
                done += 1
                yield done, total
            keep = nms(in_crop.box_array(), np.asarray(in_crop.ious, dtype=np.float32),
                       p.box_nms_thresh)
            found.extend(in_crop.take(keep))
            logger.debug("crop %s (layer %d): %d masks", crop.box, crop.layer, len(keep))
        if len(crops) > 1 and len(found):
            areas = box_area(np.asarray(found.crops))
            scores = np.float32(1) / areas
            found = found.take(nms(found.box_array(), scores, p.crop_nms_thresh))
        if p.min_mask_region_area > 0 and p.region_cleanup == "masks" and len(found):
            found = self._clean_regions(found, shape)
        masks = self._records(found, shape)
        logger.info("automatic mask generation: %d masks on a %s frame from %d crop(s)",
                    len(masks), shape, len(crops))
        return masks

    # ------------------------------------------------------------------ steps
    def _batch(self, predictor: BatchPredictor, points_xy: np.ndarray, crop: Crop,
               frame_shape: tuple[int, int]) -> _Found:
        """Decode one batch of clicks on a crop and keep the masks that pass the filters."""
        p = self.params
        b = len(points_xy)
        points_rc = np.ascontiguousarray(points_xy[:, None, ::-1])  # (B, 1, 2)
        labels = np.ones((b, 1), dtype=np.int64)
        cleanup = p.min_mask_region_area if p.region_cleanup == "low_res" else 0
        pred = predictor.predict_batch(points_rc, labels, multimask=p.multimask,
                                       min_region_area=cleanup)
        k = pred.scores.shape[1]
        point_of = np.repeat(np.arange(b), k)  # flat mask -> click
        if p.refine_with_mask:
            pred, point_of = self._refine(predictor, pred, points_rc, point_of, cleanup)
        scores = pred.scores.reshape(-1).float().cpu()
        candidates = torch.arange(scores.numel())
        if p.pred_iou_thresh > 0.0:
            candidates = candidates[scores > p.pred_iou_thresh]
        h, w = crop.shape
        chunk = max(1, UPSCALE_BUDGET // max(1, h * w))
        out = _Found()
        for start in range(0, len(candidates), chunk):
            index = candidates[start:start + chunk]
            logits = pred.logits(index).float().cpu()  # (n, h, w)
            stability = _stability(logits, p.mask_threshold, p.stability_score_offset)
            if p.stability_score_thresh > 0.0:
                ok = stability >= p.stability_score_thresh
                index, logits, stability = index[ok], logits[ok], stability[ok]
            masks = logits > p.mask_threshold
            boxes = _mask_boxes(masks).numpy()  # crop pixels, inclusive
            filled = masks.flatten(1).any(dim=1).numpy()
            r0, c0 = crop.box[:2]
            frame_boxes = boxes + np.array([r0, c0, r0, c0], dtype=np.int64)
            ok = ~_near_inner_edge(frame_boxes, crop.box, frame_shape)
            for j in np.flatnonzero(ok):
                br0, bc0, br1, bc1 = (int(v) for v in boxes[j])
                patch = masks[j, br0:br1 + 1, bc0:bc1 + 1].numpy().copy() if filled[j] \
                    else np.zeros((0, 0), dtype=bool)
                i = int(index[j])
                x, y = points_xy[point_of[i]]
                out.patches.append(patch)
                out.boxes.append(frame_boxes[j])
                out.ious.append(float(scores[i]))
                out.stabilities.append(float(stability[j]))
                out.points.append((float(y) + r0, float(x) + c0))
                out.crops.append(crop.box)
        return out

    def _refine(self, predictor: BatchPredictor, pred: BatchPrediction, points_rc: np.ndarray,
                point_of: np.ndarray, cleanup: int) -> tuple[BatchPrediction, np.ndarray]:
        """sam2's ``use_m2m``: every mask decoded again, single-mask, with its own low-res
        logits as mask input (in batches of `points_per_batch`)."""
        low = pred.low_res_logits.flatten(0, 1)  # (B*K, M, M)
        per = self.params.points_per_batch
        parts = [predictor.predict_batch(points_rc[point_of[s:s + per]],
                                         np.ones((len(point_of[s:s + per]), 1), dtype=np.int64),
                                         multimask=False, mask_input=low[s:s + per, None],
                                         min_region_area=cleanup)
                 for s in range(0, len(point_of), per)]
        starts = np.cumsum([0] + [part.scores.numel() for part in parts])

        def upscale(index: torch.Tensor) -> torch.Tensor:
            index = index.cpu().numpy()
            which = np.searchsorted(starts, index, side="right") - 1
            out = [None] * len(index)
            for q in np.unique(which):
                sel = np.flatnonzero(which == q)
                local = torch.from_numpy(index[sel] - starts[q])
                for j, row in zip(sel, parts[q].logits(local), strict=True):
                    out[j] = row
            return torch.stack(out) if out else torch.zeros((0,))

        merged = BatchPrediction(torch.cat([part.scores for part in parts]),
                                 torch.cat([part.low_res_logits for part in parts]), upscale)
        return merged, point_of

    def _clean_regions(self, found: _Found, frame_shape: tuple[int, int]) -> _Found:
        """segment-anything's ``postprocess_small_regions``: holes, then islands, smaller than
        `min_mask_region_area` removed from each mask; NMS on the new boxes preferring
        untouched masks (threshold: the larger NMS threshold); new patches for kept masks."""
        p = self.params
        area = p.min_mask_region_area
        new_patches, new_boxes, untouched = [], [], []
        for patch, box in zip(found.patches, found.boxes, strict=True):
            patch2, box2, changed = _clean_patch(patch, box, area, frame_shape)
            new_patches.append(patch2)
            new_boxes.append(box2)
            untouched.append(not changed)
        scores = np.asarray(untouched, dtype=np.float32)
        keep = nms(np.stack(new_boxes), scores, max(p.box_nms_thresh, p.crop_nms_thresh))
        out = found.take(keep)
        out.patches = [new_patches[i] if not untouched[i] else found.patches[i] for i in keep]
        out.boxes = [new_boxes[i] if not untouched[i] else found.boxes[i] for i in keep]
        return out

    def _records(self, found: _Found, frame_shape: tuple[int, int]) -> list[AutoMask]:
        """`AutoMask` records (half-open boxes), filtered by `min_area` / `max_area`."""
        p = self.params
        out = []
        for i in range(len(found)):
            patch = found.patches[i]
            area = int(np.count_nonzero(patch))
            if area < p.min_area or (p.max_area is not None and area > p.max_area):
                continue
            r0, c0, r1, c1 = (int(v) for v in found.boxes[i])
            box = (0, 0, 0, 0) if area == 0 else (r0, c0, r1 + 1, c1 + 1)
            if area == 0:
                patch = np.zeros((0, 0), dtype=bool)
            out.append(AutoMask(patch=patch, box=box, area=area,
                                predicted_iou=found.ious[i],
                                stability_score=found.stabilities[i], point=found.points[i],
                                crop_box=found.crops[i], frame_shape=frame_shape))
        return out


def _clean_patch(patch: np.ndarray, box: np.ndarray, area: int,
                 frame_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, bool]:
    """`remove_small_regions` (holes, then islands) of one mask given as the patch inside its
    inclusive box, with the frame's connectivity: the patch is padded by one background pixel
    on every side where the frame goes on, so regions joined outside the box are joined here.
    The whole frame is used when a background region outside the box may be small (the mask
    almost fills the frame) or the mask is empty.

    Returns
    -------
    patch : np.ndarray
        The new patch (inside the new box).
    box : np.ndarray
        ``(4,)`` int64 inclusive new box (zeros when empty).
    changed : bool
    """
    h, w = frame_shape
    r0, c0, r1, c1 = (int(v) for v in box)
    if patch.size == 0 or min(_outside_parts(r0, c0, r1, c1, h, w), default=math.inf) < area:
        full = np.zeros(frame_shape, dtype=bool)
        if patch.size:
            full[r0:r1 + 1, c0:c1 + 1] = patch
        full, changed_h = remove_small_regions(full, area, "holes")
        full, changed_i = remove_small_regions(full, area, "islands")
        return _repatch(full, 0, 0, changed_h or changed_i)
    pads = (int(r0 > 0), int(r1 < h - 1), int(c0 > 0), int(c1 < w - 1))
    padded = np.pad(patch, ((pads[0], pads[1]), (pads[2], pads[3])))
    ring = np.ones(padded.shape, dtype=bool)
    ring[pads[0]:padded.shape[0] - pads[1], pads[2]:padded.shape[1] - pads[3]] = False
    # holes: background components not touching the padding ring (those contain a large
    # region outside the box) and smaller than `area`
    regions, n = ndimage.label(~padded, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(regions.ravel(), minlength=n + 1)
    outer = np.unique(regions[ring])
    small = sizes < area
    small[0] = False
    small[outer] = False
    changed_h = bool(small.any())
    if changed_h:
        padded = padded | small[regions]
    inner = padded[pads[0]:padded.shape[0] - pads[1], pads[2]:padded.shape[1] - pads[3]]
    cleaned, changed_i = remove_small_regions(inner, area, "islands")
    patch2, box2, changed = _repatch(cleaned, r0, c0, changed_h or changed_i)
    return patch2, box2, changed


def _outside_parts(r0: int, c0: int, r1: int, c1: int, h: int, w: int) -> list[int]:
    """Pixel counts of the connected parts of the frame outside an inclusive box (two parts
    when the box spans the frame's full width or height, none when it is the frame)."""
    full_w, full_h = c0 == 0 and c1 == w - 1, r0 == 0 and r1 == h - 1
    if full_w and full_h:
        return []
    if full_w:
        return [n for n in (r0 * w, (h - 1 - r1) * w) if n > 0]
    if full_h:
        return [n for n in (c0 * h, (w - 1 - c1) * h) if n > 0]
    return [h * w - (r1 - r0 + 1) * (c1 - c0 + 1)]


def _repatch(mask: np.ndarray, r0: int, c0: int,
             changed: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """A mask (placed at ``(r0, c0)`` of the frame) -> its tight patch and inclusive box."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return np.zeros((0, 0), dtype=bool), np.zeros(4, dtype=np.int64), changed
    patch = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].copy()
    box = np.array([rows[0] + r0, cols[0] + c0, rows[-1] + r0, cols[-1] + c0], dtype=np.int64)
    return patch, box, changed
