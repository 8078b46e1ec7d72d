"""`to_rgb_uint8`: 8-bit photos pass through, microscopy images are stretched per channel."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from napari_focsam.engine.image import MAX_CHANNELS, ImageError, to_rgb_uint8

RNG = np.random.default_rng(0)


def test_uint8_rgb_passes_through_unchanged():
    img = RNG.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    out = to_rgb_uint8(img)
    assert out.dtype == np.uint8 and out.shape == (7, 5, 3)
    np.testing.assert_array_equal(out, img)
    assert out.flags.c_contiguous


def test_uint8_rgba_drops_alpha_unchanged():
    img = RNG.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(img), img[..., :3])


def test_uint8_gray_is_repeated_unchanged():
    img = RNG.integers(10, 20, (6, 4), dtype=np.uint8)  # dim: must NOT be stretched
    out = to_rgb_uint8(img)
    assert out.shape == (6, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], img)
    np.testing.assert_array_equal(to_rgb_uint8(img[..., None]), out)


def test_uint8_channel_first_with_channel_axis():
    img = RNG.integers(0, 256, (3, 6, 5), dtype=np.uint8)
    out = to_rgb_uint8(img, channel_axis=0)
    np.testing.assert_array_equal(out, np.moveaxis(img, 0, -1))
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(to_rgb_uint8(img, channel_axis=-3), out)


def test_uint16_gray_is_stretched_between_percentiles():
    img = np.arange(100 * 40, dtype=np.uint16).reshape(100, 40) * 3 + 1000
    out = to_rgb_uint8(img, percentiles=(0, 100))
    assert out.dtype == np.uint8 and out.shape == (100, 40, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    expected = np.rint((img - img.min()) / (img.max() - img.min()) * 255)
    np.testing.assert_array_equal(out[..., 0], expected.astype(np.uint8))


def test_default_percentiles_clip_outliers():
    img = np.full((50, 50), 100.0)
    img[:25] = 200.0
    img[0, 0] = 1e9  # hot pixel
    img[0, 1] = -1e9  # dead pixel
    out = to_rgb_uint8(img)[..., 0]
    assert out[0, 0] == 255 and out[0, 1] == 0
    assert out[30, 30] == 0 and out[10, 10] == 255  # the outliers did not squash the range


def test_float_with_nan_and_inf_maps_them_to_zero_without_warnings():
    img = RNG.random((20, 30)).astype(np.float32) + 1.0
    img[3, 4] = np.nan
    img[5, 6] = np.inf
    img[7, 8] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = to_rgb_uint8(img)
    assert out[3, 4, 0] == 0 and out[5, 6, 0] == 0 and out[7, 8, 0] == 0
    assert out[..., 0].max() == 255


@pytest.mark.parametrize(
    "img",
    [
        np.full((8, 9), 7.0, dtype=np.float32),
        np.full((8, 9), np.nan, dtype=np.float64),
        np.full((8, 9), 300, dtype=np.uint16),
        np.zeros((8, 9), dtype=np.int32),
    ],
    ids=["constant-float", "all-nan", "constant-uint16", "zeros-int32"],
)
def test_constant_or_all_nan_channel_becomes_zero_without_warnings(img):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = to_rgb_uint8(img)
    assert out.shape == (8, 9, 3)
    assert not out.any()


def test_sparse_bright_spots_survive():
    img = np.zeros((100, 100), dtype=np.uint16)
    img[10, 10] = img[50, 60] = 4000  # 0.02 % of the pixels: both percentiles are 0
    out = to_rgb_uint8(img)[..., 0]
    assert out[10, 10] == 255 and out[50, 60] == 255
    assert out.sum() == 2 * 255


def test_two_channels_make_a_red_green_composite():
    img = np.zeros((10, 12, 2), dtype=np.uint16)
    img[..., 0] = np.arange(12)
    img[..., 1] = np.arange(10)[:, None] * 100
    out = to_rgb_uint8(img, percentiles=(0, 100))
    np.testing.assert_array_equal(out[0, :, 0], np.rint(np.arange(12) / 11 * 255))
    np.testing.assert_array_equal(out[:, 0, 1], np.rint(np.arange(10) / 9 * 255))
    assert not out[..., 2].any()


def test_channels_are_normalised_independently():
    base = RNG.random((16, 16))
    img = np.stack([base, base * 1000 + 5, base * 0.001 - 3], axis=-1)
    out = to_rgb_uint8(img)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_more_than_four_channels_uses_the_first_three_and_warns(caplog):
    img = RNG.random((6, 7, 5))
    with caplog.at_level(logging.WARNING, logger="napari_focsam.engine.image"):
        out = to_rgb_uint8(img)
    assert "5 channels" in caplog.text
    np.testing.assert_array_equal(out, to_rgb_uint8(img[..., :3]))


def test_float_rgba_drops_alpha():
    img = RNG.random((6, 7, 4)).astype(np.float32)
    np.testing.assert_array_equal(to_rgb_uint8(img), to_rgb_uint8(img[..., :3]))


def test_bool_maps_to_0_and_255():
    img = np.zeros((4, 5), dtype=bool)
    img[1, 2] = True
    out = to_rgb_uint8(img)
    assert out[1, 2].tolist() == [255, 255, 255]
    assert out.sum() == 3 * 255


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int64, np.uint32, np.float16])
def test_other_dtypes(dtype):
    offset = 10 if np.dtype(dtype).kind == "u" else -10
    img = (np.arange(30).reshape(5, 6) + offset).astype(dtype)
    out = to_rgb_uint8(img, percentiles=(0, 100))
    assert out.dtype == np.uint8 and out.shape == (5, 6, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_float64_extreme_range_does_not_warn():
    img = np.array([[-1e308, 0.0], [1e308, 5.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = to_rgb_uint8(img, percentiles=(0, 100))
    assert out.shape == (2, 2, 3)


@pytest.mark.parametrize(
    ("img", "kwargs", "match"),
    [
        (np.zeros(5), {}, "stack API"),
        (np.zeros((2, 3, 4, 5)), {}, "stack API"),
        (np.zeros((0, 5)), {}, "empty"),
        (np.zeros((4, 5, 0)), {}, "empty"),
        (np.zeros((4, 5), dtype=complex), {}, "complex"),
        (np.array([["a", "b"], ["c", "d"]]), {}, "dtype"),
        (np.empty((3, 3), dtype=object), {}, "dtype"),
        (np.zeros((4, 5, MAX_CHANNELS + 1)), {}, "stack axis"),
        (np.zeros((30, 64, 64)), {}, "channel_axis"),
        (np.zeros((1, 5)), {}, "at least 2 x 2"),
        (np.zeros((5, 1, 3)), {}, "at least 2 x 2"),
        (np.zeros((5, 5, 3)), {"channel_axis": 3}, "out of range"),
        (np.zeros((5, 5)), {"channel_axis": 0}, "2D"),
        (np.zeros((5, 5)), {"percentiles": (99, 1)}, "percentiles"),
        (np.zeros((5, 5)), {"percentiles": (0, 101)}, "percentiles"),
    ],
)
def test_errors(img, kwargs, match):
    with pytest.raises(ImageError, match=match):
        to_rgb_uint8(img, **kwargs)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)
