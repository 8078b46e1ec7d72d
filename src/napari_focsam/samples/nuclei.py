"""The synthetic 2D nuclei sample: one fluorescence image of nuclei with its labels."""

from __future__ import annotations

import numpy as np
from skimage.draw import ellipse
from skimage.filters import gaussian

from .common import LayerDataTuple

__all__ = ["make_sample_nuclei_2d", "synthetic_nuclei_2d"]

def synthetic_nuclei_2d(
    shape: tuple[int, int] = (256, 256),
    *,
    n_nuclei: int = 20,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a synthetic fluorescence image of non-touching nuclei.

    Each nucleus is a rotated ellipse with its own brightness and a smooth intra-nuclear
    texture. The scene is blurred (optics), put on a smooth background and corrupted by
    signal-dependent (Poisson-like) noise.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)``.
    n_nuclei : int
        Number of nuclei to place.
    seed : int
        Seed of the random generator; equal arguments give equal outputs.

    Returns
    -------
    image : numpy.ndarray
        ``H x W`` uint16 fluorescence image.
    labels : numpy.ndarray
        ``H x W`` uint16 ground truth, nucleus ``i`` has value ``i`` (1 ... ``n_nuclei``),
        background 0.

    Raises
    ------
    RuntimeError
        If ``n_nuclei`` non-touching nuclei do not fit into ``shape``.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    labels = np.zeros(shape, dtype=np.uint16)
    # Grown by a margin so that nuclei never touch: each ground-truth object is one region.
    occupied = np.zeros(shape, dtype=bool)
    signal = np.zeros(shape, dtype=np.float64)

    # Smooth texture field shared by all nuclei, zero mean and unit standard deviation.
    texture = gaussian(rng.standard_normal(shape), sigma=2.0)
    texture = (texture - texture.mean()) / texture.std()

    placed = 0
    for _ in range(2000):
        if placed == n_nuclei:
            break
        r_major = rng.uniform(9.0, 16.0)
        r_minor = r_major * rng.uniform(0.6, 0.95)
        angle = rng.uniform(-np.pi, np.pi)
        margin = r_major + 2.0
        cy = rng.uniform(margin, h - margin)
        cx = rng.uniform(margin, w - margin)
        rr, cc = ellipse(cy, cx, r_minor, r_major, shape=shape, rotation=angle)
        rr_pad, cc_pad = ellipse(cy, cx, r_minor + 3, r_major + 3, shape=shape, rotation=angle)
        if occupied[rr_pad, cc_pad].any():
            continue
        placed += 1
        occupied[rr_pad, cc_pad] = True
        labels[rr, cc] = placed
        brightness = rng.uniform(600.0, 1600.0)
        signal[rr, cc] = brightness * (1.0 + 0.2 * texture[rr, cc])
    if placed < n_nuclei:
        raise RuntimeError(f"could only place {placed} of {n_nuclei} nuclei in {shape}")

    blurred = gaussian(signal, sigma=1.5, preserve_range=True)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    background = 100.0 + 40.0 * xx + 25.0 * yy
    expected = blurred + background
    # Gaussian approximation of Poisson noise (variance = mean); it uses a fixed number of
    # random draws, so tiny floating-point differences upstream cannot reshuffle the noise.
    noisy = expected + np.sqrt(expected) * rng.standard_normal(shape)
    image = np.clip(np.rint(noisy), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return image, labels


def make_sample_nuclei_2d() -> list[LayerDataTuple]:
    """Synthetic 2D nuclei image and its ground truth, as napari layer data.

    Returns
    -------
    list of tuple
        ``[(image, {"name": "nuclei_2d"}, "image"),
        (labels, {"name": "nuclei_2d ground truth"}, "labels")]`` with a 256 x 256 uint16
        image and 256 x 256 uint16 labels (20 nuclei).
    """
    image, labels = synthetic_nuclei_2d()
    return [
        (image, {"name": "nuclei_2d"}, "image"),
        (labels, {"name": "nuclei_2d ground truth"}, "labels"),
    ]
