"""SAM checkpoints of any architecture and layout: configs told from tensor shapes, and
torch_em / micro-sam training checkpoints read without running their code.

The torch_em checkpoints written here mimic ``DefaultTrainer.save_checkpoint``: ``model_state``
(micro-sam's trainable SAM, keys ``sam.*``), ``optimizer_state``, ``scheduler_state``,
``scaler_state``, ``init`` (trainer arguments: class names, pickled datasets and loss objects of
torch_em / micro-sam classes) and numpy metrics. The torch_em and micro_sam classes come from
fake packages that exist in ``sys.modules`` only while ``torch.save`` runs.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_focsam.families import SAM, detect_family
from napari_focsam.models.checkpoint import (
    CheckpointError,
    ConfigNotInferredError,
    read_checkpoint,
)
from napari_focsam.models.safe_pickle import InertStub
from napari_focsam.models.sam import (
    SAM_CONFIGS,
    MaskDecoderConfig,
    SamConfig,
    TinyViTConfig,
    ViTEncoderConfig,
    build_sam,
    derive_sam_config,
    infer_sam_config,
    is_sam_checkpoint,
    load_sam,
    sam_state_dict,
)
from napari_focsam.models.sam.tiny_vit import attention_bias_index

#: Custom sizes no released config has (every field the shapes can tell differs somewhere).
CUSTOM_VIT = SamConfig(
    name="custom_vit",
    encoder=ViTEncoderConfig(embed_dim=48, depth=3, num_heads=3, global_attn_indexes=(0, 2),
                             out_chans=24, image_size=512, patch_size=8, window_size=5,
                             mlp_ratio=3.0),
    decoder=MaskDecoderConfig(transformer_dim=24, depth=1, num_heads=8, mlp_dim=40,
                              attention_downsample_rate=3, num_multimask_outputs=2,
                              iou_head_depth=2, iou_head_hidden_dim=20),
    mask_in_chans=12,
)
CUSTOM_TINYVIT = SamConfig(
    name="custom_tinyvit",
    encoder=TinyViTConfig(embed_dims=(12, 20, 28), depths=(1, 2, 1), num_heads=(2, 2, 4),
                          window_sizes=(7, 5, 9), merge_strides=(2, 2), out_chans=16,
                          mlp_ratio=2.0, mbconv_expand_ratio=3.0, local_conv_size=5,
                          num_classes=3),
    decoder=MaskDecoderConfig(transformer_dim=16, depth=2, num_heads=8, mlp_dim=32,
                              iou_head_hidden_dim=16),
    mask_in_chans=8,
)


def _meta_state(cfg: SamConfig) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return build_sam(cfg).state_dict()


def _perturbed(cfg: SamConfig, seed: int) -> dict[str, torch.Tensor]:
    """A 'fine-tuned' checkpoint: random weights of `cfg`, nudged away from their init."""
    gen = torch.Generator().manual_seed(seed)
    state = build_sam(cfg).state_dict()
    return {k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in state.items()}


def _assert_weights(model, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert got.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(got[key], value), key


# ----------------------------------------------------------------------------- fake torch_em


class _Dataset:
    """Like ``torch_em.data.segmentation_dataset.SegmentationDataset`` (NEWOBJ + BUILD)."""

    def __init__(self, raw_path, patch_shape):
        self.raw_path = raw_path
        self.patch_shape = patch_shape
        self.n_samples = np.int64(100)
        self.mean_intensity = np.float32(0.5)
        self.roi_shape = np.array([512, 512])


class _Loss:
    """Like ``micro_sam.training.joint_sam_trainer`` losses (a torch_em DiceLoss inside)."""

    def __init__(self, inner):
        self.inner = inner
        self.init_kwargs = {"eps": 1e-7}


class _Dice:
    def __init__(self):
        self.eps = 1e-7


class _Function:
    """A pickled torch_em function reference, e.g. a raw transform (GLOBAL + REDUCE)."""

    def __reduce__(self):
        return sys.modules["torch_em.transform.raw"].normalize, ("percentile",)


def _normalize(kind):  # becomes torch_em.transform.raw.normalize
    raise AssertionError("must never run")


def _register(monkeypatch, module_name: str, **members) -> dict:
    """Put a fake module (and its parents) in ``sys.modules`` with re-homed classes/functions."""
    parts = module_name.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    module = types.ModuleType(module_name)
    homed = {}
    for name, member in members.items():
        if isinstance(member, type):
            homed[name] = type(name, (member,), {"__module__": module_name, "__qualname__": name})
        else:
            homed[name] = member
            monkeypatch.setattr(member, "__module__", module_name)
            monkeypatch.setattr(member, "__qualname__", name)
        setattr(module, name, homed[name])
    monkeypatch.setitem(sys.modules, module_name, module)
    return homed


def _forget(monkeypatch, *packages: str) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in packages]:
        monkeypatch.delitem(sys.modules, name)


def _torch_em_checkpoint(monkeypatch, path: Path, state: dict[str, torch.Tensor],
                         prefix: str = "sam.", extra: dict | None = None, **save_kwargs) -> Path:
    """Write ``state`` as micro-sam's torch_em training checkpoint with fake pickled objects."""
    data = _register(monkeypatch, "torch_em.data.segmentation_dataset",
                     SegmentationDataset=_Dataset)
    dice = _register(monkeypatch, "torch_em.loss.dice", DiceLoss=_Dice)
    loss = _register(monkeypatch, "micro_sam.training.joint_sam_trainer", CombinedLoss=_Loss)
    _register(monkeypatch, "torch_em.transform.raw", normalize=_normalize)
    params = list(range(4))
    checkpoint = {
        "iteration": 2500, "epoch": 10, "best_epoch": 9,
        "best_metric": np.float64(0.123), "current_metric": np.float32(0.2),
        "model_state": OrderedDict((prefix + k, v) for k, v in state.items()),
        "optimizer_state": {"state": {i: {"step": torch.tensor(5.0), "exp_avg": torch.ones(3)}
                                      for i in params},
                            "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999),
                                              "params": params}]},
        "scheduler_state": {"mode": "min", "best": float("inf"), "_last_lr": [1e-5]},
        "scaler_state": {"scale": 65536.0, "growth_factor": 2.0},
        "init": {
            "model_class": "micro_sam.training.trainable_sam.TrainableSAM",
            "model_kwargs": {},
            "train_dataset": data["SegmentationDataset"]("/data/raw.h5", (1, 512, 512)),
            "loss": loss["CombinedLoss"](dice["DiceLoss"]()),
            "raw_transform": _Function(),
            "device": "cuda",
        },
        "train_time": 1234.5, "timestamp": "01-01-2026 (00:00:00)",
        **(extra or {}),
    }
    torch.save(checkpoint, path, **save_kwargs)
    _forget(monkeypatch, "torch_em", "micro_sam")
    return path


