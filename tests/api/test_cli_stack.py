"""``napari-focsam embed | segment | propagate`` run in-process on tiny checkpoints."""

from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from api_helpers import make_stack, save_tiny_checkpoints, write_csv

from napari_focsam.api.segmenter import Progress, Segmenter
from napari_focsam.cli import main

HW = (24, 32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny checkpoints, a 2-frame stack TIFF, a 2D PNG and prompts files, shared by the module
    (with one embedding cache)."""
    import skimage.io

    root = tmp_path_factory.mktemp("cli")
    ck = save_tiny_checkpoints(root / "ckpt")
    stack, _ = make_stack(2, hw=HW)  # 2 frames: SAM 2 tracking costs seconds per frame
    tifffile.imwrite(root / "stack.tif", stack)
    skimage.io.imsave(root / "image.png", stack[1], check_contrast=False)
    write_csv(root / "prompts.csv", ["4,1,point,8,23,1,,,,", "6,1,box,,,,20,2,24,32"])
    write_csv(root / "prompts2d.csv", ["5,point,8,23,1"], header="object_id,kind,row,col,label")
    return {"root": root, "cache": root / "cache", **ck}


@pytest.fixture(autouse=True)
def _env(files, monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_FOCSAM_CACHE_DIR", str(files["cache"]))
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path / "weights"))


def models(files, propagation: bool = True) -> list[str]:
    args = ["--model", "sam_test_tiny", "--weights", str(files["sam"]), "--device", "cpu",
            "--dtype", "fp32", "--quiet"]
    if propagation:
        args += ["--propagation-model", "sam2_test_tiny", "--propagation-weights", str(files["sam2"])]
    return args


def listed_ids(out: str) -> list[int]:
    """The ids of the ``labels ... with objects [...] written to`` line."""
    m = re.search(r"with objects \[([\d, ]*)\] written to", out)
    assert m, out
    return [int(i) for i in m.group(1).split(",") if i.strip()]


def present(labels: np.ndarray) -> list[int]:
    return [int(i) for i in np.unique(labels) if i]


def encoded(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) encoded now, (\d+) taken from the cache", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def test_embed_twice_then_segment_and_propagate(files, tmp_path, capsys):
    stack = str(files["root"] / "stack.tif")
    assert main(["embed", stack, *models(files)]) == 0
    assert encoded(capsys.readouterr().out) == (4, 0)  # 2 frames x 2 models
    assert main(["embed", stack, *models(files)]) == 0
    assert encoded(capsys.readouterr().out) == (0, 4)
    assert main(["embed", stack, *models(files), "--only", "interactive"]) == 0
    assert encoded(capsys.readouterr().out) == (0, 2)

    seg_out = tmp_path / "seg.tif"
    assert main(["segment", stack, *models(files, propagation=False),
                 "--prompts", str(files["root"] / "prompts.csv"), "-o", str(seg_out)]) == 0
    labels = tifffile.imread(seg_out)
    # the summary names the ids in the file (random weights may draw an object empty)
    assert listed_ids(capsys.readouterr().out) == present(labels)
    assert labels.shape == (2, *HW) and labels.dtype == np.uint16
    assert set(np.unique(labels)) <= {0, 4, 6}
    assert not labels[0].any()  # no prompt on frame 0

    prop_out = tmp_path / "prop.tif"
    assert main(["propagate", stack, *models(files), "--prompts", str(files["root"] / "prompts.csv"),
                 "-o", str(prop_out), "--direction", "backward"]) == 0
    labels = tifffile.imread(prop_out)
    assert listed_ids(capsys.readouterr().out) == present(labels)
    assert labels.shape == (2, *HW) and labels.dtype == np.uint16
    assert set(np.unique(labels)) <= {0, 4, 6}


def test_segment_2d_png(files, tmp_path, capsys):
    out = tmp_path / "labels.tif"
    code = main(["segment", str(files["root"] / "image.png"), *models(files, propagation=False),
                 "--axis", "none", "--prompts", str(files["root"] / "prompts2d.csv"), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    labels = tifffile.imread(out)
    assert labels.shape == HW and labels.dtype == np.uint16
    assert set(np.unique(labels)) <= {0, 5}


def test_rgb_png_is_one_image_by_default(files, tmp_path, capsys):
    import skimage.io

    gray = tifffile.imread(files["root"] / "stack.tif")[1]
    rgb = tmp_path / "rgb.png"
    skimage.io.imsave(rgb, np.stack([gray, gray // 2, gray], axis=-1), check_contrast=False)
    out = tmp_path / "labels.tif"
    code = main(["segment", str(rgb), *models(files, propagation=False),
                 "--prompts", str(files["root"] / "prompts2d.csv"), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert tifffile.imread(out).shape == HW


def test_propagate_on_2d_is_an_input_error(files, tmp_path, capsys):
    out = tmp_path / "labels.tif"
    code = main(["propagate", str(files["root"] / "image.png"), *models(files), "--axis", "none",
                 "--prompts", str(files["root"] / "prompts2d.csv"), "-o", str(out)])
    assert code == 2
    assert "propagate needs a stack" in capsys.readouterr().err
    assert not out.exists()


def _bad_cases(files, tmp_path):
    root = files["root"]
    stack = str(root / "stack.tif")
    good = str(root / "prompts.csv")
    no_cols = write_csv(tmp_path / "nocols.csv", ["1,0,1,2"], header="object_id,frame,row,col")
    outside = write_csv(tmp_path / "outside.csv", ["1,0,point,24,3,1"],
                        header="object_id,frame,kind,row,col,label")
    far = write_csv(tmp_path / "far.csv", ["1,2,point,3,3,1"], header="object_id,frame,kind,row,col,label")
    m = models(files)
    m1 = models(files, propagation=False)
    return {
        "missing input": (["segment", str(root / "nope.tif"), *m1], good, 2, "does not exist"),
        "missing columns": (["segment", stack, *m1], str(no_cols), 2, "missing column"),
        "outside": (["propagate", stack, *m], str(outside), 2, "outside the 24 x 32 image"),
        "frame out of range": (["propagate", stack, *m], str(far), 2, "frame 2 does not exist"),
        "unknown model": (["segment", stack, "--model", "sam_vit_q", "--quiet"], good, 2,
                          "Did you mean 'sam_vit_"),
        "offline": (["segment", stack, "--model", "sam_vit_b", "--offline", "--device", "cpu",
                     "--quiet"], good, 5, "offline"),
        "wrong family": (["segment", stack, "--model", "sam_test_tiny", "--weights",
                          str(files["sam2"]), "--device", "cpu", "--quiet"], good, 2,
                         "expected a SAM 1"),
    }


CASES = ["missing input", "missing columns", "outside", "frame out of range", "unknown model",
         "offline", "wrong family"]


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing-output"])
@pytest.mark.parametrize("case", CASES)
def test_failures_exit_codes_and_no_output(files, tmp_path, capsys, case, existing):
    argv, prompts, code, message = _bad_cases(files, tmp_path)[case]
    out = tmp_path / "out" / "labels.tif"
    if existing:
        out.parent.mkdir()
        out.write_bytes(b"older output")
    assert main([*argv, "--prompts", prompts, "-o", str(out)]) == code
    err = capsys.readouterr().err
    assert "napari-focsam: error:" in err and message in err, err
    if existing:
        assert out.read_bytes() == b"older output"
        assert [p.name for p in out.parent.iterdir()] == ["labels.tif"]
    else:
        assert not out.parent.exists() or not any(out.parent.iterdir())


def test_keyboard_interrupt_during_propagate(files, tmp_path, capsys, monkeypatch):
    def interrupted(self, prompts, direction="both", *, cancel_event=None, report_objects=False):
        yield Progress("propagate", 1, len(self.source), 0)
        raise KeyboardInterrupt

    monkeypatch.setattr(Segmenter, "propagate", interrupted)
    out = tmp_path / "labels.tif"
    code = main(["propagate", str(files["root"] / "stack.tif"), *models(files),
                 "--prompts", str(files["root"] / "prompts.csv"), "-o", str(out)])
    assert code == 130
    assert "interrupted; no output written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- hardening (issue 13)
def _segment(files, image, out, *extra, prompts=None):
    return main(["segment", str(image), *models(files, propagation=False), "--prompts",
                 str(prompts or files["root"] / "prompts.csv"), "-o", str(out), *extra])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("napari-focsam: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _no_models(monkeypatch):
    """Fail the test if a model is loaded (the error must come first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("napari_focsam.api.models.load_model", refuse)


@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink", "prompts"])
def test_an_output_that_is_an_input_is_refused(files, tmp_path, capsys, monkeypatch, how):
    image = tmp_path / "v.tif"
    image.write_bytes((files["root"] / "stack.tif").read_bytes())
    prompts = tmp_path / "prompts.csv"
    prompts.write_bytes((files["root"] / "prompts.csv").read_bytes())
    before = image.read_bytes(), prompts.read_bytes()
    monkeypatch.chdir(tmp_path)
    out = {"same": image, "relative": "./v.tif", "prompts": prompts}.get(how)
    if how == "symlink":
        (tmp_path / "link.tif").symlink_to(image)
        out = tmp_path / "link.tif"
    elif how == "hardlink":
        os.link(image, tmp_path / "hard.tif")
        out = tmp_path / "hard.tif"
    _no_models(monkeypatch)
    assert _segment(files, "v.tif", out, prompts=prompts) == 2
    line = _one_error_line(capsys)
    assert ("is the input" in line) if how != "prompts" else ("written as TIFF" in line)
    assert (image.read_bytes(), prompts.read_bytes()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize("case, message", [
    ("folder", "is a folder"),
    ("long-name", "the file name is too long"),
    ("under-a-file", "is a file, not a folder"),
    ("png", "labels are written as TIFF"),
])
def test_outputs_that_cannot_be_written_are_refused_first(files, tmp_path, capsys, monkeypatch,
                                                           case, message):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "out.tif").mkdir()
    out = {"folder": tmp_path / "out.tif", "long-name": tmp_path / ("a" * 300 + ".tif"),
           "under-a-file": tmp_path / "afile" / "labels.tif", "png": tmp_path / "x.png"}[case]
    _no_models(monkeypatch)
    assert _segment(files, files["root"] / "stack.tif", out) == 2
    assert message in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "out.tif"]
    assert not any((tmp_path / "out.tif").iterdir())


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="POSIX permissions (root writes anywhere)")
def test_a_read_only_output_folder_is_refused_first(files, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    _no_models(monkeypatch)
    try:
        assert _segment(files, files["root"] / "stack.tif", folder / "l.tif") == 2
    finally:
        folder.chmod(0o755)
    assert "no permission to write" in _one_error_line(capsys)


@pytest.mark.parametrize("code, where, message", [
    (errno.ENOSPC, "replace", "no space left on the device"),
    (errno.EROFS, "open", "read-only file system"),
    (errno.EEXIST, "mkdir", "a file is in the way"),
])
def test_write_failures_after_the_work_are_one_line(files, tmp_path, capsys, monkeypatch, code,
                                                    where, message):
    real = getattr(os, where)
    out = tmp_path / "sub" / "labels.tif"

    def failing(*args, **kwargs):
        if args and not Path(args[0]).name.startswith(f".{out.name}."):
            return real(*args, **kwargs)  # not the output (the embedding cache...)
        raise OSError(code, os.strerror(code))

    if where == "mkdir":  # a file appears where the output's folder goes, after the checks
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self == out.parent:
                failing()
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    else:
        monkeypatch.setattr(os, where, failing)
    assert _segment(files, files["root"] / "stack.tif", out) == 2
    assert message in _one_error_line(capsys)
    monkeypatch.undo()
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_a_damaged_input_tiff_is_bad_input(files, tmp_path, capsys):
    stack = tifffile.imread(files["root"] / "stack.tif")
    tifffile.imwrite(tmp_path / "z.tif", stack, compression="zlib", photometric="minisblack")
    data = bytearray((tmp_path / "z.tif").read_bytes())
    for i in range(300, len(data) - 300, 5):
        data[i] ^= 0xFF  # pixel data: zlib.error when a frame is decoded
    (tmp_path / "z.tif").write_bytes(bytes(data))
    assert _segment(files, tmp_path / "z.tif", tmp_path / "out.tif") == 2
    assert "cannot read" in _one_error_line(capsys)
    assert not (tmp_path / "out.tif").exists()


def test_a_multi_series_tiff_is_refused_with_its_series(files, tmp_path, capsys):
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, tifffile.imread(files["root"] / "stack.tif"), photometric="minisblack")
    tifffile.imwrite(path, np.zeros((5, 6), np.uint8), photometric="minisblack", append=True)
    assert main(["embed", str(path), *models(files)]) == 2
    line = _one_error_line(capsys)
    assert "holds 2 image series" in line and "series=1" in line


