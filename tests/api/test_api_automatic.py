"""Segment everything through a `Segmenter`: cached features, tiles, label writing, stacks,
progress and cancel (tiny random-weight SAM with a 128 px input, so frames encode quickly)."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from napari_focsam.api.automatic import (
    automatic_discover,
    default_params,
    find_masks,
    paint_masks,
    segment_everything,
    segment_everything_stack,
)
from napari_focsam.api.models import LoadedModel, load_model
from napari_focsam.api.segmenter import Progress, Segmenter
from napari_focsam.engine.automatic import (
    AutoMask,
    AutoMaskParams,
    AutoMaskParamsError,
    AutomaticMaskGenerator,
    Crop,
)
from napari_focsam.engine.tiling import Tiling
from napari_focsam.families import family_of
from napari_focsam.models.sam import SAM_CONFIGS, build_sam

SMALL = 128
#: Settings that keep masks of a random-weight model (no quality filter), few clicks.
LOOSE = AutoMaskParams(points_per_side=5, points_per_batch=10, pred_iou_thresh=0.0,
                       stability_score_thresh=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_sam() -> LoadedModel:
    cfg = SAM_CONFIGS["sam_test_tiny"]
    cfg = dataclasses.replace(cfg, name="sam_test_small128",
                              encoder=dataclasses.replace(cfg.encoder, image_size=SMALL))
    torch.manual_seed(0)
    net = build_sam(cfg).eval()
    return LoadedModel("sam_test_small128", family_of("sam_test_tiny"), net, torch.device("cpu"),
                       torch.float32, "random", "random-small128")


def _image(hw, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, hw).astype(np.uint8)
    yy, xx = np.mgrid[:hw[0], :hw[1]]
    for k in range(4):
        cy, cx = rng.uniform(10, hw[0] - 10), rng.uniform(10, hw[1] - 10)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(20, 90)] = 200 - 20 * k
    return img


def _segmenter(model, data, **kw) -> Segmenter:
    return Segmenter(data, interactive=model, cache_root=False, **kw)


# ----------------------------------------------------------------------------- painting


def _auto(mask: np.ndarray, iou: float = 0.9) -> AutoMask:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
    return AutoMask(mask[box[0]:box[2], box[1]:box[3]].copy(), box, int(mask.sum()), iou, 0.99,
                    (float(rows[0]), float(cols[0])), (0, 0, *mask.shape), mask.shape)


def test_paint_masks_ids_order_modes_and_min_area():
    hw = (20, 20)
    big = np.zeros(hw, bool)
    big[2:14, 2:14] = True
    inner = np.zeros(hw, bool)
    inner[5:8, 5:8] = True
    speck = np.zeros(hw, bool)
    speck[18, 18:20] = True
    existing = np.zeros(hw, np.int32)
    existing[0:4, 0:4] = 3
    masks = [_auto(inner), _auto(big), _auto(speck)]

    out, ids = paint_masks(existing, masks, first_id=4)
    assert ids == [4, 5, 6] and out.dtype == np.int32
    assert (out[0:4, 0:4] == 3).all()  # existing labels kept
    assert (out[5:8, 5:8] == 4).all()  # the small object lies on top of the large one
    assert (out[big & ~inner & (existing == 0)] == 5).all()
    assert (out[18, 18:20] == 6).all()

    out, ids = paint_masks(existing, masks, first_id=4, mode="replace", min_area=3)
    assert ids == [4, 5] and not (out == 3).any() and (out[2:4, 2:4] == 5).all()
    assert (out[18] == 0).all()  # the speck is below min_area

    covered = np.full(hw, 7, np.int32)  # nothing left for new objects
    out, ids = paint_masks(covered, masks, first_id=8)
    assert ids == [] and (out == 7).all()
    with pytest.raises(AutoMaskParamsError):
        paint_masks(existing, masks, first_id=4, mode="over")
    with pytest.raises(AutoMaskParamsError, match="does not fit"):
        paint_masks(existing.astype(np.int8), masks, first_id=126)


# ----------------------------------------------------------------------------- one frame


def test_default_params_follow_the_family(small_sam):
    seg = _segmenter(small_sam, _image((40, 50)))
    assert default_params(seg) == AutoMaskParams()
    assert default_params(seg, points_per_side=8).points_per_side == 8
    sam2 = load_model("sam2_test_tiny", weights="random", device="cpu", dtype="fp32")
    assert default_params(_segmenter(sam2, _image((40, 50)))) == AutoMaskParams.sam2()


def test_segment_everything_adds_objects_after_the_existing_ones(small_sam):
    seg = _segmenter(small_sam, _image((90, 110)))
    seg.labels[0, :10, :10] = 5
    out = segment_everything(seg, params=LOOSE.replace(min_area=4))
    assert seg.stores["interactive"].encoder_calls == 1  # the cached frame features
    assert (out[:10, :10] == 5).all()
    new = np.unique(out[out != 5])
    new = new[new > 0]
    assert len(new) and new.tolist() == list(range(6, 6 + len(new)))
    assert all((out == i).sum() >= 4 for i in new)
    np.testing.assert_array_equal(seg.labels[0], out)

    again = segment_everything(seg, params=LOOSE, mode="replace")
    assert not (again == 5).any() and again.max() > out.max()
    assert seg.stores["interactive"].encoder_calls == 1  # still cached


def test_segment_everything_encodes_crops_from_their_region(small_sam):
    seg = _segmenter(small_sam, _image((90, 110)))
    params = LOOSE.replace(crop_n_layers=1, crop_n_points_downscale_factor=2)
    generator = AutomaticMaskGenerator(params)
    regions = []
    original = seg.source.region

    def region(index, rows, cols):
        regions.append((rows, cols))
        return original(index, rows, cols)

    seg.source.region = region
    steps = find_masks(seg, 0, generator)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            masks = done.value
            break
    crops = generator.crops((90, 110))
    assert regions == [((c.box[0], c.box[2]), (c.box[1], c.box[3])) for c in crops[1:]]
    assert {m.crop_box for m in masks} <= {c.box for c in crops}


class PerfectDecoder:
    """Wraps a real predictor (features set as usual) but decodes each click as the bright
    component under it in the current crop (three copies, confident): a stand-in model that
    finds every object exactly, so tile merging can be checked object by object."""

    def __init__(self, real, image: np.ndarray, crops) -> None:
        self.real, self.image, self.crops = real, image, iter(crops)
        self.box = None
        self.mask_input_size = real.mask_input_size

    @property
    def original_size(self):
        return self.real.original_size

    def set_frame(self, features, shape):
        self.real.set_frame(features, shape)
        self.box = next(self.crops).box

    def set_image(self, image, **kw):
        self.real.set_image(image, **kw)
        self.box = next(self.crops).box

    def predict_batch(self, points, labels, *, multimask=True, mask_input=None, min_region_area=0):
        from skimage.measure import label

        from napari_focsam.engine.interactive import BatchPrediction

        r0, c0, r1, c1 = self.box
        comps = label(self.image[r0:r1, c0:c1] > 100, connectivity=1)
        out = []
        for (r, c), in np.asarray(points):
            comp = comps[int(r), int(c)]
            mask = (comps == comp) if comp else np.zeros(comps.shape, bool)
            out.append(np.stack([np.where(mask, 20.0, -20.0)] * 3))
        flat = torch.from_numpy(np.stack(out).astype(np.float32)).flatten(0, 1)
        n = len(out)
        return BatchPrediction(torch.full((n, 3), 0.95), torch.zeros(n, 3, 4, 4), lambda i: flat[i])


def test_tiled_frames_run_per_tile_and_find_each_object_once(small_sam):
    from skimage.measure import label

    image = _image((100, 300), seed=3)
    seg = _segmenter(small_sam, image, tiling=Tiling("on", tile=SMALL, halo=40))
    grid = seg.tile_grid
    assert grid is not None and grid.n_tiles > 1
    params = LOOSE.replace(points_per_side=24, points_per_batch=200, stability_score_thresh=0.5)
    generator = AutomaticMaskGenerator(params)
    steps = find_masks(seg, 0, generator)  # real model: the plumbing runs
    while True:
        try:
            next(steps)
        except StopIteration:
            break
    assert seg.tile_store.encoder_calls == grid.n_tiles
    assert seg.stores["interactive"].encoder_calls == 1  # the whole frame, for large objects

    plan = [Crop((0, 0, 100, 300), 0), *generator.crops((100, 300), [
        (r0, c0, r1, c1) for t in range(grid.n_tiles) for (r0, r1), (c0, c1) in [grid.region(t)]])]
    perfect = PerfectDecoder(seg.interactive.interactive_predictor(), image, plan)
    steps = find_masks(seg, 0, generator, predictor=perfect)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            masks = done.value
            break
    objects = label(image > 100, connectivity=1)
    found = sorted(tuple(np.flatnonzero(m.mask().ravel())) for m in masks)
    expected = sorted(tuple(np.flatnonzero((objects == k).ravel()))
                      for k in range(1, objects.max() + 1))
    assert found == expected  # every object once, whichever tile saw it
    assert all(m.crop_box != (0, 0, 100, 300) for m in masks)  # tiles win over the frame


# ----------------------------------------------------------------------------- stacks


def test_stack_progress_writes_every_frame(small_sam):
    data = np.stack([_image((60, 70), seed=s) for s in range(3)])
    seg = _segmenter(small_sam, data, stack_axis=0)
    reports = list(segment_everything_stack(seg, params=LOOSE))
    per_frame = AutomaticMaskGenerator(LOOSE).n_batches(AutomaticMaskGenerator(LOOSE).crops((60, 70)))
    assert all(isinstance(r, Progress) and r.stage == "everything" for r in reports)
    assert [r.done for r in reports] == list(range(1, 3 * per_frame + 1))
    assert {r.total for r in reports} == {3 * per_frame}
    assert [r.frame for r in reports[::per_frame]] == [0, 1, 2]
    ids = [set(np.unique(seg.labels[f]).tolist()) - {0} for f in range(3)]
    assert all(ids) and not (ids[0] & ids[1]) and not (ids[1] & ids[2])  # new ids everywhere


def test_stack_cancel_keeps_the_frames_done(small_sam):
    data = np.stack([_image((60, 70), seed=s) for s in range(3)])
    seg = _segmenter(small_sam, data, stack_axis=0)
    event = threading.Event()
    done_frames = []
    for report in segment_everything_stack(seg, [0, 2], params=LOOSE, cancel_event=event):
        if report.frame == 2:
            event.set()
        done_frames.append(report.frame)
    assert done_frames[-1] == 2 and seg.labels[0].any()
    assert not seg.labels[1].any() and not seg.labels[2].any()

    event2 = threading.Event()
    event2.set()  # stops the encoder of the first frame within a block
    fresh = _segmenter(small_sam, data, stack_axis=0)
    assert list(segment_everything_stack(fresh, params=LOOSE, cancel_event=event2)) == []
    assert not fresh.labels.any()


def test_stack_checks_its_arguments(small_sam):
    seg = _segmenter(small_sam, np.stack([_image((40, 50))] * 2), stack_axis=0)
    with pytest.raises(AutoMaskParamsError):
        segment_everything_stack(seg, mode="over")
    with pytest.raises(IndexError):
        segment_everything_stack(seg, [5])


def test_automatic_discover_finds_the_masks_without_writing(small_sam):
    data = np.stack([_image((60, 70), seed=s) for s in range(2)])
    seg = _segmenter(small_sam, data, stack_axis=0)
    discover = automatic_discover(seg, LOOSE)
    found = discover(1)
    assert found and all(isinstance(m, AutoMask) and m.mask().shape == (60, 70) for m in found)
    assert not seg.labels.any()
    # the same masks as segment everything paints on that frame
    reference = _segmenter(small_sam, data, stack_axis=0)
    list(segment_everything_stack(reference, [1], params=LOOSE))
    painted, _ = paint_masks(np.zeros((60, 70), np.int32), found, first_id=1,
                             mode="only_background", min_area=0)
    np.testing.assert_array_equal(painted, reference.labels[1])


def test_automatic_discover_stops_on_cancel(small_sam):
    from napari_focsam.engine.cancel import Interrupted

    seg = _segmenter(small_sam, np.stack([_image((60, 70))] * 2), stack_axis=0)
    event = threading.Event()
    event.set()
    with pytest.raises(Interrupted):
        automatic_discover(seg, LOOSE, cancel_event=event)(0)
