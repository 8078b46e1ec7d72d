"""Headless segmentation of an image or a z / t stack: what the widgets and the CLI call.

`Segmenter` holds one image or stack (a `StackSource`), an *interactive* model (SAM, FocSAM or
SAM 2) that draws objects from prompts on a frame through its engine predictor
(`napari_focsam.engine.interactive`), and for stacks a *propagation* model (SAM 2) that
carries every object through the stack. Encoder features come from embedding stores (RAM +
disk cache), so each frame is encoded once per model, ever. Frames larger than the interactive
model's input are also cut into overlapping tiles (`napari_focsam.engine.tiling.Tiling`), each
encoded at full resolution when first needed; objects are drawn on the tile that holds their
prompts (see :mod:`.drawing`). Propagation always works on whole frames.

Labels are ``(n_frames, H, W)`` internally (frames flat, outer-major for 4D data; int32, or
int64 once an object id needs it), allocated when a frame is first written, and are returned
in the data's axis order (the data's axes without the channel axis) by `labels_in_data_order`.
A set cancel event stops the models within a block (`napari_focsam.engine.cancel.stop_on`).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch

from ..engine.cancel import Interrupted, stop_on
from ..engine.precision import autocast_context
from ..engine.propagation import VideoPropagator
from ..engine.propagation_state import PropagationOptions
from ..engine.tiling import TileGrid, Tiling
from ..errors import UserError
from ..families import ModelChoiceError, Role
from ..store import EmbeddingStore, StackSource, TileSource, tiled_content_hash
from .drawing import ObjectDrawer
from .io import check_fits_in_memory
from .models import LoadedModel
from .prompts_file import MAX_OBJECT_ID, ObjectPrompt

__all__ = ["Progress", "PromptPlacementError", "Segmenter"]

logger = logging.getLogger(__name__)

DIRECTIONS = ("both", "forward", "backward")
#: Bytes per pixel of a frame on its way to an encoder besides its raw values: float32 working
#: copies of up to three channels and the uint8 RGB frame.
_FRAME_WORK_BYTES = 4 * 3 + 3

R = TypeVar("R")


class PromptPlacementError(UserError, ValueError):
    """A prompt outside the image, on a frame that does not exist, or otherwise unusable."""


@dataclass(frozen=True)
class Progress:
    """Progress of a long operation.

    Attributes
    ----------
    stage : str
        ``"embed:<role>"``, ``"propagate"`` (units: frames), ``"embed:tiles"`` (units: tiles
        of the interactive model), ``"segment"`` or ``"prompt"`` (units: objects drawn /
        entered into the propagation model).
    done, total : int
        Units finished and planned.
    frame : int or None
        Flat frame index just finished (for objects: the frame the object is on).
    """

    stage: str
    done: int
    total: int
    frame: int | None = None


class Segmenter:
    """Segment and propagate objects on one image or stack, without napari.

    Parameters
    ----------
    data : array-like
        2D image, 3D stack or 4D hyperstack (numpy, dask, zarr, memmap...); read lazily.
    interactive : LoadedModel
        Draws objects from prompts (SAM, FocSAM or SAM 2).
    propagation : LoadedModel or None
        SAM 2, for stacks; may be the same object as `interactive`.
    stack_axis, channel_axis, outer_axis : int or None
        See `napari_focsam.store.StackSource`.
    cache_root : path, None or False
        Disk cache folder (None: the default; False: RAM only).
    ram_bytes : int
        RAM bound of each embedding store.
    disk_dtype : {"float32", "float16"}
        Disk cache precision.
    options : PropagationOptions, optional
        Propagation behaviour (default: sticky corrections, non-overlapping objects).
    tiling : Tiling, optional
        Tiles for frames larger than the interactive model's input (default ``Tiling()``:
        automatic, tiles of the model input's size with a 1/8 halo; ``Tiling("off")`` resizes
        every frame to the model input as SAM does).

    Attributes
    ----------
    tile_grid : TileGrid or None
        The tiles of every frame (None: frames are not tiled).
    tile_store : EmbeddingStore or None
        The interactive model's per-tile features (items: ``frame * n_tiles + tile``).
    drawer : ObjectDrawer
        Draws objects with the interactive model (whole frames or tiles, click sessions).
    """

    def __init__(self, data, *, interactive: LoadedModel, propagation: LoadedModel | None = None,
                 stack_axis: int | None = None, channel_axis: int | None = None,
                 outer_axis: int | None = None, cache_root=None, ram_bytes: int = 1 << 30,
                 disk_dtype: str = "float32", options: PropagationOptions | None = None,
                 tiling: Tiling | None = None) -> None:
        if not interactive.can(Role.INTERACTIVE):
            raise ModelChoiceError(f"{interactive.model_id!r} ({interactive.family.title}) cannot "
                                   "be the interactive model")
        self.source = StackSource(data, stack_axis=stack_axis, channel_axis=channel_axis,
                                  outer_axis=outer_axis)
        self.interactive = interactive
        self.propagation: LoadedModel | None = None
        self.options = options or PropagationOptions()
        self._store_kw = {"cache_root": cache_root, "ram_bytes": ram_bytes, "disk_dtype": disk_dtype}
        encoder = interactive.stack_encoder()
        whole = EmbeddingStore(self.source, encoder, **self._store_kw)
        self.stores: dict[str, EmbeddingStore] = {"interactive": whole}
        h, w = self.source.frame_shape
        channels = min(self.source.n_channels, 3)
        check_fits_in_memory(h * w * (channels * self.source.dtype.itemsize + _FRAME_WORK_BYTES),
                             f"one {h} x {w} frame ({channels} x {self.source.dtype})")
        if propagation is not None:
            self.set_propagation(propagation)
        self._labels: np.ndarray | None = None
        self._label_dtype = np.dtype(np.int32)
        predictor = interactive.interactive_predictor()
        self.tiling = Tiling() if tiling is None else tiling
        self.tile_grid: TileGrid | None = self.tiling.grid(self.source.frame_shape,
                                                           predictor.image_size)
        self.tile_store: EmbeddingStore | None = None
        if self.tile_grid is not None:
            grid = self.tile_grid
            self.tile_store = EmbeddingStore(
                TileSource(self.source, grid), encoder,
                content_hash=lambda: tiled_content_hash(whole.content_hash, grid),
                **self._store_kw)
            logger.info("frames of %s px are encoded as %d tiles of %s px (halo %d px) for %s",
                        self.source.frame_shape, grid.n_tiles, grid.block, grid.halo,
                        interactive.model_id)
        self.drawer = ObjectDrawer(predictor, interactive.interactive_predictor, whole,
                                   self.tile_store)

    @property
    def predictor(self):
        """The interactive model's engine predictor used last (its frame or tile: the last one
        drawn on; ``engine.interactive``)."""
        return self.drawer.predictor

    def set_propagation(self, propagation: LoadedModel | None) -> None:
        """Use `propagation` as the propagation model from now on (None: none), e.g. once the
        user first asks for propagation; the interactive model and its embeddings stay.

        Raises
        ------
        ModelChoiceError
            `propagation` cannot propagate.
        """
        if propagation is not None and not propagation.can(Role.PROPAGATION):
            raise ModelChoiceError(f"the propagation model must be SAM 2, got {propagation.model_id!r} "
                                   f"({propagation.family.title})")
        self.propagation = propagation
        if propagation is None:
            self.stores.pop("propagation", None)
        elif propagation is self.interactive:
            self.stores["propagation"] = self.stores["interactive"]
        else:
            self.stores["propagation"] = EmbeddingStore(self.source, propagation.stack_encoder(),
                                                        **self._store_kw)

    # ------------------------------------------------------------------ labels
    @property
    def labels(self) -> np.ndarray:
        """``(n_frames, H, W)`` labels, 0 where nothing was written; allocated on first use.

        Raises
        ------
        InputError
            They do not fit in the available memory.
        """
        if self._labels is None:
            self._labels = self._allocate_labels(self._label_dtype)
        return self._labels

    @labels.setter
    def labels(self, value: np.ndarray) -> None:
        self._labels = value

    def _allocate_labels(self, dtype: np.dtype) -> np.ndarray:
        h, w = self.source.frame_shape
        n = len(self.source)
        check_fits_in_memory(n * h * w * dtype.itemsize,
                             f"the labels of {n} frame(s) of {h} x {w} pixels ({dtype})")
        return np.zeros((n, h, w), dtype=dtype)

    def _hold_ids(self, ids: Sequence[int]) -> None:
        """Widen the labels to int64 when an id of `ids` does not fit int32 (ids are checked
        by `check_prompt`)."""
        if not ids or max(ids) <= np.iinfo(self._label_dtype).max:
            return
        self._label_dtype = np.dtype(np.int64)
        if self._labels is not None and self._labels.dtype != self._label_dtype:
            wider = self._allocate_labels(self._label_dtype)
            wider[...] = self._labels
            self._labels = wider
        logger.info("object ids up to %d: labels are int64", max(ids))

    # ------------------------------------------------------------------ geometry
    @property
    def is_stack(self) -> bool:
        return self.source.stack_axis is not None

    def flat_frame(self, frame: int | None, outer: int | None = None) -> int:
        """Flat frame index of (outer, frame) (frame None for a 2D image)."""
        if not self.is_stack:
            if frame not in (None, 0) or outer not in (None, 0):
                where = f"frame {frame}" if frame not in (None, 0) else f"outer index {outer}"
                raise PromptPlacementError(f"the data is one 2D image: there is no {where}")
            return 0
        if frame is None:
            raise PromptPlacementError("the data is a stack: every prompt needs a frame")
        n_outer, n_stack = self.source.n_outer, self.source.n_stack
        outer = 0 if outer is None else int(outer)
        if not 0 <= int(frame) < n_stack:
            raise PromptPlacementError(f"frame {frame} does not exist: the stack axis has {n_stack} "
                                       f"frames (0..{n_stack - 1})")
        if not 0 <= outer < n_outer:
            raise PromptPlacementError(f"outer index {outer} does not exist (0..{n_outer - 1})")
        return self.source.frame_index(outer, int(frame)) if self.source.outer_axis is not None \
            else int(frame)

    def check_prompt(self, prompt: ObjectPrompt) -> None:
        """Raise `PromptPlacementError` unless `prompt` is usable on this data.

        Checks the object id (1 .. `MAX_OBJECT_ID`), points and labels, finiteness, that points
        and box lie in the frame and that a mask prompt has the frame's shape and is not empty.
        Frames are checked by `flat_frame`.
        """
        # the engine's conventions: a point lies on a pixel (0 <= row < H), a box's corners on
        # pixel edges (0 <= row <= H), so [0, 0, H, W] is the whole image
        h, w = self.source.frame_shape
        if isinstance(prompt.obj_id, bool) or int(prompt.obj_id) != prompt.obj_id \
                or not 1 <= int(prompt.obj_id) <= MAX_OBJECT_ID:
            raise PromptPlacementError(f"object ids are integers >= 1 (0 is the background) and "
                                       f"<= {MAX_OBJECT_ID}, got {prompt.obj_id!r}")
        pts = np.asarray(prompt.points_rc, dtype=np.float64).reshape(-1, 2)
        box = None if prompt.box_rc is None else np.asarray(prompt.box_rc,
                                                              dtype=np.float64).reshape(2, 2)
        if prompt.mask is not None:
            mask = np.asarray(prompt.mask)
            if mask.shape != (h, w):
                raise PromptPlacementError(f"object {prompt.obj_id}: mask prompt of shape "
                                           f"{mask.shape}, expected the frame's {(h, w)}")
            if not mask.any():
                raise PromptPlacementError(f"object {prompt.obj_id}: the mask prompt is empty")
        if len(pts) == 0 and box is None and prompt.mask is None:
            raise PromptPlacementError(f"object {prompt.obj_id}: no points, box or mask")
        labels = np.asarray(prompt.labels).reshape(-1)
        if len(labels) != len(pts) or not np.isin(labels, (0, 1)).all():
            raise PromptPlacementError(f"object {prompt.obj_id}: {len(pts)} points need as many "
                                       f"labels, 1 (positive) or 0 (negative); got {labels.tolist()}")
        for coords, is_box in ((pts, False), (box, True)):
            if coords is None:
                continue
            if not np.isfinite(coords).all():
                raise PromptPlacementError(f"object {prompt.obj_id}: prompts must be finite numbers")
            if is_box:
                outside = (coords < 0).any(axis=1) | (coords[:, 0] > h) | (coords[:, 1] > w)
            else:
                outside = (coords < 0).any(axis=1) | (coords[:, 0] >= h) | (coords[:, 1] >= w)
            if outside.any():
                what = "box corner" if is_box else "point"
                raise PromptPlacementError(
                    f"object {prompt.obj_id} on frame {prompt.frame}: {what} "
                    f"{coords[outside][0].tolist()} (row, col) is outside the {h} x {w} image")

    # ------------------------------------------------------------------ embeddings
    def embed(self, frames: list[int] | None = None, *,
              cancel_event: threading.Event | None = None,
              roles: Sequence[str] | None = None) -> Iterator[Progress]:
        """Compute (or find cached) the features of every frame for each model.

        With tiles, the interactive model's tiles come first (``"embed:tiles"``, in tiles),
        then its whole frames (used when an object does not fit a tile), then the propagation
        model's frames. A generator of `Progress`; stop it or set `cancel_event` to cancel
        (finished frames and tiles stay cached).

        Parameters
        ----------
        frames : list of int, optional
            Flat frame indices (default: all).
        cancel_event : threading.Event, optional
        roles : sequence of str, optional
            ``"interactive"`` (its tiles included) and / or ``"propagation"``; default both.
        """
        roles = tuple(self.stores) if roles is None else tuple(roles)
        frames = None if frames is None else list(frames)
        unknown = [r for r in roles if r not in ("interactive", "propagation")]
        if unknown:
            raise ValueError(f"unknown roles {unknown}: 'interactive' or 'propagation'")
        if "interactive" in roles and self.tile_store is not None:
            tiles = self.tile_store.source
            assert isinstance(tiles, TileSource)
            indices = tiles.items_of(range(len(self.source)) if frames is None else frames)
            for p in self.tile_store.compute(indices, cancel_event=cancel_event):
                yield Progress("embed:tiles", p.done, p.total, tiles.split(p.frame)[0])
            if cancel_event is not None and cancel_event.is_set():
                return
        seen = set()
        for role, store in list(self.stores.items()):  # another thread may set the propagation model
            if id(store) in seen or role not in roles:
                continue
            seen.add(id(store))
            for p in store.compute(frames, cancel_event=cancel_event):
                yield Progress(f"embed:{role}", p.done, p.total, p.frame)

    @property
    def encoder_calls(self) -> int:
        """Frames and tiles encoded by this segmenter's stores so far (cache hits excluded)."""
        stores = {id(s): s for s in list(self.stores.values())}
        if self.tile_store is not None:
            stores[id(self.tile_store)] = self.tile_store
        return sum(s.encoder_calls for s in stores.values())

    def needs_encoding(self, prompt: ObjectPrompt) -> bool:
        """Whether drawing `prompt` first has to run the interactive model's encoder (on its
        frame, or on the tile its prompts fall in); False for a mask prompt alone."""
        if _mask_only(prompt):
            return False
        box = None if prompt.box_rc is None else np.asarray(prompt.box_rc, dtype=np.float64)
        points = np.asarray(prompt.points_rc, dtype=np.float64).reshape(-1, 2)
        return self.drawer.needs_encoding(self.flat_frame(prompt.frame, prompt.outer), points, box)

    # ------------------------------------------------------------------ one frame
    def _mask_from_interactive(self, prompt: ObjectPrompt, flat: int, *, keep: bool = True,
                               cancel_event: threading.Event | None = None) -> np.ndarray:
        """``(H, W)`` bool: the object drawn by the interactive model on frame `flat` (a mask
        prompt without points or box is the object itself), on the tile that holds its
        prompts when the frame is tiled (see `ObjectDrawer.draw`).

        With `keep`, a new click session of the object is kept for the next call (the live
        preview); without, only an existing one is reused and updated (batch drawing keeps no
        per-object state). A set `cancel_event` stops the model within a block
        (`engine.cancel.Interrupted`).
        """
        if _mask_only(prompt):
            return np.asarray(prompt.mask).astype(bool, copy=True)
        box = None if prompt.box_rc is None else np.asarray(prompt.box_rc, dtype=np.float64)
        points = np.asarray(prompt.points_rc, dtype=np.float64).reshape(-1, 2)
        with stop_on(cancel_event, self.interactive.net):
            return self.drawer.draw(flat, prompt.obj_id, points, np.asarray(prompt.labels),
                                    box, keep=keep)

    def draw_object(self, prompt: ObjectPrompt, *, keep_session: bool = True) -> np.ndarray:
        """One object's mask on its frame, from its prompts (the live preview of a widget).

        The object's click session is kept between calls on the same frame (or tile): a call
        whose clicks extend (or edit the end of) the previous call's recomputes only the changed
        clicks, so FocSAM refines once, from the second click on, and SAM 2 gets its interactive
        protocol (each click with the previous step's logits). Nothing is written to `labels`.

        Parameters
        ----------
        prompt : ObjectPrompt
        keep_session : bool
            Keep the object's click session for the next call (False: draw many objects once
            each without holding their sessions' full-size logits).

        Returns
        -------
        np.ndarray
            ``(H, W)`` bool.
        """
        self.check_prompt(prompt)
        return self._mask_from_interactive(prompt, self.flat_frame(prompt.frame, prompt.outer),
                                           keep=keep_session)

    def segment_frame(self, prompts: list[ObjectPrompt], frame: int | None = None,
                      outer: int | None = None) -> np.ndarray:
        """Draw the objects of `prompts` on one frame with the interactive model.

        Later object ids are painted over earlier ones (a warning names each object painted
        over, wholly or in part); the frame's labels in `labels` are replaced only when every
        object succeeded.

        Returns
        -------
        np.ndarray
            ``(H, W)`` labels of that frame, in `labels`' dtype.
        """
        flat = self.flat_frame(frame, outer)
        if not prompts:
            raise PromptPlacementError("no prompts: add points or a box for at least one object")
        for p in prompts:
            self.check_prompt(p)
        self._hold_ids([p.obj_id for p in prompts])
        ordered = sorted(prompts, key=lambda p: p.obj_id)
        painter = _FramePainter(self.source.frame_shape, [p.obj_id for p in ordered])
        for k, p in enumerate(ordered):
            painter.paint(k, self._mask_from_interactive(p, flat, keep=False))
        out = painter.labels(self._label_dtype)
        self.labels[flat] = out
        paint_log = _PaintLog()
        paint_log.add(flat, painter)
        paint_log.warn()
        return out

    def segment(self, prompts: list[ObjectPrompt], *,
                cancel_event: threading.Event | None = None) -> Iterator[Progress]:
        """Draw every prompted object on its frame with the interactive model (as
        `segment_frame` frame by frame), yielding a `Progress` per object drawn.

        A frame's labels are written once all its objects are drawn; stopping the generator
        or setting `cancel_event` keeps the frames written so far. The arguments are checked
        at once, before any iteration; the work happens as the iterator is consumed.

        Raises
        ------
        PromptPlacementError
            No prompts, or a prompt outside the image / on a frame that does not exist.
        """
        if not prompts:
            raise PromptPlacementError("no prompts: add points or a box for at least one object")
        by_frame: dict[int, list[ObjectPrompt]] = defaultdict(list)
        for p in prompts:
            self.check_prompt(p)
            by_frame[self.flat_frame(p.frame, p.outer)].append(p)
        self._hold_ids([p.obj_id for p in prompts])
        return self._segment(sorted(by_frame.items()), len(prompts), cancel_event)

    def _segment(self, frames: list[tuple[int, list[ObjectPrompt]]], total: int,
                 cancel_event: threading.Event | None) -> Iterator[Progress]:
        done = 0
        paint_log = _PaintLog()
        try:
            for flat, group in frames:
                ordered = sorted(group, key=lambda p: p.obj_id)
                painter = _FramePainter(self.source.frame_shape, [p.obj_id for p in ordered])
                for k, p in enumerate(ordered):
                    if cancel_event is not None and cancel_event.is_set():
                        logger.info("segmentation cancelled after %d objects", done)
                        return
                    painter.paint(k, self._mask_from_interactive(p, flat, keep=False,
                                                                 cancel_event=cancel_event))
                    done += 1
                    yield Progress("segment", done, total, flat)
                self.labels[flat] = painter.labels(self._label_dtype)
                paint_log.add(flat, painter)
        except Interrupted:
            logger.info("segmentation cancelled after %d objects", done)
        finally:
            paint_log.warn()

    # ------------------------------------------------------------------ propagation
    def propagate(self, prompts: list[ObjectPrompt], direction: str = "both", *,
                  cancel_event: threading.Event | None = None,
                  report_objects: bool = False) -> Iterator[Progress]:
        """Carry every prompted object through its stack, writing `labels` frame by frame.

        Prompts enter SAM 2 directly when SAM 2 is also the interactive model and frames are not
        tiled (clicks one at a time, as in `draw_object`); otherwise each object is drawn by the
        interactive model on its prompted frame(s) (on its tile, at full resolution, when
        frames are tiled) and enters SAM 2 as a mask prompt. Propagation itself runs on whole
        frames (resized to SAM 2's input). Frames are written to `labels`
        as they are done; stopping the generator or setting `cancel_event` (which stops the
        models within a block) keeps them (labels of frames not reached are unchanged).
        Objects painted over by later ids, wholly or in part, are named in a warning at the end.

        The arguments are checked at once (the errors below are raised by this call, before
        any iteration); the work happens as the returned iterator is consumed.

        Parameters
        ----------
        prompts : list of ObjectPrompt
        direction : {"both", "forward", "backward"}
        cancel_event : threading.Event, optional
        report_objects : bool
            Also yield a ``"prompt"`` `Progress` after each object's prompts entered the
            propagation model (before the frames' ``"propagate"`` ones).

        Yields
        ------
        Progress

        Raises
        ------
        ValueError
            Unknown `direction`.
        ModelChoiceError
            No propagation model, or the data is not a stack.
        PromptPlacementError
            No prompts, or a prompt outside the image / on a frame that does not exist.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if self.propagation is None or not self.is_stack:
            raise ModelChoiceError("propagation needs a stack (stack_axis) and a SAM 2 "
                                   "propagation model")
        if not prompts:
            raise PromptPlacementError("no prompts: add points or boxes for at least one object")
        by_outer: dict[int, list[ObjectPrompt]] = {}
        for p in prompts:
            self.check_prompt(p)
            self.flat_frame(p.frame, p.outer)
            by_outer.setdefault(int(p.outer or 0), []).append(p)
        self._hold_ids([p.obj_id for p in prompts])
        return self._propagate(sorted(by_outer.items()), direction, cancel_event,
                               len(prompts) if report_objects else 0)

    def _propagate(self, groups: list[tuple[int, list[ObjectPrompt]]], direction: str,
                   cancel_event: threading.Event | None,
                   n_prompts: int) -> Iterator[Progress]:
        loaded = self.propagation
        assert loaded is not None

        def step(fn: Callable[..., R], *args: Any) -> R:
            # grad / autocast state is thread-global and the cancel hooks stop this thread's
            # passes: hold them only while the model runs, never across a `yield` (the caller's
            # code would run without grad, under autocast, or be stopped)
            with torch.no_grad(), autocast_context(loaded.device, loaded.dtype), \
                    stop_on(cancel_event, loaded.net):
                return fn(*args)

        n_stack = self.source.n_stack
        total = n_stack * len(groups)
        done = 0
        prompted = 0
        paint_log = _PaintLog()
        direct = self.interactive is self.propagation and self.tile_grid is None
        try:
            for index, (outer, group) in enumerate(groups):
                view = self.stores["propagation"].view(outer)
                prop = VideoPropagator(loaded.net, view, self.source.frame_shape, self.options)
                ordered = sorted(group, key=lambda p: (p.frame, p.obj_id))
                for p in ordered:
                    if cancel_event is not None and cancel_event.is_set():
                        logger.info("propagation cancelled while the prompts were entered")
                        return
                    flat = self.flat_frame(p.frame, outer)
                    if direct and not _mask_only(p):
                        pts = np.asarray(p.points_rc, dtype=np.float32).reshape(-1, 2)[:, ::-1]
                        box = None if p.box_rc is None else \
                            np.asarray(p.box_rc, np.float32)[[1, 0, 3, 2]]
                        step(partial(prop.add_clicks, result=False), int(p.frame), p.obj_id,
                             pts if len(pts) else None, p.labels if len(pts) else None, box)
                    else:
                        mask = self._mask_from_interactive(p, flat, keep=False,
                                                           cancel_event=cancel_event)
                        step(partial(prop.add_mask, result=False), int(p.frame), p.obj_id, mask)
                    prompted += 1
                    if n_prompts:
                        yield Progress("prompt", prompted, n_prompts, flat)
                if direction == "both":
                    results = prop.propagate_both()
                else:
                    frames = [int(p.frame) for p in group]
                    results = prop.propagate(reverse=direction == "backward",
                                             start=max(frames) if direction == "backward"
                                             else min(frames))
                seen: set[int] = set()
                try:
                    while True:
                        result = step(next, results, None)
                        if result is None:
                            break
                        if cancel_event is not None and cancel_event.is_set():
                            logger.info("propagation cancelled after %d frames", done)
                            return
                        flat = view.frame_index(result.frame)
                        painter = _FramePainter(self.source.frame_shape, result.obj_ids)
                        for k, mask in enumerate(result.masks()):
                            painter.paint(k, mask.reshape(self.source.frame_shape))
                        self.labels[flat] = painter.labels(self._label_dtype)
                        paint_log.add(flat, painter)
                        if result.frame not in seen:
                            seen.add(result.frame)
                            done += 1
                        yield Progress("propagate", done, total, flat)
                finally:
                    close = getattr(results, "close", None)
                    if close is not None:
                        close()
                done = (index + 1) * n_stack
        except Interrupted:
            logger.info("propagation cancelled after %d frames", done)
        finally:
            paint_log.warn()

    def labels_in_data_order(self, labels: np.ndarray | None = None) -> np.ndarray:
        """`labels` (default: this segmenter's) laid out like the data without its channel axis.

        Returns
        -------
        np.ndarray
            ``(H, W)`` for a 2D image; the data's shape without the channel axis otherwise.
        """
        labels = self.labels if labels is None else labels
        src = self.source
        h, w = src.frame_shape
        if not self.is_stack:
            return labels[0]
        axes = [a for a in range(len(src.shape)) if a != src.channel_axis]
        spatial = [a for a in axes if a not in (src.stack_axis, src.outer_axis)]
        if src.outer_axis is not None:
            arr = labels.reshape(src.n_outer, src.n_stack, h, w)
            current = [src.outer_axis, src.stack_axis, *spatial]
        else:
            arr = labels
            current = [src.stack_axis, *spatial]
        order = sorted(current)
        return np.moveaxis(arr, list(range(len(current))), [order.index(a) for a in current])


def _mask_only(prompt: ObjectPrompt) -> bool:
    """Whether `prompt` is a mask prompt alone (the object itself)."""
    return prompt.mask is not None and len(prompt.points_rc) == 0 and prompt.box_rc is None


class _FramePainter:
    """Paints objects' masks on one frame, later ids over earlier ones, and counts each
    object's drawn and visible pixels (one ``(H, W)`` index map, whatever the object count).

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)``.
    ids : sequence of int
        The objects' ids, in any order (painted in id order whatever the order of `paint`).
    """

    def __init__(self, shape: tuple[int, int], ids: Sequence[int]) -> None:
        self.ids = [int(i) for i in ids]
        # rank of each object in id order: a higher rank paints over a lower one
        self._rank = np.empty(len(self.ids), dtype=np.int64)
        self._rank[np.argsort(self.ids, kind="stable")] = np.arange(1, len(self.ids) + 1)
        self._index = np.zeros(shape, dtype=np.int32 if len(self.ids) < 2**31 else np.int64)
        self.drawn = np.zeros(len(self.ids), dtype=np.int64)

    def paint(self, k: int, mask: np.ndarray) -> None:
        """Paint object ``ids[k]``'s ``(H, W)`` bool mask."""
        mask = np.asarray(mask, dtype=bool)
        rank = self._rank[k]
        self._index[mask & (self._index < rank)] = rank
        self.drawn[k] = np.count_nonzero(mask)

    def shown(self) -> np.ndarray:
        """Pixels each object keeps in the labels, in `ids` order."""
        counts = np.bincount(self._index.ravel(), minlength=len(self.ids) + 1)
        return counts[self._rank]

    def labels(self, dtype: np.dtype) -> np.ndarray:
        """``(H, W)`` labels in `dtype`."""
        table = np.zeros(len(self.ids) + 1, dtype=dtype)
        table[self._rank] = self.ids
        return table[self._index]