@pytest.mark.parametrize("layout, expected", [
    ("imagej-tzyx", "give --axis 1 --outer-axis 0"),
    ("imagej-tzcyx", "give --axis 1 --outer-axis 0 --channel-axis 2"),
    ("npy-4d", "e.g. --axis 1 --outer-axis 0 for (t, z, y, x) data"),
    ("npy-5d", "e.g. --axis 1 --outer-axis 0 --channel-axis 2 for (t, z, c, y, x) data"),
])
def test_4d_and_5d_data_errors_name_the_flags(files, tmp_path, capsys, monkeypatch, layout,
                                              expected):
    shape = {"imagej-tzyx": (2, 3, 24, 32), "imagej-tzcyx": (2, 3, 2, 24, 32),
             "npy-4d": (2, 3, 24, 32), "npy-5d": (2, 3, 2, 24, 32)}[layout]
    data = np.zeros(shape, np.uint8)
    if layout.startswith("imagej"):
        path = tmp_path / "in.tif"
        tifffile.imwrite(path, data, imagej=True,
                         metadata={"axes": "TZYX" if len(shape) == 4 else "TZCYX"})
    else:
        path = tmp_path / "in.npy"
        np.save(path, data)
    _no_models(monkeypatch)
    assert main(["embed", str(path), *models(files)]) == 2
    line = _one_error_line(capsys)
    assert f"has {len(shape)} dimensions" in line and "--axis" in line and "--outer-axis" in line
    assert "--channel-axis" in line and expected in line


