"""Where SAM 2 propagation spends its time, per object and frame.

Builds a random-weight SAM 2 (default ``sam2.1_hiera_tiny``) at a chosen input size, computes the
features of a synthetic clip once (bright discs moving over a dark background, the sam2
benchmark's stack), prompts 1 and then N objects with one click each on frame 0, runs one
warm-up pass and times ``--passes`` propagation passes with forward hooks on the modules and
timing wrappers around a few functions (inclusive times: a row contains the rows indented
below it). Prints, per row, the seconds per tracked frame for each object count and the
seconds each extra object adds (``(t_N - t_1) / (N - 1)``).

Example (about 2 minutes on 2 cores)::

    python scripts/profile_propagation.py --image-size 512 --frames 8 --objects 1,3

``--memory-attention fast,reference`` (default) times the memory attention's fast path and
its plain formulation (``MemoryAttention.fast = False``), passes interleaved; each figure is
the minimum over ``--passes`` passes, which is the least disturbed on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from collections import defaultdict

import torch

import napari_focsam.engine.propagation as propagation_mod
import napari_focsam.models.sam2.memory_attention as ma_mod
from napari_focsam.benchmarks.sam2 import DiscStack, _prompt_objects
from napari_focsam.engine.frame_features import StackFeatures
from napari_focsam.engine.precision import autocast_context
from napari_focsam.engine.propagation import VideoPropagator
from napari_focsam.engine.propagation_state import PropagationOptions
from napari_focsam.models.sam2.config import SAM2_CONFIGS
from napari_focsam.models.sam2.model import Sam2Model, build_sam2

# (label, regex on module names); inclusive times, a row's children are indented.
MODULE_ROWS = [
    ("memory_attention", None),  # timed around MemoryAttention.forward / forward_groups
    ("  self_attn (4 layers)", r"memory_attention\.layers\.\d+\.self_attn"),
    ("  cross_attn (all)", r"memory_attention\.layers\.\d+\.cross_attn_image"),
    ("    cross q_proj", r"memory_attention\.layers\.\d+\.cross_attn_image\.q_proj"),
    ("    cross k_proj", r"memory_attention\.layers\.\d+\.cross_attn_image\.k_proj"),
    ("    cross v_proj", r"memory_attention\.layers\.\d+\.cross_attn_image\.v_proj"),
    ("    cross out_proj", r"memory_attention\.layers\.\d+\.cross_attn_image\.out_proj"),
    ("  ffn linear1+2", r"memory_attention\.layers\.\d+\.linear[12]"),
    ("  layer norms", r"memory_attention\.(layers\.\d+\.norm\d|norm)"),
    ("sam_prompt_encoder", r"sam_prompt_encoder"),
    ("sam_mask_decoder", r"sam_mask_decoder"),
    ("obj_ptr_proj", r"obj_ptr_proj"),
    ("memory_encoder", r"memory_encoder"),
]


class Timer:
    """Accumulates inclusive wall time per label."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.enabled = False
        self.active: set[str] = set()

    @contextlib.contextmanager
    def section(self, label: str):
        if not self.enabled or label in self.active:  # reentrant calls counted once
            yield
            return
        self.active.add(label)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.active.discard(label)
            self.total[label] += time.perf_counter() - start
            self.calls[label] += 1

    def reset(self) -> None:
        self.total.clear()
        self.calls.clear()


