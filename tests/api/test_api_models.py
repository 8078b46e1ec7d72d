"""Model choice of the headless API: ids, roles, checkpoints, offline registry models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from api_helpers import save_tiny_checkpoints

from napari_focsam.api.models import RANDOM_WEIGHTS, load_model
from napari_focsam.families import ModelChoiceError, WeightSpec, family_of
from napari_focsam.models.checkpoint import CheckpointError
from napari_focsam.models.sam import SAM_CONFIGS, build_sam
from napari_focsam.weights import WEIGHTS, WeightsNotAvailableError


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return save_tiny_checkpoints(tmp_path_factory.mktemp("ckpt"))


@pytest.mark.parametrize(("model_id", "family"), [
    ("sam_vit_b", "sam"), ("sam2.1_hiera_tiny", "sam2"), ("sam2_hiera_large", "sam2"),
    ("focsam_vit_h", "focsam"), ("sam_test_tiny", "sam"), ("sam2_test_tiny", "sam2"),
    ("focsam_test_tiny", "focsam"),
])
def test_family_of(model_id, family):
    assert family_of(model_id).name == family


def test_unknown_model_suggests_the_closest_id():
    with pytest.raises(ModelChoiceError, match="unknown model 'sam2_test_tiy'. Did you mean "
                                               "'sam2_test_tiny'"):
        family_of("sam2_test_tiy")
    with pytest.raises(ModelChoiceError, match="Known models: .*sam_vit_b"):
        load_model("zzz", weights=RANDOM_WEIGHTS)


def test_role_checks():
    with pytest.raises(ModelChoiceError, match=r"'sam_test_tiny' \(sam\) cannot be the propagation model"):
        load_model("sam_test_tiny", weights=RANDOM_WEIGHTS, role="propagation")
    with pytest.raises(ModelChoiceError, match="cannot be the propagation model"):
        load_model("focsam_vit_h", role="propagation")  # refused before any download
    with pytest.raises(ModelChoiceError, match="role must be"):
        load_model("sam2_test_tiny", weights=RANDOM_WEIGHTS, role="tracking")


def test_config_name_needs_weights():
    with pytest.raises(ModelChoiceError, match="config name without a released checkpoint"):
        load_model("sam2_test_tiny")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("sam_test_tiny", weights=tmp_path / "nope.pth")


def test_registry_model_offline_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsNotAvailableError, match="offline"):
        load_model("sam2.1_hiera_tiny", offline=True, device="cpu")
    assert list(tmp_path.iterdir()) == []  # nothing downloaded


def test_random_weights_are_seeded_and_not_shared():
    a = load_model("sam2_test_tiny", weights=RANDOM_WEIGHTS, device="cpu", dtype="fp32", seed=3)
    b = load_model("sam2_test_tiny", weights=RANDOM_WEIGHTS, device="cpu", dtype="fp32", seed=3)
    assert (a.family.name, a.weights, a.dtype, a.device.type) == ("sam2", "random", torch.float32, "cpu")
    assert not a.net.training
    for (name, x), (_, y) in zip(a.net.state_dict().items(), b.net.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_random_weights_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("sam_test_tiny", weights=RANDOM_WEIGHTS, device="cpu", dtype="fp32", seed=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(("model_id", "kind"), [("sam_test_tiny", "sam"), ("sam2_test_tiny", "sam2")])
def test_local_checkpoint_of_a_config_name(checkpoints, model_id, kind):
    loaded = load_model(model_id, weights=checkpoints[kind], device="cpu", dtype="fp32",
                        role="interactive")
    saved = torch.load(checkpoints[kind], weights_only=True)
    saved = saved["model"] if kind == "sam2" else saved
    state = loaded.net.state_dict()
    assert state.keys() == saved.keys()
    for name, value in saved.items():
        assert torch.equal(state[name], value), name
    assert loaded.weights == str(checkpoints[kind]) and loaded.family.name == kind
    assert not loaded.net.training


def test_checkpoint_of_another_family(checkpoints):
    with pytest.raises(CheckpointError, match="SAM 2"):
        load_model("sam_test_tiny", weights=checkpoints["sam2"], device="cpu")
    with pytest.raises(CheckpointError):
        load_model("sam2_test_tiny", weights=checkpoints["sam"], device="cpu")


def _fine_tune(path: Path, seed: int, transform=None) -> Path:
    """A 'fine-tuned' sam_test_tiny checkpoint: other weights of the same architecture."""
    torch.manual_seed(seed)
    state = build_sam(SAM_CONFIGS["sam_test_tiny"]).state_dict()
    if transform is not None:
        state = {k: transform(k, v) for k, v in state.items()}
    torch.save(state, path)
    return path


@pytest.fixture
def released_tiny(monkeypatch):
    """A registry entry whose published hash is that of some official file (not ours)."""
    spec = WeightSpec("tiny_released", "sam", "sam_test_tiny", "tiny.pth", "http://unused/tiny.pth",
                      "0" * 64)
    monkeypatch.setitem(WEIGHTS, spec.id, spec)
    return spec


def test_fine_tuned_local_weights_of_a_registry_model_load(released_tiny, tmp_path):
    a = load_model("tiny_released", weights=_fine_tune(tmp_path / "lab_a.pth", 1), device="cpu",
                   dtype="fp32")
    b = load_model("tiny_released", weights=_fine_tune(tmp_path / "lab_b.pth", 2), device="cpu",
                   dtype="fp32")
    assert a.weights_id != b.weights_id and len(a.weights_id) == 64
    # different weights never share embedding-cache entries
    assert a.stack_encoder().model_id != b.stack_encoder().model_id
    again = load_model("tiny_released", weights=tmp_path / "lab_a.pth", device="cpu", dtype="fp32")
    assert again.stack_encoder().model_id == a.stack_encoder().model_id


def test_broken_weights_are_refused_and_odd_ones_warned(released_tiny, tmp_path, caplog):
    nan = _fine_tune(tmp_path / "nan.pth", 1,
                     lambda k, v: v.fill_(float("nan")) if k.endswith("qkv.weight") else v)
    with pytest.raises(CheckpointError, match="NaN or infinite values in 2 tensors"):
        load_model("tiny_released", weights=nan, device="cpu")
    ints = _fine_tune(tmp_path / "int.pth", 1,
                      lambda k, v: v.round().to(torch.int64) if k.endswith("qkv.bias") else v)
    with caplog.at_level("WARNING"):
        load_model("tiny_released", weights=ints, device="cpu")
    assert "as integers" in caplog.text and "qkv.bias" in caplog.text
