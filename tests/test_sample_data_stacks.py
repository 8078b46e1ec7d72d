"""The synthetic time-lapse (dividing cells) and 3D nuclei samples, and their files in sample_data/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.measure import label as connected_components

from napari_focsam.samples import (
    make_sample_cell_timelapse,
    make_sample_nuclei_3d,
    synthetic_cell_timelapse,
    synthetic_nuclei_volume,
)

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"
REGENERATE = "regenerate with: python sample_data/make_samples.py"


@pytest.fixture(scope="module")
def timelapse():
    return synthetic_cell_timelapse()


@pytest.fixture(scope="module")
def volume():
    return synthetic_nuclei_volume()


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


# ---- time-lapse ------------------------------------------------------------------------------


def test_timelapse_shapes_and_dtypes(timelapse):
    images, labels, lineage = timelapse
    assert images.shape == labels.shape == (24, 192, 256)
    assert images.dtype == labels.dtype == np.uint16
    assert lineage.dtype == np.int64 and lineage.ndim == 2 and lineage.shape[1] == 4
    np.testing.assert_array_equal(lineage[:, 0], np.unique(labels)[1:])


def test_timelapse_is_deterministic(timelapse):
    again = synthetic_cell_timelapse()
    for a, b in zip(timelapse, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_timelapse_seed_changes_the_scene(timelapse):
    _, labels_1, _ = synthetic_cell_timelapse(n_frames=6, seed=1)
    assert not np.array_equal(timelapse[1][:6], labels_1)


def test_timelapse_lineage_matches_labels(timelapse):
    _, labels, lineage = timelapse
    for label_id, begin, end, _ in lineage:
        present = np.flatnonzero((labels == label_id).any(axis=(1, 2)))
        # one contiguous run per id, exactly the row's begin ... end
        np.testing.assert_array_equal(present, np.arange(begin, end + 1), err_msg=str(label_id))
    assert set(lineage[lineage[:, 3] == 0, 0]) == set(range(1, 7))  # first frame: cells 1 ... 6
    np.testing.assert_array_equal(np.unique(labels[0])[1:], np.arange(1, 7))


def test_timelapse_divisions(timelapse):
    _, labels, lineage = timelapse
    rows = {int(r[0]): r for r in lineage}
    daughters: dict[int, list[int]] = {}
    for label_id, _, _, parent in lineage:
        if parent:
            daughters.setdefault(int(parent), []).append(int(label_id))
    assert len(daughters) >= 2
    for mother, pair in daughters.items():
        assert len(pair) == 2, mother
        mother_end = rows[mother][2]
        frame = mother_end + 1
        for d in pair:
            assert rows[d][1] == frame  # daughters start the frame after the mother ends
            assert (labels[frame] == d).any()
        assert not (labels[frame:] == mother).any()  # the mother is gone afterwards
        assert 0 < frame < labels.shape[0]
        # side by side where the mother was: their midpoint is the mother's last centroid
        mid = (_centroid(labels[frame] == pair[0]) + _centroid(labels[frame] == pair[1])) / 2
        assert np.linalg.norm(mid - _centroid(labels[mother_end] == mother)) < 1.5, mother


def test_timelapse_cells_never_touch_nor_leave(timelapse):
    _, labels, _ = timelapse
    for t, frame in enumerate(labels):
        ids = np.unique(frame)[1:]
        # each id one region, and no two ids touch: components of the foreground == ids
        assert connected_components(frame > 0, connectivity=2).max() == ids.size, t
        border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
        assert not border.any(), t


def test_timelapse_labels_match_bright_pixels(timelapse):
    images, labels, _ = timelapse
    for t in (0, labels.shape[0] // 2, labels.shape[0] - 1):
        image, frame = images[t].astype(np.float64), labels[t]
        background = image[frame == 0]
        for i in np.unique(frame)[1:]:
            inside = image[frame == i]
            assert inside.size > 100, (t, i)
            assert inside.mean() > background.mean() + 5 * background.std(), (t, i)


def test_timelapse_options():
    images, labels, lineage = synthetic_cell_timelapse(n_frames=8, shape=(96, 128), n_cells=3,
                                                       seed=3, n_divisions=1)
    assert images.shape == labels.shape == (8, 96, 128)
    assert np.count_nonzero(lineage[:, 3]) == 2
    with pytest.raises(ValueError, match="n_divisions"):
        synthetic_cell_timelapse(n_cells=2, n_divisions=3)
    with pytest.raises(ValueError, match="4 frames"):
        synthetic_cell_timelapse(n_frames=3)
    with pytest.raises(RuntimeError, match="could only place"):
        synthetic_cell_timelapse(n_frames=4, shape=(40, 40), n_cells=10, n_divisions=0)


def test_make_sample_cell_timelapse_layout(timelapse):
    layers = make_sample_cell_timelapse()
    assert [(meta["name"], kind) for _, meta, kind in layers] == [
        ("cell_timelapse", "image"),
        ("cell_timelapse ground truth", "labels"),
        ("cell_timelapse ground truth tracks", "tracks"),
    ]
    (images, image_meta, _), (labels, _, _), (tracks, tracks_meta, _) = layers
    np.testing.assert_array_equal(images, timelapse[0])
    np.testing.assert_array_equal(labels, timelapse[1])
    low, high = image_meta["contrast_limits"]
    assert images.min() <= low < high <= images.max()
    assert image_meta["colormap"]
    lineage = timelapse[2]
    assert tracks.shape == (int((lineage[:, 2] - lineage[:, 1] + 1).sum()), 4)
    assert tracks_meta["graph"] == {int(r[0]): [int(r[3])] for r in lineage if r[3]}
    # one point per id and frame, at the id's centroid
    t, track_id = 10, int(tracks[0, 0])
    row = tracks[(tracks[:, 0] == track_id) & (tracks[:, 1] == t)][0]
    np.testing.assert_allclose(row[2:], _centroid(labels[t] == track_id))


def test_sample_layers_are_valid_napari_layers():
    layers_module = pytest.importorskip("napari.layers")
    for data, meta, kind in make_sample_cell_timelapse() + make_sample_nuclei_3d():
        layer = layers_module.Layer.create(data, meta, kind)
        assert layer.name == meta["name"]


# ---- 3D nuclei -------------------------------------------------------------------------------


def test_volume_shapes_dtypes_and_determinism(volume):
    image, labels = volume
    assert image.shape == labels.shape == (32, 128, 128)
    assert image.dtype == labels.dtype == np.uint16
    again = synthetic_nuclei_volume()
    np.testing.assert_array_equal(image, again[0])
    np.testing.assert_array_equal(labels, again[1])
    assert not np.array_equal(labels, synthetic_nuclei_volume(seed=1)[1])


def test_volume_nuclei_are_separate_and_bright(volume):
    image, labels = volume
    np.testing.assert_array_equal(np.unique(labels), np.arange(13))
    assert connected_components(labels > 0, connectivity=3).max() == 12
    background = image[labels == 0].astype(np.float64)
    for i in range(1, 13):
        inside = image[labels == i].astype(np.float64)
        assert inside.size > 300, i
        assert inside.mean() > background.mean() + 5 * background.std(), i
        zs = np.flatnonzero((labels == i).any(axis=(1, 2)))
        ys = np.flatnonzero((labels == i).any(axis=(0, 2)))
        assert zs.size < ys.size  # flatter in z (anisotropic voxels)


def test_volume_is_dimmer_deeper(volume):
    image, labels = volume
    flat, flat_labels = synthetic_nuclei_volume(attenuation=0.0)
    np.testing.assert_array_equal(flat_labels, labels)  # same scene, only the depth dimming differs
    inside = labels > 0
    planes = [z for z in range(labels.shape[0]) if inside[z].sum() > 50]
    ratio = [image[z][inside[z]].mean() / flat[z][inside[z]].mean() for z in planes]
    assert ratio[0] > 0.9
    assert ratio[-1] < ratio[0] - 0.15
    assert np.all(np.diff(ratio) < 0.02)  # (nearly) monotonic: noise aside, deeper is dimmer
    with pytest.raises(ValueError, match="attenuation"):
        synthetic_nuclei_volume(attenuation=1.0)


def test_make_sample_nuclei_3d_layout(volume):
    layers = make_sample_nuclei_3d()
    assert [(meta["name"], kind) for _, meta, kind in layers] == [
        ("nuclei_3d", "image"),
        ("nuclei_3d ground truth", "labels"),
    ]
    np.testing.assert_array_equal(layers[0][0], volume[0])
    np.testing.assert_array_equal(layers[1][0], volume[1])


# ---- files in sample_data/ -------------------------------------------------------------------


def _read(name: str) -> np.ndarray:
    tifffile = pytest.importorskip("tifffile")
    path = SAMPLE_DIR / name
    if not path.exists():
        pytest.skip(f"sample_data/{name} not present (not a source checkout)")
    return tifffile.imread(path)


def _assert_image_close(saved: np.ndarray, image: np.ndarray) -> None:
    assert saved.dtype == image.dtype and saved.shape == image.shape, REGENERATE
    # Float rounding in the blur may differ by one count between library versions.
    diff = np.abs(saved.astype(np.int64) - image.astype(np.int64))
    assert diff.max() <= 2, REGENERATE


def test_timelapse_files_are_up_to_date(timelapse):
    images, labels, lineage = timelapse
    np.testing.assert_array_equal(_read("cell_timelapse_labels.tif"), labels, err_msg=REGENERATE)
    _assert_image_close(_read("cell_timelapse.tif"), images)
    text = (SAMPLE_DIR / "cell_timelapse_lineage.txt").read_text(encoding="ascii")
    assert text == "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in lineage.tolist()), REGENERATE


def test_volume_files_are_up_to_date(volume):
    image, labels = volume
    np.testing.assert_array_equal(_read("nuclei_3d_labels.tif"), labels, err_msg=REGENERATE)
    _assert_image_close(_read("nuclei_3d.tif"), image)


def test_sample_files_are_small():
    for name in ("cell_timelapse.tif", "cell_timelapse_labels.tif", "nuclei_3d.tif", "nuclei_3d_labels.tif"):
        path = SAMPLE_DIR / name
        if path.exists():
            assert path.stat().st_size < 3 * 2**20, name


def test_nuclei_volume_too_small_is_refused_clearly():
    with pytest.raises(ValueError, match="too small"):
        synthetic_nuclei_volume(shape=(8, 48, 48), n_nuclei=3)
