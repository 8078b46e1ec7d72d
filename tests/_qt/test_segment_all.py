"""The dock's "Segment all": a preview of the slice being viewed (add / discard, modes), every
slice in a worker (progress, cancel, failure, a layer removed), the settings and their errors,
and the real path on tiny random-weight models."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from widget_helpers import HW, disc, synthetic_stack, wait_idle

import napari_focsam._qt.tasks as tasks
from napari_focsam._qt.everything_panel import PREVIEW_NAME, new_objects
from napari_focsam.engine.automatic import AutoMask, AutoMaskParams
from napari_focsam.engine.cancel import Interrupted
from napari_focsam.errors import UserError

pytestmark = pytest.mark.gui

#: Centres of the stand-in's discs on every frame (frame `f` moves them by `f` columns).
CENTRES = ((8, 10), (20, 30), (10, 38))
RADIUS = 4


def _auto_mask(mask: np.ndarray, iou: float = 0.9) -> AutoMask:
    rows, cols = np.nonzero(mask)
    r0, c0, r1, c1 = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
    return AutoMask(mask[r0:r1, c0:c1].copy(), (int(r0), int(c0), int(r1), int(c1)),
                    int(mask.sum()), iou, 0.97, ((r0 + r1) / 2, (c0 + c1) / 2),
                    (0, 0, *mask.shape), mask.shape)


def _frame_masks(flat: int, hw=HW) -> list[AutoMask]:
    return [_auto_mask(disc(hw, (r, c + flat), RADIUS)) for r, c in CENTRES]


class FakeFind:
    """Stand-in for `api.automatic.find_masks`: `batches` batches of `delay` s, then three
    discs per frame (moved by the flat frame index); raises `fail_on` frame's error. With a
    `cancel_event`, a batch stops as the model does once it is set (`Interrupted`)."""

    def __init__(self, delay: float = 0.0, batches: int = 2, fail_on: int | None = None) -> None:
        self.delay, self.batches, self.fail_on = delay, batches, fail_on
        self.frames: list[int] = []
        self.params: list[AutoMaskParams] = []
        self.started = threading.Event()
        self.cancel_event: threading.Event | None = None

    def __call__(self, seg, flat, generator, crops=None, *, predictor=None):
        self.frames.append(flat)
        self.params.append(generator.params)
        for done in range(1, self.batches + 1):
            self.started.set()
            if self.cancel_event is not None:
                if self.cancel_event.wait(self.delay):
                    raise Interrupted("stopped on request")
            else:
                time.sleep(self.delay)
            if flat == self.fail_on:
                raise UserError(f"the stand-in fails on frame {flat}")
            yield done, self.batches
        return _frame_masks(flat, seg.source.frame_shape)


@pytest.fixture
def fake_find(monkeypatch):
    def install(**kwargs) -> FakeFind:
        fake = FakeFind(**kwargs)
        monkeypatch.setattr(tasks, "find_masks", fake)
        return fake

    return install


def _labels(viewer, widget, data: np.ndarray):
    layer = viewer.add_labels(data, name="labels")
    widget.objects.labels_combo.set_layer(layer)
    assert widget.objects.target_layer() is layer
    return layer


def _messages(widget) -> list[str]:
    seen = []
    widget.controller.messages.posted.connect(lambda text, _severity: seen.append(text))
    return seen


def _preview_layer(viewer):
    return viewer.layers[PREVIEW_NAME] if PREVIEW_NAME in viewer.layers else None


# ---------------------------------------------------------------------------------- this slice
def test_this_slice_previews_without_touching_labels_then_adds(make_widget, fake_find, qtbot):
    fake = fake_find()
    viewer, image, widget = make_widget(synthetic_stack())
    existing = np.zeros((4, *HW), np.int32)
    existing[2, 6:11, 8:13] = 5  # under the first disc of frame 2
    labels = _labels(viewer, widget, existing.copy())
    assert widget.objects.new_object_id(labels) == 6  # cached by the objects panel
    viewer.dims.set_current_step(0, 2)
    panel = widget.everything
    assert panel.scope() == "slice" and panel.mode() == "only_background"
    assert not panel.add_button.isEnabled() and not panel.discard_button.isEnabled()
    assert panel.run()
    wait_idle(qtbot, widget)
    assert fake.frames == [2]
    np.testing.assert_array_equal(labels.data, existing)  # a preview only
    preview = _preview_layer(viewer)
    assert preview is not None and preview.data.shape == (4, *HW)
    assert not preview.data[[0, 1, 3]].any()
    shown = preview.data[2]
    assert sorted(np.unique(shown))[1:] == [6, 7, 8]  # above the labels' largest id
    assert not shown[existing[2] > 0].any()  # background only
    assert "Found 3 object(s) on slice 2 (preview)" in widget.status_label.text()
    assert panel.add_button.isEnabled() and panel.discard_button.isEnabled()

    assert widget.segment_all.add()
    assert _preview_layer(viewer) is None and widget.segment_all.preview is None
    np.testing.assert_array_equal(labels.data[[0, 1, 3]], existing[[0, 1, 3]])
    assert (labels.data[2][existing[2] == 5] == 5).all()
    np.testing.assert_array_equal(np.where(labels.data[2] != 5, labels.data[2], 0), shown)
    assert "Added 3 object(s) (ids 6–8) to 'labels' on slice 2" in widget.status_label.text()
    assert not panel.add_button.isEnabled()
    assert widget.objects.new_object_id(labels) == 9  # the next commit does not reuse an id
    labels.undo()  # one napari undo step
    np.testing.assert_array_equal(labels.data, existing)


def test_discard_leaves_the_labels_untouched(make_widget, fake_find, qtbot):
    fake_find()
    viewer, image, widget = make_widget(synthetic_stack()[0])
    existing = np.zeros(HW, np.int32)
    existing[0:5, 0:5] = 3
    labels = _labels(viewer, widget, existing.copy())
    assert widget.everything.run()
    wait_idle(qtbot, widget)
    assert _preview_layer(viewer) is not None
    assert widget.segment_all.discard()
    assert _preview_layer(viewer) is None
    np.testing.assert_array_equal(labels.data, existing)
    assert widget.status_label.text() == "Discarded the 3 object(s) found"
    assert not widget.segment_all.add()
    assert "Nothing to add" in widget.status_label.text()


def test_rerunning_replaces_the_preview_and_add_creates_a_labels_layer(make_widget, fake_find,
                                                                       monkeypatch, qtbot):
    fake = fake_find()
    viewer, image, widget = make_widget(synthetic_stack())
    panel = widget.everything
    viewer.dims.set_current_step(0, 1)
    assert panel.run()
    wait_idle(qtbot, widget)
    first = _preview_layer(viewer).data.copy()
    viewer.dims.set_current_step(0, 3)
    panel.set_value("pred_iou_thresh", 0.5)
    assert panel.run()
    wait_idle(qtbot, widget)
    assert fake.frames == [1, 3] and fake.params[-1].pred_iou_thresh == 0.5
    preview = _preview_layer(viewer)
    assert not preview.data[1].any() and preview.data[3].any()  # the old plane is cleared
    assert first[1].any()
    assert widget.objects.target_layer() is None
    assert widget.segment_all.add()
    target = widget.objects.target_layer()
    assert target is not None and target.data.shape == (4, *HW)
    assert sorted(np.unique(target.data[3]))[1:] == [1, 2, 3]
    assert not target.data[[0, 1, 2]].any()


def test_replace_mode_clears_only_the_previewed_slice(make_widget, fake_find, qtbot):
    fake_find()
    viewer, image, widget = make_widget(synthetic_stack())
    existing = np.zeros((4, *HW), np.int32)
    existing[:, 25:32, 0:6] = 9  # an object on every slice, away from the discs
    labels = _labels(viewer, widget, existing.copy())
    viewer.dims.set_current_step(0, 0)
    widget.everything.set_mode("replace")
    assert widget.everything.run()
    wait_idle(qtbot, widget)
    assert widget.segment_all.add()
    plane = labels.data[0]
    assert not (plane == 9).any()  # cleared first
    expected = np.zeros(HW, np.int32)
    for k, mask in enumerate(_frame_masks(0)):  # same area: the generator's order decides
        expected[mask.mask()] = 10 + k
    np.testing.assert_array_equal(plane, expected)
    np.testing.assert_array_equal(labels.data[1:], existing[1:])


def test_new_objects_is_what_add_writes():
    base = np.zeros(HW, np.int32)
    base[6:11, 8:13] = 4
    masks = _frame_masks(0)
    shown, ids = new_objects(base, masks, first_id=5, mode="only_background", min_area=0)
    assert ids == [5, 6, 7] and not shown[base > 0].any()
    assert (shown[masks[1].mask()] == 6).all()
    shown, ids = new_objects(base, masks, first_id=5, mode="only_background", min_area=40)
    assert ids == [5, 6]  # the first disc keeps too few pixels beside object 4
    shown, ids = new_objects(base, [], first_id=5, mode="replace", min_area=0)
    assert ids == [] and not shown.any()


# ---------------------------------------------------------------------------------- every slice
def test_every_slice_writes_distinct_ids_with_progress(make_widget, fake_find, qtbot):
    fake = fake_find(delay=0.05)
    viewer, image, widget = make_widget(synthetic_stack())
    existing = np.zeros((4, *HW), np.int32)
    existing[1, 6:11, 9:14] = 2
    labels = _labels(viewer, widget, existing.copy())
    assert widget.objects.new_object_id(labels) == 3  # cached by the objects panel
    panel = widget.everything
    panel.set_scope("stack")
    assert panel.run_button.text() == "Segment every slice"
    formats = []
    widget.segment_all.progress.connect(lambda *_: formats.append(widget.progress.format()))
    assert panel.run()
    assert not panel.run_button.isEnabled() and widget.cancel_button.isEnabled()
    wait_idle(qtbot, widget)
    assert fake.frames == [0, 1, 2, 3]
    assert formats[0] == "Segment all: 1/8" and formats[-1] == "Segment all: 8/8"
    assert labels.data[1][existing[1] > 0].tolist() == [2] * int((existing[1] > 0).sum())
    ids = [sorted(np.unique(labels.data[t]))[1:] for t in range(4)]
    assert ids[0] == [3, 4, 5] and ids[1] == [2, 6, 7, 8] and ids[3] == [12, 13, 14]
    assert "Segment all: 12 new object(s) on 4 slice(s) of 'labels'" in widget.status_label.text()
    assert widget.progress.format() == "" and panel.run_button.isEnabled()
    assert labels.metadata["focsam_stack"] == {"axis": 0, "kind": "z"}
    assert widget.objects.new_object_id(labels) == 15  # the next commit does not reuse an id


@pytest.mark.parametrize("interrupted", [False, True], ids=["between-batches", "in-a-batch"])
def test_cancel_mid_run_keeps_the_written_slices_and_the_rest(make_widget, fake_find, qtbot,
                                                              interrupted):
    fake = fake_find(delay=0.3)
    viewer, image, widget = make_widget(synthetic_stack())
    existing = np.full((4, *HW), 7, np.int32)  # "replace" would clear every slice
    labels = _labels(viewer, widget, existing.copy())
    widget.everything.set_scope("stack")
    widget.everything.set_mode("replace")
    assert widget.everything.run()
    if interrupted:
        fake.cancel_event = widget.controller.runner.tasks["everything"].cancel_event
    qtbot.waitUntil(lambda: bool(widget.segment_all.run and widget.segment_all.run.frames_written),
                    timeout=10000)
    widget.controller.cancel()
    assert widget.status_label.text() == "Cancelling segment all…"
    wait_idle(qtbot, widget)
    text = widget.status_label.text()
    assert text.startswith("Segment all stopped (cancelled by the user); the ")
    written = [t for t in range(4) if not (labels.data[t] == 7).all()]
    assert written and written == list(range(len(written))) and len(written) < 4
    assert f"the {len(written)} slice(s) written" in text
    for t in range(len(written), 4):  # the slice being searched and later ones: untouched
        np.testing.assert_array_equal(labels.data[t], existing[t])
    assert not (labels.data[written[0]] == 7).any()


def test_a_failure_mid_run_keeps_the_labels(make_widget, fake_find, qtbot):
    fake_find(fail_on=2)
    viewer, image, widget = make_widget(synthetic_stack())
    existing = np.zeros((4, *HW), np.int32)
    existing[2:, 0:3, 0:3] = 1
    labels = _labels(viewer, widget, existing.copy())
    widget.everything.set_scope("stack")
    widget.everything.set_mode("replace")
    assert widget.everything.run()
    wait_idle(qtbot, widget)
    assert widget.status_label.text() == ("Segment all failed: the stand-in fails on frame 2; the 2 "
                                          "slice(s) written are kept")
    assert labels.data[[0, 1]].any()
    np.testing.assert_array_equal(labels.data[2:], existing[2:])


def test_removing_the_labels_layer_mid_run_cancels_with_a_message(make_widget, fake_find, qtbot):
    fake = fake_find(delay=0.3)
    viewer, image, widget = make_widget(synthetic_stack())
    labels = _labels(viewer, widget, np.zeros((4, *HW), np.int32))
    widget.everything.set_scope("stack")
    assert widget.everything.run()
    qtbot.waitUntil(fake.started.is_set, timeout=10000)
    viewer.layers.remove(labels)
    wait_idle(qtbot, widget)
    text = widget.status_label.text()
    assert "Segment all stopped (the labels layer 'labels' was removed)" in text
    assert len(fake.frames) < 4


def test_removing_the_image_mid_preview_stops_it(make_widget, fake_find, qtbot):
    fake = fake_find(delay=0.3, batches=10)
    viewer, image, widget = make_widget(synthetic_stack())
    assert widget.everything.run()
    qtbot.waitUntil(fake.started.is_set, timeout=10000)
    viewer.layers.remove(image)
    wait_idle(qtbot, widget)
    assert "Segment all stopped (the image layer 'image' was removed)" in widget.status_label.text()
    assert widget.segment_all.preview is None and _preview_layer(viewer) is None


# ---------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("values, text", [
    ({"min_area": 500, "max_area": 100}, "max_area (100) is below min_area (500)"),
    ({"points_per_side": 2, "crop_n_layers": 1, "crop_n_points_downscale_factor": 4},
     "crop layer 1 would get no points"),
])
def test_bad_settings_are_shown_and_nothing_runs(make_widget, fake_find, qtbot, values, text):
    fake = fake_find()
    viewer, image, widget = make_widget(synthetic_stack()[0])
    for name, value in values.items():
        widget.everything.set_value(name, value)
    assert not widget.everything.run()
    assert widget.status_label.text().startswith("Segment all: ")
    assert text in widget.status_label.text()
    assert "color: #ff6060" in widget.status_label.styleSheet()
    assert not widget.controller.runner.running() and fake.frames == []


def test_no_image_and_missing_weights_are_clear_messages(make_widget, monkeypatch, tmp_path, qtbot):
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path))
    viewer, image, widget = make_widget(synthetic_stack()[0])
    labels = _labels(viewer, widget, np.ones(HW, np.int32))
    widget.setup.models.random_check.setChecked(False)
    widget.setup.models.select_models("sam_vit_b")
    assert widget.everything.run()
    wait_idle(qtbot, widget)
    assert widget.status_label.text().startswith("Segment all failed: the weights of sam_vit_b are "
                                                 "not downloaded: click 'Download'")
    assert (labels.data == 1).all() and widget.segment_all.preview is None
    viewer.layers.remove(image)
    assert not widget.everything.run()
    assert widget.status_label.text() == ("Segment all: no image layer: open an image and choose "
                                          "it under Setup")


def test_a_2d_image_offers_only_this_slice(make_widget):
    viewer, image, widget = make_widget(synthetic_stack()[0])
    panel = widget.everything
    assert panel.scope() == "slice" and not panel.scope_combo.isEnabled()
    stack = viewer.add_image(synthetic_stack(), name="stack")
    widget.setup.image_combo.set_layer(stack)
    assert panel.scope_combo.isEnabled()
    panel.set_scope("stack")
    widget.setup.image_combo.set_layer(image)
    assert panel.scope() == "slice" and not panel.scope_combo.isEnabled()


# ---------------------------------------------------------------------------------- real models
def test_real_tiny_model_end_to_end_fills_in_its_defaults(make_widget, qtbot):
    """SAM 2 test-tiny (random weights) with no thresholds: the real task, generator and
    painting; the panel then shows SAM 2's defaults."""
    viewer, image, widget = make_widget(synthetic_stack(1)[0], interactive="sam2_test_tiny")
    panel = widget.everything
    assert panel.boxes["pred_iou_thresh"].value() == pytest.approx(0.88)  # SAM's, until loaded
    for name, value in (("points_per_side", 8), ("pred_iou_thresh", 0.0),
                        ("stability_score_thresh", 0.0)):
        panel.set_value(name, value)
    assert panel.overrides() == {"points_per_side": 8, "pred_iou_thresh": 0.0,
                                 "stability_score_thresh": 0.0}
    assert panel.run()
    wait_idle(qtbot, widget, timeout=120000)
    preview = widget.segment_all.preview
    assert preview is not None, widget.status_label.text()
    assert preview.params == AutoMaskParams.sam2(points_per_side=8, pred_iou_thresh=0.0,
                                                 stability_score_thresh=0.0)
    shown = _preview_layer(viewer).data
    assert preview.count >= 1
    assert set(np.unique(shown).tolist()) - {0} == set(range(1, preview.count + 1))
    assert f"Found {preview.count} object(s) (preview)" in widget.status_label.text()
    assert widget.segment_all.add()
    np.testing.assert_array_equal(widget.objects.target_layer().data, shown)
    panel.reset()  # back to the loaded model's defaults: SAM 2's
    assert panel.overrides() == {}
    assert panel.boxes["pred_iou_thresh"].value() == pytest.approx(0.8)
    assert panel.boxes["points_per_side"].value() == 32
