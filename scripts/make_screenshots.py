"""Regenerate the screenshots of the user guide (``docs/images/*.png``) in a real napari viewer.

Usage::

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/make_screenshots.py [--out docs/images]
        [--only 2d_click 3d_propagated ...]

``layout_1280x800`` and ``layout_1920x1080`` show the whole window at those sizes with both
docks open, as the README's command opens them (the 3D sample, "FocSAM segmentation" above
"FocSAM tracking"); the script fails if the window cannot be that small.

Without a display (no ``$DISPLAY``) the script restarts itself under ``xvfb-run`` when that is
installed. Every screenshot comes from the real plugin: the FocSAM segmentation dock, the
tracking dock, the sample data, the prompt / preview / labels / tracks layers and their
buttons. Only the models are replaced, because no real weights are needed (or available) to
make the images: the widget is set to the tiny random-weight test models and

- ``Segmenter._mask_from_interactive`` (what SAM / FocSAM draw from the clicks or box) becomes
  a deterministic stand-in: the bright connected component of the smoothed frame under the
  positive clicks (minus those under negative clicks), or the largest one inside a box;
- SAM 2's ``VideoPropagator`` becomes a stand-in that follows each object from frame to frame:
  a watershed of the frame's bright pixels seeded by the objects' masks on the previous frame
  (a dividing cell stays one object, in two pieces, as the division action expects);
- for "Track all", the same watershed in a stand-in that also takes objects in and out in the
  middle of a pass and reports their presence (``StandInTracker``), and automatic mask
  generation becomes the bright components of the frame.

With real weights the masks come from SAM / FocSAM / SAM 2. The images are deterministic
(the sample data are seeded, the clicks are computed from them).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("make_screenshots")

WINDOW_SIZE = (1500, 950)
#: Window sizes of the layout shots (common laptop and desktop screens).
LAYOUT_SIZES = ((1280, 800), (1920, 1080))
MAX_BYTES = 400_000
SHOTS = ("2d_click", "2d_committed", "segment_all", "3d_propagated", "3d_correction", "tracking",
         "track_all",
         *(f"layout_{w}x{h}" for w, h in LAYOUT_SIZES))
#: The sample files of the "track_all" shot.
SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
SMOOTH_SIGMA = 1.5


# ---------------------------------------------------------------------------------- stand-ins
class _Components:
    """Bright connected components of a segmenter's frames (Gaussian smoothing + Otsu threshold
    over the whole stack), cached per data array."""

    def __init__(self) -> None:
        self._threshold: dict[int, float] = {}
        self._frames: dict[tuple[int, int], np.ndarray] = {}
        self._arrays: list = []  # keeps the keyed arrays alive: their ids stay unique

    def smooth(self, source, flat: int) -> np.ndarray:
        """Frame `flat` of `source`, Gaussian-smoothed."""
        from scipy import ndimage

        raw = np.asarray(source.raw(flat))[..., 0].astype(np.float64)
        return ndimage.gaussian_filter(raw, SMOOTH_SIGMA)

    def threshold(self, source) -> float:
        key = id(source.data)
        if key not in self._threshold:
            from skimage.filters import threshold_otsu

            smooth = np.stack([self.smooth(source, i) for i in range(len(source))])
            self._threshold[key] = float(threshold_otsu(smooth))
            self._arrays.append(source.data)
        return self._threshold[key]

    def __call__(self, source, flat: int) -> np.ndarray:
        """``(H, W)`` int32 components of flat frame `flat` (0: background)."""
        key = (id(source.data), int(flat))
        if key not in self._frames:
            from scipy import ndimage

            bright = self.smooth(source, flat) > self.threshold(source)
            self._frames[key] = ndimage.label(bright)[0].astype(np.int32)
        return self._frames[key]


COMPONENTS = _Components()


def _prompt_mask(comps: np.ndarray, points_rc, labels, box_rc) -> np.ndarray:
    """The stand-in interactive model: components under the positive clicks, minus those
    under the negative clicks; with a box only, the largest component inside it."""
    h, w = comps.shape
    pts = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
    labs = np.asarray(labels).reshape(-1)

    def under(rc) -> int:
        r, c = (int(np.clip(round(v), 0, n - 1)) for v, n in zip(rc, (h, w), strict=True))
        return int(comps[r, c])

    keep = {under(p) for p, lab in zip(pts, labs, strict=True) if lab == 1} - {0}
    if not keep and box_rc is not None:
        r0, c0, r1, c1 = (int(round(float(v))) for v in box_rc)
        inside = comps[max(r0, 0):r1, max(c0, 0):c1]
        ids, counts = np.unique(inside[inside > 0], return_counts=True)
        if len(ids):
            keep = {int(ids[np.argmax(counts)])}
    keep -= {under(p) for p, lab in zip(pts, labs, strict=True) if lab == 0}
    return np.isin(comps, sorted(keep)) if keep else np.zeros(comps.shape, dtype=bool)


def stand_in_mask_from_interactive(self, prompt, flat, **_options):
    """Replaces `Segmenter._mask_from_interactive` (same contract; its keyword options, such as
    ``keep`` and ``cancel_event``, do not matter to the stand-in)."""
    if prompt.mask is not None and len(prompt.points_rc) == 0 and prompt.box_rc is None:
        return np.asarray(prompt.mask).astype(bool, copy=True)
    return _prompt_mask(COMPONENTS(self.source, flat), prompt.points_rc, prompt.labels, prompt.box_rc)


class StandInPropagator:
    """Replaces SAM 2's `VideoPropagator` (the calls `Segmenter` makes): on each frame of a
    pass, a watershed of the bright pixels seeded by every object's (eroded) mask on the
    previous frame; prompted frames keep their prompt masks.

    `hold` (class attribute): when set to a `threading.Event`, a pass waits for it after its
    last frame, so that a screenshot can show the finished progress bar.
    """

    hold: threading.Event | None = None
    delay = 0.02  # seconds per frame, so that the widget's slice-by-slice writes show

    def __init__(self, model, features, video_hw, options=None) -> None:
        self.features = features
        self.source = features.store.source
        self.video_hw = tuple(video_hw)
        self.num_frames = len(features)
        self.cond: dict[int, dict[int, np.ndarray]] = {}
        self.masks: dict[int, dict[int, np.ndarray]] = {}

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.cond))

    def _comps(self, t: int) -> np.ndarray:
        return COMPONENTS(self.source, self.features.frame_index(t))

    def add_points(self, frame, obj_id, points_xy=None, labels=None, box_xyxy=None):
        pts = np.zeros((0, 2)) if points_xy is None else np.asarray(points_xy, np.float64)[:, ::-1]
        labs = np.zeros(0) if labels is None else labels
        box = None if box_xyxy is None else np.asarray(box_xyxy, np.float64)[[1, 0, 3, 2]]
        return self._set(frame, obj_id, _prompt_mask(self._comps(frame), pts, labs, box))

    def add_mask(self, frame, obj_id, mask):
        return self._set(frame, obj_id, np.asarray(mask, dtype=bool))

    def _set(self, frame, obj_id, mask):
        self.cond.setdefault(int(obj_id), {})[int(frame)] = mask
        self.masks.setdefault(int(obj_id), {})[int(frame)] = mask
        return self._result(int(frame), 1, 1)

    def _result(self, frame: int, done: int, total: int):
        import torch

        from napari_focsam.engine.propagation_state import FrameResult

        ids = self.obj_ids
        logits = torch.full((len(ids), 1, *self.video_hw), -1.0)
        for i, obj in enumerate(ids):
            mask = self.masks[obj].get(frame)
            if mask is not None:
                logits[i, 0][torch.from_numpy(np.ascontiguousarray(mask))] = 1.0
        return FrameResult(frame, ids, logits, done, total)

    def _track(self, t: int, reverse: bool) -> None:
        # seeded watershed of the frame's bright pixels from each object's (eroded) mask on the
        # previous frame: touching objects stay apart, a dividing one keeps both pieces
        from scipy import ndimage
        from skimage.segmentation import watershed

        flat = self.features.frame_index(t)
        bright = COMPONENTS(self.source, flat) > 0
        markers = np.zeros(self.video_hw, dtype=np.int32)
        for obj in self.obj_ids:
            prev = self.cond[obj].get(t, self.masks[obj].get(t + 1 if reverse else t - 1))
            if prev is None:
                continue
            core = ndimage.binary_erosion(prev, iterations=2)
            markers[(core if core.any() else prev) & bright] = obj
        regions = watershed(-COMPONENTS.smooth(self.source, flat), markers, mask=bright)
        for obj, cond in self.cond.items():
            self.masks[obj][t] = cond[t] if t in cond else regions == obj

    def _first(self) -> int:
        return min(f for frames in self.cond.values() for f in frames)

    def _pass(self, start: int, reverse: bool):
        order = list(range(start, -1, -1)) if reverse else list(range(start, self.num_frames))
        for done, t in enumerate(order, start=1):
            time.sleep(self.delay)
            self._track(t, reverse)
            yield self._result(t, done, len(order))

    def _hold(self) -> None:
        if StandInPropagator.hold is not None:
            StandInPropagator.hold.wait(60)

    def propagate(self, start=None, reverse=False):
        yield from self._pass(self._first() if start is None else int(start), reverse)
        self._hold()

    def propagate_both(self, start=None):
        start = self._first() if start is None else int(start)
        total = self.num_frames + (1 if start > 0 else 0)
        done = 0
        for reverse in (False, True):
            if reverse and start == 0:
                break
            for result in self._pass(start, reverse):
                done += 1
                yield type(result)(result.frame, result.obj_ids, result.logits, done, total)
        self._hold()


class StandInTracker:
    """Replaces SAM 2's `VideoPropagator` in "Track all" (`TrackAll`'s calls): objects enter
    (`add_mask`) and leave (`remove_object`) between two frames of a pass; on each frame every
    object takes its region of a watershed of the bright pixels seeded by its (eroded) mask on
    the previous frame (a prompt mask on a frame is the object there), and is present (object
    score +4) when the region is not empty, absent (-4) otherwise. A dividing cell stays one
    object in two pieces, which `TrackAll` turns into two daughters."""

    delay = 0.02  # seconds per frame, so that the widget's frame-by-frame writes show

    def __init__(self, net, features, video_hw, options=None) -> None:
        self.features = features
        self.source = features.store.source
        self.video_hw = tuple(video_hw)
        self.num_frames = len(features)
        self.cond: dict[int, dict[int, np.ndarray]] = {}
        self.last: dict[int, np.ndarray] = {}

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(self.cond)

    def add_mask(self, frame, obj_id, mask, result=True):
        self.cond.setdefault(int(obj_id), {})[int(frame)] = np.asarray(mask, dtype=bool)

    def remove_object(self, obj_id):
        del self.cond[int(obj_id)]
        self.last.pop(int(obj_id), None)
        return self.obj_ids

    def _track(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        from scipy import ndimage
        from skimage.segmentation import watershed

        flat = self.features.frame_index(t)
        bright = COMPONENTS(self.source, flat) > 0
        ids = self.obj_ids
        markers = np.zeros(self.video_hw, dtype=np.int32)
        for k, obj in enumerate(ids, start=1):
            prev = self.cond[obj].get(t - 1, self.last.get(obj))
            if prev is None or t in self.cond[obj]:
                continue
            core = ndimage.binary_erosion(prev, iterations=2)
            markers[(core if core.any() else prev) & bright] = k
        regions = watershed(-COMPONENTS.smooth(self.source, flat), markers, mask=bright)
        masks = np.zeros((len(ids), *self.video_hw), dtype=bool)
        for k, obj in enumerate(ids):
            masks[k] = self.cond[obj][t] if t in self.cond[obj] else regions == k + 1
            self.last[obj] = masks[k]
        scores = np.where(masks.reshape(len(ids), -1).any(axis=1), 4.0, -4.0).astype(np.float32)
        return masks, scores

    def propagate(self, start=None, reverse=False, max_frames=None):
        import torch

        from napari_focsam.engine.propagation_state import FrameResult

        if reverse:
            raise ValueError("the stand-in tracker runs forward only")
        start = min(min(f) for f in self.cond.values()) if start is None else int(start)
        end = self.num_frames - 1 if max_frames is None else min(start + max_frames,
                                                                  self.num_frames - 1)
        for done, t in enumerate(range(start, end + 1), start=1):
            time.sleep(self.delay)
            ids = self.obj_ids
            masks, scores = self._track(t)
            logits = torch.where(torch.from_numpy(masks)[:, None], 1.0, -1.0)
            yield FrameResult(t, ids, logits, done, end - start + 1,
                              object_score_logits=torch.from_numpy(scores))


def stand_in_discover(segmenter, params=None, *, cancel_event=None):
    """Replaces `api.automatic.automatic_discover` in the dock: the bright components of a
    frame are the objects found."""

    def discover(flat: int) -> list[np.ndarray]:
        comps = COMPONENTS(segmenter.source, flat)
        return [comps == k for k in range(1, int(comps.max()) + 1)]

    return discover


def stand_in_find_masks(segmenter, frame, generator, crops=None, *, predictor=None):
    """Replaces `api.automatic.find_masks` in the dock ("Segment all"): every bright component
    of the frame is a mask found (one decoder "batch")."""
    from napari_focsam.engine.automatic import AutoMask

    comps = COMPONENTS(segmenter.source, frame)
    yield 1, 1
    found = []
    for k in range(1, int(comps.max()) + 1):
        rows, cols = np.nonzero(comps == k)
        box = (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)
        patch = comps[box[0]:box[2], box[1]:box[3]] == k
        found.append(AutoMask(patch, box, int(patch.sum()), 0.95, 0.97,
                              (float(rows.mean()), float(cols.mean())), (0, 0, *comps.shape),
                              comps.shape))
    return found


def install_stand_ins() -> None:
    """Replace the models' outputs by the deterministic stand-ins (see the module docstring)."""
    import napari_focsam.api.segmenter as segmenter

    for name in ("_mask_from_interactive", "VideoPropagator"):
        if not hasattr(segmenter.Segmenter if name.startswith("_") else segmenter, name):
            raise RuntimeError(f"napari_focsam.api.segmenter has no {name} any more: update the "
                               "stand-ins of scripts/make_screenshots.py")
    segmenter.Segmenter._mask_from_interactive = stand_in_mask_from_interactive
    segmenter.VideoPropagator = StandInPropagator
    import napari_focsam._qt.tasks as tasks
    import napari_focsam._qt.track_all_panel as track_all_panel

    for module, name in ((tasks, "automatic_discover"), (tasks, "find_masks"),
                         (track_all_panel, "PROPAGATOR")):
        if not hasattr(module, name):
            raise RuntimeError(f"{module.__name__} has no {name} any more: update the stand-ins "
                               "of scripts/make_screenshots.py")
    tasks.automatic_discover = stand_in_discover
    tasks.find_masks = stand_in_find_masks
    track_all_panel.PROPAGATOR = StandInTracker


