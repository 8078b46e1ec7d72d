"""Record the ``amg_sam1_*.pt`` / ``amg_sam2_*.pt`` parity fixtures from the official generators.

Runs segment-anything 1.0's ``SamAutomaticMaskGenerator`` and sam2 1.1.0's
``SAM2AutomaticMaskGenerator`` with their batched decoder call replaced by the designed outputs
of ``scripts/parity/amg_recipe.py`` (``SamPredictor.predict_torch`` and
``SAM2ImagePredictor._predict``), and saves the parameters, the recipe and every official output
record. Everything else that runs is the official code: point grids, crops, batching, the IoU /
stability / crop-edge filters, box NMS within and across crops, small-region post-processing
(OpenCV), the records. The format is described in ``tests/parity/README.md``.

Run it in a scratch environment, never the project's (Python 3.11, ``torch==2.13.0`` CPU,
numpy, Pillow, ``opencv-python-headless``), with the official code unpacked::

    pip download --no-deps segment-anything==1.0 sam2==1.1.0
    unzip segment_anything-1.0-py3-none-any.whl -d /tmp/official/sam1
    tar xzf sam2-1.1.0.tar.gz -C /tmp/official/sam2src
    /tmp/amg_env/bin/python scripts/parity/record_amg.py --sam1 /tmp/official/sam1 \\
        --sam2 /tmp/official/sam2src/sam2-1.1.0 --out tests/parity

Stand-ins, in ``sys.modules`` of this process only, for what is not installed: torchvision
(its compiled ops need a matching CUDA build) -- ``nms`` / ``batched_nms`` / ``box_area``
written from torchvision's CPU kernel (stable descending sort, float32 IoU compared with the
float64 threshold; ``batched_nms`` refuses more than 1,000 boxes, where torchvision would switch
to an unstable sort), and identity ``Resize`` / ``Normalize`` / ``ToTensor`` that only get
constructed; hydra and tqdm, only imported. The predictors' ``set_image`` is replaced by a
stand-in that records the crop and sets the state the generators read (the image size, and for
SAM the resized size of ``ResizeLongestSide``): with designed outputs no encoder runs. The image
given to the generators codes each pixel's position ((x, y, 0)), so the stand-in learns where a
crop lies from its first pixel (the recipe's objects live in frame coordinates). No model
is built: the predictors get a stand-in with the attributes they read (input size 1024, device,
mask threshold 0).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import amg_recipe  # noqa: E402

logger = logging.getLogger("record_amg")

#: One fixture per case: (family, name, (h, w), official generator kwargs).
CASES = [
    ("sam1", "grid", (72, 96), {
        "points_per_side": 12, "points_per_batch": 50}),
    ("sam1", "crops", (90, 120), {
        "points_per_side": 10, "points_per_batch": 64, "crop_n_layers": 1,
        "crop_n_points_downscale_factor": 2, "min_mask_region_area": 12,
        "stability_score_thresh": 0.9}),
    ("sam2", "crops", (84, 112), {
        "points_per_side": 10, "points_per_batch": 40, "crop_n_layers": 1,
        "crop_n_points_downscale_factor": 2, "min_mask_region_area": 10}),
    ("sam2", "m2m", (64, 80), {
        "points_per_side": 8, "points_per_batch": 24, "multimask_output": False,
        "use_m2m": True, "pred_iou_thresh": 0.75, "stability_score_thresh": 0.85,
        "box_nms_thresh": 0.6}),
]


# ----------------------------------------------------------------------------- stand-ins


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


#: Boxes above which torchvision's ``batched_nms`` uses a per-class loop with an unstable sort.
_VANILLA_NUMEL = 4000


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's CPU ``nms`` kernel, written out."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    b = boxes.detach().cpu().float().numpy()
    order = torch.sort(scores.detach().cpu(), stable=True, descending=True).indices.numpy()
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)  # float32
    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    for a in range(len(order)):
        i = order[a]
        if suppressed[i]:
            continue
        keep.append(int(i))
        for c in range(a + 1, len(order)):
            j = order[c]
            if suppressed[j]:
                continue
            ww = max(np.float32(0), min(x2[i], x2[j]) - max(x1[i], x1[j]))
            hh = max(np.float32(0), min(y2[i], y2[j]) - max(y1[i], y1[j]))
            inter = np.float32(ww * hh)
            with np.errstate(invalid="ignore", divide="ignore"):
                ovr = np.float32(inter / np.float32(areas[i] + areas[j] - inter))
            if float(ovr) > float(iou_threshold):
                suppressed[j] = True
    return torch.tensor(keep, dtype=torch.int64)


def _batched_nms(boxes, scores, idxs, iou_threshold):
    """torchvision's ``batched_nms`` (coordinate trick; the per-class path is refused)."""
    if boxes.numel() > _VANILLA_NUMEL:
        raise RuntimeError("more than 1,000 boxes: torchvision would use its unstable path")
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return _nms(boxes + offsets[:, None], scores, iou_threshold)


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


