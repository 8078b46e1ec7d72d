"""The dock's "Track all": seeds from a labels layer or automatic, the new output layer (ids,
lineage, divisions, new and lost cells), the Tracks layer, CTC export, cancel, a layer removed,
settings errors, images it cannot track, and the real path on tiny random-weight models.

The tracker is `BrightTracker` (a stand-in for SAM 2 that follows bright components, from
``tests/tracking/track_helpers.py``) and automatic discovery finds the bright components, so
the answer is known exactly.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from widget_helpers import wait_idle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking"))
from track_helpers import BrightTracker, Disc, components, render_discs  # noqa: E402

import napari_focsam._qt.tasks as tasks  # noqa: E402
import napari_focsam._qt.track_all_panel as track_all_panel  # noqa: E402
from napari_focsam._qt.track_all_panel import OUTPUT_NAME  # noqa: E402
from napari_focsam._qt.tracking_panel import META_KEY, TRACKS_NAME, is_time_lapse  # noqa: E402
from napari_focsam.tracking import TrackTable, read_ctc_tracks  # noqa: E402

pytestmark = pytest.mark.gui

HW = (48, 64)
N = 12
#: A moving cell (1), a mother (2) dividing into 3 and 4 on frame 4, a cell leaving after
#: frame 4 (5), a cell appearing on frame 6 (6).
DISCS = [
    Disc(10, 40, 5, vcol=1.5),
    Disc(24, 20, 6, last=3),
    Disc(25, 20, 4, vrow=-1.5, first=4),
    Disc(23, 20, 4, vrow=1.5, first=4),
    Disc(40, 50, 5, last=4),
    Disc(30, 44, 5, first=6),
]
MOTHER, DAUGHTERS, LEAVING, APPEARING = 2, (3, 4), 5, 6


@pytest.fixture(scope="module")
def scene():
    return render_discs(N, HW, DISCS)


class SlowTracker(BrightTracker):
    """`BrightTracker` taking `delay` seconds per frame; `started` is set on its first frame."""

    delay = 0.3
    started = threading.Event()

    def _track(self, t):
        SlowTracker.started.set()
        time.sleep(self.delay)
        return super()._track(t)


class FailingTracker(BrightTracker):
    """`BrightTracker` failing on frame `fail_on`."""

    fail_on = 3

    def _track(self, t):
        if t == self.fail_on:
            raise RuntimeError(f"the stand-in tracker fails on frame {t}")
        return super()._track(t)


class FoundMasks:
    """Stand-in for `api.automatic.automatic_discover`: the bright components of a frame;
    records the frames searched and the settings."""

    def __init__(self) -> None:
        self.frames: list[int] = []
        self.params = []

    def __call__(self, seg, params=None, *, cancel_event=None):
        self.params.append(params)

        def discover(flat):
            self.frames.append(flat)
            return components(np.asarray(seg.source.raw(flat)).reshape(seg.source.frame_shape))

        return discover


@pytest.fixture
def tracker(monkeypatch):
    """Install a stand-in tracker (`BrightTracker` unless given) and automatic discovery."""
    BrightTracker.instances.clear()
    SlowTracker.started.clear()
    found = FoundMasks()
    monkeypatch.setattr(tasks, "automatic_discover", found)

    def install(cls=BrightTracker) -> FoundMasks:
        monkeypatch.setattr(track_all_panel, "PROPAGATOR", cls)
        return found

    yield install
    BrightTracker.instances.clear()


def _widget(make_widget, images, kind="t"):
    viewer, image, widget = make_widget(images)
    widget.setup.select_stack(0, kind)
    viewer.dims.set_current_step(0, 0)
    return viewer, image, widget


def _seed_layer(viewer, truth, name="committed"):
    data = np.zeros_like(truth)
    data[0] = truth[0]
    data[-1, :5, :5] = 99  # another slice: never read
    return viewer.add_labels(data, name=name)


def _output(viewer):
    return viewer.layers[OUTPUT_NAME] if OUTPUT_NAME in viewer.layers else None


def _id_map(ours: np.ndarray, truth: np.ndarray) -> dict[int, int]:
    """Our id -> the truth's id it overlaps (each of ours must lie inside one of the truth's)."""
    mapping = {}
    for k in np.unique(ours[ours > 0]).tolist():
        theirs = np.unique(truth[ours == k])
        assert len(theirs) == 1 and theirs[0] > 0, (k, theirs)
        mapping[k] = int(theirs[0])
    return mapping


def _check_result(viewer, truth, first=0):
    """The output layer is the truth from `first` on up to the ids (one id per true cell);
    returns ``(layer, our id -> true id, true id -> our id)``."""
    out = _output(viewer)
    assert out is not None and out.data.shape == truth.shape
    assert not out.data[:first].any()
    mapping = _id_map(out.data[first:], truth[first:])
    inverse = {v: k for k, v in mapping.items()}
    assert len(inverse) == len(mapping)
    lut = np.zeros(max(mapping) + 1, dtype=truth.dtype)
    for ours, theirs in mapping.items():
        lut[ours] = theirs
    np.testing.assert_array_equal(lut[out.data[first:]], truth[first:])
    return out, mapping, inverse


# ---------------------------------------------------------------------------------- runs
def test_tracking_from_a_seed_labels_layer(make_widget, tracker, scene, qtbot, tmp_path):
    found = tracker()
    images, truth = scene
    viewer, image, widget = _widget(make_widget, images)
    seeds = _seed_layer(viewer, truth)
    before = seeds.data.copy()
    panel = widget.track_panel
    assert panel.run_button.isEnabled() and not panel.export_button.isEnabled()
    assert panel.seed_label.text() == "slice 0 (the one viewed)"
    panel.set_seeds(seeds)
    panel.set_value("discover_every", 2)
    panel.set_value("lost_after", 2)
    widget.everything.set_value("points_per_side", 4)
    formats = []
    widget.track_all.progress.connect(lambda *_: formats.append(widget.progress.format()))
    assert panel.run()
    assert not panel.run_button.isEnabled() and widget.cancel_button.isEnabled()
    wait_idle(qtbot, widget)
    assert formats[:3] == ["Seeding: 1/3", "Seeding: 2/3", "Seeding: 3/3"]
    assert formats[-1] == f"Tracking: {N}/{N}"
    out, mapping, inverse = _check_result(viewer, truth)
    # seed ids kept; daughters and the new cell get new ids
    assert all(inverse[k] == k for k in (1, MOTHER, LEAVING))
    assert set(inverse[d] for d in DAUGHTERS) | {inverse[APPEARING]} == {6, 7, 8}
    np.testing.assert_array_equal(seeds.data, before)  # the seeds are never written
    # the lineage: recorded in the layer, the layer a time-lapse for the tracking dock
    table = out.metadata[META_KEY]
    assert isinstance(table, TrackTable)
    assert table.graph == {inverse[d]: [MOTHER] for d in sorted(DAUGHTERS)}
    assert (table.begin[MOTHER], table.end[MOTHER]) == (0, 3)
    assert table.begin[inverse[DAUGHTERS[0]]] == 4
    assert table.end[LEAVING] == 4 and table.begin[inverse[APPEARING]] == 6
    assert is_time_lapse(out)
    tracks = viewer.layers[TRACKS_NAME]
    assert tracks.graph == table.graph
    assert set(np.unique(tracks.data[:, 0]).astype(int)) == set(mapping)
    text = widget.status_label.text()
    assert text == (f"Tracked 6 cells over {N} frames: 1 division, 1 new, 1 lost (in "
                    f"'{OUTPUT_NAME}')")
    # discovery on every other frame, with the "Segment all" settings
    assert found.frames == [2, 4, 6, 8, 10] and found.params[0].points_per_side == 4
    assert panel.run_button.isEnabled() and panel.export_button.isEnabled()
    assert widget.progress.format() == ""

    # CTC export
    folder = tmp_path / "01_RES"
    assert panel.export_ctc(folder) == folder
    back = read_ctc_tracks(folder / "res_track.txt")
    assert back.parents == {inverse[d]: MOTHER for d in DAUGHTERS}
    assert back.to_rows().tolist() == table.to_rows().tolist()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"mask{t:03d}.tif" for t in range(N)] + ["res_track.txt"])
    assert panel.export_ctc(folder) == folder  # an earlier result is replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    assert panel.export_ctc(tmp_path / "other") is None
    assert "holds files other than a CTC RES result" in widget.status_label.text()
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


def test_automatic_seeding_from_the_slice_being_viewed(make_widget, tracker, scene, qtbot):
    found = tracker()
    images, truth = scene
    viewer, image, widget = _widget(make_widget, images)
    existing = viewer.add_labels(truth.copy(), name="existing")
    viewer.dims.set_current_step(0, 2)
    panel = widget.track_panel
    assert panel.seed_label.text() == "slice 2 (the one viewed)"
    assert panel.settings().seeds is None  # automatic by default
    panel.set_value("discover_every", 0)
    panel.set_value("lost_after", 2)
    assert panel.run()
    wait_idle(qtbot, widget)
    assert found.frames == [2]  # seeding only
    out, mapping, inverse = _check_result(viewer, np.where(truth == APPEARING, 0, truth), first=2)
    assert sorted(mapping) == [1, 2, 3, 4, 5]  # 3 seeds (1..3) and two daughters
    assert out.metadata[META_KEY].graph == {inverse[d]: [inverse[MOTHER]] for d in DAUGHTERS}
    np.testing.assert_array_equal(existing.data, truth)
    assert widget.status_label.text().startswith("Tracked 5 cells over 10 frames: 1 division, 0 "
                                                 "new, 1 lost")


def test_the_last_frame_limits_the_run(make_widget, tracker, scene, qtbot):
    tracker()
    images, truth = scene
    viewer, image, widget = _widget(make_widget, images)
    widget.track_panel.set_seeds(_seed_layer(viewer, truth))
    widget.track_panel.set_value("last_frame", 5)
    assert widget.track_panel.run()
    wait_idle(qtbot, widget)
    out = _output(viewer)
    assert out.data[:6].any(axis=(1, 2)).all() and not out.data[6:].any()
    # the split is not confirmed (frames 4, 5), the leaving cell not lost yet (lost after 5)
    assert "Tracked 3 cells over 6 frames: 0 divisions, 0 new, 0 lost" in widget.status_label.text()


# ---------------------------------------------------------------------------------- stopping
def test_cancel_mid_run_keeps_the_written_frames(make_widget, tracker, scene, qtbot):
    tracker(SlowTracker)
    images, truth = scene
    viewer, image, widget = _widget(make_widget, images)
    seeds = _seed_layer(viewer, truth)
    before = seeds.data.copy()
    widget.track_panel.set_seeds(seeds)
    assert widget.track_panel.run()
    qtbot.waitUntil(lambda: len(widget.track_all.run.frames_written) >= 2, timeout=20000)
    widget.controller.cancel()
    assert widget.status_label.text() == "Cancelling track all…"
    wait_idle(qtbot, widget)
    text = widget.status_label.text()
    out = _output(viewer)
    written = [t for t in range(N) if out.data[t].any()]
    assert written == list(range(len(written))) and 2 <= len(written) < N
    assert text.startswith(f"Track all stopped (cancelled by the user); the frames written are "
                           f"kept: 3 cells over {len(written)} frames")
    np.testing.assert_array_equal(out.data[:len(written)], truth[:len(written)])
    np.testing.assert_array_equal(seeds.data, before)
    table = out.metadata[META_KEY]
    assert table.ids == [1, 2, 5] and max(table.end.values()) == len(written) - 1
    assert TRACKS_NAME in viewer.layers and widget.track_panel.export_button.isEnabled()


def test_propagation_waits_for_track_all(make_widget, tracker, scene, qtbot):
    """Both write the segmenter's labels: a propagation is refused while Track all runs."""
    tracker(SlowTracker)
    images, truth = scene
    viewer, image, widget = _widget(make_widget, images)
    seeds = _seed_layer(viewer, truth)
    widget.track_panel.set_seeds(seeds)
    assert widget.track_panel.run()
    qtbot.waitUntil(SlowTracker.started.is_set, timeout=20000)
    assert not widget.propagation.start([object()], seeds, "forward")
    assert widget.status_label.text() == ("Track all is running: propagate when it ends (or "
                                          "cancel it)")
    widget.controller.cancel()
    wait_idle(qtbot, widget)


