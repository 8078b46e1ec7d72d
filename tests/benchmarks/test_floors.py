"""`benchmarks.floors`: GEMM peak, FLOP counting, and the floor columns of the bench tables."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from napari_focsam.benchmarks import floors


def test_gemm_peak_is_positive_finite_and_quick():
    start = time.perf_counter()
    peaks = floors.gemm_peaks(("fp32", "bf16"), sizes=(32, 64), )
    assert time.perf_counter() - start < 10
    assert set(peaks) == {"fp32", "bf16"}
    for peak in peaks.values():
        assert math.isfinite(peak["flops_per_s"]) and peak["flops_per_s"] > 0
        assert peak["size"] in (32, 64) and set(peak["per_size"]) <= {32, 64}
        assert peak["threads"] == torch.get_num_threads()
    again = floors.gemm_peak("fp32", sizes=(32, 64))
    assert again["flops_per_s"] == peaks["fp32"]["flops_per_s"]  # cached


def test_flops_of_a_linear_and_a_matmul_match_a_hand_count():
    lin = nn.Linear(16, 32)
    x = torch.randn(5, 16)
    with torch.no_grad():
        assert floors.count_flops(lambda: lin(x)) == 2 * 5 * 16 * 32
    a, b = torch.randn(3, 7, 11), torch.randn(3, 11, 13)
    assert floors.count_flops(lambda: a @ b) == 2 * 3 * 7 * 11 * 13
    meta = floors.meta_flops(lambda: nn.Linear(16, 32), lambda m: m(torch.zeros(5, 16)))
    assert meta == 2 * 5 * 16 * 32


def test_cpu_attention_is_counted():
    q, k, v = torch.randn(1, 2, 8, 4), torch.randn(1, 2, 12, 4), torch.randn(1, 2, 12, 6)
    expected = 2 * 2 * 8 * 12 * (4 + 6)
    assert floors.count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(
        q[..., :4], k, v[..., :4])) == 2 * 2 * 8 * 12 * 8
    from napari_focsam.models import kernels
    from napari_focsam.models.common import attend

    for name in ("sdpa", "blocked"):
        with kernels.force("attention", name):
            assert floors.count_flops(lambda: attend(q, k, v)) == expected


def test_floor_entry_and_cells():
    entry = floors.floor_entry(2e9, {"flops_per_s": 1e9}, seconds=3.0)
    assert entry == {"flops": 2e9, "floor_s": 2.0, "floor_ratio": 1.5}
    assert floors.floor_cells(entry).split() == ["2.000s", "1.5x"]
    assert floors.floor_cells(floors.floor_entry(0, {"flops_per_s": 1e9}, 1.0)).split() == ["-", "-"]


@pytest.fixture
def small_peaks(monkeypatch):
    """Benchmarks measure the GEMM peak on tiny matrices (fast)."""
    real = floors.gemm_peak

    def quick(dtype="fp32", device="cpu", sizes=None, repeats=3):
        return real(dtype, device, sizes=(32, 64), repeats=1)
    monkeypatch.setattr(floors, "gemm_peak", quick)


def test_sam_table_has_floor_columns(small_peaks):
    from napari_focsam.benchmarks.sam import format_sam_table, run_sam_benchmark

    result = run_sam_benchmark(model="sam_test_tiny", dtypes=("fp32",), repeats=1, image_hw=(64, 64))
    assert result["encoder"]["fp32"]["flops"] > 0 and result["encoder"]["fp32"]["floor_s"] > 0
    assert result["click"]["single"]["floor_ratio"] > 0 and "fp32" in result["floors"]["gemm_peak"]
    table = format_sam_table(result)
    assert "floor" in table and "min/floor" in table and "GEMM peak on this machine: fp32" in table
    encoder_row = next(line for line in table.splitlines() if line.startswith("image encoder"))
    assert encoder_row.rstrip().endswith("x")


def test_sam2_table_has_floors_and_the_extra_object_cost(small_peaks):
    from napari_focsam.benchmarks.sam2 import format_sam2_table, run_sam2_benchmark

    result = run_sam2_benchmark(model_name="sam2_test_tiny", dtypes=("fp32",), frames=2,
                                objects=(1, 2), image_size=64, passes=1)
    prop = result["propagation"]["fp32"]
    assert prop["1"]["flops"] > 0 and prop["2"]["flops"] > prop["1"]["flops"]
    extra = result["per_object"]["fp32"]["2"]
    assert extra["flops"] == prop["2"]["flops"] - prop["1"]["flops"]
    assert extra["floor_s"] > 0 and extra["basis"] == "median"
    assert result["encoder"]["fp32"]["floor_s"] > 0
    table = format_sam2_table(result)
    assert "min/floor" in table and "each extra object (1 -> 2), fp32" in table


def test_kernel_lines_name_each_measured_choice():
    choices = {"AMD EPYC | 2 cpus | torch 2": {
        "attention_rel_pos|cpu|float32|bh16.nq4096.nk4096.d64.dv64.kh64.kw64|t2|relpos": {
            "choice": "blocked", "seconds": {"sdpa": 0.0559, "blocked": 0.0485}},
        "attention|cpu|bfloat16|bh2.nq4096.nk4096.d64.dv64|t2|-": {
            "choice": "sdpa", "seconds": {"sdpa": 0.187, "blocked": 4.8}},
        "attention|cpu|bfloat16|bh4.nq4096.nk4096.d64.dv64|t2|-": {
            "choice": "sdpa", "fastest": "sdpa", "seconds": {"sdpa": 0.187},
            "screen_seconds": {"sdpa": 0.011, "blocked": 0.282}},
        "attention|cpu|float32|bh4.nq4096.nk32768.d256.dv256|t1|-": {
            "choice": "sdpa", "fastest": "blocked", "seconds": {"sdpa": 0.0114, "blocked": 0.0107}}}}
    lines = floors.kernel_lines(choices)
    assert lines == [
        "kernel attention_rel_pos float32 bh16.nq4096.nk4096.d64.dv64.kh64.kw64 t2 relpos: "
        "blocked (sdpa 55.9 ms, blocked 48.5 ms)",
        "kernel attention bfloat16 bh2.nq4096.nk4096.d64.dv64 t2: sdpa (sdpa 187.0 ms, "
        "blocked 4800.0 ms)",
        "kernel attention bfloat16 bh4.nq4096.nk4096.d64.dv64 t2: sdpa (sdpa 187.0 ms; "
        "screened out: blocked)",
        "kernel attention float32 bh4.nq4096.nk32768.d256.dv256 t1: sdpa, the default kept on a "
        "near tie (sdpa 11.4 ms, blocked 10.7 ms)"]
    assert floors.kernel_lines({}) == []


def test_the_gemm_peak_takes_the_faster_path_and_drops_a_hopeless_one(monkeypatch):
    """Without native bf16, ``torch.mm`` in bf16 is a slow reference loop while ``F.linear``
    goes through oneDNN: the peak is the faster path's, and a path 4x slower is not timed at
    larger sizes."""
    calls = []

    def slow(a, b, out):
        calls.append(("slow", a.shape[0]))
        time.sleep(0.02)

    def fast(a, b, out):
        calls.append(("fast", a.shape[0]))

    monkeypatch.setattr(floors, "_GEMM_PATHS", {"slow": slow, "fast": fast})
    monkeypatch.setattr(floors, "_peaks", {})
    peak = floors.gemm_peak("fp32", sizes=(8, 16), repeats=2)
    assert peak["via"] == "fast" and peak["flops_per_s"] > 2 * 16**3 / 0.02
    assert ("slow", 8) in calls and ("slow", 16) not in calls and ("fast", 16) in calls
