"""SAM 2 benchmarks: encoder and propagation time per frame (fp32 / bf16), memory over long stacks.

The models have random weights (no checkpoint is needed); speed and memory do not depend on them.
The stacks are synthetic: bright discs moving over a dark background, one disc per object.

- :func:`run_sam2_benchmark`: image-encoder time per frame, then the time of one propagation
  step per frame with the features already computed (the encoder is not in that figure), for a
  few object counts, per precision. ``bf16`` runs the encoder *and* the propagation under
  autocast; the result says whether that worked and which dtype the memory attention and the
  mask decoder actually produced.
- :func:`run_memory_benchmark`: one pass through a long stack whose features are computed on
  the fly and not kept (``StackFeatures(max_cached=...)``), sampling the process's resident
  memory every few frames, with and without ``PropagationOptions.bounded_memory``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import statistics
import time
from collections.abc import Iterator, Sequence

import numpy as np
import psutil
import torch

from ..engine.frame_features import StackFeatures
from ..engine.precision import autocast_context, resolve_device, resolve_encoder_dtype
from ..engine.propagation import VideoPropagator
from ..engine.propagation_state import PropagationOptions
from ..families import UnknownModelError
from ..models import kernels
from ..models.sam2.config import SAM2_CONFIGS, Sam2Config
from ..models.sam2.model import Sam2Model, build_sam2
from .floors import FLOOR_HEADER, count_flops, floor_cells, floor_entry, gemm_peaks, meta_flops, peaks_line
from .timing import BenchmarkError, machine_info, peak_rss_mib

__all__ = [
    "DiscStack",
    "format_memory_table",
    "format_sam2_table",
    "run_memory_benchmark",
    "run_sam2_benchmark",
]

logger = logging.getLogger(__name__)

_MIB = 2**20


class DiscStack(Sequence):
    """A synthetic stack of ``(H, W, 3)`` uint8 frames, drawn on demand (nothing is stored).

    Parameters
    ----------
    n_frames : int
        Number of frames.
    hw : tuple of int
        ``(H, W)`` of every frame.
    n_discs : int
        Discs (one per object), moving on different horizontal tracks.
    """

    def __init__(self, n_frames: int, hw: tuple[int, int], n_discs: int) -> None:
        self.n_frames = int(n_frames)
        self.hw = (int(hw[0]), int(hw[1]))
        self.n_discs = max(1, int(n_discs))
        h, w = self.hw
        self.radius = max(2, min(h // (4 * self.n_discs + 2), w // 8))

    def __len__(self) -> int:
        return self.n_frames

    def centre(self, t: int, disc: int) -> tuple[int, int]:
        """``(x, y)`` centre of disc `disc` on frame `t`."""
        h, w = self.hw
        r = self.radius
        span = max(1, w - 4 * r)
        step = (t * max(1, w // 64) + disc * span // self.n_discs) % (2 * span)
        x = 2 * r + (step if step < span else 2 * span - step)
        y = (disc + 1) * h // (self.n_discs + 1)
        return x, y

    def __getitem__(self, t: int) -> np.ndarray:  # type: ignore[override]
        if not 0 <= t < self.n_frames:
            raise IndexError(f"frame {t} outside 0..{self.n_frames - 1}")
        h, w = self.hw
        yy, xx = np.ogrid[:h, :w]
        frame = np.full((h, w, 3), 24, np.uint8)
        for disc in range(self.n_discs):
            cx, cy = self.centre(t, disc)
            colour = (250, 120 + (97 * disc) % 130, 60 + (53 * disc) % 190)
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 <= self.radius**2] = colour
        return frame


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` torch CPU threads (unchanged when None), restored afterwards."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _config(model_name: str, image_size: int | None) -> Sam2Config:
    if model_name not in SAM2_CONFIGS:
        raise UnknownModelError(model_name, tuple(sorted(SAM2_CONFIGS)))
    config: Sam2Config = SAM2_CONFIGS[model_name]
    if image_size is not None:
        config = config.replace(image_size=int(image_size))
    return config


def _build(model_name: str, image_size: int | None, device: torch.device, seed: int) -> Sam2Model:
    config = _config(model_name, image_size)
    torch.manual_seed(seed)
    return build_sam2(config).to(device)


def _prompt_objects(prop: VideoPropagator, stack: DiscStack, n_objects: int) -> None:
    """One positive click per object, on its disc in frame 0."""
    for obj in range(n_objects):
        x, y = stack.centre(0, obj)
        prop.add_points(0, obj + 1, [[x, y]], [1])


def _median_min(times: list[float]) -> dict[str, float]:
    return {"min_s": min(times), "median_s": statistics.median(times), "runs": len(times)}


def run_sam2_benchmark(
    model_name: str = "sam2.1_hiera_tiny",
    dtypes: Sequence[str] = ("fp32", "bf16"),
    frames: int = 4,
    objects: Sequence[int] = (1, 3),
    threads: int | None = None,
    device: str = "cpu",
    image_size: int | None = None,
    passes: int = 2,
    seed: int = 0,
) -> dict:
    """Measure SAM 2 encoder and propagation speed per frame.

    Parameters
    ----------
    model_name : str
        Key of :data:`napari_focsam.models.sam2.config.SAM2_CONFIGS`.
    dtypes : sequence of str
        Precisions (``"fp32"``, ``"bf16"``, ``"fp16"``); other than fp32 = autocast around the
        encoder and around the propagation.
    frames : int
        Frames of the synthetic stack (at least 2: frame 0 holds the prompts, the others are
        tracked and timed).
    objects : sequence of int
        Object counts to time the propagation for (all objects of a frame run as one batch).
    threads : int, optional
        Torch CPU threads during the benchmark (restored afterwards).
    device : str
        Torch device.
    image_size : int, optional
        Model input side instead of the config's (e.g. 512 for a quick run); frames are this
        size, so no resizing is timed.
    passes : int
        Timed propagation passes after one warm-up pass.
    seed : int
        Seed of the random weights.

    Returns
    -------
    dict
        ``machine``, ``settings``, ``encoder`` (per dtype: min/median seconds per frame),
        ``propagation`` (per dtype, per object count as a string: min/median seconds per
        tracked frame, ``ran``, ``error``, ``autocast_dtypes`` seen at the outputs of the
        memory attention's first Linear and of the mask decoder, ``mask_agreement_vs_fp32``),
        ``peak_rss_mib``. Floors (FLOPs over this machine's GEMM peak in the entry's precision):
        ``flops``, ``floor_s``, ``floor_ratio`` (min / floor) in each encoder entry, and in
        each propagation entry (FLOPs of the last frame's step, the fullest memory bank; also
        in its ``steady``); ``per_object`` (per dtype, per object count N > 1: ``seconds`` =
        (time(N) - time(1)) / (N - 1) from the steady medians, else the medians, ``basis``,
        ``flops`` = (FLOPs(N) - FLOPs(1)) / (N - 1), ``floor_s``, ``floor_ratio``);
        ``floors`` (``gemm_peak`` per precision); ``kernels`` (the kernel choices made).
    """
    if frames < 2:
        raise BenchmarkError(f"frames must be at least 2 (one prompted, one tracked), got {frames}")
    if not objects or min(objects) < 1:
        raise BenchmarkError(f"objects must be positive counts, got {tuple(objects)}")
    dev = resolve_device(device)
    with _torch_threads(threads):
        net = _build(model_name, image_size, dev, seed)
        size = net.image_size
        stack = DiscStack(frames, (size, size), max(objects))
        result: dict = {
            "machine": machine_info(),
            "settings": {"model": model_name, "image_size": size, "frames": frames,
                         "objects": [int(n) for n in objects], "passes": passes,
                         "device": str(dev), "dtypes": list(dtypes)},
            "encoder": {},
            "propagation": {},
        }
        fp32_masks: dict[int, list[np.ndarray]] = {}
        step_flops: dict[int, int | None] = {}  # object count -> FLOPs of the last frame's step
        for name in dtypes:
            dtype = resolve_encoder_dtype(dev, name)
            StackFeatures(net, stack, encoder_dtype=dtype)(0)  # warm-up
            feats = StackFeatures(net, stack, encoder_dtype=dtype)
            times = []
            for t in range(frames):
                start = time.perf_counter()
                feats(t)
                times.append(time.perf_counter() - start)
            result["encoder"][name] = {**_median_min(times), "peak_rss_mib": peak_rss_mib()}
            logger.info("encoder %s: median %.3f s per frame", name, result["encoder"][name]["median_s"])

            per_count: dict[str, dict] = {}
            for n_obj in objects:
                entry = _time_propagation(net, feats, stack, int(n_obj), dev, dtype, passes,
                                          count_flops_of_last=n_obj not in step_flops)
                counted = entry.pop("last_step_flops", None)
                if n_obj not in step_flops:
                    step_flops[n_obj] = counted
                masks = entry.pop("masks")
                if dtype == torch.float32:
                    fp32_masks[n_obj] = masks
                elif masks and n_obj in fp32_masks:
                    agree = [float((a == b).mean()) for a, b in zip(masks, fp32_masks[n_obj], strict=True)]
                    entry["mask_agreement_vs_fp32"] = float(np.mean(agree))
                per_count[str(n_obj)] = entry
                if entry["ran"]:
                    logger.info("propagation %s, %d objects: median %.4f s per frame", name, n_obj,
                                entry["median_s"])
                else:
                    logger.warning("propagation %s, %d objects failed: %s", name, n_obj, entry["error"])
            result["propagation"][name] = per_count
        result["peak_rss_mib"] = peak_rss_mib()
        _add_floors(result, net, dev, step_flops)
    return result


def _add_floors(result: dict, net: Sam2Model, dev: torch.device, step_flops: dict[int, int | None]
                ) -> None:
    """Floors of the encoder, propagation and per-extra-object figures (see
    :func:`run_sam2_benchmark`)."""
    s = result["settings"]
    peaks = gemm_peaks(s["dtypes"], dev)
    config = _config(s["model"], s["image_size"])
    size = s["image_size"]
    flops = meta_flops(lambda: build_sam2(config), lambda m: m.encode_image(torch.zeros(1, 3, size, size)))
    if flops is None:
        x = torch.zeros(1, 3, size, size, device=dev)
        with torch.inference_mode():
            flops = count_flops(lambda: net.encode_image(x))
    for name, entry in result["encoder"].items():
        entry.update(floor_entry(flops, peaks[name], entry["min_s"]))
    result["per_object"] = {}
    for name, per_count in result["propagation"].items():
        for count, entry in per_count.items():
            if not entry["ran"]:
                continue
            f = step_flops.get(int(count))
            entry.update(floor_entry(f, peaks[name], entry["min_s"]))
            if "steady" in entry:
                entry["steady"].update(floor_entry(f, peaks[name], entry["steady"]["min_s"]))
        one = per_count.get("1")
        extra: dict[str, dict] = {}
        for count, entry in per_count.items():
            n = int(count)
            if n == 1 or one is None or not (entry["ran"] and one["ran"]):
                continue
            steady = "steady" in entry and "steady" in one
            t_n = entry["steady"]["median_s"] if steady else entry["median_s"]
            t_1 = one["steady"]["median_s"] if steady else one["median_s"]
            f_n, f_1 = step_flops.get(n), step_flops.get(1)
            per = (f_n - f_1) / (n - 1) if f_n and f_1 else None
            seconds = (t_n - t_1) / (n - 1)
            extra[count] = {"seconds": seconds, "basis": "steady median" if steady else "median",
                            **floor_entry(per, peaks[name], seconds)}
        if extra:
            result["per_object"][name] = extra
    result["floors"] = {"gemm_peak": peaks}
    result["kernels"] = kernels.choices()


def _time_propagation(net: Sam2Model, feats: StackFeatures, stack: DiscStack, n_objects: int,
                      device: torch.device, dtype: torch.dtype, passes: int,
                      count_flops_of_last: bool = False) -> dict:
    """Time the tracked frames of `passes` propagation passes (after a warm-up pass); with
    `count_flops_of_last`, ``last_step_flops`` holds the FLOPs of the warm-up's last step."""
    seen: dict[str, set[str]] = {"memory_attention": set(), "sam_mask_decoder": set()}

    def hook(name: str):
        def record(_module, _inputs, output) -> None:
            tensor = output if isinstance(output, torch.Tensor) else getattr(output, "masks", None)
            if isinstance(tensor, torch.Tensor):
                seen[name].add(str(tensor.dtype).replace("torch.", ""))
        return record

    # The memory attention ends with a LayerNorm (fp32 under autocast): watch its first Linear.
    first_linear = next(m for m in net.memory_attention.modules() if isinstance(m, torch.nn.Linear))
    watched = {"memory_attention": first_linear, "sam_mask_decoder": net.sam_mask_decoder}
    handles = [module.register_forward_hook(hook(name)) for name, module in watched.items()]
    times: list[float] = []
    steady: list[float] = []  # frames whose memory bank is full (conditioning + recent frames)
    masks: list[np.ndarray] = []
    entry: dict = {"objects": n_objects, "ran": True, "error": None}
    try:
        with torch.no_grad(), autocast_context(device, dtype):
            prop = VideoPropagator(net, feats, stack.hw, PropagationOptions())
            _prompt_objects(prop, stack, n_objects)
            # warm-up, and the masks compared across dtypes; the last step's FLOPs are counted
            # (outside the timed passes: counting slows it down)
            gen = prop.propagate()
            while True:
                if count_flops_of_last and len(masks) == len(stack) - 1:
                    step: dict = {}
                    entry["last_step_flops"] = count_flops(
                        lambda step=step: step.update(r=next(gen, None)))
                    result = step["r"]
                else:
                    result = next(gen, None)
                if result is None:
                    break
                masks.append(result.masks())
            for name in seen:
                seen[name].clear()
            for _ in range(max(1, passes)):
                gen = prop.propagate()
                while True:
                    start = time.perf_counter()
                    result = next(gen, None)
                    if result is None:
                        break
                    if result.frame != 0:  # frame 0 holds the prompts: nothing to compute
                        times.append(time.perf_counter() - start)
                        if result.frame >= net.config.num_maskmem:
                            steady.append(times[-1])
    except (RuntimeError, TypeError, ValueError) as exc:
        logger.exception("propagation in %s failed", dtype)
        entry.update(ran=False, error=f"{type(exc).__name__}: {exc}")
        masks = []
    finally:
        for handle in handles:
            handle.remove()
    entry["autocast_dtypes"] = {name: sorted(found) for name, found in seen.items()}
    if times:
        entry.update(_median_min(times))
        entry["median_per_object_s"] = entry["median_s"] / n_objects
    if steady:  # the figure that matters for long stacks
        entry["steady"] = _median_min(steady)
    entry["masks"] = masks
    return entry


def format_sam2_table(result: dict) -> str:
    """Human-readable table of :func:`run_sam2_benchmark`'s result."""
    m, s = result["machine"], result["settings"]
    size = s["image_size"]
    lines = [
        f"SAM 2 benchmark: {s['model']} (random weights) at {size}x{size} on {s['device']}, "
        f"{m['torch_threads']} threads, {m['cpu']}, torch {m['torch']}, "
        f"native bf16: {m['cpu_native_bf16']}",
        f"{s['frames']} frames; propagation timed over {s['passes']} passes with cached features",
        "",
        f"{'measurement (per frame)':<46} {'min':>10} {'median':>10} {FLOOR_HEADER}",
        f"{'-' * 46} {'-' * 10} {'-' * 10} {'-' * 10} {'-' * 9}",
    ]
    for name, t in result["encoder"].items():
        lines.append(f"{'image encoder, ' + name:<46} {t['min_s']:>9.3f}s {t['median_s']:>9.3f}s "
                     f"{floor_cells(t)}")
    notes = []
    for name, per_count in result["propagation"].items():
        for count, t in per_count.items():
            objects = f"{count} object{'s' if count != '1' else ''}"
            label = f"propagation, {objects}, {name}"
            if not t["ran"]:
                lines.append(f"{label:<46} {'failed':>21}")
                notes.append(f"{name}, {objects}: {t['error']}")
                continue
            lines.append(f"{label:<46} {t['min_s'] * 1e3:>8.1f}ms {t['median_s'] * 1e3:>8.1f}ms "
                         f"{floor_cells(t, 'ms')}")
            if "steady" in t:
                full = f"  ... memory bank full, {objects}, {name}"
                lines.append(f"{full:<46} {t['steady']['min_s'] * 1e3:>8.1f}ms "
                             f"{t['steady']['median_s'] * 1e3:>8.1f}ms {floor_cells(t['steady'], 'ms')}")
            if name != "fp32":
                seen = ", ".join(f"{k} {'/'.join(v) or '-'}" for k, v in t["autocast_dtypes"].items())
                agree = t.get("mask_agreement_vs_fp32")
                agree_text = "" if agree is None else f"; masks agree with fp32 on {agree:.2%} of pixels"
                notes.append(f"{name}, {objects}: outputs {seen}{agree_text}")
    for name, per_count in result.get("per_object", {}).items():
        for count, t in per_count.items():
            label = f"each extra object (1 -> {count}), {name}"
            sec = t["seconds"] * 1e3
            lines.append(f"{label:<46} {'':>10} {sec:>8.1f}ms {floor_cells(t, 'ms')}")
    lines.append(f"{'peak RSS':<46} {result['peak_rss_mib']:>8.0f}MiB")
    if "floors" in result:
        lines += ["", peaks_line(result["floors"]["gemm_peak"]),
                  "propagation floors: FLOPs of the last frame's step (the fullest memory bank)",
                  "each extra object: (time(N) - time(1)) / (N - 1) of the medians (memory bank "
                  "full where timed);",
                  "  its floor: (FLOPs(N) - FLOPs(1)) / (N - 1) / peak, ratio: that time / floor"]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


# ---------------------------------------------------------------------- memory over long stacks
def current_rss_mib() -> float:
    """Resident set size of this process now, in MiB."""
    return psutil.Process().memory_info().rss / _MIB


def held_output_mib(prop: VideoPropagator) -> float:
    """MiB of tensors the propagator holds in its objects' outputs (masks, memories, pointers)."""
    total = 0
    for track in prop.tracks.values():
        for store in (track.cond, track.non_cond, track.temp_cond, track.temp_non_cond):
            for out in store.values():
                for t in (out.pred_masks, out.obj_ptr, out.object_score_logits, out.maskmem):
                    if t is not None:
                        total += t.numel() * t.element_size()
    return total / _MIB


def run_memory_benchmark(
    frames: int = 500,
    image_size: int | None = 256,
    objects: int = 2,
    model_name: str = "sam2.1_hiera_tiny",
    sample_every: int = 25,
    max_cached: int = 8,
    compare_unbounded: bool = True,
    threads: int | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    """Resident memory during one propagation pass through a long synthetic stack.

    Features are computed on the fly and only the `max_cached` most recent frames are kept, so
    what grows is the propagator's own state. The bounded run comes first (so it cannot reuse
    memory the unbounded run freed).

    Parameters
    ----------
    frames : int
        Frames in the stack.
    image_size : int, optional
        Model input side (and frame size) instead of the config's 1024.
    objects : int
        Objects propagated together (one click each on frame 0).
    model_name : str
        Key of :data:`napari_focsam.models.sam2.config.SAM2_CONFIGS`.
    sample_every : int
        Frames between RSS samples.
    max_cached : int
        Frames of features the provider keeps.
    compare_unbounded : bool
        Also run with ``bounded_memory=False`` for contrast.
    threads : int, optional
        Torch CPU threads (restored afterwards).
    device : str
        Torch device.
    seed : int
        Seed of the random weights.

    Returns
    -------
    dict
        ``machine``, ``settings``, ``runs`` (``"bounded"`` and optionally ``"unbounded"``: the
        ``samples`` (frame, current RSS, peak RSS, MiB held in outputs), ``rss_growth_mib`` and
        ``held_growth_mib`` from the first sample to the last, ``seconds``, ``frames_per_s``),
        ``peak_rss_mib``.
    """
    if frames < 2 * sample_every:
        raise BenchmarkError(f"frames ({frames}) must cover at least two samples of {sample_every}")
    dev = resolve_device(device)
    with _torch_threads(threads):
        net = _build(model_name, image_size, dev, seed)
        size = net.image_size
        stack = DiscStack(frames, (size, size), objects)
        result: dict = {
            "machine": machine_info(),
            "settings": {"model": model_name, "image_size": size, "frames": frames,
                         "objects": objects, "sample_every": sample_every, "max_cached": max_cached,
                         "device": str(dev)},
            "runs": {},
        }
        modes = (True, False) if compare_unbounded else (True,)
        for bounded in modes:
            label = "bounded" if bounded else "unbounded"
            result["runs"][label] = _memory_run(net, stack, objects, bounded, sample_every, max_cached)
            run = result["runs"][label]
            logger.info("%s: RSS growth %.1f MiB, held growth %.1f MiB over %d frames", label,
                        run["rss_growth_mib"], run["held_growth_mib"], frames)
            gc.collect()
        result["peak_rss_mib"] = peak_rss_mib()
    return result


def _memory_run(net: Sam2Model, stack: DiscStack, objects: int, bounded: bool, sample_every: int,
                max_cached: int) -> dict:
    gc.collect()
    feats = StackFeatures(net, stack, max_cached=max_cached)
    prop = VideoPropagator(net, feats, stack.hw, PropagationOptions(bounded_memory=bounded))
    samples = []
    start_rss = current_rss_mib()
    start = time.perf_counter()
    with torch.no_grad():
        _prompt_objects(prop, stack, objects)
        for result in prop.propagate():
            if result.done % sample_every == 0 or result.done == result.total:
                samples.append({"frame": result.done, "rss_mib": current_rss_mib(),
                                "peak_rss_mib": peak_rss_mib(), "held_mib": held_output_mib(prop)})
    seconds = time.perf_counter() - start
    first, last = samples[0], samples[-1]
    run = {
        "bounded_memory": bounded,
        "rss_before_mib": start_rss,
        "samples": samples,
        "rss_growth_mib": last["rss_mib"] - first["rss_mib"],
        "held_growth_mib": last["held_mib"] - first["held_mib"],
        "held_per_frame_kib": (last["held_mib"] - first["held_mib"]) * 1024
        / max(1, last["frame"] - first["frame"]),
        "encoder_runs": feats.encoded,
        "seconds": seconds,
        "frames_per_s": len(stack) / seconds,
    }
    del prop, feats
    return run


def format_memory_table(result: dict) -> str:
    """Human-readable table of :func:`run_memory_benchmark`'s result."""
    m, s = result["machine"], result["settings"]
    runs = result["runs"]
    labels = list(runs)
    lines = [
        f"SAM 2 memory over {s['frames']} frames: {s['model']} (random weights) at "
        f"{s['image_size']}x{s['image_size']}, {s['objects']} objects, features computed on the fly "
        f"(cache {s['max_cached']} frames), {s['device']}, {m['torch_threads']} threads",
        "",
        f"{'frame':>6} " + " ".join(f"{label + ' RSS':>15} {label + ' held':>16}" for label in labels),
    ]
    rows = zip(*(runs[label]["samples"] for label in labels), strict=True)
    for row in rows:
        cells = " ".join(f"{sample['rss_mib']:>12.1f}MiB {sample['held_mib']:>13.2f}MiB" for sample in row)
        lines.append(f"{row[0]['frame']:>6} {cells}")
    lines.append("")
    for label in labels:
        run = runs[label]
        lines.append(
            f"{label}: RSS {run['rss_growth_mib']:+.1f} MiB after frame {s['sample_every']}, "
            f"held outputs {run['held_growth_mib']:+.2f} MiB ({run['held_per_frame_kib']:.1f} KiB/frame), "
            f"{run['frames_per_s']:.1f} frames/s")
    lines.append(f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines)
