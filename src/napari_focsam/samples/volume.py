"""Synthetic 3D stack of ellipsoid nuclei with z attenuation (see `_sample_data`)."""

from __future__ import annotations

import numpy as np
from skimage.filters import gaussian

from .common import LayerDataTuple, contrast_limits


def synthetic_nuclei_volume(
    shape: tuple[int, int, int] = (32, 128, 128),
    n_nuclei: int = 12,
    seed: int = 0,
    *,
    attenuation: float = 0.35,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a synthetic fluorescence z-stack of non-touching ellipsoid nuclei.

    Voxels are anisotropic (z step about twice the pixel size), so nuclei are flatter in z
    (voxel units) than in y / x. Each nucleus has its own brightness and a smooth texture; the
    stack is blurred with a z-elongated PSF, dimmed linearly with depth (by `attenuation` at
    the last plane), put on a smooth background and corrupted by Poisson-like noise.

    Parameters
    ----------
    shape : tuple of int
        Stack shape ``(Z, Y, X)``.
    n_nuclei : int
        Number of nuclei to place.
    seed : int
        Seed of the random generator; equal arguments give equal outputs.
    attenuation : float
        Fraction of the signal lost at the last plane (0 at the first), in ``[0, 1)``. It does
        not change the scene nor the noise draws, only the intensities.

    Returns
    -------
    volume : numpy.ndarray
        ``Z x Y x X`` uint16 fluorescence stack.
    labels : numpy.ndarray
        ``Z x Y x X`` uint16 ground truth, nucleus ``i`` has value ``i`` (1 ... `n_nuclei`),
        background 0.

    Raises
    ------
    ValueError
        If `attenuation` is not in ``[0, 1)`` or `shape` is too small for one nucleus.
    RuntimeError
        If `n_nuclei` non-touching nuclei do not fit into `shape`.
    """
    if not 0.0 <= attenuation < 1.0:
        raise ValueError(f"attenuation must be in [0, 1), got {attenuation}")
    depth, h, w = shape
    if depth < 16 or min(h, w) < 32:
        raise ValueError(f"shape {tuple(shape)} is too small for nuclei of 7-12 voxels in z and "
                         "16-26 pixels across: use at least (16, 32, 32)")
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint16)
    signal = np.zeros(shape, dtype=np.float64)
    texture = gaussian(rng.standard_normal(shape), sigma=(1.0, 2.0, 2.0))
    texture = (texture - texture.mean()) / texture.std()
    gap_z, gap_xy = 1.5, 3.0  # nuclei stay this far apart (voxels), so they never touch

    placed = 0
    for _ in range(5000):
        if placed == n_nuclei:
            break
        ru = rng.uniform(8.0, 13.0)
        rv = ru * rng.uniform(0.7, 0.95)
        rz = rng.uniform(3.5, 6.0)
        angle = rng.uniform(-np.pi, np.pi)
        cz = rng.uniform(rz + 1.0, depth - 2.0 - rz)
        cy = rng.uniform(ru + 1.0, h - 2.0 - ru)
        cx = rng.uniform(ru + 1.0, w - 2.0 - ru)
        box = tuple(
            slice(max(int(np.floor(c - r - g)), 0), min(int(np.ceil(c + r + g)) + 1, n))
            for c, r, g, n in ((cz, rz, gap_z, depth), (cy, ru, gap_xy, h), (cx, ru, gap_xy, w))
        )
        zz, yy, xx = np.mgrid[box]
        dz, dy, dx = zz - cz, yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = dy * np.cos(angle) - dx * np.sin(angle)
        padded = (dz / (rz + gap_z)) ** 2 + (u / (ru + gap_xy)) ** 2 + (v / (rv + gap_xy)) ** 2 <= 1.0
        if labels[box][padded].any():
            continue
        inside = (dz / rz) ** 2 + (u / ru) ** 2 + (v / rv) ** 2 <= 1.0
        placed += 1
        labels[box][inside] = placed
        brightness = rng.uniform(700.0, 1500.0)
        signal[box][inside] = brightness * (1.0 + 0.2 * texture[box][inside])
    if placed < n_nuclei:
        raise RuntimeError(f"could only place {placed} of {n_nuclei} nuclei in {shape}")

    dimming = 1.0 - attenuation * np.arange(depth) / max(depth - 1, 1)
    blurred = gaussian(signal, sigma=(1.5, 1.2, 1.2), preserve_range=True) * dimming[:, None, None]
    zz, yy, xx = np.mgrid[0:depth, 0:h, 0:w]
    background = 100.0 + 30.0 * xx / w + 20.0 * yy / h - 10.0 * zz / max(depth, 1)
    expected = blurred + background
    noisy = expected + np.sqrt(expected) * rng.standard_normal(shape)
    volume = np.clip(np.rint(noisy), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return volume, labels


def make_sample_nuclei_3d() -> list[LayerDataTuple]:
    """Synthetic 3D nuclei stack and its ground truth, as napari layer data.

    Returns
    -------
    list of tuple
        ``[(volume, {"name": "nuclei_3d", ...}, "image"),
        (labels, {"name": "nuclei_3d ground truth"}, "labels")]`` with a 32 x 128 x 128 uint16
        stack and uint16 labels (12 nuclei).
    """
    volume, labels = synthetic_nuclei_volume()
    return [
        (volume, {"name": "nuclei_3d", "colormap": "gray", "axis_labels": ("z", "y", "x"),
                  "contrast_limits": contrast_limits(volume)}, "image"),
        (labels, {"name": "nuclei_3d ground truth", "axis_labels": ("z", "y", "x")}, "labels"),
    ]
