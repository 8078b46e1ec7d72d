"""``napari-focsam propagate``: carry every prompted object through the z / t stack with
SAM 2 -> labels TIFF. Objects come from a prompts file and / or a label image (``--seeds``:
cellpose / StarDist output, annotated slices), each label one object on its frame."""

from __future__ import annotations

import argparse
from pathlib import Path

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
from .segmenter import build_segmenter, check_output, seed_planes, write_labels

__all__ = ["PROMPT_KINDS", "add_parser", "run"]

#: ``--seed-prompt`` choices (`napari_focsam.api.seeds.PROMPT_KINDS`, named here: importing the
#: CLI does not import the API).
PROMPT_KINDS = ("mask", "box", "point", "box+point")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``propagate`` to the ``napari-focsam`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "propagate", help="carry prompted objects through the stack -> labels",
        parents=[axis_options(),
                 prompts_options(required=False, optional_help="required without --seeds"),
                 model_options(propagation=True), device_options(), cache_options(),
                 tiling_options(), quiet_option()])
    p.add_argument("--direction", choices=("both", "forward", "backward"), default="both")
    seeds = p.add_argument_group(
        "seeds from labels", "every label of a label image is an object (id kept) prompted on "
                             "its frame")
    seeds.add_argument("--seeds", type=Path, default=None, metavar="LABELS",
                       help="label image of one frame (H x W, on --seed-frame), or labels shaped "
                            "like the input: every frame holding labels is a prompted frame "
                            "(e.g. a few annotated slices)")
    seeds.add_argument("--seed-frame", type=int, default=None, metavar="N",
                       help="the frame of H x W --seeds (default 0); with stacked --seeds, take "
                            "only this frame's labels")
    seeds.add_argument("--seed-prompt", choices=PROMPT_KINDS, default="mask",
                       help="what each label gives the models: its mask (default; the label is "
                            "the object on its frame), or its box and / or an interior point "
                            "(the interactive model draws it again)")
    seeds.add_argument("--seed-min-area", type=int, default=None, metavar="PX",
                       help="labels of fewer pixels are left out (default 10)")
    p.set_defaults(usage_error=p.error)
    set_command(p, run, interrupted="no output written (cached embeddings are kept)")
    return p


def run(args: argparse.Namespace) -> int:
    """Draw the prompted objects, carry them through the stack (bars count the objects
    entered, then the frames); write the labels."""
    from ..api.io import check_output_path, read_array
    from ..api.prompts_file import read_prompts
    from ..api.seeds import MIN_AREA, prompts_from_labels

    if args.prompts is None and args.seeds is None:
        args.usage_error("give --prompts and / or --seeds")
    if args.seeds is None and (args.seed_frame is not None or args.seed_min_area is not None
                               or args.seed_prompt != "mask"):
        args.usage_error("--seed-frame, --seed-prompt and --seed-min-area apply with --seeds")
    check_output(args)
    check_output_path(args.output, [args.seeds], option="--output")
    prompts = read_prompts(args.prompts) if args.prompts is not None else []
    seeds = read_array(args.seeds, "the seed labels") if args.seeds is not None else None
    seg = build_segmenter(args, with_propagation=True)
    if seg.propagation is None:
        raise UserError("propagate needs a stack: give --axis (the data looks 2D)")
    if seeds is not None:
        min_area = MIN_AREA if args.seed_min_area is None else args.seed_min_area
        taken, n_seeds = {p.obj_id for p in prompts}, 0
        for frame, outer, plane in seed_planes(seg, seeds, args.seeds, frame=args.seed_frame):
            seg.flat_frame(frame, outer)  # the frame exists
            found = prompts_from_labels(plane, frame, outer, min_area=min_area,
                                        prompt=args.seed_prompt)
            clash = sorted(taken & {p.obj_id for p in found})
            if clash and args.prompts is not None:
                raise UserError(f"--seeds labels {clash[:5]} are also object ids of --prompts: "
                                "renumber one of them")
            prompts += found
            n_seeds += len(found)
        if not n_seeds:
            raise UserError(f"--seeds {args.seeds} holds no label of at least {min_area} pixels")
    show_progress(seg.propagate(prompts, args.direction, report_objects=True), quiet=args.quiet,
                  unit=lambda p: "object" if p.stage == "prompt" else "frame",
                  label=lambda p: p.stage)
    return write_labels(seg, args)