# ---------------------------------------------------------------------------------- helpers
def process(seconds: float = 0.0) -> None:
    """Run the Qt event loop for `seconds` (at least one pass)."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while True:
        QApplication.processEvents()
        if time.monotonic() >= end:
            return
        time.sleep(0.01)


def wait(condition, timeout: float = 60.0, what: str = "the widget", status=None) -> None:
    """Run the event loop until `condition()` is true (`status()`: text for the timeout error)."""
    from qtpy.QtWidgets import QApplication

    start = time.monotonic()
    while not condition():
        QApplication.processEvents()
        time.sleep(0.01)
        if time.monotonic() - start > timeout:
            extra = f"; the status line says: {status()!r}" if status is not None else ""
            raise TimeoutError(f"waited {timeout:.0f} s for {what}{extra}")


def wait_preview(widget) -> None:
    wait(lambda: widget.controller.live.ready() is not None, what="the live preview",
         status=widget.status_label.text)


def wait_idle(widget, timeout: float = 120.0) -> None:
    wait(lambda: not widget.controller.runner.running(), timeout, "the widget's tasks",
         status=widget.status_label.text)


def new_viewer(sample: str, size: tuple[int, int] = WINDOW_SIZE) -> tuple:
    """A viewer of `size` with napari-focsam sample `sample`, its image layer only (the
    ground-truth layers would hide the FocSAM labels)."""
    import napari
    from napari.layers import Image

    viewer = napari.Viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*size)
    viewer.open_sample("napari-focsam", sample)
    for layer in list(viewer.layers):
        if not isinstance(layer, Image):
            viewer.layers.remove(layer)
    image = next(layer for layer in viewer.layers if isinstance(layer, Image))
    process(0.2)
    return viewer, image


def add_focsam_widget(viewer):
    """Dock "FocSAM segmentation" through the plugin manifest, with the tiny test models."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-focsam", "FocSAM segmentation")
    widget.setup.models.random_check.setChecked(True)
    widget.setup.models.select_models("sam_test_tiny", "sam2_test_tiny")
    widget.controller.cache_root = False
    process(0.1)
    return widget


