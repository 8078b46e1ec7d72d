"""Memory of "Track all" over a long stack with a real SAM 2 (random weights), for the record.

A synthetic stack of discs crossing the field in lanes is tracked from its first frame
through `TrackAll` (labels written frame by frame, every object checked for loss and division on
every frame). The resident memory of the process, the tensors the propagation engine holds and
the number of live objects are sampled every few frames. Features are computed on the fly with
a small RAM cache, so what could grow is the tracking state.

Random weights do not follow the discs, so by default the objects are fixed: no discovery,
divisions and losses switched off (every object is made present), and the figure is that of
``lanes`` objects carried through the whole stack. Objects coming and going are measured with
a stand-in tracker in ``tests/tracking/test_track_all.py``. Run it with ``napari-focsam bench
track-memory`` (or within ``bench all``).
"""

from __future__ import annotations

import gc
import logging
import time

import numpy as np
import psutil
import torch
from scipy import ndimage

from ..api.models import RANDOM_WEIGHTS, LoadedModel
from ..api.segmenter import Segmenter
from ..engine.precision import resolve_device
from ..engine.propagation import VideoPropagator
from ..families import family_of
from ..models.sam2.config import SAM2_CONFIGS
from ..models.sam2.model import build_sam2
from ..tracking.lifecycle import TrackOptions
from ..tracking.track_all import TrackAll

__all__ = ["LaneStack", "format_track_memory", "run_track_memory_benchmark"]

logger = logging.getLogger(__name__)

_MIB = 2**20


class LaneStack:
    """``(T, H, W)`` uint8 frames drawn on demand: `lanes` discs of radius `radius` crossing
    the field left to right at `speed` pixels per frame, one per horizontal lane, wrapping
    around (a disc leaves on the right, a new one enters on the left)."""

    def __init__(self, n_frames: int, hw: tuple[int, int], lanes: int = 6, radius: int = 8,
                 speed: int = 3) -> None:
        self.shape = (int(n_frames), int(hw[0]), int(hw[1]))
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.lanes, self.radius, self.speed = int(lanes), int(radius), int(speed)

    def __len__(self) -> int:
        return self.shape[0]

    def frame(self, t: int) -> np.ndarray:
        """``(H, W)`` uint8 frame `t`."""
        _, h, w = self.shape
        yy, xx = np.ogrid[:h, :w]
        out = np.full((h, w), 16, np.uint8)
        period = w + 4 * self.radius
        for lane in range(self.lanes):
            cy = (lane + 0.5) * h / self.lanes
            phase = int((lane + 0.5) * period / self.lanes)  # every disc in view on frame 0
            cx = (self.speed * t + phase) % period - 2 * self.radius
            out[(yy - cy) ** 2 + (xx - cx) ** 2 <= self.radius ** 2] = 220
        return out

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        t, rest = key[0], key[1:]
        if isinstance(t, (int, np.integer)):
            frame = self.frame(int(t))
            return frame[rest] if rest else frame
        frames = np.stack([self.frame(i) for i in range(*t.indices(len(self)))])
        return frames[(slice(None), *rest)]

    def components(self, t: int) -> list[np.ndarray]:
        """The discs of frame `t` as ``(H, W)`` bool masks (a stand-in ``discover``)."""
        comps, n = ndimage.label(self.frame(t) > 100)
        return [comps == k for k in range(1, n + 1)]


def _held_mib(prop: VideoPropagator) -> float:
    total = 0
    for track in prop.tracks.values():
        for store in (track.cond, track.non_cond, track.temp_cond, track.temp_non_cond):
            for out in store.values():
                for t in (out.pred_masks, out.obj_ptr, out.object_score_logits, out.maskmem):
                    if t is not None:
                        total += t.numel() * t.element_size()
    return total / _MIB


