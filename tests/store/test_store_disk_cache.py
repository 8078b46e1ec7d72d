"""The zarr disk cache: validation, rebuilds, per-frame checksums, strict mode, disk full."""

from __future__ import annotations

import errno
import shutil

import numpy as np
import pytest
import zarr
from store_helpers import FakeEncoder

from napari_focsam.store import (
    CacheCorruptError,
    CacheMismatchError,
    CacheSpec,
    CacheWriteError,
    DiskCache,
    EmbeddingStore,
    StackSource,
)
from napari_focsam.store import disk_cache as disk_cache_module


def _store(stack, root, encoder=None, **kwargs) -> EmbeddingStore:
    return EmbeddingStore(StackSource(stack, stack_axis=0), encoder or FakeEncoder(),
                          cache_root=root, **kwargs)


def _filled(stack, root, **kwargs) -> EmbeddingStore:
    store = _store(stack, root, **kwargs)
    list(store.compute())
    return store


def _chunk_files(path, name):
    files = sorted(p for p in (path / name).rglob("*") if p.is_file() and p.name not in
                   ("zarr.json", ".zarray", ".zattrs"))  # chunk files, zarr 3 or zarr 2
    assert files
    return files


def _reference(stack, i):
    return FakeEncoder().encode([StackSource(stack, stack_axis=0)[i]])[0]


def _spec(**kwargs) -> CacheSpec:
    base = dict(model_id="m", preprocess_version="p", content_hash="h", n_frames=3,
                features={"emb": (2, 3)}, metadata={"original_size": (5, 6)})
    return CacheSpec(**{**base, **kwargs})


# ---------------------------------------------------------------------- rebuilds
def test_truncated_chunk_is_detected_and_the_frame_recomputed(tmp_path, stack, caplog):
    path = _filled(stack, tmp_path).path
    chunk = _chunk_files(path, "emb")[2]
    chunk.write_bytes(chunk.read_bytes()[:10])
    store = _store(stack, tmp_path)
    with caplog.at_level("WARNING"):
        got = [store[i] for i in range(6)]
    assert "unreadable" in caplog.text or "checksum" in caplog.text
    assert store.encoder_calls == 1
    for i, g in enumerate(got):
        np.testing.assert_array_equal(g["emb"], _reference(stack, i)["emb"])
    # rewritten: a third store reads everything from disk
    third = _store(stack, tmp_path)
    [third[i] for i in range(6)]
    assert third.encoder_calls == 0


def test_silently_changed_chunk_fails_its_checksum(tmp_path, stack, caplog):
    store = _filled(stack, tmp_path)
    group = zarr.open_group(str(store.path), mode="r+")
    bad = np.asarray(group["aux"][4]) + 1.0
    group["aux"][4] = bad  # valid zarr data, wrong values
    fresh = _store(stack, tmp_path)
    with caplog.at_level("WARNING"):
        np.testing.assert_array_equal(fresh[4]["aux"], _reference(stack, 4)["aux"])
    assert "checksum" in caplog.text and fresh.encoder_calls == 1


def test_foreign_model_under_the_same_path_is_rebuilt(tmp_path, stack, caplog):
    store = _filled(stack, tmp_path)
    # pretend another model wrote this entry (e.g. a key collision or a copied folder)
    group = zarr.open_group(str(store.path), mode="r+")
    attrs = dict(group.attrs)[disk_cache_module.ATTRS_KEY]
    group.attrs.update({disk_cache_module.ATTRS_KEY: {**attrs, "model_id": "other:model"}})
    with caplog.at_level("WARNING"):
        again = _filled(stack, tmp_path)
    assert "model_id" in caplog.text and "rebuilding" in caplog.text
    assert again.encoder_calls == 6
    # strict mode raises instead
    group = zarr.open_group(str(store.path), mode="r+")
    group.attrs.update({disk_cache_module.ATTRS_KEY: {**attrs, "model_id": "other:model"}})
    with pytest.raises(CacheMismatchError, match="model_id"):
        _store(stack, tmp_path, strict=True).open()


@pytest.mark.parametrize("damage", ["garbage_attrs", "no_attrs", "missing_array", "wrong_shape",
                                    "not_zarr", "garbage_metadata"])
def test_unreadable_entry_is_rebuilt(tmp_path, stack, damage, caplog):
    path = _filled(stack, tmp_path).path
    if damage == "garbage_attrs":
        zarr.open_group(str(path), mode="r+").attrs.update(
            {disk_cache_module.ATTRS_KEY: "garbage"})
    elif damage == "no_attrs":
        group = zarr.open_group(str(path), mode="r+")
        group.attrs.update({disk_cache_module.ATTRS_KEY: None})
    elif damage == "missing_array":
        shutil.rmtree(path / "aux")
    elif damage == "wrong_shape":
        group = zarr.open_group(str(path), mode="r+")
        del group["done"]
        group.zeros(name="done", shape=(5,), chunks=(1,), dtype=bool)
    elif damage == "not_zarr":
        shutil.rmtree(path)
        path.write_text("not a zarr store")
    elif damage == "garbage_metadata":  # zarr 3 / zarr 2 group metadata
        (path / ("zarr.json" if (path / "zarr.json").exists() else ".zgroup")).write_text("{ no")
    with caplog.at_level("WARNING"):
        store = _filled(stack, tmp_path)
    assert "rebuilding" in caplog.text
    assert store.encoder_calls == 6
    np.testing.assert_array_equal(store[5]["emb"], _reference(stack, 5)["emb"])
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    assert attrs[disk_cache_module.ATTRS_KEY]["n_frames"] == 6


