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
from ..models.sam import SAM_CONFIGS, build_sam
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
        ``click`` (single-mask and multimask: min/median seconds), ``peak_rss_mib``.
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
    for multimask in (False, True):
        timing = time_call(lambda m=multimask: predictor.predict(point, label, multimask=m),
                           max(repeats, 10), warmup=2)
        result["click"]["multimask" if multimask else "single"] = timing.as_dict()
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def format_sam_table(result: dict) -> str:
    """Human-readable table of :func:`run_sam_benchmark`'s result."""
    m, s = result["machine"], result["settings"]
    lines = [
        f"SAM benchmark: {s['model']} (random weights) on {s['device']}, "
        f"{m['torch_threads']} threads, {m['cpu']}, torch {m['torch']}, "
        f"native bf16: {m['cpu_native_bf16']}",
        "",
        f"{'measurement':<42} {'min':>10} {'median':>10}",
        f"{'-' * 42} {'-' * 10} {'-' * 10}",
    ]
    for name, t in result["encoder"].items():
        lines.append(f"{'image encoder 1024x1024, ' + name:<42} {t['min_s']:>9.3f}s "
                     f"{t['median_s']:>9.3f}s")
    hw = "x".join(str(v) for v in s["image_hw"])
    for name, t in result["click"].items():
        label = f"click -> mask {hw} ({name})"
        lines.append(f"{label:<42} {t['min_s'] * 1e3:>8.1f}ms {t['median_s'] * 1e3:>8.1f}ms")
    lines.append(f"{'peak RSS':<42} {result['peak_rss_mib']:>8.0f}MiB")
    return "\n".join(lines)
