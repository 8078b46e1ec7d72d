"""``napari-focsam bench``: run a benchmark and print its figures.

Targets
-------
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
bench track-memory
    Resident memory and what the propagation engine holds while "Track all" (``track``)
    carries objects through a long synthetic stack (flat when bounded).
bench gui-click
    Click -> live preview drawn in the napari dock (3D nuclei sample, random-weight SAM ViT-B),
    in stages, and the first click after choosing the model; needs a display (Xvfb works).
bench tiling
    Small nuclei on a large synthetic field, one click each: tiled against resized embeddings
    (mean IoU, nuclei found, time, peak memory), with a stand-in model of SAM's geometry.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import device_options, json_option, set_command, threads_option

__all__ = ["add_parser"]

_NOTHING_WRITTEN = "no figures written"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``bench`` and its targets to the ``napari-focsam`` subcommands; returns its parser."""
    bench = subparsers.add_parser("bench", help="run a benchmark and print its figures")
    targets = bench.add_subparsers(dest="target", required=True)

    def target(name: str, summary: str, figures: bool = True) -> argparse.ArgumentParser:
        parents = [device_options(default="cpu", dtype=False), threads_option()]
        return targets.add_parser(name, help=summary,
                                  parents=[*parents, json_option()] if figures else parents)

    suite = target("all", "every benchmark; writes bench.json and bench.md", figures=False)
    suite.add_argument("--out", type=Path, default=Path("bench-results"),
                       help="folder for bench.json and bench.md (default bench-results)")
    suite.add_argument("--quick", action="store_true",
                       help="tiny configs: checks the machinery in seconds (figures mean nothing)")
    suite.add_argument("--only", type=_names, default=None,
                       help="comma-separated subset of sam,focsam,sam2,sam2-memory,track-memory,tiling,"
                            "gui-click (with a display)")
    set_command(suite, _all, interrupted="bench.json and bench.md in --out hold the "
                                         "benchmarks finished so far")

    sam = target("sam", "SAM encoder time, click latency, peak RSS")
    sam.add_argument("--model", default="sam_vit_b",
                     help="SAM config (default sam_vit_b; sam_test_tiny for a quick check)")
    sam.add_argument("--dtypes", type=_names, default="fp32,bf16",
                     help="comma-separated encoder precisions (default fp32,bf16)")
    sam.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up")
    sam.add_argument("--image-size", type=int, nargs=2, default=(1024, 1024),
                     metavar=("H", "W"), help="image size masks are produced at")
    set_command(sam, _sam, interrupted=_NOTHING_WRITTEN)

    focsam = target("focsam", "FocSAM refine step (small / full focus box), decoder click on "
                              "original and refined embeddings")
    # hidden: the real (ViT-H) sizes are the point; focsam_test_tiny makes a quick check
    focsam.add_argument("--model", default="focsam_vit_h", help=argparse.SUPPRESS)
    focsam.add_argument("--dtypes", type=_names, default="fp32,bf16",
                        help="comma-separated refiner precisions (default fp32,bf16)")
    focsam.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up")
    set_command(focsam, _focsam, interrupted=_NOTHING_WRITTEN)

    sam2 = target("sam2", "SAM 2 encoder and propagation time per frame")
    sam2.add_argument("--model", default="sam2.1_hiera_tiny", help="SAM 2 config")
    sam2.add_argument("--dtypes", type=_names, default="fp32,bf16", help="comma-separated precisions")
    sam2.add_argument("--frames", type=int, default=4, help="frames of the synthetic stack")
    sam2.add_argument("--objects", type=_counts, default="1,3", help="comma-separated object counts")
    sam2.add_argument("--image-size", type=int, default=None, help="model input side override")
    set_command(sam2, _sam2, interrupted=_NOTHING_WRITTEN)

    mem = target("sam2-memory", "RSS over a long propagation pass")
    mem.add_argument("--model", default="sam2.1_hiera_tiny", help="SAM 2 config")
    mem.add_argument("--frames", type=int, default=500, help="frames of the synthetic stack")
    mem.add_argument("--objects", type=int, default=2, help="objects to track")
    mem.add_argument("--image-size", type=int, default=256, help="model input side")
    mem.add_argument("--no-unbounded", action="store_true",
                     help="skip the unbounded run shown for contrast")
    set_command(mem, _sam2_memory, interrupted=_NOTHING_WRITTEN)

    track = target("track-memory", "RSS and engine memory over a long 'track' run")
    track.add_argument("--model", default="sam2.1_hiera_tiny",
                       help="SAM 2 config (default sam2.1_hiera_tiny; sam2_test_tiny for a quick "
                            "check)")
    track.add_argument("--frames", type=_positive, default=500,
                       help="frames of the synthetic stack (default 500)")
    track.add_argument("--image-size", type=_positive, default=256,
                       help="model input side and frame size (default 256)")
    track.add_argument("--lanes", type=_positive, default=6,
                       help="discs crossing the field, each one tracked object (default 6)")
    track.add_argument("--sample-every", type=_positive, default=50, metavar="N",
                       help="frames between memory samples (default 50)")
    set_command(track, _track_memory, interrupted=_NOTHING_WRITTEN)

    gui = targets.add_parser(
        "gui-click", help="click -> preview drawn in the napari dock, in stages (needs a display)",
        parents=[threads_option(), json_option()])
    gui.add_argument("--model", default="sam_vit_b",
                     help="interactive model, random weights (default sam_vit_b)")
    gui.add_argument("--clicks", type=_positive, default=10,
                     help="timed clicks after a warm-up click (default 10)")
    gui.add_argument("--device", default="auto", help="the dock's device (default auto)")
    gui.add_argument("--dtype", default="auto", help="the dock's precision (default auto)")
    gui.add_argument("--first-click-delay", type=float, default=0.0, metavar="S",
                     help="seconds between choosing the model and the first click (default 0)")
    gui.add_argument("--screenshot", type=Path, default=None, metavar="PNG",
                     help="save the canvas with the last preview")
    set_command(gui, _gui_click, interrupted=_NOTHING_WRITTEN)

    tiling = targets.add_parser(
        "tiling", help="tiled vs resized embeddings on a large field of small nuclei",
        parents=[threads_option(), json_option()])
    tiling.add_argument("--size", type=int, default=4096, help="side of the field (default 4096)")
    tiling.add_argument("--nuclei", type=int, default=300, help="nuclei in the field (default 300)")
    tiling.add_argument("--seed", type=int, default=0, help="seed of the field")
    tiling.add_argument("--tile-size", type=int, default=None,
                        help="tile side of the tiled run (default: the model input, 1024)")
    tiling.add_argument("--tile-halo", type=int, default=None,
                        help="halo of the tiled run (default: 1/8 of the tile)")
    tiling.add_argument("--in-process", action="store_true",
                        help="run both modes in this process (faster start; where the peak "
                             "RSS cannot be reset, it is then the process's so far)")
    set_command(tiling, _tiling, interrupted=_NOTHING_WRITTEN)
    return bench


