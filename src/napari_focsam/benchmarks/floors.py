"""Floors: how fast a timed figure could be on this machine, from its FLOPs and the GEMM peak.

- :func:`gemm_peak`: this machine's matmul speed (FLOP/s) in a dtype: square matmuls of a few
  sizes, with the threads as configured, the best of a few runs (cached per process).
- :func:`count_flops` / :func:`meta_flops`: FLOPs of some work, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention; element-wise
  work, norms and softmax count nothing), on the real tensors or on the ``meta`` device
  (shapes only, nothing computed).
- A **floor** is FLOPs / peak: the time if every FLOP ran at the speed of a large GEMM. The
  ratio ``time / floor`` says how far a figure is from it (1x: nothing left to gain from
  faster kernels; attention, memory traffic and element-wise work keep real figures above).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..models import kernels

__all__ = [
    "FLOOR_HEADER",
    "count_flops",
    "floor_cells",
    "floor_entry",
    "gemm_peak",
    "gemm_peaks",
    "kernel_lines",
    "meta_flops",
    "peaks_line",
]

logger = logging.getLogger(__name__)

#: Square matmul sides timed by default (CPU; CUDA doubles them).
GEMM_SIZES = (512, 1024, 2048)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_peaks: dict[tuple, dict] = {}


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    return _DTYPES[dtype] if isinstance(dtype, str) else dtype


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    torch.mm(a, b, out=out)


def _linear(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    F.linear(a, b)  # a @ b.T: the path of the models' linear layers


#: The GEMM paths timed: a matmul and a linear layer can take different kernels.
_GEMM_PATHS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]] = {
    "mm": _mm, "linear": _linear}


def _time_gemm(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None], a: torch.Tensor,
               b: torch.Tensor, out: torch.Tensor, device: torch.device, repeats: int) -> float:
    """Best seconds of `repeats` runs of ``fn(a, b, out)`` after a warm-up (fewer once a run
    takes over a second)."""
    fn(a, b, out)  # warm-up
    _sync(device)
    seconds = math.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn(a, b, out)
        _sync(device)
        seconds = min(seconds, time.perf_counter() - start)
        if seconds > 1.0:
            break
    return seconds


def gemm_peak(dtype: str | torch.dtype = "fp32", device: str | torch.device = "cpu",
              sizes: Sequence[int] | None = None, repeats: int = 3) -> dict:
    """This machine's GEMM speed in `dtype`: the best FLOP/s of square matmuls, as
    ``torch.mm`` and as ``F.linear`` (the two can take different kernels: without native bf16,
    bf16 ``torch.mm`` is 15-70x slower than bf16 ``F.linear``).

    Each size runs once untimed, then `repeats` times (fewer if a run takes over a second);
    larger sizes are skipped once a run takes over 2 s. The answer is cached per dtype, device,
    sizes, repeats and thread count.

    Parameters
    ----------
    dtype : str or torch.dtype
        ``"fp32"``, ``"bf16"``, ``"fp16"`` or a dtype.
    device : str or torch.device
        Torch device.
    sizes : sequence of int, optional
        Matrix sides (default `GEMM_SIZES`, twice those on CUDA).
    repeats : int
        Timed runs per size.

    Returns
    -------
    dict
        ``flops_per_s`` (the best), ``size`` (its side), ``seconds`` (its time), ``via``
        (``"mm"`` or ``"linear"``), ``per_size`` (side -> FLOP/s), ``threads``.
    """
    dev = torch.device(device)
    dt = _dtype(dtype)
    if sizes is None:
        sizes = tuple(2 * n for n in GEMM_SIZES) if dev.type == "cuda" else GEMM_SIZES
    cache_key = (dt, str(dev), tuple(sizes), repeats, torch.get_num_threads())
    if cache_key in _peaks:
        return dict(_peaks[cache_key])
    gen = torch.Generator().manual_seed(0)
    per_size: dict[int, float] = {}
    best = {"flops_per_s": 0.0, "size": 0, "seconds": math.inf, "via": ""}
    paths = dict(_GEMM_PATHS)
    with torch.no_grad():
        for n in sizes:
            a = torch.randn(n, n, generator=gen).to(dev, dt)
            b = torch.randn(n, n, generator=gen).to(dev, dt)
            out = torch.empty(n, n, device=dev, dtype=dt)
            timed = {name: _time_gemm(fn, a, b, out, dev, repeats) for name, fn in paths.items()}
            via = min(timed, key=timed.__getitem__)
            seconds = timed[via]
            # a path 4x slower than the other is not timed at larger sizes (CPUs without native
            # bf16: torch.mm in bf16 falls to a reference loop, 0.3-1.3 GFLOP/s, while F.linear
            # converts to fp32 through oneDNN, 10-20 GFLOP/s, on 2 cores of an AMD EPYC)
            paths = {name: fn for name, fn in paths.items() if timed[name] <= 4 * seconds}
            rate = 2.0 * n**3 / seconds
            per_size[int(n)] = rate
            if rate > best["flops_per_s"]:
                best = {"flops_per_s": rate, "size": int(n), "seconds": seconds, "via": via}
            if seconds > 2.0:
                break
    result = {**best, "per_size": per_size, "threads": torch.get_num_threads(),
              "dtype": str(dt).replace("torch.", ""), "device": str(dev)}
    _peaks[cache_key] = result
    logger.info("GEMM peak %s on %s: %.1f GFLOP/s (n=%d)", result["dtype"], dev,
                result["flops_per_s"] / 1e9, result["size"])
    return dict(result)


def gemm_peaks(dtypes: Sequence[str] = ("fp32", "bf16"), device: str | torch.device = "cpu",
               sizes: Sequence[int] | None = None) -> dict[str, dict]:
    """:func:`gemm_peak` of each dtype name (``"fp32"`` ...): name -> its dict."""
    return {name: gemm_peak(name, device, sizes) for name in dict.fromkeys(dtypes)}


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """``aten._scaled_dot_product_flash_attention_for_cpu``: torch's counter has no formula."""
    b, h, nq, d = query_shape
    return 2 * b * h * nq * key_shape[-2] * (d + value_shape[-1])


