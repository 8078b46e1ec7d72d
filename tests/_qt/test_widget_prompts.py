"""The widget: manifest, clicks -> preview -> commit -> ids, boxes, transforms, undo, keys."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pytest
from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks
from widget_helpers import HW, disc, synthetic_stack, wait_idle, wait_preview

from napari_focsam._qt import FocSamWidget
from napari_focsam._qt.bindings import KEYS
from napari_focsam._qt.prompt_layers import POSITIVE
from napari_focsam.api.segmenter import Segmenter
from napari_focsam.families import Role, model_menu

pytestmark = pytest.mark.gui


def test_widget_loads_through_the_manifest(make_napari_viewer, monkeypatch, qtbot):
    monkeypatch.setenv("NAPARI_FOCSAM_RANDOM_WEIGHTS", "1")
    viewer = make_napari_viewer()
    viewer.add_image(synthetic_stack(), name="image")
    _, widget = viewer.window.add_plugin_dock_widget("napari-focsam", "FocSAM segmentation")
    assert isinstance(widget, FocSamWidget)
    assert widget.setup.models.random_weights
    assert widget.setup.image_layer() is viewer.layers["image"]
    assert widget.setup.axes().stack_axis == 0
    assert "T" in widget.help_label.text() and "Shift+click" in widget.help_label.text()
    for combo, role in ((widget.setup.models.interactive_combo, Role.INTERACTIVE),
                        (widget.setup.models.propagation_combo, Role.PROPAGATION)):
        offered = [combo.itemData(i) for i in range(combo.count())]
        assert offered == [e.model_id for e in model_menu(role, with_test_configs=True)]
    widget.shutdown()


def test_click_preview_commit_ids(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack())
    points, _ = widget.prompts.new_prompt_layers()
    viewer.dims.set_current_step(0, 2)
    points.add([2, 10, 20])
    result, request = wait_preview(qtbot, widget)
    assert request.frame == 2
    np.testing.assert_array_equal(result.mask, disc(HW, (10, 20)))
    preview = viewer.layers["FocSAM preview"]  # one plane, placed on slice 2
    assert preview.data.shape == (1, *HW) and tuple(preview.translate) == (2, 0, 0)
    np.testing.assert_array_equal(preview.data[0], result.mask)
    assert widget.objects.commit()
    labels = widget.objects.target_layer()
    assert labels.data.shape == image.data.shape and labels.data.dtype == np.int32
    np.testing.assert_array_equal(labels.data[2], disc(HW, (10, 20)).astype(np.int32))
    assert len(points.data) == 0  # the committed object's clicks are gone
    qtbot.waitUntil(lambda: preview.data.sum() == 0)
    points.add([2, 20, 35])
    wait_preview(qtbot, widget)
    assert widget.objects.commit()
    assert set(np.unique(labels.data[2])) == {0, 1, 2}
    assert widget.objects.book.ids == [1, 2]
    assert [widget.objects.object_list.item(i).text().split()[1] for i in range(2)] == ["1", "2"]


def test_new_ids_follow_existing_labels_and_only_background(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0])
    existing = np.zeros(HW, np.int32)
    existing[8:13, 18:23] = 5
    labels = viewer.add_labels(existing.copy(), name="mine")
    widget.objects.labels_combo.set_layer(labels)
    widget.objects.only_background.setChecked(True)
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    wait_preview(qtbot, widget)
    assert widget.objects.commit()
    assert (labels.data[8:13, 18:23] == 5).all()  # not overwritten
    assert ((labels.data == 6) == (disc(HW, (10, 20)) & (existing == 0))).all()


def test_box_becomes_the_prompt(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack())
    _, shapes = widget.prompts.new_prompt_layers()
    viewer.dims.set_current_step(0, 1)
    shapes.add_rectangles(np.array([[1, 4, 6], [1, 4, 20], [1, 16, 20], [1, 16, 6.0]]))
    result, request = wait_preview(qtbot, widget)
    prompt = fake_draw.prompts[-1]
    np.testing.assert_allclose(prompt.box_rc, [4, 6, 16, 20])
    assert prompt.frame == 1 and len(prompt.points_rc) == 0
    assert widget.objects.commit()
    assert len(shapes.data) == 0


def test_points_layer_with_another_transform(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0], scale=(2, 2), translate=(10, 20))
    user = viewer.add_points(np.zeros((0, 2)), name="my clicks")  # identity transform, no features
    widget.prompts.points_combo.set_layer(user)
    user.add([10 + 2 * 5, 20 + 2 * 7])  # world position of image pixel (5, 7)
    result, _ = wait_preview(qtbot, widget)
    np.testing.assert_allclose(fake_draw.prompts[-1].points_rc, [[5, 7]])
    assert fake_draw.prompts[-1].labels.tolist() == [1]
    assert result.mask[5, 7]


def test_undo_click_and_undo_commit(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0])
    labels = viewer.add_labels(np.zeros(HW, np.int32), name="target")
    labels.data[0:4, 0:4] = 9
    widget.objects.labels_combo.set_layer(labels)
    before = labels.data.copy()
    points, _ = widget.prompts.new_prompt_layers()
    points.add([5, 5])
    points.add([20, 30])
    widget.prompts.undo_click()
    assert len(points.data) == 1
    wait_preview(qtbot, widget)
    np.testing.assert_allclose(fake_draw.prompts[-1].points_rc, [[5, 5]])
    assert widget.objects.commit()
    assert (labels.data == 10).sum() > 0
    widget.objects.undo_commit()
    np.testing.assert_array_equal(labels.data, before)
    assert widget.objects.book.ids == []
    widget.objects.undo_commit()
    assert "No commit" in widget.status_label.text()
    widget.prompts.undo_click()
    assert "No click" in widget.status_label.text()


@dataclass
class _Mouse:
    type: str
    position: tuple
    modifiers: list = field(default_factory=list)
    pos: np.ndarray = field(default_factory=lambda: np.zeros(2))
    is_dragging: bool = False
    button: int = 1
    dims_displayed: list = field(default_factory=lambda: [0, 1])
    view_direction: object = None
    up_direction: object = None
    handled: bool = False


def _click(layer, position, modifiers=()):
    mouse_press_callbacks(layer, _Mouse("mouse_press", position, list(modifiers)))
    mouse_release_callbacks(layer, _Mouse("mouse_release", position, list(modifiers)))


def test_shift_click_and_t_give_negative_points(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0])
    points, _ = widget.prompts.new_prompt_layers()
    assert points.mode == "add"
    _click(points, (10, 20))
    _click(points, (12, 25), ["Shift"])
    qtbot.waitUntil(lambda: len(points.data) == 2)
    assert points.features[POSITIVE].tolist() == [True, False]
    keymap = {str(k): v for k, v in points.keymap.items()}
    assert {key for key, (_, _, kinds) in KEYS.items() if "points" in kinds} <= set(keymap)
    keymap["T"](points)  # toggle: new clicks are negative
    _click(points, (14, 30))
    assert points.features[POSITIVE].tolist() == [True, False, False]
    assert not np.array_equal(points.face_color[0], points.face_color[1])
    wait_preview(qtbot, widget)
    assert fake_draw.prompts[-1].labels.tolist() == [1, 0, 0]
    keymap["C"](points)  # commit through the key binding
    assert widget.objects.book.ids == [1]


def test_bad_prompt_is_reported_not_raised(make_widget, qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0])
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 200])  # far outside the 32 x 48 image
    qtbot.waitUntil(lambda: "outside" in widget.status_label.text(), timeout=20000)
    wait_idle(qtbot, widget)
    assert widget.controller.live.ready() is None
    assert not widget.objects.commit()


def test_missing_weights_are_reported(make_widget, monkeypatch, tmp_path, qtbot):
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path))
    viewer, image, widget = make_widget(synthetic_stack()[0])
    widget.setup.models.random_check.setChecked(False)
    widget.setup.models.select_models("sam_vit_b")
    assert widget.setup.models.interactive_combo.currentText().endswith("missing")
    assert widget.setup.models.download_button.isEnabled()
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    qtbot.waitUntil(lambda: "not downloaded" in widget.status_label.text(), timeout=20000)
    assert "click 'Download' next to the model" in widget.status_label.text()


def test_missing_local_checkpoint_is_reported_as_is(make_widget, tmp_path, qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0])
    models = widget.setup.models
    models.random_check.setChecked(False)
    models.select_models("sam_vit_b")
    models.local_file.setText(str(tmp_path / "nowhere.pth"))
    models.local_file.editingFinished.emit()
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    qtbot.waitUntil(lambda: "nowhere.pth" in widget.status_label.text(), timeout=20000)
    text = widget.status_label.text()  # a user error: its message, not an internal error
    assert text.startswith("Preview failed: ") and "internal error" not in text


def test_4d_hyperstack_commit_lands_on_its_plane(make_widget, fake_draw, qtbot):
    data = np.stack([synthetic_stack(3), synthetic_stack(3)])  # (outer 2, stack 3, H, W)
    viewer, image, widget = make_widget(data)
    axes = widget.setup.axes()
    assert (axes.stack_axis, axes.outer_axis) == (1, 0)
    viewer.dims.set_current_step(0, 1)
    viewer.dims.set_current_step(1, 2)
    points, _ = widget.prompts.new_prompt_layers()
    points.add([1, 2, 10, 20])
    result, request = wait_preview(qtbot, widget)
    assert (request.outer, request.frame) == (1, 2)
    assert fake_draw.prompts[-1].outer == 1 and fake_draw.prompts[-1].frame == 2
    assert widget.objects.commit()
    labels = widget.objects.target_layer().data
    assert labels.shape == data.shape
    np.testing.assert_array_equal(labels[1, 2], disc(HW, (10, 20)).astype(np.int32))
    assert labels.sum() == labels[1, 2].sum()


def test_rgb_image_gets_labels_without_the_channel_axis(make_widget, fake_draw, qtbot):
    rgb = np.repeat(synthetic_stack(1)[0][..., None], 3, axis=-1)
    viewer, image, widget = make_widget(rgb)
    assert image.rgb and widget.setup.axes().channel_axis == 2
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    wait_preview(qtbot, widget)
    assert widget.objects.commit()
    assert widget.objects.target_layer().data.shape == HW


def _fake_fetch(delay: float, seen: list):
    def fetch(model_id, *, progress=None, **_kwargs):
        from napari_focsam.weights import cached_path

        total = 10 << 20
        for done in range(0, total + 1, 1 << 20):
            time.sleep(delay)
            progress(done, total)
            seen.append(done)
        path = cached_path(model_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x80fake")
        return path

    return fetch


def test_download_shows_progress_and_updates_the_status(make_widget, monkeypatch, tmp_path, qtbot):
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path))
    seen = []
    monkeypatch.setattr("napari_focsam.weights.fetch_weights", _fake_fetch(0.02, seen))
    viewer, image, widget = make_widget(synthetic_stack()[0])
    models = widget.setup.models
    models.random_check.setChecked(False)
    models.select_models("sam_vit_b")
    values = []
    models.download_bar.valueChanged.connect(values.append)
    models.download_button.click()
    assert widget.cancel_button.isEnabled() and not models.download_button.isEnabled()
    wait_idle(qtbot, widget)
    assert max(values) == 1000 and len(seen) == 11
    assert models.interactive_combo.currentText().endswith("cached")
    assert not models.download_button.isEnabled()


def test_download_can_be_cancelled(make_widget, monkeypatch, tmp_path, qtbot):
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path))
    seen = []
    monkeypatch.setattr("napari_focsam.weights.fetch_weights", _fake_fetch(0.1, seen))
    viewer, image, widget = make_widget(synthetic_stack()[0])
    models = widget.setup.models
    models.random_check.setChecked(False)
    models.select_models("sam_vit_b")
    models.download_button.click()
    qtbot.waitUntil(lambda: len(seen) > 1, timeout=5000)
    widget.controller.cancel()
    wait_idle(qtbot, widget)
    assert "cancelled" in widget.status_label.text()
    assert len(seen) < 11
    assert models.interactive_combo.currentText().endswith("missing")


@pytest.mark.parametrize("gui_busy", [False, True], ids=["edit-while-computing",
                                                       "result-queued-before-the-edit"])
def test_only_the_latest_preview_is_shown(make_widget, fake_draw, qtbot, gui_busy):
    """An edit while a preview computes: both are computed, only the latest is shown. With a
    busy GUI thread the first result is queued before the edit, so it is delivered before the
    0 ms timer that builds the edit's request fires: it is stale and must not be drawn."""
    fake_draw.delay = 0.2 if gui_busy else 0.4
    viewer, image, widget = make_widget(synthetic_stack()[0])
    shown = []
    live = widget.controller.live
    live.changed.connect(lambda: shown.append(live.result and len(live.result.prompt.points_rc)))
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    qtbot.waitUntil(lambda: widget.controller.runner.running("preview"), timeout=5000)
    if gui_busy:
        time.sleep(fake_draw.delay + 0.3)  # the first result is queued meanwhile
    points.add([12, 30])  # while the first preview computes, or before its result is handled
    result, request = wait_preview(qtbot, widget)
    wait_idle(qtbot, widget)
    assert len(fake_draw.prompts) == 2  # both computed...
    assert [n for n in shown if n is not None] == [2]  # ...only the latest shown
    assert len(result.prompt.points_rc) == 2