def instrument(net: Sam2Model, timer: Timer) -> list:
    """Forward hooks on the modules of MODULE_ROWS and wrappers around functions; returns undo
    callbacks."""
    undo = []
    starts: dict[int, list[float]] = defaultdict(list)
    for name, module in net.named_modules():
        for label, pattern in MODULE_ROWS:
            if pattern is None or not re.fullmatch(pattern, name):
                continue

            key = id(module)

            def pre(mod, _args, key=key):
                if timer.enabled:
                    starts[key].append(time.perf_counter())

            def post(mod, _args, _out, key=key, label=label):
                if timer.enabled and starts[key]:
                    timer.total[label] += time.perf_counter() - starts[key].pop()
                    timer.calls[label] += 1

            handles = (module.register_forward_pre_hook(pre), module.register_forward_hook(post))
            undo.extend(h.remove for h in handles)

    def wrap(owner, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            with timer.section(label):
                return original(*args, **kwargs)

        setattr(owner, attr, timed)
        undo.append(lambda: setattr(owner, attr, original))

    wrap(ma_mod.MemoryAttention, "forward", "memory_attention")
    wrap(ma_mod.MemoryAttention, "forward_groups", "memory_attention")
    wrap(ma_mod, "attend", "    attend (cross + self)")
    wrap(ma_mod, "apply_rope_complex", "    apply_rope_complex (cross + self)")
    wrap(ma_mod, "apply_rope", "    apply_rope (cross + self)")
    wrap(VideoPropagator, "_gather_memory", "gather_memory (python)")
    wrap(Sam2Model, "pix_with_memory", "pix_with_memory (build + memory_attention)")
    wrap(propagation_mod, "fill_small_holes", "fill_small_holes")
    wrap(propagation_mod, "apply_non_overlap", "apply_non_overlap")
    return undo


def time_counts(net, feats, stack, n_objects: int, modes: list[str], passes: int, timer: Timer,
                dtype, object_batch: int) -> dict[str, tuple[float, dict[str, float]]]:
    """Per mode, seconds per tracked frame (whole step and per row) for `n_objects` objects.

    The modes' passes are interleaved and each figure is the minimum over the passes (the
    machine may be shared: the minimum is the least disturbed pass)."""
    best: dict[str, tuple[float, dict[str, float]]] = {}
    props = {}
    with torch.no_grad(), autocast_context(net.device, dtype):
        for mode in modes:
            net.memory_attention.fast = mode == "fast"
            prop = VideoPropagator(net, feats, stack.hw, PropagationOptions(object_batch=object_batch))
            _prompt_objects(prop, stack, n_objects)
            for _ in prop.propagate():  # warm-up
                pass
            props[mode] = prop
        for _ in range(passes):
            for mode in modes:
                net.memory_attention.fast = mode == "fast"
                timer.reset()
                timer.enabled = True
                frames, wall = 0, 0.0
                gen = props[mode].propagate()
                while True:
                    start = time.perf_counter()
                    result = next(gen, None)
                    if result is None:
                        break
                    if result.frame != 0:
                        wall += time.perf_counter() - start
                        frames += 1
                timer.enabled = False
                rows = {k: v / frames for k, v in timer.total.items()}
                if mode not in best:
                    best[mode] = (wall / frames, rows)
                else:
                    old_wall, old_rows = best[mode]
                    best[mode] = (min(old_wall, wall / frames),
                                  {k: min(old_rows.get(k, v), v) for k, v in rows.items()})
    net.memory_attention.fast = True
    return best


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sam2.1_hiera_tiny", choices=sorted(SAM2_CONFIGS))
    parser.add_argument("--image-size", type=int, default=512,
                        help="model input side (1024 = released; 512 runs ~6x faster)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--objects", default="1,3", help="comma-separated object counts")
    parser.add_argument("--passes", type=int, default=1,
                        help="timed passes after a warm-up (figures: the minimum over passes)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--object-batch", type=int, default=64,
                        help="PropagationOptions.object_batch (default: all objects at once)")
    parser.add_argument("--memory-attention", default="fast,reference",
                        help="comma-separated formulations of the memory attention to compare "
                             "(fast, reference = the plain one); their passes are interleaved")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    counts = [int(n) for n in args.objects.split(",")]
    torch.manual_seed(args.seed)
    config = SAM2_CONFIGS[args.model].replace(image_size=args.image_size)
    net = build_sam2(config)
    modes = [m.strip() for m in args.memory_attention.split(",")]
    if set(modes) - {"fast", "reference"}:
        parser.error(f"unknown formulation in --memory-attention {args.memory_attention!r}")
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    size = net.image_size
    stack = DiscStack(args.frames, (size, size), max(counts))
    feats = StackFeatures(net, stack, encoder_dtype=dtype)
    start = time.perf_counter()
    for t in range(args.frames):
        feats(t)
    encode = (time.perf_counter() - start) / args.frames

    timer = Timer()
    undo = instrument(net, timer)
    try:
        per_count = {n: time_counts(net, feats, stack, n, modes, args.passes, timer, dtype,
                                    args.object_batch) for n in counts}
    finally:
        for fn in undo:
            fn()

    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = "unknown CPU"
    try:
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    say(f"{args.model} at {size} px, {args.frames} frames, {args.dtype}, {torch.get_num_threads()} "
          f"threads, {cpu}, load average {load}; min over {args.passes} pass(es)")
    say(f"encoder (not in the table): {encode:.3f} s per frame")
    labels = [label for label, _ in MODULE_ROWS]
    base = counts[0]
    has_extra = len(counts) > 1
    for mode in modes:
        results = {n: per_count[n][mode] for n in counts}
        extra = sorted({k for _, rows in results.values() for k in rows} - set(labels))
        header = "".join(f"{f'{n} obj s/frame':>16}" for n in counts)
        if has_extra:
            header += "".join(f"{f'+1 obj ({n})':>14}" for n in counts[1:])
        say(f"\nmemory attention: {mode}")
        say(f"{'row':<46}{header}")

        def line(label: str, values: dict[int, float]) -> str:
            cells = "".join(f"{values[n]:>16.4f}" for n in counts)
            if has_extra:
                cells += "".join(f"{(values[n] - values[base]) / (n - base):>14.4f}"
                                 for n in counts[1:])
            return f"{label:<46}{cells}"

        say(line("whole step (per tracked frame)", {n: r[0] for n, r in results.items()}))
        for label in labels + extra:
            say(line(label, {n: r[1].get(label, 0.0) for n, r in results.items()}))


if __name__ == "__main__":
    main()
