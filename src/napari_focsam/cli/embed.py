"""``napari-focsam embed``: compute an image's or stack's embeddings once (disk cache,
resumable)."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from .common import (
    axis_options,
    cache_options,
    device_options,
    model_options,
    quiet_option,
    set_command,
    show_progress,
)
from .segmenter import build_segmenter

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``embed`` to the ``napari-focsam`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "embed", help="precompute (cache) the embeddings of an image or stack",
        parents=[axis_options(), model_options(propagation=True), device_options(),
                 cache_options(), quiet_option()])
    p.add_argument("--only", choices=("interactive", "propagation"), default=None,
                   help="cache one model's embeddings only")
    set_command(p, run, interrupted="frames done so far stay cached")
    return p


def run(args: argparse.Namespace) -> int:
    """Fill the embedding cache of ``args.input`` and report how many frames were encoded.

    With ``--only``, the other model is not loaded (nor downloaded)."""
    seg = build_segmenter(args, with_propagation=args.only != "interactive",
                          with_interactive=args.only != "propagation")
    if args.only is None:
        stores = list({id(s): s for s in seg.stores.values()}.values())
        show_progress(seg.embed(), quiet=args.quiet, unit="frame", label=lambda p: p.stage)
    elif args.only in seg.stores:
        stores = [seg.stores[args.only]]
        show_progress(stores[0].compute(), quiet=args.quiet, unit="frame",
                      label=lambda p: f"embed:{args.only}")
    else:
        raise UserError(f"no {args.only} model for this input (2D image?)")
    encoded = sum(s.encoder_calls for s in stores)
    n = len(seg.source)
    sys.stdout.write(f"{n} frames cached for {len(stores)} model(s); {encoded} encoded now, "
                     f"{n * len(stores) - encoded} taken from the cache\n")
    return 0
