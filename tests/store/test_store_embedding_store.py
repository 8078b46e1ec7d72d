"""`EmbeddingStore` with a fake encoder: disk reuse, resume, cancellation, rebuilds, fp16,
RAM-only mode, 4D views, hashing and the RAM LRU."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from store_helpers import FakeEncoder, make_stack

from napari_focsam.store import (
    ENV_CACHE_DIR,
    ComputeProgress,
    EmbeddingStore,
    RamCache,
    StackSource,
    cache_key,
    content_hash,
    default_cache_root,
)


def _store(stack, encoder, root, **kwargs) -> EmbeddingStore:
    return EmbeddingStore(StackSource(stack, stack_axis=0), encoder, cache_root=root, **kwargs)


def _expected(stack, i):
    src = StackSource(stack, stack_axis=0)
    return FakeEncoder().encode([src[i]])[0]


def _assert_frame(store, stack, i, atol=0.0):
    got = store[i]
    for name, ref in _expected(stack, i).items():
        np.testing.assert_allclose(got[name], ref, rtol=0, atol=atol)


# ---------------------------------------------------------------------- reuse
def test_second_run_encodes_nothing(tmp_path, stack):
    enc = FakeEncoder()
    store = _store(stack, enc, tmp_path, batch_size=4)
    steps = list(store.compute())
    assert [s.frame for s in steps] == list(range(6))
    assert steps[-1] == ComputeProgress(6, 6, 5, False)
    assert store.encoder_calls == 6 and enc.calls == [4, 2]
    assert store.path is not None and store.path.parent == tmp_path

    enc2 = FakeEncoder()
    again = _store(stack, enc2, tmp_path)
    steps = list(again.compute())
    assert all(s.from_cache for s in steps) and len(steps) == 6
    for i in range(6):
        _assert_frame(again, stack, i)
    assert again.encoder_calls == 0 and enc2.calls == []


def test_getitem_computes_on_demand_and_caches(tmp_path, stack):
    store = _store(stack, FakeEncoder(), tmp_path)
    _assert_frame(store, stack, 3)
    _assert_frame(store, stack, 3)
    assert store.encoder_calls == 1
    assert store.missing() == [0, 1, 2, 4, 5]
    assert store(3)["emb"].shape == (4, 8, 8) and len(store) == 6  # FeatureProvider interface


def test_changed_data_is_encoded_again(tmp_path, stack):
    list(_store(stack, FakeEncoder(), tmp_path).compute())
    changed = stack.copy()
    changed[2, 0, 0] += 1
    store = _store(changed, FakeEncoder(), tmp_path)
    list(store.compute())
    assert store.encoder_calls == 6
    _assert_frame(store, changed, 2)


def test_other_model_id_gets_its_own_entry(tmp_path, stack):
    a = _store(stack, FakeEncoder("model-a"), tmp_path)
    b = _store(stack, FakeEncoder("model-b"), tmp_path)
    list(a.compute())
    list(b.compute())
    assert a.path != b.path and b.encoder_calls == 6


# ---------------------------------------------------------------------- cancellation / resume
def test_resume_after_generator_close(tmp_path, stack):
    store = _store(stack, FakeEncoder(), tmp_path, batch_size=2)
    gen = store.compute()
    seen = [next(gen) for _ in range(3)]  # frames 0, 1 (one batch), 2 (second batch written)
    gen.close()
    assert [s.frame for s in seen] == [0, 1, 2] and store.encoder_calls == 4

    resumed = _store(stack, FakeEncoder(), tmp_path, batch_size=2)
    steps = list(resumed.compute())
    assert [s.from_cache for s in steps] == [True] * 4 + [False] * 2
    assert resumed.encoder_calls == 2
    for i in range(6):
        _assert_frame(resumed, stack, i)


def test_cancel_event(tmp_path, stack):
    store = _store(stack, FakeEncoder(), tmp_path)
    event = threading.Event()
    steps = []
    for step in store.compute(cancel_event=event):
        steps.append(step)
        if step.done == 2:
            event.set()
    assert len(steps) == 2 and store.encoder_calls == 2
    resumed = _store(stack, FakeEncoder(), tmp_path)
    assert resumed.missing() == [2, 3, 4, 5]


def test_compute_in_a_worker_thread_while_reading(tmp_path, stack):
    store = _store(stack, FakeEncoder(), tmp_path, batch_size=2)
    worker = threading.Thread(target=lambda: list(store.compute()))
    worker.start()
    for i in (5, 0, 3):
        _assert_frame(store, stack, i)
    worker.join()
    assert store.encoder_calls == 6  # never twice the same frame


# ---------------------------------------------------------------------- options
def test_float16_round_trip(tmp_path, stack):
    store = _store(stack, FakeEncoder(), tmp_path, disk_dtype="float16")
    fresh = {k: v.copy() for k, v in store[1].items()}
    store.clear_ram()
    reread = store[1]
    for name, ref in _expected(stack, 1).items():
        np.testing.assert_array_equal(fresh[name], reread[name])  # same values fresh or reread
        np.testing.assert_allclose(reread[name], ref, rtol=1e-3, atol=1e-4)
        assert reread[name].dtype == np.float32
    again = _store(stack, FakeEncoder(), tmp_path, disk_dtype="float32")
    again[1]
    assert again.encoder_calls == 1  # a float32 store does not reuse float16 data


def test_ram_only(stack, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "never"))
    store = _store(stack, FakeEncoder(), False)
    list(store.compute())
    assert store.path is None and not (tmp_path / "never").exists()
    _assert_frame(store, stack, 4)
    assert store.encoder_calls == 6


def test_ram_lru_bounds_the_store(tmp_path, stack):
    frame_bytes = (4 * 8 * 8 + 2 * 4 * 4) * 4
    store = _store(stack, FakeEncoder(), False, ram_bytes=2 * frame_bytes)
    list(store.compute())
    assert len(store.ram) == 2 and store.ram.nbytes == 2 * frame_bytes
    assert store.missing() == [0, 1, 2, 3]
    store[0]
    assert store.encoder_calls == 7


def test_cache_root_from_env(monkeypatch, tmp_path, stack):
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "env"))
    assert default_cache_root() == tmp_path / "env"
    store = _store(stack, FakeEncoder(), None)
    store[0]
    assert store.path is not None and store.path.parent == tmp_path / "env" and store.path.exists()


def test_default_cache_root_without_env(monkeypatch):
    monkeypatch.delenv(ENV_CACHE_DIR, raising=False)
    root = default_cache_root()
    assert root.name == "embeddings" and "napari-focsam" in str(root)


def test_4d_views(tmp_path):
    data = np.stack([make_stack(3, seed=s) for s in range(2)])  # (T, Z, H, W)
    src = StackSource(data, stack_axis=1, outer_axis=0)
    store = EmbeddingStore(src, FakeEncoder(), cache_root=tmp_path)
    view = store.view(1)
    assert len(view) == 3
    steps = list(view.compute())
    assert [s.frame for s in steps] == [3, 4, 5] and store.missing() == [0, 1, 2]
    ref = FakeEncoder().encode([src[src.frame_index(1, 2)]])[0]
    np.testing.assert_array_equal(view(2)["emb"], ref["emb"])
    np.testing.assert_array_equal(view(-1)["emb"], ref["emb"])
    assert store.encoder_calls == 3
    with pytest.raises(IndexError):
        store.view(2)


def test_invalid_options(stack):
    with pytest.raises(ValueError, match="disk_dtype"):
        _store(stack, FakeEncoder(), False, disk_dtype="float64")
    with pytest.raises(ValueError, match="batch_size"):
        _store(stack, FakeEncoder(), False, batch_size=0)
    with pytest.raises(IndexError):
        _store(stack, FakeEncoder(), False)[6]


# ---------------------------------------------------------------------- hashing
def test_content_hash_and_key(stack):
    src = StackSource(stack, stack_axis=0)
    h = content_hash(src)
    assert h == content_hash(StackSource(stack.copy(), stack_axis=0))
    assert h != content_hash(StackSource(stack, stack_axis=0, percentiles=(1, 99)))
    assert h != content_hash(StackSource(stack.astype(np.int32), stack_axis=0))
    assert h != content_hash(StackSource(stack[::-1].copy(), stack_axis=0))
    keys = {cache_key(h, "m", "p"), cache_key(h, "m2", "p"), cache_key(h, "m", "p2"),
            cache_key("x", "m", "p")}
    assert len(keys) == 4 and all(len(k) == 32 and k.isalnum() for k in keys)


def test_explicit_content_hash_skips_reading(tmp_path, stack):
    store = _store(stack, FakeEncoder(), tmp_path, content_hash="user-id")
    assert store.content_hash == "user-id"
    assert store.key == cache_key("user-id", "fake:model", "fake-v1")


# ---------------------------------------------------------------------- RAM LRU
def test_ram_cache_evicts_by_bytes():
    cache = RamCache(max_bytes=100)
    a, b, c = (np.zeros(40, np.uint8) for _ in range(3))
    cache.put("a", a)
    cache.put("b", b)
    assert cache.nbytes == 80 and "a" in cache
    cache.get("a")  # a is now the most recent
    cache.put("c", c)
    assert cache.keys() == ["a", "c"] and cache.nbytes == 80 and cache.evictions == 1
    assert not cache.put("big", np.zeros(101, np.uint8)) and "big" not in cache
    cache.put("a", {"x": np.zeros(10, np.float32)})  # replacing updates the size
    assert cache.nbytes == 80
    assert cache.pop("a")["x"].shape == (10,) and cache.nbytes == 40
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.get("c") is None


def test_ram_cache_max_items_and_threads():
    cache = RamCache(max_bytes=1 << 20, max_items=3)

    def work(k):
        for i in range(200):
            cache.put((k, i), np.zeros(8, np.uint8))
            cache.get((k, i - 1))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 3 and cache.nbytes == 24