def test_prompts_nested_too_deeply_are_bad_input(files, tmp_path, capsys, monkeypatch):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    _no_models(monkeypatch)
    assert _segment(files, files["root"] / "stack.tif", tmp_path / "o.tif", prompts=deep) == 2
    assert "nested too deeply" in _one_error_line(capsys)


def test_object_ids_beyond_int64_are_refused_before_any_model_work(files, tmp_path, capsys,
                                                                   monkeypatch):
    big = write_csv(tmp_path / "big.csv", ["1e30,1,point,8,23,1,,,,"])
    _no_models(monkeypatch)
    assert _segment(files, files["root"] / "stack.tif", tmp_path / "o.tif", prompts=big) == 2
    assert "object_id must be at most" in _one_error_line(capsys)


def test_object_ids_beyond_int32_are_propagated_and_written(files, tmp_path, capsys,
                                                            monkeypatch, caplog):
    from api_helpers import install_fakes

    install_fakes(monkeypatch)
    big = write_csv(tmp_path / "big.csv", ["2147483648,1,point,8,23,1,,,,"])
    out = tmp_path / "labels.tif"
    with caplog.at_level(logging.WARNING):
        assert main(["propagate", str(files["root"] / "stack.tif"), *models(files), "--prompts",
                     str(big), "-o", str(out)]) == 0
    assert "with objects [2147483648] written" in capsys.readouterr().out
    assert "not an ImageJ hyperstack" in caplog.text  # the file type is said
    labels = tifffile.imread(out)
    assert labels.dtype == np.uint32 and set(np.unique(labels)) == {0, 2147483648}


