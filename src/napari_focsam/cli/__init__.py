"""The ``napari-focsam`` command line.

Subcommands
-----------
weights list | download | verify | path
    The checkpoint registry: what is cached, fetch (with hash check), verify, where it goes.
embed
    Compute an image's or stack's embeddings once (disk cache, resumable).
segment
    Draw the objects of a prompts file (CSV / JSON) on their frames -> labels TIFF.
propagate
    Carry every prompted object through the z / t stack with SAM 2 -> labels TIFF.
track
    Seed every object on one frame (labels or automatic) and track them all through the stack
    with SAM 2, new, lost and dividing objects included -> labels TIFF and / or CTC folder.
evaluate
    NoC@85/90/95 and mIoU@k with the FocSAM click protocol on a standard dataset layout.
evaluate-stack
    Per-frame IoU, mean J and drift of propagated objects against ground-truth labels.
bench all | sam | focsam | sam2 | sam2-memory | track-memory | tiling
    Benchmarks: encoder, click, refine and propagation times, memory.

Each subcommand is a module of this package with an ``add_parser(subparsers)`` function
(listed in `COMMANDS`); its parser's ``func`` default runs it. The exit codes are in
`exits.EXIT_CODES`. Importing this package imports neither torch nor the GUI.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from .. import __version__
from . import bench, embed, evaluate, evaluate_stack, propagate, segment, track, weights
from .exits import configure_logging, exit_codes_epilog, run_command

__all__ = ["COMMANDS", "build_parser", "main", "run"]

_DESCRIPTION = ("napari-focsam without napari: model weights, embeddings, segmentation, "
                "propagation, tracking, evaluation and benchmarks.")

#: The subcommand modules, in ``--help`` order.
COMMANDS = (weights, embed, segment, propagate, track, evaluate, evaluate_stack, bench)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``napari-focsam``."""
    parser = argparse.ArgumentParser(prog="napari-focsam", description=_DESCRIPTION,
                                     epilog=exit_codes_epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"napari-focsam {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``napari-focsam`` with `argv` (default ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return run_command(args)


def run() -> None:
    """The ``napari-focsam`` program: `main`, then exit with its code (a Ctrl-C while the
    finished process exits is ignored: it cannot undo the work)."""
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