def test_buttons_without_an_image_report_instead_of_raising(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = FocSamWidget(viewer, random_weights=True, cache_root=False)
    viewer.window.add_dock_widget(widget)
    for button, text in ((widget.objects.new_labels_button, "no image layer"),
                         (widget.embed_button, "no image layer"),
                         (widget.objects.commit_button, "Nothing to commit")):
        button.click()
        assert text in widget.status_label.text()
    assert not any(b.isEnabled() for b in widget.objects.propagate_buttons.values())
    widget.objects.propagate("both")  # the method (a shortcut or a script) still reports, not raises
    assert "Nothing to propagate" in widget.status_label.text()
    assert not widget.objects.undo_commit_button.isEnabled()
    widget.shutdown()


def test_commit_before_the_preview_is_ready_commits_when_it_is(make_widget, fake_draw, qtbot):
    fake_draw.delay = 0.2
    viewer, image, widget = make_widget(synthetic_stack()[0])
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    assert not widget.objects.commit()  # still computing: deferred
    assert "when the preview is ready" in widget.status_label.text()
    qtbot.waitUntil(lambda: widget.objects.book.ids == [1], timeout=10000)
    assert (widget.objects.target_layer().data == 1).sum() == disc(HW, (10, 20)).sum()


def test_polygon_is_a_mask_prompt_previewed_and_committed_as_drawn(make_widget, qtbot):
    """No stand-in: a mask prompt alone is the object, so the real Segmenter returns it."""
    from skimage.draw import polygon as fill_polygon

    viewer, image, widget = make_widget(synthetic_stack())
    _, shapes = widget.prompts.new_prompt_layers()
    viewer.dims.set_current_step(0, 3)
    verts = np.array([[3, 4, 5], [3, 4, 25], [3, 16, 12.0]])
    shapes.add_polygons(verts)
    result, request = wait_preview(qtbot, widget)
    expected = np.zeros(HW, bool)
    rr, cc = fill_polygon(verts[:, 1], verts[:, 2], shape=HW)
    expected[rr, cc] = True
    assert request.frame == 3
    np.testing.assert_array_equal(result.mask, expected)
    assert widget.objects.commit()
    labels = widget.objects.target_layer()
    np.testing.assert_array_equal(labels.data[3] == 1, expected)
    assert not labels.data[[0, 1, 2]].any() and len(shapes.data) == 0


def test_propagate_buttons_follow_the_data_and_undo_waits_for_propagation(make_widget, fake_draw,
                                                                         qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0])  # one 2D image
    assert not any(b.isEnabled() for b in widget.objects.propagate_buttons.values())
    stack = viewer.add_image(synthetic_stack(), name="stack")
    widget.setup.image_combo.set_layer(stack)
    qtbot.waitUntil(lambda: all(b.isEnabled() for b in widget.objects.propagate_buttons.values()))


