"""Fault injection: corrupt files, a full disk, concurrent processes, SIGKILL / SIGINT at random
moments, hostile pickles. Whatever happens, nothing is lost and nothing wrong is served:

- the embedding cache serves features equal to an uninterrupted computation, or recomputes;
- a command either finishes or leaves the previous output untouched (no partial file);
- a checkpoint is loaded, or refused with a `UserError`, never half-trusted or executed.

The random moments and byte positions come from fixed seeds, so a failure reproduces. The disk
is filled on a small tmpfs (Linux, as root; skipped elsewhere).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_focsam.api.models import load_model
from napari_focsam.errors import UserError
from napari_focsam.store import CacheWriteError, EmbeddingStore, StackSource

pytestmark = pytest.mark.faults

FRAMES, HW = 5, (40, 48)
#: The embed command on the interactive model only (quicker than with SAM 2 as well).
EMBED = ["--only", "interactive", "--quiet"]
#: The models of the commands: tiny, seeded random weights (the same in every process).
MODELS = ["--model", "sam_test_tiny", "--weights", "random", "--propagation-model",
          "sam2_test_tiny", "--propagation-weights", "random", "--device", "cpu", "--dtype", "fp32"]


def _stack() -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 40, (FRAMES, *HW)).astype(np.uint16)
    yy, xx = np.mgrid[:HW[0], :HW[1]]
    for t in range(FRAMES):
        data[t][(yy - 18) ** 2 + (xx - 12 - 2 * t) ** 2 <= 36] = 900
    return data


@pytest.fixture(scope="module")
def stack_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "stack.tif"
    tifffile.imwrite(path, _stack(), photometric="minisblack")
    return path


@pytest.fixture(scope="module")
def reference() -> list[dict[str, np.ndarray]]:
    """Features of every frame (interactive model), computed once without any fault."""
    sam = load_model("sam_test_tiny", weights="random", device="cpu", dtype="fp32")
    store = EmbeddingStore(StackSource(_stack(), stack_axis=0), sam.stack_encoder(),
                           cache_root=False)
    return [{k: v.copy() for k, v in store.arrays(i).items()} for i in range(FRAMES)]


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "napari_focsam", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _assert_cache_serves_reference(cache: Path, reference) -> None:
    """Every frame a store on `cache` serves equals the reference (read or recomputed)."""
    sam = load_model("sam_test_tiny", weights="random", device="cpu", dtype="fp32")
    store = EmbeddingStore(StackSource(_stack(), stack_axis=0), sam.stack_encoder(),
                           cache_root=cache)
    for i in range(FRAMES):
        for name, ref in reference[i].items():
            np.testing.assert_array_equal(store.arrays(i)[name], ref, err_msg=f"frame {i}")


# ---------------------------------------------------------------------- kill -9 / Ctrl-C
def test_sigkill_at_random_moments_never_leaves_wrong_features(stack_file, tmp_path, reference):
    cache = tmp_path / "cache"
    rng = np.random.default_rng(1)
    for delay in rng.uniform(1.5, 5.5, size=4):
        proc = _cli("embed", str(stack_file), *MODELS, "--cache-dir", str(cache), *EMBED)
        time.sleep(float(delay))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    _assert_cache_serves_reference(cache, reference)
    final = _cli("embed", str(stack_file), *MODELS, "--cache-dir", str(cache), *EMBED)
    out, err = final.communicate(timeout=180)
    assert final.returncode == 0, err
    _assert_cache_serves_reference(cache, reference)


def test_sigint_leaves_no_output_and_the_old_one_intact(stack_file, tmp_path):
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("object_id,frame,kind,row,col,label,row0,col0,row1,col1\n"
                       "1,3,point,18,18,1,,,,\n")
    out = tmp_path / "labels.tif"
    out.write_bytes(b"previous result")
    rng = np.random.default_rng(2)
    for delay in rng.uniform(2.0, 6.0, size=2):
        proc = _cli("propagate", str(stack_file), *MODELS, "--prompts", str(prompts), "-o",
                    str(out), "--no-cache", "--quiet")
        time.sleep(float(delay))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:  # it finished before the signal: a complete labels file
            assert tifffile.imread(out).shape == (FRAMES, *HW)
            out.write_bytes(b"previous result")
            continue
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        assert out.read_bytes() == b"previous result"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".labels", "labels.tif."))]


def test_sigint_while_the_models_are_imported_exits_130(stack_file, tmp_path):
    """Ctrl-C in the first second (torch and the API being imported: an interrupt inside a
    compiled extension's import used to abort the interpreter, or leave it exiting by SIGINT
    after printing 'interrupted')."""
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("object_id,frame,kind,row,col,label\n1,3,point,18,18,1\n")
    out = tmp_path / "labels.tif"
    for delay in (0.3, 0.6, 0.9, 1.2):
        proc = _cli("propagate", str(stack_file), *MODELS, "--prompts", str(prompts), "-o",
                    str(out), "--no-cache", "--quiet")
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, (delay, err)
        assert err.startswith("napari-focsam: interrupted") and "Traceback" not in err
        assert not out.exists()


# ---------------------------------------------------------------------- concurrent processes
def test_concurrent_commands_on_one_cache(stack_file, tmp_path, reference):
    cache = tmp_path / "cache"
    procs = [_cli("embed", str(stack_file), *MODELS, "--cache-dir", str(cache), *EMBED,
                  *(["--cache-dtype", "float16"] if k == 2 else [])) for k in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    _assert_cache_serves_reference(cache, reference)
    again = _cli("embed", str(stack_file), *MODELS, "--cache-dir", str(cache), "--only",
                 "interactive")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "0 encoded now" in out


# ---------------------------------------------------------------------- corrupt files
def test_random_byte_damage_in_the_cache_is_never_served(tmp_path, reference):
    cache = tmp_path / "cache"
    _assert_cache_serves_reference(cache, reference)  # fills the cache
    files = sorted(p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    rng = np.random.default_rng(3)
    for path in rng.choice(files, size=min(12, len(files)), replace=False):
        data = bytearray(path.read_bytes())
        if not data:
            continue
        if rng.random() < 0.3:
            data = data[: int(rng.integers(0, len(data)))]  # truncated
        else:
            for pos in rng.integers(0, len(data), size=4):
                data[pos] ^= 0xFF  # flipped bytes
        path.write_bytes(bytes(data))
    _assert_cache_serves_reference(cache, reference)


@pytest.mark.parametrize("family, config, layout", [
    ("sam", "sam_test_tiny", lambda sd: sd),
    ("sam2", "sam2_test_tiny", lambda sd: {"model": sd}),
])
def test_damaged_checkpoints_are_refused_as_user_errors(tmp_path, family, config, layout):
    from napari_focsam.families import FAMILIES

    fam = FAMILIES[family]
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    torch.save(layout(fam.build(fam.configs[config]).state_dict()), path)
    data = path.read_bytes()
    rng = np.random.default_rng(4)
    for k in range(8):
        damaged = tmp_path / f"damaged{k}.pt"
        if k % 2:
            damaged.write_bytes(data[: int(rng.integers(1, len(data)))])
        else:
            flipped = bytearray(data)
            for pos in rng.integers(0, len(data), size=16):
                flipped[pos] ^= 0xFF
            damaged.write_bytes(bytes(flipped))
        with contextlib.suppress(UserError):  # loaded (harmless flips) or refused: nothing else
            fam.load(damaged, fam.configs[config])


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "executed"))


@pytest.mark.parametrize("model_id", ["sam_test_tiny", "sam2_test_tiny", "focsam_test_tiny"])
def test_hostile_pickles_are_refused_without_running(tmp_path, model_id):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        pickle.dump({"state_dict": {"backbone.x": torch.zeros(1)}, "model": _Payload(marker),
                     "image_encoder.blocks.0.x": _Payload(marker)}, f, protocol=2)
    with pytest.raises(UserError):
        load_model(model_id, weights=path, device="cpu")
    torch.save({"model": _Payload(marker)}, tmp_path / "evil_zip.pt")
    with pytest.raises(UserError):
        load_model(model_id, weights=tmp_path / "evil_zip.pt", device="cpu")
    assert not marker.exists()


# ---------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MiB tmpfs (root on Linux only): room for two frames of features."""
    mount = tmp_path / "small"
    mount.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_what_was_written(small_disk, reference):
    sam = load_model("sam_test_tiny", weights="random", device="cpu", dtype="fp32")
    store = EmbeddingStore(StackSource(_stack(), stack_axis=0), sam.stack_encoder(),
                           cache_root=small_disk)
    written = []
    with pytest.raises(CacheWriteError, match="disk is full|No space"):
        for progress in store.compute():
            written.append(progress.frame)
    assert 0 < len(written) < FRAMES  # 512 KiB a frame: the disk fills on the way
    fresh = EmbeddingStore(StackSource(_stack(), stack_axis=0), sam.stack_encoder(),
                           cache_root=small_disk)
    for i in written:
        assert fresh.is_cached(i)
        np.testing.assert_array_equal(fresh.arrays(i)["image_embeddings"],
                                      reference[i]["image_embeddings"])


def test_commands_on_a_full_disk_exit_cleanly(small_disk, stack_file, tmp_path):
    proc = _cli("embed", str(stack_file), *MODELS, "--cache-dir", str(small_disk / "cache"),
                *EMBED)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 6 and "Traceback" not in err and "full" in err
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("object_id,frame,kind,row,col,label,row0,col0,row1,col1\n"
                       "1,3,point,18,18,1,,,,\n")
    with contextlib.suppress(OSError):  # fill what is left
        with (small_disk / "filler").open("wb") as f:
            while True:
                f.write(b"\0" * 65536)
    out = small_disk / "labels.tif"
    proc = _cli("segment", str(stack_file), *MODELS, "--prompts", str(prompts), "-o", str(out),
                "--no-cache", "--quiet")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err
    assert not out.exists()
    assert [p.name for p in small_disk.iterdir() if "labels" in p.name] == []
