"""Synthetic 2D + t movie of drifting, growing and dividing cells (see `_sample_data`)."""

from __future__ import annotations

import logging

import numpy as np
from skimage.filters import gaussian

from .common import LayerDataTuple, contrast_limits

logger = logging.getLogger(__name__)


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
        (images, {"name": "cell_timelapse", "colormap": "green", "axis_labels": ("t", "y", "x"),
                  "contrast_limits": contrast_limits(images)}, "image"),
        (labels, {"name": "cell_timelapse ground truth", "axis_labels": ("t", "y", "x")},
         "labels"),
        (tracks, {"name": "cell_timelapse ground truth tracks", "graph": graph, "tail_length": 8},
         "tracks"),
    ]
