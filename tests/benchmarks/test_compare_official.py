"""``scripts/compare_official.py``: the parts that need no official install (arithmetic, table,
mask agreement, and our worker on tiny models)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_official.py"


@pytest.fixture(scope="module")
def cmp():
    spec = importlib.util.spec_from_file_location("compare_official", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_official"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("compare_official", None)


def _stats(median: float) -> dict:
    return {"min_s": median * 0.9, "median_s": median, "runs": 3}


def test_extra_object_ratio_and_iou(cmp):
    per_count = {"1": _stats(0.5), "3": _stats(0.9)}
    assert cmp.extra_object_seconds(per_count, 3) == pytest.approx(0.2)
    assert cmp.extra_object_seconds(per_count, 3, key="min_s") == pytest.approx(0.18)
    assert cmp.extra_object_seconds(per_count, 1) is None
    assert cmp.extra_object_seconds({"3": _stats(0.9)}, 3) is None
    assert cmp.speed_ratio(3.0, 1.5) == pytest.approx(2.0)
    assert cmp.speed_ratio(None, 1.0) is None and cmp.speed_ratio(1.0, 0.0) is None
    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert cmp.mask_iou(a, b) == 1.0  # both empty
    a[:2] = True
    b[1:3] = True
    assert cmp.mask_iou(a, b) == pytest.approx(4 / 12)
    with pytest.raises(ValueError):
        cmp.mask_iou(a, b[:2])


def test_rows_and_table(cmp):
    settings = cmp.Settings(sam_dtypes=["fp32", "bf16"], objects=[1, 3], clip_size=512)
    official = {"sam": {"encoder": {"fp32": _stats(12.0), "bf16": _stats(30.0)},
                        "click": {"single": _stats(0.05), "multimask": _stats(0.06)}},
                "sam2": {"propagation": {"fp32": {"1": _stats(0.6), "3": _stats(1.2)}}}}
    ours = {"sam": {"encoder": {"fp32": _stats(6.0), "bf16": _stats(10.0)},
                    "click": {"single": _stats(0.025), "multimask": _stats(0.03)}},
            "sam2": {"propagation": {"fp32": {"1": _stats(0.5), "3": _stats(0.7)},
                                     "bf16": {"1": _stats(0.4), "3": _stats(0.5)}}}}
    rows = cmp.comparison_rows(settings, official, ours)
    by_work = {r.work: r for r in rows}
    enc = by_work["SAM ViT-B image encoder 1024x1024, fp32"]
    assert (enc.official_s, enc.ours_s, enc.ratio) == (12.0, 6.0, 2.0)
    extra = by_work["  each extra object (t3 - t1)/2, fp32"]
    assert extra.official_s == pytest.approx(0.3) and extra.ours_s == pytest.approx(0.1)
    assert extra.ratio == pytest.approx(3.0)
    bf16 = by_work["  each extra object (t3 - t1)/2, bf16"]  # ours only
    assert bf16.official_s is None and bf16.ours_s == pytest.approx(0.05) and bf16.ratio is None
    assert [r.work for r in rows].index("sam2.1_hiera_tiny 512x512 per frame, 3 objects, fp32") == 5
    assert len(rows) == 4 + 3 + 3

    table = cmp.format_table(rows, header=["CPU: test"], notes=["note"])
    lines = table.splitlines()
    assert lines[0] == "CPU: test" and lines[-1] == "note"
    assert [c.strip() for c in lines[1].split("|")] == ["work", "official", "this project", "ratio"]
    enc_line = next(line for line in lines if line.startswith("SAM ViT-B image encoder 1024x1024, fp32"))
    assert [c.strip() for c in enc_line.split("|")][1:] == ["12.00 s", "6.00 s", "2.00x"]
    click = next(line for line in lines if "1 mask)" in line)
    assert [c.strip() for c in click.split("|")][1:] == ["50.0 ms", "25.0 ms", "2.00x"]
    bf16_line = next(line for line in lines if "(t3 - t1)/2, bf16" in line)
    assert [c.strip() for c in bf16_line.split("|")][1:] == ["-", "50.0 ms", "-"]
    assert len({len(line) for line in lines[1:2 + len(rows) + 1]}) == 1  # columns line up


def test_time_steps_skips_the_prompted_frame(cmp):
    frames, times, masks = cmp.time_steps(iter(range(4)), lambda k: (k, np.full((1, 2, 2), k > 1)))
    assert frames == [0, 1, 2, 3] and len(times) == 3 and all(t >= 0 for t in times)
    assert masks[2].all() and not masks[1].any()
    stats = cmp.timing_stats([3.0, 1.0, 2.0])
    assert (stats["min_s"], stats["median_s"], stats["runs"]) == (1.0, 2.0, 3)


def test_blob_image_is_fixed_and_click_is_on_a_blob(cmp):
    image, (x, y) = cmp.blob_image(96, seed=3)
    again, click = cmp.blob_image(96, seed=3)
    np.testing.assert_array_equal(image, again)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8 and click == (x, y)
    background = cmp.blob_image(96, seed=4)[0]
    assert not np.array_equal(image, background)
    assert np.abs(image[int(y), int(x)].astype(int) - image[2, 2]).max() > 20  # not background


def test_our_worker_on_tiny_models(cmp, tmp_path):
    settings = cmp.Settings(sam_model="sam_test_tiny", sam_size=64, sam_dtypes=["fp32", "bf16"],
                            repeats=1, warmup=0, click_repeats=1, sam2_model="sam2_test_tiny",
                            clip_size=128, frames=2, objects=[1, 2])
    inputs = cmp.prepare_inputs(tmp_path, settings)
    assert len(inputs["clip_clicks_xy"]) == 2 and len(inputs["sam_click_xy"]) == 2
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["00000.jpg", "00001.jpg"]
    threads = torch.get_num_threads()
    try:
        for section in cmp.SECTIONS:
            cmp.run_worker("ours", section, tmp_path)
    finally:
        torch.set_num_threads(threads)
    sam = torch.load(cmp.result_path(tmp_path, "ours", "sam"), weights_only=True)
    fig = sam["figures"]
    assert set(fig["encoder"]) == {"fp32", "bf16"} and set(fig["click"]) == {"single", "multimask"}
    assert all(e["runs"] == 1 and e["median_s"] > 0 for e in fig["encoder"].values())
    assert fig["threads"] == 1 and fig["torchvision_stand_ins"] is False
    assert sam["arrays"]["click_multimask_masks"].shape == (3, 64, 64)
    assert sam["arrays"]["click_single_masks"].shape == (1, 64, 64)
    assert sam["arrays"]["features_fp32"].shape == (1, 32, 64, 64)

    vid = torch.load(cmp.result_path(tmp_path, "ours", "sam2"), weights_only=True)
    prop = vid["figures"]["propagation"]
    assert set(prop) == {"fp32"} and set(prop["fp32"]) == {"1", "2"}
    assert prop["fp32"]["2"]["frames"] == [0, 1] and prop["fp32"]["2"]["runs"] == 1
    masks = vid["arrays"]["masks_fp32_2"]
    assert masks.shape == (2, 2, 128, 128) and masks.dtype == torch.bool
    assert 0 < masks.float().mean() < 1  # the weights give masks that are neither empty nor full
    assert vid["figures"]["frames_sha256"] == cmp.frames_sha256(cmp.read_frames(tmp_path / "frames"))

    # the agreement check: identical outputs agree, a changed mask does not
    results = {"sam": sam, "sam2": vid}
    agree = {s: cmp.agreement(s, r, r, settings) for s, r in results.items()}
    notes, ok = cmp.agreement_notes(agree, 0.99)
    assert ok and notes[-1].endswith("yes")
    assert agree["sam"]["embeddings"]["fp32"]["max_abs_diff"] == 0.0
    other = {"figures": vid["figures"], "arrays": {**vid["arrays"], "masks_fp32_2": ~masks}}
    agree["sam2"] = cmp.agreement("sam2", vid, other, settings)
    assert agree["sam2"]["objects_2"]["min_iou"] < 0.99
    assert cmp.agreement_notes(agree, 0.99)[1] is False
