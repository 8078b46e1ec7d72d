"""Longest-side resizing and the napari (row, col) -> model (x, y) mapping."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_focsam.engine.transforms import (
    box_rc_to_model_xyxy,
    longest_side_shape,
    model_xy_to_rc,
    rc_to_model_xy,
    resize_longest_side,
)

RNG = np.random.default_rng(1)


@pytest.mark.parametrize(
    ("h", "w", "target", "expected"),
    [
        (600, 450, 1024, (1024, 768)),
        (480, 640, 1024, (768, 1024)),
        (333, 500, 1024, (682, 1024)),  # 681.98 rounds up
        (1024, 1024, 1024, (1024, 1024)),
        (4, 3, 2, (2, 2)),  # 1.5 rounds half up, as int(x + 0.5) does
        (2000, 10, 1024, (1024, 5)),
        (10, 3000, 1024, (3, 1024)),
    ],
)
def test_longest_side_shape(h, w, target, expected):
    assert longest_side_shape(h, w, target) == expected


def test_longest_side_shape_rejects_non_positive_sizes():
    with pytest.raises(ValueError, match="positive"):
        longest_side_shape(0, 5, 1024)


@pytest.mark.parametrize("shape", [(600, 450), (30, 70), (1024, 1024), (1500, 900)])
def test_resize_longest_side_matches_pil_bilinear(shape):
    rgb = RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)
    out = resize_longest_side(rgb, 1024)
    new_h, new_w = longest_side_shape(*shape, 1024)
    assert out.shape == (new_h, new_w, 3) and out.dtype == np.uint8
    assert out.flags.writeable
    expected = np.array(Image.fromarray(rgb).resize((new_w, new_h), Image.BILINEAR))
    np.testing.assert_array_equal(out, expected)


def test_resize_keeps_a_constant_image_constant():
    rgb = np.full((37, 53, 3), (10, 200, 30), dtype=np.uint8)
    out = resize_longest_side(rgb, 1024)
    assert out.shape == (715, 1024, 3)
    assert (out == np.array([10, 200, 30], dtype=np.uint8)).all()


@pytest.mark.parametrize("bad", [np.zeros((5, 5)), np.zeros((5, 5, 4), np.uint8),
                                 np.zeros((5, 5, 3), np.float32)])
def test_resize_rejects_non_rgb_uint8(bad):
    with pytest.raises(ValueError, match="uint8"):
        resize_longest_side(bad, 1024)


def test_rc_to_model_xy_on_a_non_square_image():
    # 600 x 450 -> 1024 x 768; napari (row=300, col=100)
    xy = rc_to_model_xy(np.array([[300.0, 100.0], [0.0, 0.0]]), (600, 450), 1024)
    assert xy.dtype == np.float32 and xy.shape == (2, 2)
    np.testing.assert_allclose(xy[0], [100 * 768 / 450, 300 * 1024 / 600], rtol=1e-6)
    np.testing.assert_array_equal(xy[1], [0, 0])


def test_rc_to_model_xy_matches_official_apply_coords_formula():
    # official: x * (new_w / old_w), y * (new_h / old_h) in float64, then float32
    rc = RNG.uniform(0, 333, (20, 2))
    xy = rc_to_model_xy(rc, (333, 500), 1024)
    new_h, new_w = 682, 1024
    expected = np.stack([rc[:, 1] * (new_w / 500), rc[:, 0] * (new_h / 333)], -1)
    np.testing.assert_array_equal(xy, expected.astype(np.float32))


def test_empty_points():
    assert rc_to_model_xy(np.zeros((0, 2)), (10, 20), 1024).shape == (0, 2)


def test_model_xy_to_rc_inverts_rc_to_model_xy():
    rc = RNG.uniform(0, 450, (10, 2))
    back = model_xy_to_rc(rc_to_model_xy(rc, (600, 450), 1024), (600, 450), 1024)
    np.testing.assert_allclose(back, rc, rtol=1e-6)


def test_box_rc_to_model_xyxy():
    box = box_rc_to_model_xyxy(np.array([120.0, 45.0, 540.0, 315.0]), (600, 450), 1024)
    assert box.dtype == np.float32 and box.shape == (4,)
    np.testing.assert_allclose(box, [76.8, 204.8, 537.6, 921.6], rtol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros(2), np.zeros((3, 3)), np.zeros((2, 2, 2))])
def test_point_shape_errors(bad):
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        rc_to_model_xy(bad, (10, 10), 1024)


def test_box_shape_error():
    with pytest.raises(ValueError, match=r"\(4,\)"):
        box_rc_to_model_xyxy(np.zeros((2, 2)), (10, 10), 1024)
