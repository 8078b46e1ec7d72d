"""``napari-focsam track``: seed every object on one frame and track them all -> labels TIFF and
/ or a CTC folder. The tracker is a stand-in (`BrightTracker`, which follows bright components)
and so are the automatic masks (bright components), so that ids and lineages are known; one
run goes through the real tiny models, and one scores the sample time-lapse."""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_helpers import subparsers
from scipy import ndimage

import napari_focsam.api.automatic as automatic
import napari_focsam.cli.track as track_cli
from napari_focsam.cli import build_parser, main
from napari_focsam.cli.segment import AUTO_OPTIONS
from napari_focsam.engine.automatic import AutoMaskParams
from napari_focsam.tracking import TrackOptions, read_ctc_tracks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking"))
from track_helpers import BrightTracker, Disc, components, render_discs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"
MODELS = ["--model", "sam_test_tiny", "--weights", "random", "--propagation-model",
          "sam2_test_tiny", "--propagation-weights", "random", "--device", "cpu", "--dtype",
          "fp32", "--no-cache", "--quiet"]
HW = (48, 64)
T = 12
#: A crossing right; B dividing into B1 / B2 on frame 5; C appearing on frame 6; D leaving
#: after frame 3. Truth ids 1..6 in this order.
DISCS = [Disc(10, 10, 5, vcol=1), Disc(26, 32, 6, last=4), Disc(26, 32, 4, vcol=-1, first=5),
         Disc(26, 32, 4, vcol=1, first=5), Disc(10, 50, 5, first=6), Disc(40, 10, 5, last=3)]
A, B, B1, B2, C, D = range(1, 7)


@pytest.fixture(autouse=True)
def _stand_in_tracker(monkeypatch):
    BrightTracker.instances.clear()
    monkeypatch.setattr(track_cli, "PROPAGATOR", BrightTracker)
    yield
    BrightTracker.instances.clear()


@pytest.fixture
def discs(tmp_path):
    """``(path, images, truth)`` of the disc time-lapse."""
    images, truth = render_discs(T, HW, DISCS)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, images, photometric="minisblack")
    return path, images, truth


