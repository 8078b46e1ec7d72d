"""Status messages of the dock: their severity, and the hub panels and controllers post them to."""

from __future__ import annotations

import enum
import logging

from qtpy.QtCore import QObject, Signal

__all__ = ["Messages", "Severity"]

logger = logging.getLogger(__name__)


class Severity(enum.Enum):
    """How a status message is shown."""

    INFO = "info"  # the status line
    ERROR = "error"  # the status line in red, and a napari notification


class Messages(QObject):
    """Where the dock's parts post status messages (the dock shows them).

    Signals
    -------
    posted(str, Severity)
        A message and how to show it.
    """

    posted = Signal(str, object)

    def info(self, text: str) -> None:
        """Post `text` as information."""
        self._post(text, Severity.INFO)

    def error(self, text: str) -> None:
        """Post `text` as an error (something the user has to act on)."""
        self._post(text, Severity.ERROR)

    def _post(self, text: str, severity: Severity) -> None:
        try:
            self.posted.emit(text, severity)
        except RuntimeError:  # the dock was deleted
            logger.debug("FocSAM message after the dock was deleted: %s", text)
