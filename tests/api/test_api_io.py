"""Reading images / stacks lazily and writing label TIFFs atomically."""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct

import numpy as np
import pytest
import tifffile

from napari_focsam.api.io import (
    ImageInfo,
    InputError,
    OutputError,
    check_output_path,
    labels_axes,
    open_image,
    read_array,
    read_image_info,
    write_labels_tiff,
)


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


def test_write_labels_keeps_ids_that_do_not_fit_uint16(tmp_path, caplog):
    # ImageJ has no 32-bit integer type: float32 (exact up to 2**24) keeps an ImageJ file
    labels = np.zeros((4, 5), dtype=np.int32)
    labels[1, 2] = 70000
    labels[3, 4] = 2**24
    with caplog.at_level(logging.WARNING, "napari_focsam.api.io"):
        out = write_labels_tiff(tmp_path / "big.tif", labels)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "YX"
        back = tif.asarray()
    assert back.dtype == np.float32 and back[1, 2] == 70000 and back[3, 4] == 2**24
    assert "written as float32" in caplog.text and "16777216" in caplog.text


@pytest.mark.parametrize("top, dtype", [(2**24 + 1, np.uint32), (2**31, np.uint32),
                                        (2**40 + 3, np.uint64)])
def test_ids_beyond_float32_make_a_plain_integer_tiff_with_a_warning(tmp_path, caplog, top,
                                                                     dtype):
    labels = np.zeros((2, 4, 5), dtype=np.int64)
    labels[1, 2, 3] = top
    with caplog.at_level(logging.WARNING, "napari_focsam.api.io"):
        out = write_labels_tiff(tmp_path / "big.tif", labels, axes="TYX")
    with tifffile.TiffFile(out) as tif:
        assert not tif.is_imagej and tif.series[0].axes == "TYX"
        back = tif.asarray()
    assert back.dtype == dtype and back[1, 2, 3] == top
    assert "not an ImageJ hyperstack" in caplog.text


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
        assert tif.is_imagej and tif.series[0].axes == "ZYX"  # a hyperstack for Fiji
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
    with pytest.raises(OutputError, match="disk full"):
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


# ---------------------------------------------------------------------- damaged inputs
def _compressed(path, n=4):
    tifffile.imwrite(path, (np.arange(n * 64 * 64) % 251).astype(np.uint8).reshape(n, 64, 64),
                     compression="zlib", photometric="minisblack")
    return path.read_bytes()


def _read_all(path):
    """Open `path` and decode every frame (where lazily read files fail)."""
    arr = open_image(path)
    for i in range(arr.shape[0]):
        np.asarray(arr[i])


def _flip(data: bytes, start: int, stop: int) -> bytes:
    out = bytearray(data)
    for i in range(start, stop, 7):
        out[i] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize("damage", ["truncated-compressed", "flipped-compressed",
                                    "truncated-plain", "header-only", "bigtiff-header-only"])
