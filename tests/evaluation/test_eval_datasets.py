"""Benchmark readers on tiny synthetic folders."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from eval_helpers import grabcut_folder, image_with, save, square
from scipy.io import savemat

from napari_focsam.evaluation import DatasetError, open_dataset

HW = (32, 48)


def test_grabcut_ritm_layout_with_the_unknown_band(tmp_path):
    """FocSAM's protocol (the default): the unknown band is background; RITM's (`void=
    "ignore"`): it is left out."""
    objects = grabcut_folder(tmp_path, n=3, hw=(64, 64))
    data = open_dataset("GrabCut", tmp_path)
    assert data.names == ("img0", "img1", "img2") and len(data) == 3
    ritm = open_dataset("GrabCut", tmp_path, void="ignore")
    for sample, ignored, (name, gt) in zip(data, ritm, objects.items(), strict=True):
        got_name, image, got_gt = sample  # unpacks as (name, image, gt)
        assert got_name == name
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert got_gt.dtype == bool and np.array_equal(got_gt, gt)
        assert sample.ignore is None  # the 128 band is background
        assert np.array_equal(ignored.gt, gt)
        assert ignored.ignore is not None and not np.any(ignored.ignore & gt)
        assert ignored.ignore.sum() > 0  # the 128 band is left out
    with pytest.raises(DatasetError, match="'background' or 'ignore'"):
        open_dataset("GrabCut", tmp_path, void="skip")


def test_grabcut_focuscut_layout_indexed_masks(tmp_path):
    gt = square(HW, 4, 4, 10)
    save(tmp_path / "GrabCut" / "img" / "cat.png", image_with(gt))
    save(tmp_path / "GrabCut" / "gt" / "cat#001.png", gt.astype(np.uint8))  # values 0 / 1
    (sample,) = open_dataset("grabcut", tmp_path)
    assert sample.name == "cat#001" and np.array_equal(sample.gt, gt) and sample.ignore is None


def test_davis_instances_one_sample_per_file(tmp_path):
    a, b = square(HW, 2, 2, 8), square(HW, 15, 20, 10)
    save(tmp_path / "img" / "x.jpg", image_with(a | b))
    save(tmp_path / "img" / "y.jpg", image_with(a))  # no mask: skipped
    save(tmp_path / "gt" / "x#001.png", a.astype(np.uint8) * 255)
    save(tmp_path / "gt" / "x#002.png", b.astype(np.uint8) * 255)
    data = open_dataset("davis", tmp_path)
    assert data.names == ("x#001", "x#002")
    assert np.array_equal(data[0].gt, a) and np.array_equal(data[1].gt, b)
    assert data[0].image.shape == (*HW, 3)


def test_berkeley_colour_masks(tmp_path):
    gt = square(HW, 3, 5, 9)
    save(tmp_path / "images" / "b1.jpg", image_with(gt))
    save(tmp_path / "masks" / "b1.png", np.repeat(gt[..., None].astype(np.uint8) * 255, 3, axis=-1))
    (sample,) = open_dataset("berkeley", tmp_path)
    assert sample.name == "b1" and np.array_equal(sample.gt, gt)


def test_sbd_gtinst_one_sample_per_instance_in_the_val_list(tmp_path):
    seg = np.zeros(HW, dtype=np.uint8)
    seg[2:10, 2:10] = 1
    seg[12:20, 20:40] = 2
    seg[10, 2:10] = 255  # a void boundary line
    base = tmp_path / "benchmark_RELEASE" / "dataset"
    for stem in ("2008_000001", "2008_000002"):
        save(base / "img" / f"{stem}.jpg", image_with(seg > 0))
        (base / "inst").mkdir(parents=True, exist_ok=True)
        savemat(base / "inst" / f"{stem}.mat",
                {"GTinst": {"Segmentation": seg, "Boundaries": np.zeros((2, 1), dtype=object),
                            "Categories": np.array([[15], [7]], dtype=np.uint8)}})
    (base / "val.txt").write_text("2008_000002\n")
    data = open_dataset("sbd", tmp_path)
    assert data.names == ("2008_000002#001", "2008_000002#002")
    assert np.array_equal(data[0].gt, seg == 1) and np.array_equal(data[1].gt, seg == 2)
    assert data[0].ignore is None  # FocSAM: the void line is background
    assert np.array_equal(open_dataset("sbd", tmp_path, void="ignore")[0].ignore, seg == 255)
    assert len(open_dataset("sbd", tmp_path, limit=1)) == 1


def test_generic_folder_binary_and_instance_labels(tmp_path):
    labels = np.zeros(HW, dtype=np.uint16)
    labels[1:6, 1:6] = 3
    labels[10:20, 10:20] = 7
    labels[25:30, 30:40] = 300
    save(tmp_path / "images" / "cells.png", image_with(labels > 0))
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "masks" / "cells.tif", labels)
    binary = square(HW, 5, 5, 6)
    save(tmp_path / "images" / "one.png", image_with(binary))
    save(tmp_path / "masks" / "one.png", binary.astype(np.uint8) * 255)
    data = open_dataset("folder", tmp_path)
    assert data.names == ("cells#003", "cells#007", "cells#300", "one")
    for sample, label in zip(data[:3], (3, 7, 300), strict=True):
        assert np.array_equal(sample.gt, labels == label)
    assert np.array_equal(data[3].gt, binary)


def test_cod10k_and_mvtec_layouts(tmp_path):
    gt = square(HW, 3, 3, 7)
    cod = tmp_path / "COD10K-v3"
    save(cod / "Test" / "Image" / "COD10K-CAM-1.jpg", image_with(gt))
    save(cod / "Test" / "Image" / "COD10K-NonCAM-2.jpg", image_with(gt))
    for stem in ("COD10K-CAM-1", "COD10K-NonCAM-2"):
        save(cod / "Test" / "GT_Object" / f"{stem}.png", gt.astype(np.uint8) * 255)
    (cod / "Info").mkdir()
    (cod / "Info" / "CAM_test.txt").write_text("COD10K-CAM-1.jpg 1\n")
    (sample,) = open_dataset("cod10k", cod)
    assert sample.name == "COD10K-CAM-1" and np.array_equal(sample.gt, gt)

    mv = tmp_path / "mvtec"
    save(mv / "bottle" / "test" / "good" / "000.png", image_with(gt))
    save(mv / "bottle" / "test" / "broken" / "000.png", image_with(gt))
    save(mv / "bottle" / "ground_truth" / "broken" / "000_mask.png", gt.astype(np.uint8) * 255)
    save(mv / "transistor" / "test" / "misplaced" / "000.png", image_with(gt))
    save(mv / "transistor" / "ground_truth" / "misplaced" / "000_mask.png", gt.astype(np.uint8) * 255)
    data = open_dataset("mvtec", mv)
    assert data.names == ("bottle_broken_000",)
    assert np.array_equal(data[0].gt, gt)


def test_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset("grabcut", tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown dataset"):
        open_dataset("pascal", tmp_path)
    with pytest.raises(DatasetError, match="does not look like a GrabCut dataset"):
        open_dataset("grabcut", tmp_path)
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    with pytest.raises(DatasetError, match="no davis samples"):
        open_dataset("davis", tmp_path)
    save(tmp_path / "img" / "a.png", image_with(square(HW, 1, 1, 4)))
    save(tmp_path / "gt" / "a.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match=r"is 32 x 48 but its mask .* is 10 x 10"):
        open_dataset("davis", tmp_path)
