"""Numerical parity of our SAM with the official segment-anything 1.0 outputs.

Runs over every ``sam1_*.pt`` fixture; every dimension comes from the fixture's config.
Tolerances follow the fixtures' README: fp32 on both sides, so only operation order differs.
"""

from __future__ import annotations

import torch

from napari_focsam.models.sam import SamConfig, load_sam

EMBEDDING_ATOL = 1e-5
LOGIT_ATOL = 1e-4
RTOL = 1e-4
MASK_LOGIT_MARGIN = 1e-3


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    # Absolute tolerance relative to the reference's magnitude (errors scale with it).
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=atol * scale)


def _model_from_fixture(fixture: dict, tmp_path):
    """Write the fixture's official state_dict to a .pth file and load it like a real one."""
    path = tmp_path / "official_layout.pth"
    torch.save(fixture["state_dict"], path)
    config = SamConfig.from_official_kwargs(fixture["config"], name=fixture["path"].stem)
    return load_sam(path, config)


def _case_prompts(case: dict) -> dict:
    points = case["points"]
    return {
        "point_coords": None if points is None else points[0],
        "point_labels": None if points is None else points[1],
        "boxes": case["boxes"],
        "mask_input": case["mask_input"],
        "multimask": case["multimask"],
    }


def test_sam1_parity_image_embeddings(sam1_fixture, tmp_path):
    model = _model_from_fixture(sam1_fixture, tmp_path)
    image = sam1_fixture["image_resized"][None].float()  # 1 x 3 x h x w, 0..255
    assert tuple(image.shape[-2:]) == tuple(sam1_fixture["image_hw"])
    with torch.no_grad():
        embeddings = model.image_encoder(model.preprocess(image))
    _assert_close(embeddings, sam1_fixture["image_embeddings"], EMBEDDING_ATOL)


def test_sam1_parity_decoder_cases(sam1_fixture, tmp_path):
    model = _model_from_fixture(sam1_fixture, tmp_path)
    embeddings = sam1_fixture["image_embeddings"]
    cases = sam1_fixture["cases"]
    assert cases, "fixture has no cases"
    for case in cases:
        with torch.no_grad():
            out = model.decode(embeddings, **_case_prompts(case))
        label = f"{case['name']} multimask={case['multimask']}"
        assert out.low_res_logits.shape == case["low_res_logits"].shape, label
        _assert_close(out.low_res_logits, case["low_res_logits"], LOGIT_ATOL)
        _assert_close(out.iou_predictions, case["iou"], LOGIT_ATOL)


def test_sam1_parity_masks_at_original_size(sam1_fixture, tmp_path):
    model = _model_from_fixture(sam1_fixture, tmp_path)
    cases = [c for c in sam1_fixture["cases"] if c["masks_orig"] is not None]
    assert cases, "fixture has no case with masks at the original size"
    for case in cases:
        with torch.no_grad():
            out = model.decode(sam1_fixture["image_embeddings"], **_case_prompts(case))
            logits = model.postprocess_masks(out.low_res_logits, tuple(sam1_fixture["image_hw"]),
                                             tuple(sam1_fixture["orig_hw"]))
        expected = case["masks_orig"]
        assert logits.shape == expected.shape
        differ = (logits > 0) != expected
        # Disagreement is only acceptable where the logit sits on the threshold.
        assert bool((logits[differ].abs() < MASK_LOGIT_MARGIN).all()), (
            f"{case['name']}: {int(differ.sum())} mask pixels differ away from the threshold")


def test_sam1_parity_bf16_encoder_masks_agree(sam1_fixture, tmp_path):
    """The bf16 encoder path gives masks with IoU >= 0.98 against the fp32 path."""
    model = _model_from_fixture(sam1_fixture, tmp_path)
    x = model.preprocess(sam1_fixture["image_resized"][None].float())
    with torch.no_grad():
        emb32 = model.image_encoder(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            emb16 = model.image_encoder(x)
    assert emb16.dtype == torch.bfloat16  # the encoder really ran in bf16
    hw, orig = tuple(sam1_fixture["image_hw"]), tuple(sam1_fixture["orig_hw"])
    for case in sam1_fixture["cases"]:
        with torch.no_grad():
            m32 = model.postprocess_masks(model.decode(emb32, **_case_prompts(case)).low_res_logits,
                                          hw, orig) > 0
            m16 = model.postprocess_masks(model.decode(emb16.float(), **_case_prompts(case))
                                          .low_res_logits, hw, orig) > 0
        inter = (m32 & m16).sum(dim=(-1, -2)).float()
        union = (m32 | m16).sum(dim=(-1, -2)).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        assert bool((iou >= 0.98).all()), f"{case['name']}: bf16 vs fp32 IoU {iou.tolist()}"
