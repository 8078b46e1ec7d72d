"""The "Track all" section: seed every object on the slice being viewed and track them all
through the stack with SAM 2, starting, ending and dividing tracks on the way.

- **Seeds**: the plane of a Labels layer at the slice being viewed (ids kept; e.g. the labels
  committed or painted there, or cellpose output), or the objects automatic mask generation
  finds there ("automatic", with the "Segment all" section's settings).
- **The run** (`tracking.track_all.TrackAll`, in a worker): each tracked frame is written, as
  soon as it is done, into a *new* Labels layer (`OUTPUT_NAME`), so no labels the user made are
  ever overwritten; frames rewritten because a division was confirmed later are written again.
  Cancel (or a failure, or the output or image layer removed) keeps the frames written.
- **The result** (also after a cancel or a failure): the output layer holds the lineage
  (``metadata[META_KEY]``, a `TrackTable`) and is marked as a time-lapse (axis 0 = t), so the
  "FocSAM tracking" dock lists it; the Tracks layer (`TRACKS_NAME`) shows the tracks and their
  lineage; *Export CTC…* writes the Cell Tracking Challenge result files.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..engine.automatic import AutoMaskParams
from ..errors import UserError
from ..tracking import TrackTable, export_ctc, tracks_from_labels
from ..tracking.lifecycle import TrackOptions
from ..tracking.track_all import TrackProgress
from .axes import STACK_META_KEY, ImageAxes, StackKind, stack_metadata
from .controller import USER_CANCEL, SegmentationController
from .everything_panel import PREVIEW_NAME as EVERYTHING_PREVIEW_NAME
from .layer_combo import LayerCombo
from .layout import MAX_AREA, SpinField, make_spin_box
from .live import PREVIEW_NAME
from .prompt_layers import image_data, layer_transform_kwargs, place_below
from .tasks import Failed, Status, TrackFrames, describe_error, track_task
from .tracking_panel import META_KEY, TRACKS_NAME
from .workers import Task

__all__ = ["AUTOMATIC", "OUTPUT_NAME", "PROPAGATOR", "TASK", "TrackAllController", "TrackAllPanel",
           "TrackRun", "TrackSettings"]

logger = logging.getLogger(__name__)

#: Name of the Labels layer each run writes into (a new layer every run; napari numbers them).
OUTPUT_NAME = "FocSAM tracks labels"
#: The seed combo's entry for automatic seeding.
AUTOMATIC = "automatic (segment all)"
#: The runner's name of the task.
TASK = "track"
#: The tracker `TrackAll` builds (None: SAM 2's `VideoPropagator`); tests and the screenshot
#: script set a stand-in here.
PROPAGATOR: Callable | None = None


@dataclass(frozen=True)
class TrackSettings:
    """The section's settings, as the user chose them.

    Attributes
    ----------
    seeds : napari.layers.Labels or None
        Its plane at the seed frame seeds the objects; None: automatic mask generation.
    last_frame : int or None
        Last frame tracked (inclusive); None: the end of the stack.
    discover_every, lost_after, division_min_frames, min_area : int
    division_area_ratio, min_overlap : float
        As `TrackOptions`.
    """

    seeds: object = None
    last_frame: int | None = None
    discover_every: int = 10
    lost_after: int = 5
    division_min_frames: int = 3
    division_area_ratio: float = 0.4
    min_area: int = 10
    min_overlap: float = 0.3

    def options(self, seed_frame: int) -> TrackOptions:
        """`TrackOptions` from `seed_frame` (raises `TrackingError` for bad values)."""
        return TrackOptions(seed_frame=seed_frame, last_frame=self.last_frame,
                            discover_every=self.discover_every, min_overlap=self.min_overlap,
                            lost_after=self.lost_after,
                            division_min_frames=self.division_min_frames,
                            division_area_ratio=self.division_area_ratio, min_area=self.min_area)


@dataclass(eq=False)
class TrackRun:
    """The running (or last) "Track all".

    Attributes
    ----------
    image : napari.layers.Image
    axes : ImageAxes
    output : napari.layers.Labels
        The new layer the frames are written into.
    seed_frame : int
    outer : int or None
    table : TrackTable
        The lineage of the frames written so far (the engine's, copied with each frame).
    frames_written : set of int
    seeds, new, lost, divisions : int
        Tracks seeded, started later (found), ended (lost), and divisions, so far.
    """

    image: object
    axes: ImageAxes
    output: object
    seed_frame: int
    outer: int | None = None
    table: TrackTable = dataclasses.field(default_factory=TrackTable)
    frames_written: set[int] = dataclasses.field(default_factory=set)
    seeds: int = 0
    new: int = 0
    lost: int = 0
    divisions: int = 0
    n_objects: int = 0

    def counts(self) -> str:
        return (f"{_count(self.n_objects, 'cell')}, {_count(len(self.table), 'track')}, "
                f"{_count(self.divisions, 'division')}, {self.new} new, {self.lost} lost")


def _count(n: int, noun: str) -> str:
    """``"1 frame"``, ``"2 frames"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _time_lapse_metadata(axes: ImageAxes) -> dict:
    """The `STACK_META_KEY` entry of the output: its stack axis marked as time."""
    return stack_metadata(dataclasses.replace(axes, kind=StackKind.T))


class TrackAllController(QObject):
    """Runs "Track all" and writes its result into a new Labels layer and a Tracks layer.

    Parameters
    ----------
    viewer : napari.Viewer
    controller : SegmentationController
        Its segmenter spec, runner, holder, image layer and messages.
    discover_overrides : callable
        ``() -> dict``: settings of automatic mask generation (the "Segment all" section's).

    Attributes
    ----------
    run : TrackRun or None
        The running track all.
    result : napari.layers.Labels or None
        The output layer of the last run that wrote frames (what *Export CTC…* writes).

    Signals
    -------
    progress(str, int, int)
        Text, done and total (seeds, then frames) of the running track all.
    changed()
        A run started or ended, or the image, its axes or the models changed.
    """

    progress = Signal(str, int, int)
    changed = Signal()

    def __init__(self, viewer, controller: SegmentationController, *,
                 discover_overrides: Callable[[], dict] = dict,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._controller = controller
        self._discover_overrides = discover_overrides
        self.run: TrackRun | None = None
        self.result = None
        viewer.layers.events.removed.connect(self._on_layer_removed)
        controller.spec_changed.connect(self.changed)

    @property
    def running(self) -> bool:
        """Whether a track all runs."""
        return self.run is not None

    def problem(self) -> str:
        """Why "Track all" cannot run on the current choices ("" when it can)."""
        try:
            axes = self._controller.axes()
        except UserError as exc:
            return f"Track all: {exc}"
        if not axes.propagates:
            return ("Track all needs a z or t stack and a SAM 2 propagation model: choose the "
                    "stack axis (e.g. 'axis 0 as t') under Setup")
        if axes.outer_axis is not None:
            return "Track all works on 3D stacks (t, y, x): slice the 4D image first"
        return ""

    def seed_frame(self) -> int | None:
        """The slice being viewed (None without a stack)."""
        image = self._controller.image_layer()
        if image is None or self.problem():
            return None
        axes = self._controller.axes()
        frame, _outer = axes.position(image.world_to_data(self.viewer.dims.point))
        return frame

    def n_frames(self) -> int | None:
        """Frames along the stack axis (None without a stack)."""
        image = self._controller.image_layer()
        if image is None or self.problem():
            return None
        axes = self._controller.axes()
        return int(image_data(image).shape[axes.stack_axis])

    def labels_shape(self) -> tuple[int, ...] | None:
        """Shape of the image's labels (None without an image)."""
        image = self._controller.image_layer()
        try:
            axes = self._controller.axes()
        except UserError:
            return None
        return axes.labels_shape(image_data(image).shape) if image is not None else None

    # ------------------------------------------------------------------ start
    def start(self, settings: TrackSettings) -> bool:
        """Track from the slice being viewed with `settings`; False, with a message, when it
        cannot start."""
        controller = self._controller
        messages, runner = controller.messages, controller.runner
        if runner.running(TASK):
            messages.error("Track all is already running: wait for it or cancel it")
            return False
        if runner.running("propagate"):
            messages.error("Propagation is running: track all when it ends (or cancel it)")
            return False
        problem = self.problem()
        if problem:
            messages.error(problem)
            return False
        try:
            spec = controller.spec()
        except Exception as exc:  # noqa: BLE001 - reported in the status line, never raised
            messages.error(f"Track all: {describe_error(exc, 'the track-all settings')}")
            return False
        axes, image = spec.axes, controller.image_layer()
        labels_shape = axes.labels_shape(spec.data.shape)
        frame, outer = axes.position(image.world_to_data(self.viewer.dims.point))
        if not axes.in_range(labels_shape, frame, outer):
            messages.error("The slice being viewed is outside the image: move to one of its slices")
            return False
        if settings.last_frame is not None and settings.last_frame < frame:
            messages.error(f"Track all: the last frame ({settings.last_frame}) is before the seed "
                           f"frame ({frame}, the slice being viewed): view an earlier slice or "
                           "choose a later last frame")
            return False
        try:
            options = settings.options(frame)
            discover = None
            if settings.seeds is None or options.discover_every > 0:
                discover = dict(self._discover_overrides())
                AutoMaskParams().replace(**discover)  # the checks do not depend on the defaults
            seeds = self._seeds(settings.seeds, axes, labels_shape, frame, outer, options.min_area)
        except UserError as exc:
            messages.error(f"Track all: {exc}")
            return False
        dtype = np.int64 if seeds is not None and seeds.max(initial=0) > np.iinfo(np.int32).max \
            else np.int32
        output = self._add_output(image, axes, labels_shape, dtype)
        self.run = run = TrackRun(image, axes, output, frame, outer)
        runner.start(TASK, track_task, controller.holder, spec, seeds, options, discover,
                     outer=outer, propagator=PROPAGATOR,
                     on_event=lambda event: self._on_event(event, run), on_done=self._on_done,
                     during="track all")
        self.changed.emit()
        return True

    def _seeds(self, layer, axes: ImageAxes, labels_shape: tuple[int, ...], frame: int,
               outer: int | None, min_area: int) -> np.ndarray | None:
        """The seed labels: `layer`'s plane at (`frame`, `outer`) (None: automatic)."""
        if layer is None:
            return None
        if layer not in self.viewer.layers:
            raise UserError("the seed labels layer is gone: choose another")
        if tuple(layer.data.shape) != tuple(labels_shape):
            raise UserError(f"the seed labels layer '{layer.name}' has shape {layer.data.shape}, "
                            f"the image needs {labels_shape}: choose another")
        plane = np.array(layer.data[axes.plane_index(frame, outer)])
        if not np.issubdtype(plane.dtype, np.integer):
            raise UserError(f"the seed labels layer '{layer.name}' does not hold integer labels")
        counts = np.unique(plane[plane > 0], return_counts=True)[1]
        if not (counts >= min_area).any():
            raise UserError(f"'{layer.name}' has no object of at least {min_area} pixels on slice "
                            f"{frame}: view a slice with objects, or seed automatically")
        return plane

    def _add_output(self, image, axes: ImageAxes, labels_shape: tuple[int, ...], dtype):
        """A new, empty Labels layer for the result, marked as a time-lapse."""
        active = self.viewer.layers.selection.active
        layer = self.viewer.add_labels(np.zeros(labels_shape, dtype=dtype), name=OUTPUT_NAME,
                                       metadata={STACK_META_KEY: _time_lapse_metadata(axes)},
                                       **layer_transform_kwargs(image))
        place_below(self.viewer, layer, self._controller.prompt_layers())
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
        return layer

    # ------------------------------------------------------------------ events
    def _on_event(self, event, run: TrackRun) -> None:
        if run is not self.run:
            return
        messages = self._controller.messages
        if isinstance(event, Status):
            messages.info(event.text)
        elif isinstance(event, Failed) and not event.cancelled:  # a cancel is reported at the end
            n_frames = len(run.frames_written)
            kept = (f"; the frames written are kept ({_count(n_frames, 'frame')})" if n_frames
                    else "")
            messages.error(f"Track all failed: {event.message}{kept}")
        elif isinstance(event, TrackProgress):  # seeding
            run.seeds += len(event.started)
            run.n_objects = event.n_objects
            self.progress.emit("Seeding", event.done, event.total)
        elif isinstance(event, TrackFrames):
            self._write(run, event)

    def _write(self, run: TrackRun, event: TrackFrames) -> None:
        """Write a tracked frame (and the frames a division rewrote) into the output layer."""
        progress = event.progress
        run.table = event.table
        run.n_objects = progress.n_objects
        run.new += len(progress.started)
        run.lost += len(progress.ended)
        run.divisions += len(progress.divisions)
        output = run.output
        if output not in self.viewer.layers:
            return
        for frame, labels in event.frames:
            if labels.max(initial=0) > np.iinfo(output.data.dtype).max:
                output.data = output.data.astype(np.int64)
            output.data[run.axes.plane_index(frame, event.outer)] = labels
            run.frames_written.add(frame)
        output.refresh()
        frame = event.frames[0][0]
        self.progress.emit("Tracking", progress.done, progress.total)
        self._controller.messages.info(f"Tracking: slice {frame} done ({progress.done}/"
                                       f"{progress.total}): {run.counts()}")

    def _on_done(self, task: Task) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        messages = self._controller.messages
        alive = run.output in self.viewer.layers
        if alive and not run.frames_written:  # nothing tracked: no empty layer left behind
            self.viewer.layers.remove(run.output)
            alive = False
        if alive:
            try:
                table = self._finish(run)
            except Exception as exc:  # noqa: BLE001 - reported in the status line, never raised
                messages.error("Track all: the tracks could not be shown: "
                               + describe_error(exc, "showing the tracks of track all"))
                table = run.table
            self.result = run.output
        else:
            table = run.table
        self.changed.emit()
        n_frames = len(run.frames_written)
        summary = (f"{_count(len(table), 'cell')} over {_count(n_frames, 'frame')}: "
                   f"{_count(run.divisions, 'division')}, {run.new} new, {run.lost} lost")
        if task.cancelled:
            kept = f"; the frames written are kept: {summary}" if alive else ""
            text = f"Track all stopped ({task.reason}){kept}"
            if task.reason == USER_CANCEL:
                messages.info(text)
            else:
                messages.error(text)
        elif task.failed is None:
            messages.info(f"Tracked {summary} (in '{run.output.name}')")

    def _finish(self, run: TrackRun) -> TrackTable:
        """Record the lineage in the output layer and show the tracks."""
        output = run.output
        labels = np.asarray(output.data)
        table = TrackTable.from_labels(labels).keep_links(run.table)
        output.metadata = {**output.metadata, META_KEY: table,
                           STACK_META_KEY: _time_lapse_metadata(run.axes)}
        output.events.data(value=output.data)  # new ids: listeners re-read the largest label
        self.show_tracks(output, table)
        return table

    def show_tracks(self, layer, table: TrackTable) -> object | None:
        """Add or update the Tracks layer (`TRACKS_NAME`) of Labels `layer` with `table`'s
        lineage; None when there are no objects."""
        data, graph = tracks_from_labels(np.asarray(layer.data), table)
        if len(data) == 0:
            return None
        if TRACKS_NAME in self.viewer.layers:
            tracks = self.viewer.layers[TRACKS_NAME]
            tracks.graph = {}
            tracks.data = data
            tracks.graph = graph
            tracks.scale, tracks.translate = layer.scale, layer.translate
        else:
            active = self.viewer.layers.selection.active
            tracks = self.viewer.add_tracks(data, graph=graph, name=TRACKS_NAME,
                                            scale=layer.scale, translate=layer.translate)
            if active is not None and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
        return tracks

    # ------------------------------------------------------------------ export
    def export_ctc(self, folder: str | Path) -> Path | None:
        """Write the last result as a CTC folder (``maskTTT.tif`` + ``res_track.txt``) into
        `folder`, which must be empty, new or an earlier CTC result; None, with a message, when
        it cannot."""
        messages = self._controller.messages
        layer = self.result
        if layer is None or layer not in self.viewer.layers:
            messages.error("Nothing to export: run Track all first")
            return None
        folder = Path(folder)
        labels = np.asarray(layer.data)
        recorded = layer.metadata.get(META_KEY)
        table = TrackTable.from_labels(labels).keep_links(
            recorded if isinstance(recorded, TrackTable) else None)
        try:
            out = export_ctc(labels, folder, table, overwrite=True)
        except (ValueError, OSError) as exc:
            messages.error(f"CTC export failed: {exc}")
            return None
        messages.info(f"CTC results of '{layer.name}' written to {out} ({len(table)} tracks, "
                      f"{len(table.parents)} with a parent)")
        return Path(out)

    # ------------------------------------------------------------------ layers
    def _on_layer_removed(self, event) -> None:
        if self._controller.runner.closed:
            return
        layer = event.value
        run = self.run
        if run is not None and any(layer is other for other in (run.output, run.image)):
            kind = "labels" if isinstance(layer, Labels) else "image"
            self._controller.runner.cancel(TASK, f"the {kind} layer '{layer.name}' was removed")
        if layer is self.result:
            self.result = None
            self.changed.emit()


_FIELDS = (
    SpinField("discover_every", "Find new cells every", "Look for cells that were not tracked yet "
              "(automatic mask generation with the 'Segment all' settings) every this many frames; "
              "those found start new tracks. Off: only the seeded cells are tracked",
              0, 100000, suffix=" frames", off="off", default=10),
    SpinField("lost_after", "Lost after", "A cell missing for this many frames in a row ends its "
              "track (it left the field of view or died)", 1, 100000, suffix=" frames", default=5),
    SpinField("division_min_frames", "Divisions after", "A cell split in two parts of comparable "
              "size for this many frames in a row divides: two daughters with new ids from the "
              "first split frame. Off: cells never divide (e.g. a z-stack)",
              0, 100000, suffix=" split frames", off="off",
              default=3),
    SpinField("division_area_ratio", "Division area ratio", "The smaller part of a split is at least "
              "this fraction of the larger one (else the split is noise, not a division)",
              0.01, 1, 0.05, 2, advanced=True, default=0.4),
    SpinField("min_area", "Min. area", "Seeds and found objects smaller than this are ignored, and "
              "smaller parts do not make a split", 1, MAX_AREA, 10, suffix=" px", advanced=True,
              default=10),
    SpinField("min_overlap", "Min. overlap", "A found object covered by tracked cells for at least "
              "this fraction of its area is one of them; below it, its uncovered part is a new cell",
              0.01, 1, 0.05, 2, advanced=True, default=0.3),
)
_NAMES = {f.name for f in dataclasses.fields(TrackSettings)}
assert all(f.name in _NAMES for f in _FIELDS)
#: Shown by the last-frame box at its lowest value.
END_OF_STACK = "end of stack"


class TrackAllPanel(QWidget):
    """Seeds, range and settings of "Track all", and its buttons.

    Parameters
    ----------
    track_all : TrackAllController
        Runs the tracking; its state enables the buttons.
    """

    def __init__(self, track_all: TrackAllController, parent=None) -> None:
        super().__init__(parent)
        self._track_all = track_all
        viewer = track_all.viewer
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        layout.addLayout(form)
        self.seed_combo = LayerCombo(viewer, Labels, none_text=AUTOMATIC, accept=self._fits,
                                     auto_select=False)
        self.seed_combo.setToolTip("The cells to track: the labels of a Labels layer on the slice "
                                   "being viewed (ids kept; e.g. the objects you committed there), "
                                   "or every object automatic mask generation finds there")
        form.addRow("Seed from", self.seed_combo)
        self.seed_label = QLabel()
        self.seed_label.setToolTip("Tracking starts on the slice being viewed: move the slider "
                                   "to change it")
        form.addRow("Seed frame", self.seed_label)
        self.last_spin = QSpinBox()
        self.last_spin.setRange(-1, 0)
        self.last_spin.setSpecialValueText(END_OF_STACK)
        self.last_spin.setValue(-1)
        self.last_spin.setKeyboardTracking(False)
        self.last_spin.setToolTip("Last frame tracked (inclusive)")
        form.addRow("Last frame", self.last_spin)
        self.boxes: dict[str, QSpinBox | QDoubleSpinBox] = {}
        advanced_form = QFormLayout()
        advanced_form.setContentsMargins(0, 0, 0, 0)
        for spec in _FIELDS:
            box = make_spin_box(spec)
            self.boxes[spec.name] = box
            (advanced_form if spec.advanced else form).addRow(spec.label, box)
        settings = QWidget()
        settings.setLayout(advanced_form)
        self.advanced = QCollapsible("Advanced")
        self.advanced.addWidget(settings)
        layout.addWidget(self.advanced)
        row = QHBoxLayout()
        self.run_button = QPushButton("Track all")
        self.run_button.setToolTip("Track every seeded cell from the slice being viewed to the "
                                   "last frame, into a new labels layer")
        self.export_button = QPushButton("Export CTC…")
        self.export_button.setToolTip("Write the last result as Cell Tracking Challenge files "
                                      "(maskTTT.tif and res_track.txt) into a folder")
        row.addWidget(self.run_button, 1)
        row.addWidget(self.export_button)
        layout.addLayout(row)

        self.run_button.clicked.connect(self.run)
        self.export_button.clicked.connect(lambda: self.export_ctc())
        track_all.changed.connect(self._refresh)
        viewer.dims.events.current_step.connect(self._refresh_seed_frame)
        self._refresh()

    def _fits(self, layer) -> bool:
        """Whether Labels `layer` can seed: shaped like the image's labels (not a preview)."""
        if layer.name in (PREVIEW_NAME, EVERYTHING_PREVIEW_NAME):
            return False
        shape = self._track_all.labels_shape()
        return shape is not None and tuple(layer.data.shape) == shape

    # ------------------------------------------------------------------ settings
    def settings(self) -> TrackSettings:
        """The settings shown."""
        last = self.last_spin.value()
        values = {name: box.value() for name, box in self.boxes.items()}
        return TrackSettings(self.seed_combo.current_layer(), None if last < 0 else last, **values)

    def set_seeds(self, layer) -> None:
        """Seed from Labels `layer` (None: automatic)."""
        self.seed_combo.refresh()
        self.seed_combo.set_layer(layer)

    def set_value(self, name: str, value) -> None:
        """Set one setting (``"last_frame"``: None for the end of the stack)."""
        if name == "last_frame":
            self.last_spin.setValue(-1 if value is None else value)
        else:
            self.boxes[name].setValue(value)

    # ------------------------------------------------------------------ actions
    def run(self) -> bool:
        """Start tracking with the panel's choices."""
        return self._track_all.start(self.settings())

    def export_ctc(self, folder: str | Path | None = None) -> Path | None:
        """Export the last result into `folder` (asks for one when None)."""
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Export CTC results into (an empty "
                                                      "folder)…")
            if not folder:
                return None
        return self._track_all.export_ctc(folder)

    def _refresh_seed_frame(self, *_args) -> None:
        frame = self._track_all.seed_frame()
        self.seed_label.setText("—" if frame is None else f"slice {frame} (the one viewed)")

    def _refresh(self, *_args) -> None:
        track_all = self._track_all
        self.seed_combo.refresh()  # the shape that fits may have changed
        problem = track_all.problem()
        n_frames = track_all.n_frames()
        self.last_spin.setRange(-1, max((n_frames or 1) - 1, 0))
        self.run_button.setEnabled(not problem and not track_all.running)
        self.run_button.setToolTip(problem or "Track every seeded cell from the slice being "
                                   "viewed to the last frame, into a new labels layer")
        result = track_all.result
        self.export_button.setEnabled(not track_all.running and result is not None
                                      and result in track_all.viewer.layers)
        self._refresh_seed_frame()
