"""Synthetic sample data for napari's File › Open Sample menu.

The images are generated on the fly from a fixed seed, so they are identical on every call and
need no download. Only numpy and scikit-image are used here (no Qt, no napari).

- `synthetic_nuclei_2d` -- one 2D image of nuclei,
- `synthetic_cell_timelapse` -- a 2D + t movie of drifting, growing and dividing cells with
  ground-truth labels and a Cell Tracking Challenge style lineage,
- `synthetic_nuclei_volume` -- a 3D stack of ellipsoid nuclei with z attenuation.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from skimage.draw import ellipse
from skimage.filters import gaussian

__all__ = [
    "make_sample_cell_timelapse",
    "make_sample_nuclei_2d",
    "make_sample_nuclei_3d",
    "synthetic_cell_timelapse",
    "synthetic_nuclei_2d",
    "synthetic_nuclei_volume",
]

logger = logging.getLogger(__name__)

LayerDataTuple = tuple[np.ndarray, dict[str, Any], str]


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


# ---- time-lapse of dividing cells ------------------------------------------------------------

_GAP = 3.0  # minimum distance in pixels between two cells (ground-truth objects never touch)
_EDGE = 2.0  # minimum distance in pixels between a cell and the image border


def _ellipse_pixels(
    shape: tuple[int, int], cy: float, cx: float, ru: float, rv: float, angle: float, pad: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels of a rotated ellipse (grown by `pad`), clipped to `shape`.

    `ru` is the semi-axis along the direction ``(x, y) = (cos angle, sin angle)``, `rv` the one
    across it.
    """
    reach = max(ru, rv) + pad
    y0, y1 = max(int(np.floor(cy - reach)), 0), min(int(np.ceil(cy + reach)) + 1, shape[0])
    x0, x1 = max(int(np.floor(cx - reach)), 0), min(int(np.ceil(cx + reach)) + 1, shape[1])
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    cos, sin = np.cos(angle), np.sin(angle)
    u = dx * cos + dy * sin
    v = dy * cos - dx * sin
    inside = (u / (ru + pad)) ** 2 + (v / (rv + pad)) ** 2 <= 1.0
    return yy[inside], xx[inside]


