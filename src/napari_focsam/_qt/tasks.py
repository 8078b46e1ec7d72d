"""The long operations of the widget, as plain generators run in worker threads (no Qt).

Each task yields small event objects (`Status`, `api.Progress`, `PreviewResult`,
`FrameResult`, `EverythingSettings`, `EverythingFrame`, `TrackProgress`, `TrackFrames`) that
the widget handles in the GUI thread. A task never raises: the worker
wrapper (`guarded`) turns an exception into a `Failed` event, its message from
`describe_error` (the one place the GUI maps the package's error tree).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..api.automatic import STAGE as EVERYTHING_STAGE
from ..api.automatic import automatic_discover, default_params, find_masks
from ..api.prompts_file import ObjectPrompt
from ..api.segmenter import Progress, Segmenter
from ..engine.automatic import AutoMask, AutoMaskParams, AutomaticMaskGenerator
from ..engine.cancel import stop_on
from ..errors import Cancelled, UserError, report_internal_error
from ..families import Role
from ..tracking import TrackTable
from ..tracking.lifecycle import TrackOptions
from ..tracking.track_all import TrackAll, TrackProgress
from .session import SegmenterHolder, SegmenterSpec, weights_problem

__all__ = ["DownloadCancelled", "EverythingFrame", "EverythingSettings", "Failed", "FrameResult",
           "Prepared", "PreviewResult", "Status", "TrackFrames", "describe_error", "download_weights",
           "embed_task", "everything_task", "guarded", "prepare_task", "preview_task",
           "propagate_task", "track_task"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Status:
    """A line for the status label."""

    text: str


@dataclass(frozen=True)
class Failed:
    """A task stopped on an error; `message` is its `describe_error` text."""

    message: str
    error: BaseException

    @property
    def cancelled(self) -> bool:
        """Whether the error is a `Cancelled` (a neutral message, not an error)."""
        return isinstance(self.error, Cancelled)


@dataclass(frozen=True)
class PreviewResult:
    """The live preview of request `seq`: `mask` drawn from `prompt`.

    `started` and `decoded` are the worker's ``time.perf_counter()`` when the task began and
    when the mask was ready (the latency stages of `live.PreviewTimings`).
    """

    seq: int
    prompt: ObjectPrompt
    mask: np.ndarray
    started: float = 0.0
    decoded: float = 0.0


@dataclass(frozen=True)
class Prepared:
    """`prepare_task` is done: the segmenter is built and plane (`frame`, `outer`) encoded.

    Attributes
    ----------
    frame, outer : int or None
    model_id : str
        The interactive model.
    build_s, encode_s : float
        Seconds spent building the segmenter (loading the model) and encoding the plane (0:
        nothing to do).
    cached : bool
        The plane's embedding was already in the store (RAM or disk cache).
    tiled : bool
        The frames are tiled: tiles are encoded when a click first falls in them, not here.
    """

    frame: int | None
    outer: int | None
    model_id: str
    build_s: float
    encode_s: float
    cached: bool
    tiled: bool = False


@dataclass(frozen=True)
class FrameResult:
    """One propagated frame: the segmenter's labels of (`frame`, `outer`)."""

    frame: int
    outer: int | None
    labels: np.ndarray
    progress: Progress


@dataclass(frozen=True)
class EverythingSettings:
    """The settings of a "Segment all" run: the interactive model's `defaults` and the
    `params` used (the defaults with the dock's changes)."""

    defaults: AutoMaskParams
    params: AutoMaskParams


@dataclass(frozen=True, eq=False)
class EverythingFrame:
    """The masks automatic mask generation found on plane (`frame`, `outer`), in the
    generator's order (nothing is written to the segmenter's labels)."""

    frame: int | None
    outer: int | None
    masks: tuple[AutoMask, ...]
    progress: Progress


@dataclass(frozen=True, eq=False)
class TrackFrames:
    """The frames one "Track all" step wrote, and the lineage so far.

    Attributes
    ----------
    frames : tuple of (int, np.ndarray)
        ``(frame, labels)``: the stack index and a copy of the ``(H, W)`` labels of the frame
        just tracked, then of every earlier frame rewritten because a division was confirmed.
    outer : int or None
        The outer index of 4D data.
    progress : TrackProgress
        The engine's report of the step (stage ``"track"``).
    table : TrackTable
        A copy of the tracks written so far (begin, end, parents).
    """

    frames: tuple[tuple[int, np.ndarray], ...]
    outer: int | None
    progress: TrackProgress
    table: TrackTable


