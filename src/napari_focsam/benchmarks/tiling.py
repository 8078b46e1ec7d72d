"""Tiling benchmark: masks of small nuclei on a large field, tiled against resized.

A synthetic, deterministic ``size x size`` uint8 field of small nuclei (discs of radius 5-12
px, soft edges, noise; ground-truth labels) is segmented with one click at each nucleus centre
through the real `Segmenter` (embedding stores, tiles, drawing), once with tiles
(``Tiling()``, the default) and once resized to the model input (``Tiling("off")``). The model
is the stand-in of :mod:`.standin`, which sees frames exactly as SAM does; the figures show
what the resolution costs, not what SAM's weights do. Each run reports the mean IoU with the
ground truth, the fraction of nuclei found (IoU >= 0.5), the time of the embeddings, of the
first click on a cold cache and of the clicks, and its peak memory (each run in a fresh
process by default; on Linux the peak is reset once the field is made, so it is the run's).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .timing import BenchmarkError, machine_info, peak_rss_mib

__all__ = ["NucleiField", "format_tiling_table", "nuclei_field", "run_tiling_benchmark"]

logger = logging.getLogger(__name__)

#: The runs compared: name -> tiling mode.
RUNS = {"tiled": "auto", "resized": "off"}


@dataclass(frozen=True)
class NucleiField:
    """A synthetic field of nuclei.

    Attributes
    ----------
    image : np.ndarray
        ``(S, S)`` uint8.
    labels : np.ndarray
        ``(S, S)`` int32 ground truth, nucleus ``k`` labelled ``k + 1``.
    centres : np.ndarray
        ``(N, 2)`` float64 (row, col) of each nucleus.
    radii : np.ndarray
        ``(N,)`` float64.
    """

    image: np.ndarray
    labels: np.ndarray
    centres: np.ndarray
    radii: np.ndarray


def nuclei_field(size: int = 4096, n: int = 300, radius: tuple[float, float] = (5.0, 12.0),
                 seed: int = 0) -> NucleiField:
    """A deterministic ``size x size`` field of `n` non-touching nuclei.

    Background ~30 with noise (sigma 6), nuclei 140-230, edges softened by a Gaussian
    (sigma 1); discs at least 3 px apart and 16 px from the border.

    Raises
    ------
    BenchmarkError
        The nuclei do not fit.
    """
    rng = np.random.default_rng(seed)
    lo, hi = radius
    centres: list[tuple[float, float]] = []
    radii: list[float] = []
    margin = int(np.ceil(hi)) + 16
    attempts = 0
    while len(centres) < n:
        attempts += 1
        if attempts > 200 * n:
            raise BenchmarkError(f"{n} nuclei of radius up to {hi} px do not fit in {size} px")
        r = float(rng.uniform(lo, hi))
        c = rng.uniform(margin, size - margin, 2)
        if centres:
            d = np.hypot(*(np.asarray(centres) - c).T)
            if (d < np.asarray(radii) + r + 3).any():
                continue
        centres.append((float(c[0]), float(c[1])))
        radii.append(r)
    labels = np.zeros((size, size), np.int32)
    intensity = np.full((size, size), 30.0, np.float32)
    for k, ((cy, cx), r) in enumerate(zip(centres, radii, strict=True)):
        r0, r1 = int(cy - r) - 1, int(cy + r) + 2
        c0, c1 = int(cx - r) - 1, int(cx + r) + 2
        yy, xx = np.mgrid[r0:r1, c0:c1]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        labels[r0:r1, c0:c1][disc] = k + 1
        intensity[r0:r1, c0:c1][disc] = rng.uniform(140, 230)
    intensity = ndimage.gaussian_filter(intensity, 1.0)
    intensity += rng.normal(0, 6, intensity.shape).astype(np.float32)
    image = np.clip(np.rint(intensity), 0, 255).astype(np.uint8)
    return NucleiField(image, labels, np.asarray(centres), np.asarray(radii))


def _iou(mask: np.ndarray, labels: np.ndarray, k: int, centre: tuple[float, float],
         radius: float) -> float:
    """IoU of frame `mask` with nucleus ``k + 1`` (its disc's neighbourhood only for the
    intersection)."""
    r0, r1 = max(int(centre[0] - radius) - 2, 0), int(centre[0] + radius) + 3
    c0, c1 = max(int(centre[1] - radius) - 2, 0), int(centre[1] + radius) + 3
    truth = labels[r0:r1, c0:c1] == k + 1
    inter = np.count_nonzero(mask[r0:r1, c0:c1] & truth)
    union = np.count_nonzero(mask) + np.count_nonzero(truth) - inter
    return inter / union if union else 0.0


def _status_mib(field: str) -> float | None:
    """A ``VmRSS`` / ``VmHWM`` line of ``/proc/self/status`` in MiB (None elsewhere than
    Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux: ``5`` to ``/proc/self/clear_refs``), so that the
    peak measured next is the run's, not the field generation's; False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _run_peak_mib(reset: bool) -> float:
    """Peak RSS since `_reset_peak` (if it worked), else since the process started."""
    peak = _status_mib("VmHWM") if reset else None
    return peak if peak is not None else peak_rss_mib()