class _Frames:
    """Enough of `StackSource` for `COMPONENTS`: a ``(T, H, W)`` array's frames."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def raw(self, flat: int) -> np.ndarray:
        return np.asarray(self.data[flat])[..., None]

    def __len__(self) -> int:
        return len(self.data)


def centres(stack: np.ndarray, frame: int = 0, min_pixels: int = 60) -> list[tuple[float, float, int]]:
    """(row, col, size) of the stand-in's bright components on `frame` of `stack` (``(T, H, W)``),
    largest first; (row, col) is the point deepest inside the component."""
    from scipy import ndimage

    comps = COMPONENTS(_Frames(stack), frame)
    out = []
    for index in range(1, int(comps.max()) + 1):
        mask = comps == index
        size = int(mask.sum())
        if size >= min_pixels:
            dist = ndimage.distance_transform_edt(mask)
            r, c = np.unravel_index(int(np.argmax(dist)), mask.shape)
            out.append((float(r), float(c), size))
    return sorted(out, key=lambda x: -x[2])


def click(widget, points, coords, *, negative: bool = False) -> None:
    """Add a click as the user does (T toggles the polarity of new clicks) and wait for the
    preview."""
    if negative:
        widget.prompts.toggle_polarity()
    points.add(list(coords))
    if negative:
        widget.prompts.toggle_polarity()
    process(0.1)
    wait_preview(widget)


def commit_ready(widget) -> None:
    """Commit the shown preview and wait until the preview is cleared."""
    if not widget.objects.commit():
        raise RuntimeError(f"commit failed: {widget.status_label.text()}")
    live = widget.controller.live
    wait(lambda: live.ready() is None and not live.busy, what="the commit")


def commit_at(widget, points, coords) -> None:
    click(widget, points, coords)
    commit_ready(widget)


def _dismiss_notifications(viewer) -> None:
    """Close napari's notification toasts (they cover the canvas)."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    process(0.3)