def describe_error(exc: BaseException, during: str) -> str:
    """The status line's text for `exc`, raised during `during` (e.g. ``"the live preview"``).

    A `UserError` or a `Cancelled`: its message as is. Anything else is a bug or an unexpected
    library failure: its traceback goes to the log file and the text says where
    (`errors.report_internal_error`).
    """
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, Cancelled):
        return str(exc) or "cancelled"
    return report_internal_error(exc, during)


def guarded(fn: Callable[..., Iterator], *args, during: str, **kwargs) -> Iterator:
    """Run generator function `fn`, turning any exception into a final `Failed` event."""
    try:
        yield from fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported to the user, never raised in a thread
        yield Failed(describe_error(exc, during), exc)


class DownloadCancelled(Cancelled):
    """The user cancelled a download."""


def download_weights(model_id: str, progress: Callable[[int, int | None], None], *,
                     cancel_event: threading.Event):
    """Fetch `model_id`'s checkpoint into the cache; ``progress(done, total)`` per chunk."""
    from ..weights import ENV_OFFLINE, WeightsNotAvailableError, fetch_weights, get_spec

    def callback(done: int, total: int | None) -> None:
        if cancel_event.is_set():
            raise DownloadCancelled(f"download of {model_id} cancelled")
        progress(done, total)

    try:
        return fetch_weights(model_id, progress=callback)
    except WeightsNotAvailableError as exc:  # offline mode: its message names the Python API
        spec = get_spec(model_id)
        raise WeightsNotAvailableError(
            model_id, exc.path,
            f"{model_id} cannot be downloaded: offline mode is on ({ENV_OFFLINE}). Choose a local "
            f"checkpoint file under Setup, or copy {spec.filename} (from {spec.manual_url}) to "
            f"{exc.path}") from exc


def _loading(holder: SegmenterHolder, spec: SegmenterSpec, *,
             propagation: bool = False) -> Iterator[Status]:
    """A status line first when models have to be loaded (the propagation model too when
    `propagation`)."""
    names = [] if holder.matches(spec) else [spec.interactive.model_id]
    if propagation and spec.propagation is not None and not holder.propagation_attached(spec) \
            and spec.propagation != spec.interactive:
        names.append(spec.propagation.model_id)
    if names:
        yield Status(f"Loading {' and '.join(names)}…")


def _encoding_note(seg, prompt: ObjectPrompt) -> str | None:
    """A status line when drawing `prompt` first has to encode its frame or tile (seconds on a
    CPU)."""
    try:
        if not seg.needs_encoding(prompt):
            return None
    except UserError:  # reported by draw_object
        return None
    where = "the image" if prompt.frame is None else f"slice {prompt.frame}"
    if seg.tile_grid is not None:
        where = f"a tile of {where}"
    return f"Computing the embedding of {where} with {seg.interactive.model_id}…"


def embed_task(holder: SegmenterHolder, spec: SegmenterSpec, *,
               cancel_event: threading.Event) -> Iterator[Status | Progress]:
    """Compute (or find cached) the embeddings of every frame: the interactive model's, and the
    propagation model's when its weights are available (the last status line says otherwise)."""
    missing = None
    if spec.propagation is not None and spec.axes.propagates:
        missing = weights_problem(spec.propagation, Role.PROPAGATION)
    with_propagation = spec.propagation is not None and spec.axes.propagates and missing is None
    yield from _loading(holder, spec, propagation=with_propagation)
    with holder.lock:
        seg = holder.get(spec)
        if with_propagation:
            try:
                seg = holder.attach_propagation(spec)
            except UserError as exc:  # e.g. a damaged file: the interactive embeddings still help
                missing = str(exc)
    models = [f"{seg.interactive.model_id} (interactive)"]
    if seg.propagation is not None and seg.propagation is not seg.interactive:
        models.append(f"{seg.propagation.model_id} (propagation)")
    tiles = "" if seg.tile_grid is None else f" ({seg.tile_grid.n_tiles} tiles each)"
    yield Status(f"Computing the embeddings of {len(seg.source)} frame(s){tiles} with "
                 f"{' and '.join(models)}…")
    for progress in seg.embed(cancel_event=cancel_event):
        yield progress
        if cancel_event.is_set():
            return
    if cancel_event.is_set():
        return
    if missing is None:
        yield Status("Embeddings ready")
    else:
        yield Status(f"Embeddings of {seg.interactive.model_id} ready; those of "
                     f"{spec.propagation.model_id} (propagation) are computed once its weights "
                     f"are available ({missing})")


