"""Small-hole filling of mask logits on the CPU (SAM 2's video post-processing).

The official SAM 2 predictor fills background holes of the low-resolution logits with a CUDA
connected-components kernel: a connected region (8-connectivity) of pixels with logits ``<= 0``
whose area is at most ``max_area`` gets the logit 0.1. This is the same rule with
`scipy.ndimage.label`, so it runs anywhere.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

__all__ = ["HOLE_FILL_LOGIT", "fill_small_holes"]

#: Logit given to filled pixels (slightly foreground), as in the official code.
HOLE_FILL_LOGIT = 0.1
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def fill_small_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Fill background components of at most `max_area` pixels with `HOLE_FILL_LOGIT`.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, 1, H, W)`` float mask logits; pixels ``<= 0`` are background.
    max_area : int
        Largest component area (pixels) that counts as a hole; must be positive.

    Returns
    -------
    torch.Tensor
        ``(B, 1, H, W)``, a new tensor (the input is not modified).
    """
    if max_area <= 0:
        raise ValueError(f"max_area must be positive, got {max_area}")
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits must be (B, 1, H, W), got {tuple(logits.shape)}")
    background = (logits <= 0).squeeze(1).cpu().numpy()
    fill = np.zeros_like(background)
    for b, plane in enumerate(background):
        if not plane.any():
            continue
        labels, count = ndimage.label(plane, structure=_EIGHT_CONNECTED)
        if count == 0:
            continue
        areas = np.bincount(labels.ravel())
        small = areas <= max_area
        small[0] = False  # label 0 is the foreground
        fill[b] = small[labels]
    if not fill.any():
        return logits.clone()
    mask = torch.from_numpy(fill).to(logits.device)[:, None]
    return torch.where(mask, torch.as_tensor(HOLE_FILL_LOGIT, dtype=logits.dtype), logits)
