"""The exit-code table and the errors of every subcommand: user errors keep their codes, any
other exception is an internal error (exit 70) whose traceback goes to the log file."""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys

import pytest
from cli_helpers import leaf_parsers

from napari_focsam.cli import build_parser, main
from napari_focsam.cli.exits import EXIT_CODES, Exit, exit_code, exit_codes_epilog
from napari_focsam.errors import Cancelled, FocSamError, MissingFileError, UserError

TABLE = [(rule.code, name) for rule in EXIT_CODES for name in rule.errors]


def _class(name: str) -> type[BaseException]:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def _instance(cls: type[BaseException]) -> BaseException:
    return cls.__new__(cls)  # without __init__: some take several arguments


@pytest.mark.parametrize("code, name", TABLE, ids=[name for _, name in TABLE])
def test_each_class_of_the_table_maps_to_its_code(code, name):
    assert exit_code(_instance(_class(name))) is code


@pytest.mark.parametrize("name, code", [
    ("napari_focsam.weights:HashMismatchError", Exit.VERIFY),
    ("napari_focsam.weights:UnknownModelError", Exit.INPUT),
    ("napari_focsam.store:CacheWriteError", Exit.CACHE),
    ("napari_focsam.store:CacheMismatchError", Exit.CACHE),
    ("napari_focsam.api.prompts_file:PromptsFileError", Exit.INPUT),
    ("builtins:FileNotFoundError", Exit.INPUT),
    ("builtins:PermissionError", Exit.INPUT),
    ("builtins:IsADirectoryError", Exit.INPUT),
])
def test_subclasses_take_the_code_of_their_closest_listed_base(name, code):
    assert exit_code(_instance(_class(name))) is code


@pytest.mark.parametrize("exc, code", [
    (MissingFileError("x"), Exit.INPUT),  # a UserError and an OSError: both say bad input
    (UserError("x"), Exit.INPUT),
    (Cancelled(), Exit.INTERRUPTED),
    (KeyboardInterrupt(), Exit.INTERRUPTED),
    (KeyError("boom"), Exit.INTERNAL),
    (ValueError("bug"), Exit.INTERNAL),
    (IndexError("bug"), Exit.INTERNAL),
    (RuntimeError("bug"), Exit.INTERNAL),
    (FocSamError("raised on purpose, but not the user's doing"), Exit.INTERNAL),
])
def test_errors_not_listed_are_internal(exc, code):
    assert exit_code(exc) is code


def test_the_table_lists_every_code_once_and_the_help_shows_it(capsys):
    assert sorted(rule.code for rule in EXIT_CODES) == sorted(Exit)
    epilog = exit_codes_epilog()
    for rule in EXIT_CODES:
        assert f"  {int(rule.code):<4} {rule.meaning}" in epilog
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert epilog in capsys.readouterr().out


@pytest.fixture
def log_file(tmp_path, monkeypatch):
    """``$NAPARI_FOCSAM_LOG_FILE`` in `tmp_path`; its handler is closed afterwards."""
    path = tmp_path / "logs" / "focsam.log"
    monkeypatch.setenv("NAPARI_FOCSAM_LOG_FILE", str(path))
    yield path
    logger = logging.getLogger("napari_focsam")
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler) and handler.baseFilename == str(path):
            logger.removeHandler(handler)
            handler.close()


def _boom(*args, **kwargs):
    raise KeyError("boom")


