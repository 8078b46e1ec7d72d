"""Record the ``tinyvit_*.pt`` parity fixture from the official MobileSAM code.

Builds a SAM with MobileSAM's TinyViT image encoder from the **official** code
(``mobile_sam`` from the ``mobilesam-mirror`` wheel), smaller than the released ``vit_t`` but
with the same structure, gives it random non-degenerate weights, runs the official
``SamPredictor`` on a fixed image and several prompt sets, and saves inputs, weights (official
key layout) and outputs. The format is described in ``tests/parity/README.md``.

Run it in a scratch environment, never the project's (Python 3.11, ``torch==2.13.0`` CPU,
numpy, Pillow), with the official code unpacked::

    pip download --no-deps mobilesam-mirror && unzip mobilesam_mirror-*.whl -d /tmp/official/mobilesam
    /tmp/tinyvit_env/bin/python scripts/parity/record_tinyvit.py \\
        --official /tmp/official/mobilesam --out tests/parity/tinyvit_dev.pt

The official code imports a few helpers from timm and torchvision. When those packages are not
installed, minimal stand-ins are put in ``sys.modules`` of this process only: ``DropPath``
(identity, drop rate 0), ``to_2tuple``, ``trunc_normal_``, ``register_model`` (identity), and
torchvision's ``to_pil_image`` / ``resize`` on PIL images (PIL bilinear, which is what
torchvision does for a PIL image), plus ``batched_nms`` / ``box_area`` that are only imported.

Two changes from the official ``build_sam_vit_t`` besides the sizes, both listed in the file's
``overrides``: the official TinyViT keeps the resolution in the PatchMerging whose output width
is 320, 448 or 576 (the last one for the released widths), so at smaller widths the last
merge's depthwise conv is given stride 1 explicitly; and the neck (fixed at 256 channels in the
official TinyViT) is rebuilt with the official layers at the decoder width. Everything that
runs is the official code.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger("record_tinyvit")

#: Official ``TinyViT`` constructor arguments of the fixture model (released: embed_dims
#: 64/128/160/320, depths 2/2/6/2, num_heads 2/4/5/10, num_classes 1000).
TINY_VIT = {
    "img_size": 1024, "in_chans": 3, "num_classes": 10,
    "embed_dims": [16, 24, 32, 40], "depths": [2, 2, 3, 2], "num_heads": [1, 2, 2, 2],
    "window_sizes": [7, 7, 14, 7], "mlp_ratio": 4.0, "drop_rate": 0.0, "drop_path_rate": 0.0,
    "use_checkpoint": False, "mbconv_expand_ratio": 4.0, "local_conv_size": 3,
    "layer_lr_decay": 0.8,
}
#: What the fixture model's config holds besides the official TinyViT arguments.
SAM_KWARGS = {
    "prompt_embed_dim": 16, "decoder_depth": 2, "decoder_num_heads": 2, "decoder_mlp_dim": 32,
    "iou_head_depth": 3, "iou_head_hidden_dim": 16, "mask_in_chans": 8,
    "num_multimask_outputs": 3, "image_size": 1024,
}
#: Constants of the official code, recorded so that the fixture holds every dimension.
FIXED = {"norm_eps": 1e-5, "neck_norm_eps": 1e-6, "bn_eps": 1e-5}
ORIG_HW = (150, 200)


# ----------------------------------------------------------------------------- stand-ins


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def install_stand_ins() -> list[str]:
    """Put minimal timm / torchvision stand-ins in ``sys.modules`` where the real ones are
    missing; returns the names of the stand-in packages."""
    import importlib.util

    installed = []
    if importlib.util.find_spec("timm") is None:

        class DropPath(nn.Module):
            def __init__(self, drop_prob=None):
                super().__init__()
                if drop_prob:
                    raise NotImplementedError("stand-in DropPath supports drop_prob 0 only")

            def forward(self, x):
                return x

        def to_2tuple(x):
            return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

        def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
            return nn.init.trunc_normal_(tensor, mean, std, a, b)

        _module("timm")
        _module("timm.models")
        _module("timm.models.layers", DropPath=DropPath, to_2tuple=to_2tuple,
                trunc_normal_=trunc_normal_)
        _module("timm.models.registry", register_model=lambda fn: fn)
        installed.append("timm")
    if importlib.util.find_spec("torchvision") is None:
        from PIL import Image

        def to_pil_image(array):
            return Image.fromarray(np.asarray(array))

        def resize(image, size):
            # torchvision on a PIL image with an (h, w) size: PIL bilinear to (w, h)
            return image.resize((int(size[1]), int(size[0])), Image.BILINEAR)

        def unused(*args, **kwargs):
            raise NotImplementedError("not needed to record the fixture")

        _module("torchvision")
        _module("torchvision.transforms")
        _module("torchvision.transforms.functional", resize=resize, to_pil_image=to_pil_image)
        _module("torchvision.ops")
        _module("torchvision.ops.boxes", batched_nms=unused, box_area=unused)
        installed.append("torchvision")
    return installed


# ----------------------------------------------------------------------------- the model


def build_official(ms):
    """The fixture model from the official classes (``ms`` = the imported ``mobile_sam``)."""
    from mobile_sam.modeling.tiny_vit_sam import LayerNorm2d

    mod = ms.modeling
    width = SAM_KWARGS["prompt_embed_dim"]
    encoder = mod.TinyViT(**TINY_VIT)
    # Override 1: the stride-1 merge the official code gives widths 320/448/576 only.
    strides = [1 if d in (320, 448, 576) else 2 for d in TINY_VIT["embed_dims"][1:]]
    if math.prod(strides) != 4:  # the official stage resolutions assume 256, 128, 64, 64
        encoder.layers[2].downsample.conv2.c.stride = (1, 1)
        strides[2] = 1
    # Override 2: the neck at the decoder width (official layers; 256 fixed officially).
    encoder.neck = nn.Sequential(
        nn.Conv2d(TINY_VIT["embed_dims"][-1], width, kernel_size=1, bias=False),
        LayerNorm2d(width),
        nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False),
        LayerNorm2d(width),
    )
    size = SAM_KWARGS["image_size"]
    sam = mod.Sam(
        image_encoder=encoder,
        prompt_encoder=mod.PromptEncoder(
            embed_dim=width, image_embedding_size=(size // 16, size // 16),
            input_image_size=(size, size), mask_in_chans=SAM_KWARGS["mask_in_chans"]),
        mask_decoder=mod.MaskDecoder(
            num_multimask_outputs=SAM_KWARGS["num_multimask_outputs"],
            transformer=mod.TwoWayTransformer(
                depth=SAM_KWARGS["decoder_depth"], embedding_dim=width,
                mlp_dim=SAM_KWARGS["decoder_mlp_dim"], num_heads=SAM_KWARGS["decoder_num_heads"]),
            transformer_dim=width, iou_head_depth=SAM_KWARGS["iou_head_depth"],
            iou_head_hidden_dim=SAM_KWARGS["iou_head_hidden_dim"]),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )
    overrides = [
        f"layers.2.downsample.conv2 stride 1 (official: only when the width is 320/448/576); "
        f"merge strides {strides}",
        f"neck width {width} (official TinyViT: 256), built from the official LayerNorm2d",
        "eval() called after the weights were set (MobileSAM README flow), so the cached "
        "attention-bias table holds them",
    ]
    return sam, strides, overrides


@torch.no_grad()
def randomise(model: nn.Module, seed: int) -> None:
    """Random weights that keep activations O(1) and exercise every parameter and buffer:
    BatchNorm statistics and scales away from identity, non-zero attention biases, LayerNorm
    scales and biases away from 1 / 0."""
    gen = torch.Generator().manual_seed(seed)

    def randn(t):
        return torch.randn(t.shape, generator=gen, dtype=t.dtype)

    def uniform(t, lo, hi):
        return lo + (hi - lo) * torch.rand(t.shape, generator=gen, dtype=t.dtype)

    for module in model.modules():
        if isinstance(module, nn.Embedding):
            continue  # point / token embeddings keep their official N(0, 1) initialisation
        for name, t in list(module.named_parameters(recurse=False)) + list(
                module.named_buffers(recurse=False)):
            if name in ("num_batches_tracked", "attention_bias_idxs", "ab",
                        "positional_encoding_gaussian_matrix"):
                continue
            if name == "running_var":
                t.copy_(uniform(t, 0.5, 1.5))
            elif name == "running_mean":
                t.copy_(0.1 * randn(t))
            elif isinstance(module, nn.BatchNorm2d) and name == "weight":
                t.copy_(uniform(t, 0.5, 1.5))
            elif name == "attention_biases":
                t.copy_(0.5 * randn(t))
            elif t.ndim == 1 and name == "weight":  # LayerNorm / LayerNorm2d scales
                t.copy_(1.0 + 0.1 * randn(t))
            elif t.ndim == 1 and name == "bias":
                t.copy_(0.1 * randn(t))
            elif name == "weight":  # Linear / Conv2d / ConvTranspose2d: unit gain
                t.copy_(randn(t) / math.sqrt(t[0].numel()))


# ----------------------------------------------------------------------------- inputs


def make_image(seed: int) -> np.ndarray:
    """``ORIG_HW`` RGB uint8: gradients, a few flat shapes and mild noise."""
    rng = np.random.default_rng(seed)
    h, w = ORIG_HW
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([80 + 100 * xx / w, 60 + 120 * yy / h, 150 - 60 * (xx + yy) / (h + w)], -1)
    img[((yy - 70) / 35) ** 2 + ((xx - 120) / 50) ** 2 < 1] = (220, 60, 40)
    img[20:60, 20:70] = (30, 170, 90)
    img[95:140, 140:190] = (40, 50, 200)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


#: Prompts in original pixels as the official predictor takes them: points (x, y), boxes xyxy.
CASES = [
    {"name": "one_point", "multimask": True, "points": [[120, 70]], "labels": [1]},
    {"name": "three_points", "multimask": False, "points": [[120, 70], [45, 40], [165, 118]],
     "labels": [1, 1, 0]},
    {"name": "box", "multimask": False, "box": [70, 35, 172, 108]},
    {"name": "box_and_points", "multimask": False, "box": [15, 15, 80, 68],
     "points": [[40, 38], [120, 70]], "labels": [1, 0]},
    {"name": "points_with_mask_input", "multimask": False,
     "points": [[120, 70], [45, 40], [165, 118]], "labels": [1, 1, 0],
     "mask_from": "three_points"},
]


def run_cases(predictor) -> list[dict]:
    """Every case through the official ``SamPredictor.predict``."""
    out, low_res_by_name = [], {}
    orig = predictor.original_size
    for spec in CASES:
        pts = None if "points" not in spec else np.asarray(spec["points"], dtype=np.float64)
        lab = None if "labels" not in spec else np.asarray(spec["labels"], dtype=np.int64)
        box = None if "box" not in spec else np.asarray(spec["box"], dtype=np.float64)
        mask, mask_view = low_res_by_name.get(spec.get("mask_from"), (None, None))
        masks, iou, low = predictor.predict(point_coords=pts, point_labels=lab, box=box,
                                            mask_input=mask, multimask_output=spec["multimask"])
        low_res = torch.from_numpy(low)[None].float()  # (1, K, 256, 256)
        best = int(np.argmax(iou))
        # (1, 256, 256) as the official API takes it; the saved mask_input is a view of the
        # saved logits, so torch.save stores those values once
        low_res_by_name[spec["name"]] = (low[best][None], low_res[:, best:best + 1])
        # The model-frame prompts exactly as predict() builds them.
        points = None
        if pts is not None:
            coords = torch.as_tensor(predictor.transform.apply_coords(pts, orig),
                                     dtype=torch.float)[None]
            points = (coords, torch.as_tensor(lab, dtype=torch.int)[None])
        boxes = None
        if box is not None:
            boxes = torch.as_tensor(predictor.transform.apply_boxes(box, orig),
                                    dtype=torch.float)[None, :].reshape(1, 4)
        out.append({
            "name": spec["name"], "multimask": spec["multimask"], "points": points,
            "boxes": boxes,
            "mask_input": mask_view,
            "points_orig": None if pts is None else (torch.from_numpy(pts), torch.from_numpy(lab)),
            "box_orig": None if box is None else torch.from_numpy(box),
            "low_res_logits": low_res,
            "iou": torch.from_numpy(iou)[None].float(),
            "masks_orig": torch.from_numpy(masks)[None],
        })
    return out


def check_non_degenerate(cases: list[dict]) -> None:
    for case in cases:
        logits = case["low_res_logits"]
        positive = float((logits > 0).float().mean())
        masks = float(case["masks_orig"].float().mean())
        logger.info("%-24s multimask=%-5s logits [%.2f, %.2f] positive %.2f, mask fraction %.2f, "
                    "iou %s", case["name"], case["multimask"], float(logits.min()),
                    float(logits.max()), positive, masks,
                    [round(v, 3) for v in case["iou"][0].tolist()])
        if not (0.02 < positive < 0.98 and 0.03 < masks < 0.97):
            raise SystemExit(f"degenerate outputs in case {case['name']}: {positive:.3f} of the "
                             f"logits positive, mask fraction {masks:.3f}; try another --seed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True,
                        help="folder holding the unpacked mobile_sam package")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    stand_ins = install_stand_ins()
    sys.path.insert(0, str(args.official))
    import mobile_sam as ms

    logger.info("official code: %s; stand-ins for %s", ms.__file__, stand_ins or "nothing")
    torch.manual_seed(args.seed)
    sam, strides, overrides = build_official(ms)
    randomise(sam, args.seed)
    sam.eval()  # after setting the weights: TinyViT's Attention caches its bias table here

    image = make_image(args.seed)
    predictor = ms.SamPredictor(sam)
    predictor.set_image(image)
    resized = predictor.transform.apply_image(image)
    with torch.no_grad():  # the same path by hand: the official model's own preprocessing
        x = torch.as_tensor(resized).permute(2, 0, 1)[None].contiguous()
        direct = sam.image_encoder(sam.preprocess(x))
    embeddings = predictor.features.detach().clone()
    assert torch.equal(direct, embeddings)
    logger.info("embeddings %s, std %.3f", tuple(embeddings.shape), float(embeddings.std()))
    cases = run_cases(predictor)
    check_non_degenerate(cases)

    released = ms.build_sam_vit_t()
    config = {"tiny_vit": {**TINY_VIT, "merge_strides": strides, **FIXED}, **SAM_KWARGS}
    fixture = {
        "kind": "tinyvit",
        "source": "mobilesam-mirror 1.0.0 (official MobileSAM code), torch "
                  f"{torch.__version__}, CPU fp32",
        "config": config,
        "overrides": overrides,
        "state_dict": {k: v.detach().clone() for k, v in sam.state_dict().items()},
        "image": torch.from_numpy(image),
        "image_hw": tuple(int(v) for v in predictor.input_size),
        "orig_hw": tuple(int(v) for v in predictor.original_size),
        "image_resized_sha256": hashlib.sha256(np.ascontiguousarray(resized).tobytes()).hexdigest(),
        "image_embeddings": embeddings,
        "cases": cases,
        "official_vit_t_shapes": {k: list(v.shape) for k, v in released.state_dict().items()},
        "official_vit_t_parameters": sum(p.numel() for p in released.parameters()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    logger.info("wrote %s (%.2f MB); %d tensors in the state_dict, released vit_t has %d "
                "parameters", args.out, args.out.stat().st_size / 2**20,
                len(fixture["state_dict"]), fixture["official_vit_t_parameters"])


if __name__ == "__main__":
    main()
