"""Helpers of the widget tests: synthetic stacks, deterministic / slow stand-ins for the
segmenter's model calls, waiting for the widget."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from napari_focsam.api.segmenter import Progress, Segmenter

#: Frame size of the synthetic stacks (not square: a row / column swap shows).
HW = (32, 48)
DISC_RADIUS = 3


def disc(hw, center, radius=DISC_RADIUS) -> np.ndarray:
    rr, cc = np.mgrid[:hw[0], :hw[1]]
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= radius ** 2


def synthetic_stack(n: int = 4, hw=HW) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 40, size=(n, *hw)).astype(np.uint8)
    for t in range(n):
        data[t][disc(hw, (10, 15 + 3 * t), 5)] = 200
    return data


class FakeDraw:
    """Stand-in for `Segmenter.draw_object`: a disc around the first positive click (or the
    box centre); records every prompt."""

    def __init__(self, delay: float = 0.0) -> None:
        self.prompts = []
        self.delay = delay

    def __call__(self, seg: Segmenter, prompt):
        seg.check_prompt(prompt)  # keep the real placement errors
        self.prompts.append(prompt)
        time.sleep(self.delay)
        positive = [p for p, lab in zip(prompt.points_rc, prompt.labels, strict=True) if lab == 1]
        if positive:
            center = positive[0]
        else:
            r0, c0, r1, c1 = prompt.box_rc
            center = ((r0 + r1) / 2, (c0 + c1) / 2)
        return disc(seg.source.frame_shape, center)


def slow_propagate(delay: float, order=None, started: threading.Event | None = None):
    """Stand-in for `Segmenter.propagate`: each prompted object's disc (from its first click),
    moved by one pixel per frame, written frame by frame with `delay` seconds per frame."""

    def propagate(self, prompts, direction="both", *, cancel_event=None):
        frames = list(order) if order is not None else list(range(self.source.n_stack))

        def run():
            for done, frame in enumerate(frames, 1):
                if started is not None:
                    started.set()
                time.sleep(delay)
                if cancel_event is not None and cancel_event.is_set():
                    return
                out = np.zeros(self.source.frame_shape, np.int32)
                for p in prompts:
                    r, c = p.points_rc[0]
                    out[disc(self.source.frame_shape, (r, c + (frame - p.frame)))] = p.obj_id
                self.labels[frame] = out
                yield Progress("propagate", done, len(frames), frame)

        return run()

    return propagate


def wait_preview(qtbot, widget, timeout: int = 20000):
    qtbot.waitUntil(lambda: widget.controller.live.ready() is not None, timeout=timeout)
    return widget.controller.live.ready()


def wait_idle(qtbot, widget, timeout: int = 30000):
    qtbot.waitUntil(lambda: not widget.controller.runner.running(), timeout=timeout)


def close_log_handler(path) -> None:
    """Remove and close the package logger's handler writing to `path` (the internal-error log)."""
    logger = logging.getLogger("napari_focsam")
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == str(path):
            logger.removeHandler(handler)
            handler.close()
