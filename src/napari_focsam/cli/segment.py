"""``napari-focsam segment``: draw the objects of a prompts file (CSV / JSON) on their frames,
and / or find every object automatically (``--auto``) -> labels TIFF."""

from __future__ import annotations

import argparse
import logging
import re
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from ..api.segmenter import Segmenter

__all__ = ["AUTO_MODES", "AUTO_OPTIONS", "add_auto_settings", "add_parser", "auto_overrides",
           "frame_list", "run"]

logger = logging.getLogger(__name__)

#: ``--mode`` choices (``api.automatic.EVERYTHING_MODES``, named here: importing the CLI does
#: not import torch).
AUTO_MODES = ("only_background", "replace")
#: Option -> `AutoMaskParams` field of the automatic settings (unset: the model's default).
AUTO_OPTIONS = {
    "--points-per-side": "points_per_side",
    "--points-per-batch": "points_per_batch",
    "--pred-iou-thresh": "pred_iou_thresh",
    "--stability-thresh": "stability_score_thresh",
    "--crop-layers": "crop_n_layers",
    "--min-area": "min_area",
    "--max-area": "max_area",
    "--min-region-area": "min_mask_region_area",
}
#: Settings that are fractions (checked to lie in [0, 1]).
_FRACTIONS = ("pred_iou_thresh", "stability_score_thresh")


def frame_list(text: str) -> list[int]:
    """Parse ``--frames``: comma-separated frame indices and inclusive ranges, e.g.
    ``"0,3,5-9"`` -> ``[0, 3, 5, 6, 7, 8, 9]`` (sorted, each once).

    Raises
    ------
    argparse.ArgumentTypeError
        An empty item, a negative or non-integer index, or a range that runs backwards.
    """
    frames: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)
        if match is None:
            what = "an empty item" if not item else f"{item!r}"
            raise argparse.ArgumentTypeError(
                f"{what} in {text!r}: give frame indices (>= 0) and ranges, e.g. 0,3,5-9")
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) is not None else start
        if stop < start:
            raise argparse.ArgumentTypeError(f"the range {item!r} runs backwards: write "
                                             f"{stop}-{start}")
        frames.update(range(start, stop + 1))
    return sorted(frames)


def add_auto_settings(group: argparse._ArgumentGroup, *, skip: tuple[str, ...] = ()) -> None:
    """Add the automatic mask generation settings (`AUTO_OPTIONS`, but those in `skip`) to
    `group` (``segment --auto`` and ``track`` share them)."""

    def add(option: str, **kwargs) -> None:
        if option not in skip:
            group.add_argument(option, **kwargs)

    add("--points-per-side", type=int, default=None, metavar="N",
        help="clicks along each side of the grid (N^2 per frame; default 32)")
    add("--points-per-batch", type=int, default=None, metavar="N",
        help="clicks decoded at once (memory, not results; default 64)")
    add("--pred-iou-thresh", type=float, default=None, metavar="X",
        help="keep masks whose predicted IoU is above X (0-1; default 0.88, SAM 2 "
             "0.8)")
    add("--stability-thresh", type=float, default=None, metavar="X",
        help="keep masks whose stability score is at least X (0-1; default 0.95)")
    add("--crop-layers", type=int, default=None, metavar="N",
        help="also search N layers of zoomed-in crops (each encoded; slower; "
             "default 0)")
    add("--min-area", type=int, default=None, metavar="PX",
        help="drop objects of fewer pixels (default: none)")
    add("--max-area", type=int, default=None, metavar="PX",
        help="drop objects of more pixels (default: none)")
    add("--min-region-area", type=int, default=None, metavar="PX",
        help="remove holes and islands smaller than this from every mask "
             "(default 0: none)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``segment`` to the ``napari-focsam`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "segment", help="draw objects from a prompts file, or every object (--auto) -> labels TIFF",
        parents=[axis_options(),
                 prompts_options(required=False, optional_help="required without --auto; with "
                                 "--auto its objects are drawn first, then the background is "
                                 "filled"),
                 model_options(), device_options(), cache_options(), tiling_options(),
                 quiet_option()])
    auto = p.add_argument_group(
        "automatic mask generation",
        "--auto clicks a grid of points over every frame and keeps the good, distinct masks as "
        "new objects (ids above the largest one). Settings not given keep the interactive "
        "model's defaults (segment-anything's; SAM 2's for SAM 2 models)")
    auto.add_argument("--auto", action="store_true", help="segment every object automatically")
    auto.add_argument("--frames", type=frame_list, default=None, metavar="LIST",
                      help="frames along --axis to segment automatically, e.g. 0,3,5-9 (default: "
                           "all; 4D data: at every --outer-axis position)")
    auto.add_argument("--mode", choices=AUTO_MODES, default=None,
                      help="only_background (default): new objects fill only unlabelled pixels; "
                           "replace: each frame's labels are cleared first (not with --prompts)")
    add_auto_settings(auto)
    p.set_defaults(usage_error=p.error)
    set_command(p, run, interrupted="no output written (cached embeddings are kept)")
    return p


