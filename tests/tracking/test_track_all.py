"""Track all (`TrackAll`) on synthetic stacks whose answer is known.

Most tests track with `BrightTracker` (a stand-in for SAM 2 that follows bright components and
reports presence, see ``track_helpers``) so that labels and lineages can be checked exactly;
the last ones run the real tiny SAM 2 (random weights) through the same code for the plumbing:
objects entering and leaving the propagation engine in the middle of a pass, presence scores,
cancellation inside a frame.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import pytest
import tifffile
import torch
from track_helpers import BrightTracker, Disc, components, render_discs

from napari_focsam.api.models import load_model
from napari_focsam.api.segmenter import PromptPlacementError, Segmenter
from napari_focsam.engine.propagation import VideoPropagator
from napari_focsam.families import ModelChoiceError
from napari_focsam.samples.timelapse import synthetic_cell_timelapse
from napari_focsam.tracking import TrackingError, TrackTable, read_ctc_tracks
from napari_focsam.tracking.lifecycle import TrackOptions
from napari_focsam.tracking.track_all import Division, TrackAll, TrackProgress

HW = (48, 64)


@pytest.fixture(scope="module")
def sam2():
    return load_model("sam2_test_tiny", weights="random", device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def sam():
    return load_model("sam_test_tiny", weights="random", device="cpu", dtype="fp32")


@pytest.fixture(autouse=True)
def _fresh_trackers():
    BrightTracker.instances.clear()
    yield
    BrightTracker.instances.clear()


def _segmenter(images, model, **kw) -> Segmenter:
    return Segmenter(images, interactive=model, propagation=model, stack_axis=0, cache_root=False,
                     **kw)


def _discover(images):
    return lambda flat: components(images[flat])


def _run(track: TrackAll, **kw) -> list[TrackProgress]:
    return list(track.run(**kw))


# ---------------------------------------------------------------------- seeding
def test_seeds_from_a_label_image_keep_their_ids(sam2):
    images, truth = render_discs(8, HW, [Disc(12, 10, 5, vcol=1.5), Disc(34, 50, 6, vcol=-1)])
    seeds = np.select([truth[0] == 1, truth[0] == 2], [40, 7], 0)  # cellpose-like ids
    seg = _segmenter(images, sam2)
    track = TrackAll(seg, seeds=seeds, propagator=BrightTracker)
    steps = _run(track)
    expected = np.select([truth == 1, truth == 2], [40, 7], 0)
    np.testing.assert_array_equal(seg.labels, expected)
    assert [(s.stage, s.done, s.total, s.started) for s in steps[:2]] == [
        ("seed", 1, 2, (7,)), ("seed", 2, 2, (40,))]
    assert [(s.stage, s.frame, s.done, s.total) for s in steps[2:]] == [
        ("track", t, t + 1, 8) for t in range(8)]
    assert track.table.to_rows().tolist() == [[7, 0, 7, 0], [40, 0, 7, 0]]
    (tracker,) = BrightTracker.instances
    assert tracker.added == [(7, 0), (40, 0)]


def test_seed_ids_beyond_int32_widen_the_labels(sam2):
    images, truth = render_discs(4, HW, [Disc(12, 10, 5, vcol=1.5)])
    seg = _segmenter(images, sam2)
    big = 2**40
    track = TrackAll(seg, seeds=np.where(truth[0] > 0, big, 0), propagator=BrightTracker)
    _run(track)
    assert seg.labels.dtype == np.int64
    np.testing.assert_array_equal(seg.labels, np.where(truth > 0, big, 0))
    assert track.table.ids == [big]


class _Found:
    """A found mask as automatic mask generation gives it (``AutoMask.mask()``)."""

    def __init__(self, mask: np.ndarray) -> None:
        self._mask = mask

    def mask(self) -> np.ndarray:
        return self._mask


@pytest.mark.parametrize("as_objects", [False, True], ids=["arrays", "automask"])
def test_automatic_seeding_numbers_the_found_objects(sam2, as_objects):
    images, truth = render_discs(6, HW, [Disc(12, 10, 4, vcol=1), Disc(34, 50, 7, vcol=-1),
                                         Disc(10, 50, 5)])
    seg = _segmenter(images, sam2)

    def discover(flat):
        found = components(images[flat])
        return [_Found(m) for m in found] if as_objects else found

    track = TrackAll(seg, discover=discover, options=TrackOptions(discover_every=0),
                     propagator=BrightTracker)
    _run(track)
    # ids 1, 2, 3 from the largest found mask down
    expected = np.select([truth == 2, truth == 3, truth == 1], [1, 2, 3], 0)
    np.testing.assert_array_equal(seg.labels, expected)
    assert track.table.ids == [1, 2, 3]


# ---------------------------------------------------------------------- new and lost objects
@pytest.mark.parametrize(("every", "first"), [(1, 5), (5, 5), (3, 6)])
def test_a_cell_appearing_later_gets_a_new_id_from_the_frame_it_is_found(sam2, every, first):
    images, truth = render_discs(10, HW, [Disc(12, 10, 5, vcol=1.5), Disc(34, 50, 6, vcol=-1),
                                          Disc(24, 30, 5, first=5)])
    seg = _segmenter(images, sam2)
    track = TrackAll(seg, seeds=np.where(truth[0] == 2, 9, truth[0]), discover=_discover(images),
                     options=TrackOptions(discover_every=every), propagator=BrightTracker)
    steps = [s for s in _run(track) if s.stage == "track"]
    new = 10  # after the largest seed id
    assert [s.frame for s in steps if s.started] == [first]
    assert steps[first].started == (new,) and steps[first].n_objects == 3
    assert track.table.begin[new] == first and track.table.end[new] == 9
    for t in range(10):
        assert (seg.labels[t] == new).any() == (t >= first), f"frame {t}"
    np.testing.assert_array_equal(seg.labels[first:] == new, truth[first:] == 3)
    # frames 5 .. first - 1 show the cell nowhere (not found yet), the others as before
    np.testing.assert_array_equal(seg.labels[:5], np.where(truth[:5] == 2, 9, truth[:5]))


def test_a_cell_leaving_the_field_ends_its_track(sam2):
    # disc 1 moves right by 5 px per frame and leaves the 64 px wide field after frame 12
    images, truth = render_discs(18, HW, [Disc(12, 4, 5, vcol=5), Disc(34, 30, 6)])
    last_seen = max(t for t in range(18) if (truth[t] == 1).any())
    assert last_seen == 12
    seg = _segmenter(images, sam2)
    track = TrackAll(seg, seeds=truth[0], options=TrackOptions(lost_after=3, min_area=1),
                     propagator=BrightTracker)
    steps = [s for s in _run(track) if s.stage == "track"]
    assert track.table.end[1] == last_seen and track.table.end[2] == 17
    (ended,) = [s for s in steps if s.ended]
    assert ended.ended == (1,) and ended.frame == last_seen + 3 and ended.n_objects == 1
    (tracker,) = BrightTracker.instances
    assert tracker.removed == [(1, last_seen + 3)] and tracker.obj_ids == (2,)
    np.testing.assert_array_equal(seg.labels, truth)


# ---------------------------------------------------------------------- divisions
@pytest.fixture(scope="module")
def timelapse():
    return synthetic_cell_timelapse()


@pytest.fixture(scope="module")
def tracked_timelapse(sam2, timelapse):
    """The sample time-lapse tracked from its first frame's ground truth. The stand-in
    follows the ground truth's foreground (``labels > 0``; its cells never touch), never its
    ids, so ids, divisions and the lineage all come from "Track all"."""
    images, gt, _ = timelapse
    seg = _segmenter(images, sam2)
    track = TrackAll(seg, seeds=gt[0],
                     propagator=functools.partial(BrightTracker, foreground=lambda t: gt[t] > 0))
    steps = _run(track)
    return seg, track, steps


def _id_map(ours: np.ndarray, gt: np.ndarray) -> dict[int, int]:
    """Each of our ids -> the ground-truth id it overlaps on its first frame."""
    mapping = {}
    for obj in np.unique(ours[ours > 0]).tolist():
        t = int(np.flatnonzero((ours == obj).any(axis=(1, 2)))[0])
        values, counts = np.unique(gt[t][ours[t] == obj], return_counts=True)
        mapping[obj] = int(values[np.argmax(counts)])
    return mapping


def test_dividing_cells_give_two_daughters_with_the_right_parent(timelapse, tracked_timelapse):
    _, gt, lineage = timelapse
    seg, track, steps = tracked_timelapse
    gt_table = TrackTable.from_rows(lineage)
    assert len(gt_table.parents) == 4  # two divisions in the sample
    mapping = _id_map(seg.labels, gt)
    assert len(set(mapping.values())) == len(mapping) == len(gt_table)
    # the labels are the ground truth up to the ids, frame by frame
    lut = np.zeros(max(mapping) + 1, dtype=gt.dtype)
    for ours, theirs in mapping.items():
        lut[ours] = theirs
    np.testing.assert_array_equal(lut[seg.labels], gt)
    # the lineage is the ground truth's: same begin / end frames and parents
    mapped = sorted([mapping[k], b, e, mapping[p] if p else 0]
                    for k, b, e, p in track.table.to_rows().tolist())
    assert mapped == lineage.tolist()
    # divisions were reported once each, from the frame the split started
    divisions = [d for s in steps for d in s.divisions]
    assert sorted((mapping[d.mother], d.frame) for d in divisions) == sorted(
        (gt_table.parents[c], gt_table.begin[c]) for c in gt_table.parents)[::2]
    for s in steps:
        for d in s.divisions:
            assert isinstance(d, Division) and track.table.children_of(d.mother) == list(d.daughters)
            assert s.frame == d.frame + 2  # confirmed after division_min_frames = 3
            assert s.rewritten == (d.frame, d.frame + 1)
    # the mothers' ids keep their seeds' ids
    assert {d.mother for d in divisions} <= set(np.unique(gt[0]).tolist())


def test_divisions_can_be_switched_off(sam2, timelapse):
    """A z-stack's objects do not divide: with ``division_min_frames=0`` a split mask stays
    one object (the mothers keep both daughters' pixels)."""
    images, gt, _ = timelapse
    seg = _segmenter(images, sam2)
    track = TrackAll(seg, seeds=gt[0], options=TrackOptions(division_min_frames=0),
                     propagator=functools.partial(BrightTracker, foreground=lambda t: gt[t] > 0))
    steps = _run(track)
    assert not any(s.divisions for s in steps) and not track.table.parents
    assert track.table.ids == list(range(1, 7))
    np.testing.assert_array_equal(seg.labels > 0, gt > 0)


def test_the_tracks_layer_and_ctc_export_of_the_result(tmp_path, tracked_timelapse):
    seg, track, _ = tracked_timelapse
    tracks, graph = track.tracks_layer()
    assert graph == track.table.graph and len(graph) == 4
    assert set(np.unique(tracks[:, 0]).astype(int)) == set(track.table.ids)
    out = track.export_ctc(tmp_path / "01_RES")
    back = read_ctc_tracks(out)
    assert back.to_rows().tolist() == track.table.to_rows().tolist()
    masks = np.stack([tifffile.imread(out / f"mask{t:03d}.tif") for t in range(len(seg.labels))])
    np.testing.assert_array_equal(masks, seg.labels)


# ---------------------------------------------------------------------- cancel, ranges, 4D
@pytest.mark.parametrize("how", ["event", "close"])
def test_cancel_mid_run_keeps_the_frames_written(sam2, how):
    images, truth = render_discs(10, HW, [Disc(12, 10, 5, vcol=1.5), Disc(34, 50, 6, vcol=-1)])
    seg = _segmenter(images, sam2)
    event = threading.Event()
    track = TrackAll(seg, seeds=truth[0], propagator=BrightTracker)
    gen = track.run(cancel_event=event)
    for step in gen:
        if step.stage == "track" and step.frame == 3:
            if how == "event":
                event.set()
            else:
                gen.close()
    np.testing.assert_array_equal(seg.labels[:4], truth[:4])
    assert not seg.labels[4:].any()
    assert track.table.to_rows().tolist() == [[1, 0, 3, 0], [2, 0, 3, 0]]
    assert not track.labels()[4:].any()
    with pytest.raises(TrackingError, match="has run already"):
        track.run()


def test_seed_and_last_frame_leave_the_other_frames_alone(sam2):
    images, truth = render_discs(10, HW, [Disc(12, 10, 5, vcol=1.5)])
    seg = _segmenter(images, sam2)
    seg.labels[:] = 99
    track = TrackAll(seg, seeds=truth[3], options=TrackOptions(seed_frame=3, last_frame=6),
                     propagator=BrightTracker)
    steps = _run(track)
    assert [s.frame for s in steps if s.stage == "track"] == [3, 4, 5, 6]
    np.testing.assert_array_equal(seg.labels[3:7], truth[3:7])
    assert (seg.labels[:3] == 99).all() and (seg.labels[7:] == 99).all()
    result = track.labels()
    assert not result[:3].any() and not result[7:].any()
    np.testing.assert_array_equal(result[3:7], truth[3:7])
    assert track.table.to_rows().tolist() == [[1, 3, 6, 0]]


def test_one_outer_index_of_a_hyperstack(sam2):
    images, truth = render_discs(6, HW, [Disc(12, 10, 5, vcol=1.5)])
    data = np.stack([np.zeros_like(images), images])  # (outer, t, H, W)
    seg = Segmenter(data, interactive=sam2, propagation=sam2, stack_axis=1, outer_axis=0,
                    cache_root=False)
    track = TrackAll(seg, seeds=truth[0], outer=1, propagator=BrightTracker)
    steps = [s for s in _run(track) if s.stage == "track"]
    assert [s.frame for s in steps] == list(range(6, 12))  # flat frames of outer index 1
    assert not seg.labels[:6].any()
    np.testing.assert_array_equal(seg.labels[6:], truth)
    np.testing.assert_array_equal(track.labels(), truth)


def test_errors_are_raised_before_any_work(sam, sam2):
    images, truth = render_discs(4, HW, [Disc(12, 10, 5)])
    seg = _segmenter(images, sam2)
    with pytest.raises(TrackingError, match="seed labels or a discover"):
        TrackAll(seg)
    with pytest.raises(TrackingError, match="shape"):
        TrackAll(seg, seeds=truth[0][:, :-1])
    with pytest.raises(TrackingError, match="no object"):
        TrackAll(seg, seeds=np.zeros(HW, np.int32))
    with pytest.raises(PromptPlacementError, match="does not exist"):
        TrackAll(seg, seeds=truth[0], options=TrackOptions(seed_frame=4))
    with pytest.raises(PromptPlacementError, match="last frame 9"):
        TrackAll(seg, seeds=truth[0], options=TrackOptions(last_frame=9))
    with pytest.raises(ModelChoiceError, match="SAM 2"):
        TrackAll(Segmenter(images, interactive=sam, stack_axis=0, cache_root=False), seeds=truth[0])
    with pytest.raises(ModelChoiceError, match="stack"):
        TrackAll(Segmenter(images[0], interactive=sam2, propagation=sam2, cache_root=False),
                 seeds=truth[0])


# ---------------------------------------------------------------------- memory
class _Lanes:
    """A long stack drawn on demand: `n_lanes` discs crossing the field left to right at 3 px
    per frame, each leaving on the right and a new one entering on the left (so tracks keep
    ending and starting)."""

    def __init__(self, n: int, hw: tuple[int, int], n_lanes: int) -> None:
        self.shape = (n, *hw)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.n_lanes = n_lanes
        self._yy, self._xx = np.mgrid[:hw[0], :hw[1]]

    def __len__(self) -> int:
        return self.shape[0]

    def frame(self, t: int) -> np.ndarray:
        h, w = self.shape[1:]
        out = np.full((h, w), 10, np.uint8)
        period = w + 40
        for lane in range(self.n_lanes):
            cy = (lane + 0.5) * h / self.n_lanes
            cx = (3 * t + lane * period // self.n_lanes) % period - 20
            out[(self._yy - cy) ** 2 + (self._xx - cx) ** 2 <= 64] = 200
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):
            t, rest = key[0], key[1:]
        else:
            t, rest = key, ()
        if isinstance(t, (int, np.integer)):
            return self.frame(int(t))[rest] if rest else self.frame(int(t))
        return np.stack([self.frame(i) for i in range(*t.indices(len(self)))])[(slice(None), *rest)]

    def __array__(self, dtype=None, copy=None):
        return np.stack([self.frame(i) for i in range(len(self))])


def _label_frame(image: np.ndarray) -> np.ndarray:
    out = np.zeros(image.shape, np.int32)
    for k, m in enumerate(components(image), start=1):
        out[m] = k
    return out


def test_what_is_held_stays_bounded_over_500_frames(sam2):
    """500 frames of 256 x 256 with tracks ending and starting all along: the tracker holds a
    bounded number of masks and the live objects stay few (memory itself is measured by
    ``napari-focsam bench track-memory``, not here)."""
    n, hw = 500, (256, 256)
    stack = _Lanes(n, hw, n_lanes=6)
    seg = _segmenter(stack, sam2)
    track = TrackAll(seg, seeds=_label_frame(stack.frame(0)),
                     discover=lambda flat: components(stack.frame(flat)),
                     options=TrackOptions(discover_every=5, lost_after=3),
                     propagator=BrightTracker)
    held, alive = [], []
    for step in track.run():
        if step.stage != "track":
            continue
        tracker = BrightTracker.instances[-1]
        held.append(tracker.held_masks())
        alive.append(step.n_objects)
    assert max(alive) <= 8 and max(held) <= 3 * max(alive)
    assert max(held[400:]) <= max(held[:100]) + 2  # nothing accumulates with the frames
    # tracks did end and start all along (a disc crosses the field in about 100 frames)
    assert len(track.table) > 30
    assert sum(track.table.end[k] < n - 1 for k in track.table.ids) > 25


# ---------------------------------------------------------------------- the real engine
@pytest.fixture(scope="module")
def present_sam2():
    """The tiny SAM 2 with every object present (object score > 0)."""
    loaded = load_model("sam2_test_tiny", weights="random", device="cpu", dtype="fp32")
    with torch.no_grad():
        loaded.net.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 10.0
    return loaded


def _spy_factory(made: list):
    def factory(*args):
        made.append(VideoPropagator(*args))
        return made[-1]
    return factory


def test_real_sam2_takes_objects_in_the_middle_of_the_pass(present_sam2):
    images, truth = render_discs(6, (32, 40), [Disc(10, 8, 5, vcol=2)])
    corner = np.zeros((32, 40), bool)
    corner[26:32, 0:6] = True  # "found" on frame 3, away from the disc

    def discover(flat):
        return [corner] if flat == 3 else []

    seg = _segmenter(images, present_sam2)
    made: list[VideoPropagator] = []
    track = TrackAll(seg, seeds=truth[0], discover=discover,
                     options=TrackOptions(discover_every=3, division_min_frames=99),
                     propagator=_spy_factory(made))
    steps = [s for s in _run(track) if s.stage == "track"]
    (prop,) = made
    assert [s.frame for s in steps] == list(range(6))
    assert steps[3].started == (2,) and steps[3].n_objects == 2
    assert set(prop.tracks[2].cond) == {3}  # entered mid-pass as a mask prompt on frame 3
    assert set(prop.tracks[2].tracked) == {4, 5}  # and tracked from the next frame on
    assert set(prop.tracks[1].tracked) == set(range(6))
    assert track.table.begin[2] == 3 and (seg.labels[3][corner] == 2).all()
    assert not (seg.labels[:3] == 2).any()
    # bounded memory: no object holds tracked outputs beyond the model's windows
    cfg = present_sam2.net.config
    assert all(len(t.non_cond) <= cfg.max_obj_ptrs_in_encoder for t in prop.tracks.values())


def test_real_sam2_absent_objects_end_and_leave_the_engine():
    loaded = load_model("sam2_test_tiny", weights="random", device="cpu", dtype="fp32")
    with torch.no_grad():
        loaded.net.sam_mask_decoder.pred_obj_score_head.layers[-1].bias -= 10.0  # all absent
    images, truth = render_discs(7, (32, 40), [Disc(10, 8, 5), Disc(22, 30, 5)])
    seg = _segmenter(images, loaded)
    made: list[VideoPropagator] = []
    track = TrackAll(seg, seeds=truth[0], options=TrackOptions(lost_after=2),
                     propagator=_spy_factory(made))
    steps = [s for s in _run(track) if s.stage == "track"]
    assert steps[2].ended == (1, 2) and steps[2].n_objects == 0
    assert made[0].obj_ids == ()
    assert not seg.labels[1:].any()  # absent objects paint nothing
    assert track.table.to_rows().tolist() == [[1, 0, 0, 0], [2, 0, 0, 0]]


def test_real_sam2_cancel_inside_a_frame(present_sam2):
    images, truth = render_discs(6, (32, 40), [Disc(10, 8, 5, vcol=2)])
    seg = _segmenter(images, present_sam2)
    event = threading.Event()
    layers = present_sam2.net.memory_attention.layers
    calls = []

    def hook(_module, _inputs):
        calls.append(1)
        if len(calls) == 3:  # frame 3 (one memory-attention pass per tracked frame)
            event.set()

    handle = layers[0].register_forward_pre_hook(hook)
    try:
        track = TrackAll(seg, seeds=truth[0])
        steps = [s for s in track.run(cancel_event=event) if s.stage == "track"]
    finally:
        handle.remove()
    # frame 0 is the seed's own (no memory attention); the event is set inside frame 3's
    # pass, which stops there: without the hooks of `stop_on` frame 3 would be finished and
    # written before the event is seen
    assert [s.frame for s in steps] == [0, 1, 2]
    assert len(calls) == 3
    assert (seg.labels[:3] > 0).any(axis=(1, 2)).all()
    assert not seg.labels[3:].any()
    assert track.table.end[1] == 2
