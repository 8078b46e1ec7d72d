"""Clean-up of small connected regions of masks (8-connectivity, scipy).

Two rules of the official automatic mask generators, without OpenCV or a CUDA kernel:

- `remove_small_regions` (segment-anything's post-processing of final masks): background
  components (holes) smaller than an area are filled, then foreground components (islands)
  smaller than it are removed, keeping the largest when all are smaller;
- `clean_low_res_logits` (SAM 2's image predictor, before the logits are upscaled): background
  components of at most an area become foreground and foreground components of at most it
  become background, both decided on the logits as given.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

__all__ = ["REGION_MODES", "clean_low_res_logits", "remove_small_regions"]

#: ``remove_small_regions`` modes: fill small background regions, or drop small foreground ones.
REGION_MODES = ("holes", "islands")
#: Logit offset (from the threshold) given to pixels that SAM 2's clean-up flips.
FLIP_LOGIT = 10.0
_EIGHT = np.ones((3, 3), dtype=bool)


def remove_small_regions(mask: np.ndarray, area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill small holes of, or remove small islands from, a mask.

    Parameters
    ----------
    mask : np.ndarray
        ``(H, W)`` bool.
    area : float
        Regions of fewer pixels than this are small.
    mode : {"holes", "islands"}
        ``holes``: small background components become foreground (the outer background too
        when it is small). ``islands``: small foreground components are removed; when every
        component is small, the largest stays (the first in raster order on a tie).

    Returns
    -------
    mask : np.ndarray
        ``(H, W)`` bool (`mask` itself when unchanged).
    changed : bool
        Whether any region was small (also True when only the largest, kept, island is).
    """
    if mode not in REGION_MODES:
        raise ValueError(f"mode must be one of {REGION_MODES}, got {mode!r}")
    mask = np.asarray(mask, dtype=bool)
    holes = mode == "holes"
    regions, n = ndimage.label(~mask if holes else mask, structure=_EIGHT)
    sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]  # (n,) component areas
    small = sizes < area
    if not small.any():
        return mask, False
    if holes:
        return mask | np.concatenate([[False], small])[regions], True
    keep = ~small
    if not keep.any():
        keep[int(np.argmax(sizes))] = True
    table = np.concatenate([[False], keep])
    return table[regions], True


def _component_areas(planes: np.ndarray) -> np.ndarray:
    """``(n, H, W)`` bool -> ``(n, H, W)`` int64 area of each pixel's 8-connected component
    (0 outside the foreground)."""
    out = np.zeros(planes.shape, dtype=np.int64)
    for k, plane in enumerate(planes):
        regions, n = ndimage.label(plane, structure=_EIGHT)
        if n:
            sizes = np.bincount(regions.ravel(), minlength=n + 1)
            sizes[0] = 0
            out[k] = sizes[regions]
    return out


def clean_low_res_logits(logits: torch.Tensor, max_hole_area: int, max_sprinkle_area: int,
                         threshold: float = 0.0) -> torch.Tensor:
    """SAM 2's small-hole and small-sprinkle removal on low-resolution mask logits.

    Parameters
    ----------
    logits : torch.Tensor
        ``(..., M, M)`` float logits (each ``M x M`` plane is one mask).
    max_hole_area : int
        Background components (logits ``<= threshold``) of at most this many pixels get
        ``threshold + 10``; 0 disables.
    max_sprinkle_area : int
        Foreground components (logits ``> threshold``) of at most this many pixels get
        ``threshold - 10``; 0 disables.
    threshold : float
        Mask threshold.

    Returns
    -------
    torch.Tensor
        Same shape, float32 (a new tensor).
    """
    out = logits.float().clone()
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return out
    planes = out.detach().reshape(-1, *out.shape[-2:]).cpu().numpy().copy()
    flat = out.view(-1, *out.shape[-2:])
    for max_area, select, value in ((max_hole_area, planes <= threshold, threshold + FLIP_LOGIT),
                                    (max_sprinkle_area, planes > threshold,
                                     threshold - FLIP_LOGIT)):
        if max_area <= 0:
            continue
        areas = _component_areas(select)
        flip = torch.from_numpy((areas > 0) & (areas <= max_area)).to(out.device)
        flat[flip] = value
    return out
