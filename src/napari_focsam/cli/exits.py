"""How a ``napari-focsam`` command ends: the exit-code table and the one mapping onto it.

A command is ``args.func(args)``; `run_command` calls it and turns whatever it raises into a
message on stderr and an exit code read from `EXIT_CODES`. Errors users cause
(`napari_focsam.errors.UserError`, unreadable or unwritable files) are printed as they are;
anything else is a bug: one line points to the log file holding its traceback
(`napari_focsam.errors.report_internal_error`), exit 70.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import report_internal_error

__all__ = ["EXIT_CODES", "Exit", "ExitRule", "configure_logging", "deferring_interrupts",
           "exit_code", "exit_codes_epilog", "ignoring_interrupts", "run_command"]

logger = logging.getLogger(__name__)


class Exit(enum.IntEnum):
    """The exit codes of ``napari-focsam``."""

    OK = 0
    INPUT = 2
    DOWNLOAD = 3
    VERIFY = 4
    OFFLINE = 5
    CACHE = 6
    INTERNAL = 70
    INTERRUPTED = 130


@dataclass(frozen=True)
class ExitRule:
    """One row of the exit-code table.

    Attributes
    ----------
    code : Exit
    meaning : str
        One line for ``napari-focsam --help``.
    errors : tuple of str
        ``"module:Class"`` of the errors exiting with `code` (subclasses included). Named, not
        imported, so that this table costs nothing to import (``store`` imports torch).
    """

    code: Exit
    meaning: str
    errors: tuple[str, ...] = ()

    def loaded_classes(self) -> tuple[type[BaseException], ...]:
        """The classes of `errors` whose modules are imported (an exception of a class whose
        module was never imported cannot exist)."""
        classes = []
        for name in self.errors:
            module, _, attr = name.partition(":")
            cls = getattr(sys.modules.get(module), attr, None)
            if cls is not None:
                classes.append(cls)
        return tuple(classes)


#: Every exit code, its meaning and the errors that end with it. An error takes the code of the
#: most specific class listed (`exit_code`); an error not listed is internal.
EXIT_CODES: tuple[ExitRule, ...] = (
    ExitRule(Exit.OK, "done"),
    ExitRule(Exit.INPUT, "bad input (file, option, model, prompts); a file that cannot be read "
                         "or written",
             ("napari_focsam.errors:UserError", "builtins:OSError")),
    ExitRule(Exit.DOWNLOAD, "a checkpoint download failed", ("napari_focsam.weights:DownloadError",)),
    ExitRule(Exit.VERIFY, "a checkpoint failed verification (SHA-256 mismatch, wrong file...)",
             ("napari_focsam.weights:WeightsVerificationError",)),
    ExitRule(Exit.OFFLINE, "offline and the checkpoint is not cached",
             ("napari_focsam.weights:WeightsNotAvailableError",)),
    ExitRule(Exit.CACHE, "the embedding cache cannot be used (disk full, no write access...)",
             ("napari_focsam.store:CacheError",)),
    ExitRule(Exit.INTERNAL, "internal error (a bug): please report it with the log file it names"),
    ExitRule(Exit.INTERRUPTED, "interrupted (Ctrl-C); says what was (not) written",
             ("builtins:KeyboardInterrupt", "napari_focsam.errors:Cancelled")),
)


def exit_code(exc: BaseException) -> Exit:
    """The exit code of a command that raised `exc`: the row of `EXIT_CODES` naming the most
    specific class of `exc` (the first in its MRO), else `Exit.INTERNAL`."""
    codes = {cls: rule.code for rule in EXIT_CODES for cls in rule.loaded_classes()}
    for cls in type(exc).__mro__:
        if cls in codes:
            return codes[cls]
    return Exit.INTERNAL


def exit_codes_epilog() -> str:
    """`EXIT_CODES` as the ``--help`` epilog."""
    return "exit codes:\n" + "\n".join(f"  {rule.code:<4} {rule.meaning}" for rule in EXIT_CODES)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command (``args.func(args)``) and map what it raises to an exit code.

    Parameters
    ----------
    args : argparse.Namespace
        From a parser whose defaults set ``func`` (the command), ``during`` (its name, for
        internal-error reports) and ``interrupted`` (what an interruption leaves behind).

    Returns
    -------
    int
        ``args.func(args)``'s code, or the code of its error (`exit_code`); the error is
        printed as one ``napari-focsam: ...`` line on stderr.
    """
    try:
        with deferring_interrupts():  # Ctrl-C inside an extension's import can abort the process
            for module in getattr(args, "preload", ()):
                importlib.import_module(module)
        return int(args.func(args))
    except (Exception, KeyboardInterrupt) as exc:
        code = exit_code(exc)
        if code is Exit.INTERRUPTED:
            message = f"interrupted; {args.interrupted}"
        elif code is Exit.INTERNAL:
            message = report_internal_error(exc, during=args.during)
        else:
            message = f"error: {exc}"
            logger.debug("details", exc_info=exc)
        sys.stderr.write(f"napari-focsam: {message}\n")
        return int(code)


@contextlib.contextmanager
def deferring_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) inside the block, in the main thread, and raise `KeyboardInterrupt`
    when it ends if one came: for imports of compiled extensions (torch), where an interrupt
    can abort the interpreter or leave it exiting by SIGINT whatever the exit code. Elsewhere
    (other threads) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def ignoring_interrupts() -> Iterator[None]:
    """Ignore Ctrl-C (SIGINT) inside the block, in the main thread: for what follows a complete
    output, so an interruption can neither lie ("nothing written") nor turn success into a
    failure. Elsewhere (other threads) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _ConsoleFormatter(logging.Formatter):
    """One line per record: tracebacks belong in the log file, not on the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info = record.exc_text = None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text = saved


def _not_an_internal_error_report(record: logging.LogRecord) -> bool:
    # `report_internal_error` logs on the package logger itself, with the traceback;
    # `run_command` prints its own line for it.
    return not (record.name == "napari_focsam" and record.exc_info)


def configure_logging(verbose: bool) -> None:
    """Log to stderr, one line per record, at INFO with `verbose` else WARNING (no-op when
    logging is already configured, as `logging.basicConfig`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ConsoleFormatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_not_an_internal_error_report)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
