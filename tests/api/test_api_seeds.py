"""Objects seeded from a label image: ids, masks, boxes, interior points, speed, errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
from api_helpers import HW, install_fakes, make_stack
from scipy import ndimage

from napari_focsam.api.models import load_model
from napari_focsam.api.seeds import (
    LabelSeeds,
    SeedError,
    interior_point,
    label_seeds,
    prompts_from_labels,
)
from napari_focsam.api.segmenter import Segmenter


def _labels() -> np.ndarray:
    """Three labels with ids 3, 7, 12 (a rectangle, an L shape touching the border, a speck)."""
    lab = np.zeros((30, 40), dtype=np.uint16)
    lab[5:12, 4:20] = 3  # 7 x 16 rectangle
    lab[0:20, 30:33] = 7  # L: a bar down from the top edge...
    lab[17:20, 33:40] = 7  # ...and a foot to the right edge
    lab[25:27, 2:4] = 12  # 4 pixels
    return lab


def test_every_label_becomes_an_object_with_its_id_mask_box_and_interior_point():
    lab = _labels()
    seeds = label_seeds(lab, min_area=1)
    assert isinstance(seeds, LabelSeeds) and len(seeds) == 3
    assert seeds.ids.tolist() == [3, 7, 12]
    assert seeds.areas.tolist() == [7 * 16, 20 * 3 + 3 * 7, 4]
    assert seeds.boxes_rc.tolist() == [[5, 4, 12, 20], [0, 30, 20, 40], [25, 2, 27, 4]]
    for k, obj in enumerate(seeds.ids.tolist()):
        np.testing.assert_array_equal(seeds.mask(k), lab == obj)
        r, c = seeds.points_rc[k].astype(int)
        assert lab[r, c] == obj
        # the point is a maximum of the distance to the background (border = background)
        dist = ndimage.distance_transform_edt(np.pad(lab == obj, 1))[1:-1, 1:-1]
        assert dist[r, c] == dist.max()
    # the rectangle's centre row; the L's point is not on the image border
    assert seeds.points_rc[0, 0] == 8 and 4 + 3 <= seeds.points_rc[0, 1] <= 20 - 4
    assert seeds.points_rc[1, 0] > 0


def test_small_labels_are_left_out():
    assert label_seeds(_labels(), min_area=5).ids.tolist() == [3, 7]
    assert label_seeds(np.zeros((4, 5), np.int32)).ids.tolist() == []


def test_interior_point_of_a_disc_is_its_centre():
    yy, xx = np.mgrid[:21, :25]
    disc = (yy - 10) ** 2 + (xx - 12) ** 2 <= 49
    assert interior_point(disc) == (10, 12)
    # a mask filling its crop: the crop's edge is background
    assert interior_point(np.ones((5, 5), bool)) == (2, 2)


def test_huge_and_bool_ids():
    lab = _labels().astype(np.int64)
    big = np.where(lab > 0, lab * (1 << 40), 0)
    seeds = label_seeds(big, min_area=1)
    assert seeds.ids.tolist() == [3 << 40, 7 << 40, 12 << 40]
    np.testing.assert_array_equal(seeds.mask(1), lab == 7)
    full = np.where(lab > 0, lab * (1 << 40), 5 << 50)  # no background at all
    assert len(label_seeds(full, min_area=1)) == 4
    assert label_seeds(lab > 0, min_area=1).ids.tolist() == [1]


@pytest.mark.parametrize(("labels", "match"), [
    (np.zeros((2, 3, 4), np.int32), "2D"),
    (np.zeros((3, 4), np.float32), "integers"),
    (np.full((3, 4), -1, np.int32), "negative"),
    (np.full((3, 4), 2**64 - 1, np.uint64), "at most"),
])
def test_bad_label_images_are_refused(labels, match):
    with pytest.raises(SeedError, match=match):
        label_seeds(labels)


def test_prompt_kinds():
    lab = _labels()
    masks = prompts_from_labels(lab, 4, min_area=1)
    assert [(p.obj_id, p.frame, p.outer) for p in masks] == [(3, 4, None), (7, 4, None), (12, 4, None)]
    for p in masks:
        np.testing.assert_array_equal(p.mask, lab == p.obj_id)
        assert p.box_rc is None and len(p.points_rc) == 0
    both = prompts_from_labels(lab, 2, outer=1, prompt="box+point")
    assert [p.obj_id for p in both] == [3, 7]
    assert both[0].mask is None and both[0].box_rc.tolist() == [5, 4, 12, 20]
    assert both[0].points_rc.shape == (1, 2) and both[0].labels.tolist() == [1]
    assert both[0].outer == 1
    boxes = prompts_from_labels(lab, 0, prompt="box")
    assert len(boxes[0].points_rc) == 0 and boxes[0].box_rc is not None
    with pytest.raises(SeedError, match="prompt must be one of"):
        prompts_from_labels(lab, 0, prompt="circle")


def test_hundreds_of_labels_are_measured_in_about_one_pass():
    """625 discs on a 2048 x 2048 frame: seconds at most, whatever the machine (a per-label
    scan of the whole frame would take minutes on a busy CPU)."""
    lab = np.zeros((2048, 2048), np.int32)
    yy, xx = np.mgrid[:61, :61]
    disc = (yy - 30) ** 2 + (xx - 30) ** 2 <= 900
    for k in range(625):
        r, c = 10 + (k // 25) * 80, 10 + (k % 25) * 80
        lab[r:r + 61, c:c + 61][disc] = k + 1
    start = time.perf_counter()
    seeds = label_seeds(lab)
    elapsed = time.perf_counter() - start
    assert len(seeds) == 625 and (seeds.areas == disc.sum()).all()
    np.testing.assert_array_equal(seeds.points_rc[0], [40, 40])
    assert elapsed < 10.0, f"{elapsed:.1f} s for 625 labels"


def test_seeds_from_labels_propagate_with_their_ids(monkeypatch):
    """A previous session's labels on frame 2 seed SAM 2 (stand-in) and keep their ids."""
    install_fakes(monkeypatch, interactive=False)  # mask prompts need no drawing
    sam2 = load_model("sam2_test_tiny", weights="random", device="cpu", dtype="fp32")
    data, truth = make_stack(6)
    seg = Segmenter(data, interactive=sam2, propagation=sam2, stack_axis=0, cache_root=False)
    previous = np.where(truth[2] > 0, truth[2] * 10 + 5, 0)  # ids 15 and 25
    prompts = prompts_from_labels(previous, 2)
    seg.check_prompt(prompts[0])
    list(seg.propagate(prompts, "both"))
    expected = np.where(truth > 0, truth * 10 + 5, 0)
    np.testing.assert_array_equal(seg.labels, expected)
    assert seg.labels.shape == (6, *HW)
