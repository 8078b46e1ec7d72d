"""Tiny synthetic benchmark folders and scripted predictors for the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def square(hw: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    """``(H, W)`` bool with a `size` x `size` square at (`top`, `left`)."""
    mask = np.zeros(hw, dtype=bool)
    mask[top:top + size, left:left + size] = True
    return mask


def image_with(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(H, W, 3)`` uint8 noise, brighter on `mask`."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 80, size=(*mask.shape, 3), dtype=np.uint8)
    img[mask] += 150
    return img


def save(path: Path, array: np.ndarray) -> Path:
    """Write an image / mask with PIL (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def grabcut_folder(root: Path, n: int = 3, hw: tuple[int, int] = (64, 64)) -> dict[str, np.ndarray]:
    """RITM GrabCut layout (``data_GT/*.bmp`` + ``boundary_GT/*.bmp``, 0 / 128 / 255): a square
    object per image with a 1-pixel unknown band around it. Returns the objects by name."""
    objects = {}
    for i in range(n):
        gt = square(hw, 12 + 4 * i, 10 + 6 * i, 24 + 2 * i)
        band = np.zeros(hw, dtype=bool)
        band[11 + 4 * i:13 + 4 * i + 24 + 2 * i + 1, 9 + 6 * i:11 + 6 * i + 24 + 2 * i + 1] = True
        band &= ~gt
        values = np.where(gt, 255, np.where(band, 128, 0)).astype(np.uint8)
        name = f"img{i}"
        save(root / "data_GT" / f"{name}.bmp", image_with(gt, i))
        save(root / "boundary_GT" / f"{name}.bmp", values)
        objects[name] = gt
    return objects


class Prediction:
    """What a click of a session returns (only ``masks`` is read)."""

    def __init__(self, mask: np.ndarray) -> None:
        self.masks = np.asarray(mask)[None]


class OraclePredictor:
    """Returns the ground truth after every click (and records the clicks); it is its own
    session."""

    def __init__(self, gt: np.ndarray) -> None:
        self.gt = gt
        self.clicks: list[tuple[int, int, bool]] = []

    def set_image(self, image):
        pass

    def start_session(self):
        return self

    def add_click(self, row, col, positive):
        self.clicks.append((row, col, positive))
        return Prediction(self.gt.copy())


class EmptyPredictor(OraclePredictor):
    """Never predicts anything."""

    def add_click(self, row, col, positive):
        self.clicks.append((row, col, positive))
        return Prediction(np.zeros_like(self.gt))


class ScriptedPredictor:
    """Returns `masks[k]` after click k (the last one repeated)."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks = masks
        self.calls = 0

    def set_image(self, image):
        self.calls = 0

    def start_session(self):
        return self

    def add_click(self, row, col, positive):
        mask = self.masks[min(self.calls, len(self.masks) - 1)]
        self.calls += 1
        return Prediction(mask)
