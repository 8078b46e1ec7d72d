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
    tiling_options,
)
from .segmenter import build_segmenter

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``embed`` to the ``napari-focsam`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "embed", help="precompute (cache) the embeddings of an image or stack",
        parents=[axis_options(), model_options(propagation=True), device_options(),
                 cache_options(), tiling_options(), quiet_option()])
    p.add_argument("--only", choices=("interactive", "propagation"), default=None,
                   help="cache one model's embeddings only")
    set_command(p, run, interrupted="frames done so far stay cached")
    return p


def run(args: argparse.Namespace) -> int:
    """Fill the embedding cache of ``args.input`` and report how many frames (and tiles) were
    encoded.

    With ``--only``, the other model is not loaded (nor downloaded)."""
    seg = build_segmenter(args, with_propagation=args.only != "interactive",
                          with_interactive=args.only != "propagation")
    roles = tuple(seg.stores) if args.only is None else (args.only,)
    if args.only is not None and args.only not in seg.stores:
        raise UserError(f"no {args.only} model for this input (2D image?)")
    stores = list({id(seg.stores[r]): seg.stores[r] for r in roles}.values())
    if "interactive" in roles and seg.tile_store is not None:
        stores.append(seg.tile_store)
    show_progress(seg.embed(roles=roles), quiet=args.quiet,
                  unit=lambda p: "tile" if p.stage == "embed:tiles" else "frame",
                  label=lambda p: p.stage)
    encoded = sum(s.encoder_calls for s in stores)
    total = sum(len(s) for s in stores)
    n = len(seg.source)
    models = len(stores) - (seg.tile_store in stores)
    tiles = ""
    if seg.tile_store in stores:
        grid = seg.tile_grid
        tiles = (f" and {len(seg.tile_store)} tiles ({grid.n_tiles} per frame, "
                 f"{grid.block[0]} x {grid.block[1]} px, halo {grid.halo} px)")
    sys.stdout.write(f"{n} frames{tiles} cached for {models} model(s); {encoded} encoded now, "
                     f"{total - encoded} taken from the cache\n")
    return 0
