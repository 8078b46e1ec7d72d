"""``napari-focsam propagate``: carry every prompted object through the z / t stack with
SAM 2 -> labels TIFF."""

from __future__ import annotations

import argparse

from ..errors import UserError
from .common import (
    axis_options,
    cache_options,
    device_options,
    model_options,
    prompts_options,
    quiet_option,
    set_command,
    show_progress,
    tiling_options,
)
from .segmenter import build_segmenter, check_output, write_labels

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``propagate`` to the ``napari-focsam`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "propagate", help="carry prompted objects through the stack -> labels",
        parents=[axis_options(), prompts_options(), model_options(propagation=True),
                 device_options(), cache_options(), tiling_options(), quiet_option()])
    p.add_argument("--direction", choices=("both", "forward", "backward"), default="both")
    set_command(p, run, interrupted="no output written (cached embeddings are kept)")
    return p


def run(args: argparse.Namespace) -> int:
    """Draw the prompted objects, carry them through the stack (bars count the objects
    entered, then the frames); write the labels."""
    from ..api.prompts_file import read_prompts

    check_output(args)
    prompts = read_prompts(args.prompts)
    seg = build_segmenter(args, with_propagation=True)
    if seg.propagation is None:
        raise UserError("propagate needs a stack: give --axis (the data looks 2D)")
    show_progress(seg.propagate(prompts, args.direction, report_objects=True), quiet=args.quiet,
                  unit=lambda p: "object" if p.stage == "prompt" else "frame",
                  label=lambda p: p.stage)
    return write_labels(seg, args)