# ----------------------------------------------------------------------------- config inference


@pytest.mark.parametrize("name", sorted(SAM_CONFIGS))
def test_every_named_config_is_told_from_its_shapes(name):
    assert derive_sam_config(_meta_state(SAM_CONFIGS[name])) is SAM_CONFIGS[name]


@pytest.mark.parametrize("cfg", [CUSTOM_VIT, CUSTOM_TINYVIT], ids=lambda c: c.name)
def test_unreleased_sizes_are_told_from_their_shapes(cfg):
    derived = derive_sam_config(_meta_state(cfg))
    assert dataclasses.replace(derived, name=cfg.name) == cfg
    assert derived.name.startswith(("sam_vit_", "sam_tinyvit_"))


def test_unreleased_sizes_load_without_a_config(tmp_path):
    for cfg in (CUSTOM_VIT, CUSTOM_TINYVIT):
        state = _perturbed(cfg, 1)
        path = tmp_path / f"{cfg.name}.pth"
        torch.save(state, path)
        model = load_sam(path)
        assert dataclasses.replace(model.config, name=cfg.name) == cfg
        _assert_weights(model, state)


def test_defaults_for_what_shapes_cannot_tell():
    """Decoder heads (8 when they fit, else fewer) and epsilons are not in the weights."""
    cfg = dataclasses.replace(
        CUSTOM_VIT, decoder=dataclasses.replace(CUSTOM_VIT.decoder, transformer_dim=20, num_heads=5,
                                                attention_downsample_rate=2),
        encoder=dataclasses.replace(CUSTOM_VIT.encoder, out_chans=20, norm_eps=1e-5))
    derived = derive_sam_config(_meta_state(cfg))
    assert derived.decoder.num_heads == 5  # 8 does not divide 20 and 10
    assert derived.encoder.norm_eps == 1e-6


def _edited(cfg: SamConfig, **changes) -> dict[str, torch.Tensor]:
    state = dict(_meta_state(cfg))
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del state[key]
        else:
            state[key] = torch.empty(value, device="meta")
    return state


