"""The ``napari-focsam`` command line.

Subcommands
-----------
weights list | download | verify | path
    The checkpoint registry: what is cached, fetch (with hash check), verify, where it goes.
embed
    Compute an image's or stack's embeddings once (disk cache, resumable).
segment
    Draw the objects of a prompts file (CSV / JSON) on their frames -> labels TIFF.
propagate
    Carry every prompted object through the z / t stack with SAM 2 -> labels TIFF.
evaluate
    NoC@85/90/95 and mIoU@k with the FocSAM click protocol on a standard dataset layout.
evaluate-stack
    Per-frame IoU, mean J and drift of propagated objects against ground-truth labels.
bench all
    Every benchmark below in one run (``--quick`` for a smoke test); bench.json + bench.md.
bench sam
    Image-encoder time (fp32 / bf16), click latency and peak RSS of a SAM model.
bench focsam
    FocSAM's refine step (fp32 / bf16, small and full focus box) and the decoder click on
    original and refined embeddings.
bench sam2
    SAM 2 image-encoder time and propagation time per frame (1 and 3 objects, fp32 / bf16).
bench sam2-memory
    Resident memory while propagating through a long synthetic stack (flat when bounded).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .cli_evaluate import add_evaluate_parser, run_evaluate
from .cli_evaluate_stack import add_evaluate_stack_parser, run_evaluate_stack
from .cli_stack import add_stack_parsers, run_stack
from .cli_weights import add_weights_parser, run_weights

logger = logging.getLogger("napari_focsam")


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    targets = bench.add_subparsers(dest="target", required=True)
    sam = targets.add_parser("sam", help="SAM encoder time, click latency, peak RSS")
    sam.add_argument("--model", default="sam_vit_b",
                     help="SAM config (default sam_vit_b; sam_test_tiny for a quick check)")
    sam.add_argument("--dtypes", default="fp32,bf16",
                     help="comma-separated encoder precisions (default fp32,bf16)")
    sam.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up")
    sam.add_argument("--image-size", type=int, nargs=2, default=(1024, 1024),
                     metavar=("H", "W"), help="image size masks are produced at")
    sam.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    sam.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    sam.add_argument("--json", type=Path, default=None, help="also write the figures here")
    focsam = targets.add_parser("focsam", help="FocSAM refine step (small / full focus box), "
                                               "decoder click on original and refined embeddings")
    # hidden: the real (ViT-H) sizes are the point; focsam_test_tiny makes a quick check
    focsam.add_argument("--model", default="focsam_vit_h", help=argparse.SUPPRESS)
    focsam.add_argument("--dtypes", default="fp32,bf16",
                        help="comma-separated refiner precisions (default fp32,bf16)")
    focsam.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up")
    focsam.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    focsam.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    focsam.add_argument("--json", type=Path, default=None, help="also write the figures here")

    sam2 = targets.add_parser("sam2", help="SAM 2 encoder and propagation time per frame")
    sam2.add_argument("--model", default="sam2.1_hiera_tiny", help="SAM 2 config")
    sam2.add_argument("--dtypes", default="fp32,bf16", help="comma-separated precisions")
    sam2.add_argument("--frames", type=int, default=4, help="frames of the synthetic stack")
    sam2.add_argument("--objects", default="1,3", help="comma-separated object counts")
    sam2.add_argument("--image-size", type=int, default=None, help="model input side override")
    sam2.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    sam2.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    sam2.add_argument("--json", type=Path, default=None, help="also write the figures here")

    suite = targets.add_parser("all", help="every benchmark; writes bench.json and bench.md")
    suite.add_argument("--out", type=Path, default=Path("bench-results"),
                       help="folder for bench.json and bench.md (default bench-results)")
    suite.add_argument("--quick", action="store_true",
                       help="tiny configs: checks the machinery in seconds (figures mean nothing)")
    suite.add_argument("--only", default=None,
                       help="comma-separated subset of sam,focsam,sam2,sam2-memory")
    suite.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    suite.add_argument("--threads", type=int, default=None, help="torch CPU threads")

    mem = targets.add_parser("sam2-memory", help="RSS over a long propagation pass")
    mem.add_argument("--model", default="sam2.1_hiera_tiny", help="SAM 2 config")
    mem.add_argument("--frames", type=int, default=500, help="frames of the synthetic stack")
    mem.add_argument("--objects", type=int, default=2, help="objects to track")
    mem.add_argument("--image-size", type=int, default=256, help="model input side")
    mem.add_argument("--no-unbounded", action="store_true",
                     help="skip the unbounded run shown for contrast")
    mem.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    mem.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    mem.add_argument("--json", type=Path, default=None, help="also write the figures here")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``napari-focsam``."""
    parser = argparse.ArgumentParser(prog="napari-focsam", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"napari-focsam {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    add_weights_parser(sub)
    add_stack_parsers(sub)
    add_evaluate_parser(sub)
    add_evaluate_stack_parser(sub)
    _add_bench_parser(sub)
    return parser


def _split(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _run_bench(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.target == "all":
        from .benchmarks.suite import run_suite

        only = _split(args.only) if args.only else None
        for step in run_suite(args.out, quick=args.quick, device=args.device,
                              threads=args.threads, only=only):
            sys.stderr.write(f"[bench] {step.name} done ({step.done}/{step.total})\n")
        sys.stdout.write((args.out / "bench.md").read_text())
        sys.stdout.write(f"figures written to {args.out / 'bench.json'} and {args.out / 'bench.md'}\n")
        return 0
    if args.target == "sam2":
        from .benchmarks.sam2 import format_sam2_table, run_sam2_benchmark

        result = run_sam2_benchmark(model_name=args.model, dtypes=_split(args.dtypes),
                                    frames=args.frames,
                                    objects=tuple(int(n) for n in _split(args.objects)),
                                    device=args.device, image_size=args.image_size)
        text = format_sam2_table(result)
    elif args.target == "sam2-memory":
        from .benchmarks.sam2 import format_memory_table, run_memory_benchmark

        result = run_memory_benchmark(frames=args.frames, image_size=args.image_size,
                                      objects=args.objects, model_name=args.model,
                                      compare_unbounded=not args.no_unbounded, device=args.device)
        text = format_memory_table(result)
    elif args.target == "focsam":
        from .benchmarks.focsam import format_focsam_table, run_refiner_benchmark

        result = run_refiner_benchmark(dtypes=_split(args.dtypes), repeats=args.repeats,
                                       threads=args.threads, device=args.device,
                                       model=args.model)
        text = format_focsam_table(result)
    else:
        from .benchmarks.sam import format_sam_table, run_sam_benchmark

        result = run_sam_benchmark(model=args.model, dtypes=_split(args.dtypes),
                                   repeats=args.repeats, image_hw=tuple(args.image_size),
                                   device=args.device)
        text = format_sam_table(result)
    sys.stdout.write(text + "\n")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        sys.stdout.write(f"figures written to {args.json}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "weights":
            return run_weights(args)
        if args.command in ("embed", "segment", "propagate"):
            return run_stack(args)
        if args.command == "evaluate":
            return run_evaluate(args)
        if args.command == "evaluate-stack":
            return run_evaluate_stack(args)
        if args.command == "bench":
            return _run_bench(args)
    except (KeyError, ValueError) as exc:
        sys.stderr.write(f"napari-focsam: error: {exc}\n")
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
