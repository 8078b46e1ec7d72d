"""``napari-focsam segment``: draw the objects of a prompts file (CSV / JSON) on their frames
-> labels TIFF."""

from __future__ import annotations

import argparse

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
    """Add ``segment`` to the ``napari-focsam`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "segment", help="draw objects from a prompts file -> labels TIFF",
        parents=[axis_options(), prompts_options(), model_options(), device_options(),
                 cache_options(), tiling_options(), quiet_option()])
    set_command(p, run, interrupted="no output written (cached embeddings are kept)")
    return p


def run(args: argparse.Namespace) -> int:
    """Draw every prompted object on its frame with the interactive model (a bar counts the
    objects); write the labels."""
    from ..api.prompts_file import read_prompts

    check_output(args)
    prompts = read_prompts(args.prompts)
    seg = build_segmenter(args, with_propagation=False)
    show_progress(seg.segment(prompts), quiet=args.quiet, unit="object", label=lambda p: p.stage)
    return write_labels(seg, args)