class _Cells:
    """The cells of one frame: geometry per id and the label image they paint."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.frame = np.zeros(shape, dtype=np.uint16)
        self.cells: dict[int, dict[str, float]] = {}

    def fits(self, cell_id: int, cy: float, cx: float, ru: float, rv: float, angle: float) -> bool:
        """Inside the image (with a border) and `_GAP` away from every other cell."""
        reach = max(ru, rv) + _EDGE
        h, w = self.shape
        if not (reach <= cy <= h - 1 - reach and reach <= cx <= w - 1 - reach):
            return False
        rr, cc = _ellipse_pixels(self.shape, cy, cx, ru, rv, angle, pad=_GAP)
        found = self.frame[rr, cc]
        return bool(np.all((found == 0) | (found == cell_id)))

    def put(self, cell_id: int, **geometry: float) -> None:
        self.remove(cell_id)
        cell = self.cells.setdefault(cell_id, {})
        cell.update(geometry)
        rr, cc = _ellipse_pixels(self.shape, cell["cy"], cell["cx"], cell["ru"], cell["rv"], cell["angle"])
        self.frame[rr, cc] = cell_id

    def remove(self, cell_id: int) -> None:
        if cell_id in self.cells:
            self.frame[self.frame == cell_id] = 0

    def drop(self, cell_id: int) -> None:
        self.remove(cell_id)
        del self.cells[cell_id]


def _divide(cells: _Cells, mother: int, daughters: tuple[int, int], rng: np.random.Generator) -> bool:
    """Replace `mother` by two daughters side by side along its long axis; False if no room."""
    m = cells.cells[mother]
    ux, uy = np.cos(m["angle"]), np.sin(m["angle"])
    inner = (_GAP + 1.0) / 2.0  # half the distance between the two daughters
    draws = rng.uniform(0.9, 1.1, size=2), rng.uniform(11.0, 14.0, size=2), rng.uniform(0.65, 0.9, size=2)
    saved = dict(m)
    cells.drop(mother)
    for scale in (1.0, 0.85, 0.7):
        along = scale * (m["ru"] - inner) / 2.0  # daughter semi-axis along the mother's axis
        across = scale * 0.85 * m["rv"]
        offset = along + inner
        placed: list[int] = []
        for sign, d in zip((-1.0, 1.0), daughters, strict=True):
            geometry = {
                "cy": m["cy"] + sign * offset * uy, "cx": m["cx"] + sign * offset * ux,
                "ru": across, "rv": along, "angle": m["angle"] + np.pi / 2,
            }
            if not cells.fits(d, **geometry):
                break
            cells.put(d, **geometry)
            placed.append(d)
        if len(placed) == 2:
            break
        for d in placed:
            cells.drop(d)
    else:
        cells.put(mother, **saved)
        return False
    for k, (sign, d) in enumerate(zip((-1.0, 1.0), daughters, strict=True)):
        target_ru = draws[1][k]
        cells.cells[d].update(
            brightness=m["brightness"] * draws[0][k], target_ru=target_ru,
            target_rv=target_ru * draws[2][k], vy=sign * 0.8 * uy, vx=sign * 0.8 * ux,
        )
    return True


def synthetic_cell_timelapse(
    n_frames: int = 24,
    shape: tuple[int, int] = (192, 256),
    n_cells: int = 6,
    seed: int = 0,
    *,
    n_divisions: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a fluorescence time-lapse of drifting, growing and dividing cells.

    Cells are smooth ellipses with a random persistent drift, slow rotation and growth. A move
    that would bring a cell within 3 pixels of another one or 2 pixels of the image border is
    rejected (the cell stays put), so the ground-truth objects never touch and never leave the image.
    `n_divisions` cells divide: the mother elongates over the frames before, its track ends,
    and in the next frame two daughters with new ids appear side by side where it was (along
    its long axis) and drift apart. Each frame is blurred, put on a smooth background with
    mild photobleaching and corrupted by Poisson-like noise.

    Parameters
    ----------
    n_frames : int
        Number of frames ``T``; at least 4 when there are divisions.
    shape : tuple of int
        Frame shape ``(H, W)``.
    n_cells : int
        Number of cells in the first frame.
    seed : int
        Seed of the random generator; equal arguments give equal outputs.
    n_divisions : int
        Number of cells that divide (each at most once), at frames drawn from the middle half
        of the movie.

    Returns
    -------
    images : numpy.ndarray
        ``T x H x W`` uint16 fluorescence movie.
    labels : numpy.ndarray
        ``T x H x W`` uint16 ground truth. Cells of the first frame have ids ``1 ... n_cells``;
        daughters get the next ids in order of division. An id is present in one contiguous
        run of frames.
    lineage : numpy.ndarray
        ``N x 4`` int64 rows ``(label_id, begin_frame, end_frame, parent_id)`` sorted by id,
        as in a Cell Tracking Challenge ``man_track.txt`` (``parent_id`` 0: no parent).

    Raises
    ------
    ValueError
        If ``n_divisions > n_cells``, or there are divisions and ``n_frames < 4``.
    RuntimeError
        If the cells do not fit into `shape`, or a division finds no room until the last frame.
    """
    from napari_focsam.tracking import TrackTable

    if n_divisions > n_cells:
        raise ValueError(f"n_divisions ({n_divisions}) must not exceed n_cells ({n_cells})")
    if n_divisions and n_frames < 4:
        raise ValueError(f"dividing cells need at least 4 frames, got {n_frames}")
    rng = np.random.default_rng(seed)
    h, w = shape
    cells = _Cells(shape)
    for _ in range(5000):
        if len(cells.cells) == n_cells:
            break
        ru = rng.uniform(11.0, 14.0)
        geometry = {"ru": ru, "rv": ru * rng.uniform(0.65, 0.9), "angle": rng.uniform(-np.pi, np.pi)}
        reach = ru + _EDGE
        geometry["cy"] = rng.uniform(reach, h - 1 - reach)
        geometry["cx"] = rng.uniform(reach, w - 1 - reach)
        cell_id = len(cells.cells) + 1
        if cells.fits(cell_id, **geometry):
            cells.put(cell_id, **geometry)
            cells.cells[cell_id].update(brightness=rng.uniform(700.0, 1500.0), target_ru=ru,
                                        target_rv=geometry["rv"], vy=0.0, vx=0.0)
    if len(cells.cells) < n_cells:
        raise RuntimeError(f"could only place {len(cells.cells)} of {n_cells} cells in {shape}")

    lo = max(2, n_frames // 4)
    hi = max(lo + 1, n_frames - n_frames // 4)
    mothers = rng.choice(np.arange(1, n_cells + 1), size=n_divisions, replace=False)
    frames = rng.choice(np.arange(lo, hi), size=n_divisions, replace=hi - lo < n_divisions)
    schedule = {int(m): int(f) for m, f in zip(mothers, frames, strict=True)}
    parents: dict[int, int] = {}
    next_id = n_cells + 1

    labels = np.zeros((n_frames, h, w), dtype=np.uint16)
    brightness: list[np.ndarray] = []  # per frame: brightness of each id
    for t in range(n_frames):
        born: list[int] = []
        if t > 0:
            for mother in sorted(m for m, f in schedule.items() if f == t):
                daughters = (next_id, next_id + 1)
                if _divide(cells, mother, daughters, rng):
                    next_id += 2
                    parents.update({d: mother for d in daughters})
                    born.extend(daughters)
                    del schedule[mother]
                elif t + 1 < n_frames:
                    schedule[mother] = t + 1  # no room yet: try again in the next frame
                else:
                    raise RuntimeError(f"cell {mother} found no room to divide")
            for cell_id in rng.permutation(sorted(cells.cells)).tolist():
                if cell_id not in born:  # daughters start exactly where the mother was
                    _step(cells, cell_id, rng, elongate=0 < schedule.get(cell_id, -99) - t <= 5)
        labels[t] = cells.frame
        lut = np.zeros(next_id, dtype=np.float64)
        for cell_id, cell in cells.cells.items():
            lut[cell_id] = cell["brightness"]
        brightness.append(lut)

    table = TrackTable.from_labels(labels)
    table.parents.update(parents)
    table.validate()
    images = _render_timelapse(labels, brightness, rng)
    logger.debug("cell time-lapse: %d frames, %d tracks, divisions %s", n_frames, len(table), parents)
    return images, labels, table.to_rows()


def _step(cells: _Cells, cell_id: int, rng: np.random.Generator, *, elongate: bool) -> None:
    """Move, turn and grow one cell if it stays clear of the others and of the border."""
    cell = cells.cells[cell_id]
    kick = rng.normal(0.0, 0.8, size=2)
    turn = rng.normal(0.0, 0.04)
    vy, vx = 0.7 * cell["vy"] + kick[0], 0.7 * cell["vx"] + kick[1]
    target_ru = cell["target_ru"] * (1.4 if elongate else 1.0)
    ru = min(cell["ru"] + (1.0 if elongate else 0.5), max(target_ru, cell["ru"]))
    rv = min(cell["rv"] + 0.5, max(cell["target_rv"], cell["rv"]))
    moved = {"cy": cell["cy"] + vy, "cx": cell["cx"] + vx, "ru": ru, "rv": rv, "angle": cell["angle"] + turn}
    grown = {"cy": cell["cy"], "cx": cell["cx"], "ru": ru, "rv": rv, "angle": cell["angle"]}
    if cells.fits(cell_id, **moved):
        cells.put(cell_id, **moved)
        cell.update(vy=vy, vx=vx)
    else:
        if cells.fits(cell_id, **grown):
            cells.put(cell_id, **grown)
        cell.update(vy=0.0, vx=0.0)


def _render_timelapse(
    labels: np.ndarray, brightness: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """Fluorescence movie of a ``T x H x W`` label stack; `brightness[t][id]` per cell."""
    n_frames, h, w = labels.shape
    # Two fixed texture fields mixed with a slowly turning phase: smooth in time, unit variance.
    fields = []
    for _ in range(2):
        field = gaussian(rng.standard_normal((h, w)), sigma=2.0)
        fields.append((field - field.mean()) / field.std())
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    background = 100.0 + 40.0 * xx + 25.0 * yy
    noise = rng.standard_normal(labels.shape)
    images = np.empty(labels.shape, dtype=np.uint16)
    for t in range(n_frames):
        phase = 0.15 * t
        texture = np.cos(phase) * fields[0] + np.sin(phase) * fields[1]
        bleach = np.exp(-0.01 * t)
        signal = brightness[t][labels[t]] * (1.0 + 0.15 * texture) * bleach
        expected = gaussian(signal, sigma=1.5, preserve_range=True) + background
        noisy = expected + np.sqrt(expected) * noise[t]
        images[t] = np.clip(np.rint(noisy), 0, np.iinfo(np.uint16).max)
    return images


def make_sample_cell_timelapse() -> list[LayerDataTuple]:
    """Synthetic time-lapse of dividing cells, its ground truth and ground-truth tracks.

    Returns
    -------
    list of tuple
        ``[(images, {"name": "cell_timelapse", ...}, "image"),
        (labels, {"name": "cell_timelapse ground truth"}, "labels"),
        (tracks, {"name": "cell_timelapse ground truth tracks", "graph": graph}, "tracks")]``:
        24 x 192 x 256 uint16 images and labels, ``N x 4`` ``[track_id, t, y, x]`` centroid
        tracks and the lineage graph ``{daughter: [mother]}``.
    """
    from napari_focsam.tracking import tracks_from_labels

    images, labels, lineage = synthetic_cell_timelapse()
    tracks, graph = tracks_from_labels(labels, lineage)
    return [
        (images, {"name": "cell_timelapse", "colormap": "green",
                  "contrast_limits": _contrast_limits(images)}, "image"),
        (labels, {"name": "cell_timelapse ground truth"}, "labels"),
        (tracks, {"name": "cell_timelapse ground truth tracks", "graph": graph, "tail_length": 8},
         "tracks"),
    ]


def _contrast_limits(image: np.ndarray) -> list[float]:
    low, high = np.percentile(image, [0.5, 99.8])
    return [float(low), float(high)]


# ---- 3D nuclei ---------------------------------------------------------------------------------


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
        (volume, {"name": "nuclei_3d", "colormap": "gray",
                  "contrast_limits": _contrast_limits(volume)}, "image"),
        (labels, {"name": "nuclei_3d ground truth"}, "labels"),
    ]
