"""SAM 2 in image mode: the same numbers as SAM 2's video predictor on an unprompted frame.

`Sam2ImagePredictor.predict` must equal `VideoPropagator.add_points` with every prompt at once,
and a click session must equal the clicks added one at a time (``clear_old=False``, which is
also `VideoPropagator.add_clicks`), bit for bit: both paths run the same model calls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_focsam.engine import InteractivePredictor, PredictorStateError, PromptError, StaleSessionError
from napari_focsam.engine.frame_features import StackFeatures
from napari_focsam.engine.propagation import VideoPropagator
from napari_focsam.engine.sam2_image_predictor import Sam2ImagePredictor
from napari_focsam.models.sam2.config import SAM2_CONFIGS
from napari_focsam.models.sam2.model import build_sam2

IMAGE_SIZE = 128
HW = (40, 56)  # not square: a (row, col) / (x, y) mix-up shows
#: (row, col, positive) clicks on and around the bright disc of `_frame`.
CLICKS = [(18.0, 24.0, True), (5.0, 50.0, False), (22.0, 30.0, True), (30.0, 10.0, False)]
BOX_RC = (8.0, 12.0, 30.0, 38.0)


def _frame() -> np.ndarray:
    h, w = HW
    yy, xx = np.mgrid[:h, :w]
    out = np.full((h, w, 3), 25, np.uint8)
    out[(yy - 19) ** 2 + (xx - 26) ** 2 <= 81] = (240, 190, 70)
    return out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_sam2(SAM2_CONFIGS["sam2_test_tiny"].replace(image_size=IMAGE_SIZE))
    dec = net.sam_mask_decoder
    with torch.no_grad():
        dec.pred_obj_score_head.layers[-1].bias += 10.0  # the object is present
        for mlp in dec.output_hypernetworks_mlps:  # logits of a few units, both signs
            mlp.layers[-1].weight *= 30.0
            mlp.layers[-1].bias.mul_(30.0).add_(1.5)
    return net.eval()


@pytest.fixture(scope="module")
def features(model):
    return StackFeatures(model, _frame()[None])


@pytest.fixture
def predictor(model, features):
    p = Sam2ImagePredictor(model, dtype="fp32")
    p.set_frame(features(0), HW)
    return p


def _video(model, features) -> VideoPropagator:
    return VideoPropagator(model, features, HW)


def _xy(clicks) -> tuple[np.ndarray, np.ndarray]:
    pts = np.array([[c, r] for r, c, _ in clicks], dtype=np.float32)
    return pts, np.array([int(p) for *_, p in clicks])


def _box_xyxy(box_rc) -> np.ndarray:
    return np.asarray(box_rc, dtype=np.float32)[[1, 0, 3, 2]]


def _assert_same(prediction, result) -> None:
    logits = result.logits[0, 0].numpy()
    np.testing.assert_array_equal(prediction.logits[0], logits)
    np.testing.assert_array_equal(prediction.masks[0], logits > 0)


def test_it_is_an_interactive_predictor(predictor):
    assert isinstance(predictor, InteractivePredictor)
    assert predictor.mask_input_size == 4 * (IMAGE_SIZE // 16)
    assert predictor.original_size == HW


@pytest.mark.parametrize("clicks, box", [(CLICKS[:1], None), (CLICKS, None), ([], BOX_RC),
                                          (CLICKS[:2], BOX_RC)])
def test_predict_equals_the_video_predictor_with_all_prompts_at_once(predictor, model, features,
                                                                      clicks, box):
    pts, labels = _xy(clicks)
    ours = predictor.predict(np.array([[r, c] for r, c, _ in clicks]).reshape(-1, 2) if clicks else None,
                             labels if clicks else None, None if box is None else np.array(box))
    ref = _video(model, features).add_points(0, 1, pts if clicks else None,
                                             labels if clicks else None,
                                             None if box is None else _box_xyxy(box))
    _assert_same(ours, ref)
    assert ours.masks.shape == (1, *HW) and ours.low_res_logits.shape[0] == 1
    assert ours.logits.std() > 0.1  # varying logits: not a constant (e.g. no-object) plane


@pytest.mark.parametrize("box", [None, BOX_RC])
def test_a_session_equals_the_clicks_added_one_at_a_time(predictor, model, features, box):
    session = predictor.start_session(box=None if box is None else np.array(box))
    video = _video(model, features)
    for k, (r, c, positive) in enumerate(CLICKS):
        ours = session.add_click(r, c, positive)
        pts, labels = _xy([(r, c, positive)])
        first_box = None if (box is None or k > 0) else _box_xyxy(box)
        ref = video.add_points(0, 1, pts, labels, first_box, clear_old=k == 0)
        _assert_same(ours, ref)
    at_once = _video(model, features).add_clicks(0, 1, *_xy(CLICKS),
                                                 None if box is None else _box_xyxy(box))
    _assert_same(session.prediction, at_once)
    assert not session.refined  # SAM 2 carries no state between clicks


def test_undo_and_edits_restore_the_exact_earlier_steps(predictor, monkeypatch):
    session = predictor.start_session()
    steps = [session.add_click(r, c, p) for r, c, p in CLICKS[:3]]
    assert session.undo() is steps[1]
    calls = []
    original = predictor.session_step
    monkeypatch.setattr(predictor, "session_step",
                        lambda prompts, step, state: calls.append(step) or original(prompts, step, state))
    points = np.array([[r, c] for r, c, _ in CLICKS])
    session.set_clicks(points, np.array([int(p) for *_, p in CLICKS]))
    assert calls == [2, 3]  # the first two clicks were kept
    np.testing.assert_array_equal(session.steps[2].prediction.logits, steps[2].logits)


def test_set_image_encodes_like_the_features(model, features):
    p = Sam2ImagePredictor(model, dtype="fp32")
    p.set_image(_frame())
    q = Sam2ImagePredictor(model, dtype="fp32")
    q.set_frame(features(0), HW)
    points, labels = np.array([[18.0, 24.0]]), np.array([1])
    np.testing.assert_array_equal(p.predict(points, labels).logits, q.predict(points, labels).logits)


def test_errors(model, features):
    p = Sam2ImagePredictor(model, dtype="fp32")
    with pytest.raises(PredictorStateError, match="no frame is set"):
        p.predict(np.array([[1.0, 1.0]]), np.array([1]))
    p.set_frame(features(0), HW)
    with pytest.raises(PromptError, match="outside"):
        p.predict(np.array([[HW[0] + 5.0, 1.0]]), np.array([1]))
    with pytest.raises(PromptError):
        p.predict()
    with pytest.raises(PromptError):
        p.predict(np.array([[1.0, 1.0]]), np.array([1]), mask_input=np.zeros((3, 3), np.float32))
    session = p.start_session()
    session.add_click(18.0, 24.0, True)
    p.set_frame(features(0), HW)
    with pytest.raises(StaleSessionError):
        session.add_click(20.0, 24.0, True)


def test_add_clicks_checks_its_arguments(model, features):
    video = _video(model, features)
    with pytest.raises(Exception, match="points and labels must be given together"):
        video.add_clicks(0, 1, np.zeros((1, 2), np.float32), None)
    with pytest.raises(Exception, match="2 points but 1 labels"):
        video.add_clicks(0, 1, np.zeros((2, 2), np.float32), np.array([1]))
