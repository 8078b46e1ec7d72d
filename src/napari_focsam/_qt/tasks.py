"""The long operations of the widget, as plain generators run in worker threads (no Qt).

Each task yields small event objects (`Status`, `api.Progress`, `PreviewResult`,
`FrameResult`) that the widget handles in the GUI thread. A task never raises: the worker
wrapper (`guarded`) turns an exception into a `Failed` event, its message from
`describe_error` (the one place the GUI maps the package's error tree).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..api.prompts_file import ObjectPrompt
from ..api.segmenter import Progress
from ..errors import Cancelled, UserError, report_internal_error
from .session import SegmenterHolder, SegmenterSpec

__all__ = ["DownloadCancelled", "Failed", "FrameResult", "PreviewResult", "Status", "describe_error",
           "download_weights", "embed_task", "guarded", "preview_task", "propagate_task"]

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
    """The live preview of request `seq`: `mask` drawn from `prompt`."""

    seq: int
    prompt: ObjectPrompt
    mask: np.ndarray


@dataclass(frozen=True)
class FrameResult:
    """One propagated frame: the segmenter's labels of (`frame`, `outer`)."""

    frame: int
    outer: int | None
    labels: np.ndarray
    progress: Progress


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
    from ..weights import fetch_weights

    def callback(done: int, total: int | None) -> None:
        if cancel_event.is_set():
            raise DownloadCancelled(f"download of {model_id} cancelled")
        progress(done, total)

    return fetch_weights(model_id, progress=callback)


def _segmenter(holder: SegmenterHolder, spec: SegmenterSpec) -> Iterator[Status]:
    """Yield a status line first when the models have to be loaded (call with the lock held)."""
    if not holder.matches(spec):
        yield Status(f"Loading {spec.interactive.model_id}"
                     + (f" and {spec.propagation.model_id}" if spec.propagation and spec.axes.is_stack
                        and spec.propagation != spec.interactive else "") + "…")


def embed_task(holder: SegmenterHolder, spec: SegmenterSpec, *,
               cancel_event: threading.Event) -> Iterator[Status | Progress]:
    """Compute (or find cached) the embeddings of every frame, for each model."""
    yield from _segmenter(holder, spec)
    with holder.lock:
        seg = holder.get(spec)
    for progress in seg.embed(cancel_event=cancel_event):
        yield progress
        if cancel_event.is_set():
            return


def preview_task(holder: SegmenterHolder, spec: SegmenterSpec, prompt: ObjectPrompt, seq: int, *,
                 cancel_event: threading.Event) -> Iterator[Status | PreviewResult]:
    """Draw one object from its prompts (the live preview)."""
    yield from _segmenter(holder, spec)
    with holder.lock:
        if cancel_event.is_set():
            return
        mask = holder.get(spec).draw_object(prompt)
    yield PreviewResult(seq, prompt, np.asarray(mask, dtype=bool))


def propagate_task(holder: SegmenterHolder, spec: SegmenterSpec, prompts: list[ObjectPrompt],
                   direction: str, *, cancel_event: threading.Event) -> Iterator[Status | FrameResult]:
    """Propagate every object through its stack, yielding each finished frame's labels."""
    yield from _segmenter(holder, spec)
    with holder.lock:
        seg = holder.get(spec)
        steps = seg.propagate(prompts, direction, cancel_event=cancel_event)
    yield Status(f"Propagating {len({p.obj_id for p in prompts})} object(s) ({direction})…")
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
