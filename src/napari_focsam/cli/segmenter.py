"""From parsed options to a `napari_focsam.api.Segmenter`: the models, the input's axes, the
labels written; shared by ``embed``, ``segment``, ``propagate`` and ``evaluate-stack``.

Everything heavy (torch, the API) is imported when a function runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..api.models import LoadedModel
    from ..api.prompts_file import ObjectPrompt
    from ..api.segmenter import Segmenter

__all__ = ["build_segmenter", "load_models", "write_labels"]


def load_models(args: argparse.Namespace,
                with_propagation: bool) -> tuple[LoadedModel, LoadedModel | None]:
    """The interactive model and (with `with_propagation`) the propagation model of
    `common.model_options`; one model when both options name the same checkpoint."""
    from ..api.models import load_model

    common = {"device": args.device, "dtype": args.dtype, "offline": args.offline or None}
    interactive = load_model(args.model, weights=args.weights, role="interactive", **common)
    if not with_propagation:
        return interactive, None
    if args.propagation_model == args.model and args.propagation_weights in (None, args.weights):
        return interactive, interactive
    return interactive, load_model(args.propagation_model, weights=args.propagation_weights,
                                   role="propagation", **common)


def _stack_axes(args: argparse.Namespace, data: Any) -> tuple[int | None, int | None, int | None]:
    """``(stack, channel, outer)`` axes of `data` from ``--axis`` (maybe ``"auto"``),
    ``--channel-axis`` and ``--outer-axis``."""
    axis, channel_axis = args.axis, args.channel_axis
    if axis == "auto":
        if data.ndim == 3 and channel_axis is None and data.shape[-1] in (3, 4):
            # (H, W, 3 | 4): an RGB(A) image (PNG, JPEG, RGB TIFF), not a stack of
            # 3-pixel-wide frames
            return None, 2, args.outer_axis
        axis = 0 if (data.ndim == 3 and channel_axis is None) or data.ndim == 4 else None
    return axis, channel_axis, args.outer_axis


def build_segmenter(args: argparse.Namespace, with_propagation: bool) -> Segmenter:
    """The `Segmenter` of ``args.input`` with the options of `common.model_options`,
    `common.axis_options`, `common.device_options` and `common.cache_options`.

    The propagation model is loaded only for stacks (``segmenter.propagation`` is None for a
    2D image).
    """
    from ..api.io import open_image
    from ..api.segmenter import Segmenter

    data = open_image(args.input)
    axis, channel_axis, outer_axis = _stack_axes(args, data)
    interactive, propagation = load_models(args, with_propagation and axis is not None)
    return Segmenter(data, interactive=interactive, propagation=propagation, stack_axis=axis,
                     channel_axis=channel_axis, outer_axis=outer_axis,
                     cache_root=False if args.no_cache else args.cache_dir,
                     disk_dtype=args.cache_dtype)


def write_labels(seg: Segmenter, prompts: Sequence[ObjectPrompt], args: argparse.Namespace) -> int:
    """Write the segmenter's labels (in the input's axis order) to ``args.output``, say so on
    stdout, and return 0."""
    from ..api.io import write_labels_tiff

    labels = seg.labels_in_data_order()
    write_labels_tiff(args.output, labels)
    ids = sorted({int(p.obj_id) for p in prompts})
    sys.stdout.write(f"labels {labels.shape} with objects {ids} written to {args.output}\n")
    return 0
