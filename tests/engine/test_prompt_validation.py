"""`validate_prompts`: canonical forms and one clear error per kind of mistake."""

from __future__ import annotations

import numpy as np
import pytest

from napari_focsam.engine.prompts import PromptError, Prompts, validate_prompts

HW = (600, 450)
MASK_HW = (256, 256)


def _validate(**kwargs) -> Prompts:
    return validate_prompts(image_hw=HW, mask_input_hw=MASK_HW, **kwargs)


def test_points_and_labels_are_normalised():
    p = _validate(points=[[300, 100], [0, 449.5]], labels=[1, 0])
    assert p.points.dtype == np.float64 and p.points.shape == (2, 2)
    assert p.labels.dtype == np.int32 and p.labels.tolist() == [1, 0]
    assert p.box is None and p.mask_input is None


def test_bool_labels_are_accepted():
    p = _validate(points=np.array([[1.0, 2.0], [3.0, 4.0]]), labels=np.array([True, False]))
    assert p.labels.tolist() == [1, 0]


def test_box_corners_are_reordered():
    p = _validate(box=np.array([540, 315, 120, 45]))
    np.testing.assert_array_equal(p.box, [120, 45, 540, 315])
    assert p.box.dtype == np.float64


def test_box_may_touch_the_far_image_border_and_be_1x4():
    p = _validate(box=np.array([[0, 0, 600, 450]]))
    np.testing.assert_array_equal(p.box, [0, 0, 600, 450])


def test_mask_input_alone_is_a_prompt_and_gets_a_leading_axis():
    p = _validate(mask_input=np.zeros(MASK_HW, dtype=np.float64))
    assert p.mask_input.shape == (1, 256, 256) and p.mask_input.dtype == np.float32
    assert p.points is None and p.box is None
    assert _validate(mask_input=np.zeros((1, *MASK_HW))).mask_input.shape == (1, 256, 256)


def test_empty_points_count_as_no_points():
    p = _validate(points=np.zeros((0, 2)), labels=np.zeros(0, dtype=int), box=[1, 1, 5, 5])
    assert p.points is None and p.labels is None
    p = _validate(points=np.zeros((0, 2)), box=[1, 1, 5, 5])
    assert p.points is None
    with pytest.raises(PromptError, match="at least one point"):
        _validate(points=np.zeros((0, 2)), labels=[])


def test_prompts_are_frozen():
    p = _validate(points=[[1, 2]], labels=[1])
    with pytest.raises(AttributeError):
        p.points = None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "at least one point, a box or a mask"),
        ({"points": [[1, 2]]}, "without labels"),
        ({"labels": [1]}, "without points"),
        ({"points": [[1, 2], [3, 4]], "labels": [1]}, r"one per point"),
        ({"points": [1, 2], "labels": [1]}, r"\(N, 2\)"),
        ({"points": [[1, 2, 3]], "labels": [1]}, r"\(N, 2\)"),
        ({"points": [[1, 2]], "labels": [2]}, "label 0 is 2"),
        ({"points": [[1, 2], [3, 4]], "labels": [1, -1]}, "label 1 is -1"),
        ({"points": [[1, 2]], "labels": [1.0]}, "integers or booleans"),
        ({"points": [[1, 2]], "labels": [[1]]}, r"shape \(N,\)"),
        ({"points": [["a", "b"]], "labels": [1]}, "real numbers"),
        ({"points": [[1, 2], [np.nan, 3]], "labels": [1, 1]}, r"point 1 .* not finite"),
        ({"points": [[1, 2], [600, 3]], "labels": [1, 1]},
         r"point 1 \(row, col\) = \(600, 3\) is outside the image of 600 x 450"),
        ({"points": [[-0.5, 2]], "labels": [1]}, r"point 0 .*outside"),
        ({"points": [[5, 450]], "labels": [0]}, r"point 0 .*0 <= col < 450"),
        ({"box": [0, 0, 10]}, r"shape \(4,\)"),
        ({"box": [0, 0, 10, np.inf]}, "not finite"),
        ({"box": [-1, 0, 10, 10]}, r"box .*\(-1, 0, 10, 10\) reaches outside .* 600 x 450"),
        ({"box": [0, 0, 601, 10]}, "reaches outside"),
        ({"box": [0, 0, 10, 451]}, "reaches outside"),
        ({"box": [5, 0, 5, 10]}, "zero area"),
        ({"box": [0, 7, 10, 7]}, "zero area"),
        ({"mask_input": np.zeros((128, 128))}, r"\(256, 256\)"),
        ({"mask_input": np.zeros((3, 256, 256))}, "low_res_logits"),
        ({"mask_input": np.zeros((256, 256), dtype=bool)}, "not a boolean mask"),
        ({"mask_input": np.full((256, 256), np.nan)}, "finite"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(PromptError, match=match):
        _validate(**kwargs)


def test_prompt_error_is_a_value_error():
    assert issubclass(PromptError, ValueError)
