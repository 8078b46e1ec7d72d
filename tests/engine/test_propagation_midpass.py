"""Objects that come and go in the middle of a propagation pass, and presence scores.

The definition tested here: prompts added and objects removed between two yielded frames take
effect from the next frame, exactly as if the pass had been stopped there and a new pass
started at the next frame with the same objects. A random-weight tiny SAM 2 with nudged heads
(objects present, informative logits; as in ``test_propagation.py``) tracks two moving discs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2_test_models import present_tiny_sam2

from napari_focsam.engine.frame_features import StackFeatures
from napari_focsam.engine.propagation import VideoPropagator
from napari_focsam.engine.propagation_state import FrameResult, PropagationOptions
from napari_focsam.models.sam2.config import SAM2_CONFIGS
from napari_focsam.models.sam2.model import NO_OBJ_SCORE, build_sam2

IMAGE_SIZE = 128
HW = (40, 48)
N_FRAMES = 10
INDEPENDENT = PropagationOptions(non_overlap=False)


def _disc_stack(n: int) -> np.ndarray:
    """``(n, H, W, 3)`` uint8: two discs moving in opposite directions on a dark background."""
    h, w = HW
    yy, xx = np.mgrid[:h, :w]
    out = np.full((n, h, w, 3), 20, np.uint8)
    for t in range(n):
        for cx, cy, r, colour in ((10 + (2 * t) % (w - 20), 14, 7, (250, 200, 80)),
                                  (w - 12 - (2 * t) % (w - 20), 28, 6, (80, 220, 250))):
            out[t][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = colour
    return out


def _disc_mask(stack: np.ndarray, t: int, which: int) -> np.ndarray:
    colour = (250, 200, 80) if which == 0 else (80, 220, 250)
    return (stack[t] == colour).all(axis=-1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return present_tiny_sam2(IMAGE_SIZE)


@pytest.fixture(scope="module")
def stack():
    return _disc_stack(N_FRAMES)


@pytest.fixture(scope="module")
def features(model, stack):
    return StackFeatures(model, stack)


def _prop(model, features, options=INDEPENDENT) -> VideoPropagator:
    return VideoPropagator(model, features, HW, options)


def _assert_same(ours: list[FrameResult], ref: list[FrameResult], atol: float = 0.0) -> None:
    assert [r.frame for r in ours] == [r.frame for r in ref]
    for a, b in zip(ours, ref, strict=True):
        assert a.obj_ids == b.obj_ids, f"frame {a.frame}"
        if atol:
            torch.testing.assert_close(a.logits, b.logits, atol=atol, rtol=0, msg=f"frame {a.frame}")
        else:
            assert torch.equal(a.logits, b.logits), f"frame {a.frame}"
        assert torch.equal(a.object_score_logits, b.object_score_logits), f"frame {a.frame}"


def _run_with_change(prop: VideoPropagator, at: int, change) -> list[FrameResult]:
    """One pass from frame 0; `change(prop)` is called right after frame `at` is yielded."""
    results = []
    for r in prop.propagate(0):
        results.append(r)
        if r.frame == at:
            change(prop)
    return results


def _restart_with_change(prop: VideoPropagator, at: int, change) -> list[FrameResult]:
    """The definition: stop after frame `at`, apply `change`, start a new pass at ``at + 1``."""
    results = []
    for r in prop.propagate(0):
        results.append(r)
        if r.frame == at:
            break
    change(prop)
    return results + list(prop.propagate(at + 1))


@pytest.mark.parametrize("options", [INDEPENDENT, PropagationOptions()], ids=["independent", "non_overlap"])
@pytest.mark.parametrize("where", ["current", "earlier", "later"])
def test_an_object_added_mid_pass_equals_a_new_pass_from_the_next_frame(model, features, stack,
                                                                        options, where):
    at = 4
    frames = {"current": [at], "earlier": [at - 2, at - 1, at], "later": [at + 2]}[where]

    def add(prop):
        for f in frames:
            prop.add_mask(f, 3, _disc_mask(stack, f, 1), result=False)

    def two(prop):
        prop.add_points(0, 1, [[10, 14]], [1])
        prop.add_points(0, 2, [[36, 28]], [1])

    a, b = _prop(model, features, options), _prop(model, features, options)
    two(a)
    two(b)
    ours = _run_with_change(a, at, add)
    _assert_same(ours, _restart_with_change(b, at, add))
    assert [r.obj_ids for r in ours] == [(1, 2)] * (at + 1) + [(1, 2, 3)] * (N_FRAMES - at - 1)
    # the new object is tracked, and the others do not see it (independent objects)
    assert all(r.masks()[2].any() for r in ours[at + 1:])
    if options is INDEPENDENT:
        alone = _prop(model, features, options)
        two(alone)
        for r, ref in zip(ours, list(alone.propagate(0)), strict=True):
            torch.testing.assert_close(r.logits[:2], ref.logits, atol=1e-5, rtol=0)


def test_an_object_alone_added_mid_pass_is_tracked_as_in_its_own_pass(model, features, stack):
    """Against a propagator that only ever held the new object (batching changes nothing)."""
    at = 3
    prop = _prop(model, features)
    prop.add_points(0, 1, [[10, 14]], [1])
    ours = _run_with_change(prop, at, lambda p: p.add_mask(at, 2, _disc_mask(stack, at, 1)))
    alone = _prop(model, features)
    alone.add_mask(at, 2, _disc_mask(stack, at, 1))
    ref = list(alone.propagate(at))
    for r, expected in zip(ours[at + 1:], ref[1:], strict=True):
        torch.testing.assert_close(r.logits[1:], expected.logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(r.object_score_logits[1:], expected.object_score_logits,
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", [INDEPENDENT, PropagationOptions()], ids=["independent", "non_overlap"])
def test_an_object_removed_mid_pass_equals_a_new_pass_without_it(model, features, stack, options):
    at = 5

    def three(prop):
        prop.add_points(0, 1, [[10, 14]], [1])
        prop.add_points(0, 2, [[36, 28]], [1])
        prop.add_mask(0, 3, _disc_mask(stack, 0, 1))

    a, b = _prop(model, features, options), _prop(model, features, options)
    three(a)
    three(b)
    ours = _run_with_change(a, at, lambda p: p.remove_object(2))
    _assert_same(ours, _restart_with_change(b, at, lambda p: p.remove_object(2)))
    assert [r.obj_ids for r in ours[at + 1:]] == [(1, 3)] * (N_FRAMES - at - 1)
    assert 2 not in a.tracks
    if options is INDEPENDENT:  # the others go on as if nothing happened
        full = _prop(model, features, options)
        three(full)
        for r, ref in zip(ours[at + 1:], list(full.propagate(0))[at + 1:], strict=True):
            assert torch.equal(r.logits, ref.logits[[0, 2]])


def test_a_pass_without_objects_walks_on_and_takes_new_ones(model, features, stack):
    prop = _prop(model, features)
    prop.add_points(0, 1, [[10, 14]], [1])
    results = []
    for r in prop.propagate(0):
        results.append(r)
        if r.frame == 2:
            prop.remove_object(1)
        if r.frame == 5:
            prop.add_mask(5, 4, _disc_mask(stack, 5, 1), result=False)
    assert [r.frame for r in results] == list(range(N_FRAMES))
    for r in results[3:6]:
        assert r.obj_ids == () and r.logits.shape == (0, 1, *HW)
        assert r.object_score_logits.shape == (0,) and r.masks().shape == (0, *HW)
    assert all(r.obj_ids == (4,) and r.masks()[0].any() for r in results[6:])
    ref = _prop(model, features)
    ref.add_mask(5, 4, _disc_mask(stack, 5, 1))
    _assert_same(results[6:], list(ref.propagate(5))[1:])


def test_frame_results_carry_presence_scores(model, features, stack):
    prop = _prop(model, features)
    prompt = prop.add_points(0, 1, [[10, 14]], [1])
    assert prompt.object_score_logits.shape == (1,) and prompt.present().tolist() == [True]
    prompt = prop.add_mask(2, 2, _disc_mask(stack, 2, 1))
    # object 1 has no output on frame 2 yet: its score says absent
    assert prompt.object_score_logits[0] == NO_OBJ_SCORE
    assert prompt.present().tolist() == [False, True]
    for r in prop.propagate(0):
        assert r.object_score_logits.dtype == torch.float32
        for i, oid in enumerate(r.obj_ids):
            track = prop.tracks[oid]
            out = track.cond.get(r.frame) or track.non_cond[r.frame]
            assert r.object_score_logits[i] == out.object_score_logits.float().reshape(())
        assert r.present().all()
    for r in prop.propagate_both(4):
        assert r.object_score_logits.shape == (2,)
    # without scores (older producers) every object counts as present
    bare = FrameResult(0, (1, 2), torch.zeros(2, 1, *HW))
    assert bare.present().tolist() == [True, True]


def test_an_absent_object_has_a_negative_score_and_no_pixels():
    torch.manual_seed(0)
    net = build_sam2(SAM2_CONFIGS["sam2_test_tiny"].replace(image_size=IMAGE_SIZE))
    with torch.no_grad():
        net.sam_mask_decoder.pred_obj_score_head.layers[-1].bias -= 10.0  # nothing present
    stack = _disc_stack(4)
    prop = VideoPropagator(net, StackFeatures(net, stack), HW)
    prop.add_points(0, 1, [[10, 14]], [1])
    results = list(prop.propagate(0))
    for r in results[1:]:
        assert not r.present().any() and not r.masks().any()