def preview_task(holder: SegmenterHolder, spec: SegmenterSpec, prompt: ObjectPrompt, seq: int, *,
                 cancel_event: threading.Event,
                 heavy_in: Callable[[Callable[[], object]], object] | None = None
                 ) -> Iterator[Status | PreviewResult]:
    """Draw one object from its prompts (the live preview); never loads the propagation model.

    ``heavy_in(fn)`` runs the heavy steps (loading the model; a draw that first encodes the
    frame or tile) and returns their result; default: here. The dock runs them in its encoding
    thread, so the preview thread only ever decodes (see `workers.DirectThread`).
    """
    started = time.perf_counter()
    heavy = heavy_in or _here
    loading = not holder.matches(spec)
    yield from _loading(holder, spec)

    def note() -> tuple[str | None, bool]:
        with holder.lock:
            if cancel_event.is_set():
                return None, True
            return _encoding_note(holder.get(spec), prompt), False

    text, stopped = (heavy if loading else _here)(note)
    if stopped:
        return
    if text:
        yield Status(text)

    def draw() -> np.ndarray | None:
        with holder.lock:
            if cancel_event.is_set():
                return None
            return holder.get(spec).draw_object(prompt)

    mask = (heavy if text else _here)(draw)
    if mask is None:
        return
    yield PreviewResult(seq, prompt, np.asarray(mask, dtype=bool), started, time.perf_counter())


def _here(fn: Callable[[], object]) -> object:
    return fn()


def prepare_task(holder: SegmenterHolder, spec: SegmenterSpec, frame: int | None,
                 outer: int | None, *, cancel_event: threading.Event) -> Iterator[Status | Prepared]:
    """Get a click on plane (`frame`, `outer`) ready: build the segmenter of `spec` (loading its
    interactive model) and encode the plane with it, unless the store has it (the embedding
    cache is used as for any click). Tiled frames are left to the first click (it encodes the
    tile it falls in). Stops between the steps, and inside the encoder, on `cancel_event`."""
    model = spec.interactive.model_id
    start = time.perf_counter()
    building = not holder.matches(spec)
    if building:
        yield Status(f"Building {model}…")
    with holder.lock:
        if cancel_event.is_set():
            return
        seg = holder.get(spec)
    built = time.perf_counter()
    build_s = built - start if building else 0.0
    if cancel_event.is_set():
        return
    if seg.tile_grid is not None:
        yield Prepared(frame, outer, model, build_s, 0.0, False, tiled=True)
        return
    flat = seg.flat_frame(frame, outer)
    cached = seg.stores["interactive"].is_cached(flat)
    if not cached:
        yield Status(f"Encoding {spec.axes.plane_name(frame, outer)} with {model}…")
        for _ in seg.embed(frames=[flat], roles=("interactive",), cancel_event=cancel_event):
            pass
        if cancel_event.is_set():
            return
    yield Prepared(frame, outer, model, build_s, 0.0 if cached else time.perf_counter() - built,
                   cached)


def propagate_task(holder: SegmenterHolder, spec: SegmenterSpec, prompts: list[ObjectPrompt],
                   direction: str, *, cancel_event: threading.Event) -> Iterator[Status | FrameResult]:
    """Propagate every object through its stack, yielding each finished frame's labels (the
    propagation model is loaded and attached here, on first use)."""
    yield from _loading(holder, spec, propagation=True)
    with holder.lock:
        seg = holder.attach_propagation(spec)
        steps = seg.propagate(prompts, direction, cancel_event=cancel_event)
    yield Status(f"Propagating {len({p.obj_id for p in prompts})} object(s) ({direction}) with "
                 f"{seg.propagation.model_id}…")
    source = seg.source
    try:
        while not cancel_event.is_set():
            with holder.lock:
                progress = next(steps, None)
            if progress is None:
                return
            flat = int(progress.frame)
            if source.outer_axis is not None:
                outer, frame = source.split_index(flat)
            else:
                outer, frame = None, flat
            yield FrameResult(int(frame), outer, seg.labels[flat].copy(), progress)
    finally:
        steps.close()


def _plane_of(seg: Segmenter, flat: int) -> tuple[int | None, int | None]:
    """``(frame, outer)`` of flat frame `flat` (frame None for a 2D image)."""
    source = seg.source
    if not seg.is_stack:
        return None, None
    if source.outer_axis is not None:
        outer, frame = source.split_index(flat)
        return int(frame), int(outer)
    return int(flat), None


