"""Prompt layers -> image pixels: layers with different transforms, frames, boxes (no viewer)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Points, Shapes

from napari_focsam._qt.axes import ImageAxes
from napari_focsam._qt.prompt_layers import POSITIVE, collect_prompt, positive_flags, to_image_data


def test_scale_and_translate_between_layers():
    image = Image(np.zeros((4, 20, 30)), scale=(1, 2, 2), translate=(0, 10, 20))
    points = Points(np.array([[2.0, 30.0, 40.0]]))  # world == data for the points layer
    np.testing.assert_allclose(to_image_data(points.data, points, image), [[2, 10, 10]])
    other = Points(np.array([[1.0, 5.0, 5.0]]), scale=(2, 4, 4), translate=(0, 10, 20))
    # world (2, 30, 40) -> image data (2, 10, 10)
    np.testing.assert_allclose(to_image_data(other.data, other, image), [[2, 10, 10]])


def test_rotated_layers():
    image = Image(np.zeros((20, 30)), rotate=30, translate=(5, -3), scale=(2, 2))
    same = Points(np.array([[4.0, 9.0]]), rotate=30, translate=(5, -3), scale=(2, 2))
    np.testing.assert_allclose(to_image_data(same.data, same, image), [[4, 9]], atol=1e-9)
    world = Points(np.array(image.data_to_world([4.0, 9.0]))[None])  # identity transform
    np.testing.assert_allclose(to_image_data(world.data, world, image), [[4, 9]], atol=1e-9)


def test_2d_points_over_a_stack_lie_on_the_viewed_slice():
    image = Image(np.zeros((6, 20, 30)))
    points = Points(np.array([[4.0, 7.0]]))
    np.testing.assert_allclose(to_image_data(points.data, points, image, world_point=[3, 0, 0]),
                               [[3, 4, 7]])


def test_collect_prompt_keeps_only_the_plane_and_polarity():
    image = Image(np.zeros((5, 20, 30)))
    points = Points(np.array([[1, 4, 5], [2, 6, 7], [2, 8, 9.0]]),
                    features={POSITIVE: [True, True, False]})
    mapped = collect_prompt(3, image, ImageAxes(3, 0), 2, None, points_layer=points)
    assert mapped.point_indices == [1, 2]
    np.testing.assert_allclose(mapped.prompt.points_rc, [[6, 7], [8, 9]])
    assert mapped.prompt.labels.tolist() == [1, 0]
    assert mapped.prompt.obj_id == 3 and mapped.prompt.frame == 2 and mapped.prompt.box_rc is None
    assert collect_prompt(3, image, ImageAxes(3, 0), 4, None, points_layer=points).prompt is None


def test_points_without_feature_are_positive():
    points = Points(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert positive_flags(points).tolist() == [True, True]


def test_rectangle_becomes_a_box_and_an_ellipse_a_mask_prompt():
    image = Image(np.zeros((3, 20, 30)), scale=(1, 2, 2))
    shapes = Shapes(ndim=3)
    shapes.add_rectangles(np.array([[1, 4, 6], [1, 4, 20], [1, 16, 20], [1, 16, 6.0]]))
    shapes.add_ellipses(np.array([[1, 2, 2], [1, 2, 10], [1, 10, 10], [1, 10, 2.0]]))
    shapes.add_lines(np.array([[1, 0, 0], [1, 5, 5.0]]))
    mapped = collect_prompt(1, image, ImageAxes(3, 0), 1, None, shapes_layer=shapes)
    np.testing.assert_allclose(mapped.prompt.box_rc, [2, 3, 8, 10])
    assert mapped.shape_indices == [0, 1]
    # the ellipse (world 2..10 = image pixels 1..5 in both axes) as pixels of the 20 x 30 image
    mask = mapped.prompt.mask
    assert mask.shape == (20, 30) and mask[3, 3] and not mask[0, 0] and not mask[3, 8]
    assert abs(int(mask.sum()) - np.pi * 2 * 2) <= 8
    assert any("line / path" in n for n in mapped.notes)
    assert any("mask prompt is not used" in n for n in mapped.notes)


def test_polygon_alone_is_a_mask_prompt_in_image_pixels_of_any_transform():
    image = Image(np.zeros((40, 60)), scale=(0.5, 0.5), translate=(10, 20))
    shapes = Shapes(ndim=2)
    # a world-space triangle; image pixel = (world - translate) / 0.5
    shapes.add_polygons(np.array([[12.0, 22.0], [12.0, 32.0], [22.0, 22.0]]))
    mapped = collect_prompt(7, image, ImageAxes(2), None, None, shapes_layer=shapes)
    prompt = mapped.prompt
    assert prompt.obj_id == 7 and prompt.box_rc is None and len(prompt.points_rc) == 0
    mask = prompt.mask
    assert mask[6, 6] and not mask[18, 18] and not mask[2, 2]  # corners at (4,4), (4,24), (24,4)
    assert 150 < mask.sum() < 260  # a right triangle of legs 20: area 200
    far = Shapes(ndim=2)
    far.add_polygons(np.array([[500.0, 500.0], [500.0, 510.0], [510.0, 500.0]]))
    outside = collect_prompt(7, image, ImageAxes(2), None, None, shapes_layer=far)
    assert outside.prompt is None and any("covers no pixel" in n for n in outside.notes)


@pytest.mark.parametrize("point, expected", [((-0.4, 3.0), (0.0, 3.0)), ((19.4, 29.3), (19.0, 29.0))])
def test_points_on_the_border_pixels_are_kept_inside(point, expected):
    image = Image(np.zeros((20, 30)))
    points = Points(np.array([point]))
    mapped = collect_prompt(1, image, ImageAxes(2), None, None, points_layer=points)
    np.testing.assert_allclose(mapped.prompt.points_rc, [expected])


def test_4d_outer_axis_filters_points():
    image = Image(np.zeros((2, 3, 10, 12)))
    points = Points(np.array([[0, 1, 2, 3], [1, 1, 4, 5.0]]))
    mapped = collect_prompt(1, image, ImageAxes(4, 1), 1, 1, points_layer=points)
    assert mapped.point_indices == [1] and mapped.prompt.outer == 1
