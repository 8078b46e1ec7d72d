"""`FocSamWidget`: click objects, preview them live, commit them into labels, propagate them.

All model work runs in worker threads (`workers.TaskRunner`); the GUI thread only maps
prompts, paints masks and updates the controls.
"""

from __future__ import annotations

import logging
from functools import partial

from napari.layers import Labels
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..api.segmenter import Progress
from .axes import AxesError
from .bindings import HELP
from .live import LivePreview, PreviewRequest
from .objects_panel import ObjectsPanel
from .prompt_layers import collect_prompt, image_data
from .prompts_panel import PromptsPanel
from .session import SegmenterHolder, SegmenterSpec
from .setup_panel import SetupPanel
from .tasks import Failed, Status, embed_task
from .workers import TaskRunner

__all__ = ["FocSamWidget"]

logger = logging.getLogger(__name__)

LONG_TASKS = ("embed", "propagate", "download")


def _shutdown(runner: TaskRunner, *_args) -> None:
    runner.shutdown()


class FocSamWidget(QWidget):
    """The FocSAM segmentation dock widget.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    random_weights : bool, optional
        Use random weights (tests, demos; masks are meaningless). Default: the
        ``NAPARI_FOCSAM_RANDOM_WEIGHTS`` environment variable.
    cache_root : path, None or False
        Embedding disk cache (None: the default folder; False: RAM only).
    """

    def __init__(self, napari_viewer, *, random_weights: bool | None = None, cache_root=None,
                 parent=None) -> None:
        super().__init__(parent)
        # napari hands plugin widgets a PublicOnlyProxy of the viewer, whose layers are proxies
        # too: identity checks against layers from napari's own events (``event.value``) would
        # fail. FocSAM uses public API only, so it works with the viewer itself.
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.cache_root = cache_root
        self.runner = TaskRunner()
        self.holder = SegmenterHolder()
        self._watched = None
        self._docked = False
        self._embed_image = None
        self.live = LivePreview(self.viewer, self.runner, self.holder, self._preview_request,
                                self.report, self)
        layout = QVBoxLayout(self)
        self.setup = SetupPanel(self.viewer, self.runner, random_weights=random_weights)
        self.embed_button = QPushButton("Compute embeddings")
        self.embed_button.setToolTip("Encode every frame now (otherwise a slice is encoded when "
                                     "you first click on it)")
        self.prompts = PromptsPanel(self.viewer, self, self.setup.image_layer)
        self.objects = ObjectsPanel(self)
        self.live.prompt_layers = self.prompts.layers
        for title, widgets in (("Setup", (self.setup, self.embed_button)), ("Prompts", (self.prompts,)),
                               ("Objects", (self.objects,))):
            box = QGroupBox(title)
            inner = QVBoxLayout(box)
            for widget in widgets:
                inner.addWidget(widget)
            layout.addWidget(box)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.cancel_button = QPushButton("Cancel")
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.status_label = QLabel("Choose an image, click 'New prompt layers', then click on an object.")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.help_label = QLabel(HELP)
        self.help_label.setWordWrap(True)
        self.help_label.setStyleSheet("color: gray;")
        layout.addWidget(self.help_label)
        layout.addStretch(1)

        self.embed_button.clicked.connect(self.compute_embeddings)
        self.cancel_button.clicked.connect(self.cancel)
        self.prompts.prompts_changed.connect(self.live.schedule)
        self.prompts.status.connect(self.report)
        self.setup.changed.connect(self.live.schedule)
        self.setup.changed.connect(self._update_buttons)
        self.setup.status.connect(self.report)
        self.setup.busy.connect(self._update_buttons)
        self.viewer.dims.events.current_step.connect(self.live.schedule)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.destroyed.connect(partial(_shutdown, self.runner))
        self._update_buttons()

    # ------------------------------------------------------------------ status
    def report(self, message: str, error: bool = False) -> None:
        """Show `message` in the status line (errors also as a napari notification)."""
        try:
            self.status_label.setText(message)
            self.status_label.setStyleSheet("color: #ff6060;" if error else "")
        except RuntimeError:  # the widget was deleted
            return
        if error:
            logger.warning("FocSAM: %s", message)
            from napari.utils.notifications import show_error

            show_error(f"FocSAM: {message}")
        else:
            logger.info("FocSAM: %s", message)

    def show_progress(self, text: str, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(done, max(total, 1)))
        self.progress.setFormat(f"{text}: {done}/{total}")

    def task_started(self, name: str) -> None:
        self.progress.setRange(0, 0)
        self._update_buttons()

    def task_finished(self, name: str) -> None:
        if not any(self.runner.running(n) for n in ("embed", "propagate")):
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("")
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.embed_button.setEnabled(not self.runner.running("embed"))
        propagating = self.runner.running("propagate")
        try:
            is_stack = self.setup.axes().is_stack
        except (AxesError, AttributeError):  # no image or an unusable axis choice
            is_stack = False
        for button in self.objects.propagate_buttons.values():
            button.setEnabled(is_stack and not propagating)
            button.setToolTip("" if is_stack else "Propagation needs a stack: choose a stack axis")
        self.cancel_button.setEnabled(any(self.runner.running(n) for n in LONG_TASKS))

    # ------------------------------------------------------------------ image / spec
    @staticmethod
    def image_data(image):
        return image_data(image)

    def spec(self) -> SegmenterSpec:
        """The segmenter the current choices call for (raises a user error if there is none)."""
        image = self.setup.image_layer()
        axes = self.setup.axes()
        data = image_data(image)
        return SegmenterSpec(data, (id(image), id(data)), axes, self.setup.interactive_choice(),
                             self.setup.propagation_choice() if axes.is_stack else None,
                             self.setup.device(), self.setup.dtype(), self.cache_root)

    def current_plane(self, image, axes) -> tuple[int | None, int | None]:
        """(frame, outer) of the image plane the viewer shows."""
        return axes.position(image.world_to_data(self.viewer.dims.point))

    def _preview_request(self) -> PreviewRequest | None:
        points, shapes = self.prompts.points_layer(), self.prompts.shapes_layer()
        if (points is None or not len(points.data)) and (shapes is None or not len(shapes.data)):
            return None
        image = self.setup.image_layer()
        spec = self.spec()
        labels_shape = spec.axes.labels_shape(spec.data.shape)
        frame, outer = self.current_plane(image, spec.axes)
        if not spec.axes.in_range(labels_shape, frame, outer):
            return None
        mapped = collect_prompt(self.objects.current_object_id(), image, spec.axes, frame, outer,
                                points_layer=points, shapes_layer=shapes,
                                world_point=self.viewer.dims.point)
        return PreviewRequest(spec, mapped, image, spec.axes, frame, outer, labels_shape)

    # ------------------------------------------------------------------ embeddings
    def compute_embeddings(self) -> None:
        """Encode every frame for each model, in a worker."""
        if self.runner.running("embed"):
            self.report("Embeddings are already being computed", True)
            return
        try:
            spec = self.spec()
        except Exception as exc:  # noqa: BLE001 - user errors (no image, axes)
            self.report(str(exc), True)
            return
        self._embed_image = self.setup.image_layer()
        self.runner.start("embed", embed_task, self.holder, spec, on_event=self._on_embed_event,
                          on_done=self._on_embed_done)
        self.task_started("embed")

    def _on_embed_event(self, event) -> None:
        if isinstance(event, Status):
            self.report(event.text, False)
        elif isinstance(event, Failed):
            self.report(f"Embedding failed: {event.message}", True)
        elif isinstance(event, Progress):
            role = event.stage.partition(":")[2] or event.stage
            self.show_progress(f"Embeddings ({role})", event.done, event.total)

    def _on_embed_done(self, task) -> None:
        if task.cancelled:
            self.report(f"Embedding stopped ({task.reason}); finished frames stay cached",
                        task.reason != "cancelled by the user")
        elif task.failed is None:
            self.report("Embeddings ready", False)
        self.task_finished("embed")

    def cancel(self) -> None:
        """Stop the running embedding, propagation and download (what they wrote is kept)."""
        if not self.runner.cancel_all(LONG_TASKS, "cancelled by the user"):
            self.report("Nothing to cancel", False)

    # ------------------------------------------------------------------ actions (see bindings.KEYS)
    def new_prompt_layers(self):
        """Add a Points layer (positive / negative clicks) and a Shapes layer (boxes)."""
        return self.prompts.new_prompt_layers()

    def commit(self) -> bool:
        """Commit the previewed object into the labels layer."""
        return self.objects.commit()

    def undo_click(self) -> None:
        """Remove the last click."""
        if self.prompts.remove_last_click():
            self.report("Removed the last click", False)
        else:
            self.report("No click to undo", True)

    def undo_commit(self) -> None:
        self.objects.undo_commit()

    def new_object(self) -> None:
        self.objects.new_object()

    def propagate(self, direction: str = "both") -> None:
        self.objects.propagate(direction)

    def toggle_polarity(self) -> None:
        self.prompts.toggle_polarity()

    def set_negative_click(self, indices) -> None:
        self.prompts.set_negative(indices)

    # ------------------------------------------------------------------ layers and closing
    def _on_layer_removed(self, event) -> None:
        layer = event.value
        for name, layers in (("propagate", self.objects.propagation_layers()),
                             ("embed", (self._embed_image,))):
            if self.runner.running(name) and any(layer is other for other in layers):
                kind = "labels" if isinstance(layer, Labels) else "image"
                self.runner.cancel(name, f"the {kind} layer '{layer.name}' was removed")
        if layer is self.live.layer:
            self.live.layer = None
        self.live.schedule()

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            self._watch_window()
        return super().event(event)

    def _watch_window(self) -> None:
        if self.parent() is None:
            if self._docked:  # taken out of its dock widget: napari removed it
                self.shutdown()
            return
        self._docked = True
        window = self.window()
        if window is not self and window is not self._watched:
            if self._watched is not None:
                self._watched.removeEventFilter(self)
            window.installEventFilter(self)
            self._watched = window

    def eventFilter(self, obj, event) -> bool:
        if obj is self._watched and event.type() == QEvent.Type.Close:
            self.shutdown()
        return False

    def shutdown(self) -> None:
        """Stop every worker and unbind the keys (the widget or the viewer is closing)."""
        self.live.stop()
        self.runner.shutdown()
        self.prompts.detach()