@pytest.mark.parametrize("state, match", [
    (lambda: _edited(SAM_CONFIGS["sam_test_tiny"], mask_decoder__iou_token__weight=None),
     "mask_decoder.iou_token.weight is missing"),
    (lambda: _edited(SAM_CONFIGS["sam_test_tiny"], mask_decoder__iou_token__weight=(1, 48),
                     mask_decoder__mask_tokens__weight=(4, 48)), "encoder output 32 != decoder"),
    (lambda: _edited(SAM_CONFIGS["sam_test_tiny"],
                     image_encoder__blocks__1__attn__rel_pos_h=(127, 8),
                     image_encoder__blocks__1__attn__rel_pos_w=(127, 8)), "head widths"),
    (lambda: _edited(SAM_CONFIGS["sam_test_tiny"], image_encoder__blocks__0__attn__rel_pos_h=None),
     "only some blocks"),
    (lambda: _edited(SAM_CONFIGS["sam_test_tinyvit"],
                     image_encoder__layers__1__blocks__0__attn__attention_biases=(1, 50)),
     "not a square"),
    (lambda: {k: v for k, v in _meta_state(CUSTOM_VIT).items() if ".blocks.1." not in k},
     r"has no modules \[1\]"),
], ids=["missing", "widths", "heads", "rel-pos", "biases", "gap"])
def test_incomplete_or_contradictory_shapes(state, match):
    with pytest.raises(ConfigNotInferredError, match=match):
        derive_sam_config(state())
    assert infer_sam_config(state()) is None


def test_unreadable_config_without_config_argument(tmp_path):
    state = build_sam(SAM_CONFIGS["sam_test_tiny"]).state_dict()
    state["mask_decoder.mask_tokens.weight"] = torch.zeros(4, 48)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ConfigNotInferredError, match="broken.pth: the SAM config cannot be told"):
        load_sam(path)
    with pytest.raises(CheckpointError, match="shape mismatches.*mask_tokens"):
        load_sam(path, SAM_CONFIGS["sam_test_tiny"])


def test_wrong_config_names_the_one_the_file_fits(tmp_path):
    path = tmp_path / "tinyvit.pth"
    torch.save(build_sam(SAM_CONFIGS["sam_test_tinyvit"]).state_dict(), path)
    with pytest.raises(CheckpointError, match="config sam_test_tiny.*looks like sam_test_tinyvit"):
        load_sam(path, SAM_CONFIGS["sam_test_tiny"])


# ----------------------------------------------------------------------------- torch_em files


