"""`models.kernels`: candidates equal the plain formulation, forced choices, measuring once per
key (memory, then disk), a corrupt or read-only cache, the environment override."""

from __future__ import annotations

import json
import logging
import os
import sys

import pytest
import torch

from napari_focsam.models import common, kernels
from napari_focsam.models.kernels import ENV_KERNELS, KernelChoiceError, KernelRegistry


def _inputs(b=2, h=3, nq=40, nk=96, d=16, dv=24, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, nq, d, generator=g) * 2
    k = torch.randn(b, h, nk, d, generator=g) * 2
    v = torch.randn(b, h, nk, dv, generator=g)
    pad = torch.zeros(b, nk, dtype=torch.bool)
    pad[1, nk // 3:] = True
    return q.to(dtype), k.to(dtype), v.to(dtype), pad


def _plain(q, k, v, pad):
    """softmax(q k^T / sqrt(D) + mask) v in fp64."""
    q, k, v = (t.double() for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if pad is not None:
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    return torch.softmax(scores, -1) @ v


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(ENV_KERNELS, raising=False)


@pytest.fixture
def registry(tmp_path):
    """A registry measuring every call (no FLOP threshold), caching in `tmp_path`, with the
    attention op and spies counting each candidate's calls."""
    reg = KernelRegistry(cache_path=tmp_path / "kernels.json", min_flops=0, repeats=1)
    calls = {"sdpa": 0, "blocked": 0}

    def spy(name):
        fn = kernels.REGISTRY.ops["attention"].candidates[name]

        def run(*args):
            calls[name] += 1
            return fn(*args)
        return run

    op = kernels.REGISTRY.ops["attention"]
    reg.register(kernels.KernelOp("attention", {n: spy(n) for n in calls}, op.default, op.key,
                                  op.probe))
    reg.calls = calls
    return reg


@pytest.mark.parametrize("name", ["sdpa", "blocked"])
@pytest.mark.parametrize("masked", [False, True])
def test_each_candidate_equals_the_plain_formulation(monkeypatch, name, masked):
    monkeypatch.setattr(common, "ATTENTION_QUERY_BLOCK", 16)  # 40 queries: 3 blocks, last short
    candidate = kernels.REGISTRY.ops["attention"].candidates[name]
    q, k, v, pad = _inputs()
    pad = pad if masked else None
    ref = _plain(q, k, v, pad)
    torch.testing.assert_close(candidate(q, k, v, pad).double(), ref, rtol=1e-5, atol=1e-5)
    qb, kb, vb, _ = _inputs(dtype=torch.bfloat16)
    ref = _plain(qb, kb, vb, pad)
    out = candidate(qb, kb, vb, pad)
    assert out.dtype == torch.bfloat16
    assert ((out.double() - ref).norm() / ref.norm()).item() < 2e-2  # bf16: 8 significant bits


def test_small_calls_take_the_default_rule_unmeasured(tmp_path):
    reg = KernelRegistry(cache_path=tmp_path / "kernels.json")  # the real threshold
    reg.register(kernels.REGISTRY.ops["attention"])
    q, k, v, pad = _inputs()
    assert reg.choose("attention", q, k, v, pad) == "sdpa"
    with torch.no_grad():
        reg.run("attention", q, k, v, pad)
    assert reg.measurements == 0 and not (tmp_path / "kernels.json").exists()
    assert 2 * 2 * 3 * 40 * 96 * (16 + 24) < kernels.MEASURE_MIN_FLOPS


def test_a_forced_choice_is_used(registry):
    q, k, v, pad = _inputs()
    with registry.force("attention", "blocked"), torch.no_grad():
        out = registry.run("attention", q, k, v, pad)
    assert registry.calls == {"sdpa": 0, "blocked": 1} and registry.measurements == 0
    torch.testing.assert_close(out.double(), _plain(q, k, v, pad), rtol=1e-5, atol=1e-5)
    registry.set_forced("attention", "sdpa")
    with torch.no_grad():
        registry.run("attention", q, k, v, pad)
    assert registry.calls == {"sdpa": 1, "blocked": 1}
    registry.set_forced("attention", None)
    with pytest.raises(KernelChoiceError, match="choose from auto, default, sdpa, blocked"):
        registry.set_forced("attention", "flash")
    with pytest.raises(KernelChoiceError, match="unknown kernel op 'conv'"):
        registry.force("conv", "sdpa").__enter__()


def test_measured_once_per_key_then_memory_then_disk(registry, tmp_path):
    q, k, v, pad = _inputs()
    with torch.no_grad():
        out = registry.run("attention", q, k, v, pad)
    assert registry.measurements == 1
    assert registry.calls["sdpa"] >= 2 and registry.calls["blocked"] >= 2  # warm-up + timed
    torch.testing.assert_close(out.double(), _plain(q, k, v, pad), rtol=1e-5, atol=1e-5)
    [(fingerprint, entries)] = registry.choices().items()
    [(key, entry)] = entries.items()
    assert key.startswith("attention|cpu|float32|bh8.nq64.nk128.d16.dv24|") and key.endswith("|mask")
    assert entry["choice"] in ("sdpa", "blocked") and set(entry["seconds"]) == {"sdpa", "blocked"}
    chosen = entry["choice"]

    before = dict(registry.calls)
    with torch.no_grad():
        registry.run("attention", q, k, v, pad)
        registry.run("attention", q[:, :, :35], k[:, :, :90], v[:, :, :90], pad[:, :90])  # same bucket
    assert registry.measurements == 1
    assert registry.calls[chosen] == before[chosen] + 2
    with torch.no_grad():
        registry.run("attention", q, k, v, None)  # no mask: another key
    assert registry.measurements == 2

    data = json.loads((tmp_path / "kernels.json").read_text())
    assert data["machines"][fingerprint][key]["choice"] == chosen
    fresh = KernelRegistry(cache_path=tmp_path / "kernels.json", min_flops=0)  # "a new process"
    fresh.register(registry.ops["attention"])
    before = dict(registry.calls)
    with torch.no_grad():
        fresh.run("attention", q, k, v, pad)
    assert fresh.measurements == 0 and registry.calls[chosen] == before[chosen] + 1


def test_no_measuring_when_recording_gradients_or_paused(registry):
    q, k, v, pad = _inputs()
    q.requires_grad_(True)
    registry.run("attention", q, k, v, pad).sum().backward()
    assert registry.measurements == 0 and q.grad is not None
    with registry.paused(), torch.no_grad():
        registry.run("attention", q, k, v, pad)
    registry.enabled = False
    with torch.no_grad():
        registry.run("attention", q, k, v, pad)
    assert registry.measurements == 0


def test_a_corrupt_cache_is_ignored_warned_once_and_rewritten(registry, tmp_path, caplog):
    path = tmp_path / "kernels.json"
    path.write_text("{not json")
    q, k, v, pad = _inputs()
    with caplog.at_level(logging.WARNING, logger="napari_focsam.models.kernels"), torch.no_grad():
        registry.run("attention", q, k, v, pad)
        registry.run("attention", q, k, v, None)
    warnings = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(warnings) == 1
    data = json.loads(path.read_text())
    assert data["version"] == kernels.CACHE_VERSION and len(next(iter(data["machines"].values()))) == 2


@pytest.mark.skipif(sys.platform == "win32" or (hasattr(os, "geteuid") and os.geteuid() == 0),
                    reason="needs a folder this user cannot write")
def test_a_read_only_cache_folder_keeps_choices_in_memory(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        reg = KernelRegistry(cache_path=folder / "kernels.json", min_flops=0, repeats=1)
        reg.register(kernels.REGISTRY.ops["attention"])
        q, k, v, pad = _inputs()
        with torch.no_grad():
            reg.run("attention", q, k, v, pad)
            reg.run("attention", q, k, v, pad)
        assert reg.measurements == 1 and not (folder / "kernels.json").exists()
    finally:
        folder.chmod(0o700)


def test_an_unwritable_cache_path_keeps_choices_in_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    reg = KernelRegistry(cache_path=blocker / "kernels.json", min_flops=0, repeats=1)  # parent is a file
    reg.register(kernels.REGISTRY.ops["attention"])
    q, k, v, pad = _inputs()
    with torch.no_grad():
        reg.run("attention", q, k, v, pad)
        reg.run("attention", q, k, v, pad)
    assert reg.measurements == 1


def test_the_environment_forces_or_switches_off(registry, monkeypatch):
    q, k, v, pad = _inputs()
    monkeypatch.setenv(ENV_KERNELS, "attention=blocked")
    with torch.no_grad():
        registry.run("attention", q, k, v, pad)
    assert registry.calls == {"sdpa": 0, "blocked": 1} and registry.measurements == 0
    with registry.force("attention", "sdpa"), torch.no_grad():  # Python beats the environment
        registry.run("attention", q, k, v, pad)
    assert registry.calls == {"sdpa": 1, "blocked": 1}
    for off in ("off", "default", " OFF ", "attention=default"):
        monkeypatch.setenv(ENV_KERNELS, off)
        assert registry.env_settings()[0] in (False, None)
        with torch.no_grad():
            registry.run("attention", q, k, v, pad)
    assert registry.measurements == 0 and registry.calls["sdpa"] == 5  # fp32: the rule says sdpa
    monkeypatch.setenv(ENV_KERNELS, "auto, attention=auto")
    assert registry.env_settings() == (True, {})
    for bad, match in (("attention=flash", "unknown attention kernel 'flash'; choose from auto, "
                                           "default, sdpa, blocked"),
                       ("conv=sdpa", "unknown kernel op 'conv'; choose from attention"),
                       ("fast", "expected 'off', 'default', 'auto' or op=kernel pairs")):
        monkeypatch.setenv(ENV_KERNELS, bad)
        with pytest.raises(KernelChoiceError, match=match), torch.no_grad():
            registry.run("attention", q, k, v, pad)


def test_attend_uses_the_process_registry(monkeypatch):
    q, k, v, pad = _inputs()
    seen = []
    op = kernels.REGISTRY.ops["attention"]
    spy = {name: (lambda *a, _n=name, _f=fn: seen.append(_n) or _f(*a)) for name, fn in op.candidates.items()}
    monkeypatch.setitem(kernels.REGISTRY.ops, "attention",
                        kernels.KernelOp("attention", spy, op.default, op.key, op.probe))
    with kernels.force("attention", "blocked"):
        out = common.attend(q, k, v, pad)
    assert seen == ["blocked"]
    torch.testing.assert_close(out.double(), _plain(q, k, v, pad), rtol=1e-5, atol=1e-5)
    common.attend(q, k, v, pad)
    assert seen == ["blocked", "sdpa"]  # fp32, small: the default rule


def test_the_probe_keeps_every_batch_entry_head_and_key_and_a_query_block():
    """SAM 2's memory attention for 3 objects: the part the kernels are timed on holds the
    blocked kernel's whole score buffer (3 objects x a block of 512 query rows x every key);
    the screen before it is a small part of the same kind."""
    q = torch.zeros(3, 1, 4096, 64)
    k = v = torch.zeros(3, 1, 8192, 64)
    pad = torch.zeros(3, 8192, dtype=torch.bool)
    op = kernels.REGISTRY.ops["attention"]
    rows = max(common.ATTENTION_QUERY_BLOCK, 128 * torch.get_num_threads())
    pq, pk, pv, pp = op.probe((q, k, v, pad), 5e8)
    assert pq.shape == (3, 1, rows, 64) and pk.shape == pv.shape == (3, 1, 8192, 64)
    assert pp.shape == (3, 8192)
    pq, pk, pv, pp = op.probe((q, k, v, pad), 2 * 3 * 2000 * 8192 * 128)  # more FLOPs: more rows
    assert pq.shape == (3, 1, max(rows, 2000), 64) and pk.shape == (3, 1, 8192, 64)
    args = (q[:, :, :300], k, v, None)  # fewer rows than a block: the whole call
    assert op.probe(args, 5e8) is args

    sq, sk, sv, sp = op.screen((q, k, v, pad), 5e8)
    flops = 2 * sq.shape[0] * sq.shape[1] * sq.shape[2] * sk.shape[2] * 128
    assert sq.shape[2] >= min(4096, 128 * torch.get_num_threads()) and sk.shape[2] >= 1024
    assert flops < 4 * 5e8 and sp.shape == (sq.shape[0], sk.shape[2])


# ----------------------------------------------------------------------------- the choice
class _Clock:
    """A stand-in for ``time.perf_counter`` that the fake candidates advance."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fake_op(clock: _Clock, seconds_per_item: dict[str, float], fails: tuple[str, ...] = (),
             calls: list | None = None, parts: bool = False) -> kernels.KernelOp:
    """Op ``"fake"`` on one 1-D tensor, default candidate ``"a"``: candidate ``n`` takes
    ``seconds_per_item[n]`` per element on the fake clock and returns a tensor full of its
    index; with `parts`, a probe (the first half) and a screen (the first tenth)."""

    def candidate(index: int, name: str):
        def run(x: torch.Tensor) -> torch.Tensor:
            if calls is not None:
                calls.append((name, x.numel()))
            if name in fails:
                raise RuntimeError(f"{name} does not support this input")
            clock.now += seconds_per_item[name] * x.numel()
            return torch.full_like(x, index)
        return run

    def key(x: torch.Tensor) -> kernels.KernelKey:
        return kernels.KernelKey(x.device, x.dtype, f"n{kernels.next_pow2(x.numel())}", "",
                                 float(x.numel()))

    return kernels.KernelOp(
        "fake", {n: candidate(i, n) for i, n in enumerate(seconds_per_item)}, lambda x: "a", key,
        (lambda args, flops: (args[0][: len(args[0]) // 2],)) if parts else None,
        (lambda args, flops: (args[0][: len(args[0]) // 10],)) if parts else None)


@pytest.fixture
def fake_clock(monkeypatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(kernels.time, "perf_counter", clock)
    return clock


def _fake_registry(tmp_path, op: kernels.KernelOp) -> KernelRegistry:
    reg = KernelRegistry(cache_path=tmp_path / "kernels.json", min_flops=0, repeats=2,
                         probe_flops=10)
    reg.register(op)
    return reg


def _entry(reg: KernelRegistry) -> dict:
    [entries] = reg.choices().values()
    [entry] = entries.values()
    return entry


def test_a_near_tie_keeps_the_default(tmp_path, fake_clock, caplog):
    reg = _fake_registry(tmp_path, _fake_op(fake_clock, {"a": 1.0, "b": 0.95}))  # b 5 % faster
    x = torch.zeros(8)
    with caplog.at_level(logging.INFO, logger="napari_focsam.models.kernels"), torch.no_grad():
        out = reg.run("fake", x)
    entry = _entry(reg)
    assert (entry["choice"], entry["fastest"], entry["default"]) == ("a", "b", "a")
    assert entry["seconds"] == pytest.approx({"a": 8.0, "b": 7.6})
    assert torch.equal(out, torch.full((8,), 0.0))  # the default's output of the call
    assert "a, the default, kept on a near tie: b only 5% faster (needs 10%)" in caplog.text
    assert reg.choose("fake", x) == "a"


def test_a_clear_gain_replaces_the_default(tmp_path, fake_clock):
    reg = _fake_registry(tmp_path, _fake_op(fake_clock, {"a": 1.0, "b": 0.7}))  # b 30 % faster
    with torch.no_grad():
        out = reg.run("fake", torch.zeros(8))
    entry = _entry(reg)
    assert (entry["choice"], entry["fastest"]) == ("b", "b")
    assert torch.equal(out, torch.full((8,), 1.0))
    [saved] = json.loads((tmp_path / "kernels.json").read_text())["machines"].values()
    assert saved[f"fake|cpu|float32|n8|t{torch.get_num_threads()}|-"]["choice"] == "b"


def test_without_the_default_the_fastest_wins(tmp_path, fake_clock):
    """No margin when the default candidate failed: ``"c"``, 1 % faster than ``"b"``, wins."""
    reg = _fake_registry(tmp_path, _fake_op(fake_clock, {"a": 0.1, "b": 1.0, "c": 0.99},
                                            fails=("a",)))
    with torch.no_grad():
        out = reg.run("fake", torch.zeros(8))
    entry = _entry(reg)
    assert (entry["choice"], entry["fastest"]) == ("c", "c") and set(entry["seconds"]) == {"b", "c"}
    assert torch.equal(out, torch.full((8,), 2.0))


def test_the_screen_drops_hopeless_candidates_before_the_probe(tmp_path, fake_clock):
    """``"slow"`` (25x, like emulated bf16 GEMMs) runs on the screen only; the rest are timed
    on the probe, and the chosen candidate computes the whole call."""
    calls: list[tuple[str, int]] = []
    reg = _fake_registry(tmp_path, _fake_op(fake_clock, {"a": 1.0, "b": 0.5, "slow": 25.0},
                                            calls=calls, parts=True))
    with torch.no_grad():
        out = reg.run("fake", torch.zeros(100))
    assert {n for n, size in calls if size == 10} == {"a", "b", "slow"}  # the screen
    assert {n for n, size in calls if size == 50} == {"a", "b"}  # the probe
    assert [n for n, size in calls if size == 100] == ["b"]  # the call
    entry = _entry(reg)
    assert entry["choice"] == "b" and set(entry["seconds"]) == {"a", "b"}
    assert set(entry["screen_seconds"]) == {"a", "b", "slow"} and entry["timed_flops"] == 50
    assert torch.equal(out, torch.full((100,), 1.0))


def test_a_screened_out_default_leaves_the_choice_to_the_fastest(tmp_path, fake_clock):
    reg = _fake_registry(tmp_path, _fake_op(fake_clock, {"a": 25.0, "b": 1.0, "c": 0.97},
                                            parts=True))
    with torch.no_grad():
        reg.run("fake", torch.zeros(100))
    entry = _entry(reg)
    assert entry["choice"] == "c" and "a" not in entry["seconds"]


def test_a_cache_of_another_layout_version_is_ignored(tmp_path, fake_clock, caplog):
    """A file from before the near-tie rule may hold choices that rule would not make."""
    reg = _fake_registry(tmp_path, _fake_op(fake_clock, {"a": 1.0, "b": 0.95}))
    fingerprint = kernels.machine_fingerprint("cpu")
    key = f"fake|cpu|float32|n8|t{torch.get_num_threads()}|-"
    (tmp_path / "kernels.json").write_text(json.dumps({
        "version": kernels.CACHE_VERSION - 1,
        "machines": {fingerprint: {key: {"choice": "b", "seconds": {"a": 1.0, "b": 0.95}}}}}))
    with caplog.at_level(logging.INFO, logger="napari_focsam.models.kernels"), torch.no_grad():
        reg.run("fake", torch.zeros(8))
    assert reg.measurements == 1 and _entry(reg)["choice"] == "a"
    assert "layout version" in caplog.text and "corrupt" not in caplog.text
    data = json.loads((tmp_path / "kernels.json").read_text())
    assert data["version"] == kernels.CACHE_VERSION
    assert data["machines"][fingerprint][key]["choice"] == "a"
