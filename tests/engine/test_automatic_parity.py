"""Automatic mask generation equals the official generators, record for record.

Each ``amg_*.pt`` fixture holds the masks that segment-anything 1.0's
``SamAutomaticMaskGenerator`` (``amg_sam1_*``) or sam2 1.1.0's ``SAM2AutomaticMaskGenerator``
(``amg_sam2_*``) returned when their batched decoder call gave the designed outputs of
``scripts/parity/amg_recipe.py`` (``scripts/parity/record_amg.py``). Here our generator runs
with the same settings (read from the fixture) and our batched decoding replaced by the same
recipe, and must return the same records in the same order: masks, areas, boxes, predicted IoU
and stability scores, clicks, crops; and it must encode the same crops in the same order.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_focsam.engine.automatic import AutoMaskParams, AutomaticMaskGenerator, Crop
from napari_focsam.engine.interactive import BatchPrediction
from parity_fixtures import load_parity_fixture, parity_files

REPO = Path(__file__).resolve().parents[2]


def _recipe_module():
    path = REPO / "scripts" / "parity" / "amg_recipe.py"
    spec = importlib.util.spec_from_file_location("amg_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECIPE = _recipe_module()


class RecipePredictor:
    """A `BatchPredictor` on one crop whose batched decoding is the fixture's recipe."""

    mask_input_size = 2

    def __init__(self, crop: Crop, frame_hw: tuple[int, int], recipe: dict, log: dict) -> None:
        self.original_size = crop.shape
        self.origin = (crop.box[1], crop.box[0])  # (x0, y0)
        self.frame_hw = frame_hw
        self.recipe = recipe
        self.log = log

    def predict_batch(self, points, labels, *, multimask=True, mask_input=None,
                      min_region_area=0) -> BatchPrediction:
        points = np.asarray(points)
        assert points.shape[1:] == (1, 2) and np.all(np.asarray(labels) == 1)
        self.log["min_region_area"].add(int(min_region_area))
        codes = None if mask_input is None else np.asarray(mask_input)[:, 0]
        logits, iou, low = RECIPE.decode(points[:, 0, ::-1], self.original_size, multimask, codes,
                                         self.recipe, origin=self.origin, frame_hw=self.frame_hw)
        flat = torch.from_numpy(logits).flatten(0, 1)
        return BatchPrediction(torch.from_numpy(iou), torch.from_numpy(low),
                               lambda index: flat[index])


def _rle_to_mask(counts: torch.Tensor, size) -> np.ndarray:
    """Official uncompressed RLE (column-major runs, background first) -> bool mask."""
    h, w = size
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts.numpy()).reshape(w, h).T


def _params(fixture: dict) -> AutoMaskParams:
    return AutoMaskParams.from_official(fixture["params"], sam2=fixture["family"] == "sam2")


def _run(fixture: dict):
    frame_hw = tuple(fixture["frame_hw"])
    log = {"min_region_area": set(), "crops": []}

    def predictor_for(crop: Crop) -> RecipePredictor:
        log["crops"].append(crop)
        return RecipePredictor(crop, frame_hw, fixture["recipe"], log)

    masks = AutomaticMaskGenerator(_params(fixture)).generate(frame_hw, predictor_for)
    return masks, log


def test_amg_parity_records(amg_fixture):
    masks, _ = _run(amg_fixture)
    official = amg_fixture["records"]
    assert len(masks) == len(official)
    point_tol = 0.0 if amg_fixture["family"] == "sam1" else 1e-4  # sam2 keeps float32 clicks
    for k, (ours, ref) in enumerate(zip(masks, official, strict=True)):
        rec = ours.to_record()
        where = f"record {k} of {amg_fixture['path'].name}"
        np.testing.assert_array_equal(rec["segmentation"],
                                      _rle_to_mask(ref["rle_counts"], ref["rle_size"]), err_msg=where)
        assert rec["area"] == ref["area"], where
        assert rec["bbox"] == ref["bbox"], where
        assert rec["crop_box"] == ref["crop_box"], where
        assert rec["predicted_iou"] == ref["predicted_iou"], where
        assert rec["stability_score"] == ref["stability_score"], where
        np.testing.assert_allclose(rec["point_coords"], ref["point_coords"], rtol=0,
                                   atol=point_tol, err_msg=where)


def test_amg_parity_crops_and_batches(amg_fixture):
    _, log = _run(amg_fixture)
    encoded = [[c.box[1], c.box[0], *c.shape] for c in log["crops"]]  # (x0, y0, h, w)
    assert encoded == amg_fixture["crops_encoded"]
    params = _params(amg_fixture)
    if params.region_cleanup == "low_res":  # sam2: the clean-up belongs to the predictor
        assert log["min_region_area"] == {params.min_mask_region_area}
    else:
        assert log["min_region_area"] == {0}
    generator = AutomaticMaskGenerator(params)
    calls = amg_fixture["coverage"]["decode_calls"]
    assert generator.n_batches(generator.crops(tuple(amg_fixture["frame_hw"]))) == calls


def test_amg_parity_fixture_covers_the_filters(amg_fixture):
    """What the official run did with the recipe: masks dropped by every filter."""
    cov = amg_fixture["coverage"]
    assert cov["decoded"] > cov["after_iou"] > cov["after_stability"] > 0
    assert any(n_out < n_in for n_in, n_out in cov["nms"])
    if amg_fixture["params"].get("crop_n_layers", 0):
        assert cov["after_edge"] < cov["after_stability"]


@pytest.mark.parametrize("family", ["sam1", "sam2"])
def test_amg_parity_fixtures_cover_crops_and_clean_up(family):
    """Across the shipped fixtures of each family: crop layers, small-region clean-up (SAM 1),
    refinement with the mask input (SAM 2)."""
    files = [f for f in parity_files("amg") if f.name.startswith(f"amg_{family}_")]
    if not files:
        pytest.skip(f"no amg_{family}_*.pt fixture")
    data = [load_parity_fixture(f) for f in files]
    assert any(d["params"].get("crop_n_layers", 0) > 0
               and d["params"].get("crop_n_points_downscale_factor", 1) > 1 for d in data)
    if family == "sam1":
        assert any(d["coverage"]["regions_changed"] > 0 for d in data)
    else:
        assert any(d["params"].get("use_m2m") for d in data)
