"""Device and encoder-precision choice; CPU feature detection is mocked, never this machine's."""

from __future__ import annotations

import contextlib
import subprocess

import pytest
import torch

from napari_focsam.engine import precision
from napari_focsam.engine.precision import (
    DeviceError,
    DtypeError,
    autocast_context,
    fp32_context,
    resolve_device,
    resolve_encoder_dtype,
)
from napari_focsam.models import cpu, kernels


@pytest.fixture(autouse=True)
def _fresh_cache():
    detect = cpu.cpu_native_bf16  # the cached function, even where a test replaces it
    detect.cache_clear()
    yield
    detect.cache_clear()


def _fake_platform(monkeypatch, system: str, machine: str) -> None:
    monkeypatch.setattr(cpu.platform, "system", lambda: system)
    monkeypatch.setattr(cpu.platform, "machine", lambda: machine)


# ---------------------------------------------------------------- cpu.cpu_native_bf16
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"fpu", "avx2", "avx512f"}, False),
        ({"fpu", "avx512f", "avx512_bf16"}, True),
        ({"fpu", "amx_tile", "amx_bf16"}, True),
        (set(), False),
    ],
)
def test_linux_flags(monkeypatch, flags, expected):
    _fake_platform(monkeypatch, "Linux", "x86_64")
    monkeypatch.setattr(cpu, "read_cpuinfo_flags", lambda: frozenset(flags))
    assert cpu.cpu_native_bf16() is expected


@pytest.mark.parametrize(("native", "dtype", "kernel"), [(True, torch.bfloat16, "blocked"),
                                                         (False, torch.float32, "sdpa")])
def test_one_detection_for_the_precision_choice_and_the_kernel_rules(monkeypatch, native, dtype,
                                                                     kernel):
    """`models.cpu.cpu_native_bf16` decides both the encoder precision and the attention
    kernels' default rule for bf16 on the CPU."""
    monkeypatch.setattr(cpu, "cpu_native_bf16", lambda: native)
    assert resolve_encoder_dtype(torch.device("cpu")) == dtype
    q = torch.zeros(1, 2, 8, 4, dtype=torch.bfloat16)
    assert kernels.REGISTRY.ops["attention"].default(q, q, q, None) == kernel


def test_result_is_cached(monkeypatch):
    _fake_platform(monkeypatch, "Linux", "x86_64")
    calls = []

    def fake_flags():
        calls.append(1)
        return frozenset({"amx_bf16"})

    monkeypatch.setattr(cpu, "read_cpuinfo_flags", fake_flags)
    assert cpu.cpu_native_bf16() and cpu.cpu_native_bf16()
    assert len(calls) == 1


def test_read_cpuinfo_flags_parses_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Fake CPU\nflags\t\t: fpu sse2 avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu sse2 avx512_bf16\n"
    )
    assert cpu.read_cpuinfo_flags(str(cpuinfo)) == {"fpu", "sse2", "avx512_bf16"}
    assert cpu.read_cpuinfo_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize(("stdout", "rc", "expected"), [("1\n", 0, True), ("0\n", 0, False),
                                                        ("", 1, False)])
def test_macos_arm_uses_sysctl(monkeypatch, stdout, rc, expected):
    _fake_platform(monkeypatch, "Darwin", "arm64")

    def fake_run(cmd, **kwargs):
        assert cmd == ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"]
        return subprocess.CompletedProcess(cmd, rc, stdout=stdout, stderr="")

    monkeypatch.setattr(cpu.subprocess, "run", fake_run)
    assert cpu.cpu_native_bf16() is expected


def test_macos_without_sysctl_is_false(monkeypatch):
    _fake_platform(monkeypatch, "Darwin", "arm64")

    def broken_run(cmd, **kwargs):
        raise FileNotFoundError("sysctl")

    monkeypatch.setattr(cpu.subprocess, "run", broken_run)
    assert cpu.cpu_native_bf16() is False


@pytest.mark.parametrize(("system", "machine"), [("Windows", "AMD64"), ("Darwin", "x86_64")])
def test_other_platforms_are_false(monkeypatch, system, machine):
    _fake_platform(monkeypatch, system, machine)
    monkeypatch.setattr(cpu, "read_cpuinfo_flags", lambda: frozenset({"amx_bf16"}))
    assert cpu.cpu_native_bf16() is False


