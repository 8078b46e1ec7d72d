"""From parsed options to a `napari_focsam.api.Segmenter`: the models, the input's axes, the
labels written, seed label files read; shared by ``embed``, ``segment``, ``propagate``,
``track`` and ``evaluate-stack``.

Everything heavy (torch, the API) is imported when a function runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from .exits import ignoring_interrupts

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from ..api.io import ImageInfo
    from ..api.models import LoadedModel
    from ..api.segmenter import Segmenter
    from ..engine.tiling import Tiling

__all__ = ["build_segmenter", "check_output", "load_models", "seed_planes", "tiling_of",
           "write_labels"]


def load_models(args: argparse.Namespace, with_propagation: bool, *,
                with_interactive: bool = True) -> tuple[LoadedModel | None, LoadedModel | None]:
    """The interactive model (with `with_interactive`) and the propagation model (with
    `with_propagation`) of `common.model_options`; one model when both options name the same
    checkpoint. A model not asked for is not loaded (nor downloaded)."""
    from ..api.models import load_model

    common = {"device": args.device, "dtype": args.dtype, "offline": args.offline or None}
    interactive = load_model(args.model, weights=args.weights, role="interactive",
                             **common) if with_interactive else None
    if not with_propagation:
        return interactive, None
    if interactive is not None and args.propagation_model == args.model \
            and args.propagation_weights in (None, args.weights):
        return interactive, interactive
    return interactive, load_model(args.propagation_model, weights=args.propagation_weights,
                                   role="propagation", **common)


def _axes_help(shape: tuple[int, ...], axes: str | None) -> str:
    """The flags naming the axes of data of `shape`, from the file's own `axes` when known."""
    if axes is not None and len(axes) == len(shape) and "Y" in axes and "X" in axes:
        flags = []
        if "Z" in axes or "T" in axes:
            stack = axes.index("Z") if "Z" in axes else axes.index("T")
            flags.append(f"--axis {stack}")
            if "Z" in axes and "T" in axes:
                flags.append(f"--outer-axis {axes.index('T')}")
        for letter in "CS":
            if letter in axes:
                flags.append(f"--channel-axis {axes.index(letter)}")
        return f"the file says its axes are {axes}: give {' '.join(flags)}"
    if len(shape) == 4:
        return ("e.g. --axis 1 --outer-axis 0 for (t, z, y, x) data, --axis 0 --channel-axis 1 "
                "for (z, c, y, x)")
    return "e.g. --axis 1 --outer-axis 0 --channel-axis 2 for (t, z, c, y, x) data"


def _stack_axes(args: argparse.Namespace, data: Any,
                info: ImageInfo) -> tuple[int | None, int | None, int | None]:
    """``(stack, channel, outer)`` axes of `data` from ``--axis`` (maybe ``"auto"``),
    ``--channel-axis`` and ``--outer-axis``.

    Raises
    ------
    UserError
        The data has more dimensions than the axes given account for (4D / 5D data with
        ``--axis auto``): the message names the flags to give.
    """
    axis, channel_axis = args.axis, args.channel_axis
    shape = tuple(int(s) for s in data.shape)
    if axis == "auto":
        if len(shape) == 3 and channel_axis is None and shape[-1] in (3, 4):
            # (H, W, 3 | 4): an RGB(A) image (PNG, JPEG, RGB TIFF), not a stack of
            # 3-pixel-wide frames
            return None, 2, args.outer_axis
        axis = 0 if (len(shape) == 3 and channel_axis is None) or len(shape) == 4 else None
    named = [a for a in (axis, channel_axis, args.outer_axis) if a is not None]
    if len(shape) > 3 and len(shape) != 2 + len(named):
        given = [f"{flag} {value}" for flag, value in (("--axis", args.axis),
                                                       ("--channel-axis", channel_axis),
                                                       ("--outer-axis", args.outer_axis))
                 if value not in (None, "auto")]
        raise UserError(
            f"{args.input} has {len(shape)} dimensions {shape}; besides y and x, each needs a "
            f"role: --axis (the z or t axis the frames run along), --outer-axis (the other of "
            f"z / t) and --channel-axis (channels){'; given: ' + ' '.join(given) if given else ''}"
            f". {_axes_help(shape, info.axes)}")
    return axis, channel_axis, args.outer_axis


def tiling_of(args: argparse.Namespace) -> Tiling:
    """The `Tiling` of `common.tiling_options` (the defaults for a command without them).

    Raises
    ------
    TilingError
        Unusable sizes (e.g. a halo of half the tile or more).
    """
    from ..engine.tiling import Tiling

    return Tiling(getattr(args, "tiling", "auto"), tile=getattr(args, "tile_size", None),
                  halo=getattr(args, "tile_halo", None))


