"""The ``napari-focsam`` parser: one registry of subcommands, each with its function."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cli_helpers import leaf_parsers, subparsers

from napari_focsam import __version__
from napari_focsam.cli import COMMANDS, build_parser, main

LEAVES = dict(leaf_parsers(build_parser()))


def test_the_registry_adds_one_command_per_module():
    names = list(subparsers(build_parser()))
    assert names == ["weights", "embed", "segment", "propagate", "track", "evaluate",
                     "evaluate-stack", "bench"]
    assert len(COMMANDS) == len(names)
    assert set(LEAVES) == {"weights list", "weights download", "weights verify", "weights path",
                           "embed", "segment", "propagate", "track", "evaluate",
                           "evaluate-stack", "bench all", "bench sam", "bench focsam",
                           "bench sam2", "bench sam2-memory", "bench track-memory", "bench gui-click",
                           "bench tiling"}


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_every_command_has_its_function_and_shows_in_help(command, capsys):
    parser = LEAVES[command]
    assert callable(parser.get_default("func"))
    assert parser.get_default("during") == command
    assert parser.get_default("interrupted")
    *parents, name = command.split()
    with pytest.raises(SystemExit) as info:
        main([*parents, "--help"])
    assert info.value.code == 0
    assert name in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main([*command.split(), "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: napari-focsam {command}")


def test_each_command_runs_its_own_function():
    parser = build_parser()
    argv = {"bench sam": ["bench", "sam"], "bench sam2": ["bench", "sam2"],
            "weights path": ["weights", "path", "x"], "weights list": ["weights", "list"]}
    funcs = {name: parser.parse_args(words).func for name, words in argv.items()}
    assert len(set(funcs.values())) == len(funcs)
    assert all(funcs[name] is LEAVES[name].get_default("func") for name in argv)


def test_a_command_is_required():
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_module_entry_point_reports_version():
    done = subprocess.run([sys.executable, "-m", "napari_focsam", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"napari-focsam {__version__}"


_PROBE = """
import json, sys
from napari_focsam.cli import build_parser, main
build_parser().format_help()
code = main(["weights", "path", "sam_vit_b"])
print(json.dumps([code, sorted(sys.modules)]))
"""


def test_the_parser_and_the_weights_commands_import_no_torch(tmp_path):
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          timeout=120, env={"NAPARI_FOCSAM_WEIGHTS_DIR": str(tmp_path),
                                            "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    code, modules = json.loads(done.stdout.splitlines()[-1])
    assert code == 0
    assert not {m.split(".")[0] for m in modules} & {"torch", "requests", "pooch", "napari",
                                                     "qtpy", "numpy"}
