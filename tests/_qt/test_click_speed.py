"""The GUI at the speed of a click: a one-plane preview layer drawn on its slice only, a click
previewed on the next turn of the event loop (no debounce wait), the edits made while a preview
runs coalesced, and the slice being viewed encoded ahead of the first click."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication
from test_widget_prompts import _click
from widget_helpers import HW, synthetic_stack, wait_idle, wait_preview

from napari_focsam._qt.live import PREVIEW_NAME, plane_transform
from napari_focsam._qt.prepare import PREPARE_TASK
from napari_focsam.api.segmenter import Progress, Segmenter

pytestmark = pytest.mark.gui


def _yellow_pixels(viewer) -> int:
    """Pixels of the canvas where a yellow layer shows over the grey image."""
    shot = viewer.screenshot(canvas_only=True, flash=False).astype(int)
    return int(((shot[..., 0] - shot[..., 2]) > 60).sum())


def test_the_preview_is_one_plane_drawn_on_its_slice(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack(), scale=(3, 1, 1), translate=(5, 2, 0))
    points, _ = widget.prompts.new_prompt_layers()
    viewer.dims.set_point(0, image.data_to_world((2, 0, 0))[0])
    points.add([2, 10, 20])  # the prompt layers share the image's transform
    result, request = wait_preview(qtbot, widget)
    assert request.frame == 2
    preview = viewer.layers[PREVIEW_NAME]
    assert preview.data.shape == (1, *HW)  # not the stack
    np.testing.assert_array_equal(preview.data[0], result.mask)
    for rc in ((0, 0), (10, 20), (31, 47)):  # the plane lies where the image's slice 2 does
        np.testing.assert_allclose(preview.data_to_world((0, *rc)), image.data_to_world((2, *rc)))
    viewer.dims.set_current_step(0, 1)  # no prompt there: cleared (and napari does not draw
    qtbot.waitUntil(lambda: not preview.data.any())  # the plane there: the test below)


@pytest.mark.parametrize("shape, plane", [((4, *HW), (2,)), ((2, 4, *HW), (1, 2))],
                         ids=["3d", "4d"])
def test_a_one_plane_layer_shows_on_its_plane_only(make_napari_viewer, shape, plane):
    from napari.utils.colormaps import DirectLabelColormap

    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(np.full(shape, 50, np.uint8), contrast_limits=(0, 255),
                             scale=(2,) * (len(shape) - 2) + (1, 1), translate=(3,) * len(shape))
    yellow = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (1, 1, 0, 1)})
    viewer.add_labels(np.ones((1,) * len(plane) + HW, np.uint8), colormap=yellow,
                      **plane_transform(image, plane))
    for index in np.ndindex(shape[:-2]):
        for axis, i in enumerate(index):
            viewer.dims.set_current_step(axis, i)
        assert (_yellow_pixels(viewer) > 0) == (index == plane), index


def test_the_plane_follows_the_slice_and_keeps_its_size(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack())
    points, _ = widget.prompts.new_prompt_layers()
    for z in (0, 3):
        viewer.dims.set_current_step(0, z)
        points.add([z, 10, 20])
        wait_preview(qtbot, widget)
        preview = viewer.layers[PREVIEW_NAME]
        assert preview.data.shape == (1, *HW) and preview.translate[0] == z
    assert [layer.name for layer in viewer.layers].count(PREVIEW_NAME) == 1


def test_a_single_click_is_previewed_on_the_next_turn_of_the_event_loop(make_widget, fake_draw,
                                                                        qtbot):
    fake_draw.delay = 0.5
    viewer, image, widget = make_widget(synthetic_stack()[0])
    points, _ = widget.prompts.new_prompt_layers()
    wait_idle(qtbot, widget)
    QApplication.processEvents()
    live, runner = widget.controller.live, widget.controller.runner
    assert not live.busy
    points.add([10, 20])
    assert live.busy and not runner.running("preview")  # one request for all of the click's events
    QApplication.processEvents()  # posted events only: a debounce timer would not have fired
    assert runner.running("preview")
    result, _ = wait_preview(qtbot, widget)
    assert len(fake_draw.prompts) == 1


def test_the_events_of_one_click_make_one_request(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0])
    points, _ = widget.prompts.new_prompt_layers()
    _click(points, (10, 20))
    wait_preview(qtbot, widget)
    _click(points, (12, 25), ["Shift"])  # adds a point, then marks it negative
    result, _ = wait_preview(qtbot, widget)
    wait_idle(qtbot, widget)
    assert [p.labels.tolist() for p in fake_draw.prompts] == [[1], [1, 0]]


def test_edits_during_a_preview_are_coalesced(make_widget, fake_draw, monkeypatch, qtbot):
    gate = threading.Event()

    def first_waits(self, prompt):
        if not fake_draw.prompts:
            gate.wait(20)
        return fake_draw(self, prompt)

    monkeypatch.setattr(Segmenter, "draw_object", first_waits)
    viewer, image, widget = make_widget(synthetic_stack()[0])
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    qtbot.waitUntil(lambda: widget.controller.runner.running("preview"), timeout=5000)
    for c in (22, 24, 26):  # while the first one computes
        points.add([12, c])
        QApplication.processEvents()
    gate.set()
    result, _ = wait_preview(qtbot, widget)
    wait_idle(qtbot, widget)
    assert [len(p.points_rc) for p in fake_draw.prompts] == [1, 4]  # the first, then the latest
    assert len(result.prompt.points_rc) == 4


# ---------------------------------------------------------------------------- encoding ahead
def _seen(widget) -> list[str]:
    seen = []
    widget.controller.preparing.connect(seen.append)
    return seen


def _ready(widget) -> bool:
    return " ready (" in widget.prepare_label.text()


def test_choosing_image_and_model_encodes_the_viewed_slice(make_widget, qtbot):
    viewer, image, widget = make_widget(synthetic_stack(), encode_ahead=True)
    seen = _seen(widget)
    z = int(viewer.dims.current_step[0])
    qtbot.waitUntil(lambda: _ready(widget), timeout=20000)
    assert seen[:2] == ["Building sam_test_tiny…", f"Encoding slice z={z} with sam_test_tiny…"]
    assert widget.prepare_label.isVisible() or not widget.isVisible()
    assert widget.prepare_label.text().endswith("click on an object")
    label = widget.prepare_label  # wrapped, and every line shown (a word-wrapped QLabel clipped)
    lines = label.shown_text().split("\n")
    assert " ".join(line.strip() for line in lines) == label.text()
    assert label.height() >= len(lines) * label.fontMetrics().lineSpacing()
    seg = widget.controller.holder.current
    assert seg.stores["interactive"].is_cached(z) and seg.encoder_calls == 1
    points, _ = widget.prompts.new_prompt_layers()
    points.add([z, 10, 15])
    wait_preview(qtbot, widget)
    assert widget.controller.holder.current is seg and seg.encoder_calls == 1  # only decoded


def test_another_slice_cancels_and_encodes_the_new_one(make_widget, monkeypatch, qtbot):
    calls, cancelled = [], []
    release = threading.Event()

    def slow_embed(self, frames=None, *, cancel_event=None, roles=None):
        calls.append(list(frames))
        while not release.is_set():
            if cancel_event is not None and cancel_event.wait(0.02):
                cancelled.append(list(frames))
                return
        yield Progress("embed:interactive", 1, 1, frames[0])

    monkeypatch.setattr(Segmenter, "embed", slow_embed)
    viewer, image, widget = make_widget(synthetic_stack(), encode_ahead=True)
    z = int(viewer.dims.current_step[0])
    qtbot.waitUntil(lambda: calls == [[z]], timeout=20000)
    assert widget.prepare_label.text() == f"Encoding slice z={z} with sam_test_tiny…"
    viewer.dims.set_current_step(0, z + 1)
    qtbot.waitUntil(lambda: calls == [[z], [z + 1]], timeout=20000)
    assert cancelled == [[z]]
    assert widget.prepare_label.text() == f"Encoding slice z={z + 1} with sam_test_tiny…"
    release.set()
    qtbot.waitUntil(lambda: _ready(widget), timeout=20000)
    assert f"slice z={z + 1} encoded" in widget.prepare_label.text()
    wait_idle(qtbot, widget)
    assert calls == [[z], [z + 1]]


def test_cancel_stops_encoding_ahead_until_the_slice_changes(make_widget, monkeypatch, qtbot):
    calls, cancelled = [], []

    def endless_embed(self, frames=None, *, cancel_event=None, roles=None):
        calls.append(list(frames))
        while not cancel_event.wait(0.02):
            pass
        cancelled.append(list(frames))
        return
        yield  # a generator, as the real one

    monkeypatch.setattr(Segmenter, "embed", endless_embed)
    viewer, image, widget = make_widget(synthetic_stack(), encode_ahead=True)
    z = int(viewer.dims.current_step[0])
    qtbot.waitUntil(lambda: calls == [[z]], timeout=20000)
    qtbot.waitUntil(widget.cancel_button.isEnabled, timeout=5000)
    widget.cancel_button.click()
    assert "Cancelling encoding ahead" in widget.status_label.text()
    qtbot.waitUntil(lambda: not widget.controller.runner.running(PREPARE_TASK), timeout=10000)
    assert cancelled == [[z]]
    assert "Encoding ahead stopped (cancelled by the user)" in widget.prepare_label.text()
    qtbot.wait(400)  # longer than the delay before encoding ahead starts
    assert calls == [[z]]  # not restarted for the same slice
    viewer.dims.set_current_step(0, z + 1)
    qtbot.waitUntil(lambda: calls == [[z], [z + 1]], timeout=20000)
    widget.controller.cancel()
    qtbot.waitUntil(lambda: not widget.controller.runner.running(PREPARE_TASK), timeout=10000)


def test_a_slice_in_the_cache_is_not_encoded_again(make_widget, qtbot):
    viewer, image, widget = make_widget(synthetic_stack(), encode_ahead=True)
    z = int(viewer.dims.current_step[0])
    qtbot.waitUntil(lambda: _ready(widget), timeout=20000)
    viewer.dims.set_current_step(0, z + 1)
    qtbot.waitUntil(lambda: f"slice z={z + 1} encoded" in widget.prepare_label.text(), timeout=20000)
    viewer.dims.set_current_step(0, z)
    qtbot.waitUntil(lambda: "was encoded before" in widget.prepare_label.text(), timeout=20000)
    assert widget.controller.holder.current.encoder_calls == 2


def test_without_weights_nothing_is_built_or_encoded(make_widget, monkeypatch, tmp_path, qtbot):
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path))
    viewer, image, widget = make_widget(synthetic_stack(), encode_ahead=True)
    widget.setup.models.random_check.setChecked(False)
    widget.setup.models.select_models("sam_vit_b")  # not downloaded
    started = []
    widget.controller.runner.task_started.connect(started.append)
    qtbot.wait(400)  # longer than the delay before encoding ahead starts
    assert PREPARE_TASK not in started and widget.controller.holder.current is None
    assert widget.prepare_label.text() == "" and not widget.prepare_label.isVisible()


def test_encoding_ahead_is_off_when_the_dock_says_so(make_widget, qtbot):
    viewer, image, widget = make_widget(synthetic_stack(), encode_ahead=False)
    qtbot.wait(400)  # longer than the delay before encoding ahead starts
    assert widget.controller.holder.current is None and not widget.controller.runner.running()