def _run_one(mode: str, size: int, n: int, seed: int, tile: int | None,
             halo: int | None) -> dict:
    """One run (possibly in a child process): build the field, segment every nucleus."""
    from ..api.prompts_file import ObjectPrompt
    from ..api.segmenter import Segmenter
    from ..engine.tiling import Tiling
    from .standin import standin_model

    field = nuclei_field(size, n, seed=seed)
    model = standin_model()
    rss_before = _status_mib("VmRSS")
    reset = _reset_peak()
    tiling = Tiling(mode, tile=tile, halo=halo)
    prompts = [ObjectPrompt(k + 1, None, np.array([c]), np.array([1]))
               for k, c in enumerate(field.centres)]

    # the first click on a cold cache: encodes what that click needs, nothing more
    cold = Segmenter(field.image, interactive=model, cache_root=False, tiling=tiling)
    start = time.perf_counter()
    cold.draw_object(prompts[0], keep_session=False)
    first_click_s = time.perf_counter() - start
    first_click_encoded = cold.encoder_calls
    del cold

    seg = Segmenter(field.image, interactive=model, cache_root=False, tiling=tiling)
    start = time.perf_counter()
    for _ in seg.embed():
        pass
    embed_s = time.perf_counter() - start
    ious, times, whole_frame = [], [], 0
    for k, prompt in enumerate(prompts):
        start = time.perf_counter()
        mask = seg.draw_object(prompt, keep_session=False)
        times.append(time.perf_counter() - start)
        current = seg.drawer.current
        whole_frame += int(current is not None and current.tile is None)
        ious.append(_iou(mask, field.labels, k, tuple(field.centres[k]), float(field.radii[k])))
    iou = np.asarray(ious)
    grid = seg.tile_grid
    return {
        "mode": mode,
        "tiles_per_frame": 1 if grid is None else grid.n_tiles,
        "block": None if grid is None else list(grid.block),
        "halo": None if grid is None else grid.halo,
        "encoded": seg.encoder_calls,
        "mean_iou": float(iou.mean()),
        "found": float((iou >= 0.5).mean()),
        "iou_by_radius": _by_radius(iou, field.radii),
        "whole_frame_clicks": whole_frame,
        "first_click_s": first_click_s,
        "first_click_encoded": first_click_encoded,
        "embed_s": embed_s,
        "click_median_s": float(np.median(times)),
        "clicks_s": float(np.sum(times)),
        "rss_before_mib": rss_before,
        "peak_rss_mib": _run_peak_mib(reset),
        "peak_is_the_runs": reset,
    }


