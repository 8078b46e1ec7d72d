"""The error tree of napari-focsam and the log file internal errors are written to.

Every error raised on purpose derives from `FocSamError`. Those caused by what the user gave
(files, choices, prompts, settings, the environment they chose) derive from `UserError`: their
message is meant for the user as it is. `Cancelled` ends work the user (or the closing of a
window) stopped. Anything else reaching the GUI or the CLI is a programming error: it is
reported as an internal error, with the path of the log file holding its traceback
(`report_internal_error`).

The GUI and the CLI each map this tree once (``_qt.tasks.describe_error``, ``cli.exits``).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

__all__ = ["ENV_LOG_FILE", "Cancelled", "FocSamError", "MissingFileError", "UserError", "log_file",
           "report_internal_error"]

logger = logging.getLogger("napari_focsam")

#: Overrides where internal errors are logged (default: the user log folder).
ENV_LOG_FILE = "NAPARI_FOCSAM_LOG_FILE"
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s"
_handler_lock = threading.Lock()


class FocSamError(Exception):
    """Base of every error napari-focsam raises on purpose."""


class UserError(FocSamError):
    """A problem with what the user gave or chose; the message says what and how to fix it."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class Cancelled(FocSamError):
    """Work stopped on request (a Cancel button, Ctrl-C, a closing window)."""


def log_file() -> Path:
    """The file internal errors are logged to: ``$NAPARI_FOCSAM_LOG_FILE``, else
    ``<user log dir>/napari-focsam.log``."""
    env = os.environ.get(ENV_LOG_FILE, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_log_dir("napari-focsam")) / "napari-focsam.log"


def _file_handler(path: Path) -> logging.Handler | None:
    """The package logger's handler writing to `path` (added on first use), or None when the
    file cannot be opened."""
    with _handler_lock:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path:
                return handler
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8", delay=False)
        except OSError:
            return None
        handler.setLevel(logging.ERROR)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        logger.addHandler(handler)
        return handler


def report_internal_error(exc: BaseException, during: str) -> str:
    """Log `exc` with its traceback to `log_file` and return the line to show the user.

    Parameters
    ----------
    exc : BaseException
        An error that is not a `FocSamError` (a bug, or an unexpected library failure).
    during : str
        What was being done, e.g. ``"the preview"``.

    Returns
    -------
    str
        ``"internal error during <during> (<type>: <message>); please report it with the log
        file <path>"`` (without the path when the log file cannot be written).
    """
    path = log_file()
    handler = _file_handler(path)
    logger.error("internal error during %s", during, exc_info=exc)
    if handler is not None:
        handler.flush()
    where = f" with the log file {path}" if handler is not None else ""
    return (f"internal error during {during} ({type(exc).__name__}: {exc}); please report "
            f"it{where}")