class FakeDiscover:
    """Stand-in for `api.automatic.automatic_discover`: the bright components of a frame;
    records the settings and the frames asked."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self.params: list[AutoMaskParams] = []
        self.frames: list[int] = []

    def __call__(self, seg, params=None, *, cancel_event=None):
        self.params.append(params)

        def discover(flat: int) -> list[np.ndarray]:
            self.frames.append(flat)
            return components(self.images[flat])

        return discover


@pytest.fixture
def fake_discover(discs, monkeypatch):
    fake = FakeDiscover(discs[1])
    monkeypatch.setattr(automatic, "automatic_discover", fake)
    return fake


def _seeds(tmp_path, truth: np.ndarray, frame: int = 0, stack: bool = False) -> Path:
    path = tmp_path / "seeds.tif"
    tifffile.imwrite(path, (truth if stack else truth[frame]).astype(np.uint16))
    return path


def _rows(ctc: Path) -> list[list[int]]:
    return read_ctc_tracks(ctc).to_rows().tolist()


def _ids(plane: np.ndarray) -> list[int]:
    return sorted(int(i) for i in np.unique(plane) if i)


# ---------------------------------------------------------------------------------- options
def test_the_options_name_the_settings_and_show_their_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(TrackOptions)}
    assert set(track_cli.TRACK_OPTIONS.values()) == set(fields)
    parser = {a.dest: a for a in subparsers(build_parser())["track"]._actions}
    for option, name in track_cli.TRACK_OPTIONS.items():
        text = parser[option.lstrip("-").replace("-", "_")].help
        match = re.search(r"default ([\d.]+)\)", text)
        if match:
            assert float(match.group(1)) == fields[name], option
    # the automatic settings are segment --auto's; --min-area is the tracking one
    for option in AUTO_OPTIONS:
        assert option.lstrip("-").replace("-", "_") in parser


def test_automatic_settings_reach_the_generator_and_min_area_both(discs, tmp_path, fake_discover):
    path, _, _ = discs
    out = tmp_path / "out.tif"
    assert main(["track", str(path), "-o", str(out), "--points-per-side", "8", "--min-area", "12",
                 "--discover-every", "0", *MODELS]) == 0
    (params,) = fake_discover.params
    assert params == AutoMaskParams(points_per_side=8, min_area=12)  # SAM's defaults otherwise
    assert fake_discover.frames == [0]


# ---------------------------------------------------------------------------------- stand-ins
def test_seeded_tracks_divide_appear_and_end(discs, tmp_path, fake_discover, capsys):
    path, images, truth = discs
    out, ctc = tmp_path / "labels.tif", tmp_path / "01_RES"
    assert main(["track", str(path), "--seeds", str(_seeds(tmp_path, truth)), "-o", str(out),
                 "--ctc", str(ctc), "--discover-every", "3", "--lost-after", "2", *MODELS]) == 0
    labels = tifffile.imread(out)
    assert labels.shape == (T, *HW)
    new, (d1, d2) = 7, (8, 9)  # C found on frame 6; B's division confirmed on frame 7
    assert _rows(ctc) == [[A, 0, T - 1, 0], [B, 0, 4, 0], [D, 0, 3, 0], [new, 6, T - 1, 0],
                          [d1, 5, T - 1, B], [d2, 5, T - 1, B]]
    np.testing.assert_array_equal(labels == A, truth == A)
    np.testing.assert_array_equal(labels == D, truth == D)
    np.testing.assert_array_equal(labels == new, truth == C)
    daughters = {d1: set(), d2: set()}
    for d in daughters:
        daughters[d] = {int(t) for t in np.unique(truth[labels == d])}
    assert sorted(map(sorted, daughters.values())) == [[B1], [B2]]
    masks = sorted(p.name for p in ctc.glob("mask*.tif"))
    assert masks == [f"mask{t:03d}.tif" for t in range(T)]
    np.testing.assert_array_equal(np.stack([tifffile.imread(ctc / m) for m in masks]), labels)
    assert fake_discover.frames == [3, 6, 9]
    printed = capsys.readouterr().out
    assert f"with objects [1, 2, 6, 7, 8, 9] written to {out}" in printed
    assert printed.endswith(f"6 tracks (1 division) over frames 0-{T - 1}; CTC result written "
                            f"to {ctc}\n")


def test_automatic_seeding_without_discovery_and_no_interactive_model_with_seeds(
        discs, tmp_path, fake_discover, monkeypatch):
    path, images, truth = discs
    ctc = tmp_path / "ctc"
    assert main(["track", str(path), "--ctc", str(ctc), "--discover-every", "0", "--lost-after",
                 "2", *MODELS]) == 0
    # ids 1, 2, 3 from the largest found mask down (B, then A and D)
    assert [row[:3] for row in _rows(ctc)] == [[1, 0, 4], [2, 0, T - 1], [3, 0, 3], [4, 5, T - 1],
                                               [5, 5, T - 1]]
    assert fake_discover.frames == [0]
    import napari_focsam.api.models as models

    loaded = []
    load = models.load_model
    monkeypatch.setattr(models, "load_model", lambda name, **kw: loaded.append(name) or load(name,
                                                                                               **kw))
    assert main(["track", str(path), "--ctc", str(tmp_path / "ctc2"), "--seeds",
                 str(_seeds(tmp_path, truth)), "--discover-every", "0", *MODELS]) == 0
    assert loaded == ["sam2_test_tiny"]  # seeds and no discovery: no interactive model


def test_seeds_stack_seed_and_last_frame(discs, tmp_path, fake_discover, capsys):
    path, images, truth = discs
    out = tmp_path / "out.tif"
    assert main(["track", str(path), "--seeds", str(_seeds(tmp_path, truth, stack=True)),
                 "--seed-frame", "2", "--last-frame", "8", "--discover-every", "0",
                 "--lost-after", "2", "-o", str(out), *MODELS]) == 0
    labels = tifffile.imread(out)
    assert not labels[:2].any() and not labels[9:].any()
    np.testing.assert_array_equal(labels[2:9] == A, truth[2:9] == A)
    assert _ids(labels[2]) == [A, B, D] and _ids(labels[8]) == [A, 7, 8]
    assert capsys.readouterr().out.endswith("5 tracks (1 division) over frames 2-8\n")


def test_4d_data_tracks_one_outer_position(tmp_path, fake_discover):
    images, truth = render_discs(T, HW, DISCS)
    data = np.stack([np.zeros_like(images), images])  # (outer, t, y, x)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    seeds = tmp_path / "seeds.tif"
    tifffile.imwrite(seeds, np.stack([np.zeros_like(truth), truth]).astype(np.uint16))
    out, ctc = tmp_path / "out.tif", tmp_path / "ctc"
    assert main(["track", str(path), "--axis", "1", "--outer-axis", "0", "--outer", "1",
                 "--seeds", str(seeds), "--discover-every", "0", "--division-frames", "0",
                 "--lost-after", "2", "-o", str(out), "--ctc", str(ctc), *MODELS]) == 0
    labels = tifffile.imread(out)
    assert labels.shape == (2, T, *HW) and not labels[0].any()
    np.testing.assert_array_equal(labels[1] == A, truth == A)
    assert len(list(ctc.glob("mask*.tif"))) == T
    assert [B, 0, T - 1, 0] in _rows(ctc)  # no divisions: B keeps both parts
    assert main(["track", str(path), "--axis", "1", "--outer-axis", "0", "--outer", "2",
                 "--seeds", str(seeds), "--discover-every", "0", "-o", str(out),
                 *MODELS]) == 2


# ---------------------------------------------------------------------------------- errors
def test_an_output_is_required(discs, capsys):
    with pytest.raises(SystemExit) as info:
        main(["track", str(discs[0]), *MODELS])
    assert info.value.code == 2
    assert "give --output (labels TIFF) and / or --ctc" in capsys.readouterr().err


def test_automatic_settings_without_automatic_masks_are_a_usage_error(discs, tmp_path, capsys):
    seeds = _seeds(tmp_path, discs[2])
    with pytest.raises(SystemExit) as info:
        main(["track", str(discs[0]), "-o", str(tmp_path / "o.tif"), "--seeds", str(seeds),
              "--discover-every", "0", "--points-per-side", "8", *MODELS])
    assert info.value.code == 2
    assert "--points-per-side only applies to automatic seeding" in capsys.readouterr().err


def test_a_2d_image_is_refused(tmp_path, capsys):
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, np.zeros(HW, np.uint8))
    out = tmp_path / "out.tif"
    assert main(["track", str(image), "-o", str(out), *MODELS]) == 2
    assert capsys.readouterr().err == (f"napari-focsam: error: track needs a stack (z or t): "
                                       f"{image} is one 2D image\n")
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((*HW, 3), np.uint8))
    assert main(["track", str(rgb), "-o", str(out), *MODELS]) == 2
    assert "track needs a stack (z or t)" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("options, message", [
    (["--discover-every", "-1"], "--discover-every must be >= 0 (0: never), got -1"),
    (["--lost-after", "0"], "--lost-after must be >= 1, got 0"),
    (["--division-frames", "-2"], "--division-frames must be >= 0 (0: never), got -2"),
    (["--division-ratio", "1.5"], "--division-ratio must be in (0, 1], got 1.5"),
    (["--min-overlap", "0"], "--min-overlap must be in (0, 1], got 0.0"),
    (["--min-area", "0"], "--min-area must be >= 1, got 0"),
    (["--seed-frame", "-1"], "--seed-frame must be >= 0, got -1"),
    (["--seed-frame", "5", "--last-frame", "3"], "--last-frame 3 comes before the seed frame 5"),
    (["--last-frame", "12"], "last frame 12 does not exist: the stack has 12 frames"),
    (["--seed-frame", "12"], "frame 12 does not exist: the stack axis has 12 frames (0..11)"),
    (["--outer", "1"], "--outer picks a position along --outer-axis: it applies to 4D data only"),
    (["--pred-iou-thresh", "2"], "--pred-iou-thresh must be between 0 and 1, got 2.0"),
])
def test_bad_values_exit_2_with_one_line(discs, tmp_path, fake_discover, capsys, options, message):
    out, ctc = tmp_path / "out.tif", tmp_path / "ctc"
    assert main(["track", str(discs[0]), "-o", str(out), "--ctc", str(ctc), *options,
                 *MODELS]) == 2
    assert capsys.readouterr().err == f"napari-focsam: error: {message}\n"
    assert not out.exists() and not ctc.exists() and not BrightTracker.instances


def test_seeds_of_the_wrong_shape(discs, tmp_path, capsys):
    path, _, truth = discs
    seeds = tmp_path / "seeds.tif"
    tifffile.imwrite(seeds, truth[0, :40].astype(np.uint16))
    out = tmp_path / "out.tif"
    assert main(["track", str(path), "--seeds", str(seeds), "--discover-every", "0", "-o",
                 str(out), *MODELS]) == 2
    assert capsys.readouterr().err == (
        f"napari-focsam: error: --seeds {seeds} has shape (40, 64): give the seed frame's labels "
        f"(48, 64) or labels shaped like the input (12, 48, 64)\n")
    assert not out.exists()
    assert main(["track", str(path), "--seeds", str(tmp_path / "none.tif"), "-o", str(out),
                 *MODELS]) == 2
    assert "none.tif does not exist" in capsys.readouterr().err


def test_an_existing_ctc_result_needs_overwrite_and_other_files_are_kept(discs, tmp_path,
                                                                         fake_discover, capsys):
    path, _, truth = discs
    ctc = tmp_path / "ctc"
    ctc.mkdir()
    (ctc / "mask000.tif").write_bytes(b"old")
    (ctc / "res_track.txt").write_text("1 0 0 0\n")
    seeds = ["--seeds", str(_seeds(tmp_path, truth)), "--discover-every", "0"]
    assert main(["track", str(path), "--ctc", str(ctc), *seeds, *MODELS]) == 2
    assert capsys.readouterr().err == (f"napari-focsam: error: --ctc {ctc} holds a CTC RES result; "
                                       "give --overwrite to replace it, or another folder\n")
    assert (ctc / "mask000.tif").read_bytes() == b"old" and not BrightTracker.instances
    assert main(["track", str(path), "--ctc", str(ctc), "--overwrite", *seeds, *MODELS]) == 0
    assert len(list(ctc.glob("mask*.tif"))) == T and _rows(ctc)[0] == [A, 0, T - 1, 0]
    # other files: refused even with --overwrite (export_ctc never deletes them)
    (ctc / "notes.txt").write_text("mine")
    BrightTracker.instances.clear()
    assert main(["track", str(path), "--ctc", str(ctc), "--overwrite", *seeds, *MODELS]) == 2
    assert capsys.readouterr().err == (f"napari-focsam: error: --ctc {ctc} holds files other than "
                                       "a CTC RES result (e.g. notes.txt): choose an empty or new "
                                       "folder\n")
    assert (ctc / "notes.txt").exists() and not BrightTracker.instances
    # the labels must not go into the CTC folder, nor may --overwrite delete an input
    (ctc / "notes.txt").unlink()
    assert main(["track", str(path), "--ctc", str(ctc), "--overwrite", "-o", str(ctc / "l.tif"),
                 *seeds, *MODELS]) == 2
    assert "is inside --ctc" in capsys.readouterr().err
    inner = ctc / "mask999.tif"
    inner.write_bytes(path.read_bytes())
    assert main(["track", str(inner), "--ctc", str(ctc), "--overwrite", *seeds, *MODELS]) == 2
    assert "--overwrite would delete it" in capsys.readouterr().err and inner.exists()


def test_ctrl_c_writes_nothing(discs, tmp_path, monkeypatch, capsys):
    path, _, truth = discs

    class Interrupting(BrightTracker):
        def propagate(self, *args, **kwargs):
            for result in super().propagate(*args, **kwargs):
                if result.frame == 4:
                    raise KeyboardInterrupt
                yield result

    monkeypatch.setattr(track_cli, "PROPAGATOR", Interrupting)
    out, ctc = tmp_path / "out.tif", tmp_path / "ctc"
    assert main(["track", str(path), "--seeds", str(_seeds(tmp_path, truth)), "--discover-every",
                 "0", "-o", str(out), "--ctc", str(ctc), *MODELS]) == 130
    assert capsys.readouterr().err == ("napari-focsam: interrupted; no output written (cached "
                                       "embeddings are kept)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seeds.tif", "stack.tif"]


# ---------------------------------------------------------------------------------- real models
def test_real_tiny_models_end_to_end(tmp_path, monkeypatch, capsys):
    """Random-weight SAM 2 test-tiny for the automatic masks and the tracking: the real path
    runs and writes both outputs (the figures mean nothing)."""
    monkeypatch.setattr(track_cli, "PROPAGATOR", None)
    images, _ = render_discs(4, HW, DISCS)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, images, photometric="minisblack")
    out, ctc = tmp_path / "out.tif", tmp_path / "ctc"
    models = ["--model", "sam2_test_tiny", "--weights", "random", "--propagation-model",
              "sam2_test_tiny", "--device", "cpu", "--dtype", "fp32", "--no-cache", "--quiet"]
    assert main(["track", str(path), "-o", str(out), "--ctc", str(ctc), "--points-per-side", "4",
                 "--pred-iou-thresh", "0", "--stability-thresh", "0", "--discover-every", "2",
                 *models]) == 0
    labels = tifffile.imread(out)
    assert labels.shape == (4, *HW) and labels[0].any()
    assert len(list(ctc.glob("mask*.tif"))) == 4 and (ctc / "res_track.txt").is_file()
    assert "over frames 0-3; CTC result written to" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- the sample
#: The stand-in's foreground on the sample: smoothed intensity above this (cells are ~480 and
#: up, the background ~130 with noise up to ~600 before smoothing). DET and TRA are 1.0 and the
#: lineage exact from 350 to 500; SEG (the stand-in's thresholded masks against the drawn
#: cells) goes from 0.82 to 0.92.
SAMPLE_THRESHOLD = 450


def test_the_sample_time_lapse_scores_high(tmp_path, monkeypatch, capsys):
    """Seeded with the sample's first-frame labels, the stand-in tracker (bright components of
    the smoothed image) and the command follow the sample's two divisions: the CTC result
    has the ground-truth lineage."""
    from napari_focsam.evaluation.ctc_scores import read_ctc_folder, score_tracks

    image = tifffile.imread(SAMPLE / "cell_timelapse.tif").astype(np.float32)

    def foreground(t: int) -> np.ndarray:
        return ndimage.gaussian_filter(image[t], 1.0) > SAMPLE_THRESHOLD

    def discover(seg, params=None, *, cancel_event=None):
        return lambda flat: [m for m in components(foreground(flat) * 255)]

    monkeypatch.setattr(track_cli, "PROPAGATOR",
                        functools.partial(BrightTracker, foreground=foreground))
    monkeypatch.setattr(automatic, "automatic_discover", discover)
    ctc = tmp_path / "01_RES"
    assert main(["track", str(SAMPLE / "cell_timelapse.tif"), "--seeds",
                 str(SAMPLE / "cell_timelapse_labels.tif"), "--ctc", str(ctc), *MODELS]) == 0
    gt_table = read_ctc_tracks(SAMPLE / "cell_timelapse_lineage.txt")
    assert read_ctc_tracks(ctc).to_rows().tolist() == gt_table.to_rows().tolist()
    pred, table = read_ctc_folder(ctc)
    scores = score_tracks(pred, tifffile.imread(SAMPLE / "cell_timelapse_labels.tif"), table,
                          gt_table)
    assert scores.det >= 0.99 and scores.tra >= 0.99 and scores.seg >= 0.85, scores
    assert "10 tracks (2 divisions) over frames 0-23" in capsys.readouterr().out