def _option_names(message: str) -> str:
    """`message` with `AutoMaskParams` field names replaced by the options that set them."""
    for option, name in AUTO_OPTIONS.items():
        message = re.sub(rf"\b{name}\b", option, message)
    return message


def auto_overrides(args: argparse.Namespace) -> dict:
    """The automatic settings given on the command line, as `AutoMaskParams` fields, checked
    (before any model is loaded: the checks do not depend on the model's defaults).

    Raises
    ------
    AutoMaskParamsError
        An unusable value; the message names the option.
    """
    from ..engine.automatic import AutoMaskParams, AutoMaskParamsError

    overrides = {name: getattr(args, name.lstrip("-").replace("-", "_"), None)
                 for name in AUTO_OPTIONS}
    overrides = {AUTO_OPTIONS[option]: value for option, value in overrides.items()
                 if value is not None}
    try:
        for name in _FRACTIONS:
            if name in overrides and not 0.0 <= overrides[name] <= 1.0:
                raise AutoMaskParamsError(f"{name} must be between 0 and 1, got {overrides[name]}")
        AutoMaskParams().replace(**overrides)
    except AutoMaskParamsError as exc:
        raise AutoMaskParamsError(_option_names(str(exc))) from None
    return overrides


def _flat_frames(seg: Segmenter, frames: list[int] | None) -> list[int] | None:
    """Flat frame indices of `frames` along the stack axis at every outer position (None:
    all); raises `PromptPlacementError` for a frame that does not exist."""
    if frames is None:
        return None
    source = seg.source
    outers = range(source.n_outer) if source.outer_axis is not None else [None]
    return [seg.flat_frame(frame, outer) for outer in outers for frame in frames]


def _check_usage(args: argparse.Namespace) -> None:
    """``--prompts`` without ``--auto``; the automatic options only with it (argparse errors)."""
    if args.auto:
        return
    if args.prompts is None:
        args.usage_error("the following arguments are required: --prompts (or --auto to "
                         "segment every object)")
    given = [option for option, name in (*AUTO_OPTIONS.items(), ("--frames", "frames"),
                                         ("--mode", "mode"))
             if getattr(args, option.lstrip("-").replace("-", "_")) is not None]
    if given:
        args.usage_error(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} with --auto")


def run(args: argparse.Namespace) -> int:
    """Draw every prompted object on its frame with the interactive model (a bar counts the
    objects); with ``--auto``, then segment every object of the frames (a bar counts decoder
    batches); write the labels."""
    from ..api.prompts_file import read_prompts

    _check_usage(args)
    check_output(args)
    prompts = read_prompts(args.prompts) if args.prompts is not None else []
    overrides = auto_overrides(args) if args.auto else {}
    mode = args.mode or AUTO_MODES[0]
    if prompts and mode == "replace":
        raise UserError("--mode replace would clear the objects of --prompts: leave it out (new "
                        "objects then fill only the background around them)")
    seg = build_segmenter(args, with_propagation=False)
    if prompts:
        show_progress(seg.segment(prompts), quiet=args.quiet, unit="object",
                      label=lambda p: p.stage)
    if args.auto:
        from ..api.automatic import default_params, segment_everything_stack

        params = default_params(seg, **overrides)
        frames = _flat_frames(seg, args.frames)
        logger.info("segment everything with %s", params)
        show_progress(segment_everything_stack(seg, frames, params=params, mode=mode),
                      quiet=args.quiet, unit="batch", label=lambda p: p.stage)
    return write_labels(seg, args)
