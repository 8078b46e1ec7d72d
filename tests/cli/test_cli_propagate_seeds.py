"""``napari-focsam propagate --seeds``: labels of one frame, or annotated frames of a stack,
become objects (ids kept) prompted on their frames."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_focsam.api.segmenter import Segmenter
from napari_focsam.cli import main

MODELS = ["--model", "sam_test_tiny", "--weights", "random", "--propagation-model",
          "sam2_test_tiny", "--propagation-weights", "random", "--device", "cpu", "--dtype",
          "fp32", "--no-cache", "--quiet"]
HW = (40, 48)
T = 5


def _disc(center, r):
    yy, xx = np.mgrid[:HW[0], :HW[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= r ** 2


@pytest.fixture
def stack(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 40, (T, *HW)).astype(np.uint8)
    for t in range(T):
        images[t][_disc((12, 12 + t), 5)] = 200
        images[t][_disc((28, 34), 6)] = 200
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, images, photometric="minisblack")
    return path


@pytest.fixture
def spy(monkeypatch):
    """Record the prompts `Segmenter.propagate` gets (and propagate nothing)."""
    calls = []

    def propagate(self, prompts, direction="both", **_kw):
        calls.append((list(prompts), direction))
        yield from ()

    monkeypatch.setattr(Segmenter, "propagate", propagate)
    return calls


def _labels_2d() -> np.ndarray:
    out = np.zeros(HW, np.int32)
    out[_disc((12, 14), 5)] = 7
    out[_disc((28, 34), 6)] = 300
    out[0, 0] = 9  # a speck: left out (min area)
    return out


def test_one_frame_of_labels_seeds_its_objects(stack, tmp_path, spy):
    seeds = tmp_path / "seeds.tif"
    tifffile.imwrite(seeds, _labels_2d())
    out = tmp_path / "out.tif"
    assert main(["propagate", str(stack), "--seeds", str(seeds), "--seed-frame", "2", "-o", str(out),
                 *MODELS]) == 0
    (prompts, direction), = spy
    assert direction == "both"
    assert [(p.obj_id, p.frame) for p in prompts] == [(7, 2), (300, 2)]
    np.testing.assert_array_equal(prompts[0].mask, _labels_2d() == 7)
    assert len(prompts[1].points_rc) == 0 and prompts[1].box_rc is None
    assert out.exists()


def test_annotated_frames_of_a_stack_are_all_prompted(stack, tmp_path, spy):
    labels = np.zeros((T, *HW), np.uint16)
    labels[0] = _labels_2d()
    labels[3][_disc((12, 15), 5)] = 7  # the same object annotated again on frame 3
    seeds = tmp_path / "seeds.tif"
    tifffile.imwrite(seeds, labels, photometric="minisblack")
    assert main(["propagate", str(stack), "--seeds", str(seeds), "-o", str(tmp_path / "o.tif"),
                 "--seed-prompt", "box+point", *MODELS]) == 0
    (prompts, _), = spy
    assert [(p.obj_id, p.frame) for p in prompts] == [(7, 0), (300, 0), (7, 3)]
    assert all(p.mask is None and p.box_rc is not None and len(p.points_rc) == 1 for p in prompts)
    spy.clear()
    assert main(["propagate", str(stack), "--seeds", str(seeds), "--seed-frame", "3",
                 "-o", str(tmp_path / "o.tif"), *MODELS]) == 0
    assert [(p.obj_id, p.frame) for p in spy[0][0]] == [(7, 3)]


def test_seeds_with_prompts_and_id_clashes(stack, tmp_path, spy, capsys):
    seeds = tmp_path / "seeds.tif"
    tifffile.imwrite(seeds, _labels_2d())
    csv = tmp_path / "p.csv"
    csv.write_text("object_id,frame,kind,row,col,label\n1,0,point,28,34,1\n")
    assert main(["propagate", str(stack), "--seeds", str(seeds), "--prompts", str(csv),
                 "-o", str(tmp_path / "o.tif"), *MODELS]) == 0
    assert sorted(p.obj_id for p in spy[0][0]) == [1, 7, 300]
    csv.write_text("object_id,frame,kind,row,col,label\n7,0,point,28,34,1\n")
    assert main(["propagate", str(stack), "--seeds", str(seeds), "--prompts", str(csv),
                 "-o", str(tmp_path / "o.tif"), *MODELS]) == 2
    assert "--seeds labels [7] are also object ids of --prompts" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    ([], "give --prompts and / or --seeds"),
    (["--seed-frame", "1", "--prompts", "P"], "apply with --seeds"),
])
def test_usage_errors(stack, tmp_path, spy, capsys, extra, message):
    csv = tmp_path / "p.csv"
    csv.write_text("object_id,frame,kind,row,col,label\n1,0,point,28,34,1\n")
    extra = [str(csv) if a == "P" else a for a in extra]
    with pytest.raises(SystemExit) as exit_info:
        main(["propagate", str(stack), "-o", str(tmp_path / "o.tif"), *extra, *MODELS])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not spy


def test_bad_seeds_exit_2_and_write_nothing(stack, tmp_path, spy, capsys):
    out = tmp_path / "o.tif"
    wrong = tmp_path / "wrong.tif"
    tifffile.imwrite(wrong, np.zeros((3, *HW), np.uint16), photometric="minisblack")
    empty = tmp_path / "empty.tif"
    tifffile.imwrite(empty, np.zeros(HW, np.uint16))
    floats = tmp_path / "floats.tif"
    tifffile.imwrite(floats, np.full(HW, 0.5, np.float32))
    for path, message in ((wrong, "has shape (3, 40, 48)"), (empty, "holds no label"),
                          (floats, "")):
        assert main(["propagate", str(stack), "--seeds", str(path), "-o", str(out), *MODELS]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["propagate", str(stack), "--seeds", str(empty), "--seed-frame", "9", "-o",
                 str(out), *MODELS]) == 2
    assert "9" in capsys.readouterr().err
    assert not out.exists() and not spy


def test_real_tiny_models_seed_frame_keeps_the_labels(stack, tmp_path):
    seeds = tmp_path / "seeds.tif"
    tifffile.imwrite(seeds, _labels_2d())
    out = tmp_path / "out.tif"
    assert main(["propagate", str(stack), "--seeds", str(seeds), "--seed-frame", "1",
                 "--direction", "forward", "-o", str(out), *MODELS]) == 0
    labels = tifffile.imread(out)
    assert labels.shape == (T, *HW) and not labels[0].any()
    assert set(np.unique(labels[1]).tolist()) <= {0, 7, 300}
    for obj in (7, 300):  # a mask prompt is the object on its frame
        truth = _labels_2d() == obj
        iou = (truth & (labels[1] == obj)).sum() / (truth | (labels[1] == obj)).sum()
        assert iou > 0.8, (obj, iou)
