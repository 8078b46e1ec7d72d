"""Reading FocSAM's released mmengine checkpoint without mmengine: weights, zip archives, unsafe
pickles and bad files.

The checkpoints written here mimic the release: ``meta``, ``state_dict`` in FocSAM's layout,
``message_hub`` (mmengine ``MessageHub`` / ``HistoryBuffer`` objects holding numpy values),
``optimizer`` and ``param_schedulers``. The mmengine classes come from a fake ``mmengine``
package that exists in ``sys.modules`` only while ``torch.save`` runs.
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_focsam.models.checkpoint import CheckpointError
from napari_focsam.models.focsam import (
    FOCSAM_CONFIGS,
    build_focsam,
    focsam_to_sam_state_dict,
    infer_focsam_config,
    load_focsam,
    read_focsam_checkpoint,
    refiner_state_dict,
    sam_to_focsam_state_dict,
)
from napari_focsam.models.sam import SAM_CONFIGS, build_sam

TINY = FOCSAM_CONFIGS["focsam_test_tiny"]
VIT_H = FOCSAM_CONFIGS["focsam_vit_h"]
HTML_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>"
             b"<body>iter_160000.zip is too large for Google to scan for viruses.</body></html>")


# ----------------------------------------------------------------------------- fake mmengine


class _HistoryBuffer:
    """Like ``mmengine.logging.history_buffer.HistoryBuffer`` (pickled as NEWOBJ + BUILD)."""

    def __init__(self, log_history=(), count_history=(), max_length=1000000):
        self.max_length = max_length
        self._log_history = np.asarray(log_history, dtype=np.float64)
        self._count_history = np.asarray(count_history, dtype=np.int64)


class _MessageHub:
    """Like ``mmengine.logging.message_hub.MessageHub``."""

    def __init__(self, name, log_scalars, runtime_info):
        self.instance_name = name
        self._log_scalars = log_scalars
        self._runtime_info = runtime_info
        self._resumed_keys = OrderedDict((k, True) for k in runtime_info)


class _Version:
    """An mmengine object pickled through ``__reduce__`` (GLOBAL + REDUCE)."""

    def __init__(self, text):
        self.text = text

    def __reduce__(self):
        return type(self), (self.text,)


def _register(monkeypatch, module_name: str, **classes: type) -> dict[str, type]:
    """Put a fake module (and its parent packages) in ``sys.modules`` with re-homed classes."""
    parts = module_name.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    module = types.ModuleType(module_name)
    homed = {}
    for name, base in classes.items():
        homed[name] = type(name, (base,), {"__module__": module_name, "__qualname__": name})
        setattr(module, name, homed[name])
    monkeypatch.setitem(sys.modules, module_name, module)
    return homed


def _forget_fake_modules(monkeypatch, *prefixes: str) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        monkeypatch.delitem(sys.modules, name)


def _mmengine_checkpoint(monkeypatch, state_dict, extra=None, **save_kwargs):
    """Pickle-ready factory: returns a writer ``(path) -> path`` run with fake mmengine."""

    def write(path: Path) -> Path:
        hub_mod = _register(monkeypatch, "mmengine.logging.message_hub", MessageHub=_MessageHub)
        buf_mod = _register(monkeypatch, "mmengine.logging.history_buffer",
                            HistoryBuffer=_HistoryBuffer)
        ver_mod = _register(monkeypatch, "mmengine.utils.version_utils", Version=_Version)
        buffer = buf_mod["HistoryBuffer"]
        hub = hub_mod["MessageHub"](
            "focsam",
            OrderedDict(loss=buffer([0.5, 0.25], [1, 1]), lr=buffer([1e-5], [1])),
            {"iter": 160000, "lr": np.float64(1e-5), "best": np.float32(0.9), "done": np.bool_(True),
             "stats": np.arange(6, dtype=np.float32).reshape(2, 3)},
        )
        checkpoint = {
            "meta": {"cfg": "model = dict(type='ClickMixSegmentorRefine')", "seed": np.int64(42),
                     "iter": 160000, "mmengine_version": ver_mod["Version"]("0.10.3")},
            "state_dict": OrderedDict(state_dict),
            "message_hub": hub,
            "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(4)}},
                          "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999), "params": [0]}]},
            "param_schedulers": [{"base_values": [1e-5], "last_step": 160000}],
            **(extra or {}),
        }
        torch.save(checkpoint, path, **save_kwargs)
        _forget_fake_modules(monkeypatch, "mmengine")
        return path

    return write


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_focsam(TINY)


@pytest.fixture(scope="module")
def official(tiny_model):
    """The tiny model's weights in FocSAM's checkpoint layout."""
    return sam_to_focsam_state_dict(tiny_model.sam.state_dict(), tiny_model.refiner.state_dict())


@pytest.fixture
def mm_pth(monkeypatch, official, tmp_path):
    return _mmengine_checkpoint(monkeypatch, official)(tmp_path / "iter_160000.pth")


def _assert_same_weights(loaded, original) -> None:
    for part in ("sam", "refiner"):
        expected = getattr(original, part).state_dict()
        got = getattr(loaded, part).state_dict()
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(got[key], value), f"{part}.{key}"


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


# ----------------------------------------------------------------------------- key mapping


def test_sam_to_focsam_keys_round_trip(tiny_model, official):
    sam_sd, ref_sd = tiny_model.sam.state_dict(), tiny_model.refiner.state_dict()
    assert len(official) == len(sam_sd) + len(ref_sd)
    assert all(k.startswith(("backbone.", "neck.", "decode_head.", "refine_head.")) for k in official)
    assert any(k.startswith("neck.pos_embed_layer.") for k in official)
    assert any(k.startswith("neck.point_embeds.") for k in official)
    assert not any(".pe_layer." in k or ".point_embeddings." in k for k in official)
    back = focsam_to_sam_state_dict(official)
    assert back.keys() == sam_sd.keys() and all(torch.equal(back[k], sam_sd[k]) for k in sam_sd)
    assert refiner_state_dict(official).keys() == ref_sd.keys()
    assert sam_to_focsam_state_dict(back, refiner_state_dict(official)).keys() == official.keys()


# ----------------------------------------------------------------------------- good files


@pytest.mark.parametrize("legacy", [False, True], ids=["zip-format", "legacy-format"])
def test_mmengine_checkpoint_loads_exact_weights(monkeypatch, official, tiny_model, tmp_path, legacy):
    path = _mmengine_checkpoint(monkeypatch, official, _use_new_zipfile_serialization=not legacy)(
        tmp_path / "iter_160000.pth")
    assert "mmengine" not in sys.modules
    state_dict = read_focsam_checkpoint(path)
    assert state_dict.keys() == official.keys()
    model = load_focsam(path, TINY)
    _assert_same_weights(model, tiny_model)
    assert not model.training
    assert "mmengine" not in sys.modules  # stand-ins only, nothing imported


def test_plain_and_bare_state_dicts_load(official, tiny_model, tmp_path):
    wrapped, bare = tmp_path / "wrapped.pth", tmp_path / "bare.pth"
    torch.save({"state_dict": official}, wrapped)
    torch.save(official, bare)
    for path in (wrapped, bare):
        _assert_same_weights(load_focsam(path, TINY), tiny_model)


def test_zip_archive_with_folder(mm_pth, tiny_model, tmp_path):
    archive = _zip(tmp_path / "focsam.zip", {
        "focsam_release/README.md": b"FocSAM weights",
        "__MACOSX/focsam_release/._iter_160000.pth": b"\x00\x05\x16\x07 resource fork",
        "focsam_release/iter_160000.pth": mm_pth.read_bytes(),
    })
    mm_pth.unlink()
    model = load_focsam(archive, TINY)
    _assert_same_weights(model, tiny_model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["focsam.zip"]  # temp files removed


def test_zip_prefers_released_checkpoint(mm_pth, official, tmp_path):
    archive = _zip(tmp_path / "two.zip", {"work_dirs/iter_80000.pth": b"not even a checkpoint",
                                          "work_dirs/iter_160000.pth": mm_pth.read_bytes()})
    assert read_focsam_checkpoint(archive).keys() == official.keys()


def test_zip_with_several_other_checkpoints(mm_pth, tmp_path):
    archive = _zip(tmp_path / "two.zip", {"a/iter_40000.pth": mm_pth.read_bytes(),
                                          "a/iter_80000.pth": mm_pth.read_bytes()})
    with pytest.raises(CheckpointError, match=r"several checkpoints.*a/iter_40000\.pth.*a/iter_80000"):
        read_focsam_checkpoint(archive)


# ----------------------------------------------------------------------------- unsafe pickles


def _write_marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _lookalike_function(path):  # becomes mmengine_plugins.create_marker
    Path(path).touch()


EVIL_CALLS = {
    "os.system": lambda m: (os.system, (f"touch {m}",)),
    "builtins.exec": lambda m: (builtins.exec, (_write_marker_code(m),)),
    "subprocess.check_call": lambda m: (subprocess.check_call,
                                        ([sys.executable, "-c", _write_marker_code(m)],)),
    "mmengine-lookalike": lambda m: (sys.modules["mmengine_plugins"].create_marker, (str(m),)),
}


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("evil", sorted(EVIL_CALLS))
def test_forbidden_global_is_refused_and_not_run(monkeypatch, official, tmp_path, evil, protocol):
    marker = tmp_path / "pwned"
    module = types.ModuleType("mmengine_plugins")
    _lookalike_function.__module__, _lookalike_function.__qualname__ = "mmengine_plugins", "create_marker"
    module.create_marker = _lookalike_function
    monkeypatch.setitem(sys.modules, "mmengine_plugins", module)
    func, args = EVIL_CALLS[evil](marker)

    class Evil:
        def __reduce__(self):
            return func, args

    path = _mmengine_checkpoint(monkeypatch, official, {"hook": [Evil()]}, pickle_protocol=protocol)(
        tmp_path / "evil.pth")
    monkeypatch.delitem(sys.modules, "mmengine_plugins")
    name = f"{func.__module__}.{func.__qualname__}"
    with pytest.raises(CheckpointError, match=rf"not allowed: {name}\..*nothing in it was executed"):
        read_focsam_checkpoint(path)
    archive = _zip(tmp_path / "evil.zip", {"focsam/iter_160000.pth": path.read_bytes()})
    with pytest.raises(CheckpointError, match=rf"evil\.zip:focsam/iter_160000\.pth refers to.*{name}"):
        read_focsam_checkpoint(archive)
    assert not marker.exists()


# ----------------------------------------------------------------------------- bad files


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_focsam_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_focsam_checkpoint(tmp_path / "empty.pth")


@pytest.mark.parametrize("kind", ["zip-format", "legacy-format", "zip-archive"])
def test_truncated_download(monkeypatch, official, tmp_path, kind):
    path = _mmengine_checkpoint(monkeypatch, official,
                                _use_new_zipfile_serialization=kind != "legacy-format")(
        tmp_path / "full.pth")
    if kind == "zip-archive":
        path = _zip(tmp_path / "full.zip", {"focsam/iter_160000.pth": path.read_bytes()})
    data = path.read_bytes()
    cut = tmp_path / f"cut{path.suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_focsam_checkpoint(cut)


def test_html_page_instead_of_file(tmp_path):
    for name in ("iter_160000.pth", "focsam.zip"):
        (tmp_path / name).write_bytes(HTML_PAGE)
        with pytest.raises(CheckpointError, match="HTML.*Google Drive"):
            read_focsam_checkpoint(tmp_path / name)
    inner = _zip(tmp_path / "inner.zip", {"focsam/iter_160000.pth": HTML_PAGE})
    with pytest.raises(CheckpointError, match="inner.zip:focsam/iter_160000.pth .*HTML"):
        read_focsam_checkpoint(inner)


def test_zip_without_checkpoint(tmp_path):
    archive = _zip(tmp_path / "docs.zip", {"focsam/README.md": b"weights: see Google Drive"})
    with pytest.raises(CheckpointError, match=r"without a \.pth.*focsam/README\.md"):
        read_focsam_checkpoint(archive)


def test_other_model_families(tmp_path):
    sam1 = tmp_path / "sam_vit_b.pth"
    torch.save(build_sam(SAM_CONFIGS["sam_test_tiny"]).state_dict(), sam1)
    with pytest.raises(CheckpointError, match="is a SAM 1 .*expected a FocSAM"):
        read_focsam_checkpoint(sam1)
    sam2 = tmp_path / "sam2.pt"
    torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(2)}}, sam2)
    with pytest.raises(CheckpointError, match="is a SAM 2 .*expected a FocSAM"):
        read_focsam_checkpoint(sam2)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}, "meta": {}}, other)
    with pytest.raises(CheckpointError, match="no known model family"):
        read_focsam_checkpoint(other)


def test_no_state_dict(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"meta": {"iter": 1}, "model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=r"no 'state_dict' entry \(top-level keys: meta, model\)"):
        read_focsam_checkpoint(path)


# ----------------------------------------------------------------------------- configs


def test_infer_config():
    with torch.device("meta"):
        vit_h = build_focsam(VIT_H)
    official = sam_to_focsam_state_dict(vit_h.sam.state_dict(), vit_h.refiner.state_dict())
    assert infer_focsam_config(official) is VIT_H
    tiny = build_focsam(TINY)
    assert infer_focsam_config(sam_to_focsam_state_dict(tiny.sam.state_dict())) is None
    assert infer_focsam_config({}) is None


def test_config_mismatch_names_released_config(official, tmp_path):
    # ViT-H shaped where the config is inferred from (pos_embed width, 32 blocks), tiny elsewhere;
    # the expanded pos_embed stores a single float.
    fake = dict(official)
    fake["backbone.pos_embed"] = torch.zeros(1).expand(1, 64, 64, 1280)
    fake.update({f"backbone.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(32)})
    path = tmp_path / "vit_h_like.pth"
    torch.save({"state_dict": fake}, path)
    expected = r"does not fit.*config focsam_test_tiny.*looks like focsam_vit_h"
    with pytest.raises(CheckpointError, match=expected):
        load_focsam(path, TINY)


def test_unreleased_size_needs_a_config(mm_pth):
    with pytest.raises(CheckpointError, match="no released size.*pass its config"):
        load_focsam(mm_pth)



def test_mmengine_objects_become_inert_stand_ins(mm_pth):
    from napari_focsam.models.checkpoint import load_torch_file
    from napari_focsam.models.focsam.loading import STUBBED_PACKAGES
    from napari_focsam.models.safe_pickle import InertStub

    loaded = load_torch_file(mm_pth, stubbed_packages=STUBBED_PACKAGES)
    hub = loaded["message_hub"]
    assert isinstance(hub, InertStub)
    assert (type(hub).__module__, type(hub).__qualname__) == ("mmengine.logging.message_hub",
                                                              "MessageHub")
    loss = hub.pickled_state["_log_scalars"]["loss"]
    assert isinstance(loss, InertStub) and "HistoryBuffer" in repr(loss)
    np.testing.assert_array_equal(loss.pickled_state["_log_history"], [0.5, 0.25])
    info = hub.pickled_state["_runtime_info"]
    assert info["lr"] == np.float64(1e-5) and info["stats"].shape == (2, 3)
    assert loaded["meta"]["mmengine_version"].pickled_args == ("0.10.3",)


def test_numpy_1_names_are_read(monkeypatch, official, tmp_path):
    # numpy 1.x pickles numpy.core.multiarray.*, numpy 2 numpy._core.multiarray.* (same functions).
    path = _mmengine_checkpoint(monkeypatch, official, _use_new_zipfile_serialization=False)(
        tmp_path / "np1.pth")
    data = path.read_bytes()
    assert b"cnumpy._core.multiarray\n" in data
    path.write_bytes(data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    assert read_focsam_checkpoint(path).keys() == official.keys()