def test_the_summary_lists_the_ids_in_the_labels_and_warns_about_the_others(files, tmp_path,
                                                                          capsys, monkeypatch,
                                                                          caplog):
    disc = np.zeros(HW, bool)
    disc[5:15, 5:15] = True
    masks = {4: disc.copy(), 6: disc}  # 6 paints over all of 4
    monkeypatch.setattr(Segmenter, "_mask_from_interactive",
                        lambda self, prompt, flat, **kwargs: masks[prompt.obj_id])
    prompts = write_csv(tmp_path / "p.csv", ["4,1,point,8,23,1,,,,", "6,1,point,8,23,1,,,,"])
    out = tmp_path / "labels.tif"
    with caplog.at_level(logging.WARNING):
        assert _segment(files, files["root"] / "stack.tif", out, prompts=prompts) == 0
    assert "with objects [6] written" in capsys.readouterr().out
    assert "object 4: all its 100 pixels are painted over by objects with higher ids" \
        in caplog.text


def test_embed_only_interactive_does_not_load_the_propagation_model(files, capsys):
    # sam2.1_hiera_tiny is not in the (empty) weights cache: loading it would exit 5
    stack = str(files["root"] / "stack.tif")
    argv = ["embed", stack, "--model", "sam_test_tiny", "--weights", str(files["sam"]),
            "--propagation-model", "sam2.1_hiera_tiny", "--offline", "--device", "cpu",
            "--dtype", "fp32", "--quiet"]
    assert main([*argv, "--only", "interactive"]) == 0, capsys.readouterr().err
    assert "for 1 model(s)" in capsys.readouterr().out