def test_a_failure_keeps_the_written_frames(make_widget, tracker, scene, qtbot):
    tracker(FailingTracker)
    images, truth = scene
    viewer, image, widget = _widget(make_widget, images)
    widget.track_panel.set_seeds(_seed_layer(viewer, truth))
    assert widget.track_panel.run()
    wait_idle(qtbot, widget)
    text = widget.status_label.text()
    assert text.startswith("Track all failed: ") and "; the frames written are kept (3 frames)" in text
    out = _output(viewer)
    np.testing.assert_array_equal(out.data[:3], truth[:3])
    assert not out.data[3:].any() and META_KEY in out.metadata


def test_removing_the_output_layer_mid_run_cancels(make_widget, tracker, scene, qtbot):
    tracker(SlowTracker)
    images, truth = scene
    viewer, image, widget = _widget(make_widget, images)
    seeds = _seed_layer(viewer, truth)
    widget.track_panel.set_seeds(seeds)
    assert widget.track_panel.run()
    qtbot.waitUntil(SlowTracker.started.is_set, timeout=20000)
    viewer.layers.remove(_output(viewer))
    wait_idle(qtbot, widget)
    assert widget.status_label.text() == (f"Track all stopped (the labels layer '{OUTPUT_NAME}' "
                                          "was removed)")
    assert "color: #ff6060" in widget.status_label.styleSheet()
    assert TRACKS_NAME not in viewer.layers and seeds in viewer.layers
    assert not widget.track_panel.export_button.isEnabled()


