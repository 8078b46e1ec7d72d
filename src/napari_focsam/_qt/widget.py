"""`FocSamWidget`: click objects, preview them live, commit them into labels, propagate them;
segment every object of a slice or a stack automatically ("Segment all"); track every object
of a time-lapse ("Track all").

All model work runs in worker threads (`workers.TaskRunner`); the GUI thread only maps
prompts, paints masks and updates the controls. The sections scroll vertically; the progress
bar, Cancel and the status line stay below them, always in view.
"""

from __future__ import annotations

import logging
from functools import partial

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

from .bindings import HELP, PromptBindings
from .controller import LONG_TASKS, SegmentationController
from .everything_panel import EverythingPanel, SegmentAll
from .layout import StatusLabel, VerticalScrollArea
from .objects_panel import ObjectsPanel
from .prompts_panel import PromptsPanel
from .propagation import PropagationController
from .setup_panel import SetupPanel
from .status import Severity
from .track_all_panel import TrackAllController, TrackAllPanel
from .workers import TaskRunner

__all__ = ["FocSamWidget"]

logger = logging.getLogger(__name__)

#: Tasks whose progress the progress bar shows.
PROGRESS_TASKS = ("embed", "propagate", "everything", "track")


def _shutdown(runner: TaskRunner, *_args) -> None:
    runner.shutdown()


