"""The tiny SAM 2 the propagation tests share: random weights where every object is present
and mask logits span a few units of both signs (so masks are neither empty nor full)."""

from __future__ import annotations

import torch

from napari_focsam.models.sam2.config import SAM2_CONFIGS
from napari_focsam.models.sam2.model import build_sam2


def present_tiny_sam2(image_size: int = 128, seed: int = 0):
    """``sam2_test_tiny`` at `image_size`, seeded, eval-ready (no grad needed)."""
    torch.manual_seed(seed)
    net = build_sam2(SAM2_CONFIGS["sam2_test_tiny"].replace(image_size=image_size))
    dec = net.sam_mask_decoder
    with torch.no_grad():
        dec.pred_obj_score_head.layers[-1].bias += 10.0  # every object present
        for mlp in dec.output_hypernetworks_mlps:  # logits of a few units, both signs
            mlp.layers[-1].weight *= 30.0
            mlp.layers[-1].bias.mul_(30.0).add_(1.5)
    return net