def test_removing_the_image_mid_run_cancels(make_widget, tracker, scene, qtbot):
    tracker(SlowTracker)
    images, truth = scene
    viewer, image, widget = _widget(make_widget, images)
    widget.track_panel.set_seeds(_seed_layer(viewer, truth))
    assert widget.track_panel.run()
    qtbot.waitUntil(SlowTracker.started.is_set, timeout=20000)
    viewer.layers.remove(image)
    wait_idle(qtbot, widget)
    assert widget.status_label.text().startswith("Track all stopped (the image layer 'image' was "
                                                 "removed)")


# ---------------------------------------------------------------------------------- refusals
def test_bad_settings_are_shown_and_nothing_runs(make_widget, tracker, scene, qtbot):
    tracker()
    images, truth = scene
    viewer, image, widget = _widget(make_widget, images)
    panel = widget.track_panel
    panel.set_seeds(_seed_layer(viewer, truth))
    n_layers = len(viewer.layers)
    viewer.dims.set_current_step(0, 4)
    panel.set_value("last_frame", 2)
    assert not panel.run()
    assert widget.status_label.text().startswith("Track all: the last frame (2) is before the seed "
                                                 "frame (4, the slice being viewed)")
    assert "color: #ff6060" in widget.status_label.styleSheet()
    panel.set_value("last_frame", None)
    viewer.dims.set_current_step(0, 8)  # the seed layer is empty there
    assert not panel.run()
    assert widget.status_label.text() == ("Track all: 'committed' has no object of at least 10 "
                                          "pixels on slice 8: view a slice with objects, or seed "
                                          "automatically")
    viewer.dims.set_current_step(0, 0)
    panel.set_seeds(None)
    widget.everything.set_value("min_area", 500)
    widget.everything.set_value("max_area", 100)
    assert not panel.run()
    assert "max_area (100) is below min_area (500)" in widget.status_label.text()
    assert len(viewer.layers) == n_layers and not widget.controller.runner.running()


