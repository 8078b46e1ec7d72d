"""Numerical parity of our TinyViT SAM (MobileSAM ``vit_t``) with the official MobileSAM code.

Runs over every ``tinyvit_*.pt`` fixture (``tests/parity/README.md``); every dimension comes
from the fixture's config. Tolerances follow the parity README: fp32 on both sides, so only
operation order differs (about 1e-5 on embeddings and 1e-4 on logits, relative to their
scale); masks may differ only where the reference logit is within 1e-3 of 0.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from napari_focsam.engine.sam_predictor import SamPredictor
from napari_focsam.engine.transforms import resize_longest_side
from napari_focsam.models.sam import (
    SAM_CONFIGS,
    SamConfig,
    TinyViTConfig,
    build_sam,
    derive_sam_config,
    load_sam,
)

EMBEDDING_ATOL = 1e-5
LOGIT_ATOL = 1e-4
RTOL = 1e-4
MASK_LOGIT_MARGIN = 1e-3


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, label: str = "") -> None:
    # Absolute tolerance relative to the reference's magnitude (errors scale with it).
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=atol * scale, msg=lambda m: f"{label}: {m}")


def _config(fixture: dict) -> SamConfig:
    return SamConfig.from_official_kwargs(fixture["config"], name=fixture["path"].stem)


@pytest.fixture
def tinyvit_model(tinyvit_fixture, tmp_path):
    """The fixture's official state_dict written to a .pt file and loaded like a real one."""
    path = tmp_path / "mobile_sam_layout.pt"
    torch.save(tinyvit_fixture["state_dict"], path)
    return load_sam(path, _config(tinyvit_fixture))


def _resized_image(fixture: dict) -> np.ndarray:
    """The official predictor's resized image, checked against the fixture's hash."""
    resized = resize_longest_side(fixture["image"].numpy(), int(fixture["config"]["image_size"]))
    assert resized.shape[:2] == tuple(fixture["image_hw"])
    digest = hashlib.sha256(np.ascontiguousarray(resized).tobytes()).hexdigest()
    assert digest == fixture["image_resized_sha256"], "resize differs from the official one"
    return resized


def _case_prompts(case: dict) -> dict:
    points = case["points"]
    return {
        "point_coords": None if points is None else points[0],
        "point_labels": None if points is None else points[1],
        "boxes": case["boxes"],
        "mask_input": case["mask_input"],
        "multimask": case["multimask"],
    }


def _label(case: dict) -> str:
    return f"{case['name']} (multimask={case['multimask']})"


def test_tinyvit_parity_config_and_encoder_kind(tinyvit_fixture, tinyvit_model):
    cfg = tinyvit_model.config
    raw = tinyvit_fixture["config"]["tiny_vit"]
    assert isinstance(cfg.encoder, TinyViTConfig)
    assert list(cfg.encoder.embed_dims) == list(raw["embed_dims"])
    assert list(cfg.encoder.merge_strides) == list(raw["merge_strides"])
    assert cfg.image_embedding_size == tinyvit_fixture["image_embeddings"].shape[-1]
    assert cfg.prompt_embed_dim == tinyvit_fixture["image_embeddings"].shape[1]