def test_embed_only_propagation_does_not_load_the_interactive_model(files, capsys):
    stack = str(files["root"] / "stack.tif")
    argv = ["embed", stack, "--model", "sam_vit_b", "--propagation-model", "sam2_test_tiny",
            "--propagation-weights", str(files["sam2"]), "--offline", "--device", "cpu",
            "--dtype", "fp32", "--quiet"]
    assert main([*argv, "--only", "propagation"]) == 0, capsys.readouterr().err
    assert "for 1 model(s)" in capsys.readouterr().out


def _axes_and_calibration(path):
    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata or {}
        x_res, y_res = tif.pages[0].get_resolution()
        return (tif.is_imagej, tif.series[0].axes, tif.series[0].dtype, round(1 / y_res, 6),
                round(1 / x_res, 6), meta.get("unit"), meta.get("spacing"),
                meta.get("finterval"))


def test_labels_are_imagej_hyperstacks_with_the_inputs_calibration(files, tmp_path, capsys):
    stack = tifffile.imread(files["root"] / "stack.tif")
    plain = files["root"] / "stack.tif"
    assert _segment(files, plain, tmp_path / "z.tif") == 0
    assert _axes_and_calibration(tmp_path / "z.tif")[:3] == (True, "ZYX", np.uint16)
    assert _segment(files, plain, tmp_path / "t.tif", "--stack-kind", "t") == 0
    assert _axes_and_calibration(tmp_path / "t.tif")[:3] == (True, "TYX", np.uint16)
    assert "(TYX) with objects" in capsys.readouterr().out

    timelapse = tmp_path / "timelapse.tif"  # says it is T, with pixel size and interval
    tifffile.imwrite(timelapse, stack, imagej=True, resolution=(1 / 0.5, 1 / 0.25),
                     metadata={"axes": "TYX", "unit": "um", "finterval": 2.5})
    assert _segment(files, timelapse, tmp_path / "calibrated.tif") == 0  # default z: the file wins
    assert _axes_and_calibration(tmp_path / "calibrated.tif") == (
        True, "TYX", np.uint16, 0.25, 0.5, "um", None, 2.5)

    hyper = tmp_path / "hyper.tif"  # (t, z, y, x) hyperstack
    tifffile.imwrite(hyper, np.stack([stack, stack[::-1]]), imagej=True,
                     metadata={"axes": "TZYX", "spacing": 3.0, "unit": "um"},
                     resolution=(2.0, 2.0))
    prompts4d = write_csv(tmp_path / "p4.csv", ["4,1,1,point,8,23,1"],
                          header="object_id,outer,frame,kind,row,col,label")
    assert _segment(files, hyper, tmp_path / "h.tif", "--axis", "1", "--outer-axis", "0",
                    prompts=prompts4d) == 0
    assert _axes_and_calibration(tmp_path / "h.tif") == (
        True, "TZYX", np.uint16, 0.5, 0.5, "um", 3.0, None)
    assert tifffile.imread(tmp_path / "h.tif").shape == (2, 2, *HW)


def test_a_tiny_tiff_claiming_a_huge_image_is_refused_before_allocating(files, tmp_path, capsys,
                                                                         monkeypatch):
    """174 bytes claiming 100000 x 100000 pixels: `embed` says so instead of allocating 37 GiB
    of labels (it allocates none) and decoding a 9.3 GiB page."""
    import psutil
    from test_api_io import _Memory, huge_tiff

    assert len(huge_tiff(tmp_path / "huge.tif", 100_000, 100_000)) < 200
    monkeypatch.setattr(psutil, "virtual_memory", lambda: _Memory(16 * 2**30))
    assert main(["embed", str(tmp_path / "huge.tif"), *models(files)]) == 2
    line = _one_error_line(capsys)
    assert "one 100000 x 100000 frame" in line and "needs 149.0 GiB of memory" in line
