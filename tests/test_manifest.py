"""The npe2 manifest and the sample data it contributes."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.measure import label as connected_components

from napari_focsam.samples import make_sample_nuclei_2d, synthetic_nuclei_2d

PLUGIN = "napari-focsam"
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def manifest():
    npe2 = pytest.importorskip("npe2")
    return npe2.PluginManifest.from_distribution(PLUGIN)


def test_manifest_loads_from_installed_distribution(manifest):
    assert manifest.name == PLUGIN
    assert manifest.display_name == PLUGIN
    manifest.validate_imports()


def test_every_command_resolves_to_a_callable(manifest):
    for command in manifest.contributions.commands:
        module_name, _, attr = command.python_name.partition(":")
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        assert callable(obj), command.id


def test_sample_data_contribution(manifest):
    command_ids = {c.id for c in manifest.contributions.commands}
    samples = {s.key: s for s in manifest.contributions.sample_data}
    assert set(samples) == {"nuclei_2d", "cell_timelapse", "nuclei_3d"}
    assert samples["nuclei_2d"].display_name == "Synthetic nuclei (2D)"
    assert all(s.command in command_ids for s in samples.values())


def test_npe2_validate_cli():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "--imports", PLUGIN],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sample_layer_data_layout():
    layers = make_sample_nuclei_2d()
    assert [(meta["name"], kind) for _, meta, kind in layers] == [
        ("nuclei_2d", "image"),
        ("nuclei_2d ground truth", "labels"),
    ]
    (image, _, _), (labels, _, _) = layers
    assert image.shape == labels.shape == (256, 256)
    assert image.dtype == np.uint16
    assert labels.dtype == np.uint16


def test_sample_is_deterministic():
    (image_a, _, _), (labels_a, _, _) = make_sample_nuclei_2d()
    (image_b, _, _), (labels_b, _, _) = make_sample_nuclei_2d()
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(labels_a, labels_b)


def test_sample_seed_changes_the_scene():
    _, labels_0 = synthetic_nuclei_2d(seed=0)
    _, labels_1 = synthetic_nuclei_2d(seed=1)
    assert not np.array_equal(labels_0, labels_1)


def test_labels_match_the_nuclei():
    image, labels = synthetic_nuclei_2d()
    ids = np.unique(labels)
    np.testing.assert_array_equal(ids, np.arange(21))
    # Every nucleus is one connected region and no two nuclei touch.
    assert connected_components(labels > 0).max() == 20
    background = image[labels == 0].astype(np.float64)
    for i in ids[1:]:
        inside = image[labels == i].astype(np.float64)
        assert inside.size > 100
        assert inside.mean() > background.mean() + 5 * background.std(), i


def test_sample_tiffs_are_up_to_date():
    tifffile = pytest.importorskip("tifffile")
    image_path = SAMPLE_DIR / "nuclei_2d.tif"
    labels_path = SAMPLE_DIR / "nuclei_2d_labels.tif"
    if not (image_path.exists() and labels_path.exists()):
        pytest.skip("sample_data/ TIFFs not present (not a source checkout)")
    image, labels = synthetic_nuclei_2d()
    message = "regenerate with: python sample_data/make_samples.py"
    np.testing.assert_array_equal(tifffile.imread(labels_path), labels, err_msg=message)
    saved = tifffile.imread(image_path)
    assert saved.dtype == image.dtype, message
    # Float rounding in the blur may differ by one count between library versions.
    diff = np.abs(saved.astype(np.int64) - image.astype(np.int64))
    assert diff.max() <= 2, message


@pytest.mark.gui
def test_open_sample_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "nuclei_2d")
    assert viewer.layers["nuclei_2d"].data.shape == (256, 256)
    assert viewer.layers["nuclei_2d ground truth"].data.max() == 20
    assert type(viewer.layers["nuclei_2d"]).__name__ == "Image"
    assert type(viewer.layers["nuclei_2d ground truth"]).__name__ == "Labels"
