"""The widget's long tasks: propagation (tiny real models and slow fakes), cancel, layers removed
mid-run, closing the viewer, and a GUI that keeps running while embeddings compute."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer
from widget_helpers import HW, disc, slow_propagate, synthetic_stack, wait_idle, wait_preview

from napari_focsam.api.segmenter import Progress, Segmenter

pytestmark = pytest.mark.gui


def _commit_on(viewer, widget, qtbot, frame: int, rc) -> np.ndarray:
    viewer.dims.set_current_step(0, frame)
    points = widget.prompts.points_layer() or widget.prompts.new_prompt_layers()[0]
    points.add([frame, *rc])
    wait_preview(qtbot, widget)
    assert widget.objects.commit(), widget.status_label.text()
    return widget.objects.target_layer()


def test_propagation_with_tiny_models_writes_every_slice(make_widget, qtbot):
    viewer, image, widget = make_widget(synthetic_stack())
    labels = _commit_on(viewer, widget, qtbot, 1, (10, 18))
    committed = labels.data[1].copy()
    assert committed.any()
    widget.objects.propagate("both")
    assert widget.controller.runner.running("propagate")
    wait_idle(qtbot, widget, timeout=60000)
    seg = widget.controller.holder.current
    assert "Propagated 1 object(s) over 4 frame(s)" in widget.status_label.text()
    np.testing.assert_array_equal(labels.data, seg.labels_in_data_order())
    assert all((labels.data[t] == 1).any() for t in range(4))
    assert widget.objects.book.history == []  # commits cannot be undone across a propagation


def test_cancel_keeps_committed_and_written_labels(make_widget, fake_draw, monkeypatch, qtbot):
    monkeypatch.setattr(Segmenter, "propagate", slow_propagate(0.3, order=[1, 2, 3, 0]))
    viewer, image, widget = make_widget(synthetic_stack())
    labels = _commit_on(viewer, widget, qtbot, 1, (10, 18))
    labels.data[2, 25:30, 40:45] = 7  # another object, never propagated
    committed = labels.data.copy()
    widget.objects.propagate("forward")
    qtbot.waitUntil(lambda: bool(widget.propagation.run and widget.propagation.run.frames_written),
                    timeout=10000)
    assert widget.cancel_button.isEnabled()
    widget.controller.cancel()
    wait_idle(qtbot, widget)
    assert "cancelled by the user" in widget.status_label.text()
    np.testing.assert_array_equal(labels.data[1], committed[1])
    assert (labels.data[2, 25:30, 40:45] == 7).all()
    assert not labels.data[[0, 3]].any()  # frames not reached stay as they were


def test_removing_the_labels_layer_mid_run_cancels_with_a_message(make_widget, fake_draw, monkeypatch,
                                                                   qtbot):
    monkeypatch.setattr(Segmenter, "propagate", slow_propagate(0.3))
    viewer, image, widget = make_widget(synthetic_stack())
    labels = _commit_on(viewer, widget, qtbot, 0, (10, 18))
    widget.objects.propagate("forward")
    qtbot.waitUntil(lambda: bool(widget.propagation.run and widget.propagation.run.frames_written),
                    timeout=10000)
    viewer.layers.remove(labels)
    wait_idle(qtbot, widget)
    text = widget.status_label.text()
    assert f"the labels layer '{labels.name}' was removed" in text and "Propagation stopped" in text


def test_removing_the_image_mid_embedding_cancels(make_widget, monkeypatch, qtbot):
    def slow_embed(self, frames=None, *, cancel_event=None, roles=None):
        for i in range(50):
            time.sleep(0.05)
            if cancel_event is not None and cancel_event.is_set():
                return
            yield Progress("embed:interactive", i + 1, 50, i)

    monkeypatch.setattr(Segmenter, "embed", slow_embed)
    viewer, image, widget = make_widget(synthetic_stack())
    widget.controller.compute_embeddings()
    qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=10000)
    viewer.layers.remove(image)
    wait_idle(qtbot, widget)
    assert "the image layer 'image' was removed" in widget.status_label.text()


def test_closing_the_viewer_stops_the_worker(make_widget, fake_draw, monkeypatch, qtbot):
    started = threading.Event()
    monkeypatch.setattr(Segmenter, "propagate", slow_propagate(0.2, order=list(range(4)) * 25,
                                                               started=started))
    viewer, image, widget = make_widget(synthetic_stack())
    _commit_on(viewer, widget, qtbot, 0, (10, 18))
    widget.objects.propagate("forward")
    task = widget.controller.runner.tasks["propagate"]
    qtbot.waitUntil(started.is_set, timeout=10000)
    runner = widget.controller.runner
    viewer.close()
    assert task.cancelled and runner.closed
    qtbot.waitUntil(lambda: task.done, timeout=5000)  # 100 frames would take 20 s


def test_gui_keeps_running_while_embeddings_compute(make_widget, monkeypatch, qtbot):
    n, delay = 8, 0.15

    def slow_embed(self, frames=None, *, cancel_event=None, roles=None):
        for i in range(n):
            time.sleep(delay)  # holds no lock the GUI needs, like the real encoder
            yield Progress("embed:interactive", i + 1, n, i)

    monkeypatch.setattr(Segmenter, "embed", slow_embed)
    viewer, image, widget = make_widget(synthetic_stack())
    ticks = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    start = time.perf_counter()
    widget.controller.compute_embeddings()
    wait_idle(qtbot, widget)
    elapsed = time.perf_counter() - start
    timer.stop()
    assert elapsed >= n * delay
    assert len(ticks) >= 0.5 * elapsed / 0.02  # the event loop ran all along
    assert max(np.diff(ticks)) < 0.5  # never blocked for long
    assert widget.status_label.text() == "Embeddings ready"
    assert widget.progress.value() == 0 and widget.embed_button.isEnabled()


def test_correction_on_another_slice_adds_a_prompt_frame(make_widget, fake_draw, monkeypatch, qtbot):
    monkeypatch.setattr(Segmenter, "propagate", slow_propagate(0.0))
    viewer, image, widget = make_widget(synthetic_stack())
    labels = _commit_on(viewer, widget, qtbot, 0, (10, 15))
    widget.objects.propagate("forward")
    wait_idle(qtbot, widget)
    assert (labels.data[3] == 1).any()
    widget.objects.object_list.item(0).setSelected(True)  # correct object 1 on slice 3
    labels_before = labels.data.copy()
    _commit_on(viewer, widget, qtbot, 3, (20, 30))
    assert widget.objects.book.ids == [1]
    assert [f for _, f in widget.objects.book.frames_of(1)] == [0, 3]
    np.testing.assert_array_equal(labels.data[3] == 1, disc(HW, (20, 30)))
    np.testing.assert_array_equal(labels.data[:3], labels_before[:3])
    assert "slice 0, 3" in widget.objects.object_list.item(0).text()
    widget.objects.propagate("both")
    wait_idle(qtbot, widget)
    assert widget.objects.book.ids == [1]


def test_removing_the_dock_widget_stops_the_worker(make_widget, fake_draw, monkeypatch, qtbot):
    monkeypatch.setattr(Segmenter, "propagate", slow_propagate(0.2, order=list(range(4)) * 25))
    viewer, image, widget = make_widget(synthetic_stack())
    _commit_on(viewer, widget, qtbot, 0, (10, 18))
    widget.objects.propagate("forward")
    task = widget.controller.runner.tasks["propagate"]
    viewer.window.remove_dock_widget(widget)
    assert task.cancelled
    qtbot.waitUntil(lambda: task.done, timeout=5000)


@pytest.mark.parametrize("interactive", ["focsam_test_tiny", "sam2_test_tiny"])
def test_real_tiny_interactive_models_preview_and_commit(make_widget, qtbot, interactive):
    viewer, image, widget = make_widget(synthetic_stack(1)[0], interactive=interactive)
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 15])
    wait_preview(qtbot, widget, timeout=60000)
    points.add([20, 30])  # FocSAM refines from the second click on
    result, request = wait_preview(qtbot, widget, timeout=60000)
    assert result.mask.shape == HW and len(request.mapped.prompt.points_rc) == 2
    # random weights may draw nothing: an empty preview is refused, anything else is committed
    assert widget.objects.commit() == bool(result.mask.any()), widget.status_label.text()
    if result.mask.any():
        assert widget.objects.target_layer().data.shape == HW
    else:
        assert "empty (0 pixels)" in widget.status_label.text()