def _by_radius(iou: np.ndarray, radii: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean IoU and found fraction by radius band."""
    out = {}
    for lo, hi in ((5, 7), (7, 9), (9, 12.01)):
        sel = (radii >= lo) & (radii < hi)
        if sel.any():
            out[f"{lo:g}-{min(hi, 12):g}"] = {"n": int(sel.sum()),
                                              "mean_iou": float(iou[sel].mean()),
                                              "found": float((iou[sel] >= 0.5).mean())}
    return out


def run_tiling_benchmark(size: int = 4096, n: int = 300, *, seed: int = 0,
                         tile: int | None = None, halo: int | None = None,
                         isolate: bool = True) -> dict:
    """Segment every nucleus of `nuclei_field` tiled and resized, and compare.

    Parameters
    ----------
    size, n, seed
        The field (see `nuclei_field`).
    tile, halo : int or None
        Tiling settings of the tiled run (None: the defaults).
    isolate : bool
        Run each mode in a fresh process (spawned) with nothing else in memory; False runs
        both here (faster; the peaks are still each run's where they can be reset: Linux).

    Returns
    -------
    dict
        ``machine``, ``settings`` and per run (``tiled``, ``resized``): tiles per frame,
        encoder calls, ``mean_iou``, ``found`` (IoU >= 0.5), by radius band, clicks drawn on
        the whole frame, first-click time on a cold cache, embedding time, click median and
        total, RSS before the run (after the field is made) and the run's peak RSS (MiB; the
        process's peak where it cannot be reset, see ``peak_is_the_runs``).
    """
    if size < 64 or n < 1:
        raise BenchmarkError(f"the field needs size >= 64 and n >= 1, got {size} and {n}")
    result: dict = {"machine": machine_info(),
                    "settings": {"size": size, "nuclei": n, "seed": seed, "tile": tile,
                                 "halo": halo, "isolated": isolate,
                                 "model": "stand-in (bright component at SAM's 256² logit grid)"},
                    "runs": {}}
    for name, mode in RUNS.items():
        logger.info("tiling benchmark: %s run", name)
        args = (mode, size, n, seed, tile, halo)
        if isolate:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                result["runs"][name] = pool.submit(_run_one, *args).result()
        else:
            result["runs"][name] = _run_one(*args)
    return result


def format_tiling_table(result: dict) -> str:
    """Human-readable table of `run_tiling_benchmark`'s result."""
    m, s = result["machine"], result["settings"]
    runs = result["runs"]
    lines = [
        f"Tiling benchmark: {s['size']}x{s['size']} field, {s['nuclei']} nuclei (radius 5-12 px), "
        f"one click at each centre; {s['model']}",
        f"{m['cpu']}, {m['torch_threads']} torch threads"
        + ("" if all(r.get("peak_is_the_runs") for r in runs.values())
           else " (peak RSS: the process's so far)"),
        "",
        f"{'':<34} " + " ".join(f"{name:>12}" for name in runs),
        f"{'-' * 34} " + " ".join("-" * 12 for _ in runs),
    ]

    def row(label: str, fmt, key: str) -> None:
        lines.append(f"{label:<34} " + " ".join(f"{fmt(r[key]):>12}" for r in runs.values()))

    row("tiles per frame", str, "tiles_per_frame")
    row("  block / halo (px)", lambda v: "-" if v is None else f"{v[0]}x{v[1]}", "block")
    row("mean IoU", lambda v: f"{v:.3f}", "mean_iou")
    row("found (IoU >= 0.5)", lambda v: f"{100 * v:.1f}%", "found")
    bands = next(iter(runs.values()))["iou_by_radius"]
    for band in bands:
        lines.append(f"{'  radius ' + band + ' px: IoU / found':<34} "
                     + " ".join(f"{r['iou_by_radius'][band]['mean_iou']:>5.2f} / "
                                f"{100 * r['iou_by_radius'][band]['found']:>3.0f}%"
                                for r in runs.values()))
    row("clicks drawn on the whole frame", str, "whole_frame_clicks")
    row("first click, cold cache", lambda v: f"{v:.2f}s", "first_click_s")
    row("  encoder calls it made", str, "first_click_encoded")
    row("embeddings, whole field", lambda v: f"{v:.2f}s", "embed_s")
    row("  encoder calls (tiles + frame)", str, "encoded")
    row("click -> mask (median)", lambda v: f"{1e3 * v:.1f}ms", "click_median_s")
    row("all clicks", lambda v: f"{v:.1f}s", "clicks_s")
    row("peak RSS during the run", lambda v: f"{v:.0f}MiB", "peak_rss_mib")
    row("  RSS before it (field made)", lambda v: "?" if v is None else f"{v:.0f}MiB",
        "rss_before_mib")
    return "\n".join(lines)

