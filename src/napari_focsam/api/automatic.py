"""Automatic mask generation ("segment everything") on the frames of a `Segmenter`.

The interactive model clicks a grid of points over a frame and keeps the good, distinct masks
(`napari_focsam.engine.automatic`); the masks become new objects in the segmenter's labels.

- **Features.** The uncropped layer decodes on the frame's cached features (the same embedding
  store the drawing uses, so a frame already encoded is not encoded again). Crops of the crop
  layers are read from the stack (only their region) and encoded as images, as the official
  generators do.
- **Tiles.** When the segmenter tiles its frames (frames larger than the model input, see
  `napari_focsam.engine.tiling`), the tiles are a crop layer under the whole frame: the frame
  (resized to the model input, for objects larger than a tile), then every tile at full
  resolution with its own crop layers, each on its cached features. The generator's crop logic
  merges them as it merges crops: a tile's masks within 20 px of one of its sides inside the
  frame are dropped (the object is cut there; an object narrower than ``2 * halo - 40`` px lies
  that far inside some tile and is found whole there), and box NMS across crops removes the
  duplicates, preferring the smaller crop (a tile's mask over the frame's; equal tiles tie and
  the first tile's mask stays).
- **Labels.** New objects get ids after the largest id in the labels (all frames, as they were
  when the run started; a frame's cleared ids are not reused). Larger masks
  are painted first, so a small object inside a large one stays visible; with
  ``mode="only_background"`` (default) existing labels are kept and new objects fill only
  background pixels, ``"replace"`` clears the frame first. An object left with fewer than
  ``max(1, params.min_area)`` visible pixels is dropped; ids stay consecutive.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterator, Sequence

import numpy as np
import torch

from ..engine.automatic import AutoMask, AutoMaskParams, AutoMaskParamsError, AutomaticMaskGenerator, Crop
from ..engine.cancel import Interrupted, stop_on
from ..engine.interactive import BatchPredictor
from .segmenter import Progress, Segmenter

__all__ = [
    "EVERYTHING_MODES",
    "automatic_discover",
    "default_params",
    "find_masks",
    "paint_masks",
    "segment_everything",
    "segment_everything_stack",
]

logger = logging.getLogger(__name__)

#: How new objects meet existing labels: fill only background pixels, or clear the frame first.
EVERYTHING_MODES = ("only_background", "replace")
#: Stage name of the `Progress` reports (units: decoder batches of clicks).
STAGE = "everything"


def default_params(segmenter: Segmenter, **overrides) -> AutoMaskParams:
    """The official generator's defaults for the segmenter's interactive model (SAM, FocSAM,
    micro-sam, MobileSAM: segment-anything's; SAM 2: sam2's), with `overrides`.

    Raises
    ------
    AutoMaskParamsError
        An unknown or unusable setting.
    """
    predictor = segmenter.interactive.interactive_predictor()
    return predictor.automatic_defaults().replace(**overrides)


def _tile_boxes(segmenter: Segmenter) -> list[tuple[int, int, int, int]]:
    """``(row0, col0, row1, col1)`` of every tile (none when frames are not tiled)."""
    grid = segmenter.tile_grid
    if grid is None:
        return []
    boxes = []
    for tile in range(grid.n_tiles):
        (r0, r1), (c0, c1) = grid.region(tile)
        boxes.append((r0, c0, r1, c1))
    return boxes


def _plan(segmenter: Segmenter, generator: AutomaticMaskGenerator) -> list[Crop]:
    """The crops of every frame: the frame's; with tiles, the whole frame then each tile's."""
    shape = segmenter.source.frame_shape
    tiles = _tile_boxes(segmenter)
    if not tiles:
        return generator.crops(shape)
    return [Crop((0, 0, *shape), 0), *generator.crops(shape, tiles)]


def find_masks(segmenter: Segmenter, frame: int, generator: AutomaticMaskGenerator,
               crops: Sequence[Crop] | None = None, *,
               predictor: BatchPredictor | None = None) -> Generator[tuple[int, int], None,
                                                                     list[AutoMask]]:
    """The masks of flat frame `frame`, step by step (`AutomaticMaskGenerator.run`).

    Parameters
    ----------
    segmenter : Segmenter
    frame : int
        Flat frame index.
    generator : AutomaticMaskGenerator
    crops : sequence of Crop, optional
        Default: the frame's crops, with tiles the frame's and its tiles' (see the module
        docstring).
    predictor : BatchPredictor, optional
        Default: a new predictor of the interactive model.

    Yields
    ------
    tuple of int
        ``(batches done, batches in all)``.

    Returns
    -------
    list of AutoMask
        ``masks = yield from find_masks(...)``.
    """
    source = segmenter.source
    flat = source.check_index(frame)
    shape = source.frame_shape
    crops = _plan(segmenter, generator) if crops is None else list(crops)
    predictor = segmenter.interactive.interactive_predictor() if predictor is None else predictor
    tiles = segmenter.tile_store
    tile_of = {box: t for t, box in enumerate(_tile_boxes(segmenter))}

    def predictor_for(crop: Crop) -> BatchPredictor:
        r0, c0, r1, c1 = crop.box
        if crop.box == (0, 0, *shape):
            predictor.set_frame(segmenter.stores["interactive"].features(flat), shape)
        elif crop.box in tile_of and tiles is not None:
            index = tiles.source.index(flat, tile_of[crop.box])
            predictor.set_frame(tiles.features(index), tiles.frame_shape)
        else:
            predictor.set_image(source.region(flat, (r0, r1), (c0, c1)))
        return predictor

    return (yield from generator.run(shape, predictor_for, crops))


def paint_masks(frame_labels: np.ndarray, masks: Sequence[AutoMask], *, first_id: int,
                mode: str = "only_background", min_area: int = 0) -> tuple[np.ndarray, list[int]]:
    """Write masks into one frame's labels as new objects.

    Parameters
    ----------
    frame_labels : np.ndarray
        ``(H, W)`` integer labels (not modified).
    masks : sequence of AutoMask
        In the generator's order (it decides the ids).
    first_id : int
        Id of the first new object.
    mode : {"only_background", "replace"}
        Keep existing labels (new objects take only background pixels), or start from an
        empty frame.
    min_area : int
        Objects left with fewer visible pixels (and at least 1) are dropped.

    Returns
    -------
    labels : np.ndarray
        ``(H, W)`` new labels, `frame_labels`' dtype.
    ids : list of int
        The new objects' ids, consecutive from `first_id`, in `masks` order (dropped objects
        take none).

    Raises
    ------
    AutoMaskParamsError
        Unknown `mode`, or ids beyond the labels' dtype.
    """
    if mode not in EVERYTHING_MODES:
        raise AutoMaskParamsError(f"mode must be one of {EVERYTHING_MODES}, got {mode!r}")
    labels = np.asarray(frame_labels)
    base = np.zeros_like(labels) if mode == "replace" else labels
    free = base == 0
    index = np.zeros(labels.shape, dtype=np.int32)  # 1 + position in `masks`, 0: none
    for k in sorted(range(len(masks)), key=lambda i: -masks[i].area):  # large first
        m = masks[k]
        r0, c0, r1, c1 = m.box
        if m.area == 0:
            continue
        region = index[r0:r1, c0:c1]
        region[m.patch & free[r0:r1, c0:c1]] = k + 1
    visible = np.bincount(index.ravel(), minlength=len(masks) + 1)[1:]
    kept = np.flatnonzero(visible >= max(1, int(min_area)))
    ids = list(range(int(first_id), int(first_id) + len(kept)))
    if ids and ids[-1] > np.iinfo(labels.dtype).max:
        raise AutoMaskParamsError(f"object id {ids[-1]} does not fit the labels ({labels.dtype})")
    table = np.zeros(len(masks) + 1, dtype=labels.dtype)
    table[kept + 1] = ids
    out = np.where(index > 0, table[index], base).astype(labels.dtype, copy=False)
    return out, ids


def automatic_discover(segmenter: Segmenter, params: AutoMaskParams | None = None, *,
                       cancel_event: threading.Event | None = None
                       ) -> Callable[[int], list[AutoMask]]:
    """``discover(flat_frame) -> masks``: every object automatic mask generation finds on a
    frame (what "Track all" seeds and discovers new objects with).

    Parameters
    ----------
    segmenter : Segmenter
    params : AutoMaskParams, optional
        Default: `default_params`.
    cancel_event : threading.Event, optional
        Stops the model within a block: the call then raises `Interrupted`.

    Returns
    -------
    callable
        Flat frame index -> list of `AutoMask` (``mask()`` gives the ``(H, W)`` bool mask),
        largest-scored first as the generator keeps them; nothing is written to the labels.
    """
    params = default_params(segmenter) if params is None else params
    generator = AutomaticMaskGenerator(params)
    crops = _plan(segmenter, generator)
    predictor = segmenter.interactive.interactive_predictor()
    net = segmenter.interactive.net

    def discover(flat: int) -> list[AutoMask]:
        steps = find_masks(segmenter, flat, generator, crops, predictor=predictor)
        try:
            while True:
                if cancel_event is not None and cancel_event.is_set():
                    raise Interrupted("stopped on request")
                with torch.no_grad(), stop_on(cancel_event, net):
                    next(steps)
        except StopIteration as finished:
            masks = list(finished.value)
        finally:
            steps.close()
        logger.info("frame %d: %d objects found automatically", flat, len(masks))
        return masks

    return discover


def segment_everything_stack(segmenter: Segmenter, frames: Sequence[int] | None = None, *,
                             params: AutoMaskParams | None = None, mode: str = "only_background",
                             cancel_event: threading.Event | None = None) -> Iterator[Progress]:
    """Segment everything on each frame, writing new objects to ``segmenter.labels``.

    A frame's labels are written once its masks are found; stopping the generator or setting
    `cancel_event` (which stops the model within a block) keeps the frames written so far. The
    arguments are checked at once; the work happens as the iterator is consumed.

    Parameters
    ----------
    segmenter : Segmenter
    frames : sequence of int, optional
        Flat frame indices (default: all).
    params : AutoMaskParams, optional
        Default: `default_params` (the model family's official defaults).
    mode : {"only_background", "replace"}
        See `paint_masks`.
    cancel_event : threading.Event, optional

    Yields
    ------
    Progress
        Stage ``"everything"``, units: decoder batches of clicks over all frames.

    Raises
    ------
    AutoMaskParamsError
        Unknown `mode`.
    IndexError
        A frame that does not exist.
    """
    if mode not in EVERYTHING_MODES:
        raise AutoMaskParamsError(f"mode must be one of {EVERYTHING_MODES}, got {mode!r}")
    source = segmenter.source
    flats = list(range(len(source))) if frames is None else [source.check_index(f) for f in frames]
    params = default_params(segmenter) if params is None else params
    return _everything(segmenter, flats, params, mode, cancel_event)


def _everything(segmenter: Segmenter, flats: list[int], params: AutoMaskParams, mode: str,
                cancel_event: threading.Event | None) -> Iterator[Progress]:
    generator = AutomaticMaskGenerator(params)
    crops = _plan(segmenter, generator)
    per_frame = generator.n_batches(crops)
    total = per_frame * len(flats)
    predictor = segmenter.interactive.interactive_predictor()
    net = segmenter.interactive.net
    next_id = int(segmenter.labels.max(initial=0)) + 1
    for n, flat in enumerate(flats):
        steps = find_masks(segmenter, flat, generator, crops, predictor=predictor)
        try:
            while True:
                # grad and the cancel hooks are thread-global: held only while the model runs
                with torch.no_grad(), stop_on(cancel_event, net):
                    done, _ = next(steps)
                if cancel_event is not None and cancel_event.is_set():
                    logger.info("segment everything cancelled on frame %d", flat)
                    return
                yield Progress(STAGE, n * per_frame + done, total, flat)
        except StopIteration as finished:
            masks = finished.value
        except Interrupted:
            logger.info("segment everything cancelled on frame %d", flat)
            return
        labels = segmenter.labels
        out, ids = paint_masks(labels[flat], masks, first_id=next_id, mode=mode,
                               min_area=params.min_area)
        labels[flat] = out
        next_id += len(ids)
        logger.info("frame %d: %d new objects (%d masks found)", flat, len(ids), len(masks))


def segment_everything(segmenter: Segmenter, frame: int | None = None, outer: int | None = None,
                       *, params: AutoMaskParams | None = None, mode: str = "only_background",
                       cancel_event: threading.Event | None = None) -> np.ndarray:
    """Segment everything on one frame (see `segment_everything_stack`).

    Parameters
    ----------
    segmenter : Segmenter
    frame, outer : int or None
        The frame (None for a 2D image), as `Segmenter.flat_frame` takes them.
    params, mode, cancel_event
        See `segment_everything_stack`.

    Returns
    -------
    np.ndarray
        ``(H, W)`` labels of the frame (a copy of what was written to ``segmenter.labels``).
    """
    flat = segmenter.flat_frame(frame, outer)
    for _ in segment_everything_stack(segmenter, [flat], params=params, mode=mode,
                                      cancel_event=cancel_event):
        pass
    return segmenter.labels[flat].copy()
