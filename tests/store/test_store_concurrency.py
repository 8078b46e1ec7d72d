"""One cache entry shared by several stores and processes: the disk dtype is part of the key,
writers take the entry's lock and encode each frame once, done flags are verified before
`compute` trusts them, and a rebuild never leaves a half-deleted entry."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import FakeEncoder, make_stack

from napari_focsam.store import EmbeddingStore, StackSource
from napari_focsam.store.disk_cache import entry_lock

HELPERS = Path(__file__).parent


def _store(stack, root, **kwargs) -> EmbeddingStore:
    return EmbeddingStore(StackSource(stack, stack_axis=0), FakeEncoder(), cache_root=root, **kwargs)


def test_float32_and_float16_entries_live_side_by_side(tmp_path, stack):
    full = _store(stack, tmp_path)
    list(full.compute())
    half = _store(stack, tmp_path, disk_dtype="float16")
    assert half.key != full.key
    list(half.compute())
    again = _store(stack, tmp_path)
    assert [p.from_cache for p in again.compute()] == [True] * len(stack)  # nothing deleted
    assert again.encoder_calls == 0


def test_compute_verifies_done_frames_and_repairs_them(tmp_path, stack, caplog):
    store = _store(stack, tmp_path)
    list(store.compute())
    group = zarr.open_group(str(store.path), mode="r+")
    group["emb"][2] = np.asarray(group["emb"][2]) + 1.0  # valid zarr, wrong values, done flag set
    fresh = _store(stack, tmp_path)
    with caplog.at_level("WARNING"):
        report = {p.frame: p.from_cache for p in fresh.compute()}
    assert report[2] is False and sum(report.values()) == len(stack) - 1
    assert fresh.encoder.calls == [1] and "checksum" in caplog.text
    third = _store(stack, tmp_path)
    assert all(p.from_cache for p in third.compute())  # repaired on disk


def test_a_frame_written_by_another_store_is_not_encoded_again(tmp_path, stack):
    a, b = _store(stack, tmp_path), _store(stack, tmp_path)
    a.open(), b.open()  # both opened before anything was written
    a[3]
    np.testing.assert_array_equal(b[3]["emb"], a[3]["emb"])
    assert b.encoder_calls == 0  # b re-read the done flags under the lock


def test_waiting_for_the_lock_can_be_cancelled(tmp_path, stack):
    store = _store(stack, tmp_path)
    store.open()
    cancel = threading.Event()
    with entry_lock(store.path):  # another process (here: this test) holds the entry
        timer = threading.Timer(0.3, cancel.set)
        timer.start()
        start = time.perf_counter()
        progress = list(store.compute(cancel_event=cancel))
        timer.join()
    assert progress == [] and store.encoder_calls == 0
    assert time.perf_counter() - start < 5


def test_rebuilding_a_damaged_entry_leaves_no_trash(tmp_path, stack):
    store = _store(stack, tmp_path)
    list(store.compute())
    meta = store.path / ("zarr.json" if (store.path / "zarr.json").exists() else ".zgroup")
    meta.write_text("{not json")  # the group cannot be opened
    fresh = _store(stack, tmp_path)
    list(fresh.compute())
    assert fresh.encoder_calls == len(stack)
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.path.name, store.path.name + ".lock"]


_WORKER = """
import json, sys, time
sys.path.insert(0, {helpers!r})
import numpy as np
from store_helpers import FakeEncoder, make_stack
from napari_focsam.store import EmbeddingStore, StackSource

class Slow(FakeEncoder):
    def encode(self, frames):
        time.sleep(0.15)
        return super().encode(frames)

store = EmbeddingStore(StackSource(make_stack(), stack_axis=0), Slow(), cache_root={root!r})
progress = list(store.compute())
print(json.dumps({{"encoded": store.encoder_calls, "frames": len(progress)}}))
"""


def test_two_processes_on_one_entry_encode_each_frame_once(tmp_path):
    code = _WORKER.format(helpers=str(HELPERS), root=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    n = len(make_stack())
    assert [o["frames"] for o in outs] == [n, n]
    assert sum(o["encoded"] for o in outs) == n  # no frame encoded twice
    check = _store(make_stack(), tmp_path)
    assert all(p.from_cache for p in check.compute())


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_two_processes_with_different_dtypes_both_succeed(tmp_path, dtype):
    # the reported failure: float32 and float16 runs at once destroyed each other's entry
    code = _WORKER.format(helpers=str(HELPERS), root=str(tmp_path)).replace(
        "cache_root=", f"disk_dtype={dtype!r}, cache_root=")
    other = "float16" if dtype == "float32" else "float32"
    code_other = code.replace(f"disk_dtype={dtype!r}", f"disk_dtype={other!r}")
    procs = [subprocess.Popen([sys.executable, "-c", c], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in (code, code_other)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    for d in (dtype, other):
        check = _store(make_stack(), tmp_path, disk_dtype=d)
        assert all(p.from_cache for p in check.compute())