def test_damaged_tiffs_are_input_errors(tmp_path, damage, capsys):
    """zlib.error, struct.error, tifffile's own errors, and series silently cut short by
    tifffile all become InputError, raised on opening or on reading the damaged page."""
    good = _compressed(tmp_path / "good.tif")
    if damage == "truncated-compressed":
        data = good[:len(good) // 2]
    elif damage == "flipped-compressed":
        data = _flip(good, 400, len(good) - 400)  # pixel data, not the header
    elif damage == "truncated-plain":
        tifffile.imwrite(tmp_path / "plain.tif", np.ones((4, 64, 64), np.uint8),
                         photometric="minisblack")
        plain = (tmp_path / "plain.tif").read_bytes()
        data = plain[:len(plain) // 2]
    elif damage == "header-only":
        data = b"II*\x00"  # struct.error inside tifffile
    else:
        data = b"II+\x00\x08\x00\x00\x00"
    bad = tmp_path / "bad.tif"
    bad.write_bytes(data)
    with pytest.raises(InputError, match="cannot read"):
        _read_all(bad)
    assert "tifffile" not in capsys.readouterr().err  # its log lines are part of the error


def test_a_truncated_stack_is_not_read_as_fewer_frames(tmp_path):
    """tifffile falls back to the pages it finds (one frame instead of four) and only logs."""
    good = _compressed(tmp_path / "good.tif")
    (tmp_path / "cut.tif").write_bytes(good[:len(good) // 2])
    with pytest.raises(InputError, match="damaged or truncated"):
        open_image(tmp_path / "cut.tif")


def test_multi_series_tiff_names_its_series(tmp_path):
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 9), np.uint8), photometric="minisblack")
    tifffile.imwrite(path, np.zeros((5, 6), np.uint16), photometric="minisblack", append=True)
    with pytest.raises(InputError, match=r"holds 2 image series \(0: \(3, 8, 9\) uint8.*; 1: "
                                         r"\(5, 6\) uint16.*series=1"):
        open_image(path)


def huge_tiff(path, height: int, width: int) -> bytes:
    """A tiny deflate TIFF whose header claims a `height` x `width` uint8 image."""
    import zlib

    strip = zlib.compress(b"\0" * 64)
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, len(strip))]
    offset = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = offset if tag == 273 else value
        ifd += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3
                                                    else struct.pack("<I", value))
    data = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + strip
    path.write_bytes(data)
    return data


class _Memory:
    def __init__(self, available: int) -> None:
        self.available = available


def test_a_page_larger_than_memory_is_refused_when_opened(tmp_path, monkeypatch):
    import psutil

    data = huge_tiff(tmp_path / "huge.tif", 100_000, 100_000)
    assert len(data) < 200
    monkeypatch.setattr(psutil, "virtual_memory", lambda: _Memory(8 * 2**30))
    with pytest.raises(InputError, match=r"one \(100000, 100000\) uint8 page .* needs 9.3 GiB "
                                         r"of memory; 8.0 GiB are available"):
        open_image(tmp_path / "huge.tif")


def test_read_array_checks_the_size_first(tmp_path, monkeypatch):
    import psutil

    np.save(tmp_path / "a.npy", np.zeros((4, 100, 100), np.uint16))
    monkeypatch.setattr(psutil, "virtual_memory", lambda: _Memory(10_000))
    with pytest.raises(InputError, match=r"the ground truth .*needs"):
        read_array(tmp_path / "a.npy", "the ground truth")


# ---------------------------------------------------------------------- outputs
def test_output_that_is_an_input_is_refused(tmp_path, monkeypatch):
    image = tmp_path / "v.tif"
    image.write_bytes(b"data")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.tif").symlink_to(image)
    os.link(image, tmp_path / "hard.tif")
    for out in (image, "v.tif", "./sub/../v.tif", tmp_path / "link.tif", tmp_path / "hard.tif"):
        with pytest.raises(OutputError, match="is the input"):
            check_output_path(out, [image, None])
    assert check_output_path(tmp_path / "other.tif", [image]) == tmp_path / "other.tif"


@pytest.mark.parametrize("name, match", [
    ("labels.png", "labels are written as TIFF"),
    ("labels", "labels are written as TIFF"),
    ("folder.tif", "is a folder"),
    ("afile/labels.tif", "is a file, not a folder"),
    ("a" * 300 + ".tif", "the file name is too long"),
])
def test_unwritable_outputs_are_refused_before_any_work(tmp_path, name, match):
    (tmp_path / "folder.tif").mkdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match=match):
        check_output_path(tmp_path / name)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="POSIX permissions (root writes anywhere)")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="no permission to write"):
            check_output_path(folder / "labels.tif")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("code, where, match", [
    (errno.ENOSPC, "replace", "no space left on the device"),
    (errno.EROFS, "open", "read-only file system"),
    (errno.EACCES, "open", "no permission to write"),
    (errno.ENAMETOOLONG, "open", "the file name is too long"),
    (errno.EDQUOT, "replace", "disk quota exceeded"),
])
def test_write_errors_are_output_errors_and_leave_nothing(tmp_path, monkeypatch, code, where,
                                                          match):
    real = getattr(os, where)

    def failing(*args, **kwargs):
        if where == "open" and not str(args[0]).endswith(".part"):
            return real(*args, **kwargs)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, where, failing)
    with pytest.raises(OutputError, match=match):
        write_labels_tiff(tmp_path / "labels.tif", np.ones((4, 4), np.int32))
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_folder_in_the_way_is_an_output_error(tmp_path):
    (tmp_path / "labels.tif").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        write_labels_tiff(tmp_path / "labels.tif", np.ones((4, 4), np.int32))
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]


