"""Reading images / stacks lazily and writing label TIFFs atomically."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import tifffile

from napari_focsam.api.io import InputError, open_image, write_labels_tiff


def _stack():
    return np.arange(4 * 10 * 12, dtype=np.uint16).reshape(4, 10, 12)


def test_uncompressed_tiff_is_memory_mapped(tmp_path):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, _stack(), photometric="minisblack")
    arr = open_image(path)
    assert isinstance(arr, np.memmap)
    np.testing.assert_array_equal(arr, _stack())


def test_compressed_tiff_is_read_lazily(tmp_path):
    path = tmp_path / "s.tiff"
    tifffile.imwrite(path, _stack(), compression="zlib", photometric="minisblack")
    arr = open_image(path)
    assert not isinstance(arr, np.ndarray)  # a lazy view, not the decoded stack
    assert tuple(arr.shape) == (4, 10, 12) and np.dtype(arr.dtype) == np.uint16
    np.testing.assert_array_equal(np.asarray(arr[2]), _stack()[2])
    np.testing.assert_array_equal(np.asarray(arr[:, 3, 4]), _stack()[:, 3, 4])


def test_npy_is_memory_mapped(tmp_path):
    path = tmp_path / "s.npy"
    np.save(path, _stack())
    arr = open_image(path)
    assert isinstance(arr, np.memmap)
    np.testing.assert_array_equal(arr, _stack())


def test_zarr_folder(tmp_path):
    import zarr

    path = tmp_path / "s.zarr"
    z = zarr.open(str(path), mode="w", shape=(4, 10, 12), dtype="uint16", chunks=(1, 10, 12))
    z[:] = _stack()
    arr = open_image(path)
    np.testing.assert_array_equal(np.asarray(arr[1]), _stack()[1])
    assert tuple(arr.shape) == (4, 10, 12)


def test_png(tmp_path):
    import skimage.io

    path = tmp_path / "i.png"
    image = (np.arange(10 * 12) % 256).astype(np.uint8).reshape(10, 12)
    skimage.io.imsave(path, image, check_contrast=False)
    np.testing.assert_array_equal(open_image(path), image)


def test_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_image(tmp_path / "missing.tif")
    odd = tmp_path / "s.xyz"
    odd.write_bytes(b"1234")
    with pytest.raises(InputError, match="unsupported input format .xyz"):
        open_image(odd)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="cannot read"):
        open_image(bad)


def test_write_labels_keeps_ids_that_do_not_fit_uint16(tmp_path):
    labels = np.zeros((4, 5), dtype=np.int32)
    labels[1, 2] = 70000
    back = tifffile.imread(write_labels_tiff(tmp_path / "big.tif", labels))
    assert back.dtype == np.int32 and back[1, 2] == 70000


def test_write_labels_round_trip(tmp_path):
    labels = np.zeros((3, 8, 9), dtype=np.int32)
    labels[1, 2:4, 3:5] = 7
    out = write_labels_tiff(tmp_path / "sub" / "labels.tif", labels)
    assert out == tmp_path / "sub" / "labels.tif"
    back = tifffile.imread(out)
    assert back.dtype == np.uint16  # ids fit: the label type Fiji / ImageJ open
    np.testing.assert_array_equal(back, labels)
    with tifffile.TiffFile(out) as tif:  # three gray pages, not one planar RGB image
        assert len(tif.pages) == 3
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.tif"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_written_labels_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        out = write_labels_tiff(tmp_path / "labels.tif", np.zeros((4, 4), np.int32))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # not mkstemp's 0600


def _failing_imwrite(path, data, **kwargs):
    with open(path, "wb") as fh:
        fh.write(b"II*\x00partial")
    raise OSError("disk full")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tifffile, "imwrite", _failing_imwrite)
    with pytest.raises(OSError, match="disk full"):
        write_labels_tiff(tmp_path / "labels.tif", np.ones((4, 4), np.int32))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_older_output(tmp_path, monkeypatch):
    target = tmp_path / "labels.tif"
    old = np.full((4, 4), 3, np.int32)
    write_labels_tiff(target, old)
    before = target.read_bytes()
    monkeypatch.setattr(tifffile, "imwrite", _failing_imwrite)
    with pytest.raises(OSError, match="disk full"):
        write_labels_tiff(target, np.ones((4, 4), np.int32))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(path, data, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"II*\x00")
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_labels_tiff(tmp_path / "labels.tif", np.ones((4, 4), np.int32))
    assert list(tmp_path.iterdir()) == []
