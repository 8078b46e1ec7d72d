"""Loading SAM 2 / 2.1 checkpoints: synthetic files in both official layouts.

Real released tiny models (random weights, 39 M parameters) are saved as ``{"model": sd}`` like
the official ``sam2*_hiera_tiny.pt`` files and loaded back with every key and shape checked.
Config inference over all eight released configs works on meta-device state_dicts (keys and
shapes without memory).
"""

from __future__ import annotations

import pytest
import torch

from napari_focsam.families import SAM2, detect_family
from napari_focsam.models.checkpoint import CheckpointError
from napari_focsam.models.sam2.config import SAM2_CONFIGS, released_sam2_config
from napari_focsam.models.sam2.loading import (
    SAM21_ONLY_KEYS,
    infer_sam2_config,
    load_sam2,
    sam2_state_dict,
)
from napari_focsam.models.sam2.model import Sam2Model

RELEASED = [name for name in SAM2_CONFIGS if name != "sam2_test_tiny"]
TEST_TINY = SAM2_CONFIGS["sam2_test_tiny"]
#: sam2_test_tiny with the SAM 2.0 flags (no 2.1-only parameters).
TEST_TINY_20 = TEST_TINY.replace(name="sam2_test_tiny_20", no_obj_embed_spatial=False,
                                 proj_tpos_enc_in_obj_ptrs=False,
                                 use_signed_tpos_enc_to_obj_ptrs=False,
                                 add_tpos_enc_to_obj_ptrs=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _meta_state_dict(name: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return Sam2Model(SAM2_CONFIGS[name]).state_dict()


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """Random-weight released tiny models (2.0 and 2.1) saved in the official layout."""
    folder = tmp_path_factory.mktemp("sam2_ckpt")
    out = {}
    for seed, name in enumerate(("sam2_hiera_tiny", "sam2.1_hiera_tiny")):
        torch.manual_seed(seed)
        state_dict = Sam2Model(released_sam2_config(name)).state_dict()
        path = folder / f"{name}.pt"
        torch.save({"model": state_dict}, path)
        out[name] = (path, state_dict)
    return out


@pytest.mark.parametrize("name", ["sam2_hiera_tiny", "sam2.1_hiera_tiny"])
def test_released_tiny_roundtrip_with_inferred_config(tiny_files, name):
    path, saved = tiny_files[name]
    model = load_sam2(path)
    assert model.config == SAM2_CONFIGS[name]
    assert not model.training
    loaded = model.state_dict()
    assert set(loaded) == set(saved)
    for key, value in saved.items():
        assert loaded[key].shape == value.shape, key
        assert torch.equal(loaded[key], value), key
    has_21_keys = all(k in saved for k in SAM21_ONLY_KEYS)
    assert has_21_keys == name.startswith("sam2.1")


def test_layouts_differ_only_by_the_sam21_keys(tiny_files):
    keys20 = set(tiny_files["sam2_hiera_tiny"][1])
    keys21 = set(tiny_files["sam2.1_hiera_tiny"][1])
    assert keys20 < keys21
    assert keys21 - keys20 == {"no_obj_embed_spatial", "obj_ptr_tpos_proj.weight",
                               "obj_ptr_tpos_proj.bias"}


@pytest.mark.parametrize("config", [TEST_TINY, TEST_TINY_20], ids=lambda c: c.name)
def test_explicit_config_roundtrip_and_bare_state_dict(tmp_path, config):
    torch.manual_seed(3)
    saved = Sam2Model(config).state_dict()
    for obj, stem in ((saved, "bare"), ({"model": saved}, "wrapped")):
        path = tmp_path / f"{stem}.pt"
        torch.save(obj, path)
        loaded = load_sam2(path, config).state_dict()
        assert set(loaded) == set(saved)
        assert all(torch.equal(loaded[k], v) for k, v in saved.items())


def test_unreleased_size_needs_a_config(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"model": Sam2Model(TEST_TINY).state_dict()}, path)
    with pytest.raises(CheckpointError, match="no released size; pass its config"):
        load_sam2(path)


@pytest.mark.parametrize("name", RELEASED)
def test_infer_config_of_every_released_model(name):
    state_dict = _meta_state_dict(name)
    inferred = infer_sam2_config(state_dict)
    assert inferred is not None and inferred.name == name
    assert inferred == SAM2_CONFIGS[name]


def test_infer_config_of_unknown_layouts():
    assert infer_sam2_config({}) is None
    assert infer_sam2_config(_meta_state_dict("sam2_test_tiny")) is None
    # 2.1 keys half present: not a 2.1 file
    partial = dict(_meta_state_dict("sam2.1_hiera_small"))
    del partial["obj_ptr_tpos_proj.weight"]
    assert infer_sam2_config(partial).name == "sam2_hiera_small"


def test_sam21_file_with_sam20_config_names_keys_and_the_file_config(tiny_files):
    path, _ = tiny_files["sam2.1_hiera_tiny"]
    with pytest.raises(CheckpointError) as info:
        load_sam2(path, SAM2_CONFIGS["sam2_hiera_tiny"])
    message = str(info.value)
    assert "3 unexpected keys" in message
    for key in ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"):
        assert key in message
    assert "config sam2_hiera_tiny" in message
    assert "looks like sam2.1_hiera_tiny" in message
    assert str(path) in message


def test_sam20_file_with_sam21_config_names_missing_keys(tiny_files):
    path, _ = tiny_files["sam2_hiera_tiny"]
    with pytest.raises(CheckpointError) as info:
        load_sam2(path, SAM2_CONFIGS["sam2.1_hiera_tiny"])
    message = str(info.value)
    assert "3 missing keys" in message and "no_obj_embed_spatial" in message
    assert "looks like sam2_hiera_tiny" in message


def test_wrong_size_names_shape_mismatches(tiny_files):
    path, _ = tiny_files["sam2.1_hiera_tiny"]
    with pytest.raises(CheckpointError) as info:
        load_sam2(path, SAM2_CONFIGS["sam2.1_hiera_base_plus"])
    message = str(info.value)
    assert "shape mismatches" in message and "image_encoder.trunk.pos_embed" in message
    assert "config sam2.1_hiera_base_plus" in message and "looks like sam2.1_hiera_tiny" in message


def test_altered_shape_and_missing_key_are_named(tmp_path):
    torch.manual_seed(4)
    state_dict = dict(Sam2Model(TEST_TINY).state_dict())
    state_dict["no_mem_embed"] = torch.zeros(1, 1, 7)
    del state_dict["maskmem_tpos_enc"]
    path = tmp_path / "altered.pt"
    torch.save({"model": state_dict}, path)
    with pytest.raises(CheckpointError) as info:
        load_sam2(path, TEST_TINY)
    message = str(info.value)
    assert "1 missing keys: maskmem_tpos_enc" in message
    assert "no_mem_embed (1, 1, 7) vs model (1, 1, 64)" in message
    assert "looks like" not in message  # no released config fits this file


def test_sam1_file_gives_the_family_error(tmp_path):
    path = tmp_path / "sam_vit_b.pth"
    torch.save({"image_encoder.blocks.0.attn.qkv.weight": torch.zeros(3, 1),
                "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": torch.zeros(2, 1),
                "mask_decoder.iou_token.weight": torch.zeros(1, 1)}, path)
    with pytest.raises(CheckpointError, match="is a SAM 1 .*expected a SAM 2 checkpoint"):
        load_sam2(path)


def test_focsam_file_gives_the_family_error(tmp_path):
    path = tmp_path / "iter_160000.pth"
    torch.save({"meta": {"epoch": torch.tensor(1)},
                "state_dict": {"backbone.pos_embed": torch.zeros(1),
                               "decode_head.conv.weight": torch.zeros(1),
                               "refine_head.embed_proj.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="is a FocSAM .*expected a SAM 2 checkpoint"):
        load_sam2(path)


def test_unknown_file_gives_the_family_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {"encoder.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="no known model family"):
        load_sam2(path)
    with pytest.raises(CheckpointError, match="no SAM 2 state_dict"):
        sam2_state_dict({"model": [1, 2]}, "x.pt")


def test_truncated_file(tmp_path):
    full = tmp_path / "full.pt"
    torch.save({"model": Sam2Model(TEST_TINY).state_dict()}, full)
    data = full.read_bytes()
    for fraction in (2, 10):
        cut = tmp_path / f"cut{fraction}.pt"
        cut.write_bytes(data[: len(data) // fraction])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_sam2(cut, TEST_TINY)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_sam2(empty)
    with pytest.raises(FileNotFoundError):
        load_sam2(tmp_path / "absent.pt")


def test_family_detection_of_sam2_layouts(tiny_files):
    for _, state_dict in tiny_files.values():
        assert detect_family({"model": state_dict}) is SAM2
        assert detect_family(state_dict) is SAM2
