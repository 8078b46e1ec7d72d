"""SAM benchmark: image-encoder time (fp32 / bf16), prompt-to-mask latency, peak RSS.

The model has random weights (no checkpoint is needed); speed does not depend on them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..engine.precision import autocast_context, resolve_device, resolve_encoder_dtype
from ..engine.sam_predictor import SamPredictor
from ..families import UnknownModelError
from ..models import kernels
from ..models.sam import SAM_CONFIGS, build_sam
from .floors import (
    FLOOR_HEADER,
    count_flops,
    floor_cells,
    floor_entry,
    gemm_peaks,
    kernel_lines,
    meta_flops,
    peaks_line,
)
from .timing import machine_info, peak_rss_mib, time_call

logger = logging.getLogger(__name__)


def run_sam_benchmark(
    model: str = "sam_vit_b",
    dtypes: Sequence[str] = ("fp32", "bf16"),
    repeats: int = 3,
    image_hw: tuple[int, int] = (1024, 1024),
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    """Measure one SAM config.

    Parameters
    ----------
    model : str
        Key of :data:`napari_focsam.models.sam.SAM_CONFIGS`.
    dtypes : sequence of str
        Encoder precisions to time (``"fp32"``, ``"bf16"``, ``"fp16"``).
    repeats : int
        Timed repetitions (after one warm-up) of each measurement.
    image_hw : tuple of int
        Size of the synthetic image whose masks are produced (clicks are timed up to masks
        at this size).
    device : str
        Torch device.
    seed : int
        Seed of the random weights and image.

    Returns
    -------
    dict
        ``machine``, ``settings``, ``encoder`` (per dtype: min/median seconds),
        ``click`` (single-mask and multimask: min/median seconds), ``peak_rss_mib``; with each
        timed entry its ``flops``, ``floor_s`` (FLOPs / this machine's GEMM peak in the entry's
        precision; clicks run in fp32) and ``floor_ratio`` (min / floor); ``floors``
        (``gemm_peak`` per precision: `floors.gemm_peak`); ``kernels`` (the kernel choices
        made, `models.kernels.choices`).
    """
    if model not in SAM_CONFIGS:
        raise UnknownModelError(model, tuple(sorted(SAM_CONFIGS)))
    torch.manual_seed(seed)
    dev = resolve_device(device)
    net = build_sam(SAM_CONFIGS[model]).to(dev)
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(*image_hw, 3), dtype=np.uint8)
    result: dict = {
        "machine": machine_info(),
        "settings": {"model": model, "repeats": repeats, "image_hw": list(image_hw),
                     "device": str(dev)},
        "encoder": {},
        "click": {},
    }

    # The encoder exactly as SamPredictor.set_image runs it, on a preprocessed 1024^2 input.
    size = net.config.image_size
    x = net.preprocess(torch.zeros(1, 3, size, size, device=dev))
    for name in dtypes:
        dtype = resolve_encoder_dtype(dev, name)

        def encode(dtype: torch.dtype = dtype) -> None:
            with torch.inference_mode(), autocast_context(dev, dtype):
                net.image_encoder(x)

        timing = time_call(encode, repeats)
        result["encoder"][name] = {**timing.as_dict(), "peak_rss_mib": peak_rss_mib()}
        logger.info("encoder %s: %.3f s", name, timing.min_s)

    predictor = SamPredictor(net, device=dev, encoder_dtype=resolve_encoder_dtype(dev, dtypes[-1]))
    predictor.set_image(image)
    h, w = image_hw
    point = np.array([[h * 0.4, w * 0.6]])
    label = np.array([1])
    click_flops = {}
    for multimask in (False, True):
        name = "multimask" if multimask else "single"
        timing = time_call(lambda m=multimask: predictor.predict(point, label, multimask=m),
                           max(repeats, 10), warmup=2)
        result["click"][name] = timing.as_dict()
        click_flops[name] = count_flops(lambda m=multimask: predictor.predict(point, label, multimask=m))
    result["peak_rss_mib"] = peak_rss_mib()

    # floors: FLOPs (the encoder's counted on the meta device) over this machine's GEMM peak
    peaks = gemm_peaks(("fp32", *dtypes), dev)
    flops = meta_flops(lambda: build_sam(SAM_CONFIGS[model]),
                       lambda m: m.image_encoder(torch.zeros(1, 3, size, size)))
    if flops is None:  # not inference_mode: the FLOP counter sees nothing there
        with torch.no_grad():
            flops = count_flops(lambda: net.image_encoder(x))
    for name, entry in result["encoder"].items():
        entry.update(floor_entry(flops, peaks[name], entry["min_s"]))
    for name, entry in result["click"].items():
        entry.update(floor_entry(click_flops[name], peaks["fp32"], entry["min_s"]))
    result["floors"] = {"gemm_peak": peaks}
    result["kernels"] = kernels.choices()
    return result


def format_sam_table(result: dict) -> str:
    """Human-readable table of :func:`run_sam_benchmark`'s result."""
    m, s = result["machine"], result["settings"]
    lines = [
        f"SAM benchmark: {s['model']} (random weights) on {s['device']}, "
        f"{m['torch_threads']} threads, {m['cpu']}, torch {m['torch']}, "
        f"native bf16: {m['cpu_native_bf16']}",
        "",
        f"{'measurement':<42} {'min':>10} {'median':>10} {FLOOR_HEADER}",
        f"{'-' * 42} {'-' * 10} {'-' * 10} {'-' * 10} {'-' * 9}",
    ]
    for name, t in result["encoder"].items():
        lines.append(f"{'image encoder 1024x1024, ' + name:<42} {t['min_s']:>9.3f}s "
                     f"{t['median_s']:>9.3f}s {floor_cells(t)}")
    hw = "x".join(str(v) for v in s["image_hw"])
    for name, t in result["click"].items():
        label = f"click -> mask {hw} ({name})"
        lines.append(f"{label:<42} {t['min_s'] * 1e3:>8.1f}ms {t['median_s'] * 1e3:>8.1f}ms "
                     f"{floor_cells(t, 'ms')}")
    lines.append(f"{'peak RSS':<42} {result['peak_rss_mib']:>8.0f}MiB")
    if "floors" in result:
        lines += ["", peaks_line(result["floors"]["gemm_peak"]) + " (clicks: fp32)"]
    lines += kernel_lines(result.get("kernels") or {})
    return "\n".join(lines)