# ---------------------------------------------------------------------- axes and calibration
@pytest.mark.parametrize("kw, ndim, roles, expected", [
    ({}, 2, {}, "YX"),
    ({}, 3, {"stack_axis": 0}, "ZYX"),
    ({"stack_kind": "t"}, 3, {"stack_axis": 0}, "TYX"),
    ({}, 3, {"stack_axis": 2}, "YXZ"),
    ({}, 4, {"stack_axis": 1, "outer_axis": 0}, "TZYX"),
    ({"stack_kind": "T"}, 4, {"stack_axis": 0, "outer_axis": 1}, "TZYX"),
    ({}, 4, {"stack_axis": 0, "channel_axis": 3}, "ZYX"),
    ({"file_axes": "TYX"}, 3, {"stack_axis": 0}, "TYX"),  # the file wins over the default
    ({"file_axes": "TZCYX"}, 5, {"stack_axis": 1, "outer_axis": 0, "channel_axis": 2}, "TZYX"),
    ({"file_axes": "ZTYX"}, 4, {"stack_axis": 1, "outer_axis": 0}, "ZTYX"),
    ({"file_axes": "QYX", "stack_kind": "t"}, 3, {"stack_axis": 0}, "TYX"),
])
def test_labels_axes(kw, ndim, roles, expected):
    assert labels_axes(ndim, **roles, **kw) == expected


def test_imagej_hyperstack_in_imagej_order_with_calibration(tmp_path):
    labels = np.zeros((3, 2, 8, 9), np.int32)  # (z, t, y, x)
    labels[2, 1, 4, 5] = 7
    info = ImageInfo(pixel_size=(0.25, 0.5), unit="um", z_spacing=2.0, frame_interval=3.0)
    out = write_labels_tiff(tmp_path / "l.tif", labels, axes="ZTYX", info=info)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZYX"
        back = tif.asarray()
        meta = tif.imagej_metadata
        x_res, y_res = tif.pages[0].get_resolution()
    assert back.shape == (2, 3, 8, 9) and back[1, 2, 4, 5] == 7 and back.dtype == np.uint16
    assert (meta["unit"], meta["spacing"], meta["finterval"]) == ("um", 2.0, 3.0)
    assert (1 / y_res, 1 / x_res) == pytest.approx((0.25, 0.5))
    assert read_image_info(out) == ImageInfo(axes="TZYX", pixel_size=pytest.approx((0.25, 0.5)),
                                             unit="um", z_spacing=2.0, frame_interval=3.0)


def test_image_info_of_ome_plain_and_other_files(tmp_path):
    ome = tmp_path / "in.ome.tif"
    tifffile.imwrite(ome, np.zeros((2, 3, 8, 9), np.uint16), ome=True, photometric="minisblack",
                     metadata={"axes": "TZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.25,
                               "PhysicalSizeZ": 2.0, "TimeIncrement": 3.0})
    assert read_image_info(ome) == ImageInfo(axes="TZYX", pixel_size=(0.25, 0.5), unit="um",
                                             z_spacing=2.0, frame_interval=3.0)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((3, 8, 9), np.uint8), photometric="minisblack")
    assert read_image_info(plain) == ImageInfo()  # QYX: the stack axis is not named
    np.save(tmp_path / "a.npy", np.zeros((3, 4)))
    assert read_image_info(tmp_path / "a.npy") == ImageInfo()
