"""``napari-focsam segment --auto``: every object of every frame (or of ``--frames``) into the
labels TIFF, prompts first then the background, the settings' options and their errors,
progress and Ctrl-C; stand-ins for the masks and one real run on a tiny model."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import tifffile

import napari_focsam.api.automatic as automatic
import napari_focsam.cli.segment as segment_cli
from napari_focsam.api.segmenter import Segmenter
from napari_focsam.cli import build_parser, main
from napari_focsam.cli.segment import AUTO_MODES, AUTO_OPTIONS, frame_list
from napari_focsam.engine.automatic import AutoMask, AutoMaskParams

MODEL = ["--weights", "random", "--device", "cpu", "--dtype", "fp32", "--no-cache", "--quiet"]
HW = (32, 48)
#: Centres of the stand-in's discs (frame `f` moves them by `f` columns).
CENTRES = ((8, 10), (20, 30), (10, 38))


def _disc(center, radius: int = 4) -> np.ndarray:
    rr, cc = np.mgrid[:HW[0], :HW[1]]
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= radius ** 2


def _auto_mask(mask: np.ndarray) -> AutoMask:
    rows, cols = np.nonzero(mask)
    r0, c0, r1, c1 = int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1
    return AutoMask(mask[r0:r1, c0:c1].copy(), (r0, c0, r1, c1), int(mask.sum()), 0.9, 0.97,
                    ((r0 + r1) / 2, (c0 + c1) / 2), (0, 0, *HW), HW)


class FakeFind:
    """Stand-in for `api.automatic.find_masks`: two batches, then three discs per frame;
    records the frames and settings; `interrupt_on` raises Ctrl-C on that frame."""

    def __init__(self, interrupt_on: int | None = None) -> None:
        self.frames: list[int] = []
        self.params: list[AutoMaskParams] = []
        self.interrupt_on = interrupt_on

    def __call__(self, seg, flat, generator, crops=None, *, predictor=None):
        self.frames.append(flat)
        self.params.append(generator.params)
        if flat == self.interrupt_on:
            raise KeyboardInterrupt
        yield 1, 2
        yield 2, 2
        return [_auto_mask(_disc((r, c + flat))) for r, c in CENTRES]


@pytest.fixture
def fake_find(monkeypatch):
    fake = FakeFind()
    monkeypatch.setattr(automatic, "find_masks", fake)
    return fake


@pytest.fixture
def stack(tmp_path):
    path = tmp_path / "stack.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 40, (3, *HW)).astype(np.uint8), photometric="minisblack")
    return path


def _ids(plane: np.ndarray) -> list[int]:
    return sorted(int(i) for i in np.unique(plane) if i)


# ---------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text, frames", [("0", [0]), ("0,3,5-9", [0, 3, 5, 6, 7, 8, 9]),
                                          ("4-4, 2,2", [2, 4]), ("1 - 3", [1, 2, 3])])
def test_frame_lists_and_ranges(text, frames):
    assert frame_list(text) == frames


@pytest.mark.parametrize("text, message", [
    ("", "an empty item"), ("1,,2", "an empty item"), ("a", "'a' in 'a'"), ("-1", "'-1'"),
    ("1.5", "'1.5'"), ("3-x", "'3-x'"), ("5-2", "the range '5-2' runs backwards: write 2-5")])
def test_bad_frame_lists_are_argparse_errors(text, message, capsys):
    with pytest.raises(argparse.ArgumentTypeError, match="."):
        frame_list(text)
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["segment", "x.tif", "--auto", "-o", "o.tif", "--frames", text])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --frames:" in err and message in err


def test_the_options_name_the_settings_and_the_modes():
    names = {f.name for f in dataclasses.fields(AutoMaskParams)}
    assert set(AUTO_OPTIONS.values()) <= names
    assert AUTO_MODES == automatic.EVERYTHING_MODES
    args = build_parser().parse_args(["segment", "x.tif", "--auto", "-o", "o.tif",
                                      "--points-per-side", "16", "--stability-thresh", "0.9",
                                      "--crop-layers", "1", "--max-area", "500"])
    assert segment_cli.auto_overrides(args) == {"points_per_side": 16,
                                                "stability_score_thresh": 0.9,
                                                "crop_n_layers": 1, "max_area": 500}


def test_prompts_are_required_without_auto_and_the_auto_options_need_it(stack, tmp_path, capsys):
    out = tmp_path / "out.tif"
    with pytest.raises(SystemExit) as info:
        main(["segment", str(stack), "-o", str(out), "--model", "sam_test_tiny", *MODEL])
    assert info.value.code == 2
    assert "the following arguments are required: --prompts (or --auto" in capsys.readouterr().err
    prompts = tmp_path / "p.csv"
    prompts.write_text("object_id,kind,frame,row,col,label\n1,point,0,8,10,1\n")
    with pytest.raises(SystemExit) as info:
        main(["segment", str(stack), "-o", str(out), "--prompts", str(prompts), "--min-area",
              "5", "--frames", "1", *MODEL])
    assert info.value.code == 2
    assert "--min-area, --frames only apply with --auto" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------- stand-ins
def test_every_frame_gets_new_objects_with_distinct_ids(stack, tmp_path, fake_find, monkeypatch,
                                                        capsys):
    steps = []
    show = segment_cli.show_progress

    def recording(progress, **kwargs):
        steps.append(kwargs["unit"])
        return show(progress, **kwargs)

    monkeypatch.setattr(segment_cli, "show_progress", recording)
    out = tmp_path / "out.tif"
    assert main(["segment", str(stack), "--auto", "-o", str(out), "--model", "sam_test_tiny",
                 *MODEL]) == 0
    assert fake_find.frames == [0, 1, 2] and steps == ["batch"]
    assert fake_find.params[0] == AutoMaskParams()  # segment-anything's defaults
    labels = tifffile.imread(out)
    assert labels.shape == (3, *HW)
    assert [_ids(labels[t]) for t in range(3)] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    for t in range(3):
        for k, (r, c) in enumerate(CENTRES):
            assert (labels[t][_disc((r, c + t))] == 3 * t + k + 1).all()
    assert "with objects [1, 2, 3, 4, 5, 6, 7, 8, 9] written" in capsys.readouterr().out


def test_frames_and_settings_reach_the_generator(stack, tmp_path, fake_find):
    out = tmp_path / "out.tif"
    assert main(["segment", str(stack), "--auto", "--frames", "0,2", "-o", str(out), "--model",
                 "sam2_test_tiny", "--points-per-side", "4", "--min-area", "10", *MODEL]) == 0
    assert fake_find.frames == [0, 2]
    assert fake_find.params[0] == AutoMaskParams.sam2(points_per_side=4, min_area=10)
    labels = tifffile.imread(out)
    assert _ids(labels[0]) == [1, 2, 3] and _ids(labels[1]) == [] and _ids(labels[2]) == [4, 5, 6]


def test_prompted_objects_first_then_the_background(stack, tmp_path, fake_find, monkeypatch):
    def draw(self, prompt, flat, *, keep=True, cancel_event=None):  # a disc at the first click
        return _disc(prompt.points_rc[0], radius=6)

    monkeypatch.setattr(Segmenter, "_mask_from_interactive", draw)
    prompts = tmp_path / "p.csv"
    prompts.write_text("object_id,kind,frame,row,col,label\n12,point,1,20,31,1\n")
    out = tmp_path / "out.tif"
    assert main(["segment", str(stack), "--prompts", str(prompts), "--auto", "-o", str(out),
                 "--model", "sam_test_tiny", *MODEL]) == 0
    labels = tifffile.imread(out)
    prompted = _disc((20, 31), radius=6)
    assert (labels[1][prompted] == 12).all() and not (labels[[0, 2]] == 12).any()
    assert _ids(labels[0]) == [13, 14, 15]  # above the prompted ids
    # the prompted disc covers the second automatic one: dropped, its id not spent
    assert _ids(labels[1]) == [12, 16, 17] and _ids(labels[2]) == [18, 19, 20]
    assert (labels[1][_disc((8, 11))] == 16).all() and (labels[1][_disc((10, 39))] == 17).all()


def test_prompts_with_replace_are_refused(stack, tmp_path, fake_find, capsys):
    prompts = tmp_path / "p.csv"
    prompts.write_text("object_id,kind,frame,row,col,label\n1,point,0,8,10,1\n")
    out = tmp_path / "out.tif"
    assert main(["segment", str(stack), "--prompts", str(prompts), "--auto", "--mode", "replace",
                 "-o", str(out), "--model", "sam_test_tiny", *MODEL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-focsam: error: --mode replace would clear the objects of "
                          "--prompts") and err.count("\n") == 1
    assert fake_find.frames == [] and not out.exists()


@pytest.mark.parametrize("options, message", [
    (["--min-area", "30", "--max-area", "3"], "--max-area (3) is below --min-area (30)"),
    (["--points-per-side", "0"], "--points-per-side must be a whole number >= 1, got 0"),
    (["--pred-iou-thresh", "1.5"], "--pred-iou-thresh must be between 0 and 1, got 1.5"),
    (["--stability-thresh", "-0.1"], "--stability-thresh must be between 0 and 1, got -0.1"),
    (["--max-area", "0"], "--max-area must be None or >= 1 pixel, got 0"),
    (["--crop-layers", "-1"], "--crop-layers must be a whole number >= 0, got -1"),
    (["--frames", "0,7"], "frame 7 does not exist: the stack axis has 3 frames (0..2)"),
])
def test_bad_settings_exit_2_with_one_line(stack, tmp_path, fake_find, capsys, options, message):
    out = tmp_path / "out.tif"
    assert main(["segment", str(stack), "--auto", "-o", str(out), "--model", "sam_test_tiny",
                 *options, *MODEL]) == 2
    err = capsys.readouterr().err
    assert err == f"napari-focsam: error: {message}\n"
    assert fake_find.frames == [] and not out.exists()


def test_a_2d_image_has_only_frame_0(tmp_path, fake_find, capsys):
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, np.zeros(HW, np.uint8))
    out = tmp_path / "out.tif"
    assert main(["segment", str(image), "--auto", "--frames", "1", "-o", str(out), "--model",
                 "sam_test_tiny", *MODEL]) == 2
    assert "the data is one 2D image: there is no frame 1" in capsys.readouterr().err
    assert main(["segment", str(image), "--auto", "--frames", "0", "-o", str(out), "--model",
                 "sam_test_tiny", *MODEL]) == 0
    assert _ids(tifffile.imread(out)) == [1, 2, 3]


def test_ctrl_c_writes_nothing(stack, tmp_path, monkeypatch, capsys):
    fake = FakeFind(interrupt_on=1)
    monkeypatch.setattr(automatic, "find_masks", fake)
    out = tmp_path / "out.tif"
    assert main(["segment", str(stack), "--auto", "-o", str(out), "--model", "sam_test_tiny",
                 *MODEL]) == 130
    assert fake.frames == [0, 1] and not out.exists()
    assert capsys.readouterr().err == ("napari-focsam: interrupted; no output written (cached "
                                       "embeddings are kept)\n")


# ---------------------------------------------------------------------------------- real model
def test_real_tiny_model_end_to_end(tmp_path, capsys):
    """SAM 2 test-tiny, random weights, no thresholds: the real generator finds masks; each
    frame's objects take ids after the previous frame's."""
    path = tmp_path / "stack.tif"
    data = np.random.default_rng(0).integers(0, 255, (2, *HW)).astype(np.uint8)
    tifffile.imwrite(path, data, photometric="minisblack")
    out = tmp_path / "out.tif"
    assert main(["segment", str(path), "--auto", "-o", str(out), "--model", "sam2_test_tiny",
                 "--points-per-side", "8", "--pred-iou-thresh", "0", "--stability-thresh", "0",
                 *MODEL]) == 0
    labels = tifffile.imread(out)
    first, second = _ids(labels[0]), _ids(labels[1])
    assert first and second, (first, second)
    assert first == list(range(1, len(first) + 1))
    assert second == list(range(len(first) + 1, len(first) + len(second) + 1))
    assert f"with objects {first + second} written" in capsys.readouterr().out