def _flop_formulas() -> dict:
    """aten overload packet -> FLOP formula (torch's, plus CPU flash attention)."""
    from torch.utils.flop_counter import flop_registry, shape_wrapper

    formulas = dict(flop_registry)
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None and cpu_sdpa not in formulas:
        formulas[cpu_sdpa] = shape_wrapper(_sdpa_flops)
    return formulas


def _counting_mode():
    """A dispatch mode adding up the FLOPs of the aten ops it sees, with torch's formulas.

    ``FlopCounterMode`` itself also tracks modules with autograd hooks, which fails on
    modules returning a parameter as it is under no_grad; only the totals are needed here.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    formulas = _flop_formulas()

    class _Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = formulas.get(func._overloadpacket)
            if formula is not None:
                self.total += int(formula(*args, **kwargs, out_val=out))
            return out

    return _Count()


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of calling `fn` (on real tensors; it runs once), as
    ``torch.utils.flop_counter`` counts them.

    Kernel measuring is paused (`napari_focsam.models.kernels.paused`) so that no candidate
    timing is counted; calls whose kernel is not chosen yet take the default rule.
    """
    with kernels.paused(), _counting_mode() as counter:
        fn()
    return int(counter.total)


def meta_flops(build: Callable[[], torch.nn.Module], run: Callable[[torch.nn.Module], object]
               ) -> int | None:
    """FLOPs of ``run(build())`` on the ``meta`` device (the default device of both calls, so
    tensors `run` creates are there too): no memory, no compute. None if the model or its
    forward cannot run there (data-dependent code)."""
    try:
        with torch.device("meta"):
            module = build()
            with torch.no_grad():
                return count_flops(lambda: run(module))
    except Exception as exc:  # anything data-dependent (.item(), numpy) fails on meta
        logger.debug("FLOPs on the meta device failed: %s", exc)
        return None


def floor_entry(flops: int | float | None, peak: dict | None, seconds: float | None = None) -> dict:
    """``flops``, ``floor_s`` (FLOPs / peak) and, given the timed `seconds`, ``floor_ratio``
    (seconds / floor); the keys are None when unknown."""
    if not flops or not peak or not peak.get("flops_per_s"):
        return {"flops": flops, "floor_s": None, "floor_ratio": None}
    floor = float(flops) / peak["flops_per_s"]
    return {"flops": flops, "floor_s": floor,
            "floor_ratio": None if seconds is None or floor <= 0 else seconds / floor}


#: Column headings matching :func:`floor_cells`.
FLOOR_HEADER = f"{'floor':>10} {'min/floor':>9}"


def floor_cells(entry: dict | None, unit: str = "s") -> str:
    """The floor and ratio columns of a table row (``-`` where unknown); `unit` ``"s"`` or
    ``"ms"``, as the row's times."""
    if not entry or entry.get("floor_s") is None:
        return f"{'-':>10} {'-':>9}"
    floor = entry["floor_s"]
    cell = f"{floor * 1e3:>8.1f}ms" if unit == "ms" else f"{floor:>9.3f}s"
    ratio = entry.get("floor_ratio")
    return f"{cell} {'-' if ratio is None else f'{ratio:.1f}x':>9}"


def peaks_line(peaks: dict[str, dict]) -> str:
    """``GEMM peak: fp32 123.4 GFLOP/s (n=2048), bf16 ...``."""
    parts = [f"{name} {p['flops_per_s'] / 1e9:.1f} GFLOP/s (n={p['size']})" for name, p in peaks.items()]
    return "GEMM peak on this machine: " + ", ".join(parts) + "; floor = FLOPs / peak"


def kernel_lines(choices: dict[str, dict[str, dict]]) -> list[str]:
    """One line per measured kernel choice (`napari_focsam.models.kernels.choices`):
    ``kernel attention_rel_pos float32 bh16.nq4096...: blocked (sdpa 55.9 ms, blocked 48.5 ms)``
    (the candidates' times on the part of the call they were timed on), saying when the
    default was kept on a near tie and which candidates the screen dropped."""
    lines = []
    for entries in choices.values():
        for key, entry in sorted(entries.items()):
            op, _, dtype, shape, threads, flags = (key.split("|") + [""] * 6)[:6]
            seconds = entry.get("seconds", {})
            times = ", ".join(f"{name} {t * 1e3:.1f} ms" for name, t in seconds.items())
            dropped = sorted(set(entry.get("screen_seconds", {})) - set(seconds))
            if dropped:
                times += f"; screened out: {', '.join(dropped)}"
            choice = entry.get("choice")
            if entry.get("fastest", choice) != choice:
                choice = f"{choice}, the default kept on a near tie"
            what = f"{op} {dtype} {shape} {threads}" + ("" if flags in ("", "-") else f" {flags}")
            lines.append(f"kernel {what}: {choice} ({times})")
    return lines
