"""The tiling setting: the Advanced section's choices, the segmenter built with them, and the
status line when a click first has to encode a tile."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from widget_helpers import synthetic_stack

from napari_focsam._qt.axes import ImageAxes
from napari_focsam._qt.session import ModelChoice, SegmenterHolder, SegmenterSpec
from napari_focsam._qt.setup_panel import AUTO_HALO
from napari_focsam._qt.tasks import PreviewResult, Status, preview_task
from napari_focsam.api.prompts_file import ObjectPrompt
from napari_focsam.engine.tiling import Tiling


def _spec(data, tiling: Tiling | None = None) -> SegmenterSpec:
    return SegmenterSpec(data, 0, ImageAxes(2), ModelChoice("sam_test_tiny", "random"), None,
                         "cpu", "fp32", False, tiling or Tiling())


@pytest.mark.gui
def test_the_advanced_section_sets_the_tiling(make_widget, fake_draw, qtbot):
    viewer, image, widget = make_widget(synthetic_stack()[0])
    setup = widget.setup
    assert setup.tiling_combo.currentText() == "auto" and setup.halo_spin.value() == AUTO_HALO
    assert setup.halo_spin.text() == "auto"
    assert widget.controller.spec().tiling == Tiling()
    seen = []
    setup.changed.connect(lambda choices: seen.append(choices.tiling))
    setup.tiling_combo.setCurrentText("off")
    setup.halo_spin.setValue(64)
    assert seen[-1] == Tiling("off", halo=64)
    spec = widget.controller.spec()
    assert spec.tiling == Tiling("off", halo=64)
    with widget.controller.holder.lock:
        assert widget.controller.holder.get(spec).tiling == Tiling("off", halo=64)


def test_the_segmenter_follows_the_tiling_choice():
    data = np.zeros((1100, 1100), np.uint8)
    holder = SegmenterHolder()
    with holder.lock:
        tiled = holder.get(_spec(data))
        assert tiled.tile_grid is not None and tiled.tile_grid.n_tiles == 4
        assert not holder.matches(_spec(data, Tiling("off")))  # another setting, another one
        resized = holder.get(_spec(data, Tiling("off")))
    assert resized is not tiled and resized.tile_grid is None


def test_the_first_click_on_a_tile_says_it_encodes_a_tile():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 50, (1100, 1100)).astype(np.uint8)
    holder = SegmenterHolder()
    spec = _spec(data)
    prompt = ObjectPrompt(1, None, np.array([[300.0, 300.0]]), np.array([1]))
    events = list(preview_task(holder, spec, prompt, 1, cancel_event=threading.Event()))
    texts = [e.text for e in events if isinstance(e, Status)]
    assert "Computing the embedding of a tile of the image with sam_test_tiny…" in texts
    result = events[-1]
    assert isinstance(result, PreviewResult) and result.mask.shape == (1100, 1100)
    again = list(preview_task(holder, spec, prompt, 2, cancel_event=threading.Event()))
    assert not any(isinstance(e, Status) and "Computing" in e.text for e in again)