class FocSamWidget(QWidget):
    """The FocSAM segmentation dock widget.

    Composes the sections (`SetupPanel`, `PromptsPanel`, `ObjectsPanel`, `EverythingPanel`,
    `TrackAllPanel`), the `SegmentationController`, the `PropagationController`, `SegmentAll`
    and `TrackAllController`, and connects their signals; it shows the status messages and the
    progress of long tasks.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    random_weights : bool, optional
        Use random weights (tests, demos; masks are meaningless). Default: the
        ``NAPARI_FOCSAM_RANDOM_WEIGHTS`` environment variable.
    cache_root : path, None or False
        Embedding disk cache (None: the default folder; False: RAM only).
    encode_ahead : bool
        Build the model and encode the slice being viewed as soon as an image and a model with
        weights are chosen, so the first click only decodes (its progress shows under Setup).
    """

    def __init__(self, napari_viewer, *, random_weights: bool | None = None, cache_root=None,
                 encode_ahead: bool = True, parent=None) -> None:
        super().__init__(parent)
        # napari hands plugin widgets a PublicOnlyProxy of the viewer, whose layers are proxies
        # too: identity checks against layers from napari's own events (``event.value``) would
        # fail. FocSAM uses public API only, so it works with the viewer itself.
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self._watched = None
        self._docked = False
        self.controller = controller = SegmentationController(
            self.viewer, cache_root=cache_root, encode_ahead=encode_ahead, parent=self)
        self.propagation = PropagationController(self.viewer, controller, parent=self)
        self.setup = SetupPanel(self.viewer, controller.runner, controller.messages,
                                random_weights=random_weights)
        self.embed_button = QPushButton("Compute embeddings")
        self.embed_button.setToolTip("Encode every frame now (otherwise the slice being viewed is "
                                     "encoded once an image and a model are chosen, or when you "
                                     "first click on it)")
        #: What encoding ahead of the first click does ("building…", "encoding slice z=…").
        self.prepare_label = StatusLabel(max_lines=3)  # a QLabel's word wrap clipped its 2nd line
        self.prepare_label.setStyleSheet("color: gray;")
        self.prepare_label.setVisible(False)
        self.prompts = PromptsPanel(self.viewer, controller.messages, controller.image_layer)
        self.objects = ObjectsPanel(self.viewer, controller, self.propagation)
        self.segment_all = SegmentAll(self.viewer, controller, target_layer=self.objects.target_layer,
                                      new_target_layer=self.objects.new_labels_layer, parent=self)
        self.everything = EverythingPanel(self.segment_all)
        self.track_all = TrackAllController(self.viewer, controller,
                                            discover_overrides=self.everything.overrides,
                                            parent=self)
        self.track_panel = TrackAllPanel(self.track_all)
        self.bindings = PromptBindings({
            "toggle_polarity": self.prompts.toggle_polarity, "undo_click": self.prompts.undo_click,
            "set_negative_click": self.prompts.set_negative, "commit": self.objects.commit,
            "new_object": self.objects.new_object})
        sections = QWidget()
        inner_layout = QVBoxLayout(sections)
        inner_layout.setContentsMargins(0, 0, 4, 0)
        for title, widgets in (("Setup", (self.setup, self.embed_button, self.prepare_label)),
                               ("Prompts", (self.prompts,)), ("Objects", (self.objects,)),
                               ("Segment all", (self.everything,)),
                               ("Track all", (self.track_panel,))):
            box = QGroupBox(title)
            inner = QVBoxLayout(box)
            for widget in widgets:
                inner.addWidget(widget)
            inner_layout.addWidget(box)
        self.help_label = QLabel(HELP)
        self.help_label.setWordWrap(True)
        self.help_label.setStyleSheet("color: gray;")
        inner_layout.addWidget(self.help_label)
        inner_layout.addStretch(1)
        self.scroll = VerticalScrollArea(sections, max_hint_height=520)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.scroll, 1)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.cancel_button = QPushButton("Cancel")
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.status_label = StatusLabel("Choose an image, click 'New prompt layers', then click on "
                                        "an object.")
        layout.addWidget(self.status_label)

        self.embed_button.clicked.connect(controller.compute_embeddings)
        self.cancel_button.clicked.connect(controller.cancel)
        controller.messages.posted.connect(self._show_message)
        controller.progress.connect(self._show_progress)
        controller.preparing.connect(self._show_preparing)
        self.propagation.progress.connect(self._show_progress)
        self.segment_all.progress.connect(self._show_progress)
        self.track_all.progress.connect(self._show_progress)
        controller.runner.task_started.connect(self._on_task_started)
        controller.runner.task_finished.connect(self._on_task_finished)
        controller.runner.task_cancelling.connect(self._update_task_buttons)
        self.setup.changed.connect(controller.set_choices)
        self.prompts.prompts_changed.connect(controller.live.schedule)
        self.prompts.layers_changed.connect(controller.set_prompt_layers)
        self.prompts.layer_chosen.connect(self.bindings.attach)
        self.objects.current_object_changed.connect(controller.set_object)
        self.objects.committed.connect(self.prompts.remove)
        self.objects.undo_click_requested.connect(self.prompts.undo_click)
        controller.set_choices(self.setup.choices())
        self.destroyed.connect(partial(_shutdown, controller.runner))
        self._update_task_buttons()

    # ------------------------------------------------------------------ status and progress
    def _show_message(self, text: str, severity: Severity) -> None:
        """Show `text` in the status line (errors in red, and as a napari notification)."""
        error = severity is Severity.ERROR
        try:
            self.status_label.setText(text)
            self.status_label.setStyleSheet("color: #ff6060;" if error else "")
        except RuntimeError:  # the widget was deleted
            return
        if error:
            logger.warning("FocSAM: %s", text)
            from napari.utils.notifications import show_error

            show_error(f"FocSAM: {text}")
        else:
            logger.info("FocSAM: %s", text)

    def _show_preparing(self, text: str) -> None:
        try:
            self.prepare_label.setText(text)
            self.prepare_label.setVisible(bool(text))
        except RuntimeError:  # the widget was deleted
            return
        if text:
            logger.info("FocSAM: %s", text)

    def _show_progress(self, text: str, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(done, max(total, 1)))
        self.progress.setFormat(f"{text}: {done}/{total}")

    def _on_task_started(self, name: str) -> None:
        if name in PROGRESS_TASKS:
            self.progress.setRange(0, 0)
        self._update_task_buttons()

    def _on_task_finished(self, _name: str) -> None:
        if not any(self.controller.runner.running(n) for n in PROGRESS_TASKS):
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("")
        self._update_task_buttons()

    def _update_task_buttons(self, *_args) -> None:
        runner = self.controller.runner
        self.embed_button.setEnabled(not runner.running("embed"))
        # disabled once asked to stop, until every task has stopped
        self.cancel_button.setEnabled(any(runner.cancellable(n) for n in LONG_TASKS))

    # ------------------------------------------------------------------ closing
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
        self.controller.shutdown()
        self.bindings.detach_all()
