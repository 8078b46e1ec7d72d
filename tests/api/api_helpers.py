"""Helpers of the headless-API tests: synthetic stacks with known objects, a deterministic
stand-in for the interactive model and for SAM 2's `VideoPropagator`, tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from skimage.measure import label as label_components

from napari_focsam.engine.propagation_state import FrameResult

#: Pixels brighter than this belong to an object.
THRESHOLD = 100
#: Frame size of the synthetic stacks: not square, so a (row, col) / (x, y) swap shows.
HW = (40, 56)


def object_masks(t: int, hw: tuple[int, int] = HW) -> dict[int, np.ndarray]:
    """The true masks of the two objects on frame `t`.

    Object 1: a disc of radius 5 at row 8 moving right by 3 pixels per frame. Object 2: a tall
    12 x 7 rectangle (asymmetric: its transpose is another shape) moving left by 2 per frame.
    """
    h, w = hw
    rr, cc = np.mgrid[:h, :w]
    disc = (rr - 8) ** 2 + (cc - (20 + 3 * t)) ** 2 <= 25
    rect = np.zeros(hw, dtype=bool)
    rect[24:36, 44 - 2 * t:51 - 2 * t] = True
    return {1: disc, 2: rect}


def object_center(obj: int, t: int) -> tuple[float, float]:
    """(row, col) of a pixel well inside object `obj` on frame `t`."""
    return (8.0, 20.0 + 3 * t) if obj == 1 else (29.0, 47.0 - 2 * t)


def make_stack(n: int = 6, hw: tuple[int, int] = HW, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, H, W)`` uint8 stack (dim noise, two bright moving objects and a bright static
    distractor in a corner) and its ``(n, H, W)`` int32 true labels (distractor excluded)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 40, size=(n, *hw)).astype(np.uint8)
    truth = np.zeros((n, *hw), dtype=np.int32)
    for t in range(n):
        data[t, 33:38, 2:7] = 220  # distractor, never prompted
        for obj, mask in object_masks(t, hw).items():
            data[t][mask] = 200
            truth[t][mask] = obj
    return data, truth


def prompt_mask(raw: np.ndarray, points_rc, labels, box_rc) -> np.ndarray:
    """The object a perfect model would draw: the bright connected component under the first
    positive point, else the largest bright component inside the box."""
    comps = label_components(raw > THRESHOLD, connectivity=1)
    pts = None if points_rc is None else np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
    labs = None if labels is None else np.asarray(labels).reshape(-1)
    if pts is not None and len(pts):
        positive = [p for p, lab in zip(pts, labs, strict=True) if lab == 1]
        if not positive:
            return np.zeros(raw.shape, dtype=bool)
        r, c = (int(v) for v in np.floor(positive[0]))
        comp = comps[r, c]
        return comps == comp if comp else np.zeros(raw.shape, dtype=bool)
    r0, c0, r1, c1 = (int(round(float(v))) for v in box_rc)
    inside = comps[r0:r1, c0:c1]
    ids, counts = np.unique(inside[inside > 0], return_counts=True)
    if not len(ids):
        return np.zeros(raw.shape, dtype=bool)
    return comps == ids[np.argmax(counts)]


def _gray(frame: np.ndarray) -> np.ndarray:
    """First channel of a ``(H, W, C)`` raw frame."""
    return np.asarray(frame)[..., 0]


def fake_mask_from_interactive(self, prompt, flat, *, keep=True, cancel_event=None):
    """Stand-in for `Segmenter._mask_from_interactive` (same signature)."""
    FAKE_INTERACTIVE_CALLS.append((prompt.obj_id, flat))
    return prompt_mask(_gray(self.source.raw(flat)), prompt.points_rc, prompt.labels, prompt.box_rc)


#: ``(obj_id, flat frame)`` of every fake interactive call (cleared by `install_fakes`).
FAKE_INTERACTIVE_CALLS: list[tuple[int, int]] = []


class FakePropagator:
    """Deterministic stand-in for `VideoPropagator`: prompts give `prompt_mask`, and tracking
    keeps the bright components of frame t overlapping the object's mask on the previous frame
    of the pass. Yields real `FrameResult` objects with +1 / -1 logits.

    Class attribute `instances` collects every propagator made (cleared by `install_fakes`).
    """

    instances: list[FakePropagator] = []

    def __init__(self, model, features, video_hw, options=None) -> None:
        self.model = model
        self.features = features
        self.source = features.store.source
        self.video_hw = tuple(video_hw)
        self.num_frames = len(features)
        self.cond: dict[int, dict[int, np.ndarray]] = {}
        self.masks: dict[int, dict[int, np.ndarray]] = {}
        self.prompts: list[tuple] = []
        self.visited: list[int] = []
        FakePropagator.instances.append(self)

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(self.cond)

    def _raw(self, t: int) -> np.ndarray:
        return _gray(self.source.raw(self.features.frame_index(t)))

    def add_points(self, frame, obj_id, points_xy=None, labels=None, box_xyxy=None, result=True):
        assert 0 <= frame < self.num_frames
        pts_rc = None if points_xy is None else np.asarray(points_xy, dtype=np.float64)[:, ::-1]
        box_rc = None if box_xyxy is None else np.asarray(box_xyxy, dtype=np.float64)[[1, 0, 3, 2]]
        self.prompts.append(("points", frame, obj_id, points_xy, box_xyxy))
        return self._set(frame, obj_id, prompt_mask(self._raw(frame), pts_rc, labels, box_rc))

    def add_clicks(self, frame, obj_id, points_xy=None, labels=None, box_xyxy=None, result=True):
        return self.add_points(frame, obj_id, points_xy, labels, box_xyxy)

    def add_mask(self, frame, obj_id, mask, result=True):
        assert 0 <= frame < self.num_frames
        mask = np.asarray(mask, dtype=bool)
        assert mask.shape == self.video_hw
        self.prompts.append(("mask", frame, obj_id, mask))
        return self._set(frame, obj_id, mask)

    def _set(self, frame, obj_id, mask):
        self.cond.setdefault(int(obj_id), {})[frame] = mask
        self.masks.setdefault(int(obj_id), {})[frame] = mask
        return self._result(frame, 1, 1)

    def _result(self, frame: int, done: int, total: int) -> FrameResult:
        ids = self.obj_ids
        logits = torch.full((len(ids), 1, *self.video_hw), -1.0)
        for i, obj in enumerate(ids):
            mask = self.masks[obj].get(frame)
            if mask is not None:
                logits[i, 0][torch.from_numpy(mask)] = 1.0
        return FrameResult(frame, ids, logits, done, total)

    def _track(self, t: int, reverse: bool) -> None:
        comps = label_components(self._raw(t) > THRESHOLD, connectivity=1)
        for obj, cond in self.cond.items():
            if t in cond:
                self.masks[obj][t] = cond[t]
                continue
            prev = self.masks[obj].get(t + 1 if reverse else t - 1)
            if prev is None:
                self.masks[obj][t] = np.zeros(self.video_hw, dtype=bool)
                continue
            hit = np.unique(comps[prev & (comps > 0)])
            self.masks[obj][t] = np.isin(comps, hit[hit > 0])

    def _first(self) -> int:
        return min(f for frames in self.cond.values() for f in frames)

    def propagate(self, start=None, reverse=False):
        start = self._first() if start is None else int(start)
        order = list(range(start, -1, -1)) if reverse else list(range(start, self.num_frames))
        for done, t in enumerate(order, start=1):
            self._track(t, reverse)
            self.visited.append(t)
            yield self._result(t, done, len(order))

    def propagate_both(self, start=None):
        start = self._first() if start is None else int(start)
        total = self.num_frames + (1 if start > 0 else 0)
        done = 0
        for reverse in (False, True):
            if reverse and start == 0:
                break
            for result in self.propagate(start, reverse):
                done += 1
                yield FrameResult(result.frame, result.obj_ids, result.logits, done, total)


def install_fakes(monkeypatch, interactive: bool = True, propagator: bool = True) -> None:
    """Replace the interactive model's drawing and/or SAM 2's propagator by the fakes."""
    import napari_focsam.api.segmenter as segmenter

    FakePropagator.instances.clear()
    FAKE_INTERACTIVE_CALLS.clear()
    if interactive:
        monkeypatch.setattr(segmenter.Segmenter, "_mask_from_interactive",
                            fake_mask_from_interactive)
    if propagator:
        monkeypatch.setattr(segmenter, "VideoPropagator", FakePropagator)


def save_tiny_checkpoints(folder: Path, seed: int = 0) -> dict[str, Path]:
    """``sam_test_tiny`` (bare state_dict) and ``sam2_test_tiny`` (``{"model": state_dict}``)
    checkpoints with seeded random weights, as the official files are laid out."""
    from napari_focsam.models.sam import SAM_CONFIGS, build_sam
    from napari_focsam.models.sam2 import SAM2_CONFIGS, build_sam2

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    sam = folder / "sam_tiny.pth"
    torch.save(build_sam(SAM_CONFIGS["sam_test_tiny"]).state_dict(), sam)
    torch.manual_seed(seed + 1)
    sam2 = folder / "sam2_tiny.pt"
    torch.save({"model": build_sam2(SAM2_CONFIGS["sam2_test_tiny"]).state_dict()}, sam2)
    return {"sam": sam, "sam2": sam2}


def write_csv(path: Path, rows: list[str], header: str = "object_id,frame,kind,row,col,label,"
              "row0,col0,row1,col1") -> Path:
    """A prompts CSV with `header` and `rows` (strings of comma-separated values)."""
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path
