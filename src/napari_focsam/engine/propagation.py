"""SAM 2 propagation through a z or t stack: every object carried by its own memory bank.

The stack is a video whose per-frame image features come from a `FeatureProvider` (the encoder
runs once per frame and is cached there). Each object keeps its own outputs per frame, split
like the official predictor into *conditioning* frames (frames with the user's prompts) and
*non-conditioning* frames (frames the tracker produced). Prompts on a frame go through the
model at once (no memory encoding yet); `VideoPropagator.propagate` first encodes the memory of
newly prompted frames, then walks the frames in order and, per frame, runs all objects that
need tracking **together** (one batch through memory attention and the heads; objects with
different memory lengths are padded and masked, which gives the same numbers as running them
one by one).

Differences from the official ``SAM2VideoPredictor`` (all optional, see `PropagationOptions`):

- **Sticky corrections** (default on): a prompted frame that was already tracked becomes a
  conditioning frame, so later propagation keeps the correction instead of overwriting it
  (official: ``add_all_frames_to_correct_as_cond=True``).
- **Bounded memory** (default on): outputs that no later frame of the current pass can use are
  dropped as the pass moves on: memory features beyond the recent-memory window and whole
  outputs beyond the object-pointer window, in the direction of the pass. Conditioning frames
  are always kept. Memory therefore stays flat over arbitrarily long stacks. `propagate_both`
  keeps what its backward half reads. Trade-off: a later pass started in the middle of frames
  an earlier pass walked past (``propagate(start=k)`` after a correction on frame k) finds
  fewer memories behind k than with bounded memory off, and can differ from it; the default
  start (the earliest conditioning frame) recomputes them and gives the same result.
- **Streaming and cancellation**: `propagate` is a generator; the state is consistent after
  every yielded frame, so a caller may stop iterating at any time and keep what it got.
- **Objects that come and go during a pass**: between two yielded frames a caller may add
  prompts (new objects, corrections, objects prompted on frames the pass already walked) and
  remove objects. Prompts are merged before the next frame, so continuing the pass gives the
  same results as stopping it and starting a new one at the next frame with the same objects.
  A pass whose objects are all removed keeps walking and yields empty results. Each result
  carries every object's presence score (``FrameResult.object_score_logits``).

The per-object state, options and results live in :mod:`.propagation_state`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.sam2.model import NO_OBJ_SCORE
from .holes import fill_small_holes
from .propagation_state import (
    FeatureProvider,
    FrameOutput,
    FrameResult,
    ObjectTrack,
    PropagationError,
    PropagationOptions,
    apply_non_overlap,
    select_closest_cond_frames,
)

__all__ = ["PREV_LOGIT_CLAMP", "VideoPropagator"]

logger = logging.getLogger(__name__)

#: Previous-step logits are clamped to this magnitude before they are fed back.
PREV_LOGIT_CLAMP = 32.0


class VideoPropagator:
    """Prompts and propagation of any number of objects through one stack.

    Parameters
    ----------
    model : napari_focsam.models.sam2.Sam2Model
        SAM 2 in eval mode.
    features : FeatureProvider
        Per-frame image features.
    video_hw : tuple of int
        ``(H, W)`` of the stack's frames (outputs are returned at this size).
    options : PropagationOptions, optional
        Behaviour; defaults to sticky corrections and non-overlapping objects.
    """

    def __init__(self, model, features: FeatureProvider, video_hw: tuple[int, int],
                 options: PropagationOptions | None = None) -> None:
        self.model = model
        self.features = features
        self.video_hw = (int(video_hw[0]), int(video_hw[1]))
        self.options = options or PropagationOptions()
        self.num_frames = len(features)
        if self.num_frames < 1:
            raise PropagationError("the stack has no frames")
        cfg = model.config
        self.fill_hole_area = (cfg.fill_hole_area if self.options.fill_hole_area is None
                               else self.options.fill_hole_area)
        self.tracks: dict[int, ObjectTrack] = {}

    # ------------------------------------------------------------------ objects
    @property
    def obj_ids(self) -> tuple[int, ...]:
        """Object ids in the order outputs are returned."""
        return tuple(self.tracks)

    def _track(self, obj_id: int, create: bool = True) -> ObjectTrack:
        track = self.tracks.get(int(obj_id))
        if track is None:
            if not create:
                raise PropagationError(f"no object with id {obj_id}; objects: {list(self.tracks)}")
            track = self.tracks[int(obj_id)] = ObjectTrack(int(obj_id))
        return track

    def remove_object(self, obj_id: int) -> tuple[int, ...]:
        """Forget an object and all its outputs (also between two frames of a pass: the pass
        goes on without it); returns the remaining ids."""
        self._track(obj_id, create=False)
        del self.tracks[int(obj_id)]
        return self.obj_ids

    def reset(self) -> None:
        """Forget every object."""
        self.tracks.clear()

    def _check_frame(self, frame: int) -> int:
        frame = int(frame)
        if not 0 <= frame < self.num_frames:
            raise PropagationError(f"frame {frame} is outside the stack of {self.num_frames} frames")
        return frame

    # ------------------------------------------------------------------ prompts
    @torch.no_grad()
    def add_points(
        self,
        frame: int,
        obj_id: int,
        points_xy: np.ndarray | torch.Tensor | None = None,
        labels: np.ndarray | torch.Tensor | None = None,
        box_xyxy: np.ndarray | torch.Tensor | Sequence[float] | None = None,
        clear_old: bool = True,
        *,
        result: bool = True,
    ) -> FrameResult | None:
        """Points and/or a box for object `obj_id` on `frame`.

        Parameters
        ----------
        frame : int
            Frame index.
        obj_id : int
            Object id (new ids create objects).
        points_xy : array-like, optional
            ``(N, 2)`` (x, y) in frame pixels.
        labels : array-like, optional
            ``(N,)`` 1 positive, 0 negative.
        box_xyxy : array-like, optional
            ``(4,)`` (x0, y0, x1, y1) in frame pixels; sent as the first two points.
        clear_old : bool
            Replace the frame's earlier points of this object (required with a box).
        result : bool
            Return every object's logits on `frame` (False: None; entering many objects is
            then linear in their number).

        Returns
        -------
        FrameResult or None
            All objects on `frame`.
        """
        frame = self._check_frame(frame)
        if (points_xy is None) != (labels is None):
            raise PropagationError("points and labels must be given together")
        if points_xy is None and box_xyxy is None:
            raise PropagationError("give points or a box")
        pts = torch.zeros(0, 2) if points_xy is None else torch.as_tensor(
            np.ascontiguousarray(points_xy, dtype=np.float32)).reshape(-1, 2)
        labs = torch.zeros(0, dtype=torch.int32) if labels is None else torch.as_tensor(
            np.ascontiguousarray(labels)).reshape(-1).to(torch.int32)
        if pts.shape[0] != labs.shape[0]:
            raise PropagationError(f"{pts.shape[0]} points but {labs.shape[0]} labels")
        if not torch.isfinite(pts).all():
            raise PropagationError("points must be finite")
        if not ((labs == 0) | (labs == 1)).all():
            raise PropagationError(f"labels must be 1 (positive) or 0 (negative), got {labs.tolist()}")
        if box_xyxy is not None:
            if not clear_old:
                raise PropagationError("a box replaces the frame's points: use clear_old=True")
            box = torch.as_tensor(np.asarray(box_xyxy, dtype=np.float32)).reshape(-1)
            if box.numel() != 4 or not torch.isfinite(box).all():
                raise PropagationError(f"a box is 4 finite values (x0, y0, x1, y1), got {box.tolist()}")
            box = box.reshape(2, 2)
            pts = torch.cat([box, pts])
            labs = torch.cat([torch.tensor([2, 3], dtype=torch.int32), labs])
        h, w = self.video_hw
        coords = (pts / torch.tensor([w, h], dtype=torch.float32) * self.model.image_size)[None]
        labs = labs[None]
        track = self._track(obj_id)
        if not clear_old and frame in track.points:
            old_c, old_l = track.points[frame]
            coords, labs = torch.cat([old_c, coords], 1), torch.cat([old_l, labs], 1)
        device = self.model.device
        coords, labs = coords.to(device), labs.to(device)
        is_init = frame not in track.tracked
        reverse = False if is_init else track.tracked[frame]
        is_cond = is_init or self.options.sticky_corrections
        previous = track.output_on(frame, is_cond)
        prev_logits = None
        if previous is not None and previous.pred_masks is not None:
            prev_logits = previous.pred_masks.to(device).clamp(-PREV_LOGIT_CLAMP, PREV_LOGIT_CLAMP)
        out = self._run_frame([track], frame, is_init, reverse, run_memory=False,
                              points=(coords, labs), prev_logits=prev_logits)[0]
        track.points[frame] = (coords, labs)
        track.masks.pop(frame, None)
        (track.temp_cond if is_cond else track.temp_non_cond)[frame] = out
        return self._prompt_result(frame, is_cond) if result else None

    def add_clicks(
        self,
        frame: int,
        obj_id: int,
        points_xy: np.ndarray | torch.Tensor | None = None,
        labels: np.ndarray | torch.Tensor | None = None,
        box_xyxy: np.ndarray | torch.Tensor | Sequence[float] | None = None,
        *,
        result: bool = True,
    ) -> FrameResult | None:
        """Clicks of one object on `frame` added one at a time, each with the previous step's
        logits, as SAM 2's interactive protocol sends them (the same mask as a click session
        of `Sam2ImagePredictor`). Replaces the object's earlier points on the frame.

        Parameters are those of `add_points`; the box goes with the first click.
        """
        if (points_xy is None) != (labels is None):
            raise PropagationError("points and labels must be given together")
        pts = None if points_xy is None else np.asarray(points_xy, dtype=np.float32).reshape(-1, 2)
        labs = None if labels is None else np.asarray(labels).reshape(-1)
        if pts is None or len(pts) == 0:
            return self.add_points(frame, obj_id, None, None, box_xyxy, result=result)
        if len(labs) != len(pts):
            raise PropagationError(f"{len(pts)} points but {len(labs)} labels")
        last = len(pts) - 1
        out = self.add_points(frame, obj_id, pts[:1], labs[:1], box_xyxy,
                              result=result and last == 0)
        for k in range(1, len(pts)):
            out = self.add_points(frame, obj_id, pts[k:k + 1], labs[k:k + 1], clear_old=False,
                                  result=result and k == last)
        return out

    @torch.no_grad()
    def add_mask(self, frame: int, obj_id: int, mask: np.ndarray | torch.Tensor, *,
                 result: bool = True) -> FrameResult | None:
        """A mask prompt (e.g. drawn with SAM or FocSAM) for object `obj_id` on `frame`.

        Parameters
        ----------
        frame : int
            Frame index.
        obj_id : int
            Object id.
        mask : array-like
            ``(H, W)`` bool (nonzero = object) at the stack's resolution.
        result : bool
            As in `add_points`.

        Returns
        -------
        FrameResult or None
        """
        frame = self._check_frame(frame)
        m = torch.as_tensor(np.asarray(mask))
        if m.ndim != 2:
            raise PropagationError(f"mask must be 2D (H, W), got shape {tuple(m.shape)}")
        if tuple(m.shape) != self.video_hw:
            raise PropagationError(f"mask shape {tuple(m.shape)} differs from the frames' "
                                   f"{self.video_hw}")
        size = self.model.image_size
        m = m.bool().float()[None, None].to(self.model.device)
        if tuple(m.shape[-2:]) != (size, size):
            m = F.interpolate(m, (size, size), mode="bilinear", align_corners=False,
                              antialias=True)
            m = (m >= 0.5).float()
        track = self._track(obj_id)
        is_init = frame not in track.tracked
        reverse = False if is_init else track.tracked[frame]
        is_cond = is_init or self.options.sticky_corrections
        out = self._run_frame([track], frame, is_init, reverse, run_memory=False, masks=m)[0]
        track.masks[frame] = m.bool()
        track.points.pop(frame, None)
        (track.temp_cond if is_cond else track.temp_non_cond)[frame] = out
        return self._prompt_result(frame, is_cond) if result else None

    def clear_prompts(self, frame: int, obj_id: int) -> FrameResult:
        """Remove an object's prompts on a frame; its output there becomes a tracked one."""
        frame = self._check_frame(frame)
        track = self._track(obj_id, create=False)
        track.points.pop(frame, None)
        track.masks.pop(frame, None)
        track.temp_cond.pop(frame, None)
        track.temp_non_cond.pop(frame, None)
        out = track.cond.pop(frame, None)
        if out is not None:
            track.non_cond[frame] = out
            track.tracked.pop(frame, None)
        is_cond = any(frame in t.temp_cond for t in self.tracks.values())
        return self._prompt_result(frame, is_cond)

    def _prompt_result(self, frame: int, is_cond: bool) -> FrameResult:
        """All objects' logits on a prompted frame, each upsampled straight to the frame size."""
        h, w = self.video_hw
        device = self.model.device
        logits = torch.full((len(self.tracks), 1, h, w), NO_OBJ_SCORE, device=device)
        scores = torch.full((len(self.tracks),), NO_OBJ_SCORE)
        for i, track in enumerate(self.tracks.values()):
            out = track.output_on(frame, is_cond)
            if out is None or out.pred_masks is None:
                continue
            logits[i:i + 1] = F.interpolate(out.pred_masks.to(device), (h, w), mode="bilinear",
                                            align_corners=False)
            scores[i] = out.object_score_logits.reshape(()).float().cpu()
        if self.options.non_overlap:
            logits = apply_non_overlap(logits)
        return FrameResult(frame, self.obj_ids, logits, object_score_logits=scores)

    # ------------------------------------------------------------------ propagation
    def prompted_frames(self) -> list[int]:
        """Frames holding prompts of any object, sorted."""
        frames = set()
        for track in self.tracks.values():
            frames.update(track.cond, track.temp_cond, track.temp_non_cond)
        return sorted(frames)

    @torch.no_grad()
    def propagate(self, start: int | None = None, reverse: bool = False,
                  max_frames: int | None = None, *,
                  keep_from: int | None = None) -> Iterator[FrameResult]:
        """Track every object frame by frame, yielding each frame's result as it is done.

        Parameters
        ----------
        start : int, optional
            First frame; default the earliest conditioning frame of any object.
        reverse : bool
            Walk towards frame 0.
        max_frames : int, optional
            Frames to track after `start` (default: to the end of the stack).
        keep_from : int, optional
            With bounded memory, also keep the outputs of the frames a pass starting at this
            frame in the other direction will read (`propagate_both` sets it to `start`).

        Yields
        ------
        FrameResult
            With progress (`done`, `total`). Stopping the iteration leaves the state valid.
            Between two frames the caller may add prompts and remove objects: they take effect
            from the next frame (see the module docstring).
        """
        self._merge_prompts()
        if start is None:
            start = min(t for track in self.tracks.values() for t in track.cond)
        start = self._check_frame(start)
        span = self.num_frames if max_frames is None else int(max_frames)
        if reverse:
            end = max(start - span, 0)
            order = list(range(start, end - 1, -1)) if start > 0 else []
        else:
            end = min(start + span, self.num_frames - 1)
            order = list(range(start, end + 1))
        for done, frame in enumerate(order, start=1):
            if done > 1 and self._has_unmerged_prompts():
                self._merge_prompts()  # prompts added while the caller held the last frame
            yield self._propagate_frame(frame, reverse, done, len(order), keep_from=keep_from)

    def propagate_both(self, start: int | None = None) -> Iterator[FrameResult]:
        """Forward from `start` (default: earliest prompted frame) to the end, then backward
        from `start` to frame 0; progress counts both passes."""
        self._merge_prompts()
        if start is None:
            start = min(t for track in self.tracks.values() for t in track.cond)
        start = self._check_frame(start)
        total = self.num_frames + (1 if start > 0 else 0)
        done = 0
        for result in self.propagate(start, reverse=False, keep_from=start):
            done += 1
            yield dataclasses.replace(result, done=done, total=total)
        for result in self.propagate(start, reverse=True):
            done += 1
            yield dataclasses.replace(result, done=done, total=total)

    def _has_unmerged_prompts(self) -> bool:
        return any(t.temp_cond or t.temp_non_cond for t in self.tracks.values())

    def _merge_prompts(self) -> None:
        """Encode the memory of newly prompted frames and merge them (official preflight)."""
        if not self.tracks:
            raise PropagationError("no object has prompts yet: add points, a box or a mask first")
        size = self.model.image_size
        for track in self.tracks.values():
            for is_cond in (False, True):
                temp = track.temp_cond if is_cond else track.temp_non_cond
                store = track.cond if is_cond else track.non_cond
                for frame, out in temp.items():
                    if out.maskmem is None:
                        high = F.interpolate(out.pred_masks.to(self.model.device), (size, size),
                                             mode="bilinear", align_corners=False)
                        out.maskmem = self._encode_memory(frame, high, out.object_score_logits,
                                                          from_points=True)
                    store[frame] = out
                temp.clear()
            if not track.cond:
                raise PropagationError(f"object {track.obj_id} has no prompts on any frame")
            for frame in track.cond:
                track.non_cond.pop(frame, None)

    def _propagate_frame(self, frame: int, reverse: bool, done: int, total: int,
                         keep_from: int | None = None) -> FrameResult:
        to_run = [t for t in self.tracks.values() if frame not in t.cond]
        step = max(1, int(self.options.object_batch))
        for start in range(0, len(to_run), step):  # batches bound the memory of many objects
            batch = to_run[start:start + step]
            outs = self._run_frame(batch, frame, False, reverse, run_memory=True)
            for track, out in zip(batch, outs, strict=True):
                track.non_cond[frame] = out
        device = self.model.device
        preds, scores = [], []
        for track in self.tracks.values():
            track.tracked[frame] = reverse
            out = track.cond.get(frame) or track.non_cond[frame]
            preds.append(out.pred_masks.to(device))
            scores.append(out.object_score_logits.reshape(1).float().cpu())
        if preds:
            logits = F.interpolate(torch.cat(preds), self.video_hw, mode="bilinear",
                                   align_corners=False)
        else:  # every object was removed during the pass
            logits = torch.zeros((0, 1, *self.video_hw), device=device)
        if self.options.non_overlap:
            logits = apply_non_overlap(logits)
        if self.options.bounded_memory:
            self._drop_unreachable(frame, reverse, keep_from)
        return FrameResult(frame, self.obj_ids, logits, done, total,
                           object_score_logits=torch.cat(scores) if scores else torch.zeros(0))

    def _drop_unreachable(self, frame: int, reverse: bool, keep_from: int | None = None) -> None:
        """Drop tracked outputs behind `frame` that later frames of this pass cannot use.

        Outputs a pass from `keep_from` in the opposite direction will read are kept.
        """
        cfg = self.model.config
        # The next frame of the pass reads recent memories at most (num_maskmem - 2) strides
        # behind `frame` (its oldest slot is num_maskmem - 1 strides behind itself) and object
        # pointers at most max_obj_ptrs - 2 frames behind `frame`; -1 keeps nothing.
        stride = max(1, cfg.memory_temporal_stride_for_eval)
        keep_memory = (cfg.num_maskmem - 2) * stride if cfg.num_maskmem >= 2 else -1
        keep_pointer = cfg.max_obj_ptrs_in_encoder - 2 if cfg.use_obj_ptrs_in_encoder else -1
        # the other pass's first frame (keep_from) reads this far on its near side
        reach = max((cfg.num_maskmem - 1) * stride, cfg.max_obj_ptrs_in_encoder - 1)
        for track in self.tracks.values():
            for t in list(track.non_cond):
                behind = (t - frame) if reverse else (frame - t)
                if keep_from is not None and 0 <= ((keep_from - t) if reverse
                                                   else (t - keep_from)) <= reach:
                    continue
                if behind > max(keep_memory, keep_pointer):
                    del track.non_cond[t]
                elif behind > keep_memory:
                    out = track.non_cond[t]
                    out.maskmem = None
                    out.pred_masks = None

    # ------------------------------------------------------------------ model steps
    def _encode_memory(self, frame: int, high_res_masks: torch.Tensor,
                       object_score_logits: torch.Tensor, from_points: bool) -> torch.Tensor:
        feats = self.features(frame)
        maskmem = self.model.encode_memory(feats, high_res_masks, object_score_logits,
                                           from_points=from_points)
        return maskmem.to(self.options.memory_dtype)

    def _run_frame(
        self,
        tracks: list[ObjectTrack],
        frame: int,
        is_init: bool,
        reverse: bool,
        run_memory: bool,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        masks: torch.Tensor | None = None,
        prev_logits: torch.Tensor | None = None,
    ) -> list[FrameOutput]:
        """One tracking step of `tracks` (batched) on `frame`."""
        model = self.model
        feats = self.features(frame)
        b = len(tracks)
        if masks is not None and model.config.use_mask_input_as_output_without_sam:
            heads = model.mask_as_output(feats, masks)
        else:
            if is_init:
                pix = model.pix_without_memory(feats, b)
            else:
                memory = self._gather_memory(tracks, frame, reverse)
                pix = model.pix_with_memory(feats, *memory)
            mask_input = prev_logits if masks is None else masks
            n_points = 0 if points is None else points[1].shape[1]
            heads = model.sam_heads(pix, feats, points=points, mask_input=mask_input,
                                    multimask=model.use_multimask(is_init, n_points))
        maskmem = None
        if run_memory and model.config.num_maskmem > 0:
            maskmem = model.encode_memory(feats, heads.high_res_masks, heads.object_score_logits,
                                          from_points=points is not None)
            maskmem = maskmem.to(self.options.memory_dtype)
        pred = heads.low_res_masks.float()
        if self.fill_hole_area > 0:
            pred = fill_small_holes(pred, self.fill_hole_area)
        return [
            FrameOutput(pred[i:i + 1], heads.obj_ptr[i:i + 1],
                        heads.object_score_logits[i:i + 1],
                        None if maskmem is None else maskmem[i:i + 1])
            for i in range(b)
        ]

    def _gather_memory(self, tracks: list[ObjectTrack], frame: int, reverse: bool):
        """Memory frames and object pointers of each track for `frame`, padded to a batch.

        Returns
        -------
        tuple
            Arguments for ``model.pix_with_memory``: per-object lists of
            ``(t_pos, maskmem (1, Cm, E, E))`` and of ``(signed distance, obj_ptr (1, C))``.
        """
        cfg = self.model.config
        n_mem = cfg.num_maskmem
        stride = max(1, cfg.memory_temporal_stride_for_eval)
        frames_per_obj, pointers_per_obj = [], []
        for track in tracks:
            if not track.cond:
                raise PropagationError(f"object {track.obj_id} has no conditioning frame")
            selected, unselected = select_closest_cond_frames(frame, track.cond,
                                                              cfg.max_cond_frames_in_attn)
            entries: list[tuple[int, FrameOutput | None]] = [(0, o) for o in selected.values()]
            for t_pos in range(1, n_mem):
                t_rel = n_mem - t_pos
                if t_rel == 1:
                    prev = frame + 1 if reverse else frame - 1
                elif not reverse:
                    prev = ((frame - 2) // stride) * stride - (t_rel - 2) * stride
                else:
                    prev = -(-(frame + 2) // stride) * stride + (t_rel - 2) * stride
                out = track.non_cond.get(prev)
                if out is None:
                    out = unselected.get(prev)
                entries.append((t_pos, out))
            frames_per_obj.append([(t_pos, o.maskmem) for t_pos, o in entries
                                   if o is not None and o.maskmem is not None])
            pointers: list[tuple[int, torch.Tensor]] = []
            if cfg.use_obj_ptrs_in_encoder:
                max_ptrs = min(self.num_frames, cfg.max_obj_ptrs_in_encoder)
                sign = -1 if reverse else 1
                if cfg.only_obj_ptrs_in_the_past_for_eval:
                    ptr_cond = {t: o for t, o in selected.items()
                                if (t >= frame if reverse else t <= frame)}
                else:
                    ptr_cond = selected
                for t, o in ptr_cond.items():
                    dist = (frame - t) * sign if cfg.use_signed_tpos_enc_to_obj_ptrs \
                        else abs(frame - t)
                    pointers.append((dist, o.obj_ptr))
                for t_diff in range(1, max_ptrs):
                    t = frame + t_diff if reverse else frame - t_diff
                    if t < 0 or t >= self.num_frames:
                        break
                    o = track.non_cond.get(t, unselected.get(t))
                    if o is not None:
                        pointers.append((t_diff, o.obj_ptr))
            pointers_per_obj.append(pointers)
        max_ptrs = min(self.num_frames, cfg.max_obj_ptrs_in_encoder)
        return frames_per_obj, pointers_per_obj, max_ptrs
