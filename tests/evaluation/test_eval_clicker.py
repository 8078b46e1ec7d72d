"""The simulated user of the NoC protocol on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from eval_helpers import square

from napari_focsam.evaluation import Click, error_distance, next_click

HW = (64, 64)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def nothing() -> np.ndarray:
    return np.zeros(HW, dtype=bool)


def test_first_click_is_the_centre_of_a_square_object():
    gt = square(HW, 10, 30, 11)  # rows 10..20, cols 30..40: centre (15, 35), distance 6
    assert next_click(gt, nothing(), nothing(), rng()) == Click(15, 35, True)


def test_negative_click_in_a_false_positive_blob():
    gt = square(HW, 10, 10, 11)
    blob = square(HW, 46, 46, 9)  # centre (50, 50)
    assert next_click(gt, gt | blob, nothing(), rng()) == Click(50, 50, False)


def test_the_region_with_the_larger_distance_wins():
    gt = square(HW, 10, 10, 21)
    missed = square(HW, 12, 12, 13)  # false negatives, distance up to 7
    fp_blob = square(HW, 50, 50, 5)  # false positives, distance up to 3
    click = next_click(gt, (gt & ~missed) | fp_blob, nothing(), rng())
    assert click == Click(18, 18, True)
    click = next_click(gt, (gt & ~square(HW, 12, 12, 3)) | square(HW, 40, 40, 11), nothing(), rng())
    assert click == Click(45, 45, False)


def test_ties_go_to_a_negative_click():
    gt = square(HW, 5, 5, 20)
    missed = square(HW, 10, 10, 5)  # centre (12, 12), distance 3
    fp_blob = square(HW, 40, 40, 5)  # same shape: centre (42, 42), distance 3
    fn_dist = error_distance(missed).max()
    assert fn_dist == error_distance(fp_blob).max() == 3
    assert next_click(gt, (gt & ~missed) | fp_blob, nothing(), rng()) == Click(42, 42, False)


def test_image_border_counts_as_background():
    gt = square(HW, 0, 0, 11)  # touches the top and left borders
    click = next_click(gt, nothing(), nothing(), rng())
    assert click == Click(5, 5, True)  # the centre, not the corner pixel (0, 0)
    assert error_distance(gt)[0, 0] == 1.0
    assert error_distance(gt)[5, 5] == 6.0


def test_clicked_pixels_are_never_clicked_again():
    gt = square(HW, 10, 30, 11)
    clicked = nothing()
    seen = set()
    for _ in range(30):
        click = next_click(gt, nothing(), clicked, rng())
        assert click.positive and gt[click.row, click.col]
        assert (click.row, click.col) not in seen
        seen.add((click.row, click.col))
        clicked[click.row, click.col] = True
    assert (15, 35) in seen


def test_no_click_when_the_mask_is_exact_or_only_clicked_errors_are_left():
    gt = square(HW, 10, 30, 11)
    assert next_click(gt, gt, nothing(), rng()) is None
    pred = gt.copy()
    pred[15, 35] = False
    clicked = nothing()
    clicked[15, 35] = True
    assert next_click(gt, pred, clicked, rng()) is None


def test_ignored_pixels_are_never_errors():
    gt = square(HW, 10, 10, 11)
    band = square(HW, 9, 9, 13) & ~gt
    assert next_click(gt, gt | band, nothing(), rng(), ignore=band) is None
    click = next_click(gt, nothing(), nothing(), rng(), ignore=square(HW, 10, 10, 6))
    assert click.positive and not (10 <= click.row < 16 and 10 <= click.col < 16)


def test_tie_breaking_is_seeded_and_deterministic():
    gt = square(HW, 10, 4, 20)
    gt[10:30, 4:60] = True  # a 20 x 56 band: many pixels at the maximal distance 10
    dist = error_distance(gt)
    ties = {tuple(p) for p in np.argwhere(dist == dist.max())}
    assert len(ties) > 10

    def sequence(seed: int) -> list[Click]:
        generator, clicked, out = rng(seed), nothing(), []
        for _ in range(5):
            click = next_click(gt, nothing(), clicked, generator)
            clicked[click.row, click.col] = True
            out.append(click)
        return out

    assert sequence(3) == sequence(3)
    firsts = {(c.row, c.col) for c in (sequence(s)[0] for s in range(12))}
    assert firsts <= ties and len(firsts) > 1


def test_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        next_click(np.zeros((4, 4), bool), np.zeros((4, 5), bool), np.zeros((4, 4), bool), rng())
    with pytest.raises(ValueError, match="2D"):
        next_click(np.zeros((4, 4, 1), bool), np.zeros((4, 4), bool), np.zeros((4, 4), bool), rng())


def test_error_distance_equals_the_full_image_transform_of_the_padded_region():
    from scipy.ndimage import distance_transform_edt

    gen = rng(5)
    for _ in range(50):
        h, w = gen.integers(1, 30, size=2)
        region = gen.random((h, w)) < gen.random()
        full = distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
        assert np.array_equal(error_distance(region), full)
