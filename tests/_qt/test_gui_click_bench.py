"""``napari-focsam bench gui-click``: its stages, its table, a clear error without a display, and
one short run in napari (a tiny model; the figures mean nothing here)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from napari_focsam.benchmarks.gui_click import STAGES, ClickTiming, format_gui_click_table, summarise
from napari_focsam.cli import main


def _timings(t0: float) -> SimpleNamespace:
    names = ("requested", "started", "submitted", "worker", "decoded", "received", "written",
             "refreshed")
    offsets = (0.001, 0.002, 0.003, 0.004, 0.054, 0.055, 0.056, 0.060)
    return SimpleNamespace(**{n: t0 + o for n, o in zip(names, offsets, strict=True)})


def test_the_stages_add_up_to_the_click_latency():
    clicks = [ClickTiming.from_stamps(t0, t0 + 0.001, _timings(t0), t0 + 0.07) for t0 in (0.0, 1.0)]
    stages = clicks[0].stages
    assert [k for k, _ in STAGES] == list(stages)
    assert stages["decode"] == pytest.approx(0.05) and stages["draw"] == pytest.approx(0.01)
    assert sum(v for k, v in stages.items() if k != "total") == pytest.approx(stages["total"])
    summary = summarise(clicks)
    assert summary["total"]["median_ms"] == pytest.approx(70.0)
    result = {"settings": {"model": "sam_vit_b", "device": "cpu", "dtype": "fp32", "clicks": 2,
                           "image_shape": [32, 128, 128], "slice": 15},
              "machine": {"cpu": "Some CPU", "cores": 2, "torch_threads": 2, "torch": "2.x"},
              "load": {"before": 0.5, "after": 0.7},
              "first_click": {"delay_s": 0.0, "total_ms": 4400.0, "encode_ms": 3900.0,
                              "ready_ms": None, "stages_ms": {k: v * 1e3 for k, v in stages.items()}},
              "clicks": summary}
    table = format_gui_click_table(result)
    assert "click -> preview drawn" in table and "event coalescing" in table and "Some CPU" in table
    assert "first click after choosing the model (at once): 4400 ms" in table
    assert "load average 0.50 before" in table


def test_without_a_display_it_says_how_to_run_it(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert main(["bench", "gui-click", "--clicks", "1"]) == 2
    err = capsys.readouterr().err
    assert "needs a display" in err and "xvfb-run -a napari-focsam bench gui-click" in err


@pytest.mark.gui
def test_a_short_run_in_napari(tmp_path, capsys, qapp):
    out = tmp_path / "gui.json"
    assert main(["bench", "gui-click", "--model", "sam_test_tiny", "--clicks", "1",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "click -> preview drawn" in printed and "first click after choosing the model" in printed
    figures = json.loads(out.read_text())
    assert figures["settings"]["model"] == "sam_test_tiny" and len(figures["runs"]) == 1
    run = figures["runs"][0]
    assert all(run[k] >= 0 for k, _ in STAGES) and run["total"] >= run["decode"]
    assert figures["first_click"]["total_ms"] > 0
