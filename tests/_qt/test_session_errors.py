"""The widget's segmenter cache (identity of the image data), missing weights, and the one map
from the package's error tree to status-line text (no viewer)."""

from __future__ import annotations

import builtins
import gc
import weakref

import numpy as np
import pytest
from widget_helpers import close_log_handler

from napari_focsam._qt.axes import AxesError, ImageAxes
from napari_focsam._qt.session import ModelChoice, SegmenterHolder, SegmenterSpec
from napari_focsam._qt.tasks import DownloadCancelled, describe_error
from napari_focsam.errors import ENV_LOG_FILE, Cancelled, UserError
from napari_focsam.weights import WeightsNotAvailableError, cached_path


def _spec(data, generation: int = 0, model: str = "sam_test_tiny", weights: str | None = "random"):
    return SegmenterSpec(data, generation, ImageAxes(2), ModelChoice(model, weights), None,
                         "cpu", "fp32", False)


def test_a_cached_segmenter_matches_its_data_object_and_generation_not_an_id(monkeypatch):
    holder = SegmenterHolder()
    data = np.zeros((24, 32), np.uint8)
    spec = _spec(data)
    with holder.lock:
        first = holder.get(spec)
        assert holder.get(_spec(data)) is first  # the same data object and generation
    assert not holder.matches(_spec(data.copy()))  # equal pixels, another array
    assert not holder.matches(_spec(data, generation=1))  # e.g. the layer's data was set again
    # even if every object had the same id (as a freed array's id is reused), nothing matches
    # that is not the very data object
    other = _spec(np.zeros_like(data))
    monkeypatch.setattr(builtins, "id", lambda _obj: 1)
    matched = holder.matches(other)
    monkeypatch.undo()
    assert not matched
    # and while its segmenter is cached, the data stays alive: its id is not handed on
    alive = weakref.ref(data)
    del data, spec
    gc.collect()
    assert alive() is not None
    with holder.lock:
        assert holder.get(other) is not first


def test_missing_registry_weights_name_the_gui_actions(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path))
    holder = SegmenterHolder()
    with holder.lock, pytest.raises(WeightsNotAvailableError) as info:
        holder.get(_spec(np.zeros((24, 32), np.uint8), model="sam_vit_b", weights=None))
    assert isinstance(info.value, UserError)
    assert info.value.model_id == "sam_vit_b" and info.value.path == str(cached_path("sam_vit_b"))
    assert "click 'Download' next to the model, or choose a local checkpoint file" in str(info.value)


def test_errors_map_to_status_text_once(monkeypatch, tmp_path):
    log = tmp_path / "focsam.log"
    monkeypatch.setenv(ENV_LOG_FILE, str(log))
    assert isinstance(AxesError("x"), UserError) and isinstance(AxesError("x"), ValueError)
    assert issubclass(DownloadCancelled, Cancelled)
    assert describe_error(AxesError("no image layer"), "the preview") == "no image layer"
    assert describe_error(DownloadCancelled("download of x cancelled"), "a download") \
        == "download of x cancelled"
    assert not log.exists()  # user errors and cancellations leave no traceback
    try:
        {}["missing"]
    except KeyError as exc:
        text = describe_error(exc, "the preview")
    try:
        assert text == (f"internal error during the preview (KeyError: 'missing'); please report "
                        f"it with the log file {log}")
        logged = log.read_text(encoding="utf-8")
        assert "Traceback" in logged and "KeyError: 'missing'" in logged
    finally:
        close_log_handler(log)
