"""FocSAM's focus region: the expanded box of the coarse mask, and the embedding tokens in it.

Boxes are ``(left, up, right, bottom)`` integer pixels with ``right`` / ``bottom`` exclusive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_bbox(mask: torch.Tensor) -> torch.Tensor:
    """Bounding box of the true pixels of each mask; the whole canvas when a mask is empty.

    Parameters
    ----------
    mask : torch.Tensor
        ``... x H x W`` bool.

    Returns
    -------
    torch.Tensor
        ``... x 4`` int64 ``(left, up, right, bottom)``.
    """
    h, w = mask.shape[-2:]
    rows, cols = mask.any(dim=-1), mask.any(dim=-2)  # ... x H, ... x W
    row_idx = torch.arange(h, device=mask.device)
    col_idx = torch.arange(w, device=mask.device)
    up = torch.where(rows, row_idx, h).amin(dim=-1)
    bottom = torch.where(rows, row_idx + 1, 0).amax(dim=-1)
    left = torch.where(cols, col_idx, w).amin(dim=-1)
    right = torch.where(cols, col_idx + 1, 0).amax(dim=-1)
    box = torch.stack([left, up, right, bottom], dim=-1)
    empty = ~rows.any(dim=-1)
    whole = torch.tensor([0, 0, w, h], device=mask.device)
    return torch.where(empty[..., None], whole, box)


def expand_bbox(box: torch.Tensor, ratio: tuple[float, float],
                canvas_hw: tuple[int, int]) -> torch.Tensor:
    """Grow boxes about their centres, rounding half to even, clipped to the canvas.

    Same float32 arithmetic as the official ``expand_bbox`` so the result is bit-identical.

    Parameters
    ----------
    box : torch.Tensor
        ``... x 4`` int64 ``(left, up, right, bottom)`` with ``left < right``, ``up < bottom``.
    ratio : tuple of float
        ``(height, width)`` factors.
    canvas_hw : tuple of int
        Canvas ``(H, W)``.

    Returns
    -------
    torch.Tensor
        ``... x 4`` int64.
    """
    if bool((box[..., 0] >= box[..., 2]).any()) or bool((box[..., 1] >= box[..., 3]).any()):
        raise ValueError(f"degenerate box (left >= right or up >= bottom): {box.tolist()}")
    h_ratio, w_ratio = ratio
    height, width = canvas_hw
    left, up, right, bottom = box.unbind(-1)
    xc, yc = (left + right) / 2.0, (up + bottom) / 2.0  # float32
    left = torch.round(xc - w_ratio * (xc - left)).clip(0, None)
    right = torch.round(xc - w_ratio * (xc - right)).clip(None, width)
    up = torch.round(yc - h_ratio * (yc - up)).clip(0, None)
    bottom = torch.round(yc - h_ratio * (yc - bottom)).clip(None, height)
    return torch.stack([left, up, right, bottom], dim=-1).to(box.dtype)


def focus_box(coarse_logits: torch.Tensor, canvas_hw: tuple[int, int],
              expand_ratio: tuple[float, float]) -> torch.Tensor:
    """The focus box of coarse mask logits.

    Parameters
    ----------
    coarse_logits : torch.Tensor
        ``B x K x h x w`` low-resolution logits (K = 1 in FocSAM).
    canvas_hw : tuple of int
        ``(H, W)`` of the model input the logits cover (1024 x 1024).
    expand_ratio : tuple of float
        ``(height, width)`` expansion factors.

    Returns
    -------
    torch.Tensor
        ``B x K x 4`` int64 ``(left, up, right, bottom)`` on the canvas.
    """
    up = F.interpolate(coarse_logits.float(), tuple(canvas_hw), mode="bilinear",
                       align_corners=False)
    return expand_bbox(mask_bbox(up > 0), expand_ratio, canvas_hw)


def _bins(size: int, out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Start (inclusive) and end (exclusive) of the adaptive-pooling bins along one axis."""
    i = torch.arange(out, device=device)
    return (i * size) // out, ((i + 1) * size + out - 1) // out


def box_grid_mask(box: torch.Tensor, canvas_hw: tuple[int, int],
                  grid_hw: tuple[int, int]) -> torch.Tensor:
    """Tokens of a grid whose pooling cell touches the box.

    Equals ``F.adaptive_max_pool2d(box_mask, grid_hw)`` of the canvas-sized box mask, computed
    from the bin limits without building the canvas.

    Parameters
    ----------
    box : torch.Tensor
        ``B x K x 4`` int64 boxes on the canvas.
    canvas_hw, grid_hw : tuple of int
        Canvas ``(H, W)`` and grid ``(h, w)``.

    Returns
    -------
    torch.Tensor
        ``B x K x h x w`` float32 of 0 / 1.
    """
    (height, width), (gh, gw) = canvas_hw, grid_hw
    r0, r1 = _bins(height, gh, box.device)
    c0, c1 = _bins(width, gw, box.device)
    left, up, right, bottom = (v[..., None] for v in box.unbind(-1))
    rows = (up < r1) & (bottom > r0)  # B x K x h
    cols = (left < c1) & (right > c0)  # B x K x w
    return (rows[..., :, None] & cols[..., None, :]).float()


def box_mask(box: torch.Tensor, canvas_hw: tuple[int, int]) -> torch.Tensor:
    """Canvas-sized 0/1 mask of boxes, ``B x K x 4`` -> ``B x K x H x W`` float32."""
    height, width = canvas_hw
    rows = torch.arange(height, device=box.device)
    cols = torch.arange(width, device=box.device)
    left, up, right, bottom = (v[..., None] for v in box.unbind(-1))
    inside_r = (rows >= up) & (rows < bottom)
    inside_c = (cols >= left) & (cols < right)
    return (inside_r[..., :, None] & inside_c[..., None, :]).float()
