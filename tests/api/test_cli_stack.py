"""``napari-focsam embed | segment | propagate`` run in-process on tiny checkpoints."""

from __future__ import annotations

import re

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
    assert "with objects [4, 6] written" in capsys.readouterr().out
    labels = tifffile.imread(seg_out)
    assert labels.shape == (2, *HW) and labels.dtype == np.uint16
    assert set(np.unique(labels)) <= {0, 4, 6}
    assert not labels[0].any()  # no prompt on frame 0

    prop_out = tmp_path / "prop.tif"
    assert main(["propagate", stack, *models(files), "--prompts", str(files["root"] / "prompts.csv"),
                 "-o", str(prop_out), "--direction", "backward"]) == 0
    assert "with objects [4, 6] written" in capsys.readouterr().out
    labels = tifffile.imread(prop_out)
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
    def interrupted(self, prompts, direction="both", *, cancel_event=None):
        yield Progress("propagate", 1, len(self.source), 0)
        raise KeyboardInterrupt

    monkeypatch.setattr(Segmenter, "propagate", interrupted)
    out = tmp_path / "labels.tif"
    code = main(["propagate", str(files["root"] / "stack.tif"), *models(files),
                 "--prompts", str(files["root"] / "prompts.csv"), "-o", str(out)])
    assert code == 130
    assert "interrupted; no output written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