def save(viewer, path: Path) -> None:
    """Screenshot of the whole window (canvas and docks) into `path` (PNG under MAX_BYTES)."""
    from PIL import Image as PILImage

    _dismiss_notifications(viewer)
    viewer.reset_view()
    viewer.help = ""  # napari's key hints in the status bar: noise in a picture
    process(0.5)
    pixels = viewer.screenshot(canvas_only=False, flash=False)
    picture = PILImage.fromarray(np.asarray(pixels)).convert("RGB")
    scale = 1.0
    while True:
        out = picture if scale == 1.0 else picture.resize(
            (round(picture.width * scale), round(picture.height * scale)), PILImage.LANCZOS)
        out.save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES or scale < 0.5:
            break
        scale *= 0.9
    logger.info("%s: %dx%d, %d KB", path.name, out.width, out.height, path.stat().st_size // 1024)


# ---------------------------------------------------------------------------------- the shots
def shots_2d(out: Path, only: set[str]) -> None:
    viewer, image = new_viewer("nuclei_2d")
    widget = add_focsam_widget(viewer)
    points, _shapes = widget.prompts.new_prompt_layers()
    objects = centres(np.asarray(image.data)[None])
    # several committed objects
    for r, c, _ in objects[:6]:
        commit_at(widget, points, (r, c))
    # the next object: a positive click, a second one, and a negative click on its neighbour
    target = objects[6]
    r, c, _ = target
    click(widget, points, (r, c))
    neighbour = min(objects[7:], key=lambda o: (o[0] - r) ** 2 + (o[1] - c) ** 2)
    comps = COMPONENTS(_Frames(np.asarray(image.data)[None]), 0)
    inside = np.argwhere(comps == comps[int(r), int(c)])
    far = inside[np.argmax(((inside - (r, c)) ** 2).sum(axis=1))]
    click(widget, points, tuple(np.round(np.array((r, c)) + 0.6 * (far - (r, c)))))  # 2nd click
    click(widget, points, neighbour[:2], negative=True)
    if "2d_click" in only:
        save(viewer, out / "2d_click.png")
    if "2d_committed" in only:
        commit_ready(widget)
        for r, c, _ in objects[7:12]:
            commit_at(widget, points, (r, c))
        viewer.layers.selection.active = widget.objects.target_layer()
        save(viewer, out / "2d_committed.png")
    viewer.close()


def shot_segment_all(out: Path) -> None:
    """"Segment all" on the 2D nuclei with two nuclei committed by clicks: the preview of the
    objects found around them, before 'Add'."""
    from napari_focsam._qt.everything_panel import PREVIEW_NAME

    viewer, image = new_viewer("nuclei_2d")
    widget = add_focsam_widget(viewer)
    points, _shapes = widget.prompts.new_prompt_layers()
    for r, c, _ in centres(np.asarray(image.data)[None])[:2]:
        commit_at(widget, points, (r, c))
    panel = widget.everything
    panel.set_value("min_area", 30)
    if not panel.run():
        raise RuntimeError(f"segment all did not start: {widget.status_label.text()}")
    wait(lambda: widget.segment_all.preview is not None, what="the segment-all preview",
         status=widget.status_label.text)
    wait_idle(widget)
    logger.info("segment all: %s", widget.status_label.text())
    viewer.layers.selection.active = viewer.layers[PREVIEW_NAME]
    widget.scroll.ensureWidgetVisible(panel)
    process(0.2)
    save(viewer, out / "segment_all.png")
    viewer.close()


def shots_3d(out: Path, only: set[str]) -> None:
    viewer, image = new_viewer("nuclei_3d")
    widget = add_focsam_widget(viewer)
    points, _shapes = widget.prompts.new_prompt_layers()
    data = np.asarray(image.data)
    z = data.shape[0] // 2
    viewer.dims.set_current_step(0, z)
    for r, c, _ in centres(data, z):
        commit_at(widget, points, (z, r, c))
    StandInPropagator.hold = threading.Event()
    try:
        widget.objects.propagate_buttons["both"].click()
        total = data.shape[0]
        wait(lambda: widget.progress.maximum() == total and widget.progress.value() == total,
             what="the propagation")
        # a slice 3 to 6 away from the prompted one, showing as many objects as possible
        labels = np.asarray(widget.objects.target_layer().data)
        other = max((t for t in range(z - 6, z + 7) if abs(t - z) >= 3),
                    key=lambda t: (len(np.unique(labels[t])), abs(t - z), -t))
        viewer.dims.set_current_step(0, other)
        viewer.layers.selection.active = widget.objects.target_layer()
        if "3d_propagated" in only:
            save(viewer, out / "3d_propagated.png")
    finally:
        StandInPropagator.hold.set()
        StandInPropagator.hold = None
    wait_idle(widget)
    if "3d_correction" in only:
        # a correction: object 2 selected in the list, a click on another slice of it
        labels = widget.objects.target_layer()
        obj = widget.objects.book.ids[1]
        slices = [t for t in range(data.shape[0]) if (labels.data[t] == obj).any()]
        target = slices[-2] if slices[-1] - z > 2 else slices[0] + 1
        widget.objects.object_list.item(1).setSelected(True)
        viewer.dims.set_current_step(0, target)
        viewer.layers.selection.active = points
        rows, cols = np.nonzero(labels.data[target] == obj)
        click(widget, points, (target, float(np.median(rows)), float(np.median(cols))))
        save(viewer, out / "3d_correction.png")
    viewer.close()


def _first_splits(labels: np.ndarray) -> list[tuple[int, int]]:
    """(object, frame): the first frame on which each object is in two pieces (or more)."""
    from scipy import ndimage

    first: dict[int, int] = {}
    for t in range(1, labels.shape[0]):
        for obj in np.unique(labels[t][labels[t] > 0]).tolist():
            if obj not in first and ndimage.label(labels[t] == obj, structure=np.ones((3, 3)))[1] >= 2:
                first[obj] = t
    return sorted(first.items(), key=lambda kv: kv[1])


def shot_tracking(out: Path) -> None:
    from qtpy.QtCore import Qt

    from napari_focsam._qt.tracking_panel import TRACKS_NAME

    viewer, image = new_viewer("cell_timelapse")
    widget = add_focsam_widget(viewer)
    widget.setup.select_stack(0, "t")  # a time-lapse: what the tracking dock lists
    points, _shapes = widget.prompts.new_prompt_layers()
    data = np.asarray(image.data)
    viewer.dims.set_current_step(0, 0)
    for r, c, _ in centres(data, 0):
        commit_at(widget, points, (0, r, c))
    widget.objects.propagate_buttons["forward"].click()
    wait_idle(widget)
    labels = widget.objects.target_layer()
    # tabbed with the segmentation dock: both stacked do not fit in the window's height
    window = viewer.window._qt_window
    dock_width = widget.parentWidget().width() if widget.parentWidget() is not None else 450
    dock, panel = viewer.window.add_plugin_dock_widget("napari-focsam", "FocSAM tracking", tabify=True)
    process(0.2)
    window.resize(*WINDOW_SIZE)
    window.resizeDocks([dock], [dock_width], Qt.Orientation.Horizontal)
    logger.info("tracking dock's labels choices: %s",
                [panel.labels_combo.itemText(i) for i in range(panel.labels_combo.count())])
    panel.labels_combo.set_layer(labels)
    panel.update_tracks()
    # divisions: an object in two pieces on a frame (the stand-in follows both daughters of a
    # dividing cell as one object) is divided there with the dock's button, as a user does
    for obj, t in _first_splits(np.asarray(labels.data)):
        viewer.dims.set_current_step(0, t)
        labels.selected_label = obj
        panel.divide_button.click()
        process(0.1)
    tracks = viewer.layers[TRACKS_NAME]
    n_frames = data.shape[0]
    tracks.tail_length = n_frames
    tracks.tail_width = 4
    viewer.layers.selection.active = tracks
    viewer.dims.set_current_step(0, n_frames - 2)
    widget.objects.object_list.clearSelection()
    save(viewer, out / "tracking.png")
    viewer.close()


def shot_track_all(out: Path) -> None:
    """The "Track all" section after a run: the cells of the time-lapse's first frame (its
    ground-truth labels there, as a user's committed labels) tracked through the movie, with
    the divisions, the tracks and the summary in the status line."""
    import napari
    import tifffile

    from napari_focsam._qt.track_all_panel import OUTPUT_NAME
    from napari_focsam._qt.tracking_panel import TRACKS_NAME

    images = tifffile.imread(SAMPLE_DATA / "cell_timelapse.tif")
    truth = tifffile.imread(SAMPLE_DATA / "cell_timelapse_labels.tif")
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    viewer.add_image(images, name="cell_timelapse", colormap="green", axis_labels=("t", "y", "x"))
    seeds = np.zeros(truth.shape, dtype=np.int32)
    seeds[0] = truth[0]
    seed_layer = viewer.add_labels(seeds, name="cells on frame 0", axis_labels=("t", "y", "x"))
    process(0.2)
    widget = add_focsam_widget(viewer)
    widget.setup.select_stack(0, "t")
    viewer.dims.set_current_step(0, 0)
    panel = widget.track_panel
    panel.set_seeds(seed_layer)
    if not panel.run():
        raise RuntimeError(f"track all did not start: {widget.status_label.text()}")
    wait_idle(widget)
    status = widget.status_label.text()
    logger.info("track all: %s", status)
    if not status.startswith("Tracked "):
        raise RuntimeError(f"track all failed: {status}")
    seed_layer.visible = False
    tracks = viewer.layers[TRACKS_NAME]
    n_frames = images.shape[0]
    tracks.tail_length = n_frames
    tracks.tail_width = 4
    viewer.layers.selection.active = viewer.layers[OUTPUT_NAME]
    viewer.dims.set_current_step(0, n_frames - 2)
    process(0.2)
    widget.scroll.ensureWidgetVisible(panel)
    save(viewer, out / "track_all.png")
    viewer.close()


def shot_layout(out: Path, size: tuple[int, int]) -> None:
    """Both docks as the README's command opens them, in a window of `size`, with objects
    committed on the middle slice and the next one previewed."""
    from qtpy.QtWidgets import QApplication

    viewer, image = new_viewer("nuclei_3d", size)
    widget = add_focsam_widget(viewer)
    _, panel = viewer.window.add_plugin_dock_widget("napari-focsam", "FocSAM tracking")
    window = viewer.window._qt_window
    window.resize(*size)
    process(0.3)
    data = np.asarray(image.data)
    z = data.shape[0] // 2
    viewer.dims.set_current_step(0, z)
    points, _shapes = widget.prompts.new_prompt_layers()
    objects = centres(data, z)
    for r, c, _ in objects[:3]:
        commit_at(widget, points, (z, r, c))
    click(widget, points, (z, *objects[3][:2]))
    hint = window.minimumSizeHint()
    if window.width() > size[0] or window.height() > size[1]:
        raise RuntimeError(f"the window is {window.width()} x {window.height()} (its minimum: "
                           f"{hint.width()} x {hint.height()}), larger than {size}")
    logger.info("layout %s: window minimum %d x %d, docks %s, screen %s", size, hint.width(),
                hint.height(), [(w.parentWidget().width(), w.parentWidget().height())
                                for w in (widget, panel)],
                QApplication.primaryScreen().availableGeometry().size())
    save(viewer, out / f"layout_{size[0]}x{size[1]}.png")
    viewer.close()


# ---------------------------------------------------------------------------------- main
def _reexec_under_xvfb() -> None:
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") \
            and not os.environ.get("WAYLAND_DISPLAY") and shutil.which("xvfb-run") \
            and not os.environ.get("_FOCSAM_SCREENSHOTS_XVFB"):
        os.environ["_FOCSAM_SCREENSHOTS_XVFB"] = "1"
        args = ["xvfb-run", "-a", "-s", "-screen 0 1920x1200x24", sys.executable,
                os.path.abspath(sys.argv[0]), *sys.argv[1:]]
        os.execvp("xvfb-run", args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "images",
                        help="folder of the PNG files (default: docs/images)")
    parser.add_argument("--only", nargs="+", choices=SHOTS, default=list(SHOTS),
                        help="make only these screenshots")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("napari_focsam").setLevel(logging.WARNING)
    _reexec_under_xvfb()
    # napari's default settings (theme, dock positions), whatever the user's settings file says;
    # napari also writes the docks' positions there
    settings_dir = tempfile.TemporaryDirectory(prefix="focsam-screenshots-")
    os.environ["NAPARI_CONFIG"] = str(Path(settings_dir.name) / "settings.yaml")
    args.out.mkdir(parents=True, exist_ok=True)
    only = set(args.only)
    install_stand_ins()
    try:
        if only & {"2d_click", "2d_committed"}:
            shots_2d(args.out, only)
        if "segment_all" in only:
            shot_segment_all(args.out)
        if only & {"3d_propagated", "3d_correction"}:
            shots_3d(args.out, only)
        if "tracking" in only:
            shot_tracking(args.out)
        if "track_all" in only:
            shot_track_all(args.out)
        for size in LAYOUT_SIZES:
            if f"layout_{size[0]}x{size[1]}" in only:
                shot_layout(args.out, size)
    finally:
        settings_dir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