def test_undo_commit_waits_for_a_running_propagation(make_widget, fake_draw, monkeypatch, qtbot):
    from widget_helpers import slow_propagate

    from napari_focsam.api.segmenter import Segmenter

    monkeypatch.setattr(Segmenter, "propagate", slow_propagate(0.4))
    viewer, image, widget = make_widget(synthetic_stack())
    points, _ = widget.prompts.new_prompt_layers()
    viewer.dims.set_current_step(0, 0)
    points.add([0, 10, 15])
    wait_preview(qtbot, widget)
    assert widget.objects.commit()
    widget.objects.propagate("forward")
    assert widget.controller.runner.running("propagate")
    widget.objects.undo_commit()
    assert "Propagation is running" in widget.status_label.text()
    assert widget.objects.book.ids == [1]
    widget.controller.cancel()
    wait_idle(qtbot, widget)


def test_new_data_in_the_same_layer_gets_a_new_segmenter(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack())
    holder = widget.controller.holder
    points, _ = widget.prompts.new_prompt_layers()
    viewer.dims.set_current_step(0, 0)
    points.add([0, 10, 20])
    wait_preview(qtbot, widget)
    first = holder.current
    new = synthetic_stack()[::-1].copy()  # the same shape, another array
    image.data = new
    _, request = wait_preview(qtbot, widget)
    assert request.spec.data is new and holder.current is not first
    assert holder.current.source.data is new
    second = holder.current
    new[:] = 0  # edited in place, then given to the layer again
    image.data = new
    _, request = wait_preview(qtbot, widget)
    assert holder.current is not second and request.spec.generation > 0


def test_an_unexpected_error_is_an_internal_error_with_the_log_file(make_widget, monkeypatch,
                                                                   tmp_path, qtbot):
    from widget_helpers import close_log_handler

    log = tmp_path / "focsam.log"
    monkeypatch.setenv("NAPARI_FOCSAM_LOG_FILE", str(log))

    def broken_draw(self, prompt):
        raise KeyError("boom")

    monkeypatch.setattr(Segmenter, "draw_object", broken_draw)
    viewer, image, widget = make_widget(synthetic_stack()[0])
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    try:
        qtbot.waitUntil(lambda: "internal error" in widget.status_label.text(), timeout=20000)
        assert widget.status_label.text() == (
            "Preview failed: internal error during the live preview (KeyError: 'boom'); please "
            f"report it with the log file {log}")
        assert "ff6060" in widget.status_label.styleSheet()  # shown as an error
        logged = log.read_text(encoding="utf-8")
        assert "Traceback" in logged and "broken_draw" in logged and "KeyError: 'boom'" in logged
    finally:
        close_log_handler(log)