def test_tinyvit_parity_image_embeddings(tinyvit_fixture, tinyvit_model):
    model = tinyvit_model
    x = torch.from_numpy(_resized_image(tinyvit_fixture)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        embeddings = model.image_encoder(model.preprocess(x))
    _assert_close(embeddings, tinyvit_fixture["image_embeddings"], EMBEDDING_ATOL, "embeddings")


def test_tinyvit_parity_decoder_cases(tinyvit_fixture, tinyvit_model):
    cases = tinyvit_fixture["cases"]
    assert cases, "fixture has no cases"
    assert any(c["multimask"] for c in cases) and not all(c["multimask"] for c in cases)
    for case in cases:
        with torch.no_grad():
            out = tinyvit_model.decode(tinyvit_fixture["image_embeddings"], **_case_prompts(case))
        assert out.low_res_logits.shape == case["low_res_logits"].shape, _label(case)
        _assert_close(out.low_res_logits, case["low_res_logits"], LOGIT_ATOL, _label(case))
        _assert_close(out.iou_predictions, case["iou"], LOGIT_ATOL, _label(case))


def test_tinyvit_parity_masks_at_original_size(tinyvit_fixture, tinyvit_model):
    hw, orig = tuple(tinyvit_fixture["image_hw"]), tuple(tinyvit_fixture["orig_hw"])
    for case in tinyvit_fixture["cases"]:
        with torch.no_grad():
            out = tinyvit_model.decode(tinyvit_fixture["image_embeddings"], **_case_prompts(case))
            logits = tinyvit_model.postprocess_masks(out.low_res_logits, hw, orig)
        expected = case["masks_orig"]
        assert logits.shape == expected.shape, _label(case)
        differ = (logits > 0) != expected
        assert bool((logits[differ].abs() < MASK_LOGIT_MARGIN).all()), (
            f"{_label(case)}: {int(differ.sum())} mask pixels differ away from the threshold")


def test_tinyvit_parity_predictor_end_to_end(tinyvit_fixture, tinyvit_model):
    """`SamPredictor` from the original image and prompts in original pixels (as napari gives
    them: (row, col)) to masks at the original size, against the official predictor."""
    data = tinyvit_fixture
    predictor = SamPredictor(tinyvit_model, device="cpu", encoder_dtype="fp32")
    predictor.set_image(data["image"].numpy())
    assert predictor.input_size == tuple(data["image_hw"])
    _assert_close(predictor.features, data["image_embeddings"], EMBEDDING_ATOL, "embeddings")
    for case in data["cases"]:
        kwargs: dict = {"multimask": bool(case["multimask"])}
        if case["points_orig"] is not None:
            xy, labels = case["points_orig"]
            kwargs["points"] = xy.numpy()[:, ::-1].copy()  # (x, y) -> (row, col)
            kwargs["labels"] = labels.numpy()
        if case["box_orig"] is not None:
            x0, y0, x1, y1 = case["box_orig"].tolist()
            kwargs["box"] = np.array([y0, x0, y1, x1])
        if case["mask_input"] is not None:
            kwargs["mask_input"] = case["mask_input"][0].numpy()  # (1, 256, 256)
        pred = predictor.predict(**kwargs)
        _assert_close(torch.from_numpy(pred.low_res_logits), case["low_res_logits"][0],
                      LOGIT_ATOL, _label(case))
        _assert_close(torch.from_numpy(pred.scores), case["iou"][0], LOGIT_ATOL, _label(case))
        ref_masks = case["masks_orig"][0].numpy()
        assert pred.masks.shape == ref_masks.shape, _label(case)
        unexplained = (pred.masks != ref_masks) & (np.abs(pred.logits) >= MASK_LOGIT_MARGIN)
        assert not unexplained.any(), (
            f"{_label(case)}: {int(unexplained.sum())} mask pixels differ away from the threshold")


def test_tinyvit_parity_bf16_encoder_masks_agree(tinyvit_fixture, tinyvit_model):
    """The bf16 encoder path (the CPU default) gives masks with IoU >= 0.95 against fp32."""
    model = tinyvit_model
    x = model.preprocess(torch.from_numpy(_resized_image(tinyvit_fixture)).permute(2, 0, 1)[None].float())
    with torch.no_grad():
        emb32 = model.image_encoder(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            emb16 = model.image_encoder(x)
    assert emb16.dtype == torch.bfloat16  # the encoder really ran in bf16
    hw, orig = tuple(tinyvit_fixture["image_hw"]), tuple(tinyvit_fixture["orig_hw"])
    for case in tinyvit_fixture["cases"]:
        with torch.no_grad():
            m32, m16 = (model.postprocess_masks(model.decode(e.float(), **_case_prompts(case))
                                                .low_res_logits, hw, orig) > 0
                        for e in (emb32, emb16))
        inter = (m32 & m16).sum(dim=(-1, -2)).float()
        union = (m32 | m16).sum(dim=(-1, -2)).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        assert bool((iou >= 0.95).all()), f"{_label(case)}: bf16 vs fp32 IoU {iou.tolist()}"


def test_tinyvit_parity_attention_biases_are_used(tinyvit_fixture, tinyvit_model):
    """Zero attention biases change the embeddings: the fixture's biases are exercised."""
    x = tinyvit_model.preprocess(
        torch.from_numpy(_resized_image(tinyvit_fixture)).permute(2, 0, 1)[None].float())
    with torch.no_grad():
        for name, p in tinyvit_model.image_encoder.named_parameters():
            if name.endswith("attention_biases"):
                p.zero_()
        embeddings = tinyvit_model.image_encoder(x)
    assert (embeddings - tinyvit_fixture["image_embeddings"]).abs().max() > 1e-2


def test_tinyvit_parity_released_layout(tinyvit_fixture):
    """``sam_vit_t`` has the official ``build_sam_vit_t`` state_dict, key for key and shape for
    shape, and is told from those shapes."""
    official = {k: tuple(v) for k, v in tinyvit_fixture["official_vit_t_shapes"].items()}
    with torch.device("meta"):
        model = build_sam(SAM_CONFIGS["sam_vit_t"])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) ^ set(official)) == []
    assert ours == official
    assert sum(p.numel() for p in model.parameters()) == tinyvit_fixture["official_vit_t_parameters"]
    meta = {k: torch.empty(shape, device="meta") for k, shape in official.items()}
    assert derive_sam_config(meta) is SAM_CONFIGS["sam_vit_t"]


def test_tinyvit_parity_config_told_from_the_fixture_shapes(tinyvit_fixture):
    """Everything the shapes tell matches the recorded config; decoder heads and the unused
    heads / window of the conv stage come from the released defaults."""
    recorded = _config(tinyvit_fixture)
    derived = derive_sam_config(tinyvit_fixture["state_dict"])
    enc, ref = derived.encoder, recorded.encoder
    assert isinstance(enc, TinyViTConfig)
    for field in ("embed_dims", "depths", "merge_strides", "out_chans", "mlp_ratio",
                  "mbconv_expand_ratio", "local_conv_size", "num_classes", "image_size"):
        assert getattr(enc, field) == getattr(ref, field), field
    assert enc.num_heads[1:] == ref.num_heads[1:] and enc.window_sizes[1:] == ref.window_sizes[1:]
    for field in ("transformer_dim", "depth", "mlp_dim", "attention_downsample_rate",
                  "num_multimask_outputs", "iou_head_depth", "iou_head_hidden_dim"):
        assert getattr(derived.decoder, field) == getattr(recorded.decoder, field), field
    assert derived.mask_in_chans == recorded.mask_in_chans
