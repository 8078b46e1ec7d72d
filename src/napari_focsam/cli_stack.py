"""``napari-focsam embed | segment | propagate``: the headless API from the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .cli_errors import EXIT_OK, run_with_exit_codes

__all__ = ["add_stack_parsers", "run_stack"]

logger = logging.getLogger(__name__)



def _axis(text: str) -> int | str | None:
    if text.lower() in ("none", "-"):
        return None
    if text.lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an axis is an integer or 'none', got {text!r}") from None


def _common(p: argparse.ArgumentParser, propagation: bool) -> None:
    p.add_argument("input", type=Path, help="image or stack (TIFF, .npy, .zarr, PNG, JPEG)")
    p.add_argument("--model", default="sam_vit_b",
                   help="interactive model: registry id (see 'weights list') or config name")
    p.add_argument("--weights", default=None,
                   help="checkpoint file of --model ('random' for random weights)")
    if propagation:
        p.add_argument("--propagation-model", default="sam2.1_hiera_tiny",
                       help="SAM 2 model carrying objects through the stack")
        p.add_argument("--propagation-weights", default=None,
                       help="checkpoint of --propagation-model ('random' for random weights)")
    p.add_argument("--axis", type=_axis, default="auto",
                   help="stack (z or t) axis of the data; 'none' for a 2D image (default: 0 "
                        "for 3D data without --channel-axis, else none; (H, W, 3 or 4) data is "
                        "an RGB(A) image)")
    p.add_argument("--channel-axis", type=_axis, default=None, help="channel axis, if any")
    p.add_argument("--outer-axis", type=_axis, default=None,
                   help="4D data: the other non-spatial axis (e.g. t when --axis is z)")
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    p.add_argument("--dtype", default="auto", help="fp32, bf16, fp16 or auto")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="embedding cache folder (default: $NAPARI_FOCSAM_CACHE_DIR or the user "
                        "cache dir)")
    p.add_argument("--no-cache", action="store_true", help="keep embeddings in RAM only")
    p.add_argument("--cache-dtype", choices=("float32", "float16"), default="float32",
                   help="disk cache precision")
    p.add_argument("--offline", action="store_true", help="never download weights")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_stack_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``embed``, ``segment`` and ``propagate`` to the ``napari-focsam`` parser."""
    embed = sub.add_parser("embed", help="precompute (cache) the embeddings of an image or stack")
    _common(embed, propagation=True)
    embed.add_argument("--only", choices=("interactive", "propagation"), default=None,
                       help="cache one model's embeddings only")
    seg = sub.add_parser("segment", help="draw objects from a prompts file -> labels TIFF")
    _common(seg, propagation=False)
    seg.add_argument("--prompts", type=Path, required=True, help="CSV or JSON prompts file")
    seg.add_argument("--output", "-o", type=Path, required=True, help="labels TIFF to write")
    prop = sub.add_parser("propagate", help="carry prompted objects through the stack -> labels")
    _common(prop, propagation=True)
    prop.add_argument("--prompts", type=Path, required=True, help="CSV or JSON prompts file")
    prop.add_argument("--output", "-o", type=Path, required=True, help="labels TIFF to write")
    prop.add_argument("--direction", choices=("both", "forward", "backward"), default="both")


def _stack_axes(args, data) -> tuple[int | None, int | None, int | None]:
    axis, channel_axis = args.axis, args.channel_axis
    if axis == "auto":
        if data.ndim == 3 and channel_axis is None and data.shape[-1] in (3, 4):
            # (H, W, 3 | 4): an RGB(A) image (PNG, JPEG, RGB TIFF), not a stack of
            # 3-pixel-wide frames
            return None, 2, args.outer_axis
        axis = 0 if (data.ndim == 3 and channel_axis is None) or data.ndim == 4 else None
    return axis, channel_axis, args.outer_axis