#: argv of every subcommand, and a function it calls (patched to fail as a bug would).
BUGS = {
    "weights list": (["weights", "list"], "napari_focsam.cli.weights.list_specs"),
    "weights download": (["weights", "download", "sam_vit_b"],
                         "napari_focsam.cli.weights.fetch_weights"),
    "weights verify": (["weights", "verify", "sam_vit_b"], "napari_focsam.cli.weights.get_spec"),
    "weights path": (["weights", "path", "sam_vit_b"], "napari_focsam.cli.weights.get_spec"),
    "embed": (["embed", "stack.tif"], "napari_focsam.cli.embed.build_segmenter"),
    "segment": (["segment", "stack.tif", "--prompts", "p.csv", "-o", "out.tif"],
                "napari_focsam.api.prompts_file.read_prompts"),
    "propagate": (["propagate", "stack.tif", "--prompts", "p.csv", "-o", "out.tif"],
                  "napari_focsam.api.prompts_file.read_prompts"),
    "track": (["track", "stack.tif", "-o", "out.tif"], "napari_focsam.api.io.open_image"),
    "evaluate": (["evaluate", "--model", "sam_test_tiny", "--dataset", "grabcut",
                  "--dataset-dir", "data", "--out", "out"], "napari_focsam.evaluation.run.run_noc"),
    "evaluate-stack": (["evaluate-stack", "--gt", "gt.tif", "--pred", "pred.tif", "--out", "out"],
                       "napari_focsam.api.io.open_image"),
    "bench all": (["bench", "all", "--quick", "--out", "out"],
                  "napari_focsam.benchmarks.suite.run_suite"),
    "bench sam": (["bench", "sam"], "napari_focsam.benchmarks.sam.run_sam_benchmark"),
    "bench focsam": (["bench", "focsam"], "napari_focsam.benchmarks.focsam.run_refiner_benchmark"),
    "bench sam2": (["bench", "sam2"], "napari_focsam.benchmarks.sam2.run_sam2_benchmark"),
    "bench sam2-memory": (["bench", "sam2-memory"],
                          "napari_focsam.benchmarks.sam2.run_memory_benchmark"),
    "bench track-memory": (["bench", "track-memory"],
                           "napari_focsam.benchmarks.track_memory.run_track_memory_benchmark"),
    "bench tiling": (["bench", "tiling"], "napari_focsam.benchmarks.tiling.run_tiling_benchmark"),
    "bench gui-click": (["bench", "gui-click"],
                        "napari_focsam.benchmarks.gui_click.run_gui_click_benchmark"),
}


@pytest.mark.parametrize("command", BUGS)
def test_a_bug_in_a_command_is_an_internal_error_with_the_log_file(command, log_file, capsys,
                                                                   monkeypatch):
    argv, target = BUGS[command]
    monkeypatch.setattr(target, _boom)
    assert main(argv) == 70
    err = capsys.readouterr().err
    assert err == (f"napari-focsam: internal error during {command} (KeyError: 'boom'); please "
                   f"report it with the log file {log_file}\n")
    logged = log_file.read_text(encoding="utf-8")
    assert "Traceback" in logged and "in _boom" in logged and "KeyError: 'boom'" in logged
    assert f"internal error during {command}" in logged


def test_every_subcommand_is_covered_by_the_bug_test():
    assert set(BUGS) == {name for name, _ in leaf_parsers(build_parser())}


_SUBPROCESS = """
import sys
import napari_focsam.cli.weights as weights

def broken():
    raise KeyError("boom")

weights.list_specs = broken
from napari_focsam.cli import main
sys.exit(main(["weights", "list"]))
"""


def test_the_terminal_gets_one_line_and_no_traceback(tmp_path):
    log = tmp_path / "focsam.log"
    env = {**os.environ, "NAPARI_FOCSAM_LOG_FILE": str(log)}
    done = subprocess.run([sys.executable, "-c", _SUBPROCESS], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 70
    assert done.stdout == ""
    assert done.stderr == ("napari-focsam: internal error during weights list (KeyError: 'boom'); "
                           f"please report it with the log file {log}\n")
    assert "Traceback" in log.read_text(encoding="utf-8")


def test_user_errors_keep_their_message_and_code(capsys):
    assert main(["weights", "path", "sam_vit_bb"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-focsam: error: unknown model 'sam_vit_bb'")
    assert "internal error" not in err


def test_missing_files_are_bad_input(tmp_path, capsys):
    code = main(["evaluate-stack", "--gt", str(tmp_path / "gt.tif"), "--pred",
                 str(tmp_path / "pred.tif"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert capsys.readouterr().err.startswith("napari-focsam: error: ")
    assert not (tmp_path / "out").exists()


def test_cancelled_is_an_interruption(capsys, monkeypatch):
    def cancelled(*args, **kwargs):
        raise Cancelled("stopped")

    monkeypatch.setattr("napari_focsam.cli.weights.fetch_weights", cancelled)
    assert main(["weights", "download", "sam_vit_b"]) == 130
    assert capsys.readouterr().err == ("napari-focsam: interrupted; nothing written (the partial "
                                       "download is deleted)\n")


_LOGGING = """
import logging, sys
from napari_focsam.cli.exits import configure_logging

configure_logging(verbose=sys.argv[1] == "-v")
logger = logging.getLogger("napari_focsam.probe")
logger.info("progress")
try:
    raise RuntimeError("inner")
except RuntimeError:
    logger.exception("a step failed")
"""


@pytest.mark.parametrize("verbose", [True, False])
def test_console_logging_is_one_line_per_record(verbose):
    done = subprocess.run([sys.executable, "-c", _LOGGING, "-v" if verbose else "-"],
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.splitlines()
    assert lines == ["INFO napari_focsam.probe: progress"] * verbose + [
        "ERROR napari_focsam.probe: a step failed"]  # no traceback on the terminal
