"""Track all: seed every object on one frame, then carry them all through t (or z) with SAM 2,
starting, ending and dividing tracks on the way.

`TrackAll` works on a `Segmenter` (its SAM 2 model, cached frame features and ``labels``):

1. **Seeds** on ``options.seed_frame``: each label of a label image (ids kept, see
   `napari_focsam.api.seeds`), or the masks of a ``discover(frame)`` callable (ids 1, 2, ...).
   Each enters SAM 2 as a mask prompt.
2. **Tracking** frame by frame to ``options.last_frame`` in one propagation pass; each frame's
   labels are written to ``segmenter.labels`` as soon as the frame is done (a cancelled or
   stopped run keeps them). On each frame, with the rules of :mod:`.lifecycle`:

   - an object absent for ``lost_after`` frames in a row ends (removed from SAM 2);
   - an object split in two comparable parts for ``division_min_frames`` frames in a row
     divides: two daughters with new ids, prompted as masks on every frame of the split
     (from the frame it started), take over the mother's pixels on those frames (already
     written frames are rewritten and reported) and the mother is removed;
   - every ``discover_every`` frames, found masks not covered by tracked objects start new
     tracks (new ids after the largest used) from that frame.

   Objects enter and leave SAM 2 in the middle of the pass (see
   `napari_focsam.engine.propagation`), whose bounded memory keeps the model's state flat;
   this module keeps a few frames per live object and the lineage (`TrackTable`).
3. **Outputs**: ``segmenter.labels`` (stable ids), `TrackAll.table` (begin, end, parent of
   every track), `TrackAll.tracks_layer` (napari Tracks data) and `TrackAll.export_ctc`.

Frames before the seed frame are not touched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ..api.seeds import label_seeds
from ..api.segmenter import PromptPlacementError, Segmenter
from ..engine.cancel import Interrupted, stop_on
from ..engine.precision import autocast_context
from ..engine.propagation import VideoPropagator
from ..families import ModelChoiceError
from .ctc import export_ctc
from .lifecycle import (
    DivisionWatch,
    FrameObjects,
    LostWatch,
    Split,
    TrackOptions,
    paint_frame,
    uncovered_masks,
)
from .table import TrackingError, TrackTable
from .tracks import tracks_from_labels

__all__ = ["Discover", "Division", "TrackAll", "TrackProgress"]

logger = logging.getLogger(__name__)

R = TypeVar("R")

#: ``discover(frame) -> masks``: automatic objects of flat frame `frame`: ``(H, W)`` bool arrays,
#: or objects whose ``mask()`` returns one (`napari_focsam.engine.automatic.AutoMask`).
Discover = Callable[[int], Sequence[Any]]


def _masks(found: Sequence[Any]) -> list[np.ndarray]:
    return [m.mask() if callable(getattr(m, "mask", None)) else m for m in found]


@dataclass(frozen=True)
class Division:
    """A mother track that became two daughters.

    Attributes
    ----------
    mother : int
    daughters : tuple of int
    frame : int
        First frame of the daughters (index along the stack); the mother ends the frame before.
    """

    mother: int
    daughters: tuple[int, int]
    frame: int


@dataclass(frozen=True)
class TrackProgress:
    """One step of `TrackAll.run`.

    Attributes
    ----------
    stage : str
        ``"seed"`` (units: objects entered into SAM 2 on the seed frame) or ``"track"``
        (units: frames).
    done, total : int
        Units finished and planned.
    frame : int
        Flat frame index (of the labels) just written, or the seed frame.
    n_objects : int
        Objects being tracked now.
    started : tuple of int
        Tracks started by this step (seeds, discovered objects; not daughters).
    ended : tuple of int
        Tracks ended because their object was lost.
    divisions : tuple of Division
        Divisions confirmed on this frame.
    rewritten : tuple of int
        Flat frames written again besides `frame` (a division's earlier frames).
    """

    stage: str
    done: int
    total: int
    frame: int
    n_objects: int = 0
    started: tuple[int, ...] = ()
    ended: tuple[int, ...] = ()
    divisions: tuple[Division, ...] = ()
    rewritten: tuple[int, ...] = ()


class TrackAll:
    """Seed every object on one frame and track them all through the stack.

    Arguments are checked here; `run` does the work.

    Parameters
    ----------
    segmenter : Segmenter
        A stack with a SAM 2 propagation model.
    seeds : array-like, optional
        ``(H, W)`` integer labels of the seed frame (a Labels layer's plane, cellpose or
        StarDist output, ``segmenter.labels[flat]``...): each label is an object, id kept.
    discover : callable, optional
        ``discover(flat_frame) -> list of (H, W) bool masks`` (or of objects with a ``mask()``
        method, such as automatic mask generation's `AutoMask`): automatic objects of a frame.
        Seeds the seed frame when `seeds` is None, and finds new objects every
        ``options.discover_every`` frames. It runs in the calling thread; a slow one should
        watch the same cancel event.
    options : TrackOptions, optional
    outer : int, optional
        Outer index of 4D data (default 0).
    propagator : callable, optional
        Builds the tracker: ``propagator(net, features, (H, W), options)`` (default
        `VideoPropagator`; tests pass stand-ins).

    Attributes
    ----------
    table : TrackTable
        Begin / end (stack indices) and parents of the tracks written so far.

    Raises
    ------
    ModelChoiceError
        No SAM 2 propagation model, or the data is not a stack.
    PromptPlacementError
        Seed or last frame, or outer index, outside the data.
    TrackingError
        Neither `seeds` nor `discover`, or seeds of the wrong shape.
    """

    def __init__(self, segmenter: Segmenter, *, seeds=None, discover: Discover | None = None,
                 options: TrackOptions | None = None, outer: int | None = None,
                 propagator: Callable[..., Any] = VideoPropagator) -> None:
        if segmenter.propagation is None or not segmenter.is_stack:
            raise ModelChoiceError("tracking needs a stack (stack_axis) and a SAM 2 propagation "
                                   "model")
        self.segmenter = segmenter
        self.options = options or TrackOptions()
        self.outer = 0 if outer is None else int(outer)
        n_stack = segmenter.source.n_stack
        self.first = self.options.seed_frame
        self.last = n_stack - 1 if self.options.last_frame is None else self.options.last_frame
        if self.last >= n_stack:
            raise PromptPlacementError(f"last frame {self.last} does not exist: the stack has "
                                       f"{n_stack} frames")
        segmenter.flat_frame(self.first, self.outer)  # checks the seed frame and outer index
        if seeds is None and discover is None:
            raise TrackingError("give seed labels or a discover callable (or both)")
        self.seeds = None
        if seeds is not None:
            self.seeds = label_seeds(seeds, self.options.min_area)
            if self.seeds.shape != segmenter.source.frame_shape:
                raise TrackingError(f"seed labels of shape {self.seeds.shape}, the frames are "
                                    f"{segmenter.source.frame_shape}")
            if not len(self.seeds) and discover is None:
                raise TrackingError("the seed labels hold no object (of at least "
                                    f"{self.options.min_area} pixels)")
        self.discover = discover
        self.make_propagator = propagator
        self.table = TrackTable()
        self._next_id = 1
        self._ran = False
        self._last_done: int | None = None

    # ------------------------------------------------------------------ outputs
    def flat(self, frame: int) -> int:
        """Flat (labels) index of `frame` along the stack."""
        return self.segmenter.flat_frame(frame, self.outer)

    def labels(self) -> np.ndarray:
        """``(T, H, W)`` labels of this run's stack (T: the stack length), zero outside the
        frames tracked so far (a view of ``segmenter.labels`` when it covers them all)."""
        n = self.segmenter.source.n_stack
        start = self.flat(0)
        stack = self.segmenter.labels[start:start + n]
        if self._last_done is None:
            return np.zeros_like(stack)
        if self.first == 0 and self._last_done == n - 1:
            return stack
        out = np.zeros_like(stack)
        out[self.first:self._last_done + 1] = stack[self.first:self._last_done + 1]
        return out

    def tracks_layer(self) -> tuple[np.ndarray, dict[int, list[int]]]:
        """``(tracks, graph)`` for a napari Tracks layer (see `tracks_from_labels`)."""
        return tracks_from_labels(self.labels(), self.table)

    def export_ctc(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write the result as a Cell Tracking Challenge folder (see `export_ctc`)."""
        return export_ctc(self.labels(), out_dir, self.table, overwrite=overwrite)

    # ------------------------------------------------------------------ the run
    def run(self, cancel_event: threading.Event | None = None) -> Iterator[TrackProgress]:
        """Seed, then track frame by frame, yielding a `TrackProgress` per seed and per frame.

        Stopping the generator or setting `cancel_event` (which also stops SAM 2 within a
        block) keeps the frames written and `table` consistent with them.
        """
        if self._ran:
            raise TrackingError("this TrackAll has run already; make a new one")
        self._ran = True
        return self._run(cancel_event)

    def _run(self, cancel_event: threading.Event | None) -> Iterator[TrackProgress]:
        seg = self.segmenter
        loaded = seg.propagation
        assert loaded is not None
        view = seg.stores["propagation"].view(self.outer)
        prop = self.make_propagator(loaded.net, view, seg.source.frame_shape, seg.options)

        def step(fn: Callable[..., R], *args: Any) -> R:
            # held only while the model runs, never across a yield (see Segmenter.propagate)
            with torch.no_grad(), autocast_context(loaded.device, loaded.dtype), \
                    stop_on(cancel_event, loaded.net):
                return fn(*args)

        def cancelled() -> bool:
            return cancel_event is not None and cancel_event.is_set()

        opts = self.options
        lost = LostWatch(opts.lost_after)
        splits = DivisionWatch(opts.division_min_frames, opts.min_area, opts.division_area_ratio)
        results = None
        try:
            seeds = self._seeds()
            for k, (obj_id, mask) in enumerate(seeds, start=1):
                if cancelled():
                    logger.info("tracking cancelled while the seeds were entered")
                    return
                step(partial(prop.add_mask, result=False), self.first, obj_id, mask())
                yield TrackProgress("seed", k, len(seeds), self.flat(self.first),
                                    len(prop.obj_ids), started=(obj_id,))
            total = self.last - self.first + 1
            for frame in range(self.first, self.last + 1):
                if cancelled():
                    logger.info("tracking cancelled after %d frames", frame - self.first)
                    return
                if results is None and prop.obj_ids:
                    results = prop.propagate(frame, max_frames=self.last - frame)
                result = None if results is None else step(next, results, None)
                if results is not None and result is None:
                    break
                if result is not None and result.frame != frame:
                    raise RuntimeError(f"the tracker yielded frame {result.frame}, not {frame}")
                event = self._frame(frame, result, prop, step, lost, splits, cancelled)
                if event is None:
                    return
                yield TrackProgress("track", frame - self.first + 1, total, self.flat(frame),
                                    len(prop.obj_ids), *event)
        except Interrupted:
            logger.info("tracking cancelled")
        finally:
            if results is not None:
                results.close()
            logger.info("tracked %d tracks (%d divisions) up to frame %s", len(self.table),
                        len(self.table.parents), self._last_done)

    def _seeds(self) -> list[tuple[int, Callable[[], np.ndarray]]]:
        """``(id, () -> (H, W) bool mask)`` of every seed, ids ascending (label masks are made
        one at a time); sets the next free id."""
        shape = self.segmenter.source.frame_shape
        if self.seeds is not None:
            seeds = self.seeds
            ids = seeds.ids.tolist()
            self._hold(max(ids, default=0))
            self._next_id = max(ids, default=0) + 1
            out = [(obj_id, partial(seeds.mask, k)) for k, obj_id in enumerate(ids)]
        else:
            assert self.discover is not None
            found = uncovered_masks(_masks(self.discover(self.flat(self.first))),
                                    np.zeros(shape, bool), self.options.min_overlap,
                                    self.options.min_area)
            out = [(k, partial(np.asarray, m)) for k, m in enumerate(found, start=1)]
            self._next_id = len(out) + 1
        logger.info("%d objects seeded on frame %d", len(out), self.first)
        return out

    def _hold(self, obj_id: int) -> None:
        """Widen the labels when `obj_id` does not fit their dtype."""
        labels = self.segmenter.labels
        if obj_id > np.iinfo(labels.dtype).max:
            self.segmenter.labels = labels.astype(np.int64)

    def _new_ids(self, n: int) -> list[int]:
        ids = list(range(self._next_id, self._next_id + n))
        self._next_id += n
        if ids:
            self._hold(ids[-1])
        return ids

    def _frame(self, frame: int, result, prop, step, lost: LostWatch, splits: DivisionWatch,
               cancelled: Callable[[], bool]) -> tuple | None:
        """Decide, prompt and write one frame. Returns the event fields of `TrackProgress`
        (None when cancelled before anything of the frame was written).

        Model calls (daughters, new objects) come first and may be interrupted; the labels,
        the table and the removals follow, so an interruption leaves the previous frame's
        state.
        """
        seg = self.segmenter
        shape = seg.source.frame_shape
        opts = self.options
        tracked: tuple[int, ...] = () if result is None else tuple(result.obj_ids)
        if tracked:
            present = result.present()
            logits = result.logits[:, 0] if present.all() else \
                result.logits[torch.as_tensor(present, device=result.logits.device), 0]
            painted = paint_frame((logits > 0).cpu().numpy(), np.asarray(tracked)[present])
        else:
            painted = paint_frame(np.zeros((0, *shape), bool), [])
        visible = {int(obj): k for k, obj in enumerate(painted.ids.tolist())
                   if painted.areas[k] > 0}

        ended, confirmed = [], []
        for obj in tracked:
            k = visible.get(obj)
            if lost.update(obj, k is not None):
                ended.append(obj)
                splits.forget(obj)
                continue
            begin = self.table.begin.get(obj)
            if k is None or begin is None or frame <= begin:
                splits.forget(obj)
                continue
            window = splits.update(obj, frame, painted.slices[k], painted.crop(k))
            if window is not None:
                confirmed.append((obj, window))

        divisions = []
        for mother, window in confirmed:
            daughters = tuple(self._new_ids(2))
            for split in window:
                for i, d in enumerate(daughters):
                    step(partial(prop.add_mask, result=False), split.frame, d,
                         split.part_mask(i, shape))
            divisions.append((mother, daughters, window))

        started: list[tuple[int, np.ndarray]] = []
        if self.discover is not None and opts.discovers_on(frame):
            found = _masks(self.discover(self.flat(frame)))
            if cancelled():
                return None
            fresh = uncovered_masks(found, painted.rank > 0, opts.min_overlap, opts.min_area)
            for obj, mask in zip(self._new_ids(len(fresh)), fresh, strict=True):
                step(partial(prop.add_mask, result=False), frame, obj, mask)
                started.append((obj, mask))

        return self._write(frame, painted, divisions, started, ended, prop)

    def _write(self, frame: int, painted: FrameObjects,
               divisions: list[tuple[int, tuple[int, int], list[Split]]],
               started: list[tuple[int, np.ndarray]], ended: list[int], prop) -> tuple:
        seg = self.segmenter
        labels = painted.labels(seg.labels.dtype)
        for k, obj in enumerate(painted.ids.tolist()):
            if painted.areas[k] > 0:
                self.table.extend(obj, frame)
        rewritten: list[int] = []
        events = []
        for mother, daughters, window in divisions:
            for split in window:
                if split.frame == frame:
                    target = labels
                else:
                    target = seg.labels[self.flat(split.frame)]
                    rewritten.append(self.flat(split.frame))
                region = target[split.slices]
                for part, d in zip(split.parts, daughters, strict=True):
                    region[part & (region == mother)] = d
            first = window[0].frame
            self.table.divide(mother, first, daughters)
            for d in daughters:
                self.table.extend(d, frame)
            prop.remove_object(mother)
            events.append(Division(mother, daughters, first))
            logger.info("track %d divides into %s from frame %d", mother, daughters, first)
        for obj, mask in started:
            labels[mask & (labels == 0)] = obj
            self.table.extend(obj, frame)
        seg.labels[self.flat(frame)] = labels
        self._last_done = frame
        for obj in ended:
            prop.remove_object(obj)
            logger.info("track %d lost after frame %s", obj, self.table.end.get(obj))
        if started:
            logger.info("frame %d: new tracks %s", frame, [obj for obj, _ in started])
        return (tuple(obj for obj, _ in started), tuple(ended), tuple(events),
                tuple(sorted(set(rewritten))))
