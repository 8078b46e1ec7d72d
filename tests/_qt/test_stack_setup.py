"""Stacks without SAM 2 weights, the propagation model loaded on first use, "none (2D slices)",
z / t stack axes recorded for the tracking dock, and labels targets that follow the image."""

from __future__ import annotations

import numpy as np
import pytest
from widget_helpers import HW, disc, slow_propagate, synthetic_stack, wait_idle, wait_preview

from napari_focsam._qt.axes import STACK_META_KEY, StackKind, axis_options, time_axis
from napari_focsam._qt.session import ModelChoice
from napari_focsam._qt.tracking_panel import TrackingPanel
from napari_focsam.api.segmenter import Segmenter

pytestmark = pytest.mark.gui


def _registry_propagation(widget, monkeypatch, model_id: str = "sam2.1_hiera_tiny") -> None:
    """Random interactive weights, a registry propagation model (its weights as they are)."""
    monkeypatch.setattr(widget.setup.models, "propagation_choice", lambda: ModelChoice(model_id))
    widget.setup.models.changed.emit()


def _commit(viewer, widget, qtbot, frame: int, rc) -> None:
    viewer.dims.set_current_step(0, frame)
    points = widget.prompts.points_layer() or widget.prompts.new_prompt_layers()[0]
    points.add([frame, *rc])
    wait_preview(qtbot, widget)
    assert widget.objects.commit(), widget.status_label.text()


def test_a_stack_works_without_any_sam2_weights(make_widget, fake_draw, monkeypatch, tmp_path,
                                                qtbot):
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path))  # nothing cached
    viewer, image, widget = make_widget(synthetic_stack())
    _registry_propagation(widget, monkeypatch)
    messages = []
    widget.controller.messages.posted.connect(lambda text, _severity: messages.append(text))
    _commit(viewer, widget, qtbot, 1, (10, 18))
    _commit(viewer, widget, qtbot, 1, (20, 30))
    labels = widget.objects.target_layer()
    np.testing.assert_array_equal(labels.data[1] == 2, disc(HW, (20, 30)))
    widget.objects.undo_commit()
    assert not (labels.data == 2).any() and widget.objects.book.ids == [1]
    seg = widget.controller.holder.current
    assert seg.propagation is None and not any("sam2.1" in m for m in messages)
    # embeddings: the interactive model's, and a line saying why SAM 2's are not computed
    widget.controller.compute_embeddings()
    wait_idle(qtbot, widget)
    text = widget.status_label.text()
    assert text.startswith("Embeddings of sam_test_tiny ready; those of sam2.1_hiera_tiny")
    assert "click 'Download' next to the propagation model" in text
    assert seg.stores["interactive"].missing() == [] and "propagation" not in seg.stores
    # propagation names the GUI action, and nothing is written
    before = labels.data.copy()
    assert widget.objects.propagate("both")
    wait_idle(qtbot, widget)
    text = widget.status_label.text()
    assert text.startswith("Propagation failed: the weights of sam2.1_hiera_tiny are not "
                           "downloaded: click 'Download' next to the propagation model")
    assert "resolve_weights" not in text and "offline" not in text
    np.testing.assert_array_equal(labels.data, before)


def test_the_propagation_model_is_loaded_on_first_propagate(make_widget, fake_draw, monkeypatch,
                                                            qtbot):
    monkeypatch.setattr(Segmenter, "propagate", slow_propagate(0.0))
    viewer, image, widget = make_widget(synthetic_stack())
    _commit(viewer, widget, qtbot, 0, (10, 15))
    holder = widget.controller.holder
    seg = holder.current
    assert seg.propagation is None
    widget.objects.propagate("forward")
    wait_idle(qtbot, widget)
    assert holder.current is seg  # the same segmenter (embeddings kept), the model attached
    assert seg.propagation is not None and seg.propagation.model_id == "sam2_test_tiny"
    assert "Propagated 1 object(s)" in widget.status_label.text()