@pytest.mark.parametrize("name", ["sam_test_tiny", "sam_test_tinyvit"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip-format", "legacy-format"])
def test_torch_em_checkpoint_of_tiny_models_loads(monkeypatch, tmp_path, name, legacy):
    state = _perturbed(SAM_CONFIGS[name], 2)
    path = _torch_em_checkpoint(monkeypatch, tmp_path / "best.pt", state,
                                _use_new_zipfile_serialization=not legacy)
    assert "torch_em" not in sys.modules and "micro_sam" not in sys.modules
    obj = read_checkpoint(path)
    assert is_sam_checkpoint(obj) and detect_family(obj) is SAM
    model = load_sam(path)
    assert model.config is SAM_CONFIGS[name]
    _assert_weights(model, state)
    assert not model.training
    assert "torch_em" not in sys.modules and "micro_sam" not in sys.modules  # nothing imported


def test_torch_em_checkpoint_of_released_vit_b_loads(monkeypatch, tmp_path):
    """A real-size fine-tuned ViT-B in micro-sam's training format, config told from it."""
    state = _perturbed(SAM_CONFIGS["sam_vit_b"], 3)
    path = _torch_em_checkpoint(monkeypatch, tmp_path / "vit_b_lm.pt", state)
    model = SAM.load(path, None, device="cpu")
    assert model.config is SAM_CONFIGS["sam_vit_b"]
    _assert_weights(model, state)


def test_torch_em_checkpoint_of_released_vit_t_loads(monkeypatch, tmp_path):
    state = _perturbed(SAM_CONFIGS["sam_vit_t"], 4)
    path = _torch_em_checkpoint(monkeypatch, tmp_path / "vit_t_lm.pt", state)
    model = load_sam(path)
    assert model.config is SAM_CONFIGS["sam_vit_t"]
    _assert_weights(model, state)


@pytest.mark.parametrize("name", ["sam_vit_l", "sam_vit_h"])
def test_torch_em_layout_of_large_models_is_told_from_shapes(name):
    """ViT-L/H in torch_em's layout, shapes only (meta tensors): unwrapped and recognised."""
    checkpoint = {"model_state": {f"sam.{k}": v for k, v in _meta_state(SAM_CONFIGS[name]).items()},
                  "optimizer_state": {}, "iteration": 1}
    assert is_sam_checkpoint(checkpoint)
    assert derive_sam_config(sam_state_dict(checkpoint)) is SAM_CONFIGS[name]


@pytest.mark.parametrize("prefix", ["", "sam.", "module.sam.", "_orig_mod.", "module."])
def test_wrapper_prefixes_are_stripped(tmp_path, prefix):
    cfg = SAM_CONFIGS["sam_test_tinyvit"]
    state = _perturbed(cfg, 5)
    path = tmp_path / "plain.pt"
    torch.save({prefix + k: v for k, v in state.items()}, path)
    model = load_sam(path)
    assert model.config is cfg
    _assert_weights(model, state)


def test_stored_attention_bias_index_buffers(tmp_path):
    cfg = SAM_CONFIGS["sam_test_tinyvit"]
    state = _perturbed(cfg, 6)
    idx_keys = {k.replace("attention_biases", "attention_bias_idxs"): attention_bias_index(
        int(v.shape[1] ** 0.5)) for k, v in state.items() if k.endswith("attention_biases")}
    path = tmp_path / "with_idxs.pt"
    torch.save({**state, **idx_keys}, path)
    _assert_weights(load_sam(path), state)
    wrong = {k: v.flip(0) for k, v in idx_keys.items()}
    torch.save({**state, **wrong}, path)
    with pytest.raises(CheckpointError, match="attention_bias_idxs .* not TinyViT's"):
        load_sam(path)


def test_torch_em_objects_are_inert_stand_ins(monkeypatch, tmp_path):
    state = build_sam(SAM_CONFIGS["sam_test_tiny"]).state_dict()
    path = _torch_em_checkpoint(monkeypatch, tmp_path / "best.pt", state)
    obj = read_checkpoint(path)
    init = obj["init"]
    dataset = init["train_dataset"]
    assert isinstance(dataset, InertStub)
    assert (type(dataset).__module__, type(dataset).__qualname__) == (
        "torch_em.data.segmentation_dataset", "SegmentationDataset")
    assert dataset.pickled_state["raw_path"] == "/data/raw.h5"
    assert dataset.pickled_state["n_samples"] == 100
    assert isinstance(init["loss"].pickled_state["inner"], InertStub)
    assert isinstance(init["raw_transform"], InertStub)  # the function was never called
    assert init["raw_transform"].pickled_args == ("percentile",)
    assert obj["best_metric"] == np.float64(0.123)


def _touch(path):  # becomes torch_em_plugins.create_marker: a name outside the stubbed packages
    Path(path).touch()


EVIL_CALLS = {
    "os.system": lambda m: (os.system, (f"touch {m}",)),
    "builtins.exec": lambda m: (builtins.exec, (f"open({str(m)!r}, 'w').close()",)),
    "lookalike": lambda m: (sys.modules["torch_em_plugins"].create_marker, (str(m),)),
}


@pytest.mark.parametrize("evil", sorted(EVIL_CALLS))
def test_hostile_pickle_in_torch_em_file_is_refused_and_not_run(monkeypatch, tmp_path, evil):
    marker = tmp_path / "pwned"
    _register(monkeypatch, "torch_em_plugins", create_marker=_touch)
    func, args = EVIL_CALLS[evil](marker)

    class Evil:
        def __reduce__(self):
            return func, args

    state = build_sam(SAM_CONFIGS["sam_test_tiny"]).state_dict()
    path = _torch_em_checkpoint(monkeypatch, tmp_path / "evil.pt", state,
                                extra={"init": {"train_dataset": [Evil()]}})
    _forget(monkeypatch, "torch_em_plugins")
    name = f"{func.__module__}.{func.__qualname__}"
    with pytest.raises(CheckpointError, match=rf"not allowed: {name}\..*nothing in it was executed"):
        load_sam(path)
    with pytest.raises(CheckpointError, match="not allowed"):
        read_checkpoint(path)
    assert not marker.exists()


def test_torch_em_class_cannot_smuggle_a_call(monkeypatch, tmp_path):
    """A stubbed torch_em name used as the callable of a REDUCE only builds a stand-in."""
    marker = tmp_path / "pwned"
    homed = _register(monkeypatch, "torch_em.util", run=_touch)

    class Smuggler:
        def __reduce__(self):
            return homed["run"], (str(marker),)

    state = build_sam(SAM_CONFIGS["sam_test_tiny"]).state_dict()
    path = _torch_em_checkpoint(monkeypatch, tmp_path / "smuggle.pt", state,
                                extra={"hook": Smuggler()})
    obj = read_checkpoint(path)
    assert isinstance(obj["hook"], InertStub) and obj["hook"].pickled_args == (str(marker),)
    assert not marker.exists()


def test_training_checkpoint_without_sam_weights(monkeypatch, tmp_path):
    path = _torch_em_checkpoint(monkeypatch, tmp_path / "unet.pt",
                                {"encoder.0.weight": torch.zeros(2)}, prefix="")
    obj = read_checkpoint(path)
    assert not is_sam_checkpoint(obj) and detect_family(obj) is None
    with pytest.raises(CheckpointError, match="no known model family"):
        load_sam(path)


def test_non_tensor_entries_in_model_state():
    with pytest.raises(CheckpointError, match="not tensors: 'sam.note'"):
        sam_state_dict({"model_state": {"sam.note": "hello", "sam.w": torch.zeros(1)}}, "f.pt")
