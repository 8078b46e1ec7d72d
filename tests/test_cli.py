"""The napari-focsam command line."""

from __future__ import annotations

import json
import subprocess
import sys

from napari_focsam import __version__
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
    assert "unknown SAM config 'sam_vit_z'" in err and "sam_vit_b" in err


def test_unknown_dtype_is_a_clear_error(capsys):
    code = main(["bench", "sam", "--model", "sam_test_tiny", "--dtypes", "fp8", "--repeats", "1"])
    assert code == 2
    assert "fp8" in capsys.readouterr().err


def test_module_entry_point_reports_version():
    done = subprocess.run([sys.executable, "-m", "napari_focsam", "--version"],
                          capture_output=True, text=True, check=True)
    assert __version__ in done.stdout
