"""Fixtures of the widget tests: a viewer with an image and the widget (tiny random models)."""

from __future__ import annotations

import pytest
from widget_helpers import FakeDraw

from napari_focsam.api.segmenter import Segmenter


@pytest.fixture
def fake_draw(monkeypatch):
    fake = FakeDraw()
    monkeypatch.setattr(Segmenter, "draw_object", lambda self, prompt: fake(self, prompt))
    return fake


@pytest.fixture
def make_widget(make_napari_viewer, qtbot):
    """``make(data, **image_kwargs) -> (viewer, image_layer, widget)`` with tiny random models
    (``encode_ahead``: the dock's option, on by default as in napari)."""
    from napari_focsam._qt import FocSamWidget

    widgets = []

    def make(data, *, interactive="sam_test_tiny", encode_ahead=True, **image_kwargs):
        viewer = make_napari_viewer()
        image = viewer.add_image(data, name="image", **image_kwargs)
        widget = FocSamWidget(viewer, random_weights=True, cache_root=False,
                              encode_ahead=encode_ahead)
        viewer.window.add_dock_widget(widget, name="FocSAM")
        widget.setup.models.select_models(interactive, "sam2_test_tiny")
        widgets.append(widget)
        return viewer, image, widget

    yield make
    for widget in widgets:
        runner = widget.controller.runner
        runner.cancel(None, "test teardown")
        qtbot.waitUntil(lambda runner=runner: not runner.running(), timeout=20000)
    widgets.clear()

