"""`StackSource`: axis specs, lazy slice-by-slice reading, one contrast stretch per stack."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from store_helpers import RecordingArray, make_stack

from napari_focsam.engine.image import ImageError, to_rgb_uint8
from napari_focsam.store import StackError, StackSource, content_hash


# ---------------------------------------------------------------------- 2D: same as to_rgb_uint8
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64, np.bool_])
def test_2d_matches_to_rgb_uint8(dtype):
    rng = np.random.default_rng(1)
    img = (rng.random((20, 30)) * 300 - 20).astype(dtype)
    src = StackSource(img, stack_axis=None)
    assert len(src) == 1 and src.frame_shape == (20, 30)
    np.testing.assert_array_equal(src[0], to_rgb_uint8(img))


@pytest.mark.parametrize("n_channels", [1, 2, 3, 4, 5])
def test_2d_channels_match_to_rgb_uint8(n_channels):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 4000, size=(n_channels, 16, 18)).astype(np.uint16)  # channel first
    src = StackSource(img, stack_axis=None, channel_axis=0)
    np.testing.assert_array_equal(src[0], to_rgb_uint8(img, channel_axis=0))
    rgb8 = np.moveaxis(img, 0, -1).astype(np.uint8)
    np.testing.assert_array_equal(StackSource(rgb8, stack_axis=None, channel_axis=-1)[0],
                                  to_rgb_uint8(rgb8))


def test_nan_and_inf_handled_like_to_rgb_uint8():
    img = np.linspace(0, 1, 20 * 20, dtype=np.float32).reshape(20, 20)
    img[0, :5] = np.nan
    img[1, :3] = np.inf
    img[2, :3] = -np.inf
    out = StackSource(img, stack_axis=None)[0]
    np.testing.assert_array_equal(out, to_rgb_uint8(img))
    assert (out[0, :5] == 0).all() and (out[1, :3] == 0).all()


def test_all_nan_frame_is_black_with_warning(caplog):
    stack = make_stack(4).astype(np.float32)
    stack[2] = np.nan
    src = StackSource(stack, stack_axis=0)
    with caplog.at_level("WARNING"):
        frame = src[2]
    assert (frame == 0).all()
    assert "no finite values" in caplog.text
    assert src[1].max() > 0


def test_all_nan_stack_maps_to_zeros(caplog):
    src = StackSource(np.full((3, 8, 8), np.nan, np.float32), stack_axis=0)
    with caplog.at_level("WARNING"):
        assert src.limits == [None]
        assert (src[0] == 0).all()


# ---------------------------------------------------------------------- stacks
def test_one_contrast_for_the_whole_stack():
    """Frame-by-frame stretching would make these two frames identical; the stack's limits keep
    the darker frame darker."""
    base = np.tile(np.arange(32, dtype=np.uint16) * 10, (16, 1))
    stack = np.stack([base, base * 2])
    src = StackSource(stack, stack_axis=0)
    lo, hi = src.limits[0]
    assert lo <= 10 and hi >= 580
    dark, bright = src[0], src[1]
    assert dark.mean() < bright.mean() - 30
    np.testing.assert_array_equal(to_rgb_uint8(stack[0]), to_rgb_uint8(stack[1]))


def test_limits_from_a_bounded_sample():
    stack = RecordingArray(make_stack(40), stack_axes=(0,))
    src = StackSource(stack, stack_axis=0, sample_slices=5)
    _ = src.limits
    assert sorted(k[0] for k in stack.keys) == [0, 10, 20, 29, 39]
    _ = src[3]
    assert len(stack.keys) == 6  # the limits are computed once


def test_3d_time_axis_last():
    stack = make_stack(5)
    moved = np.moveaxis(stack, 0, -1)  # (H, W, T)
    a, b = StackSource(stack, stack_axis=0), StackSource(moved, stack_axis=2)
    assert len(b) == 5 and b.frame_shape == (24, 32)
    for i in range(5):
        np.testing.assert_array_equal(a[i], b[i])


def test_4d_t_by_z_indexing_and_channels():
    rng = np.random.default_rng(3)
    data = rng.integers(0, 1000, size=(3, 4, 2, 10, 12)).astype(np.uint16)  # (T, Z, C, H, W)
    src = StackSource(data, stack_axis=1, outer_axis=0, channel_axis=2)
    assert (len(src), src.n_outer, src.n_stack, src.frame_shape) == (12, 3, 4, (10, 12))
    assert src.frame_index(2, 1) == 9 and src.split_index(9) == (2, 1)
    raw = src.raw(src.frame_index(2, 1))
    np.testing.assert_array_equal(raw, np.moveaxis(data[2, 1], 0, -1))
    frame = src[9]
    assert frame.shape == (10, 12, 3) and frame.dtype == np.uint8
    assert (frame[..., 2] == 0).all()  # 2 channels: red, green, black
    # z as outer, t as frames
    src_t = StackSource(data, stack_axis=0, outer_axis=1, channel_axis=2)
    np.testing.assert_array_equal(src_t.raw(src_t.frame_index(1, 2)), raw)


def test_many_channels_reads_only_three():
    data = RecordingArray(np.zeros((2, 6, 8, 8), np.uint16), stack_axes=(0,))
    src = StackSource(data, stack_axis=0, channel_axis=1)
    assert src[1].shape == (8, 8, 3)
    assert data.keys[-1][1] == slice(0, 3)


# ---------------------------------------------------------------------- laziness
def test_recording_array_read_frame_by_frame():
    data = RecordingArray(make_stack(6), stack_axes=(0,))
    src = StackSource(data, stack_axis=0)
    frames = [src[i] for i in range(len(src))]
    content_hash(src)
    assert len(frames) == 6
    assert all(isinstance(k[0], int) for k in data.keys)
    with pytest.raises(AssertionError, match="whole array"):
        np.asarray(data)


def test_dask_array_is_read_slice_by_slice():
    da = pytest.importorskip("dask.array")
    calls = []

    def block(block_id=None):
        calls.append(block_id)
        return make_stack(6)[block_id[0]:block_id[0] + 1]

    lazy = da.map_blocks(block, dtype=np.uint16, chunks=((1,) * 6, (24,), (32,)),
                         meta=np.empty((0, 0, 0), np.uint16))
    src = StackSource(lazy, stack_axis=0, sample_slices=1)
    frame = src[4]
    np.testing.assert_array_equal(frame, StackSource(make_stack(6), stack_axis=0,
                                                     sample_slices=1)[4])
    assert sorted({c[0] for c in calls if c is not None}) == [0, 4]  # sampled frame + frame 4


def test_zarr_array_is_read_slice_by_slice(tmp_path):
    stack = make_stack(6)
    z = zarr.open_array(str(tmp_path / "s.zarr"), mode="w", shape=stack.shape,
                        chunks=(1, 24, 32), dtype=stack.dtype)
    z[:] = stack
    wrapped = RecordingArray(z, stack_axes=(0,))  # a zarr array slices like numpy
    src = StackSource(wrapped, stack_axis=0)
    ref = StackSource(stack, stack_axis=0)
    for i in range(6):
        np.testing.assert_array_equal(src[i], ref[i])
    assert content_hash(src) == content_hash(ref)
    assert all(isinstance(k[0], int) for k in wrapped.keys)


def test_tifffile_memmap(tmp_path):
    stack = make_stack(5)
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, stack)
    mm = tifffile.memmap(path)
    assert isinstance(mm, np.memmap)
    wrapped = RecordingArray(mm, stack_axes=(0,))
    src = StackSource(wrapped, stack_axis=0)
    np.testing.assert_array_equal(src[3], StackSource(stack, stack_axis=0)[3])
    assert all(isinstance(k[0], int) for k in wrapped.keys)


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(("shape", "kwargs", "match"), [
    ((4, 8, 8), {"stack_axis": 3}, "out of range"),
    ((4, 8, 8), {"stack_axis": -4}, "out of range"),
    ((4, 3, 8, 8), {"stack_axis": 1, "channel_axis": 1}, "distinct"),
    ((4, 3, 8, 8), {"stack_axis": 0, "channel_axis": -4}, "distinct"),
    ((4, 8, 8), {"stack_axis": None}, "dimensions"),
    ((8, 8), {"stack_axis": 0}, "dimensions"),
    ((2, 4, 8, 8), {"stack_axis": 1}, "dimensions"),
    ((2, 4, 8, 8), {"stack_axis": None, "outer_axis": 0, "channel_axis": 1}, "needs a stack_axis"),
    ((0, 8, 8), {"stack_axis": 0}, "empty"),
    ((3, 1, 8), {"stack_axis": 0}, "2 x 2"),
    ((3, 20, 8, 8), {"stack_axis": 0, "channel_axis": 1}, "channels"),
    ((3, 8, 8), {"stack_axis": 1.0}, "int"),
])
def test_axis_errors(shape, kwargs, match):
    with pytest.raises(StackError, match=match):
        StackSource(np.zeros(shape, np.uint16), **kwargs)


@pytest.mark.parametrize("dtype", [np.complex64, object, "U3"])
def test_unsupported_dtype(dtype):
    with pytest.raises(StackError, match="dtype"):
        StackSource(np.zeros((2, 4, 4), dtype=dtype), stack_axis=0)


def test_errors_are_value_errors():
    assert issubclass(StackError, ImageError) and issubclass(StackError, ValueError)
    with pytest.raises(StackError, match="percentiles"):
        StackSource(np.zeros((2, 4, 4)), stack_axis=0, percentiles=(50, 10))


def test_index_errors():
    src = StackSource(make_stack(3), stack_axis=0)
    assert np.array_equal(src[-1], src[2])
    with pytest.raises(IndexError):
        src[3]
    with pytest.raises(IndexError):
        src.frame_index(1, 0)