def test_images_it_cannot_track_are_explained(make_widget, tracker, scene):
    tracker()
    images, truth = scene
    viewer, image, widget = make_widget(images[0])
    panel = widget.track_panel
    assert not panel.run_button.isEnabled()
    assert "needs a z or t stack" in panel.run_button.toolTip()
    assert not panel.run()
    assert widget.status_label.text().startswith("Track all needs a z or t stack and a SAM 2 "
                                                 "propagation model")
    stack = viewer.add_image(images, name="stack")
    widget.setup.image_combo.set_layer(stack)
    widget.setup.select_stack(None, "planes")
    assert not panel.run_button.isEnabled()
    widget.setup.select_stack(0, "t")
    assert panel.run_button.isEnabled() and panel.last_spin.maximum() == N - 1
    viewer.layers.remove(image)
    viewer.layers.remove(stack)
    assert not panel.run()
    assert widget.status_label.text() == ("Track all: no image layer: open an image and choose it "
                                          "under Setup")
    four_d = viewer.add_image(np.stack([images, images]), name="4d")
    widget.setup.image_combo.set_layer(four_d)
    assert not panel.run_button.isEnabled()
    assert panel.run_button.toolTip() == ("Track all works on 3D stacks (t, y, x): slice the 4D "
                                          "image first")