def everything_task(holder: SegmenterHolder, spec: SegmenterSpec,
                    planes: list[tuple[int | None, int | None]] | None, overrides: dict, *,
                    cancel_event: threading.Event
                    ) -> Iterator[Status | EverythingSettings | Progress | EverythingFrame]:
    """Segment everything on `planes` (``(frame, outer)`` pairs; None: every plane), yielding
    each plane's masks once all of them are found (`api.automatic.find_masks`).

    The settings are the interactive model's defaults (`api.automatic.default_params`) with
    `overrides`. The models run under the holder's lock one decoder batch at a time, so a live
    preview can run in between; a cancel stops the model within a block, and the plane being
    searched is dropped.
    """
    yield from _loading(holder, spec)
    with holder.lock:
        seg = holder.get(spec)
        defaults = default_params(seg)
        params = defaults.replace(**overrides)
        flats = (list(range(len(seg.source))) if planes is None
                 else [seg.flat_frame(frame, outer) for frame, outer in planes])
        predictor = seg.interactive.interactive_predictor()
    yield EverythingSettings(defaults, params)
    where = (f"{len(flats)} slices" if len(flats) > 1 else
             "the image" if not seg.is_stack else f"slice {_plane_of(seg, flats[0])[0]}")
    yield Status(f"Segmenting everything on {where} with {seg.interactive.model_id} "
                 f"({params.points_per_side}² clicks per frame)…")
    generator = AutomaticMaskGenerator(params)
    net = seg.interactive.net
    per_frame = 0  # decoder batches per frame (the same on every frame), known after one
    for n, flat in enumerate(flats):
        steps = find_masks(seg, flat, generator, predictor=predictor)
        try:
            while True:
                if cancel_event.is_set():
                    return
                # grad and the cancel hooks are thread-global: held only while the model runs
                with holder.lock, torch.no_grad(), stop_on(cancel_event, net):
                    done, per_frame = next(steps)
                yield Progress(EVERYTHING_STAGE, n * per_frame + done, per_frame * len(flats), flat)
        except StopIteration as finished:
            masks = finished.value
        except Cancelled:
            if cancel_event.is_set():  # stopped inside a forward pass
                return
            raise
        finally:
            steps.close()
        frame, outer = _plane_of(seg, flat)
        yield EverythingFrame(frame, outer, tuple(masks), Progress(
            EVERYTHING_STAGE, (n + 1) * per_frame, per_frame * len(flats), flat))


def _copy_table(table: TrackTable) -> TrackTable:
    return TrackTable(dict(table.begin), dict(table.end), dict(table.parents))


def track_task(holder: SegmenterHolder, spec: SegmenterSpec, seeds: np.ndarray | None,
               options: TrackOptions, discover_overrides: dict | None, *,
               outer: int | None = None, propagator: Callable | None = None,
               cancel_event: threading.Event) -> Iterator[Status | TrackProgress | TrackFrames]:
    """Run "Track all": seed every object on ``options.seed_frame`` and track them all through the
    stack with the propagation model (`tracking.track_all.TrackAll`), yielding the frames as
    they are written.

    Parameters
    ----------
    holder, spec
        The segmenter (its propagation model is loaded and attached here).
    seeds : np.ndarray or None
        ``(H, W)`` seed labels (ids kept); None: automatic mask generation seeds the frame.
    options : TrackOptions
    discover_overrides : dict or None
        Settings of automatic mask generation (`AutoMaskParams` fields over the interactive
        model's defaults) for seeding without `seeds` and finding new objects every
        ``options.discover_every`` frames; None: no automatic discovery (`seeds` needed).
    outer : int, optional
        Outer index of 4D data.
    propagator : callable, optional
        The tracker `TrackAll` builds (default: SAM 2's `VideoPropagator`; tests and the
        screenshots pass stand-ins).
    cancel_event : threading.Event

    Notes
    -----
    The models run under the holder's lock one step of the run at a time (a seed, a frame),
    so a live preview can run in between; a cancel stops the model within a block, and the
    frames written so far are kept (each was reported before the next step started).
    """
    yield from _loading(holder, spec, propagation=True)
    with holder.lock:
        seg = holder.attach_propagation(spec)
        discover = None
        if discover_overrides is not None:
            params = default_params(seg, **discover_overrides)
            discover = automatic_discover(seg, params, cancel_event=cancel_event)
        extra = {} if propagator is None else {"propagator": propagator}
        track = TrackAll(seg, seeds=seeds, discover=discover, options=options, outer=outer,
                         **extra)
        steps = track.run(cancel_event)
    seeded = "the seed labels" if seeds is not None else "the objects found automatically"
    yield Status(f"Tracking {seeded} of slice {options.seed_frame} with "
                 f"{seg.propagation.model_id}…")
    try:
        while not cancel_event.is_set():
            with holder.lock:  # the model runs inside the step; the copies match it
                progress = next(steps, None)
                if progress is None:
                    return
                if progress.stage != "track":
                    event = progress
                else:
                    flats = (progress.frame, *progress.rewritten)
                    frames = tuple((int(seg.source.split_index(flat)[1]), seg.labels[flat].copy())
                                   for flat in flats)
                    event = TrackFrames(frames, outer, progress, _copy_table(track.table))
            yield event
    finally:
        steps.close()
