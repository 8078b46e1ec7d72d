"""GUI click latency: from a click on the prompts layer to the live preview drawn.

Opens a napari viewer (it needs a display: under Xvfb it works), docks "FocSAM segmentation"
through the plugin's manifest (as napari's Plugins menu does), loads the 3D nuclei sample
(File > Open Sample) and uses a random-weight model of real size (speed does not depend on the
weights). It then clicks on nuclei of the visible slice, through the Points layer's mouse
callbacks as a user's clicks go, and times each click until the preview layer holds the
click's mask and the canvas has drawn it, in stages:

``click``
    The Points layer's press / release callbacks (the point added, its events).
``coalesce``
    Until the preview's request is built (the 0 ms timer that merges one click's events).
``request``
    Building the request (prompts mapped to image pixels).
``hand_off``
    Until the worker thread runs the preview task.
``decode``
    The preview task: the model's prompt encoder and mask decoder (and, on a first click,
    whatever was not ready: the model, the slice's embedding).
``hand_back``
    Until the result reaches the GUI thread.
``write``
    Writing the preview layer's data.
``refresh``
    The preview layer's refresh (slicing, colours, thumbnail).
``draw``
    Until the canvas has drawn the new preview.

The stage boundaries come from the dock's own time stamps (``controller.live.timings``, a
``PreviewTimings``) and from the canvas's draw event. Only napari's public viewer API and the
dock's attributes are used: the benchmark drives the widget as napari loads it.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .timing import BenchmarkError, machine_info

__all__ = ["STAGES", "ClickTiming", "display_problem", "format_gui_click_table",
           "run_gui_click_benchmark", "summarise"]

logger = logging.getLogger(__name__)

#: The stages of a click, in order: (key, label).
STAGES = (
    ("click", "click (Points layer callbacks)"),
    ("coalesce", "event coalescing (0 ms timer)"),
    ("request", "request (prompts -> pixels)"),
    ("hand_off", "hand-off to the worker"),
    ("decode", "decode (worker)"),
    ("hand_back", "hand-back to the GUI thread"),
    ("write", "write the preview"),
    ("refresh", "preview layer refresh"),
    ("draw", "canvas draw"),
    ("total", "click -> preview drawn"),
)

#: The dock's random-weights switch (``_qt.models_box.ENV_RANDOM_WEIGHTS``).
_ENV_RANDOM_WEIGHTS = "NAPARI_FOCSAM_RANDOM_WEIGHTS"
_PLUGIN, _DOCK, _SAMPLE = "napari-focsam", "FocSAM segmentation", "nuclei_3d"


def display_problem() -> str | None:
    """Why no napari window can be opened here (None: a display seems available)."""
    if not sys.platform.startswith("linux"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return ("bench gui-click opens a napari window and needs a display (no DISPLAY or "
            "WAYLAND_DISPLAY is set): run it on a desktop, or under a virtual display, e.g. "
            "'xvfb-run -a napari-focsam bench gui-click'")


@dataclass
class ClickTiming:
    """The stages of one click (seconds), see the module docstring."""

    stages: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_stamps(cls, pressed: float, clicked: float, timings, drawn: float | None
                    ) -> ClickTiming:
        """The stages from the click's time stamps and the preview's `PreviewTimings`."""
        t = timings
        end = drawn if drawn is not None else t.refreshed
        stages = {
            "click": clicked - pressed,
            "coalesce": t.started - clicked,
            "request": t.submitted - t.started,
            "hand_off": t.worker - t.submitted,
            "decode": t.decoded - t.worker,
            "hand_back": t.received - t.decoded,
            "write": t.written - t.received,
            "refresh": t.refreshed - t.written,
            "draw": (drawn - t.refreshed) if drawn is not None else float("nan"),
            "total": end - pressed,
        }
        return cls(stages)


def summarise(clicks: list[ClickTiming]) -> dict[str, dict[str, float]]:
    """Median, min and max (milliseconds) of each stage over `clicks`."""
    out = {}
    for key, _ in STAGES:
        values = [c.stages[key] * 1e3 for c in clicks if not np.isnan(c.stages.get(key, np.nan))]
        if values:
            out[key] = {"median_ms": statistics.median(values), "min_ms": min(values),
                        "max_ms": max(values)}
    return out


# ---------------------------------------------------------------------------------- the run
class _Mouse:
    """What napari's Points mouse callbacks read of a mouse event."""

    def __init__(self, kind: str, position, dims_displayed) -> None:
        self.type = kind
        self.position = tuple(float(p) for p in position)
        self.pos = np.zeros(2)
        self.modifiers: list = []
        self.is_dragging = False
        self.button = 1
        self.dims_displayed = list(dims_displayed)
        self.view_direction = None
        self.up_direction = None
        self.handled = False