class _PaintLog:
    """Drawn and visible pixels of every object over the frames of one run; `warn` names the
    objects that vanished or were partly painted over."""

    def __init__(self) -> None:
        self._frames: dict[int, tuple[list[int], np.ndarray, np.ndarray]] = {}

    def add(self, flat: int, painter: _FramePainter) -> None:
        """Record frame `flat` (a frame written again replaces its earlier record)."""
        self._frames[flat] = (painter.ids, painter.drawn, painter.shown())

    def warn(self) -> None:
        """Log a warning per object with no pixel in the labels, or painted over in part."""
        drawn: dict[int, int] = defaultdict(int)
        shown: dict[int, int] = defaultdict(int)
        for ids, d, s in self._frames.values():
            for obj, a, b in zip(ids, d.tolist(), s.tolist(), strict=True):
                drawn[obj] += a
                shown[obj] += b
        for obj in sorted(drawn):
            a, b = drawn[obj], shown[obj]
            if a == 0:
                logger.warning("object %d: the model found no pixels for it; it is not in the "
                               "labels", obj)
            elif b == 0:
                logger.warning("object %d: all its %d pixels are painted over by objects with "
                               "higher ids; it is not in the labels", obj, a)
            elif b < a:
                logger.warning("object %d: %d of its %d pixels (%.0f%%) are painted over by "
                               "objects with higher ids", obj, a - b, a, 100 * (a - b) / a)
