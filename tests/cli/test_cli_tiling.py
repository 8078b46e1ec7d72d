"""The tiling options of ``embed`` / ``segment`` / ``propagate`` and ``bench tiling``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_focsam.cli import build_parser, main
from napari_focsam.cli.segmenter import tiling_of
from napari_focsam.engine.tiling import Tiling

MODEL = ["--model", "sam_test_tiny", "--weights", "random", "--device", "cpu", "--dtype", "fp32",
         "--no-cache", "--quiet"]


@pytest.mark.parametrize("command", [["embed", "x.tif"],
                                     ["segment", "x.tif", "--prompts", "p.csv", "-o", "o.tif"],
                                     ["propagate", "x.tif", "--prompts", "p.csv", "-o", "o.tif"]])
def test_the_tiling_options_of_every_command(command):
    parser = build_parser()
    args = parser.parse_args(command)
    assert (args.tiling, args.tile_size, args.tile_halo) == ("auto", None, None)
    assert tiling_of(args) == Tiling()
    args = parser.parse_args([*command, "--tiling", "ON", "--tile-size", "512", "--tile-halo", "32"])
    assert tiling_of(args) == Tiling("on", tile=512, halo=32)
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--tiling", "sometimes"])


@pytest.fixture
def large_image(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (1100, 1200)).astype(np.uint8)
    path = tmp_path / "large.tif"
    tifffile.imwrite(path, image)
    return path


def test_embed_reports_the_tiles_and_off_turns_them_off(large_image, capsys):
    assert main(["embed", str(large_image), *MODEL]) == 0
    out = capsys.readouterr().out
    assert "1 frames and 4 tiles (4 per frame, 1024 x 1024 px, halo 128 px) cached" in out
    assert "5 encoded now, 0 taken from the cache" in out
    assert main(["embed", str(large_image), *MODEL, "--tiling", "off"]) == 0
    out = capsys.readouterr().out
    assert "tiles" not in out and "1 encoded now" in out


def test_unusable_tiling_sizes_are_user_errors(large_image, capsys):
    assert main(["embed", str(large_image), *MODEL, "--tile-halo", "600"]) == 2
    assert "halo" in capsys.readouterr().err


def test_segment_draws_on_a_tile(large_image, tmp_path, capsys):
    prompts = tmp_path / "p.csv"
    prompts.write_text("object_id,kind,row,col,label\n3,point,520,610,1\n")
    out = tmp_path / "labels.tif"
    assert main(["segment", str(large_image), *MODEL, "--prompts", str(prompts), "-o",
                 str(out), "--tile-halo", "64"]) == 0
    labels = tifffile.imread(out)
    assert labels.shape == (1100, 1200) and set(np.unique(labels)) <= {0, 3}


def test_bench_tiling_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "tiling.json"
    assert main(["bench", "tiling", "--size", "1536", "--nuclei", "12", "--in-process",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "mean IoU" in out and "found (IoU >= 0.5)" in out and "peak RSS" in out
    result = json.loads(path.read_text())
    assert set(result["runs"]) == {"tiled", "resized"}
    assert result["runs"]["tiled"]["tiles_per_frame"] == 4
    assert result["machine"]["cpu"]