class _Driver:
    """Clicks on the dock's Points layer and waits for the preview, in napari's event loop."""

    def __init__(self, viewer, widget, timeout_s: float) -> None:
        self.viewer, self.widget, self.timeout_s = viewer, widget, timeout_s
        self.draws: list[float] = []
        self._check: Callable[[], bool] | None = None
        self._loop = None
        try:  # napari's vispy canvas: its draw event tells when the preview was drawn
            canvas = viewer.window._qt_viewer.canvas._scene_canvas
            canvas.events.draw.connect(self._on_draw, position="last")
            self.canvas = canvas
        except AttributeError:  # another napari layout: the draw stage is not measured
            logger.warning("the canvas's draw event is not reachable: the draw stage is not timed")
            self.canvas = None
        widget.controller.live.changed.connect(self._poke)

    def close(self) -> None:
        if self.canvas is not None:
            self.canvas.events.draw.disconnect(self._on_draw)
        self.widget.controller.live.changed.disconnect(self._poke)

    def _on_draw(self, _event=None) -> None:
        self.draws.append(time.perf_counter())
        self._poke()

    def _poke(self, *_args) -> None:
        if self._loop is not None and self._check is not None and self._check():
            self._loop.quit()

    def wait(self, check: Callable[[], bool], what: str, timeout_s: float | None = None) -> None:
        """Run the event loop until `check()` holds (checked on each draw, preview change and
        every 50 ms)."""
        from qtpy.QtCore import QEventLoop, QTimer

        if check():
            return
        deadline = time.perf_counter() + (timeout_s or self.timeout_s)
        loop = QEventLoop()
        poll = QTimer()
        poll.setInterval(50)
        poll.timeout.connect(self._poke)
        poll.timeout.connect(lambda: time.perf_counter() > deadline and loop.quit())
        self._loop, self._check = loop, check
        poll.start()
        try:
            loop.exec()
        finally:
            poll.stop()
            self._loop = self._check = None
        if not check():
            raise BenchmarkError(f"timed out after {timeout_s or self.timeout_s:.0f} s waiting "
                                 f"for {what}; the dock says: {self.widget.status_label.text()}")

    def flush(self) -> None:
        """Handle the events posted so far (e.g. the timers of the dock's last changes)."""
        from qtpy.QtWidgets import QApplication

        for _ in range(3):
            QApplication.processEvents()

    def pause(self, seconds: float) -> None:
        """Let the event loop run for `seconds`."""
        end = time.perf_counter() + seconds
        self.wait(lambda: time.perf_counter() >= end, "a pause", seconds + 60)

    def idle(self) -> None:
        """Wait until no task of the dock runs and the preview is up to date."""
        controller = self.widget.controller
        self.wait(lambda: not controller.runner.running() and not controller.live.busy,
                  "the dock's tasks to end")

    def click(self, points, data_rc) -> ClickTiming:
        """Click at `data_rc` (the Points layer's data coordinates); time it until drawn."""
        from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

        live = self.widget.controller.live
        world = points.data_to_world(np.asarray(data_rc, dtype=float))
        displayed = self.viewer.dims.displayed
        press, release = _Mouse("mouse_press", world, displayed), _Mouse("mouse_release", world,
                                                                        displayed)
        pressed = time.perf_counter()
        mouse_press_callbacks(points, press)
        mouse_release_callbacks(points, release)
        clicked = time.perf_counter()

        def drawn_after() -> float | None:
            t = live.timings
            if t is None or t.requested < pressed or live.ready() is None:
                return None
            if self.canvas is None:
                return t.refreshed
            return next((d for d in self.draws if d >= t.refreshed), None)

        self.wait(lambda: drawn_after() is not None, "the preview of a click")
        drawn = drawn_after() if self.canvas is not None else None
        return ClickTiming.from_stamps(pressed, clicked, live.timings, drawn)


