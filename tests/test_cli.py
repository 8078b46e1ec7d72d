"""The napari-focsam command line."""

from __future__ import annotations

import json

import pytest
import torch

from napari_focsam.cli import main


def test_bench_sam_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "figures" / "sam.json"
    code = main(["bench", "sam", "--model", "sam_test_tiny", "--repeats", "1",
                 "--dtypes", "fp32,bf16", "--image-size", "300", "200", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "image encoder 1024x1024, fp32" in printed
    assert "image encoder 1024x1024, bf16" in printed
    assert "click -> mask 300x200 (single)" in printed
    assert "peak RSS" in printed
    figures = json.loads(out.read_text())
    assert set(figures["encoder"]) == {"fp32", "bf16"}
    for timing in [*figures["encoder"].values(), *figures["click"].values()]:
        assert 0 < timing["min_s"] <= timing["median_s"]
    assert figures["peak_rss_mib"] > 0
    assert figures["settings"]["image_hw"] == [300, 200]


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["bench", "sam", "--model", "sam_vit_z"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'sam_vit_z'" in err and "sam_vit_b" in err


def test_unknown_dtype_is_a_clear_error(capsys):
    code = main(["bench", "sam", "--model", "sam_test_tiny", "--dtypes", "fp8", "--repeats", "1"])
    assert code == 2
    assert "fp8" in capsys.readouterr().err


def test_bench_focsam_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "figures" / "focsam.json"
    threads = torch.get_num_threads()
    try:
        code = main(["bench", "focsam", "--model", "focsam_test_tiny", "--repeats", "1",
                     "--dtypes", "fp32,bf16", "--threads", "1", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)  # the CLI sets the process-wide thread count
    assert code == 0
    printed = capsys.readouterr().out
    for line in ("refine, small box (4/9 win), fp32", "refine, full box (16/16 win), bf16",
                 "decode 3 clicks + prev logits (refined emb)", "postprocess -> mask 1024x1024",
                 "peak RSS"):
        assert line in printed
    figures = json.loads(out.read_text())
    assert set(figures["refine"]) == {"fp32", "bf16"}
    # a 200 px object grows to a 280 px focus box: 2x2 plain and 3x3 shifted windows of 16
    assert figures["focus"]["small"]["box"] == [372, 372, 652, 652]
    assert figures["focus"]["small"]["windows_per_block"] == [4, 9]  # tiny config: depth 2
    assert figures["focus"]["full"]["windows_per_block"] == [16, 16]
    timings = [t for cases in figures["refine"].values() for t in cases.values()]
    timings += [*figures["decode"].values(), figures["postprocess"], figures["click"]]
    for timing in timings:
        assert 0 < timing["min_s"] <= timing["median_s"]
    assert figures["settings"]["threads"] == 1
    assert figures["peak_rss_mib"] > 0


def test_bench_focsam_unknown_model_is_a_clear_error(capsys):
    assert main(["bench", "focsam", "--model", "focsam_vit_z"]) == 2
    assert "unknown model 'focsam_vit_z'" in capsys.readouterr().err


def test_bench_all_quick_writes_json_and_markdown(tmp_path, capsys):
    import json as _json

    from napari_focsam.cli import main as cli_main

    out = tmp_path / "bench"
    assert cli_main(["bench", "all", "--quick", "--out", str(out), "--only", "sam,track-memory"]) == 0
    report = _json.loads((out / "bench.json").read_text())
    assert set(report["results"]) == {"sam", "track-memory"} and report["quick"] is True
    assert report["machine"]["cpu"] and report["results"]["sam"]["wall_s"] > 0
    md = (out / "bench.md").read_text()
    assert md.startswith("# napari-focsam benchmarks") and "## sam (" in md and "Quick mode" in md
    assert "## track-memory" in md and "## focsam" not in md
    assert "bench.json" in capsys.readouterr().out
    assert cli_main(["bench", "all", "--quick", "--out", str(out), "--only", "nope"]) == 2


def test_bench_all_says_gui_click_needs_a_display(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["bench", "all", "--quick", "--out", str(tmp_path), "--only", "gui-click"]) == 2
    assert "needs a display" in capsys.readouterr().err


def test_bench_track_memory_prints_table_cpu_and_json(tmp_path, capsys):
    out = tmp_path / "track.json"
    assert main(["bench", "track-memory", "--model", "sam2_test_tiny", "--frames", "6",
                 "--image-size", "128", "--lanes", "2", "--sample-every", "3", "--json",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Track all over 6 frames: sam2_test_tiny (random weights) at 128^2, 2 lanes" in printed
    assert "growth after frame 3" in printed
    figures = json.loads(out.read_text())
    assert [s["frame"] for s in figures["samples"]] == [3, 6]
    assert figures["machine"]["cpu"] and f"on {figures['machine']['cpu']} (" in printed


@pytest.mark.parametrize("argv, message", [
    (["--model", "sam2_hiera_z"], "unknown model 'sam2_hiera_z'"),
    (["--frames", "0"], "argument --frames: expected a positive integer, got '0'"),
])
def test_bench_track_memory_bad_settings(argv, message, capsys):
    try:
        code = main(["bench", "track-memory", *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
