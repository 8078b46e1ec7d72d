"""Model choices with their weights' status, download (with progress) and local checkpoint files."""

from __future__ import annotations

import logging
import os

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QToolButton,
    QWidget,
)

from ..api.models import RANDOM_WEIGHTS
from ..families import ModelChoiceError, Role, model_menu
from .layout import ElidingComboBox
from .session import ModelChoice
from .status import Messages
from .tasks import Failed, download_weights
from .workers import Task, TaskRunner

__all__ = ["ENV_RANDOM_WEIGHTS", "ModelsBox", "weights_label"]

logger = logging.getLogger(__name__)

#: Set to 1 to start the widget with random weights (tests, demos: masks are meaningless).
ENV_RANDOM_WEIGHTS = "NAPARI_FOCSAM_RANDOM_WEIGHTS"

#: Item-data role of a model entry's plain name (the text also shows the weights' status).
_NAME_ROLE = 257  # Qt.UserRole + 1


def env_flag(name: str) -> bool:
    """Whether environment variable `name` is set to a true value (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def weights_label(model_id: str, random: bool) -> str:
    """``cached`` / ``missing`` / ``unverified`` / ``random`` for a combo entry."""
    if random:
        return "random"
    from ..weights import WEIGHTS, weights_status

    if model_id not in WEIGHTS:
        return "local file only"
    try:
        return weights_status(model_id)
    except OSError as exc:  # unreadable cache folder
        logger.debug("weights status of %s: %s", model_id, exc)
        return "unknown"


class _Relay(QObject):
    """Carries download progress from the worker thread to the GUI thread."""

    progress = Signal(object, object)


class _LocalFile(QWidget):
    """A checkpoint path: a line edit (the full path as tooltip) and a "…" browse button.

    Signals
    -------
    changed()
        The path was edited or chosen.
    """

    changed = Signal()

    def __init__(self, what: str, parent=None) -> None:
        super().__init__(parent)
        self._what = what
        self._stash = ""
        self.edit = QLineEdit()
        self.edit.setClearButtonEnabled(True)
        self.edit.setMinimumWidth(60)
        self.browse = QToolButton()
        self.browse.setText("…")
        self.browse.setToolTip(f"Choose a local checkpoint file for the {what} model")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(self.browse)
        self.edit.editingFinished.connect(self._on_edited)
        self.edit.textChanged.connect(self._update_tooltip)
        self.browse.clicked.connect(self._browse)
        self.edit.setPlaceholderText(self._placeholder(True))
        self._update_tooltip("")

    def path(self) -> str | None:
        return self.edit.text().strip() or None

    def set_path(self, path: str) -> None:
        self.edit.setText(path)
        self.edit.setCursorPosition(len(path))  # the file name shows, not the folders
        self.changed.emit()

    def set_usable(self, usable: bool) -> None:
        """Enable the choice, or disable and empty it (the path comes back when re-enabled)."""
        if usable == self.edit.isEnabled():
            return
        if usable:
            self.edit.setText(self._stash)
            self._stash = ""
        else:
            self._stash = self.edit.text()
            self.edit.clear()
        self.edit.setEnabled(usable)
        self.browse.setEnabled(usable)
        self.edit.setPlaceholderText(self._placeholder(usable))

    @staticmethod
    def _placeholder(usable: bool) -> str:
        return "optional: a local checkpoint file" if usable else "not used with random weights"

    def _update_tooltip(self, text: str) -> None:
        self.edit.setToolTip(f"In use: {text}" if text.strip() else
                             f"Optional: a checkpoint file for the {self._what} model (e.g. "
                             "fine-tuned weights) instead of the downloaded one")

    def _on_edited(self) -> None:
        self.edit.setCursorPosition(len(self.edit.text()))
        self.changed.emit()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Checkpoint of the {self._what} model", "",
                                              "Checkpoints (*.pt *.pth *.zip);;All files (*)")
        if path:
            self.set_path(path)


class ModelsBox(QWidget):
    """Interactive and propagation model combos, their weights (download, local files), and
    the random-weights switch.

    The combos list the registry's models of each role (`families.model_menu`), and in
    random-weights mode the families' tiny test configs too. A model's entry says where its
    weights come from (``cached``, ``missing``, ``local file``, ``random``...).

    Parameters
    ----------
    runner : TaskRunner
        Runs weight downloads.
    messages : Messages
    random_weights : bool, optional
        Initial state of the random-weights switch (default: ``$NAPARI_FOCSAM_RANDOM_WEIGHTS``).

    Signals
    -------
    changed()
        A model, its weights or the random-weights switch changed.
    """

    changed = Signal()

    def __init__(self, runner: TaskRunner, messages: Messages, *, random_weights: bool | None = None,
                 parent=None) -> None:
        super().__init__(parent)
        self.runner = runner
        self._messages = messages
        self._relay = _Relay(self)
        self._relay.progress.connect(self._on_progress)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.interactive_combo = ElidingComboBox()
        self.interactive_combo.setToolTip("Model that draws an object from your clicks / box")
        self.propagation_combo = ElidingComboBox()
        self.propagation_combo.setToolTip("SAM 2 model that carries objects through z / t (loaded "
                                          "when you first propagate)")
        self.download_button = QPushButton("Download")
        self.download_button.setToolTip("Download the interactive model's weights into the cache")
        self.propagation_download = QPushButton("Download")
        self.propagation_download.setToolTip("Download the propagation model's weights")
        self.download_bar = QProgressBar()
        self.download_bar.setVisible(False)
        self.interactive_file = _LocalFile("interactive")
        self.propagation_file = _LocalFile("propagation")
        #: The interactive model's local-file line edit.
        self.local_file = self.interactive_file.edit
        for label, widgets in (("Interactive", (self.interactive_combo, self.download_button)),
                               ("", (self.download_bar,)), ("Local file", (self.interactive_file,)),
                               ("Propagation", (self.propagation_combo, self.propagation_download)),
                               ("Local file", (self.propagation_file,))):
            row = QHBoxLayout()
            for i, widget in enumerate(widgets):
                row.addWidget(widget, 1 if i == 0 else 0)
            form.addRow(label, row)
        self.random_check = QCheckBox("random weights (tests / demos)")
        self.random_check.setToolTip("Tiny test models with random weights: every button works, "
                                     "the masks are meaningless")
        self.random_check.setChecked(env_flag(ENV_RANDOM_WEIGHTS) if random_weights is None
                                     else bool(random_weights))
        self._fill()
        for combo in (self.interactive_combo, self.propagation_combo):
            combo.currentIndexChanged.connect(self._emit_changed)
        for local in (self.interactive_file, self.propagation_file):
            local.changed.connect(self._emit_changed)
        self.random_check.toggled.connect(self._on_random)
        self.download_button.clicked.connect(lambda: self.download(self.interactive_combo.currentData()))
        self.propagation_download.clicked.connect(
            lambda: self.download(self.propagation_combo.currentData()))

    # ------------------------------------------------------------------ choices
    @property
    def random_weights(self) -> bool:
        return self.random_check.isChecked()

    def interactive_choice(self) -> ModelChoice:
        return self._choice(self.interactive_combo, self.interactive_file)

    def propagation_choice(self) -> ModelChoice:
        return self._choice(self.propagation_combo, self.propagation_file)

    def _choice(self, combo, local: _LocalFile) -> ModelChoice:
        if self.random_weights:
            return ModelChoice(combo.currentData(), RANDOM_WEIGHTS)
        return ModelChoice(combo.currentData(), local.path())

    def set_local_file(self, path: str, role: str = "interactive") -> None:
        """Use checkpoint file `path` for the model of `role` (as the "…" button does)."""
        (self.interactive_file if role == "interactive" else self.propagation_file).set_path(path)

    def select_models(self, interactive: str | None = None, propagation: str | None = None) -> None:
        """Select models by id (e.g. ``"sam_test_tiny"`` in random-weights mode)."""
        for combo, model_id in ((self.interactive_combo, interactive),
                                (self.propagation_combo, propagation)):
            if model_id is not None:
                index = combo.findData(model_id)
                if index < 0:
                    raise ModelChoiceError(f"{model_id!r} is not offered (random-weights mode lists "
                                           "the test-tiny models)")
                combo.setCurrentIndex(index)

    def refresh_weights(self) -> None:
        """Update the weight status shown after each model's name, and the Download buttons."""
        random = self.random_weights
        downloading = self.runner.running("download")
        for combo, local, button in ((self.interactive_combo, self.interactive_file,
                                      self.download_button),
                                     (self.propagation_combo, self.propagation_file,
                                      self.propagation_download)):
            local.set_usable(not random)
            for i in range(combo.count()):
                name = combo.itemData(i, _NAME_ROLE) or combo.itemText(i)
                status = weights_label(combo.itemData(i), random)
                if i == combo.currentIndex() and local.path() and not random:
                    status = "local file"
                combo.setItemText(i, f"{name} — {status}")
            status = weights_label(combo.currentData(), random)
            button.setEnabled(status in ("missing", "unverified") and not downloading)

    def enterEvent(self, event) -> None:
        """Files may have changed outside (a download by the CLI, a damaged file deleted)."""
        self.refresh_weights()
        super().enterEvent(event)

    def _fill(self) -> None:
        random = self.random_weights
        for combo, role in ((self.interactive_combo, Role.INTERACTIVE),
                            (self.propagation_combo, Role.PROPAGATION)):
            previous = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            menu = model_menu(role, with_test_configs=random)
            for entry in menu:
                combo.addItem(entry.label, entry.model_id)
                combo.setItemData(combo.count() - 1, entry.label, _NAME_ROLE)
                combo.setItemData(combo.count() - 1, entry.description,
                                  Qt.ItemDataRole.ToolTipRole)
            default = next((e.model_id for e in menu if e.suggested), None)
            combo.setCurrentIndex(max(combo.findData(previous if previous is not None else default),
                                      0))
            combo.blockSignals(False)
        self.refresh_weights()

    def _on_random(self, _checked: bool) -> None:
        self._fill()
        self._emit_changed()

    def _emit_changed(self, *_args) -> None:
        self.refresh_weights()
        self.changed.emit()

    # ------------------------------------------------------------------ download
    def download(self, model_id: str) -> None:
        """Download `model_id`'s weights in a worker, showing the progress."""
        if self.runner.running("download"):
            self._messages.error("A download is already running")
            return
        self.download_bar.setRange(0, 0)
        self.download_bar.setVisible(True)
        self._messages.info(f"Downloading {model_id}…")
        self.runner.start("download", download_weights, model_id, self._relay.progress.emit,
                          on_event=self._on_event, on_done=self._on_done,
                          during=f"the download of {model_id}")
        self.refresh_weights()

    def _on_progress(self, done, total) -> None:
        if total:
            self.download_bar.setRange(0, 1000)
            self.download_bar.setValue(int(1000 * min(1.0, done / total)))
            self.download_bar.setFormat(f"%p% of {total / 2**20:.0f} MiB")
        else:
            self.download_bar.setRange(0, 0)

    def _on_event(self, event) -> None:
        if isinstance(event, Failed) and event.cancelled:
            self._messages.info(event.message)
        elif isinstance(event, Failed):
            self._messages.error(f"Download failed: {event.message}")
        else:
            self._messages.info(f"Downloaded {event}")

    def _on_done(self, _task: Task) -> None:
        self.download_bar.setVisible(False)
        self.refresh_weights()
        self.changed.emit()