class _EncodeLog(logging.Handler):
    """Collects the embedding store's "encoded frames ... in X s" lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("encoded frames") and len(record.args or ()) >= 2:
            self.seconds.append(float(record.args[1]))


def _nuclei_on(labels_plane: np.ndarray, n: int) -> list[tuple[float, float]]:
    """Centres (row, col) of the `n` largest objects of a labels plane."""
    ids, counts = np.unique(labels_plane[labels_plane > 0], return_counts=True)
    order = ids[np.argsort(-counts)][:n]
    centres = []
    for i in order:
        rows, cols = np.nonzero(labels_plane == i)
        centres.append((float(rows.mean()), float(cols.mean())))
    return centres


def run_gui_click_benchmark(*, clicks: int = 10, model: str = "sam_vit_b", device: str = "auto",
                            dtype: str = "auto", first_click_delay: float = 0.0,
                            timeout_s: float = 600.0, screenshot: str | None = None) -> dict:
    """Time clicks in the FocSAM dock on the 3D nuclei sample (see the module docstring).

    Parameters
    ----------
    clicks : int
        Timed clicks once the visible slice is encoded (after one untimed warm-up click).
    model : str
        Interactive model (random weights, real size).
    device, dtype : str
        The dock's device and precision choices (``auto``: as a user gets them).
    first_click_delay : float
        Seconds between choosing the image and model and the first click (0: at once).
    timeout_s : float
        Longest wait for one preview (the first one builds the model and encodes the slice).
    screenshot : str, optional
        Save a screenshot of the canvas with the last preview there.

    Returns
    -------
    dict
        ``machine``, ``load`` (1-minute load average before and after), ``settings``,
        ``first_click`` (the first click after choosing the model: ``total_ms``, its
        ``stages_ms``, ``encode_ms`` (the slice's encoding, from the store's log),
        ``ready_ms`` (choice -> the dock reported the visible slice encoded, when it
        encodes ahead of the first click)), ``clicks`` (per stage: median / min / max ms),
        ``runs`` (every timed click's stages, ms).

    Raises
    ------
    BenchmarkError
        No display, or a preview that never came.
    """
    problem = display_problem()
    if problem:
        raise BenchmarkError(problem)
    if clicks < 1:
        raise BenchmarkError(f"--clicks must be at least 1, got {clicks}")
    import napari

    load_before = os.getloadavg()[0]
    previous = os.environ.get(_ENV_RANDOM_WEIGHTS)
    os.environ[_ENV_RANDOM_WEIGHTS] = "1"
    encode_log = _EncodeLog()
    store_logger = logging.getLogger("napari_focsam.store.embedding_store")
    old_level = store_logger.level
    store_logger.addHandler(encode_log)
    store_logger.setLevel(logging.DEBUG)
    viewer = napari.Viewer(show=True, title="napari-focsam bench gui-click")
    driver = None
    try:
        _, widget = viewer.window.add_plugin_dock_widget(_PLUGIN, _DOCK)
        widget = getattr(widget, "__wrapped__", widget)
        setup = widget.setup
        setup.device_combo.setCurrentText(device)
        setup.dtype_combo.setCurrentText(dtype)
        setup.models.select_models(model)
        driver = _Driver(viewer, widget, timeout_s)
        ready = _ready_time(widget)
        # File > Open Sample: the image is chosen as it is added (the model already is)
        viewer.open_sample(_PLUGIN, _SAMPLE)
        chosen = time.perf_counter()
        truth = viewer.layers[f"{_SAMPLE} ground truth"]
        image = viewer.layers[_SAMPLE]
        z = int(viewer.dims.current_step[0])
        centres = _nuclei_on(np.asarray(truth.data[z]), 6)
        viewer.layers.remove(truth)
        if setup.image_layer() is not image:
            raise BenchmarkError("the dock did not choose the sample image")
        points, _ = widget.prompts.new_prompt_layers()
        driver.flush()
        if first_click_delay > 0:
            driver.pause(first_click_delay)
        encoded_before = len(encode_log.seconds)
        first = driver.click(points, (z, *centres[0]))
        first_result = {
            "delay_s": first_click_delay,
            "total_ms": first.stages["total"] * 1e3,
            "stages_ms": {k: v * 1e3 for k, v in first.stages.items()},
        }
        driver.idle()
        encodes = encode_log.seconds[:]
        first_result["encode_ms"] = encodes[0] * 1e3 if encodes else None
        first_result["encoded_before_click"] = bool(encoded_before)
        ready_at = ready()
        first_result["ready_ms"] = None if ready_at is None else (ready_at - chosen) * 1e3

        runs: list[ClickTiming] = []
        for k in range(clicks + 1):
            if k % 3 == 0:  # a new object: start from no clicks
                points.data = np.zeros((0, points.ndim))
                driver.idle()
            r, c = centres[(k // 3) % len(centres)]
            offset = (k % 3) * 2.0
            timing = driver.click(points, (z, r + offset, c - offset))
            if k > 0:  # the first one warms up the decoder
                runs.append(timing)
        driver.idle()
        if screenshot:
            viewer.screenshot(screenshot, canvas_only=True)
        result = {
            "machine": machine_info(),
            "load": {"before": load_before, "after": os.getloadavg()[0]},
            "settings": {"model": model, "device": setup.device_combo.currentText(),
                         "dtype": setup.dtype_combo.currentText(), "clicks": clicks,
                         "image_shape": list(image.data.shape), "slice": z},
            "first_click": first_result,
            "clicks": summarise(runs),
            "runs": [{k: v * 1e3 for k, v in t.stages.items()} for t in runs],
        }
    finally:
        if driver is not None:
            driver.close()
        viewer.close()
        store_logger.removeHandler(encode_log)
        store_logger.setLevel(old_level)
        if previous is None:
            os.environ.pop(_ENV_RANDOM_WEIGHTS, None)
        else:
            os.environ[_ENV_RANDOM_WEIGHTS] = previous
    return result


def _ready_time(widget) -> Callable[[], float | None]:
    """``() -> time the dock said the visible slice is encoded`` (None: it did not say so; a
    dock that does not encode ahead of the first click never does)."""
    seen: list[float] = []
    controller = widget.controller
    signal = getattr(controller, "prepared", None)
    if signal is not None:
        signal.connect(lambda *_args: seen.append(time.perf_counter()))
    return lambda: seen[0] if seen else None


def format_gui_click_table(result: dict) -> str:
    """The stages as a table (ms), the first click, the machine and its load."""
    s, m, first = result["settings"], result["machine"], result["first_click"]
    lines = [f"GUI click -> preview drawn: {s['model']} (random weights), device {s['device']}, "
             f"precision {s['dtype']}, 3D nuclei sample {tuple(s['image_shape'])}, slice "
             f"{s['slice']}, {s['clicks']} clicks",
             f"{'stage':<32} {'median':>9} {'min':>9} {'max':>9}"]
    for key, label in STAGES:
        row = result["clicks"].get(key)
        if row is not None:
            lines.append(f"{label:<32} {row['median_ms']:>7.1f}ms {row['min_ms']:>7.1f}ms "
                         f"{row['max_ms']:>7.1f}ms")
    when = "at once" if not first["delay_s"] else f"{first['delay_s']:g} s later"
    parts = [f"first click after choosing the model ({when}): {first['total_ms']:.0f} ms"]
    if first.get("encode_ms") is not None:
        parts.append(f"slice encoding {first['encode_ms']:.0f} ms")
    if first.get("ready_ms") is not None:
        parts.append(f"the dock had the slice encoded {first['ready_ms']:.0f} ms after the choice")
    lines.append("; ".join(parts))
    stages = first["stages_ms"]
    lines.append("  its stages: " + ", ".join(f"{k} {stages[k]:.0f}" for k, _ in STAGES
                                              if k != "total" and not np.isnan(stages[k])) + " ms")
    load = result["load"]
    lines.append(f"on {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads), torch "
                 f"{m['torch']}; load average {load['before']:.2f} before, {load['after']:.2f} after")
    return "\n".join(lines)
