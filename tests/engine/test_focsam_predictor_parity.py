"""End-to-end parity of the FocSAM predictor and its click sessions with the official protocol.

Runs over every ``focsam_*.pt`` fixture (see ``shared/parity/README.md``): the fixture's image
goes through our preprocessing and encoder, then its clicks go one by one through a click
session, and every step is compared with the official ``ClickMixSegmentorRefine`` test-time
outputs: prompt coordinates, low-resolution logits, logits and mask at the original size,
whether the refined embeddings are used, and the refined embeddings themselves. All dimensions
come from the fixture's config.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_focsam.engine import FocSamPredictor
from napari_focsam.models.focsam import FocSamConfig, build_focsam

EMBEDDING_ATOL = 1e-5
LOGIT_ATOL = 1e-4
RTOL = 1e-4
#: Masks must agree except where the reference logit is this close to 0 (parity README).
MASK_LOGIT_MARGIN = 1e-3


def _close(actual: torch.Tensor | np.ndarray, expected: torch.Tensor, atol: float) -> None:
    actual = torch.as_tensor(np.asarray(actual)) if isinstance(actual, np.ndarray) else actual
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=atol * scale)


def _predictor(fixture: dict) -> FocSamPredictor:
    config = FocSamConfig.from_official_kwargs(
        fixture["config"]["model"], name=fixture["path"].stem,
        refine_start_step=fixture["config"].get("refine_start_step", 1))
    model = build_focsam(config).load_official_state_dict(fixture["state_dict"],
                                                          source=fixture["path"].name)
    return FocSamPredictor(model, device="cpu", encoder_dtype="fp32")


def _rgb(fixture: dict) -> np.ndarray:
    """The fixture's image is in the channel order the model saw (BGR, as the official loader
    gives it); napari hands us RGB, which the predictor turns into BGR."""
    return fixture["inputs"]["image"].numpy()[..., ::-1]


@pytest.fixture
def encoded(focsam_fixture):
    predictor = _predictor(focsam_fixture)
    predictor.set_image(_rgb(focsam_fixture))
    return focsam_fixture, predictor


def test_focsam_predictor_parity_preprocessing(focsam_fixture):
    predictor = _predictor(focsam_fixture)
    inputs = focsam_fixture["inputs"]
    x, input_size = predictor.model_input(np.ascontiguousarray(_rgb(focsam_fixture)))
    assert tuple(inputs["image_hw"]) == inputs["image"].shape[:2]
    assert input_size == tuple(inputs["resized_hw"])
    assert predictor.expected_input_size(tuple(inputs["image_hw"])) == tuple(inputs["resized_hw"])
    h, w = input_size
    expected = F.interpolate(inputs["normalized_padded"], (h, w), mode="bilinear",
                             align_corners=False)
    torch.testing.assert_close(x[..., :h, :w], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(x[..., :h:4, :w:4], inputs["resized_input_stride4"], rtol=0,
                               atol=1e-5)
    assert not x[..., h:, :].any() and not x[..., :, w:].any()  # zero padding to the canvas


def test_focsam_predictor_parity_embeddings(encoded):
    fixture, predictor = encoded
    assert predictor.original_size == tuple(fixture["inputs"]["image_hw"])
    assert predictor.padded_size == tuple(fixture["inputs"]["padded_hw"])
    _close(predictor.features, fixture["outputs"]["image_embeddings"], EMBEDDING_ATOL)


def test_focsam_predictor_parity_click_session(encoded):
    fixture, predictor = encoded
    outputs = fixture["outputs"]
    clicks = fixture["inputs"]["clicks"]
    assert len(clicks) == len(outputs["steps"])
    session = predictor.start_session()
    for k, ((row, col, positive), step) in enumerate(zip(clicks, outputs["steps"], strict=True)):
        points = np.array([[c[0], c[1]] for c in clicks[: k + 1]], dtype=np.float64)
        torch.testing.assert_close(torch.from_numpy(predictor.points_to_model(points))[None],
                                   step["point_coords"], rtol=1e-6, atol=1e-4)
        prediction = session.add_click(row, col, positive)
        assert session.refined == bool(step["uses_refined_embeddings"]), k
        assert prediction.low_res_logits.shape == tuple(step["lowres_logits"].shape[1:])
        _close(prediction.low_res_logits, step["lowres_logits"][0], LOGIT_ATOL)
        _close(prediction.logits[0], step["logits_orig"], LOGIT_ATOL)
        reference_mask = step["mask"].numpy()
        differ = prediction.masks[0] != reference_mask
        near_zero = np.abs(step["logits_orig"].numpy()) <= MASK_LOGIT_MARGIN
        assert not (differ & ~near_zero).any(), f"step {k}: {int(differ.sum())} mask pixels differ"
        assert reference_mask.any() and not reference_mask.all(), "degenerate fixture mask"
    refined_at = next(k for k, s in enumerate(outputs["steps"]) if s["uses_refined_embeddings"])
    assert refined_at == predictor.refine_start_step
    _close(session.steps[refined_at].state, outputs["refine"]["refined_embeddings"],
           EMBEDDING_ATOL)


def test_focsam_predictor_parity_refine_step_parts(encoded):
    """Coarse pass, mask token and focus box of the refine step through `FocSamPredictor.refine`."""
    fixture, predictor = encoded
    outputs = fixture["outputs"]
    clicks = fixture["inputs"]["clicks"]
    k = predictor.refine_start_step
    session = predictor.start_session()
    for row, col, positive in clicks[:k]:
        session.add_click(row, col, positive)
    points = np.array([[c[0], c[1]] for c in clicks[: k + 1]], dtype=np.float64)
    labels = np.array([int(c[2]) for c in clicks[: k + 1]])
    prompts = predictor.validate(points, labels, mask_input=session.prediction.low_res_logits)
    coarse = predictor.decode_raw(prompts, multimask=False)
    _close(coarse.low_res_logits, outputs["refine"]["coarse_logits"], LOGIT_ATOL)
    _close(coarse.mask_tokens[:, :1], outputs["refine"]["mask_token"], LOGIT_ATOL)
    refined, box = predictor.refine(prompts)
    assert torch.equal(box, outputs["refine"]["focus_box"])
    _close(refined, outputs["refine"]["refined_embeddings"], EMBEDDING_ATOL)
