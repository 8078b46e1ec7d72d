"""What the status line says and when: the stages of an embedding, "Cancelling…" at once and a
task that ends within a fraction of a frame, empty previews, prompt layers, negative clicks."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from napari.utils.colormaps.standardize_color import transform_color
from test_widget_prompts import _click
from widget_helpers import synthetic_stack, wait_idle, wait_preview

from napari_focsam._qt.prompt_layers import POINTS_NAME, POSITIVE, SHAPES_NAME
from napari_focsam.api.segmenter import Progress, Segmenter
from napari_focsam.engine.cancel import Interrupted

pytestmark = pytest.mark.gui

#: A frame of the stand-ins below: far longer than any test waits for.
FRAME_S = 20.0


def _messages(widget) -> list[str]:
    seen = []
    widget.controller.messages.posted.connect(lambda text, _severity: seen.append(text))
    return seen


def test_embedding_reports_loading_embedding_and_ready(make_widget, monkeypatch, qtbot):
    states = []

    def slow_embed(self, frames=None, *, cancel_event=None, roles=None):
        for role in self.stores:
            for i in range(3):
                time.sleep(0.05)
                states.append(widget.status_label.text())
                yield Progress(f"embed:{role}", i + 1, 3, i)

    monkeypatch.setattr(Segmenter, "embed", slow_embed)
    viewer, image, widget = make_widget(synthetic_stack(3), encode_ahead=False)
    seen = _messages(widget)
    widget.controller.compute_embeddings()
    wait_idle(qtbot, widget)
    assert seen == ["Loading sam_test_tiny and sam2_test_tiny…",
                    "Computing the embeddings of 3 frame(s) with sam_test_tiny (interactive) and "
                    "sam2_test_tiny (propagation)…",
                    "Embeddings ready"]
    assert not any(s.startswith("Loading") for s in states[1:])  # not while it embeds


def _start_propagation(viewer, widget, qtbot):
    viewer.dims.set_current_step(0, 0)
    points = widget.prompts.new_prompt_layers()[0]
    points.add([0, 10, 15])
    wait_preview(qtbot, widget)
    assert widget.objects.commit()
    widget.objects.propagate("forward")


@pytest.mark.parametrize("raises", [False, True], ids=["returns", "interrupted"])
def test_cancel_says_so_at_once_and_stops_within_a_fraction_of_a_frame(make_widget, fake_draw,
                                                                       monkeypatch, qtbot, raises):
    received = []
    started = threading.Event()

    def propagate(self, prompts, direction="both", *, cancel_event=None):
        received.append(cancel_event)

        def run():
            started.set()
            if cancel_event.wait(FRAME_S):  # the model stops inside the frame (engine.cancel)
                if raises:
                    raise Interrupted("stopped on request")
                return
            yield Progress("propagate", 1, 1, 0)

        return run()

    monkeypatch.setattr(Segmenter, "propagate", propagate)
    viewer, image, widget = make_widget(synthetic_stack(), encode_ahead=False)
    _start_propagation(viewer, widget, qtbot)
    task = widget.controller.runner.tasks["propagate"]
    qtbot.waitUntil(started.is_set, timeout=10000)
    assert received == [task.cancel_event]  # the GUI's cancel event reaches the Segmenter
    assert widget.cancel_button.isEnabled()
    start = time.perf_counter()
    widget.cancel_button.click()
    assert widget.status_label.text() == "Cancelling the propagation…"
    assert not widget.cancel_button.isEnabled()  # until the task has stopped
    wait_idle(qtbot, widget, timeout=5000)
    assert time.perf_counter() - start < 0.2 * FRAME_S
    text = widget.status_label.text()
    assert text.startswith("Propagation stopped (cancelled by the user)") and "failed" not in text
    assert not widget.cancel_button.isEnabled()


def test_cancel_stops_an_embedding_within_its_frame(make_widget, monkeypatch, qtbot):
    received = []

    def embed(self, frames=None, *, cancel_event=None, roles=None):
        received.append(cancel_event)
        if not cancel_event.wait(FRAME_S):
            yield Progress("embed:interactive", 1, 1, 0)

    monkeypatch.setattr(Segmenter, "embed", embed)
    viewer, image, widget = make_widget(synthetic_stack(), encode_ahead=False)
    widget.controller.compute_embeddings()
    qtbot.waitUntil(lambda: bool(received), timeout=10000)
    start = time.perf_counter()
    widget.controller.cancel()
    assert widget.status_label.text() == "Cancelling the embeddings…"
    wait_idle(qtbot, widget, timeout=5000)
    assert time.perf_counter() - start < 0.2 * FRAME_S
    assert len(received) == 1 and received[0].is_set()  # the task's event, set by Cancel
    assert widget.status_label.text().startswith("Embedding stopped (cancelled by the user)")


def test_an_empty_preview_is_not_committed(make_widget, monkeypatch, qtbot):
    monkeypatch.setattr(Segmenter, "draw_object", lambda self, prompt: np.zeros(self.source.frame_shape,
                                                                                bool))
    viewer, image, widget = make_widget(synthetic_stack()[0])
    points, _ = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    wait_preview(qtbot, widget)
    assert not widget.objects.commit()
    assert "The preview is empty (0 pixels): nothing to commit" in widget.status_label.text()
    assert widget.objects.target_layer() is None and widget.objects.book.ids == []
    assert len(points.data) == 1  # the clicks stay, to be corrected


def test_new_prompt_layers_replace_the_previous_ones(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0])
    points, shapes = widget.prompts.new_prompt_layers()
    points.add([10, 20])
    shapes.add_rectangles(np.array([[4, 6], [4, 20], [16, 20], [16, 6.0]]))
    new_points, new_shapes = widget.prompts.new_prompt_layers()
    names = [layer.name for layer in viewer.layers]
    assert names.count(POINTS_NAME) == 1 and names.count(SHAPES_NAME) == 1
    assert not any(name.startswith((f"{POINTS_NAME} [", f"{SHAPES_NAME} [")) for name in names)
    assert len(new_points.data) == 0 and len(new_shapes.data) == 0
    assert widget.prompts.points_layer() is new_points and widget.prompts.shapes_layer() is new_shapes


def test_after_a_shift_click_the_next_click_is_positive_again(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0])
    points, _ = widget.prompts.new_prompt_layers()
    _click(points, (10, 20))
    _click(points, (12, 25), ["Shift"])
    qtbot.waitUntil(lambda: points.features[POSITIVE].tolist() == [True, False])
    qtbot.waitUntil(lambda: bool(points.feature_defaults[POSITIVE][0]))
    np.testing.assert_allclose(transform_color(points.current_face_color)[0], [0, 1, 0, 1])  # lime
    np.testing.assert_allclose(points.face_color[1], [1, 0, 0, 1])  # the negative point stays red
    _click(points, (14, 30))
    assert points.features[POSITIVE].tolist() == [True, False, True]
    np.testing.assert_allclose(points.face_color[2], [0, 1, 0, 1])