def run_track_memory_benchmark(frames: int = 1000, image_size: int = 256,
                               model_name: str = "sam2.1_hiera_tiny", lanes: int = 6,
                               sample_every: int = 50, ram_mib: int = 8,
                               options: TrackOptions | None = None, device: str = "cpu",
                               seed: int = 0) -> dict:
    """Track a `LaneStack` with a random-weight SAM 2 and sample memory.

    Parameters
    ----------
    frames : int
        Stack length.
    image_size : int
        Model input side (and frame size).
    model_name : str
        A SAM 2 config name (``SAM2_CONFIGS``).
    lanes : int
        Discs on screen at a time.
    sample_every : int
        Frames between samples.
    ram_mib : int
        RAM bound of the feature cache.
    options : TrackOptions, optional
        Default: no discovery, no divisions, no losses (see the module docstring); objects
        found every 5 frames with ``TrackOptions(discover_every=5)``.
    device : str
    seed : int
        Seed of the random weights.

    Returns
    -------
    dict
        ``settings``; ``samples`` (frame, RSS MiB, MiB held by the engine, live objects,
        tracks so far); ``rss_growth_mib`` and ``held_growth_mib`` from the first sample to the
        last; ``seconds``.
    """
    dev = resolve_device(device)
    torch.manual_seed(seed)
    config = SAM2_CONFIGS[model_name].replace(image_size=int(image_size))
    net = build_sam2(config).to(dev).eval()
    with torch.no_grad():  # every object present: the worst case for what the engine holds
        net.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 10.0
    model = LoadedModel(model_name, family_of(model_name), net, dev, torch.float32,
                        RANDOM_WEIGHTS, f"random-{seed}-{image_size}")
    stack = LaneStack(frames, (image_size, image_size), lanes=lanes)
    seg = Segmenter(stack, interactive=model, propagation=model, stack_axis=0, cache_root=False,
                    ram_bytes=ram_mib * _MIB)
    seg.labels[...] = 0  # touch the labels' pages before measuring
    made: list[VideoPropagator] = []

    def factory(*args):
        made.append(VideoPropagator(*args))
        return made[-1]

    seeds = np.zeros(stack.shape[1:], np.int32)
    for k, m in enumerate(stack.components(0), start=1):
        seeds[m] = k
    if options is None:
        options = TrackOptions(discover_every=0, lost_after=frames + 1, division_min_frames=0)
    track = TrackAll(seg, seeds=seeds, discover=stack.components, options=options,
                     propagator=factory)
    samples = []
    start = time.perf_counter()
    for step in track.run():
        if step.stage != "track" or (step.done % sample_every and step.done != step.total):
            continue
        gc.collect()
        samples.append({"frame": step.done, "rss_mib": psutil.Process().memory_info().rss / _MIB,
                        "held_mib": _held_mib(made[0]), "objects": step.n_objects,
                        "tracks": len(track.table)})
        logger.info("frame %d: %s", step.done, samples[-1])
    seconds = time.perf_counter() - start
    first, last = samples[0], samples[-1]
    return {
        "settings": {"model": model_name, "image_size": image_size, "frames": frames,
                     "lanes": lanes, "sample_every": sample_every, "ram_mib": ram_mib,
                     "device": str(dev)},
        "samples": samples,
        "rss_growth_mib": last["rss_mib"] - first["rss_mib"],
        "held_growth_mib": last["held_mib"] - first["held_mib"],
        "seconds": seconds,
    }


def format_track_memory(result: dict) -> str:
    """A table of `run_track_memory_benchmark`'s samples."""
    s = result["settings"]
    lines = [f"Track all over {s['frames']} frames: {s['model']} (random weights) at "
             f"{s['image_size']}^2, {s['lanes']} lanes, {s['device']}",
             f"{'frame':>6} {'RSS MiB':>9} {'held MiB':>9} {'objects':>8} {'tracks':>7}"]
    for x in result["samples"]:
        lines.append(f"{x['frame']:>6} {x['rss_mib']:>9.1f} {x['held_mib']:>9.2f} "
                     f"{x['objects']:>8} {x['tracks']:>7}")
    lines.append(f"growth after frame {result['samples'][0]['frame']}: RSS "
                 f"{result['rss_growth_mib']:+.1f} MiB, held {result['held_growth_mib']:+.2f} MiB; "
                 f"{result['seconds']:.0f} s")
    return "\n".join(lines)
