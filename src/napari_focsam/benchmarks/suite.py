"""``napari-focsam bench all``: every benchmark in one run, as JSON and a markdown report.

Runs the SAM encoder + click, FocSAM refine, SAM 2 propagation (1 / 3 / 10 objects, fp32 and
bf16), SAM 2 memory-over-stack-length, track-all memory, tiling (stand-in model) and, with a
display, the GUI click -> preview benchmarks with their real model sizes (random weights), or
tiny configs with ``quick=True`` (a smoke test of the
machinery, seconds long; its figures mean nothing).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .gui_click import display_problem
from .timing import BenchmarkError, machine_info

__all__ = ["SuiteStep", "run_suite", "suite_markdown"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuiteStep:
    """Progress of `run_suite`: benchmark `name` (`done` of `total`) finished."""

    name: str
    done: int
    total: int


def _plan(quick: bool, device: str, threads: int | None) -> list[tuple[str, Callable[[], dict],
                                                                        Callable[[dict], str]]]:
    from .focsam import format_focsam_table, run_refiner_benchmark
    from .gui_click import format_gui_click_table, run_gui_click_benchmark
    from .sam import format_sam_table, run_sam_benchmark
    from .sam2 import (
        format_memory_table,
        format_sam2_table,
        run_memory_benchmark,
        run_sam2_benchmark,
    )
    from .tiling import format_tiling_table, run_tiling_benchmark
    from .track_memory import format_track_memory, run_track_memory_benchmark

    if quick:
        sam = {"model": "sam_test_tiny", "image_hw": (128, 128), "repeats": 1}
        focsam = {"model": "focsam_test_tiny", "repeats": 1}
        sam2 = {"model_name": "sam2_test_tiny", "image_size": 128, "frames": 3, "objects": (1, 3),
                "passes": 1}
        memory = {"model_name": "sam2_test_tiny", "image_size": 128, "frames": 30,
                  "sample_every": 10, "compare_unbounded": False}
        tiling = {"size": 1536, "n": 30, "isolate": False}
        track = {"model_name": "sam2_test_tiny", "image_size": 128, "frames": 30, "lanes": 3,
                 "sample_every": 10}
        gui = {"model": "sam_test_tiny", "clicks": 2}
    else:
        sam = {"model": "sam_vit_b", "repeats": 3}
        focsam = {"model": "focsam_vit_h", "repeats": 3}
        sam2 = {"model_name": "sam2.1_hiera_tiny", "frames": 9, "objects": (1, 3, 10), "passes": 1}
        memory = {"model_name": "sam2.1_hiera_tiny", "image_size": 256, "frames": 500,
                  "sample_every": 25}
        tiling = {"size": 4096, "n": 300}
        track = {"model_name": "sam2.1_hiera_tiny", "image_size": 256, "frames": 500,
                 "sample_every": 50}
        gui = {"model": "sam_vit_b", "clicks": 10}
    plan = [
        ("sam", lambda: run_sam_benchmark(device=device, **sam), format_sam_table),
        ("focsam", lambda: run_refiner_benchmark(device=device, threads=threads, **focsam),
         format_focsam_table),
        ("sam2", lambda: run_sam2_benchmark(device=device, threads=threads, **sam2),
         format_sam2_table),
        ("sam2-memory", lambda: run_memory_benchmark(device=device, threads=threads, **memory),
         format_memory_table),
        ("track-memory", lambda: run_track_memory_benchmark(device=device, **track),
         format_track_memory),
        ("tiling", lambda: run_tiling_benchmark(**tiling), format_tiling_table),
    ]
    if display_problem() is None:  # it opens a napari window
        plan.append(("gui-click", lambda: run_gui_click_benchmark(device=device, **gui),
                     format_gui_click_table))
    else:
        logger.info("bench all: gui-click left out (no display)")
    return plan


def run_suite(out_dir: str | Path, *, quick: bool = False, device: str = "cpu",
              threads: int | None = None, only: tuple[str, ...] | None = None
              ) -> Iterator[SuiteStep]:
    """Run the benchmarks and write ``bench.json`` and ``bench.md`` into `out_dir`.

    A generator: one `SuiteStep` per finished benchmark; the files are (re)written after each,
    atomically, so stopping early keeps the figures measured so far.

    Parameters
    ----------
    out_dir : path
        Output folder (created).
    quick : bool
        Tiny configs (smoke test).
    device : str
        Torch device.
    threads : int, optional
        Torch CPU threads.
    only : tuple of str, optional
        Subset of ``("sam", "focsam", "sam2", "sam2-memory", "track-memory", "tiling",
        "gui-click")`` (gui-click only with a display).
    """
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    plan = _plan(quick, device, threads)
    if only:
        unknown = set(only) - {name for name, *_ in plan}
        if "gui-click" in unknown and display_problem():
            raise BenchmarkError(display_problem())
        if unknown:
            raise BenchmarkError(f"unknown benchmarks {sorted(unknown)}; choose from "
                             f"{[name for name, *_ in plan]}")
        plan = [step for step in plan if step[0] in only]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_info(), "quick": quick, "started": time.strftime("%Y-%m-%d %H:%M"),
              "results": {}, "tables": {}}
    for done, (name, run, fmt) in enumerate(plan, start=1):
        logger.info("benchmark %s (%d/%d)", name, done, len(plan))
        start = time.perf_counter()
        result = run()
        result["wall_s"] = time.perf_counter() - start
        report["results"][name] = result
        report["tables"][name] = fmt(result)
        if "floors" in result:  # the GEMM peaks (measured once per process)
            report.setdefault("floors", {"gemm_peak": {}})["gemm_peak"].update(
                result["floors"]["gemm_peak"])
        _write(out / "bench.json", json.dumps(report, indent=2, default=str))
        _write(out / "bench.md", suite_markdown(report))
        yield SuiteStep(name, done, len(plan))


def suite_markdown(report: dict) -> str:
    """The markdown report: machine, then each benchmark's table."""
    m = report["machine"]
    lines = [
        "# napari-focsam benchmarks",
        "",
        f"Measured {report['started']} on {m['cpu']} ({m['cores']} cores, {m['torch_threads']} "
        f"torch threads, native bf16: {m['cpu_native_bf16']}, GPU: {m.get('cuda') or 'none'}), "
        f"torch {m['torch']}, Python {m['python']}. Random weights (speed does not depend on "
        "them); the tiling benchmark uses a stand-in model with SAM's geometry.",
    ]
    if report.get("floors"):
        from .floors import peaks_line

        lines += ["", peaks_line(report["floors"]["gemm_peak"]) + ": the floor columns are the "
                  "time if every FLOP ran at this speed, min/floor how far the figure is from it."]
    if report["quick"]:
        lines += ["", "**Quick mode: tiny configs, a smoke test: the figures mean nothing.**"]
    for name, table in report["tables"].items():
        lines += ["", f"## {name} ({report['results'][name]['wall_s']:.0f} s)", "", "```", table,
                  "```"]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