def build_segmenter(args: argparse.Namespace, with_propagation: bool, *,
                    with_interactive: bool = True) -> Segmenter:
    """The `Segmenter` of ``args.input`` with the options of `common.model_options`,
    `common.axis_options`, `common.device_options`, `common.cache_options` and
    `common.tiling_options`.

    The propagation model is loaded only for stacks (``segmenter.propagation`` is None for a
    2D image). Without `with_interactive` the interactive model is not loaded: the
    propagation model serves both roles (for caching its embeddings only).
    """
    from ..api.io import open_image, read_image_info
    from ..api.segmenter import Segmenter

    tiling = tiling_of(args)  # before any work: its errors are the user's
    data = open_image(args.input)
    axis, channel_axis, outer_axis = _stack_axes(args, data, read_image_info(args.input))
    with_propagation = with_propagation and axis is not None
    interactive, propagation = load_models(args, with_propagation or not with_interactive,
                                           with_interactive=with_interactive)
    if interactive is None:
        interactive = propagation
    assert interactive is not None
    return Segmenter(data, interactive=interactive,
                     propagation=propagation if with_propagation else None, stack_axis=axis,
                     channel_axis=channel_axis, outer_axis=outer_axis,
                     cache_root=False if args.no_cache else args.cache_dir,
                     disk_dtype=args.cache_dtype, tiling=tiling)


def check_output(args: argparse.Namespace) -> None:
    """Refuse ``--output`` before any work: not a TIFF name, one of the inputs (image, prompts),
    a folder, or not writable (`napari_focsam.api.io.check_output_path`)."""
    from ..api.io import check_output_path

    check_output_path(args.output, [args.input, args.prompts], option="--output")


def write_labels(seg: Segmenter, args: argparse.Namespace) -> int:
    """Write the segmenter's labels to ``args.output`` (an ImageJ hyperstack with the input's
    axes and calibration), say which objects it holds on stdout, and return 0."""
    from ..api.io import labels_axes, present_ids, read_image_info, write_labels_tiff

    info = read_image_info(args.input)
    src = seg.source
    axes = labels_axes(len(src.shape), stack_axis=src.stack_axis, outer_axis=src.outer_axis,
                       channel_axis=src.channel_axis, file_axes=info.axes,
                       stack_kind=args.stack_kind)
    labels = seg.labels_in_data_order()
    write_labels_tiff(args.output, labels, axes=axes, info=info)
    with ignoring_interrupts():  # the file is complete
        sys.stdout.write(f"labels {labels.shape} ({axes}) with objects {present_ids(labels)} "
                         f"written to {args.output}\n")
    return 0


def seed_planes(seg: Segmenter, seeds: np.ndarray, path: Path, *, frame: int | None = None,
                outer: int | None = None) -> list[tuple[int, int | None, np.ndarray]]:
    """The seed label planes of a ``--seeds`` file's array.

    Parameters
    ----------
    seg : Segmenter
    seeds : np.ndarray
        ``(H, W)`` labels of one frame, or labels shaped like the data without its channel
        axis.
    path : Path
        The file (for messages).
    frame : int, optional
        The seed frame along the stack axis: where ``(H, W)`` labels lie (default 0), and the
        plane taken from a stack. None with a stack: every plane holding a label.
    outer : int, optional
        Position along the outer axis of 4D data (default 0; with a stack and `frame` None,
        every position).

    Returns
    -------
    list of (frame, outer, (H, W) labels)
        ``outer`` is None for 3D data; planes in stack order.

    Raises
    ------
    SeedError
        Any other shape.
    """
    import numpy as np

    from ..api.seeds import SeedError

    src = seg.source
    four_d = src.outer_axis is not None
    if seeds.shape == tuple(src.frame_shape):
        return [(0 if frame is None else frame, (outer or 0) if four_d else None, seeds)]
    axes = [a for a in range(len(src.shape)) if a != src.channel_axis]
    stack_shape = tuple(src.shape[a] for a in axes)
    if seeds.shape != stack_shape:
        raise SeedError(f"--seeds {path} has shape {seeds.shape}: give the seed frame's labels "
                        f"{tuple(src.frame_shape)} or labels shaped like the input "
                        f"{stack_shape}")
    frames = range(src.n_stack) if frame is None else [frame]
    outers = [None] if not four_d else ([outer or 0] if frame is not None or outer is not None
                                        else range(src.n_outer))
    out = []
    for o in outers:
        for f in frames:
            where = {src.stack_axis: f}
            if o is not None:
                where[src.outer_axis] = o
            plane = seeds[tuple(where.get(a, slice(None)) for a in axes)]
            if frame is not None or np.any(plane):
                out.append((f, o, plane))
    return out
