"""Helpers of the "Track all" tests: synthetic stacks of moving discs with known labels, and a
deterministic stand-in for SAM 2's `VideoPropagator` that follows bright components and
reports presence."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from napari_focsam.engine.propagation_state import FrameResult

#: Pixels brighter than this are foreground in the disc stacks.
THRESHOLD = 100


@dataclass(frozen=True)
class Disc:
    """A disc of radius `r` at ``(row, col) + t * (vrow, vcol)``, shown on frames
    ``first .. last`` (inclusive; None: to the end)."""

    row: float
    col: float
    r: float
    vrow: float = 0.0
    vcol: float = 0.0
    first: int = 0
    last: int | None = None


def render_discs(n: int, hw: tuple[int, int], discs: list[Disc], seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(n, H, W)`` uint8 images (dim noise, discs at 200) and ``(n, H, W)`` int32 labels
    (disc ``i`` has label ``i + 1``; later discs are painted over earlier ones)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    images = rng.integers(0, 40, size=(n, h, w)).astype(np.uint8)
    truth = np.zeros((n, h, w), dtype=np.int32)
    for t in range(n):
        for i, d in enumerate(discs):
            if t < d.first or (d.last is not None and t > d.last):
                continue
            cy, cx = d.row + d.vrow * t, d.col + d.vcol * t
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= d.r ** 2
            images[t][inside] = 200
            truth[t][inside] = i + 1
    return images, truth


def components(image: np.ndarray) -> list[np.ndarray]:
    """A stand-in ``discover``: the bright connected components of one frame."""
    comps, n = ndimage.label(np.asarray(image) > THRESHOLD)
    return [comps == k for k in range(1, n + 1)]


class BrightTracker:
    """Stand-in for `VideoPropagator` (same constructor, `add_mask`, `remove_object`,
    `obj_ids`, `propagate`): on each frame every object takes the foreground components its
    mask on the previous frame overlaps most (each component goes to one object; a component
    several objects overlap is shared out by a watershed seeded with their masks), and is
    present (object score +4) when it got any, absent (-4, empty mask) otherwise. Prompts on
    a frame are the object there. It holds one mask per object plus its prompts, like the
    real engine's bounded memory.

    Parameters
    ----------
    net, features, video_hw, options
        As `VideoPropagator`; `features` is a store view whose source's raw frames are read.
    foreground : callable, optional
        ``foreground(t) -> (H, W) bool`` for stack index `t` (default: raw frame > THRESHOLD).
    """

    instances: list[BrightTracker] = []

    def __init__(self, net, features, video_hw, options=None, *, foreground=None) -> None:
        self.features = features
        self.video_hw = tuple(video_hw)
        self.num_frames = len(features)
        self.foreground = foreground or self._bright
        self.cond: dict[int, dict[int, np.ndarray]] = {}
        self.last: dict[int, np.ndarray] = {}
        self.added: list[tuple[int, int]] = []
        self.removed: list[tuple[int, int]] = []
        self.frame: int | None = None
        BrightTracker.instances.append(self)

    def _bright(self, t: int) -> np.ndarray:
        raw = np.asarray(self.features.store.source.raw(self.features.frame_index(t)))
        return raw.reshape(self.video_hw) > THRESHOLD

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(self.cond)

    def add_mask(self, frame, obj_id, mask, result=True):
        mask = np.asarray(mask, dtype=bool)
        assert mask.shape == self.video_hw and mask.any()
        assert 0 <= frame < self.num_frames
        self.cond.setdefault(int(obj_id), {})[int(frame)] = mask
        self.added.append((int(obj_id), int(frame)))

    def remove_object(self, obj_id):
        del self.cond[int(obj_id)]
        self.last.pop(int(obj_id), None)
        self.removed.append((int(obj_id), self.frame))
        return self.obj_ids

    def _track(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        comps, n = ndimage.label(self.foreground(t))
        ids = self.obj_ids
        masks = np.zeros((len(ids), *self.video_hw), dtype=bool)
        scores = np.full(len(ids), -4.0, dtype=np.float32)
        prev = []
        for obj in ids:
            before = self.cond[obj].get(t - 1)
            prev.append(before if before is not None else self.last.get(obj))
        # overlap of each object's previous mask with each component
        overlap = np.zeros((len(ids), n + 1), dtype=np.int64)
        for i, p in enumerate(prev):
            if p is not None and t not in self.cond[ids[i]]:
                overlap[i] = np.bincount(comps[p], minlength=n + 1)
        overlap[:, 0] = 0
        owner = overlap.argmax(axis=0) if len(ids) else np.zeros(n + 1, int)
        taken = overlap.max(axis=0) > 0 if len(ids) else np.zeros(n + 1, bool)
        shared = [c for c in range(1, n + 1) if np.count_nonzero(overlap[:, c]) > 1]
        split = self._split_shared(comps, shared, overlap, prev) if shared else None
        for i, obj in enumerate(ids):
            if t in self.cond[obj]:
                masks[i] = self.cond[obj][t]
            else:
                mine = np.flatnonzero(taken & (owner == i))
                mine = [c for c in mine if c not in shared]
                masks[i] = np.isin(comps, mine) if len(mine) else False
                if split is not None:
                    masks[i] |= split == i + 1
            scores[i] = 4.0 if masks[i].any() else -4.0
            self.last[obj] = masks[i]
        return masks, scores

    @staticmethod
    def _split_shared(comps: np.ndarray, shared: list[int], overlap: np.ndarray,
                      prev: list) -> np.ndarray:
        """Components that touch several objects' previous masks (cells that touch) are shared
        out by a watershed seeded with those masks: ``(H, W)`` int, object index + 1."""
        from skimage.segmentation import watershed

        markers = np.zeros(comps.shape, np.int32)
        region = np.isin(comps, shared)
        for i, p in enumerate(prev):
            if p is not None and overlap[i, shared].any():
                markers[p & region] = i + 1
        distance = ndimage.distance_transform_edt(region)
        return watershed(-distance, markers, mask=region)

    def propagate(self, start=None, reverse=False, max_frames=None):
        assert not reverse
        start = min(min(f) for f in self.cond.values()) if start is None else int(start)
        end = self.num_frames - 1 if max_frames is None else min(start + max_frames,
                                                                  self.num_frames - 1)
        for done, t in enumerate(range(start, end + 1), start=1):
            self.frame = t
            ids = self.obj_ids
            masks, scores = self._track(t)
            logits = torch.where(torch.from_numpy(masks)[:, None], 1.0, -1.0)
            yield FrameResult(t, ids, logits, done, end - start + 1,
                              object_score_logits=torch.from_numpy(scores))

    def held_masks(self) -> int:
        """Masks this stand-in holds now (its memory)."""
        return len(self.last) + sum(len(c) for c in self.cond.values())
