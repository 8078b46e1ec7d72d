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
)
from .segmenter import build_segmenter, write_labels

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``segment`` to the ``napari-focsam`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "segment", help="draw objects from a prompts file -> labels TIFF",
        parents=[axis_options(), prompts_options(), model_options(), device_options(),
                 cache_options(), quiet_option()])
    set_command(p, run, interrupted="no output written (cached embeddings are kept)")
    return p


def run(args: argparse.Namespace) -> int:
    """Draw every prompted object on its frame with the interactive model; write the labels."""
    from ..api.prompts_file import read_prompts

    prompts = read_prompts(args.prompts)
    seg = build_segmenter(args, with_propagation=False)
    frames = sorted({(p.outer, p.frame) for p in prompts}, key=lambda k: (k[0] or 0, k[1] or 0))
    for outer, frame in frames:
        seg.segment_frame([p for p in prompts if (p.outer, p.frame) == (outer, frame)], frame,
                          outer)
    return write_labels(seg, prompts, args)
