"""The headless `Segmenter`: geometry, labels, directions, cancellation and errors.

Most tests replace the models' drawing and SAM 2's propagator by deterministic fakes (see
``api_helpers``) so that the labels can be checked pixel for pixel; the last ones run the real
tiny models (random weights) end to end.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from api_helpers import (
    FAKE_INTERACTIVE_CALLS,
    HW,
    FakePropagator,
    install_fakes,
    make_stack,
    object_center,
)

from napari_focsam.api.drawing import Location
from napari_focsam.api.models import load_model
from napari_focsam.api.prompts_file import ObjectPrompt
from napari_focsam.api.segmenter import Progress, PromptPlacementError, Segmenter
from napari_focsam.engine.propagation import VideoPropagator
from napari_focsam.families import ModelChoiceError

#: Prompt ids of the disc (true label 1) and of the rectangle (true label 2).
IDS = {1: 7, 2: 3}


@pytest.fixture(scope="module")
def sam():
    return load_model("sam_test_tiny", weights="random", device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def sam2():
    return load_model("sam2_test_tiny", weights="random", device="cpu", dtype="fp32")


@pytest.fixture
def fakes(monkeypatch):
    install_fakes(monkeypatch)


def point(obj: int, frame: int | None, t: int | None = None, outer: int | None = None) -> ObjectPrompt:
    """A positive point inside true object `obj` as it is on frame `t` (default `frame`)."""
    t = frame if t is None else t
    return ObjectPrompt(IDS[obj], frame, np.array([object_center(obj, t or 0)]), np.array([1]),
                        outer=outer)


def box(obj: int, frame: int | None, rc: tuple[float, float, float, float]) -> ObjectPrompt:
    return ObjectPrompt(IDS[obj], frame, box_rc=np.array(rc, dtype=np.float64))


def relabel(truth: np.ndarray, objects=(1, 2)) -> np.ndarray:
    out = np.zeros_like(truth)
    for obj in objects:
        out[truth == obj] = IDS[obj]
    return out


# ---------------------------------------------------------------------- propagation
def test_propagate_both_labels_every_frame_with_prompt_ids(sam, sam2, fakes):
    data, truth = make_stack(6)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    steps = list(seg.propagate([point(1, 2), point(2, 2)], "both"))
    np.testing.assert_array_equal(seg.labels, relabel(truth))
    assert seg.labels.dtype == np.int32 and seg.labels.shape == (6, *HW)
    # the interactive model drew each object on its prompted frame; SAM 2 got masks
    assert sorted(FAKE_INTERACTIVE_CALLS) == [(3, 2), (7, 2)]
    (prop,) = FakePropagator.instances
    assert [(kind, f, obj) for kind, f, obj, _ in prop.prompts] == [("mask", 2, 3), ("mask", 2, 7)]
    assert all(isinstance(s, Progress) and s.stage == "propagate" for s in steps)
    assert [s.done for s in steps][-1] == steps[-1].total == 6
    assert {s.frame for s in steps} == set(range(6))
    assert all(a.done <= b.done for a, b in zip(steps, steps[1:], strict=False))


@pytest.mark.parametrize(("direction", "covered"), [
    ("forward", [2, 3, 4, 5]), ("backward", [0, 1, 2]), ("both", [0, 1, 2, 3, 4, 5])])
def test_directions_cover_the_right_frames(sam, sam2, fakes, direction, covered):
    data, truth = make_stack(6)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    steps = list(seg.propagate([point(1, 2), point(2, 2)], direction))
    expected = relabel(truth)
    for t in range(6):
        if t in covered:
            np.testing.assert_array_equal(seg.labels[t], expected[t], err_msg=f"frame {t}")
        else:
            assert not seg.labels[t].any(), f"frame {t} should not be labelled"
    assert sorted({s.frame for s in steps}) == covered
    assert all(s.total == 6 and s.done <= s.total for s in steps)


def test_forward_and_backward_start_from_the_outermost_prompt(sam, sam2, fakes):
    data, truth = make_stack(6)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    list(seg.propagate([point(1, 1), point(2, 4)], "forward"))
    expected = relabel(truth)
    # object 1 from frame 1 on; object 2 only from its prompt on frame 4
    np.testing.assert_array_equal(seg.labels[1:4], relabel(truth[1:4], objects=(1,)))
    np.testing.assert_array_equal(seg.labels[4:], expected[4:])
    assert not seg.labels[0].any()
    seg.labels[:] = 0
    list(seg.propagate([point(1, 1), point(2, 4)], "backward"))
    np.testing.assert_array_equal(seg.labels[:2], expected[:2])
    np.testing.assert_array_equal(seg.labels[2:5], relabel(truth[2:5], objects=(2,)))
    assert not seg.labels[5].any()


def test_sam2_as_both_models_gets_xy_points_and_boxes(sam2, fakes):
    """Direct SAM 2 prompts are (x, y): a (row, col) mix-up would pick another object or fail."""
    data, truth = make_stack(6)
    seg = Segmenter(data, interactive=sam2, propagation=sam2, stack_axis=0, cache_root=False)
    assert len({id(s) for s in seg.stores.values()}) == 1  # one store for both roles
    rect_box = (22.0, 38.0, 38.0, 50.0)  # (row0, col0, row1, col1) around the rectangle on frame 2
    list(seg.propagate([point(1, 2), box(2, 2, rect_box)], "both"))
    np.testing.assert_array_equal(seg.labels, relabel(truth))
    assert FAKE_INTERACTIVE_CALLS == []  # prompts went to SAM 2 directly
    (prop,) = FakePropagator.instances
    by_obj = {obj: (pts, bx) for _, _, obj, pts, bx in prop.prompts}
    np.testing.assert_array_equal(by_obj[7][0], [[26.0, 8.0]])  # (x, y) of (row 8, col 26)
    assert by_obj[7][1] is None
    assert by_obj[3][0] is None
    np.testing.assert_array_equal(by_obj[3][1], [38.0, 22.0, 50.0, 38.0])


def test_box_prompt_through_the_interactive_model(sam, sam2, fakes):
    data, truth = make_stack(6)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    list(seg.propagate([box(2, 3, (20.0, 36.0, 39.0, 50.0)), point(1, 3)], "both"))
    np.testing.assert_array_equal(seg.labels, relabel(truth))


@pytest.mark.parametrize("axis", [1, 2])
def test_stack_axis_other_than_first(sam, sam2, fakes, axis):
    stack, truth = make_stack(5)
    data = np.moveaxis(stack, 0, axis)  # (H, Z, W) or (H, W, Z)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=axis, cache_root=False)
    list(seg.propagate([point(1, 3), point(2, 3)], "both"))
    out = seg.labels_in_data_order()
    assert out.shape == data.shape
    np.testing.assert_array_equal(out, np.moveaxis(relabel(truth), 0, axis))
    # and each label sits on its object's pixels in the data
    assert (data[out > 0] == 200).all()


@pytest.mark.parametrize(("layout", "channel_axis"), [("tyxc", 3), ("ctyx", 0), ("tcyx", 1)])
def test_channel_axis(sam, sam2, fakes, layout, channel_axis):
    stack, truth = make_stack(4)
    noise = np.random.default_rng(5).integers(0, 30, size=stack.shape).astype(np.uint8)
    data = np.moveaxis(np.stack([stack, noise, noise]), 0, channel_axis)
    stack_axis = layout.index("t")
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=stack_axis,
                    channel_axis=channel_axis, cache_root=False)
    list(seg.propagate([point(1, 0), point(2, 0)], "forward"))
    out = seg.labels_in_data_order()
    assert out.shape == stack.shape
    np.testing.assert_array_equal(out, relabel(truth))


def _hyperstack(n_outer=3, n_stack=6):
    """(T, Z, H, W): outer 1 holds the stack reversed along z."""
    stack, truth = make_stack(n_stack)
    data = np.stack([stack if o != 1 else stack[::-1] for o in range(n_outer)])
    truths = np.stack([truth if o != 1 else truth[::-1] for o in range(n_outer)])
    return data, truths


@pytest.mark.parametrize("layout", ["tzyx", "ztyx", "zyxt"])
def test_4d_prompts_on_two_outer_indices(sam, sam2, fakes, layout):
    tz, truths = _hyperstack()
    order = ["tzyx".index(a) for a in layout]
    data = np.transpose(tz, order)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=layout.index("z"),
                    outer_axis=layout.index("t"), cache_root=False)
    # outer 0: object 1 prompted on z=1; outer 1 (reversed stack): object 2 prompted on z=4,
    # which is z=1 of the original stack
    prompts = [point(1, 1, outer=0), point(2, 4, t=1, outer=1)]
    steps = list(seg.propagate(prompts, "both"))
    expected = np.zeros_like(truths)
    expected[0] = relabel(truths[0], objects=(1,))
    expected[1] = relabel(truths[1], objects=(2,))
    out = seg.labels_in_data_order()
    assert out.shape == data.shape
    np.testing.assert_array_equal(out, np.transpose(expected, order))
    assert len(FakePropagator.instances) == 2  # one pass per outer index
    assert steps[-1].done == steps[-1].total == 12


def test_progress_never_exceeds_total_with_sparse_outer_indices(sam, sam2, fakes):
    data, truths = _hyperstack(n_outer=3, n_stack=5)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=1, outer_axis=0,
                    cache_root=False)
    steps = list(seg.propagate([point(1, 1, outer=1), point(1, 2, outer=2)], "forward"))
    assert all(s.total == 10 for s in steps)
    assert all(s.done <= s.total for s in steps), [(s.done, s.total) for s in steps]
    assert [s.done for s in steps] == sorted(s.done for s in steps)
    assert not seg.labels[:5].any()  # outer 0 had no prompt


def test_segment_frame_on_2d_image(sam, fakes):
    stack, truth = make_stack(5)
    image = stack[3]
    seg = Segmenter(image, interactive=sam, cache_root=False)
    out = seg.segment_frame([point(1, None, t=3), box(2, None, (22.0, 36.0, 38.0, 48.0))])
    np.testing.assert_array_equal(out, relabel(truth[3]))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(seg.labels_in_data_order(), out)
    assert seg.labels_in_data_order().shape == image.shape


def test_segment_frame_on_a_stack_writes_only_that_frame(sam2, fakes):
    stack, truth = make_stack(5)
    seg = Segmenter(stack, interactive=sam2, stack_axis=0, cache_root=False)
    seg.labels[:] = 9
    out = seg.segment_frame([point(2, 4), point(1, 4)], frame=4)
    np.testing.assert_array_equal(out, relabel(truth[4]))
    np.testing.assert_array_equal(seg.labels[4], out)
    assert (seg.labels[:4] == 9).all()


def test_segment_frame_keeps_old_labels_when_an_object_fails(sam, monkeypatch):
    install_fakes(monkeypatch, propagator=False)
    import api_helpers

    def flaky(self, prompt, flat, **kwargs):
        if prompt.obj_id == IDS[2]:
            raise RuntimeError("model failed")
        return api_helpers.fake_mask_from_interactive(self, prompt, flat, **kwargs)

    monkeypatch.setattr(Segmenter, "_mask_from_interactive", flaky)
    stack, _ = make_stack(3)
    seg = Segmenter(stack, interactive=sam, stack_axis=0, cache_root=False)
    seg.labels[1] = 5
    with pytest.raises(RuntimeError, match="model failed"):
        seg.segment_frame([point(1, 1), point(2, 1)], frame=1)
    assert (seg.labels[1] == 5).all()


# ---------------------------------------------------------------------- cancellation
def test_cancel_event_keeps_finished_frames(sam, sam2, fakes):
    data, truth = make_stack(6)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    seg.labels[:] = 42
    cancel = threading.Event()
    steps = []
    for step in seg.propagate([point(1, 0), point(2, 0)], "forward", cancel_event=cancel):
        steps.append(step)
        if len(steps) == 2:
            cancel.set()
    assert [s.frame for s in steps] == [0, 1]
    np.testing.assert_array_equal(seg.labels[:2], relabel(truth[:2]))
    assert (seg.labels[2:] == 42).all()


def test_closing_the_generator_keeps_finished_frames(sam, sam2, fakes):
    data, truth = make_stack(6)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    seg.labels[:] = 42
    gen = seg.propagate([point(1, 2), point(2, 2)], "both")
    frames = [next(gen).frame for _ in range(3)]
    gen.close()
    assert frames == [2, 3, 4]
    np.testing.assert_array_equal(seg.labels[2:5], relabel(truth[2:5]))
    assert (seg.labels[[0, 1, 5]] == 42).all()
    (prop,) = FakePropagator.instances
    assert prop.visited == [2, 3, 4]  # nothing ran after the close


def test_grad_and_autocast_are_not_held_across_yields(sam, sam2, fakes):
    bf16 = dataclasses.replace(sam2, dtype=torch.bfloat16)  # autocast while SAM 2 runs
    data, _ = make_stack(4)
    seg = Segmenter(data, interactive=sam, propagation=bf16, stack_axis=0, cache_root=False)
    assert torch.is_grad_enabled()
    gen = seg.propagate([point(1, 0)], "forward")
    next(gen)
    try:
        assert torch.is_grad_enabled()
        assert not torch.is_autocast_enabled("cpu")
    finally:
        gen.close()
    assert torch.is_grad_enabled()


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(("prompt", "match"), [
    (ObjectPrompt(1, 1, np.array([[40.0, 3.0]]), np.array([1])), r"point \[40.0, 3.0\].*outside the 40 x 56"),
    (ObjectPrompt(1, 1, np.array([[3.0, 56.0]]), np.array([1])), "outside"),
    (ObjectPrompt(1, 1, np.array([[-0.5, 3.0]]), np.array([1])), "outside"),
    (ObjectPrompt(1, 1, np.array([[np.nan, 3.0]]), np.array([1])), "finite"),
    (ObjectPrompt(1, 1, box_rc=np.array([0.0, 0.0, 40.5, 56.0])), "box corner .*outside"),
    (ObjectPrompt(1, 1), "no points, box or mask"),
    (ObjectPrompt(0, 1, np.array([[3.0, 3.0]]), np.array([1])), "object ids are integers >= 1"),
    (ObjectPrompt(1, 1, np.array([[3.0, 3.0]]), np.array([2])), "labels"),
    (ObjectPrompt(1, 6, np.array([[3.0, 3.0]]), np.array([1])), "frame 6 does not exist"),
    (ObjectPrompt(1, None, np.array([[3.0, 3.0]]), np.array([1])), "every prompt needs a frame"),
    (ObjectPrompt(1, 1, np.array([[3.0, 3.0]]), np.array([1]), outer=1), "outer index 1 does not exist"),
])
def test_bad_prompts_are_refused_before_any_work(sam, sam2, fakes, prompt, match):
    data, _ = make_stack(6)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    seg.labels[:] = 4
    with pytest.raises(PromptPlacementError, match=match):
        seg.propagate([point(1, 2), prompt])  # raised by the call, before iterating
    with pytest.raises(PromptPlacementError, match=match):
        seg.segment_frame([prompt], frame=prompt.frame, outer=prompt.outer)
    assert (seg.labels == 4).all()
    assert FakePropagator.instances == [] and FAKE_INTERACTIVE_CALLS == []


def test_prompts_on_the_edges_are_accepted(sam, fakes):
    data, _ = make_stack(2)
    seg = Segmenter(data, interactive=sam, stack_axis=0, cache_root=False)
    # the engine's conventions: points on pixels (row < H), boxes on pixel edges (row1 <= H)
    out = seg.segment_frame([ObjectPrompt(1, 0, np.array([[39.5, 55.9]]), np.array([1])),
                             ObjectPrompt(2, 0, box_rc=np.array([0.0, 0.0, 40.0, 56.0]))], frame=0)
    assert (out == 2).sum() > 0  # the whole-image box found the largest object


def test_outer_index_out_of_range_on_4d(sam, sam2, fakes):
    data, _ = _hyperstack(n_outer=2, n_stack=4)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=1, outer_axis=0,
                    cache_root=False)
    with pytest.raises(PromptPlacementError, match=r"outer index 2 does not exist \(0..1\)"):
        seg.propagate([point(1, 1, outer=2)])
    with pytest.raises(PromptPlacementError, match="frame 4 does not exist"):
        seg.segment_frame([point(1, 1)], frame=4, outer=1)


def test_2d_image_errors(sam, sam2, fakes):
    image = make_stack(1)[0][0]
    seg = Segmenter(image, interactive=sam, propagation=sam2, cache_root=False)
    with pytest.raises(PromptPlacementError, match="one 2D image: there is no frame 2"):
        seg.segment_frame([point(1, 2)], frame=2)
    with pytest.raises(PromptPlacementError, match="one 2D image: there is no outer index 1"):
        seg.segment_frame([point(1, None)], outer=1)
    with pytest.raises(ModelChoiceError, match="propagation needs a stack"):
        seg.propagate([point(1, None)])


def test_empty_prompts(sam, sam2, fakes):
    data, _ = make_stack(3)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    seg.labels[:] = 3
    with pytest.raises(PromptPlacementError, match="no prompts"):
        seg.propagate([])
    with pytest.raises(PromptPlacementError, match="no prompts"):
        seg.segment_frame([], frame=0)
    assert (seg.labels == 3).all()


def test_model_and_direction_errors(sam, sam2, fakes):
    data, _ = make_stack(3)
    with pytest.raises(ModelChoiceError, match="propagation model must be SAM 2"):
        Segmenter(data, interactive=sam, propagation=sam, stack_axis=0, cache_root=False)
    seg = Segmenter(data, interactive=sam, stack_axis=0, cache_root=False)
    with pytest.raises(ModelChoiceError, match="SAM 2 propagation model"):
        seg.propagate([point(1, 0)])
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    with pytest.raises(ValueError, match="direction must be one of"):
        seg.propagate([point(1, 0)], "sideways")


# ---------------------------------------------------------------------- real tiny models
def _tiny_stack():
    # two frames: SAM 2 at its 1024 input costs seconds per tracked frame on a CPU
    stack, _ = make_stack(2, hw=(24, 32))
    return stack


def _smoke_prompts():
    return [ObjectPrompt(4, 1, np.array([[8.0, 20.0]]), np.array([1])),
            ObjectPrompt(6, 0, np.array([[15.0, 10.0], [5.0, 5.0]]), np.array([1, 0]),
                         box_rc=np.array([10.0, 5.0, 22.0, 16.0]))]


def test_real_models_embed_once_then_propagate_from_the_cache(sam, sam2, tmp_path):
    data = _tiny_stack()
    first = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=tmp_path)
    steps = list(first.embed())
    assert {s.stage for s in steps} == {"embed:interactive", "embed:propagation"}
    assert first.encoder_calls == 4  # 2 frames x 2 models
    second = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=tmp_path)
    assert len(list(second.embed())) == 4
    assert second.encoder_calls == 0
    second.labels[:] = 99
    list(second.propagate(_smoke_prompts(), "both"))
    assert second.encoder_calls == 0
    assert set(np.unique(second.labels)) <= {0, 4, 6}  # every frame rewritten, prompt ids only
    out = second.segment_frame(_smoke_prompts()[1:], frame=0)
    assert out.shape == (24, 32) and set(np.unique(out)) <= {0, 6}
    assert second.encoder_calls == 0


def test_real_sam2_as_interactive_and_propagation_model(sam2, tmp_path):
    data = _tiny_stack()
    seg = Segmenter(data, interactive=sam2, propagation=sam2, stack_axis=0, cache_root=tmp_path)
    list(seg.embed())
    assert seg.encoder_calls == 2  # one store serves both roles
    seg.labels[:] = 99
    steps = list(seg.propagate(_smoke_prompts(), "forward"))
    assert steps[-1].done == 2 and {s.frame for s in steps} == {0, 1}
    assert set(np.unique(seg.labels)) <= {0, 4, 6}
    out = seg.segment_frame([_smoke_prompts()[0]], frame=0)
    assert set(np.unique(out)) <= {0, 4}
    assert seg.encoder_calls == 2


def test_real_focsam_draws_like_its_click_session_then_feeds_sam2(sam2, tmp_path):
    """FocSAM as the interactive model: the object equals a click session of the predictor on
    the same frame (refinement from the second click included), and propagation runs on it."""
    from napari_focsam.engine.focsam_predictor import FocSamPredictor

    focsam = load_model("focsam_test_tiny", weights="random", device="cpu", dtype="fp32")
    data = _tiny_stack()
    seg = Segmenter(data, interactive=focsam, propagation=sam2, stack_axis=0, cache_root=tmp_path)
    prompt = _smoke_prompts()[1]  # two clicks and a box
    out = seg.segment_frame([prompt], frame=0)

    predictor = FocSamPredictor(focsam.net, device="cpu", encoder_dtype="fp32")
    predictor.set_image(seg.source[0])
    session = predictor.start_session(box=prompt.box_rc)
    for (r, c), lab in zip(prompt.points_rc, prompt.labels, strict=True):
        session.add_click(float(r), float(c), bool(lab))
    assert predictor.refine_start_step == 1 and session.refined  # the refocusing ran
    np.testing.assert_array_equal(out == prompt.obj_id, session.mask)
    assert set(np.unique(out)) <= {0, prompt.obj_id}
    steps = list(seg.propagate([prompt], "forward"))
    assert [s.frame for s in steps] == [0, 1]


def test_draw_object_keeps_the_click_session_between_calls(sam, sam2, tmp_path):
    seg = Segmenter(_tiny_stack(), interactive=sam, propagation=sam2, stack_axis=0,
                    cache_root=False)
    one = ObjectPrompt(3, 1, np.array([[8.0, 20.0]]), np.array([1]))
    two = ObjectPrompt(3, 1, np.array([[8.0, 20.0], [15.0, 10.0]]), np.array([1, 0]))
    seg.draw_object(one)
    assert seg.drawer.current == Location(1)
    first_step = seg.drawer.session(3, Location(1)).steps[0]
    mask = seg.draw_object(two)
    session = seg.drawer.session(3, Location(1))
    assert len(session.steps) == 2 and session.steps[0] is first_step  # prefix not recomputed
    fresh = Segmenter(_tiny_stack(), interactive=sam, propagation=sam2, stack_axis=0,
                      cache_root=False)
    np.testing.assert_array_equal(mask, fresh.draw_object(two))  # same as replaying all clicks
    seg.draw_object(ObjectPrompt(3, 0, np.array([[8.0, 20.0]]), np.array([1])))
    assert seg.drawer.session(3, Location(0)) is not session  # another frame: its own session
    assert seg.drawer.session(3, Location(1)) is session  # kept for going back to frame 1
    assert seg.draw_object(two, keep_session=True) is not None
    assert seg.drawer.session(3, Location(1)).steps[0] is first_step
    seg.draw_object(ObjectPrompt(4, 1, np.array([[8.0, 20.0]]), np.array([1])),
                    keep_session=False)
    assert seg.drawer.session(4, Location(1)) is None  # batch drawing keeps no session
    assert not seg.labels.any()  # previews never write labels


def test_mask_prompts_are_the_object_and_enter_sam2_as_masks(sam2):
    """A polygon / ellipse mask prompt alone is the object on its frame: the preview is the
    mask itself, and propagation starts from it (SAM 2 as both models: add_mask, not points)."""
    data = _tiny_stack()
    seg = Segmenter(data, interactive=sam2, propagation=sam2, stack_axis=0, cache_root=False)
    h, w = seg.source.frame_shape
    mask = np.zeros((h, w), bool)
    mask[5:15, 8:20] = True
    prompt = ObjectPrompt(5, 0, mask=mask)
    np.testing.assert_array_equal(seg.draw_object(prompt), mask)
    calls = []
    original = VideoPropagator.add_mask

    def spy(self, frame, obj_id, m, **kwargs):
        calls.append((frame, obj_id, np.asarray(m).copy()))
        return original(self, frame, obj_id, m, **kwargs)

    import napari_focsam.api.segmenter as segmenter_module

    class Spying(VideoPropagator):
        add_mask = spy

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(segmenter_module, "VideoPropagator", Spying)
        steps = list(seg.propagate([prompt], "forward"))
    assert [s.frame for s in steps] == [0, 1]
    assert len(calls) == 1 and calls[0][:2] == (0, 5)
    np.testing.assert_array_equal(calls[0][2], mask)
    with pytest.raises(PromptPlacementError, match="shape"):
        seg.draw_object(ObjectPrompt(5, 0, mask=np.ones((3, 3), bool)))
    with pytest.raises(PromptPlacementError, match="empty"):
        seg.draw_object(ObjectPrompt(5, 0, mask=np.zeros((h, w), bool)))


def test_sam2_preview_is_the_mask_propagation_starts_from():
    """SAM 2 as both models: the preview (a click session: clicks one at a time, each with the
    previous logits) is what propagation starts from on the prompted frame (`add_clicks`), so
    a committed preview is not redrawn differently."""
    sam2 = load_model("sam2_test_tiny", weights="random", device="cpu", dtype="fp32", seed=3)
    dec = sam2.net.sam_mask_decoder
    with torch.no_grad():  # an object that is present, with logits of both signs
        dec.pred_obj_score_head.layers[-1].bias += 10.0
        for mlp in dec.output_hypernetworks_mlps:
            mlp.layers[-1].weight *= 30.0
            mlp.layers[-1].bias.mul_(30.0).add_(1.5)
    seg = Segmenter(_tiny_stack(), interactive=sam2, propagation=sam2, stack_axis=0,
                    cache_root=False)
    prompt = _smoke_prompts()[1]  # two clicks and a box on frame 0
    preview = seg.draw_object(prompt)
    session = seg.predictor.start_session(prompt.box_rc)
    clicked = session.set_clicks(prompt.points_rc, prompt.labels)
    np.testing.assert_array_equal(clicked.masks[0], preview)
    at_once = seg.predictor.predict(prompt.points_rc, prompt.labels, prompt.box_rc)
    assert np.abs(clicked.logits - at_once.logits).max() > 0.5  # the protocol matters here
    results = []
    original = VideoPropagator.add_clicks

    def spy(self, frame, obj_id, *args, **kwargs):
        assert kwargs == {"result": False}  # entering objects builds no all-object logits
        results.append(original(self, frame, obj_id, *args))
        return None

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VideoPropagator, "add_clicks", spy)
        list(seg.propagate([prompt], "forward"))
    assert [(r.frame, r.obj_ids) for r in results] == [(0, (prompt.obj_id,))]
    np.testing.assert_array_equal(results[0].logits[0, 0].numpy(), clicked.logits[0])
    np.testing.assert_array_equal(seg.labels[0] == prompt.obj_id, preview)


def test_the_propagation_model_can_come_later(sam, sam2):
    """Previews need only the interactive model; the propagation model is attached when first
    needed, keeping the interactive embeddings."""
    seg = Segmenter(_tiny_stack(), interactive=sam, stack_axis=0, cache_root=False)
    prompt = _smoke_prompts()[0]
    seg.draw_object(prompt)
    with pytest.raises(ModelChoiceError, match="propagation needs"):
        seg.propagate([prompt])
    calls = seg.encoder_calls
    with pytest.raises(ModelChoiceError, match="must be SAM 2"):
        seg.set_propagation(sam)
    seg.set_propagation(sam2)
    assert set(seg.stores) == {"interactive", "propagation"}
    steps = list(seg.propagate([prompt], "forward"))
    assert [s.frame for s in steps] == [1]
    assert seg.encoder_calls == calls + 1  # only SAM 2's frame 1; SAM's frame 1 was cached
    seg.set_propagation(None)
    assert set(seg.stores) == {"interactive"} and seg.propagation is None


def test_the_propagation_model_can_be_attached_while_frames_are_encoded(sam, sam2):
    """The dock encodes ahead in one thread while a propagation attaches SAM 2 in another."""
    seg = Segmenter(_tiny_stack(), interactive=sam, stack_axis=0, cache_root=False)
    steps = seg.embed(frames=[0, 1], roles=("interactive",))
    first = next(steps)
    seg.set_propagation(sam2)  # the stores change while the generator is inside its loop
    rest = list(steps)
    assert [s.done for s in (first, *rest)] == [1, 2]
    assert seg.stores["interactive"].is_cached(1) and not seg.stores["propagation"].is_cached(1)


# ---------------------------------------------------------------------- hardening (issue 13)
class _Memory:
    def __init__(self, available: int) -> None:
        self.available = available


def test_a_frame_larger_than_memory_is_refused_before_anything_is_allocated(sam, monkeypatch):
    import psutil

    from napari_focsam.api.io import InputError

    monkeypatch.setattr(psutil, "virtual_memory", lambda: _Memory(16 * 2**30))
    huge = np.broadcast_to(np.uint8(0), (100_000, 100_000))  # a header's claim, no pixels
    with pytest.raises(InputError, match=r"one 100000 x 100000 frame .* needs 149.0 GiB"):
        Segmenter(huge, interactive=sam, cache_root=False)


def test_labels_are_allocated_when_first_written_and_checked(sam, sam2, monkeypatch):
    import psutil

    from napari_focsam.api.io import InputError

    stack = np.broadcast_to(np.uint8(7), (100_000, 40, 56))  # labels: 100000 x 40 x 56 int32
    seg = Segmenter(stack, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: _Memory(100 * 2**20))
    with pytest.raises(InputError, match=r"the labels of 100000 frame\(s\) of 40 x 56 pixels "
                                         r"\(int32\) needs 0.8 GiB"):
        seg.labels  # noqa: B018 - the property allocates


def test_embed_does_not_allocate_labels(sam, sam2, monkeypatch):
    def refuse(self, dtype):
        raise AssertionError("labels allocated")

    monkeypatch.setattr(Segmenter, "_allocate_labels", refuse)
    seg = Segmenter(_tiny_stack(), interactive=sam, propagation=sam2, stack_axis=0,
                    cache_root=False)
    assert [s.done for s in seg.embed() if s.stage == "embed:propagation"][-1] == 2


@pytest.mark.parametrize("big", [2**31, 2**40 + 1, 2**63 - 1])
def test_object_ids_beyond_int32_are_held(sam, sam2, fakes, big):
    data, truth = make_stack(4)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    seg.labels[:] = 5  # written before: kept through the widening
    prompts = [dataclasses.replace(point(1, 0), obj_id=big), point(2, 0)]
    list(seg.propagate(prompts, "forward"))
    assert seg.labels.dtype == np.int64
    np.testing.assert_array_equal(seg.labels == big, truth == 1)
    out = seg.segment_frame([dataclasses.replace(point(1, 1), obj_id=big)], frame=1)
    assert out.dtype == np.int64 and (out == big).sum() == (truth[1] == 1).sum()


def test_object_ids_beyond_int64_are_refused_before_any_work(sam, sam2, fakes):
    data, _ = make_stack(3)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    with pytest.raises(PromptPlacementError, match="<= 9223372036854775807"):
        seg.propagate([dataclasses.replace(point(1, 0), obj_id=2**63)])
    assert FAKE_INTERACTIVE_CALLS == [] and FakePropagator.instances == []


def _fixed_masks(monkeypatch, masks):
    monkeypatch.setattr(Segmenter, "_mask_from_interactive",
                        lambda self, prompt, flat, **kwargs: masks[prompt.obj_id])


def test_objects_painted_over_are_named_in_warnings(sam, monkeypatch, caplog):
    h, w = HW
    disc = np.zeros(HW, bool)
    disc[5:15, 5:15] = True
    half = np.zeros(HW, bool)
    half[10:20, 0:40] = True  # 50 of its 400 pixels lie under the disc's lower half
    masks = {3: disc.copy(), 9: disc, 2: half, 7: np.zeros(HW, bool)}
    _fixed_masks(monkeypatch, masks)
    data, _ = make_stack(2)
    seg = Segmenter(data, interactive=sam, stack_axis=0, cache_root=False)
    prompts = [ObjectPrompt(i, 0, np.array([[1.0, 1.0]]), np.array([1])) for i in masks]
    with caplog.at_level("WARNING", "napari_focsam.api.segmenter"):
        out = seg.segment_frame(prompts, frame=0)
    assert sorted(np.unique(out)) == [0, 2, 9]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "object 2: 50 of its 400 pixels (12%) are painted over by objects with higher ids",
        "object 3: all its 100 pixels are painted over by objects with higher ids; it is not in "
        "the labels",
        "object 7: the model found no pixels for it; it is not in the labels",
    ]


def test_segment_reports_each_object_and_writes_whole_frames(sam, fakes):
    data, truth = make_stack(4)
    seg = Segmenter(data, interactive=sam, stack_axis=0, cache_root=False)
    seg.labels[:] = 42
    steps = list(seg.segment([point(1, 2), point(2, 0), point(2, 2)]))
    assert [(s.stage, s.done, s.total, s.frame) for s in steps] == [
        ("segment", 1, 3, 0), ("segment", 2, 3, 2), ("segment", 3, 3, 2)]
    np.testing.assert_array_equal(seg.labels[2], relabel(truth[2]))
    np.testing.assert_array_equal(seg.labels[0], relabel(truth[0], objects=(2,)))
    assert (seg.labels[[1, 3]] == 42).all()


def test_propagate_can_report_each_object_entered(sam, sam2, fakes):
    data, _ = make_stack(4)
    seg = Segmenter(data, interactive=sam, propagation=sam2, stack_axis=0, cache_root=False)
    steps = list(seg.propagate([point(1, 2), point(2, 0)], "forward", report_objects=True))
    assert [(s.stage, s.done, s.total, s.frame) for s in steps[:2]] == [
        ("prompt", 1, 2, 0), ("prompt", 2, 2, 2)]
    assert {s.stage for s in steps[2:]} == {"propagate"}
    plain = list(seg.propagate([point(1, 2), point(2, 0)], "forward"))
    assert {s.stage for s in plain} == {"propagate"}  # the default, as the widgets expect


def _set_on_forward(module, event: threading.Event):
    """A forward hook setting `event` once `module` ran: the next block of the pass stops."""
    return module.register_forward_hook(lambda *args: event.set())


def test_a_set_cancel_event_stops_propagation_inside_a_frame(sam, sam2, tmp_path):
    stack, _ = make_stack(3, hw=(24, 32))
    seg = Segmenter(stack, interactive=sam, propagation=sam2, stack_axis=0, cache_root=tmp_path)
    list(seg.embed())
    seg.labels[:] = 42
    cancel = threading.Event()
    layers = sam2.net.memory_attention.layers
    calls = []
    hook = _set_on_forward(layers[0], cancel)  # frame 1 is the first to attend to memory
    counter = layers[1].register_forward_hook(lambda *args: calls.append(1))
    try:
        steps = list(seg.propagate(_smoke_prompts()[1:], "forward", cancel_event=cancel))
    finally:
        hook.remove()
        counter.remove()
    assert [s.frame for s in steps] == [0] and cancel.is_set()
    assert calls == []  # the second memory-attention layer of frame 1 never ran
    assert set(np.unique(seg.labels[0])) <= {0, 6} and (seg.labels[1:] == 42).all()
    # the hooks are gone: the same models run to the end without the event
    assert [s.frame for s in seg.propagate(_smoke_prompts()[1:], "forward")] == [0, 1, 2]


def test_a_set_cancel_event_stops_the_interactive_drawing(sam, sam2, tmp_path):
    seg = Segmenter(_tiny_stack(), interactive=sam, propagation=sam2, stack_axis=0,
                    cache_root=tmp_path)
    list(seg.embed())
    seg.labels[:] = 42
    cancel = threading.Event()
    hook = _set_on_forward(sam.net.mask_decoder.transformer.layers[0], cancel)
    try:
        assert list(seg.segment(_smoke_prompts(), cancel_event=cancel)) == []
        cancel.clear()
        assert list(seg.propagate(_smoke_prompts(), "forward", cancel_event=cancel)) == []
    finally:
        hook.remove()
    assert (seg.labels == 42).all()
    assert len(list(seg.segment(_smoke_prompts()))) == 2  # no hook left behind