def _names(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _counts(text: str) -> tuple[int, ...]:
    """``"1,3"`` -> ``(1, 3)``; positive integers."""
    try:
        counts = tuple(int(n) for n in _names(text))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return counts


def _positive(text: str) -> int:
    """A positive integer option."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _use_threads(threads: int | None) -> None:
    """Set torch's (process-wide) CPU thread count when ``--threads`` is given."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _print_figures(args: argparse.Namespace, result: dict, table: str) -> int:
    """Print `table`; write `result` to ``--json`` if given."""
    sys.stdout.write(table + "\n")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        sys.stdout.write(f"figures written to {args.json}\n")
    return 0


def _all(args: argparse.Namespace) -> int:
    from ..benchmarks.suite import run_suite

    _use_threads(args.threads)
    for step in run_suite(args.out, quick=args.quick, device=args.device, threads=args.threads,
                          only=args.only or None):
        sys.stderr.write(f"[bench] {step.name} done ({step.done}/{step.total})\n")
    sys.stdout.write((args.out / "bench.md").read_text())
    sys.stdout.write(f"figures written to {args.out / 'bench.json'} and {args.out / 'bench.md'}\n")
    return 0


def _sam(args: argparse.Namespace) -> int:
    from ..benchmarks.sam import format_sam_table, run_sam_benchmark

    _use_threads(args.threads)
    result = run_sam_benchmark(model=args.model, dtypes=args.dtypes, repeats=args.repeats,
                               image_hw=tuple(args.image_size), device=args.device)
    return _print_figures(args, result, format_sam_table(result))


def _focsam(args: argparse.Namespace) -> int:
    from ..benchmarks.focsam import format_focsam_table, run_refiner_benchmark

    _use_threads(args.threads)
    result = run_refiner_benchmark(dtypes=args.dtypes, repeats=args.repeats,
                                   threads=args.threads, device=args.device, model=args.model)
    return _print_figures(args, result, format_focsam_table(result))


def _sam2(args: argparse.Namespace) -> int:
    from ..benchmarks.sam2 import format_sam2_table, run_sam2_benchmark

    _use_threads(args.threads)
    result = run_sam2_benchmark(model_name=args.model, dtypes=args.dtypes,
                                frames=args.frames,
                                objects=args.objects,
                                device=args.device, image_size=args.image_size)
    return _print_figures(args, result, format_sam2_table(result))


def _sam2_memory(args: argparse.Namespace) -> int:
    from ..benchmarks.sam2 import format_memory_table, run_memory_benchmark

    _use_threads(args.threads)
    result = run_memory_benchmark(frames=args.frames, image_size=args.image_size,
                                  objects=args.objects, model_name=args.model,
                                  compare_unbounded=not args.no_unbounded, device=args.device)
    return _print_figures(args, result, format_memory_table(result))


def _tiling(args: argparse.Namespace) -> int:
    from ..benchmarks.tiling import format_tiling_table, run_tiling_benchmark

    _use_threads(args.threads)
    result = run_tiling_benchmark(args.size, args.nuclei, seed=args.seed, tile=args.tile_size,
                                  halo=args.tile_halo, isolate=not args.in_process)
    return _print_figures(args, result, format_tiling_table(result))


def _gui_click(args: argparse.Namespace) -> int:
    from ..benchmarks.gui_click import format_gui_click_table, run_gui_click_benchmark

    _use_threads(args.threads)
    result = run_gui_click_benchmark(
        clicks=args.clicks, model=args.model, device=args.device, dtype=args.dtype,
        first_click_delay=args.first_click_delay,
        screenshot=None if args.screenshot is None else str(args.screenshot))
    return _print_figures(args, result, format_gui_click_table(result))


def _track_memory(args: argparse.Namespace) -> int:
    from ..benchmarks.timing import machine_info
    from ..benchmarks.track_memory import format_track_memory, run_track_memory_benchmark
    from ..families import UnknownModelError
    from ..models.sam2.config import SAM2_CONFIGS

    if args.model not in SAM2_CONFIGS:
        raise UnknownModelError(args.model, tuple(sorted(SAM2_CONFIGS)))
    _use_threads(args.threads)
    result = run_track_memory_benchmark(frames=args.frames, image_size=args.image_size,
                                        model_name=args.model, lanes=args.lanes,
                                        sample_every=args.sample_every, device=args.device)
    m = result["machine"] = machine_info()
    table = (f"{format_track_memory(result)}\n"
             f"on {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads), "
             f"torch {m['torch']}")
    return _print_figures(args, result, table)
