"""``napari-focsam track``: seed every object on one frame and track them all through the
z / t stack with SAM 2 ("Track all") -> labels TIFF and / or a Cell Tracking Challenge folder.

Objects are seeded from a label image (``--seeds``) or found by automatic mask generation with
the interactive model; new objects are looked for every ``--discover-every`` frames (automatic
mask generation again), lost objects end their tracks and objects split in two divide (see
`napari_focsam.tracking.track_all`). The automatic settings are those of ``segment --auto``.

Tests replace the tracker through `PROPAGATOR` and the automatic masks through
``napari_focsam.api.automatic.automatic_discover`` (looked up when the command runs).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from . import segment
from .common import (
    axis_options,
    cache_options,
    device_options,
    model_options,
    quiet_option,
    set_command,
    show_progress,
    stack_kind_option,
    tiling_options,
)
from .exits import ignoring_interrupts
from .segmenter import build_segmenter, seed_planes, write_labels

if TYPE_CHECKING:

    from ..api.segmenter import Segmenter
    from ..tracking.lifecycle import TrackOptions

__all__ = ["PROPAGATOR", "TRACK_OPTIONS", "add_parser", "run", "track_options"]

logger = logging.getLogger(__name__)

#: Builds the tracker, ``PROPAGATOR(net, features, (H, W), options)`` (see `TrackAll`); None:
#: `napari_focsam.engine.propagation.VideoPropagator` (named here: importing the CLI does not
#: import torch). Tests put a stand-in here.
PROPAGATOR: Callable[..., Any] | None = None

#: Option -> `TrackOptions` field of the tracking settings (unset: the field's default).
TRACK_OPTIONS = {
    "--seed-frame": "seed_frame",
    "--last-frame": "last_frame",
    "--discover-every": "discover_every",
    "--min-overlap": "min_overlap",
    "--lost-after": "lost_after",
    "--division-frames": "division_min_frames",
    "--division-ratio": "division_area_ratio",
    "--min-area": "min_area",
}
#: The automatic settings of ``segment --auto`` offered here; ``--min-area`` is the tracking
#: option, which also applies to the automatic masks.
_AUTO_HERE = tuple(option for option in segment.AUTO_OPTIONS if option not in TRACK_OPTIONS)

_INTERRUPTED = "no output written (cached embeddings are kept)"


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``track`` to the ``napari-focsam`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "track", help="seed every object on one frame and track them all through the stack "
                      "-> labels TIFF / CTC folder",
        parents=[axis_options(), stack_kind_option(), model_options(propagation=True),
                 device_options(), cache_options(), tiling_options(), quiet_option()])
    out = p.add_argument_group("outputs", "at least one of --output and --ctc")
    out.add_argument("--output", "-o", type=Path, default=None,
                     help="labels TIFF to write (.tif or .tiff; an ImageJ hyperstack with the "
                          "input's axes and calibration; 4D data: positions of --outer-axis "
                          "other than --outer stay 0)")
    out.add_argument("--ctc", type=Path, default=None, metavar="DIR",
                     help="Cell Tracking Challenge result folder to write: maskTTT.tif (one per "
                          "frame of the stack, 0 outside the frames tracked) and res_track.txt "
                          "(begin, end and parent of every track)")
    out.add_argument("--overwrite", action="store_true",
                     help="replace the CTC result in an existing --ctc folder (default: refuse; "
                          "a folder holding other files is always refused)")

    seeds = p.add_argument_group(
        "seeding", "objects on --seed-frame: the labels of --seeds (ids kept), or every object "
                   "automatic mask generation finds with the interactive model (--model)")
    seeds.add_argument("--seeds", type=Path, default=None, metavar="LABELS",
                       help="label image of the seed frame (H x W), or a label stack shaped "
                            "like the input (without its channel axis) whose seed frame is "
                            "taken")
    seeds.add_argument("--seed-frame", type=int, default=None, metavar="N",
                       help="frame (along --axis) the objects are seeded on; tracking runs "
                            "forward from it (default 0)")
    seeds.add_argument("--last-frame", type=int, default=None, metavar="N",
                       help="last frame tracked (default: the end of the stack)")
    seeds.add_argument("--outer", type=int, default=None, metavar="I",
                       help="4D data: the position along --outer-axis to track (default 0)")

    life = p.add_argument_group(
        "tracks", "when tracks start, end and divide (defaults suit most time-lapses)")
    life.add_argument("--discover-every", type=int, default=None, metavar="K",
                      help="look for new objects (automatic mask generation) every K frames "
                           "after the seed frame; 0: never (default 10)")
    life.add_argument("--min-overlap", type=float, default=None, metavar="X",
                      help="a found mask covered by tracked objects for at least this fraction "
                           "of its area is one of them, not a new object (0-1; default 0.3)")
    life.add_argument("--lost-after", type=int, default=None, metavar="N",
                      help="a track ends when its object is absent for N frames in a row "
                           "(default 5)")
    life.add_argument("--division-frames", type=int, default=None, metavar="K",
                      help="an object split in two parts for K frames in a row divides into "
                           "two daughter tracks; 0: never (e.g. z-stacks; default 3)")
    life.add_argument("--division-ratio", type=float, default=None, metavar="X",
                      help="the smaller part of a division is at least X times the larger "
                           "(0-1; default 0.4)")
    life.add_argument("--min-area", type=int, default=None, metavar="PX",
                      help="seeds, found masks and division parts of fewer pixels are ignored "
                           "(default 10)")

    auto = p.add_argument_group(
        "automatic mask generation",
        "settings of the automatic seeding and discovery, as in 'segment --auto' (not given: "
        "the interactive model's defaults)")
    segment.add_auto_settings(auto, skip=tuple(TRACK_OPTIONS))
    p.set_defaults(usage_error=p.error)
    set_command(p, run, interrupted=_INTERRUPTED)
    return p


def _discovers(args: argparse.Namespace) -> bool:
    """Whether automatic mask generation runs: seeding without --seeds, or discovery."""
    return args.seeds is None or args.discover_every != 0


def _check_usage(args: argparse.Namespace) -> None:
    """An output; the automatic settings only when automatic mask generation runs (argparse
    errors)."""
    if args.output is None and args.ctc is None:
        args.usage_error("give --output (labels TIFF) and / or --ctc (CTC result folder)")
    given = [option for option in _AUTO_HERE if getattr(args, _dest(option)) is not None]
    if given and not _discovers(args):
        args.usage_error(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} to "
                         "automatic seeding and discovery: leave out --seeds or give "
                         "--discover-every above 0")


def _check_stack(args: argparse.Namespace) -> None:
    """Refuse, before any work, input that is plainly one 2D image (``--axis none``, or 2D
    data; `run` checks the other cases once the axes are worked out)."""
    from ..api.io import open_image

    if args.axis is None or len(open_image(args.input).shape) == 2:
        raise UserError(f"track needs a stack (z or t): {args.input} is one 2D image"
                        + (" (--axis none)" if args.axis is None else ""))


def _check_ctc(args: argparse.Namespace) -> None:
    """Refuse ``--ctc`` before any work, as `napari_focsam.tracking.export_ctc` would after it:
    a file, a folder holding anything but a CTC result, a CTC result without ``--overwrite``;
    also a folder holding an input (``--overwrite`` would delete it) or ``--output``, and one
    that cannot be written."""
    from ..api.io import OutputError, check_output_folder

    folder = args.ctc
    check_output_folder(folder, [args.input, args.seeds], option="--ctc",
                        names=("res_track.txt", "mask000.tif"))
    if args.output is not None and folder.resolve() in args.output.resolve().parents:
        raise OutputError(f"--output {args.output} is inside --ctc {folder}: a CTC folder holds "
                          "only the masks and res_track.txt; write the labels elsewhere")
    from ..tracking import check_ctc_folder

    try:
        check_ctc_folder(folder, overwrite=args.overwrite)
    except FileExistsError as exc:
        text, _, needs_overwrite = str(exc).partition("; pass overwrite=True")
        hint = "; give --overwrite to replace it, or another folder" if needs_overwrite else ""
        raise OutputError(f"--ctc {text}{hint}") from None
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    inside = folder.resolve()
    for option, path in (("input", args.input), ("--seeds", args.seeds)):
        if path is not None and inside in Path(path).resolve().parents:
            raise OutputError(f"--ctc {folder} holds the {option} {path}: --overwrite would "
                              "delete it; choose another folder")


def track_options(args: argparse.Namespace) -> TrackOptions:
    """The `TrackOptions` of the command line (`TRACK_OPTIONS`; unset options keep their
    defaults), checked.

    Raises
    ------
    TrackingError
        An unusable value; the message names the option.
    """
    from ..tracking.lifecycle import TrackOptions
    from ..tracking.table import TrackingError

    given = {option: getattr(args, _dest(option)) for option in TRACK_OPTIONS}
    given = {option: value for option, value in given.items() if value is not None}
    seed, last = given.get("--seed-frame", 0), given.get("--last-frame")
    if last is not None and 0 <= seed and last < seed:
        raise TrackingError(f"--last-frame {last} comes before the seed frame {seed}")
    try:
        return TrackOptions(**{TRACK_OPTIONS[option]: value for option, value in given.items()})
    except TrackingError as exc:
        # "<field> must be ..., got TrackOptions(...)" -> "<option> must be ..., got <value>"
        rule = str(exc).split(", got TrackOptions(")[0]
        for option, name in TRACK_OPTIONS.items():
            if rule.startswith(f"{name} "):
                raise TrackingError(f"{option} {rule[len(name) + 1:]}, got {given[option]}") \
                    from None
        raise


def _discoverer(seg: Segmenter, overrides: dict) -> Callable[[int], list]:
    """Automatic mask generation with the interactive model and the settings given."""
    from ..api import automatic

    params = automatic.default_params(seg, **overrides)
    logger.info("automatic seeding / discovery with %s", params)
    return automatic.automatic_discover(seg, params)


def run(args: argparse.Namespace) -> int:
    """Seed (a bar counts the objects), track (a bar counts the frames), then write the labels
    TIFF and / or the CTC folder and say what they hold."""
    from ..api.io import check_output_path, read_array
    from ..tracking.track_all import TrackAll

    _check_usage(args)
    _check_stack(args)
    if args.output is not None:
        check_output_path(args.output, [args.input, args.seeds], option="--output")
    if args.ctc is not None:
        _check_ctc(args)
    options = track_options(args)
    overrides = segment.auto_overrides(args) if _discovers(args) else {}
    seeds = read_array(args.seeds, "the seed labels") if args.seeds is not None else None
    seg = build_segmenter(args, with_propagation=True, with_interactive=_discovers(args))
    if seg.propagation is None:
        raise UserError(f"track needs a stack (z or t): {args.input} is one 2D image; give "
                        "--axis if it is a stack")
    if args.outer is not None and seg.source.outer_axis is None:
        raise UserError("--outer picks a position along --outer-axis: it applies to 4D data only")
    seg.flat_frame(options.seed_frame, args.outer)  # the seed frame and outer index exist
    if seeds is not None:
        seeds = seed_planes(seg, seeds, args.seeds, frame=options.seed_frame,
                            outer=args.outer)[0][2]
    extra = {} if PROPAGATOR is None else {"propagator": PROPAGATOR}
    discover = _discoverer(seg, overrides) if _discovers(args) else None
    track = TrackAll(seg, seeds=seeds, discover=discover, options=options, outer=args.outer,
                     **extra)
    show_progress(track.run(), quiet=args.quiet,
                  unit=lambda p: "object" if p.stage == "seed" else "frame",
                  label=lambda p: p.stage, postfix=lambda p: f"{p.n_objects} objects")
    table = track.table
    if not len(table):
        logger.warning("no object was tracked: the outputs hold no labels")
    if args.ctc is not None:
        track.export_ctc(args.ctc, overwrite=args.overwrite)  # atomic
    # once an output is complete, finish (each is written atomically: before, "no output
    # written" holds)
    with ignoring_interrupts() if args.ctc is not None else contextlib.nullcontext():
        if args.output is not None:
            write_labels(seg, args)
    last = seg.source.n_stack - 1 if options.last_frame is None else options.last_frame
    divisions = len(set(table.parents.values()))
    summary = (f"{len(table)} tracks ({divisions} division{'' if divisions == 1 else 's'}) over "
               f"frames {options.seed_frame}-{last}")
    if args.ctc is not None:
        summary += f"; CTC result written to {args.ctc}"
    with ignoring_interrupts():
        sys.stdout.write(summary + "\n")
    return 0
