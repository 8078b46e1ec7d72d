"""FocSAM benchmark: the FocusRefiner's refine step (fp32 / bf16, small and full focus box)
and the mask-decoder click on original and refined embeddings.

The models have random weights (no checkpoint is needed); speed does not depend on them. Only
the refiner, the prompt encoder and the mask decoder are built (the ViT-H image encoder is
not needed to time these).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..engine.precision import autocast_context, resolve_device, resolve_encoder_dtype
from ..families import UnknownModelError
from ..models import kernels
from ..models.focsam import FOCSAM_CONFIGS, FocSamConfig, FocusRefiner
from ..models.sam import SamModel
from .floors import (
    FLOOR_HEADER,
    count_flops,
    floor_cells,
    floor_entry,
    gemm_peaks,
    kernel_lines,
    peaks_line,
)
from .timing import Timing, machine_info, peak_rss_mib, time_call

logger = logging.getLogger(__name__)

#: Side of the square object (canvas pixels) whose coarse mask defines the small focus box.
SMALL_OBJECT_PX = 200
#: Clicks of the timed decoder pass (FocSAM sends all clicks so far with every step).
CLICKS = 3


def _coarse_logits(canvas: int, object_px: int | None, device: torch.device) -> torch.Tensor:
    """``1 x 1 x canvas/4 x canvas/4`` coarse logits: positive on a centred square object of
    ``object_px`` canvas pixels, or everywhere (``None``: the focus box is the whole canvas)."""
    side = canvas // 4
    logits = torch.full((1, 1, side, side), -10.0, device=device)
    if object_px is None:
        logits.fill_(10.0)
    else:
        half = object_px // 8  # canvas / 4 grid cells
        centre = side // 2
        logits[..., centre - half:centre + half, centre - half:centre + half] = 10.0
    return logits


def _windows_per_block(refiner: FocusRefiner, coarse: torch.Tensor,
                       grid_hw: tuple[int, int]) -> tuple[list[int], list[int], int]:
    """The focus box, the windows each block refines and the windows per block in all."""
    box = refiner.focus_box(coarse)
    grid = refiner.grid_mask(box, grid_hw)
    counts, total = [], 0
    for block in refiner.blocks:
        index = block.window_index(grid_hw, grid.device)
        counts.append(int(block.select(grid, index).sum()))
        total = index.shape[0]
    return box[0, 0].tolist(), counts, total


def _synchronised(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """``fn`` followed by a device synchronisation (so GPU timings are complete)."""
    def call() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return call


def run_refiner_benchmark(
    dtypes: Sequence[str] = ("fp32", "bf16"),
    repeats: int = 3,
    threads: int | None = None,
    device: str = "cpu",
    model: str = "focsam_vit_h",
    seed: int = 0,
) -> dict:
    """Measure FocSAM's refine step and the decoder click.

    Parameters
    ----------
    dtypes : sequence of str
        Refiner precisions to time (``"fp32"``, ``"bf16"``, ``"fp16"``); anything but fp32 runs
        under autocast, the way the predictor runs it.
    repeats : int
        Timed repetitions (after one warm-up) of each measurement.
    threads : int, optional
        Torch CPU threads during the benchmark (restored afterwards); default: as set.
    device : str
        Torch device.
    model : str
        Key of :data:`napari_focsam.models.focsam.FOCSAM_CONFIGS` (``focsam_vit_h``: the real
        sizes; ``focsam_test_tiny`` for a quick check).
    seed : int
        Seed of the random weights and inputs.

    Returns
    -------
    dict
        ``machine``; ``settings``; ``focus`` (per case ``small`` / ``full``: ``box`` on the
        canvas, ``windows_per_block``, ``windows_total``); ``refine`` (per dtype and case:
        min/median seconds); ``decode`` (fp32 single-mask decoder pass with the clicks and the
        previous logits, on ``original`` and ``refined`` embeddings: min/median seconds);
        ``postprocess`` (low-res logits to a binary canvas-sized mask); ``click`` (decode on
        refined embeddings + postprocess); ``peak_rss_mib``. Floors: every timed entry also
        holds ``flops``, ``floor_s`` (FLOPs / this machine's GEMM peak in the entry's precision;
        the decoder runs in fp32) and ``floor_ratio`` (min / floor); ``floors`` (``gemm_peak``
        per precision); ``kernels`` (the kernel choices made).
    """
    if model not in FOCSAM_CONFIGS:
        raise UnknownModelError(model, tuple(sorted(FOCSAM_CONFIGS)))
    dev = resolve_device(device)
    names = tuple(dtypes)
    resolved = {name: resolve_encoder_dtype(dev, name) for name in names}
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(FOCSAM_CONFIGS[model], model, resolved, repeats, dev, seed, threads)
    finally:
        torch.set_num_threads(previous_threads)


def _run(cfg: FocSamConfig, model: str, dtypes: dict[str, torch.dtype], repeats: int, dev: torch.device,
         seed: int, threads: int | None) -> dict:
    torch.manual_seed(seed)
    refiner = FocusRefiner(cfg.refiner).eval().to(dev)
    # prompt encoder + mask decoder only: the image encoder is not timed here
    sam = SamModel(cfg.sam, image_encoder=nn.Identity()).eval().to(dev)
    c, grid = cfg.refiner.embed_dim, cfg.sam.image_embedding_size
    canvas = cfg.refiner.canvas_size
    embeddings = torch.randn(1, c, grid, grid, device=dev)
    mask_token = torch.randn(1, 1, c, device=dev)
    result: dict = {
        "machine": machine_info(),
        "settings": {"model": model, "repeats": repeats, "device": str(dev),
                     "threads": threads or torch.get_num_threads(), "clicks": CLICKS,
                     "small_object_px": SMALL_OBJECT_PX, "canvas": canvas},
        "focus": {},
        "refine": {},
    }
    cases = {"small": _coarse_logits(canvas, SMALL_OBJECT_PX, dev),
             "full": _coarse_logits(canvas, None, dev)}
    for case, coarse in cases.items():
        box, counts, total = _windows_per_block(refiner, coarse, (grid, grid))
        result["focus"][case] = {"box": box, "windows_per_block": counts, "windows_total": total}
        logger.info("focus box %s %s: windows per block %s of %d", case, box, counts, total)

    for name, dtype in dtypes.items():
        result["refine"][name] = {}
        for case, coarse in cases.items():
            def refine(dtype: torch.dtype = dtype, coarse: torch.Tensor = coarse) -> None:
                with torch.inference_mode(), autocast_context(dev, dtype):
                    refiner(embeddings, coarse, mask_token)

            timing = time_call(_synchronised(refine, dev), repeats)
            result["refine"][name][case] = {**timing.as_dict(), "peak_rss_mib": peak_rss_mib()}
            logger.info("refine %s %s: %.3f s", name, case, timing.min_s)

    with torch.inference_mode():
        refined = refiner(embeddings, cases["small"], mask_token)
    g = torch.Generator(device="cpu").manual_seed(seed)
    coords = (torch.rand(1, CLICKS, 2, generator=g) * canvas).to(dev)
    labels = torch.tensor([[1 - k % 2 for k in range(CLICKS)]], device=dev)  # +, -, +, ...
    previous = torch.randn(1, 1, 4 * grid, 4 * grid, generator=g).to(dev)

    def decode(emb: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return sam.decode(emb, point_coords=coords, point_labels=labels, mask_input=previous,
                              multimask=False).low_res_logits

    low_res = decode(embeddings)

    def postprocess(logits: torch.Tensor = low_res) -> torch.Tensor:
        with torch.inference_mode():
            return sam.postprocess_masks(logits, (canvas, canvas), (canvas, canvas)) > 0

    def click() -> torch.Tensor:
        return postprocess(decode(refined))

    clicks = max(repeats, 10)
    timings: dict[str, Timing] = {
        "original": time_call(_synchronised(lambda: decode(embeddings), dev), clicks, warmup=2),
        "refined": time_call(_synchronised(lambda: decode(refined), dev), clicks, warmup=2),
    }
    result["decode"] = {k: t.as_dict() for k, t in timings.items()}
    result["postprocess"] = time_call(_synchronised(postprocess, dev), clicks, warmup=2).as_dict()
    result["click"] = time_call(_synchronised(click, dev), clicks, warmup=2).as_dict()
    result["peak_rss_mib"] = peak_rss_mib()

    # floors: FLOPs counted on one more (fp32) run of each, over this machine's GEMM peak
    peaks = gemm_peaks(("fp32", *dtypes), dev)
    for case, coarse in cases.items():
        with torch.inference_mode():
            flops = count_flops(lambda coarse=coarse: refiner(embeddings, coarse, mask_token))
        for name in dtypes:
            entry = result["refine"][name][case]
            entry.update(floor_entry(flops, peaks[name], entry["min_s"]))
    counted = {"original": lambda: decode(embeddings), "refined": lambda: decode(refined)}
    for key, fn in counted.items():
        entry = result["decode"][key]
        entry.update(floor_entry(count_flops(fn), peaks["fp32"], entry["min_s"]))
    for key, fn in (("postprocess", postprocess), ("click", click)):
        result[key].update(floor_entry(count_flops(fn), peaks["fp32"], result[key]["min_s"]))
    result["floors"] = {"gemm_peak": peaks}
    result["kernels"] = kernels.choices()
    return result


def format_focsam_table(result: dict) -> str:
    """Human-readable table of :func:`run_refiner_benchmark`'s result."""
    m, s = result["machine"], result["settings"]
    lines = [
        f"FocSAM benchmark: {s['model']} (random weights) on {s['device']}, "
        f"{s['threads']} threads, {m['cpu']}, torch {m['torch']}, "
        f"native bf16: {m['cpu_native_bf16']}",
    ]
    labels = {}
    for case, focus in result["focus"].items():
        counts = focus["windows_per_block"]
        plain, shifted = counts[0::2], counts[1::2]
        per = "/".join(str(v) for v in (max(plain, default=0), max(shifted, default=0)))
        what = (f"{s['small_object_px']} px object" if case == "small" else "full canvas")
        labels[case] = f"{case} box ({per} win)"
        lines.append(f"focus {case}: {what} -> box {tuple(focus['box'])}, windows per block "
                     f"(plain/shifted) {per} of {focus['windows_total']}, "
                     f"{sum(counts)} window passes in all")
    lines += [
        "",
        f"{'measurement':<44} {'min':>10} {'median':>10} {FLOOR_HEADER}",
        f"{'-' * 44} {'-' * 10} {'-' * 10} {'-' * 10} {'-' * 9}",
    ]
    for name, cases in result["refine"].items():
        for case, t in cases.items():
            label = f"refine, {labels[case]}, {name}"
            lines.append(f"{label:<44} {t['min_s'] * 1e3:>8.1f}ms {t['median_s'] * 1e3:>8.1f}ms "
                         f"{floor_cells(t, 'ms')}")
    rows = [(f"decode {s['clicks']} clicks + prev logits (original emb)", result["decode"]["original"]),
            (f"decode {s['clicks']} clicks + prev logits (refined emb)", result["decode"]["refined"]),
            (f"postprocess -> mask {s['canvas']}x{s['canvas']}", result["postprocess"]),
            ("click on refined emb (decode + postprocess)", result["click"])]
    for label, t in rows:
        lines.append(f"{label:<44} {t['min_s'] * 1e3:>8.1f}ms {t['median_s'] * 1e3:>8.1f}ms "
                     f"{floor_cells(t, 'ms')}")
    lines.append(f"{'peak RSS':<44} {result['peak_rss_mib']:>8.0f}MiB")
    if "floors" in result:
        lines += ["", peaks_line(result["floors"]["gemm_peak"]) + " (decoder: fp32; '-': no "
                  "matmul FLOPs counted)"]
    lines += kernel_lines(result.get("kernels") or {})
    return "\n".join(lines)
