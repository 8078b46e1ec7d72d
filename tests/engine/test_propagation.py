"""Behaviour of the SAM 2 propagation engine (`VideoPropagator`) on small synthetic stacks.

A random-weight tiny SAM 2 (``sam2_test_tiny`` at a 128 input) tracks moving bright discs. Its
weights are nudged so that the outputs are informative: objects are always "present" (object
score > 0) and the mask logits span several units with both signs, so that comparisons between
objects, passes and options are not comparisons of constant ``NO_OBJ_SCORE`` planes. Numerical
parity with the official predictor is tested in ``test_propagation_parity.py``; here we test the
engine's own guarantees: batching, streaming, bounded memory, sticky corrections, non-overlap,
encoder caching, error handling, object bookkeeping and hole filling.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sam2_test_models import present_tiny_sam2

from napari_focsam.engine.frame_features import StackFeatures
from napari_focsam.engine.holes import HOLE_FILL_LOGIT, fill_small_holes
from napari_focsam.engine.propagation import VideoPropagator
from napari_focsam.engine.propagation_state import (
    FrameResult,
    PropagationError,
    PropagationOptions,
    apply_non_overlap,
)
from napari_focsam.models.sam2.model import build_sam2

IMAGE_SIZE = 128
HW = (40, 48)
N_FRAMES = 8
BATCH_ATOL = 1e-5
#: Options of most tests: objects independent of each other in the outputs.
INDEPENDENT = PropagationOptions(non_overlap=False)


def _disc_stack(n: int, hw: tuple[int, int] = HW) -> np.ndarray:
    """``(n, H, W, 3)`` uint8: two discs moving in opposite directions on a dark background."""
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    out = np.full((n, h, w, 3), 20, np.uint8)
    for t in range(n):
        for cx, cy, r, colour in ((10 + (2 * t) % (w - 20), 14, 7, (250, 200, 80)),
                                  (w - 12 - (2 * t) % (w - 20), 28, 6, (80, 220, 250))):
            out[t][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = colour
    return out


def _disc_mask(t: int, which: int = 1, hw: tuple[int, int] = HW) -> np.ndarray:
    """The (binary) mask of disc `which` (0 or 1) on frame `t` of `_disc_stack`."""
    frame = _disc_stack(t + 1, hw)[t]
    colour = (250, 200, 80) if which == 0 else (80, 220, 250)
    return (frame == colour).all(axis=-1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return present_tiny_sam2(IMAGE_SIZE)


@pytest.fixture(scope="module")
def stack():
    return _disc_stack(N_FRAMES)


@pytest.fixture(scope="module")
def features(model, stack):
    """Shared, fully cached features (encoded once for the whole module)."""
    return StackFeatures(model, stack)


def _propagator(model, features, options: PropagationOptions = INDEPENDENT) -> VideoPropagator:
    return VideoPropagator(model, features, HW, options)


def _logits(results: list[FrameResult]) -> list[torch.Tensor]:
    return [r.logits.clone() for r in results]


def _assert_results_equal(ours: list[FrameResult], ref: list[FrameResult], atol: float = 0.0) -> None:
    assert [r.frame for r in ours] == [r.frame for r in ref]
    for a, b in zip(ours, ref, strict=True):
        assert a.obj_ids == b.obj_ids
        if atol == 0.0:
            assert torch.equal(a.logits, b.logits), f"frame {a.frame}"
        else:
            torch.testing.assert_close(a.logits, b.logits, atol=atol, rtol=0, msg=f"frame {a.frame}")


def _two_objects(prop: VideoPropagator) -> None:
    prop.add_points(0, 1, [[10, 14]], [1])
    prop.add_points(0, 2, [[36, 28], [10, 14]], [1, 0])


# ---------------------------------------------------------------------- batching
#: Prompt steps of the batching scenario: (kind, frame, obj_id, args). Object 3 gets a mask on
#: frame 3 after a first pass, so its memory frames and object pointers differ in number from
#: the other objects' in the later passes (the batch is padded).
_BATCH_STEPS = [
    ("points", 0, 1, ([[10, 14]], [1])),
    ("box", 0, 2, ([26, 18, 44, 38],)),
    ("propagate", 0, None, (False,)),
    ("mask", 3, 3, ()),
    ("propagate", 3, None, (False,)),  # object 3 has fewer past outputs than the others here
    ("points", 5, 1, ([[20, 14], [36, 28]], [1, 0])),  # a sticky correction on a tracked frame
    ("propagate", N_FRAMES - 1, None, (True,)),
]


def _run_batch_steps(prop: VideoPropagator, objects: set[int]) -> dict[tuple, torch.Tensor]:
    """Run `_BATCH_STEPS` restricted to `objects`; ``{(step, frame, obj_id): (1, 1, H, W)}``."""
    out: dict[tuple, torch.Tensor] = {}
    for step, (kind, frame, obj_id, args) in enumerate(_BATCH_STEPS):
        if kind == "propagate":
            if not prop.obj_ids:
                continue
            results = list(prop.propagate(frame, reverse=args[0]))
            assert len(results) == (frame + 1 if args[0] else N_FRAMES - frame)
        elif obj_id not in objects:
            continue
        elif kind == "points":
            results = [prop.add_points(frame, obj_id, *args)]
        elif kind == "box":
            results = [prop.add_points(frame, obj_id, box_xyxy=args[0])]
        else:
            results = [prop.add_mask(frame, obj_id, _disc_mask(frame, 1))]
        for r in results:
            for i, oid in enumerate(r.obj_ids):
                out[step, r.frame, oid] = r.logits[i:i + 1]
    return out


def test_batched_objects_equal_objects_one_by_one(model, features, monkeypatch):
    lengths: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    pix_with_memory = model.pix_with_memory

    def spy(feats, frames_per_obj, pointers_per_obj, max_ptrs):
        lengths.append((tuple(map(len, frames_per_obj)), tuple(map(len, pointers_per_obj))))
        return pix_with_memory(feats, frames_per_obj, pointers_per_obj, max_ptrs)

    monkeypatch.setattr(model, "pix_with_memory", spy)
    together = _run_batch_steps(_propagator(model, features), {1, 2, 3})
    # the batches did pad: objects with different numbers of memory frames and of pointers
    assert any(len(set(frames)) > 1 for frames, _ in lengths if len(frames) == 3)
    assert any(len(set(pointers)) > 1 for _, pointers in lengths if len(pointers) == 3)
    alone: dict[tuple, torch.Tensor] = {}
    for obj in (1, 2, 3):
        alone.update(_run_batch_steps(_propagator(model, features), {obj}))
    # every output of a lone object (4 prompts; passes of 2, 3 and 3 objects) has its batched twin
    assert set(alone) <= set(together)
    assert len(alone) == 4 + N_FRAMES * 2 + (N_FRAMES - 3) * 3 + N_FRAMES * 3
    for key, ref in alone.items():
        torch.testing.assert_close(together[key], ref, atol=BATCH_ATOL, rtol=0, msg=str(key))
    # the comparison is not vacuous: the objects differ and carry real masks
    reverse_pass = len(_BATCH_STEPS) - 1
    for frame in range(N_FRAMES):
        planes = [together[reverse_pass, frame, obj] for obj in (1, 2, 3)]
        assert (planes[0] - planes[2]).abs().max() > 1e-2
        assert (planes[0] > 0).any() and (planes[0] < 0).any()


# ---------------------------------------------------------------------- streaming
def test_propagate_streams_frames_with_progress(model, stack):
    feats = StackFeatures(model, stack)
    prop = _propagator(model, feats)
    _two_objects(prop)
    assert feats.encoded == 1
    gen = prop.propagate()
    first = next(gen)
    assert (first.frame, first.done, first.total) == (0, 1, N_FRAMES)
    assert first.obj_ids == (1, 2) and first.logits.shape == (2, 1, *HW)
    assert feats.encoded == 1  # lazy: nothing beyond the yielded frame was computed
    second = next(gen)
    assert (second.frame, second.done, second.total) == (1, 2, N_FRAMES)
    assert feats.encoded == 2
    gen.close()

    back = list(prop.propagate(5, reverse=True))
    assert [r.frame for r in back] == [5, 4, 3, 2, 1, 0]
    assert [(r.done, r.total) for r in back] == [(i, 6) for i in range(1, 7)]
    part = list(prop.propagate(2, max_frames=3))
    assert [r.frame for r in part] == [2, 3, 4, 5]

    both = list(prop.propagate_both(3))
    assert [r.frame for r in both] == [3, 4, 5, 6, 7, 3, 2, 1, 0]
    assert [(r.done, r.total) for r in both] == [(i, N_FRAMES + 1) for i in range(1, N_FRAMES + 2)]


@pytest.mark.parametrize("k", [1, 3])
def test_cancelled_pass_leaves_a_valid_state(model, features, k):
    ref_prop = _propagator(model, features)
    _two_objects(ref_prop)
    reference = list(ref_prop.propagate())

    prop = _propagator(model, features)
    _two_objects(prop)
    got = []
    for result in prop.propagate():
        got.append(result)
        if len(got) == k:
            break
    _assert_results_equal(got, reference[:k])
    # the state after the break: the tracked frames are recorded, the rest is untouched
    assert set(prop.tracks[1].tracked) == set(range(k))
    assert set(prop.tracks[1].non_cond) == set(range(1, k))
    again = list(prop.propagate())
    assert [(r.done, r.total) for r in again] == [(i, N_FRAMES) for i in range(1, N_FRAMES + 1)]
    _assert_results_equal(again, reference)


# ---------------------------------------------------------------------- bounded memory
def test_bounded_memory_gives_the_same_results_and_stays_bounded(model):
    n = 40
    feats = StackFeatures(model, _disc_stack(n))
    cfg = model.config
    runs = {}
    for bounded in (True, False):
        prop = VideoPropagator(model, feats, HW, PropagationOptions(non_overlap=False,
                                                                    bounded_memory=bounded))
        prop.add_points(0, 1, [[10, 14]], [1])
        prop.add_mask(20, 2, _disc_mask(20, 1))
        prop.add_points(25, 2, [[20, 28]], [1])
        results, held = [], []
        for r in prop.propagate(0):
            results.append(r)
            held.append({oid: (sum(o.maskmem is not None for o in t.non_cond.values()),
                               len(t.non_cond)) for oid, t in prop.tracks.items()})
        results += list(prop.propagate(n - 1, reverse=True))
        runs[bounded] = (prop, results, held)

    _assert_results_equal(runs[True][1], runs[False][1])

    prop, _, held = runs[True]
    for counts in held:
        for with_memory, entries in counts.values():
            assert with_memory <= cfg.num_maskmem - 1
            assert entries <= cfg.max_obj_ptrs_in_encoder - 1
    # the bound is reached (the pass is long enough to test it)
    assert held[-1][1] == (cfg.num_maskmem - 1, cfg.max_obj_ptrs_in_encoder - 1)
    # conditioning frames are never dropped
    assert set(prop.tracks[1].cond) == {0} and set(prop.tracks[2].cond) == {20, 25}
    for track in prop.tracks.values():
        for out in track.cond.values():
            assert out.maskmem is not None and out.pred_masks is not None
    # unbounded keeps everything (for contrast)
    unbounded = runs[False][0]
    assert len(unbounded.tracks[1].non_cond) == n - 1
    assert all(o.maskmem is not None for o in unbounded.tracks[1].non_cond.values())


def test_bounded_memory_with_a_temporal_stride(model):
    n, stride = 30, 3
    strided = build_sam2(model.config.replace(memory_temporal_stride_for_eval=stride))
    strided.load_state_dict(model.state_dict())
    feats = StackFeatures(strided, _disc_stack(n))
    runs = {}
    for bounded in (True, False):
        prop = VideoPropagator(strided, feats, HW, PropagationOptions(bounded_memory=bounded))
        prop.add_points(2, 1, [[14, 14]], [1])
        results, most = [], 0
        for r in prop.propagate():
            results.append(r)
            most = max(most, sum(o.maskmem is not None for o in prop.tracks[1].non_cond.values()))
        runs[bounded] = results + list(prop.propagate(n - 1, reverse=True))
        if bounded:
            assert most == (model.config.num_maskmem - 2) * stride + 1
    _assert_results_equal(runs[True], runs[False])


# ---------------------------------------------------------------------- corrections
def _correction_run(model, features, sticky: bool):
    prop = _propagator(model, features, PropagationOptions(non_overlap=False,
                                                           sticky_corrections=sticky))
    prop.add_points(0, 1, [[10, 14]], [1])
    before = list(prop.propagate())
    correction = prop.add_points(4, 1, [[18, 14], [30, 28]], [1, 0])
    after = list(prop.propagate())
    return prop, before, correction, after


def test_sticky_correction_survives_repropagation(model, features):
    prop, before, correction, after = _correction_run(model, features, sticky=True)
    assert not torch.allclose(correction.logits, before[4].logits, atol=1e-2)
    assert torch.equal(after[4].logits, correction.logits)
    assert 4 in prop.tracks[1].cond and 4 not in prop.tracks[1].non_cond
    assert prop.prompted_frames() == [0, 4]
    # frames after the correction are tracked from it
    assert not torch.allclose(after[5].logits, before[5].logits, atol=1e-3)
    assert torch.equal(after[0].logits, before[0].logits)


def test_non_sticky_correction_is_overwritten(model, features):
    prop, before, correction, after = _correction_run(model, features, sticky=False)
    assert not torch.allclose(correction.logits, before[4].logits, atol=1e-2)
    # official behaviour: re-propagation from the first conditioning frame redoes frame 4
    assert 4 not in prop.tracks[1].cond and 4 in prop.tracks[1].non_cond
    assert prop.prompted_frames() == [0]
    _assert_results_equal(after, before)


# ---------------------------------------------------------------------- non-overlap
def test_non_overlap_keeps_one_object_per_pixel(model, features):
    def run(non_overlap: bool) -> list[FrameResult]:
        prop = _propagator(model, features, PropagationOptions(non_overlap=non_overlap))
        results = [prop.add_points(0, 1, [[10, 14]], [1]),
                   prop.add_points(0, 2, [[10, 14]], [1]),  # the same click: full overlap
                   prop.add_mask(2, 3, _disc_mask(2, 0) | _disc_mask(2, 1))]
        return results + list(prop.propagate())

    free, exclusive = run(False), run(True)
    assert any(((r.logits > 0).sum(0) > 1).any() for r in free), "degenerate: nothing overlaps"
    for a, b in zip(free, exclusive, strict=True):
        assert a.obj_ids == b.obj_ids
        assert ((b.logits > 0).sum(0) <= 1).all(), f"frame {b.frame}: overlapping objects"
        # outputs only: each pixel's winner keeps its logit, the memory is unaffected
        torch.testing.assert_close(b.logits, apply_non_overlap(a.logits), atol=0, rtol=0)
        torch.testing.assert_close(b.logits.max(0).values, a.logits.max(0).values, atol=0, rtol=0)


# ---------------------------------------------------------------------- encoder use
def test_encoder_runs_once_per_frame(model, stack):
    feats = StackFeatures(model, stack)
    prop = _propagator(model, feats)
    prop.add_points(3, 1, [[16, 14]], [1])
    prop.add_points(5, 2, [[26, 28]], [1])
    assert feats.encoded == 2
    list(prop.propagate(3, max_frames=2))
    assert feats.encoded == 3  # frames 3, 4, 5
    list(prop.propagate(5, reverse=True))
    list(prop.propagate_both(4))
    prop.add_mask(6, 3, _disc_mask(6, 0))
    list(prop.propagate())
    assert feats.encoded == N_FRAMES


def test_small_feature_cache_re_encodes(model, stack):
    feats = StackFeatures(model, stack, max_cached=2)
    prop = _propagator(model, feats)
    prop.add_points(0, 1, [[10, 14]], [1])
    first = list(prop.propagate())
    encoded = feats.encoded
    assert encoded >= N_FRAMES and len(feats._cache) == 2
    full = _propagator(model, StackFeatures(model, stack))
    full.add_points(0, 1, [[10, 14]], [1])
    _assert_results_equal(first, list(full.propagate()))
    list(prop.propagate())
    assert feats.encoded > encoded


# ---------------------------------------------------------------------- errors
def test_propagate_without_objects(model, features):
    prop = _propagator(model, features)
    with pytest.raises(PropagationError, match="no object has prompts"):
        list(prop.propagate())
    with pytest.raises(PropagationError, match="no object has prompts"):
        list(prop.propagate_both())


def test_empty_stack_is_refused(model):
    with pytest.raises(PropagationError, match="no frames"):
        VideoPropagator(model, StackFeatures(model, np.zeros((0, *HW, 3), np.uint8)), HW)


def test_errors_are_clear_and_leave_the_state_unchanged(model, features):
    prop = _propagator(model, features)
    prompt = prop.add_points(0, 1, [[10, 14]], [1])
    reference = list(prop.propagate())
    good_mask = _disc_mask(2, 1)
    bad_calls = [
        (lambda: prop.add_points(N_FRAMES, 1, [[1, 1]], [1]), "frame 8 is outside the stack of 8"),
        (lambda: prop.add_points(-1, 1, [[1, 1]], [1]), "frame -1 is outside"),
        (lambda: prop.add_mask(99, 1, good_mask), "frame 99 is outside"),
        (lambda: list(prop.propagate(N_FRAMES)), "frame 8 is outside"),
        (lambda: list(prop.propagate(-3, reverse=True)), "frame -3 is outside"),
        (lambda: prop.clear_prompts(N_FRAMES + 1, 1), "frame 9 is outside"),
        (lambda: prop.add_points(0, 5, [[1, 1]]), "points and labels must be given together"),
        (lambda: prop.add_points(0, 5, labels=[1]), "points and labels must be given together"),
        (lambda: prop.add_points(0, 5), "give points or a box"),
        (lambda: prop.add_points(0, 5, [[1, 1], [2, 2]], [1]), "2 points but 1 labels"),
        (lambda: prop.add_points(0, 5, [[np.nan, 1]], [1]), "points must be finite"),
        (lambda: prop.add_points(0, 1, [[np.inf, 1]], [1]), "points must be finite"),
        (lambda: prop.add_points(0, 5, box_xyxy=[1, 1, 9, 9], clear_old=False), "a box replaces"),
        (lambda: prop.add_points(0, 5, box_xyxy=[np.nan, 1, 9, 9]), "a box is 4 finite values"),
        (lambda: prop.add_points(0, 5, box_xyxy=[1, 1, 9]), "a box is 4 finite values"),
        (lambda: prop.add_points(0, 5, [[1, 1]], [7]), r"labels must be 1 \(positive\) or 0"),
        (lambda: prop.add_mask(1, 5, good_mask[:, :-1]), r"mask shape \(40, 47\) differs .*\(40, 48\)"),
        (lambda: prop.add_mask(1, 1, good_mask[None]), "mask must be 2D"),
        (lambda: prop.remove_object(7), r"no object with id 7; objects: \[1\]"),
        (lambda: prop.clear_prompts(0, 7), r"no object with id 7; objects: \[1\]"),
    ]
    for call, message in bad_calls:
        with pytest.raises(PropagationError, match=message):
            call()
        assert prop.obj_ids == (1,), message
        assert prop.prompted_frames() == [0], message
    assert set(prop.tracks[1].points) == {0} and not prop.tracks[1].masks
    _assert_results_equal(list(prop.propagate()), reference)
    assert torch.equal(reference[0].logits, prompt.logits)


# ---------------------------------------------------------------------- object bookkeeping
def _three_objects(prop: VideoPropagator) -> None:
    prop.add_points(0, 1, [[10, 14]], [1])
    prop.add_points(0, 2, [[36, 28]], [1])
    prop.add_mask(2, 3, _disc_mask(2, 1))


def test_remove_object_leaves_no_trace(model, features):
    prop = _propagator(model, features, PropagationOptions())  # non-overlap couples outputs
    _three_objects(prop)
    list(prop.propagate())
    assert prop.remove_object(2) == (1, 3)
    assert prop.obj_ids == (1, 3)
    results = list(prop.propagate())
    assert all(r.obj_ids == (1, 3) for r in results)

    ref = _propagator(model, features, PropagationOptions())
    ref.add_points(0, 1, [[10, 14]], [1])
    ref.add_mask(2, 3, _disc_mask(2, 1))
    list(ref.propagate())
    _assert_results_equal(results, list(ref.propagate()))
    # a removed id can be reused for a new object
    prop.add_points(1, 2, [[30, 28]], [1])
    assert prop.obj_ids == (1, 3, 2) and prop.prompted_frames() == [0, 1, 2]


def test_reset_forgets_every_object(model, features):
    prop = _propagator(model, features)
    _three_objects(prop)
    first = list(prop.propagate())
    prop.reset()
    assert prop.obj_ids == () and prop.prompted_frames() == []
    with pytest.raises(PropagationError, match="no object has prompts"):
        list(prop.propagate())
    _three_objects(prop)
    _assert_results_equal(list(prop.propagate()), first)


def test_clear_prompts_downgrades_a_conditioning_frame(model, features):
    prop = _propagator(model, features)
    prop.add_points(0, 1, [[10, 14]], [1])
    prompt4 = prop.add_points(4, 1, [[18, 14]], [1])
    list(prop.propagate())
    assert set(prop.tracks[1].cond) == {0, 4}

    cleared = prop.clear_prompts(4, 1)
    track = prop.tracks[1]
    assert 4 not in track.cond and 4 in track.non_cond and 4 not in track.points
    assert prop.prompted_frames() == [0]
    assert torch.equal(cleared.logits, prompt4.logits)  # the output stays until re-tracked

    ref = _propagator(model, features)
    ref.add_points(0, 1, [[10, 14]], [1])
    reference = list(ref.propagate())
    _assert_results_equal(list(prop.propagate()), reference)

    # clearing a prompt that was never propagated restores the tracked output
    prop.add_points(6, 1, [[30, 28]], [1])
    assert 6 in track.temp_cond
    restored = prop.clear_prompts(6, 1)
    assert 6 not in track.temp_cond and prop.prompted_frames() == [0]
    assert torch.equal(restored.logits, reference[6].logits)
    # an object whose only prompts were cleared cannot be propagated
    prop.add_points(3, 2, [[36, 28]], [1])
    prop.clear_prompts(3, 2)
    with pytest.raises(PropagationError, match="object 2 has no prompts on any frame"):
        list(prop.propagate())


# ---------------------------------------------------------------------- hole filling
def _reference_fill(logits: np.ndarray, max_area: int) -> np.ndarray:
    """Brute force: flood-fill every background (<= 0) component with 8-connectivity."""
    out = logits.copy()
    for b in range(logits.shape[0]):
        plane = logits[b, 0] <= 0
        seen = np.zeros_like(plane)
        h, w = plane.shape
        for y0 in range(h):
            for x0 in range(w):
                if not plane[y0, x0] or seen[y0, x0]:
                    continue
                component, todo = [], [(y0, x0)]
                seen[y0, x0] = True
                while todo:
                    y, x = todo.pop()
                    component.append((y, x))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            yy, xx = y + dy, x + dx
                            if 0 <= yy < h and 0 <= xx < w and plane[yy, xx] and not seen[yy, xx]:
                                seen[yy, xx] = True
                                todo.append((yy, xx))
                if len(component) <= max_area:
                    for y, x in component:
                        out[b, 0, y, x] = HOLE_FILL_LOGIT
    return out


@pytest.mark.parametrize("max_area", [1, 3, 8, 40])
def test_fill_small_holes_matches_brute_force(max_area):
    rng = np.random.default_rng(max_area)
    logits = rng.normal(size=(3, 1, 20, 24)).astype(np.float32)
    logits[0] += 0.6  # mostly foreground: many small holes
    logits[1] -= 0.2
    logits[2] = -np.abs(logits[2])  # all background: one component larger than max_area
    logits[2, 0, 5, 5] = 0.0  # exactly 0 counts as background
    x = torch.from_numpy(logits.copy())
    y = fill_small_holes(x, max_area)
    assert torch.equal(x, torch.from_numpy(logits)), "input modified"
    assert y.data_ptr() != x.data_ptr() and y.dtype == x.dtype
    np.testing.assert_array_equal(y.numpy(), _reference_fill(logits, max_area))
    assert torch.equal(y[2], x[2])
    assert (y[0] != x[0]).any(), "degenerate: no hole filled"


def test_fill_small_holes_diagonal_and_errors():
    x = torch.full((1, 1, 6, 6), 5.0)
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = -1.0  # a diagonal pair: one hole of area 2
    x[0, 0, 4, 4] = -2.0
    y = fill_small_holes(x, 1)
    assert y[0, 0, 4, 4] == HOLE_FILL_LOGIT and y[0, 0, 1, 1] == -1.0 and y[0, 0, 2, 2] == -1.0
    y = fill_small_holes(x, 2)
    assert (y[0, 0, [1, 2, 4], [1, 2, 4]] == HOLE_FILL_LOGIT).all()
    assert torch.equal(fill_small_holes(torch.ones(1, 1, 4, 4), 3), torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="positive"):
        fill_small_holes(x, 0)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        fill_small_holes(x[0], 2)


def test_bounded_memory_propagate_both_matches_unbounded(model):
    """The backward half of `propagate_both` reads frames just after `start` that the forward
    half has walked past: bounded memory must keep them."""
    n, start = 36, 12
    feats = StackFeatures(model, _disc_stack(n))
    runs = {}
    for bounded in (True, False):
        prop = VideoPropagator(model, feats, HW, PropagationOptions(non_overlap=False,
                                                                    bounded_memory=bounded))
        prop.add_points(start, 1, [[20, 24]], [1])
        prop.add_points(start, 2, [[10, 14]], [1])
        runs[bounded] = list(prop.propagate_both())
    assert [r.frame for r in runs[True]] == list(range(start, n)) + list(range(start, -1, -1))
    assert [r.frame for r in runs[True]] == [r.frame for r in runs[False]]
    assert runs[True][-1].done == runs[True][-1].total
    _assert_results_equal(runs[True], runs[False])



def test_objects_in_batches_give_the_same_results(model, features):
    """`object_batch` bounds how many objects share a memory-attention pass; the numbers do
    not depend on it (padding is masked), and prompts entered without a result return None."""
    runs = []
    for batch in (1, 2, 8):
        prop = _propagator(model, features, dataclasses.replace(INDEPENDENT, object_batch=batch))
        for obj, (x, y) in enumerate(((14, 14), (34, 28), (20, 30)), start=1):
            assert prop.add_points(0, obj, np.array([[x, y]], np.float32), np.array([1]),
                                   result=False) is None
        runs.append(list(prop.propagate()))
    for other in runs[1:]:
        _assert_results_equal(other, runs[0], atol=BATCH_ATOL)
