"""Numerical parity of FocSAM's parts with the official code's outputs.

Runs over every ``focsam_*.pt`` fixture; every dimension comes from the fixture's config. The
refiner and the SAM parts are loaded from the fixture's official-layout state_dict with every
key and shape checked. Tolerances follow the fixtures' README (fp32 on both sides).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_focsam.models.checkpoint import load_checked
from napari_focsam.models.focsam import (
    FocSamConfig,
    FocusRefiner,
    focsam_to_sam_state_dict,
    mask_bbox,
    refiner_state_dict,
)
from napari_focsam.models.sam import SamModel

EMBEDDING_ATOL = 1e-5
LOGIT_ATOL = 1e-4
RTOL = 1e-4


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=atol * scale)


def _config(fixture: dict) -> FocSamConfig:
    return FocSamConfig.from_official_kwargs(
        fixture["config"]["model"], name=fixture["path"].stem,
        refine_start_step=fixture["config"].get("refine_start_step", 1))


def _refiner(fixture: dict) -> FocusRefiner:
    refiner = FocusRefiner(_config(fixture).refiner).eval()
    return load_checked(refiner, refiner_state_dict(fixture["state_dict"]), source=fixture["path"].name)


def _sam(fixture: dict) -> SamModel:
    sam = SamModel(_config(fixture).sam).eval()
    return load_checked(sam, focsam_to_sam_state_dict(fixture["state_dict"]),
                        source=fixture["path"].name)


def test_focsam_parity_focus_box(focsam_fixture):
    refine = focsam_fixture["outputs"]["refine"]
    refiner = FocusRefiner(_config(focsam_fixture).refiner)
    assert refiner.cfg.expand_ratio == tuple(refine["expand_ratio"])
    coarse = refine["coarse_logits"]
    up = F.interpolate(coarse, refiner.canvas_hw, mode="bilinear", align_corners=False)
    assert torch.equal(mask_bbox(up > 0), refine["bbox_from_coarse"])
    box = refiner.focus_box(coarse)
    assert box.dtype == torch.int64
    assert torch.equal(box, refine["focus_box"])
    # a real sub-region of the canvas, as the fixture promises
    assert not torch.equal(box[0, 0], torch.tensor([0, 0, *refiner.canvas_hw]))


def test_focsam_parity_refined_embeddings(focsam_fixture):
    refiner = _refiner(focsam_fixture)
    refine = focsam_fixture["outputs"]["refine"]
    stats = []

    def record(module, args):
        offset, _ = module.offsets_and_mask(args[0])
        n, _, h, w = offset.shape
        k = torch.arange(3)
        rows = torch.arange(h)[:, None] - 1 + k.repeat_interleave(3)[:, None, None]  # 9 x h x 1
        cols = torch.arange(w)[None, :] - 1 + k.repeat(3)[:, None, None]  # 9 x 1 x w
        ys, xs = rows + offset[:, 0::2], cols + offset[:, 1::2]
        outside = (ys <= -1) | (ys >= h) | (xs <= -1) | (xs >= w)
        stats.append({"windows": n, "mean_abs_offset": offset.abs().mean().item(),
                      "max_abs_offset": offset.abs().max().item(),
                      "frac_outside": outside.float().mean().item()})

    for block in refiner.blocks:
        block.cls2img.conv2.register_forward_pre_hook(record)
    with torch.no_grad():
        out = refiner(focsam_fixture["outputs"]["image_embeddings"], refine["coarse_logits"],
                      refine["mask_token"])
    # per-block DCN statistics first: they locate a divergence to its block
    assert len(stats) == len(refine["dcn_stats"])
    for ours, ref in zip(stats, refine["dcn_stats"], strict=True):
        label = f"block {ref['block']}"
        assert ours["windows"] == ref["windows"], label
        for key in ("mean_abs_offset", "max_abs_offset"):
            assert abs(ours[key] - ref[key]) <= 1e-4 * max(1.0, abs(ref[key])), (label, key)
        assert abs(ours["frac_outside"] - ref["frac_outside"]) <= 1e-3, label
    _assert_close(out, refine["refined_embeddings"], EMBEDDING_ATOL)


def test_focsam_parity_sam_image_embeddings(focsam_fixture):
    sam = _sam(focsam_fixture)
    inputs = focsam_fixture["inputs"]
    h, w = inputs["resized_hw"]
    size = sam.config.image_size
    x = F.interpolate(inputs["normalized_padded"], (h, w), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x[..., ::4, ::4], inputs["resized_input_stride4"], rtol=0, atol=1e-6)
    x = F.pad(x, (0, size - w, 0, size - h))
    with torch.no_grad():
        embeddings = sam.image_encoder(x)
    _assert_close(embeddings, focsam_fixture["outputs"]["image_embeddings"], EMBEDDING_ATOL)


def test_focsam_parity_coarse_pass_and_mask_token(focsam_fixture):
    sam = _sam(focsam_fixture)
    outputs = focsam_fixture["outputs"]
    step = focsam_fixture["config"].get("refine_start_step", 1)
    prompt, previous = outputs["steps"][step], outputs["steps"][step - 1]
    with torch.no_grad():
        out = sam.decode(outputs["image_embeddings"], point_coords=prompt["point_coords"],
                         point_labels=prompt["point_labels"], mask_input=previous["lowres_logits"],
                         multimask=False)
    _assert_close(out.low_res_logits, outputs["refine"]["coarse_logits"], LOGIT_ATOL)
    _assert_close(out.mask_tokens[:, :1], outputs["refine"]["mask_token"], LOGIT_ATOL)


def test_focsam_parity_decoder_steps(focsam_fixture):
    """Every step's logits from the fixture's embeddings (original or refined) and prompts,
    and the refinement step once more from our own refined embeddings."""
    sam = _sam(focsam_fixture)
    outputs = focsam_fixture["outputs"]
    refine = outputs["refine"]
    steps = outputs["steps"]
    with torch.no_grad():
        for k, step in enumerate(steps):
            emb = refine["refined_embeddings"] if step["uses_refined_embeddings"] \
                else outputs["image_embeddings"]
            prev = steps[k - 1]["lowres_logits"] if step["prev_logits_fed"] else None
            out = sam.decode(emb, point_coords=step["point_coords"],
                             point_labels=step["point_labels"], mask_input=prev, multimask=False)
            assert out.low_res_logits.shape == step["lowres_logits"].shape, k
            _assert_close(out.low_res_logits, step["lowres_logits"], LOGIT_ATOL)

        first = next(k for k, s in enumerate(steps) if s["uses_refined_embeddings"])
        ours = _refiner(focsam_fixture)(outputs["image_embeddings"], refine["coarse_logits"],
                                        refine["mask_token"])
        step = steps[first]
        out = sam.decode(ours, point_coords=step["point_coords"], point_labels=step["point_labels"],
                         mask_input=steps[first - 1]["lowres_logits"], multimask=False)
    _assert_close(out.low_res_logits, step["lowres_logits"], LOGIT_ATOL)


def test_focsam_parity_chain_from_model_input(focsam_fixture):
    """Encoder -> coarse pass -> focus box -> refiner -> decode, all ours, from the resized
    input: the logits of the refinement step match the official ones."""
    sam, refiner = _sam(focsam_fixture), _refiner(focsam_fixture)
    inputs, outputs = focsam_fixture["inputs"], focsam_fixture["outputs"]
    h, w = inputs["resized_hw"]
    size = sam.config.image_size
    x = F.interpolate(inputs["normalized_padded"], (h, w), mode="bilinear", align_corners=False)
    first = next(k for k, s in enumerate(outputs["steps"]) if s["uses_refined_embeddings"])
    step, previous = outputs["steps"][first], outputs["steps"][first - 1]
    prompts = {"point_coords": step["point_coords"], "point_labels": step["point_labels"],
               "mask_input": previous["lowres_logits"], "multimask": False}
    with torch.no_grad():
        embeddings = sam.image_encoder(F.pad(x, (0, size - w, 0, size - h)))
        coarse = sam.decode(embeddings, **prompts)
        refined = refiner(embeddings, coarse.low_res_logits, coarse.mask_tokens[:, :1])
        out = sam.decode(refined, **prompts)
    _assert_close(refined, outputs["refine"]["refined_embeddings"], EMBEDDING_ATOL)
    _assert_close(out.low_res_logits, step["lowres_logits"], LOGIT_ATOL)