class _Identity(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def install_stand_ins() -> list[str]:
    """Stand-ins for torchvision, hydra and tqdm where missing; returns their names."""
    installed = []
    if importlib.util.find_spec("torchvision") is None:
        def unused(*args, **kwargs):
            raise NotImplementedError("not needed to record the fixture")

        _module("torchvision")
        _module("torchvision.ops")
        _module("torchvision.ops.boxes", batched_nms=_batched_nms, box_area=_box_area, nms=_nms)
        _module("torchvision.transforms", Normalize=_Identity, Resize=_Identity,
                ToTensor=lambda: unused)
        _module("torchvision.transforms.functional", resize=unused, to_pil_image=unused)
        installed.append("torchvision")
    if importlib.util.find_spec("hydra") is None:
        class GlobalHydra:
            @staticmethod
            def instance():
                return types.SimpleNamespace(is_initialized=lambda: True)

        _module("hydra", initialize_config_module=lambda *a, **k: None)
        _module("hydra.core")
        _module("hydra.core.global_hydra", GlobalHydra=GlobalHydra)
        installed.append("hydra")
    if importlib.util.find_spec("tqdm") is None:
        _module("tqdm", tqdm=lambda it=None, *a, **k: it)
        installed.append("tqdm")
    return installed


class _Coverage:
    """Counts of what the official filters did (to show which paths a fixture exercises)."""

    def __init__(self) -> None:
        self.counts = {"decoded": 0, "after_iou": 0, "after_stability": 0, "after_edge": 0,
                       "nms": [], "regions_changed": 0,
                       "regions_checked": 0, "decode_calls": 0, "refine_calls": 0}


def _wrap_amg(amg_module, cov: _Coverage) -> None:
    """Count through the official helpers the generator module imported."""
    stab, edge, nms_fn = (amg_module.calculate_stability_score, amg_module.is_box_near_crop_edge,
                          amg_module.batched_nms)

    def calculate_stability_score(masks, *args):
        cov.counts["after_iou"] += len(masks)
        return stab(masks, *args)

    def is_box_near_crop_edge(boxes, *args, **kwargs):
        out = edge(boxes, *args, **kwargs)
        cov.counts["after_stability"] += len(boxes)
        cov.counts["after_edge"] += int((~out).sum())
        return out

    def batched_nms(boxes, scores, idxs, iou_threshold):
        keep = nms_fn(boxes, scores, idxs, iou_threshold)
        cov.counts["nms"].append([len(boxes), len(keep)])  # in call order
        return keep

    amg_module.calculate_stability_score = calculate_stability_score
    amg_module.is_box_near_crop_edge = is_box_near_crop_edge
    amg_module.batched_nms = batched_nms
    if hasattr(amg_module, "remove_small_regions"):
        regions = amg_module.remove_small_regions

        def remove_small_regions(mask, area, mode):
            out, changed = regions(mask, area, mode)
            cov.counts["regions_checked"] += 1
            cov.counts["regions_changed"] += int(changed)
            return out, changed

        amg_module.remove_small_regions = remove_small_regions


# ----------------------------------------------------------------------------- recording


def coded_image(hw: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 whose pixel (y, x) is (x, y, 0): a crop tells its origin by its
    first pixel (frames under 256 px)."""
    h, w = hw
    assert max(h, w) <= 256
    yy, xx = np.mgrid[:h, :w]
    return np.stack([xx, yy, np.zeros_like(xx)], axis=-1).astype(np.uint8)


def _designed(points_xy: np.ndarray, hw, multimask: bool, codes, cov: _Coverage, state: dict):
    logits, iou, low = amg_recipe.decode(points_xy, hw, multimask, codes, amg_recipe.RECIPE,
                                         origin=state["origin"], frame_hw=state["frame_hw"])
    cov.counts["decode_calls" if codes is None else "refine_calls"] += 1
    cov.counts["decoded"] += 0 if codes is not None else iou.size
    return torch.from_numpy(logits), torch.from_numpy(iou), torch.from_numpy(low)


def _sam1_generator(kwargs: dict, cov: _Coverage, crops: list, state: dict):
    from segment_anything import automatic_mask_generator as amg_module
    from segment_anything.utils.transforms import ResizeLongestSide

    _wrap_amg(amg_module, cov)
    model = types.SimpleNamespace(image_encoder=types.SimpleNamespace(img_size=1024),
                                  device=torch.device("cpu"), mask_threshold=0.0)
    gen = amg_module.SamAutomaticMaskGenerator(model, output_mode="uncompressed_rle", **kwargs)
    pred = gen.predictor

    def set_image(image, image_format="RGB"):
        pred.reset_image()
        pred.original_size = tuple(image.shape[:2])
        pred.input_size = ResizeLongestSide.get_preprocess_shape(*image.shape[:2], 1024)
        pred.features = torch.zeros(1)
        pred.is_image_set = True
        state["origin"] = (int(image[0, 0, 0]), int(image[0, 0, 1]))
        crops.append([*state["origin"], *image.shape[:2]])

    def predict_torch(point_coords, point_labels, boxes=None, mask_input=None,
                      multimask_output=True, return_logits=False):
        assert boxes is None and mask_input is None and return_logits and multimask_output
        assert bool((point_labels == 1).all()) and point_coords.shape[1] == 1
        (h, w), (nh, nw) = pred.original_size, pred.input_size
        xy = point_coords[:, 0].double().numpy() * np.array([w / nw, h / nh])
        return _designed(xy, (h, w), True, None, cov, state)

    pred.set_image = set_image
    pred.predict_torch = predict_torch
    return gen


def _sam2_generator(kwargs: dict, cov: _Coverage, crops: list, state: dict):
    from sam2 import automatic_mask_generator as amg_module

    _wrap_amg(amg_module, cov)
    model = types.SimpleNamespace(image_size=1024, device=torch.device("cpu"))
    gen = amg_module.SAM2AutomaticMaskGenerator(model, output_mode="uncompressed_rle", **kwargs)
    pred = gen.predictor

    def set_image(image):
        pred.reset_predictor()
        pred._orig_hw = [tuple(image.shape[:2])]
        pred._features = {"image_embed": torch.zeros(1)}
        pred._is_image_set = True
        state["origin"] = (int(image[0, 0, 0]), int(image[0, 0, 1]))
        crops.append([*state["origin"], *image.shape[:2]])

    def _predict(point_coords, point_labels, boxes=None, mask_input=None,
                 multimask_output=True, return_logits=False, img_idx=-1):
        assert boxes is None and return_logits and point_coords.shape[1] == 1
        h, w = pred._orig_hw[img_idx]
        xy = point_coords[:, 0].double().numpy() / 1024.0 * np.array([w, h])
        codes = None if mask_input is None else mask_input[:, 0].double().numpy()
        return _designed(xy, (h, w), multimask_output, codes, cov, state)

    pred.set_image = set_image
    pred._predict = _predict
    return gen


def record(family: str, name: str, hw: tuple[int, int], kwargs: dict, stand_ins: list[str]) -> dict:
    """Run one official generator with the designed outputs; the fixture's dict."""
    cov = _Coverage()
    crops: list = []
    make = _sam1_generator if family == "sam1" else _sam2_generator
    state = {"origin": (0, 0), "frame_hw": tuple(hw)}
    gen = make(kwargs, cov, crops, state)
    image = coded_image(hw)
    with torch.no_grad():
        anns = gen.generate(image)
    records = []
    for ann in anns:
        rle = ann["segmentation"]
        records.append({
            "rle_counts": torch.tensor(rle["counts"], dtype=torch.int64),
            "rle_size": list(rle["size"]),
            "area": int(ann["area"]),
            "bbox": [float(v) for v in ann["bbox"]],
            "predicted_iou": float(ann["predicted_iou"]),
            "point_coords": [[float(v) for v in p] for p in ann["point_coords"]],
            "stability_score": float(ann["stability_score"]),
            "crop_box": [float(v) for v in ann["crop_box"]],
        })
    version = "segment-anything 1.0" if family == "sam1" else "sam2 1.1.0"
    logger.info("%s/%s: %d records, coverage %s", family, name, len(records), cov.counts)
    return {
        "family": family,
        "official": version,
        "frame_hw": list(hw),
        "params": dict(kwargs),
        "recipe": amg_recipe.RECIPE,
        "crops_encoded": crops,
        "records": records,
        "coverage": cov.counts,
        "stand_ins": stand_ins,
        "torch": str(torch.__version__),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam1", type=Path, required=True,
                        help="folder holding the official segment_anything package")
    parser.add_argument("--sam2", type=Path, required=True,
                        help="folder holding the official sam2 package")
    parser.add_argument("--out", type=Path, default=HERE.parents[1] / "tests" / "parity")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stand_ins = install_stand_ins()
    import cv2  # noqa: F401  (the official small-region clean-up needs the real OpenCV)

    sys.path[:0] = [str(args.sam1), str(args.sam2)]
    torch.set_num_threads(1)
    for family, name, hw, kwargs in CASES:
        data = record(family, name, hw, kwargs, stand_ins)
        path = args.out / f"amg_{family}_{name}.pt"
        torch.save(data, path)
        logger.info("wrote %s (%.0f kB)", path, path.stat().st_size / 1024)


if __name__ == "__main__":
    main()
