"""Timing and memory helpers shared by the benchmarks, and their settings error."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ..errors import UserError
from ..models.cpu import cpu_model, cpu_native_bf16


class BenchmarkError(UserError, ValueError):
    """Benchmark settings that cannot be run (unknown benchmark, too few frames...)."""


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated runs (after warm-up)."""

    min_s: float
    median_s: float
    runs: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed calls.

    Parameters
    ----------
    fn : callable
        The work; its result is discarded.
    repeats, warmup : int
        Timed and untimed calls.

    Returns
    -------
    Timing
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return Timing(min(times), statistics.median(times), len(times))


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def machine_info() -> dict[str, object]:
    """What the figures were measured on."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_native_bf16": cpu_native_bf16(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
