"""Click sessions: protocol, undo, edits, new objects, bad input, for SAM and FocSAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_focsam.engine import (
    FocSamPredictor,
    PromptError,
    SamPredictor,
    StaleSessionError,
)
from napari_focsam.models.focsam import FOCSAM_CONFIGS, build_focsam
from napari_focsam.models.sam import SAM_CONFIGS, build_sam

CLICKS = [(40.0, 60.0, True), (10.0, 12.0, False), (70.0, 90.0, True), (55.0, 20.0, False)]


def _image(h: int = 96, w: int = 130) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    img[30:80, 40:110] += 150
    return img


@pytest.fixture(scope="module")
def focsam():
    torch.manual_seed(0)
    predictor = FocSamPredictor(build_focsam(FOCSAM_CONFIGS["focsam_test_tiny"]), device="cpu",
                                encoder_dtype="fp32")
    predictor.set_image(_image())
    return predictor


@pytest.fixture(scope="module")
def sam():
    torch.manual_seed(0)
    predictor = SamPredictor(build_sam(SAM_CONFIGS["sam_test_tiny"]), device="cpu",
                             encoder_dtype="fp32")
    predictor.set_image(_image())
    return predictor


class StepSpy:
    """Counts session steps and refinements of a predictor."""

    def __init__(self, predictor, monkeypatch):
        self.steps: list[int] = []
        self.refines = 0
        step, refine = predictor.session_step, getattr(predictor, "refine", None)

        def session_step(prompts, index, embeddings):
            self.steps.append(index)
            return step(prompts, index, embeddings)

        monkeypatch.setattr(predictor, "session_step", session_step)
        if refine is not None:
            def counted_refine(prompts):
                self.refines += 1
                return refine(prompts)

            monkeypatch.setattr(predictor, "refine", counted_refine)


def _same(a, b) -> bool:
    return (np.array_equal(a.low_res_logits, b.low_res_logits)
            and np.array_equal(a.logits, b.logits) and np.array_equal(a.masks, b.masks))


def test_each_step_sends_all_clicks_and_previous_logits(focsam, monkeypatch):
    seen = []
    decode_raw = focsam.decode_raw

    def spy(prompts, **kwargs):
        seen.append(prompts)
        return decode_raw(prompts, **kwargs)

    monkeypatch.setattr(focsam, "decode_raw", spy)
    session = focsam.start_session()
    predictions = [session.add_click(*c) for c in CLICKS]
    # step 0 one decode; step 1 coarse + refined decode; later steps one decode each
    assert [len(p.points) for p in seen] == [1, 2, 2, 3, 4]
    assert seen[0].mask_input is None
    for prompts, previous in zip(seen[1:3], [predictions[0]] * 2, strict=True):
        np.testing.assert_array_equal(prompts.mask_input, previous.low_res_logits)
    np.testing.assert_array_equal(seen[3].mask_input, predictions[1].low_res_logits)
    np.testing.assert_array_equal(seen[-1].labels, [1, 0, 1, 0])
    assert all(p.masks.shape == (1, *focsam.original_size) for p in predictions)


def test_refinement_at_second_click_is_kept_for_the_object(focsam, monkeypatch):
    spy = StepSpy(focsam, monkeypatch)
    session = focsam.start_session()
    session.add_click(*CLICKS[0])
    assert not session.refined and spy.refines == 0
    session.add_click(*CLICKS[1])
    assert session.refined and spy.refines == 1
    refined = session.steps[1].state
    assert refined.shape == focsam.features.shape
    assert not torch.equal(refined, focsam.features)
    session.add_click(*CLICKS[2])
    assert spy.refines == 1 and session.steps[2].state is refined


def test_refined_embeddings_change_the_prediction(focsam):
    session = focsam.start_session()
    session.add_click(*CLICKS[0])
    refined = session.add_click(*CLICKS[1])
    points = np.array([c[:2] for c in CLICKS[:2]])
    labels = np.array([int(c[2]) for c in CLICKS[:2]])
    plain = focsam.predict(points, labels, mask_input=session.steps[0].prediction.low_res_logits,
                           multimask=False)
    assert not np.allclose(plain.low_res_logits, refined.low_res_logits)


def test_undo_restores_exact_state_and_drops_refinement(focsam, monkeypatch):
    session = focsam.start_session()
    predictions = [session.add_click(*c) for c in CLICKS]
    assert session.undo() is predictions[2]
    assert session.undo() is predictions[1] and session.refined
    assert session.undo() is predictions[0] and not session.refined
    spy = StepSpy(focsam, monkeypatch)
    again = session.add_click(*CLICKS[1])
    assert spy.refines == 1 and session.refined  # the refining click refines again
    assert _same(again, predictions[1])
    session.undo()
    assert session.undo() is None and len(session) == 0 and session.mask is None
    with pytest.raises(IndexError, match="no click to undo"):
        session.undo()


def test_new_object_starts_from_the_original_embeddings(focsam):
    first = focsam.start_session()
    for c in CLICKS:
        first.add_click(*c)
    second = focsam.start_session()
    p = second.add_click(*CLICKS[0])
    assert not second.refined
    assert _same(p, first.steps[0].prediction)


def test_set_clicks_replays_only_after_the_common_prefix(focsam, monkeypatch):
    session = focsam.start_session()
    pts = np.array([c[:2] for c in CLICKS])
    labels = np.array([int(c[2]) for c in CLICKS])
    session.set_clicks(pts, labels)
    before = session.steps
    spy = StepSpy(focsam, monkeypatch)
    moved = pts.copy()
    moved[2] += 3.0
    session.set_clicks(moved, labels)
    assert spy.steps == [2, 3] and spy.refines == 0
    assert session.steps[:2] == before[:2]
    # deleting the first click re-runs everything, refining at the new second click
    spy.steps.clear()
    session.set_clicks(moved[1:], labels[1:])
    assert spy.steps == [0, 1, 2] and spy.refines == 1
    assert session.set_clicks(np.zeros((0, 2)), []) is None and len(session) == 0


def test_invalid_clicks_change_nothing(focsam):
    session = focsam.start_session()
    session.add_click(*CLICKS[0])
    state = session.steps
    h, w = focsam.original_size
    with pytest.raises(PromptError):
        session.add_click(h + 5, 10, True)
    with pytest.raises(PromptError):
        session.add_click(float("nan"), 10, True)
    with pytest.raises(PromptError):
        session.set_clicks([[1, 1], [h + 1, 1]], [1, 1])
    with pytest.raises(PromptError):
        session.set_clicks([[1, 1]], [1, 0])
    assert session.steps == state


def test_session_notices_a_new_image(sam):
    session = sam.start_session()
    session.add_click(*CLICKS[0])
    sam.set_image(_image(80, 70))
    with pytest.raises(StaleSessionError, match="start a new session"):
        session.add_click(5, 5, True)
    with pytest.raises(StaleSessionError):
        session.set_clicks([[5, 5]], [1])
    sam.set_image(_image())


def test_sam_session_never_refines_and_matches_single_mask_predict(sam):
    session = sam.start_session()
    first = session.add_click(*CLICKS[0])
    second = session.add_click(*CLICKS[1])
    assert not session.refined and sam.refine_start_step is None
    pts = np.array([c[:2] for c in CLICKS[:2]])
    direct = sam.predict(pts, np.array([1, 0]), mask_input=first.low_res_logits, multimask=False)
    assert _same(direct, second)


def test_session_box_is_sent_with_every_click(sam, monkeypatch):
    seen = []
    decode_raw = sam.decode_raw
    monkeypatch.setattr(sam, "decode_raw",
                        lambda prompts, **kw: seen.append(prompts) or decode_raw(prompts, **kw))
    session = sam.start_session(box=[20, 30, 85, 120])
    session.add_click(*CLICKS[0])
    session.add_click(*CLICKS[1])
    assert len(seen) == 2
    for prompts in seen:
        np.testing.assert_array_equal(prompts.box, [20, 30, 85, 120])
    with pytest.raises(PromptError):
        sam.start_session(box=[20, 30, 10_000, 120])


def test_refine_start_step_is_configurable(focsam):
    model = focsam.model
    late = FocSamPredictor(model, device="cpu", encoder_dtype="fp32", refine_start_step=2)
    never = FocSamPredictor(model, device="cpu", encoder_dtype="fp32", refine_start_step=-1)
    for predictor in (late, never):
        predictor.set_features(focsam.features, focsam.original_size, focsam.input_size)
    s_late, s_never = late.start_session(), never.start_session()
    for c in CLICKS[:3]:
        s_late.add_click(*c)
        s_never.add_click(*c)
    assert [s.refined for s in s_late.steps] == [False, False, True]
    assert never.refine_start_step is None and not any(s.refined for s in s_never.steps)


def test_focsam_geometry_and_set_features(focsam):
    h, w = focsam.original_size
    assert focsam.padded_size == (-(-h // 32) * 32, -(-w // 32) * 32)
    hp, wp = focsam.padded_size
    ih, iw = focsam.input_size
    assert max(ih, iw) == focsam.image_size
    xy = focsam.points_to_model(np.array([[h - 1, w - 1]]))
    np.testing.assert_allclose(xy, [[(w - 1) * iw / wp, (h - 1) * ih / hp]], rtol=1e-6)
    with pytest.raises(ValueError, match="preprocessing gives"):
        focsam.set_features(focsam.features, (h, w), (ih - 3, iw))
