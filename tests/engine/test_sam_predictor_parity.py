"""End-to-end parity of `SamPredictor.predict` with the official segment-anything predictor.

Each ``sam1_*.pt`` fixture (see ``shared/parity/README.md``) holds an official model's config
and weights, the official image embeddings and the official outputs for several prompt sets,
with prompts in the official (x, y) 1024 frame. Here the prompts are turned back into napari
(row, col) original pixels and go through the whole napari-facing predictor path.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_focsam.engine.sam_predictor import SamPredictor
from napari_focsam.engine.transforms import model_xy_to_rc
from napari_focsam.models.sam import SamConfig, build_sam

#: Logits: absolute tolerance relative to the reference magnitude (max(1, max |ref|)).
LOGIT_ATOL = 1e-4
#: Mask pixels may differ only where our logit is this close to the 0 threshold.
MASK_MARGIN = 1e-3


def _predictor_for(data: dict) -> SamPredictor:
    """A predictor holding the fixture's model and official image embeddings.

    ``data`` is the shared ``sam1_fixture`` (tests/conftest.py), one per ``sam1_*.pt`` file.
    """
    model = build_sam(SamConfig.from_official_kwargs(data["config"]))
    model.load_state_dict(data["state_dict"])
    predictor = SamPredictor(model.eval(), device="cpu", encoder_dtype="fp32")
    orig_hw = tuple(int(v) for v in data["orig_hw"])
    image_hw = tuple(int(v) for v in data["image_hw"])
    predictor.set_features(data["image_embeddings"], original_size=orig_hw, input_size=image_hw)
    return predictor


def _prompts_in_napari_pixels(case: dict, orig_hw: tuple[int, int], size: int) -> dict:
    kwargs: dict = {"multimask": bool(case["multimask"])}
    if case["points"] is not None:
        coords, labels = case["points"]
        kwargs["points"] = model_xy_to_rc(coords[0].double().numpy(), orig_hw, size)
        kwargs["labels"] = labels[0].numpy()
    if case["boxes"] is not None:
        xyxy = case["boxes"][0].double().numpy().reshape(2, 2)  # (x0, y0), (x1, y1)
        rc = model_xy_to_rc(xyxy, orig_hw, size)  # (row0, col0), (row1, col1)
        # float32 fixture values may land a hair beyond the border after the round trip
        rc = np.clip(rc, 0.0, np.asarray(orig_hw, dtype=np.float64))
        kwargs["box"] = rc.reshape(4)
    if case["mask_input"] is not None:
        kwargs["mask_input"] = case["mask_input"][0].numpy()  # (1, 256, 256)
    return kwargs


def test_predictor_parity_with_official_fixture(sam1_fixture):
    data, predictor = sam1_fixture, _predictor_for(sam1_fixture)
    orig_hw = predictor.original_size
    checked_masks = 0
    for case in data["cases"]:
        name = f"{case['name']} (multimask={case['multimask']})"
        kwargs = _prompts_in_napari_pixels(case, orig_hw, predictor.image_size)
        pred = predictor.predict(**kwargs)

        ref = case["low_res_logits"][0].numpy()  # (K, 256, 256)
        atol = LOGIT_ATOL * max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(pred.low_res_logits, ref, rtol=0, atol=atol, err_msg=name)
        np.testing.assert_allclose(
            pred.scores, case["iou"][0].numpy(), rtol=0, atol=1e-4, err_msg=name
        )

        if case["masks_orig"] is not None:
            ref_masks = case["masks_orig"][0].numpy()  # (K, H, W) bool
            assert pred.masks.shape == ref_masks.shape, name
            differ = pred.masks != ref_masks
            unexplained = differ & (np.abs(pred.logits) >= MASK_MARGIN)
            assert not unexplained.any(), (
                f"{name}: {int(unexplained.sum())} mask pixels differ away from the threshold"
            )
            checked_masks += 1
    assert checked_masks > 0, "the fixture has no case with masks at the original size"


def test_set_image_parity_with_official_embeddings(sam1_fixture):
    """set_image on the official resized image (resizing is then the identity) gives the
    official embeddings: same channel order, value range, normalisation and padding."""
    data, predictor = sam1_fixture, _predictor_for(sam1_fixture)
    image = data["image_resized"].permute(1, 2, 0).numpy()  # (h, w, 3) uint8, long side 1024
    other = SamPredictor(predictor.model, device="cpu", encoder_dtype="fp32")
    other.set_image(image)
    assert other.input_size == tuple(int(v) for v in data["image_hw"])
    ref = data["image_embeddings"].to(other.features.dtype)
    atol = 1e-5 * max(1.0, float(ref.abs().max()))
    torch.testing.assert_close(other.features, ref, rtol=0, atol=atol)


def test_parity_fixture_prompts_round_trip_to_the_official_frame(sam1_fixture):
    """The (x, y) -> (row, col) -> (x, y) conversion used above is lossless in float32."""
    data, predictor = sam1_fixture, _predictor_for(sam1_fixture)
    from napari_focsam.engine.transforms import rc_to_model_xy

    for case in data["cases"]:
        if case["points"] is None:
            continue
        coords = case["points"][0][0].numpy()
        rc = model_xy_to_rc(coords.astype(np.float64), predictor.original_size, 1024)
        back = rc_to_model_xy(rc, predictor.original_size, predictor.image_size)
        np.testing.assert_allclose(back, coords, rtol=1e-6)