def _segmenter(args, with_propagation: bool):
    from .api.io import open_image
    from .api.models import load_model
    from .api.segmenter import Segmenter

    data = open_image(args.input)
    axis, channel_axis, outer_axis = _stack_axes(args, data)
    common = {"device": args.device, "dtype": args.dtype, "offline": args.offline or None}
    interactive = load_model(args.model, weights=args.weights, role="interactive", **common)
    propagation = None
    if with_propagation and axis is not None:
        same = (args.propagation_model == args.model
                and args.propagation_weights in (None, args.weights))
        propagation = interactive if same else load_model(
            args.propagation_model, weights=args.propagation_weights, role="propagation", **common)
    cache_root = False if args.no_cache else args.cache_dir
    return Segmenter(data, interactive=interactive, propagation=propagation, stack_axis=axis,
                     channel_axis=channel_axis, outer_axis=outer_axis, cache_root=cache_root,
                     disk_dtype=args.cache_dtype)


def _bar(args, desc: str):
    from tqdm import tqdm

    return tqdm(desc=desc, unit="frame", file=sys.stderr, disable=args.quiet or None)


def _drain(progress, args, desc: str) -> None:
    bars: dict[str, object] = {}
    try:
        for p in progress:
            bar = bars.get(p.stage)
            if bar is None:
                bar = bars[p.stage] = _bar(args, f"{desc} {p.stage}")
            bar.total = p.total
            bar.n = p.done
            bar.refresh()
    finally:
        for bar in bars.values():
            bar.close()


def _run(args) -> int:
    from .api.io import write_labels_tiff
    from .api.prompts_file import read_prompts

    if args.command == "embed":
        seg = _segmenter(args, with_propagation=True)
        if args.only is not None and args.only not in seg.stores:
            raise ValueError(f"no {args.only} model for this input (2D image?)")
        if args.only is None:
            stores = list({id(s): s for s in seg.stores.values()}.values())
            _drain(seg.embed(), args, "embed")
        else:
            from .api.segmenter import Progress

            stores = [seg.stores[args.only]]
            _drain((Progress(f"embed:{args.only}", p.done, p.total, p.frame)
                    for p in stores[0].compute()), args, "embed")
        encoded = sum(s.encoder_calls for s in stores)
        n = len(seg.source)
        sys.stdout.write(f"{n} frames cached for {len(stores)} model(s); {encoded} encoded now, "
                         f"{n * len(stores) - encoded} taken from the cache\n")
        return EXIT_OK
    prompts = read_prompts(args.prompts)
    if args.command == "segment":
        seg = _segmenter(args, with_propagation=False)
        frames = sorted({(p.outer, p.frame) for p in prompts}, key=lambda k: (k[0] or 0, k[1] or 0))
        for outer, frame in frames:
            seg.segment_frame([p for p in prompts if (p.outer, p.frame) == (outer, frame)], frame,
                              outer)
    else:
        seg = _segmenter(args, with_propagation=True)
        if seg.propagation is None:
            raise ValueError("propagate needs a stack: give --axis (the data looks 2D)")
        _drain(seg.propagate(prompts, args.direction), args, "propagate")
    out = seg.labels_in_data_order()
    write_labels_tiff(args.output, out)
    ids = sorted(int(i) for i in set(map(int, {p.obj_id for p in prompts})))
    sys.stdout.write(f"labels {out.shape} with objects {ids} written to {args.output}\n")
    return EXIT_OK


def run_stack(args) -> int:
    """Run ``embed``, ``segment`` or ``propagate``; returns the exit code.

    0 done; 2 bad input (file, axes, prompts, model choice); 3-5 weights problems (see
    ``weights``); 6 the embedding cache cannot be used (e.g. disk full, no write access);
    130 interrupted (nothing written).
    """
    from .engine.propagation_state import PropagationError

    return run_with_exit_codes(lambda: _run(args), "no output written (cached embeddings are kept)",
                               (IndexError, PropagationError))