def test_strict_mode_raises_on_corruption(tmp_path, stack):
    path = _filled(stack, tmp_path).path
    shutil.rmtree(path / "emb")
    with pytest.raises(CacheCorruptError):
        _store(stack, tmp_path, strict=True).open()
    chunk = _chunk_files(_filled(stack, tmp_path).path, "emb")[0]
    chunk.write_bytes(b"xx")
    with pytest.raises(CacheCorruptError):
        _store(stack, tmp_path, strict=True)[0]


def test_unreadable_done_flag_means_not_done(tmp_path, stack):
    path = _filled(stack, tmp_path).path
    _chunk_files(path, "done")[1].write_bytes(b"\x00\x01garbage")
    store = _store(stack, tmp_path)
    assert store.missing() == [1]


def test_spec_validation_and_mismatches(tmp_path):
    with pytest.raises(ValueError, match="disk dtype"):
        _spec(dtype="float64")
    with pytest.raises(ValueError, match="feature names"):
        _spec(features={"done": (1,)})
    path = tmp_path / "x.zarr"
    cache = DiskCache.open(path, _spec())
    cache.write(1, {"emb": np.ones((2, 3))})
    assert cache.done_mask().tolist() == [False, True, False]
    assert DiskCache.open(path, _spec()).is_done(1)
    for change in ({"content_hash": "h2"}, {"preprocess_version": "p2"}, {"n_frames": 4},
                   {"features": {"emb": (2, 4)}}, {"dtype": "float16"},
                   {"metadata": {"original_size": (5, 7)}}):
        with pytest.raises(CacheMismatchError):
            DiskCache.open(path, _spec(**change), strict=True)
    rebuilt = DiskCache.open(path, _spec(content_hash="h2"))
    assert not rebuilt.done_mask().any()
    with pytest.raises(KeyError):
        rebuilt.read(1)
    with pytest.raises(ValueError, match="shape"):
        rebuilt.write(0, {"emb": np.ones((3, 2))})


# ---------------------------------------------------------------------- disk full
def _fail_after(monkeypatch, n_ok: int):
    """Make the n_ok+1-th chunk write raise ENOSPC (the frame write hook)."""
    real = disk_cache_module._store_frame
    count = {"n": 0}

    def store_frame(array, index, value):
        count["n"] += 1
        if count["n"] > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(array, index, value)

    monkeypatch.setattr(disk_cache_module, "_store_frame", store_frame)


def test_disk_full_raises_and_keeps_done_frames(tmp_path, stack, monkeypatch):
    store = _store(stack, tmp_path, batch_size=2)
    store.open()
    _fail_after(monkeypatch, n_ok=4 * 2 + 1)  # frames 0, 1 (4 writes each), then emb of 2
    steps = []
    with pytest.raises(CacheWriteError, match="disk is full") as info:
        for step in store.compute():
            steps.append(step)
    assert info.value.errno == errno.ENOSPC
    assert [s.frame for s in steps] == [0, 1]
    monkeypatch.undo()
    reopened = _store(stack, tmp_path)
    assert reopened.missing() == [2, 3, 4, 5]
    for i in (0, 1):
        np.testing.assert_array_equal(reopened[i]["emb"], _reference(stack, i)["emb"])
    assert reopened.encoder_calls == 0


def test_disk_full_inside_zarr(tmp_path, stack, monkeypatch):
    """A real ENOSPC from zarr's own file writing (zarr 3's LocalStore)."""
    local = pytest.importorskip("zarr.storage._local")
    if not hasattr(local, "_put"):
        pytest.skip("zarr without storage._local._put")
    store = _store(stack, tmp_path)
    store[0]
    real, count = local._put, {"n": 0}

    def put(path, value, exclusive=False):
        if "emb" in str(path) or "aux" in str(path):
            count["n"] += 1
            if count["n"] > 1:  # the emb chunk of frame 1 goes through, its aux chunk fails
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, value, exclusive)

    monkeypatch.setattr(local, "_put", put)
    with pytest.raises(CacheWriteError) as info:
        list(store.compute())
    assert info.value.errno == errno.ENOSPC
    # on-demand reads keep working (RAM only) with a warning
    np.testing.assert_array_equal(store[3]["emb"], _reference(stack, 3)["emb"])
    monkeypatch.undo()
    reopened = _store(stack, tmp_path)
    assert reopened.missing() == [1, 2, 3, 4, 5]