# ---------------------------------------------------------------- resolve_device
def _fake_accelerators(monkeypatch, cuda: bool, mps: bool, count: int = 1) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count if cuda else 0)
    monkeypatch.setattr(precision, "_mps_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_device(monkeypatch, cuda, mps, expected):
    _fake_accelerators(monkeypatch, cuda, mps)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device() == torch.device(expected)


def test_explicit_devices(monkeypatch):
    _fake_accelerators(monkeypatch, cuda=True, mps=False, count=2)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("cuda", "CUDA is not available"),
        ("cuda:0", "CUDA is not available"),
        ("mps", "MPS is not available"),
        ("gpu-please", "unknown device"),
    ],
)
def test_unavailable_devices(monkeypatch, device, match):
    _fake_accelerators(monkeypatch, cuda=False, mps=False)
    with pytest.raises(DeviceError, match=match):
        resolve_device(device)


def test_missing_cuda_index(monkeypatch):
    _fake_accelerators(monkeypatch, cuda=True, mps=False, count=1)
    with pytest.raises(DeviceError, match="1 GPU"):
        resolve_device("cuda:3")


# ---------------------------------------------------------------- resolve_encoder_dtype
@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_on_cpu(monkeypatch, native, expected):
    monkeypatch.setattr(cpu, "cpu_native_bf16", lambda: native)
    assert resolve_encoder_dtype(torch.device("cpu")) == expected
    assert resolve_encoder_dtype(torch.device("cpu"), "auto") == expected


@pytest.mark.parametrize(("supported", "expected"), [(True, torch.bfloat16),
                                                     (False, torch.float32)])
def test_auto_dtype_on_cuda(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    assert resolve_encoder_dtype(torch.device("cuda")) == expected


def test_auto_dtype_on_mps():
    assert resolve_encoder_dtype(torch.device("mps")) == torch.float16


def test_no_autocast_for_the_device_means_fp32(monkeypatch):
    # e.g. MPS with torch < 2.5
    monkeypatch.setattr(precision, "_autocast_supported", lambda device_type: False)
    assert resolve_encoder_dtype(torch.device("mps")) == torch.float32
    assert resolve_encoder_dtype(torch.device("mps"), "fp32") == torch.float32
    with pytest.raises(DtypeError, match="fp32"):
        resolve_encoder_dtype(torch.device("mps"), "fp16")
    assert isinstance(fp32_context(torch.device("mps")), contextlib.nullcontext)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fp32", torch.float32), ("float32", torch.float32), ("FP32", torch.float32),
        ("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16),
        ("fp16", torch.float16), ("float16", torch.float16),
        (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32),
    ],
)
def test_explicit_dtypes(monkeypatch, name, expected):
    monkeypatch.setattr(cpu, "cpu_native_bf16", lambda: True)
    assert resolve_encoder_dtype(torch.device("cpu"), name) == expected


def test_emulated_bf16_warns(monkeypatch, caplog):
    monkeypatch.setattr(cpu, "cpu_native_bf16", lambda: False)
    assert resolve_encoder_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    assert "without native bf16" in caplog.text


@pytest.mark.parametrize("bad", ["int8", "half-ish", torch.float64, torch.int8])
def test_unknown_dtype(bad):
    with pytest.raises(DtypeError):
        resolve_encoder_dtype(torch.device("cpu"), bad)


# ---------------------------------------------------------------- autocast_context
def test_fp32_is_a_null_context():
    ctx = autocast_context(torch.device("cpu"), torch.float32)
    assert isinstance(ctx, contextlib.nullcontext)


def test_bf16_autocast_runs_matmuls_in_bf16():
    ctx = autocast_context(torch.device("cpu"), torch.bfloat16)
    assert isinstance(ctx, torch.autocast)
    a = torch.randn(4, 4)
    with ctx:
        assert (a @ a).dtype == torch.bfloat16
    assert (a @ a).dtype == torch.float32


def test_fp32_context_switches_an_outer_autocast_off():
    a = torch.randn(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with fp32_context(torch.device("cpu")):
            assert (a @ a).dtype == torch.float32
        assert (a @ a).dtype == torch.bfloat16