def test_2d_slices_segment_each_plane_without_propagation(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack())
    combo = widget.setup.stack_combo
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "axis 0 as z (4 slices)", "axis 0 as t (4 frames)", "none (2D slices)"]
    widget.setup.select_stack(None, "planes")
    axes = widget.setup.axes()
    assert axes.is_stack and not axes.propagates and widget.controller.spec().propagation is None
    assert "no propagation" in widget.setup.axes_label.text()
    _commit(viewer, widget, qtbot, 2, (10, 20))
    labels = widget.objects.target_layer()
    np.testing.assert_array_equal(labels.data[2], disc(HW, (10, 20)).astype(np.int32))
    assert labels.data[[0, 1, 3]].sum() == 0
    assert not any(b.isEnabled() for b in widget.objects.propagate_buttons.values())
    assert not widget.objects.propagate("both")
    assert "needs a z or t stack" in widget.status_label.text()


def test_the_stack_axis_marked_as_time_makes_a_time_lapse_for_tracking(make_widget, fake_draw,
                                                                        qtbot):
    viewer, image, widget = make_widget(synthetic_stack())
    panel = TrackingPanel(viewer)
    viewer.window.add_dock_widget(panel)
    _commit(viewer, widget, qtbot, 0, (10, 15))  # axis 0 as z (the default)
    z_labels = widget.objects.target_layer()
    assert z_labels.metadata[STACK_META_KEY] == {"axis": 0, "kind": "z"}
    assert panel.labels_combo.count() == 0 and panel.note.isVisibleTo(panel)
    assert f"'{z_labels.name}' has no axis marked as time" in panel.note.text()
    assert "'axis 0 as t'" in panel.note.text()
    widget.setup.select_stack(0, "t")
    _commit(viewer, widget, qtbot, 1, (10, 18))
    assert z_labels.metadata[STACK_META_KEY] == {"axis": 0, "kind": "t"}
    assert panel.labels_combo.current_layer() is z_labels and not panel.note.isVisibleTo(panel)


def test_the_labels_target_follows_the_image(make_widget, fake_draw, qtbot):
    viewer, stack, widget = make_widget(synthetic_stack())
    flat = viewer.add_image(synthetic_stack(1)[0], name="flat")
    widget.setup.image_combo.set_layer(stack)
    _commit(viewer, widget, qtbot, 0, (10, 15))
    stack_labels = widget.objects.target_layer()
    other = viewer.add_labels(np.zeros((5, *HW), np.int32), name="wrong shape")
    combo = widget.objects.labels_combo
    assert other not in combo.layers() and stack_labels in combo.layers()
    widget.setup.image_combo.set_layer(flat)
    assert widget.objects.target_layer() is None  # a stack's labels do not fit a 2D image
    assert combo.layers() == [] and widget.objects.book.ids == []
    points = widget.prompts.new_prompt_layers()[0]
    points.add([10, 20])
    wait_preview(qtbot, widget)
    assert widget.objects.commit()
    flat_labels = widget.objects.target_layer()
    assert flat_labels.data.shape == HW and combo.layers() == [flat_labels]
    widget.setup.image_combo.set_layer(stack)
    assert widget.objects.target_layer() is stack_labels  # re-selected with its image
    widget.setup.image_combo.set_layer(flat)
    assert widget.objects.target_layer() is flat_labels


def test_axis_options_and_time_axes():
    options, default = axis_options((32, 64, 64))
    assert [o.text for o in options] == ["axis 0 as z (32 slices)", "axis 0 as t (32 frames)",
                                         "none (2D slices)"]
    assert options[default].kind is StackKind.Z
    options, default = axis_options((24, 64, 64), ("t", "y", "x"))
    assert options[default].kind is StackKind.T and options[default].text == "axis 0 't' as t (24 frames)"
    options, default = axis_options((5, 7, 64, 64))
    assert len(options) == 5 and (options[default].axis, options[default].kind) == (1, StackKind.Z)
    planes = options[-1].axes(4, False)
    assert (planes.stack_axis, planes.outer_axis, planes.propagates) == (1, 0, False)
    assert axis_options((64, 64)) == ([options[0].__class__("none (2D image)", None, StackKind.Z)], 0)
    assert time_axis({}, ("t", "y", "x")) == 0 and time_axis({}, ("-3", "-2", "-1")) is None
    assert time_axis({STACK_META_KEY: {"axis": 0, "kind": "t"}}) == 0
    assert time_axis({STACK_META_KEY: {"axis": 0, "kind": "z"}}, ("t", "y", "x")) is None