def test_missing_weights_fail_without_leaving_a_layer(make_widget, tracker, scene,
                                                                  monkeypatch, tmp_path, qtbot):
    tracker()
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path))
    images, truth = scene
    viewer, image, widget = _widget(make_widget, images)
    widget.track_panel.set_seeds(_seed_layer(viewer, truth))
    widget.setup.models.random_check.setChecked(False)
    widget.setup.models.select_models("sam_vit_b", "sam2.1_hiera_tiny")
    assert widget.track_panel.run()
    wait_idle(qtbot, widget)
    assert widget.status_label.text().startswith("Track all failed: the weights of sam_vit_b are "
                                                 "not downloaded")
    assert _output(viewer) is None and TRACKS_NAME not in viewer.layers


# ---------------------------------------------------------------------------------- real models
def test_real_tiny_models_end_to_end(make_widget, scene, qtbot, monkeypatch):
    """SAM 2 test-tiny (random weights) as the propagation and the interactive model: the real
    task, tracker and automatic discovery write a layer (the masks are meaningless)."""
    monkeypatch.setattr(track_all_panel, "PROPAGATOR", None)
    images, truth = scene
    viewer, image, widget = make_widget(images[:3], interactive="sam2_test_tiny")
    widget.setup.select_stack(0, "t")
    viewer.dims.set_current_step(0, 0)
    seeds = _seed_layer(viewer, truth[:3])
    panel = widget.track_panel
    panel.set_seeds(seeds)
    panel.set_value("discover_every", 2)
    widget.everything.set_value("points_per_side", 4)
    assert panel.run(), widget.status_label.text()
    wait_idle(qtbot, widget, timeout=300000)
    text = widget.status_label.text()
    out = _output(viewer)
    assert out is not None, text
    assert text.startswith("Tracked ") and "over 3 frames" in text, text
    assert isinstance(out.metadata[META_KEY], TrackTable) and is_time_lapse(out)
    assert out.data.shape == truth[:3].shape
