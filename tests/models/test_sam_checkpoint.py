"""Loading SAM 1 checkpoints: every key and shape checked, clear errors for bad files."""

from __future__ import annotations

import pickle

import pytest
import torch

from napari_focsam.families import SAM, SAM2, detect_family
from napari_focsam.models.checkpoint import CheckpointError, check_state_dict, read_checkpoint
from napari_focsam.models.sam import SAM_CONFIGS, build_sam, infer_sam_config, load_sam

TINY = SAM_CONFIGS["sam_test_tiny"]


class NotATensor:
    """Stands for a pickled foreign object (e.g. an mmengine MessageHub)."""


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_sam(TINY)
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_load_roundtrip_restores_every_tensor(tiny_checkpoint):
    model, path = tiny_checkpoint
    loaded = load_sam(path, TINY)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not loaded.training


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_checkpoint(tmp_path / "absent.pth")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(path)


def test_truncated_download(tiny_checkpoint, tmp_path):
    _, path = tiny_checkpoint
    cut = tmp_path / "cut.pth"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_sam(cut, TINY)


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "page.pth"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(CheckpointError, match="not a"):
        load_sam(path, TINY)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "mm.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "message_hub": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        read_checkpoint(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps({"a": NotATensor()}))
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_sam2_checkpoint_is_named_as_such(tmp_path):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(2, 3, 7, 7),
                          "memory_encoder.out_proj.weight": torch.zeros(2, 2, 1, 1)}}, path)
    with pytest.raises(CheckpointError, match="SAM 2 checkpoint.*expected a SAM 1"):
        load_sam(path, TINY)


def test_focsam_checkpoint_is_named_as_such(tmp_path):
    path = tmp_path / "iter_160000.pth"
    torch.save({"meta": {}, "state_dict": {"backbone.pos_embed": torch.zeros(1),
                                           "refine_head.embed_proj.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="FocSAM"):
        load_sam(path, TINY)


def test_family_detection(sam1_fixture):
    assert detect_family(sam1_fixture["state_dict"]) is SAM
    assert detect_family({"model": {"image_encoder.trunk.x": torch.zeros(1)}}) is SAM2
    assert detect_family({"foo": torch.zeros(1)}) is None
    assert detect_family([1, 2]) is None


def test_shape_mismatch_names_keys_and_shapes(sam1_fixture, tmp_path):
    path = tmp_path / "fixture.pth"
    torch.save(sam1_fixture["state_dict"], path)
    with pytest.raises(CheckpointError) as info:
        load_sam(path, TINY)  # fixture widths differ from the tiny config
    message = str(info.value)
    assert "shape mismatches" in message
    assert "image_encoder.pos_embed" in message
    assert str(path) in message


def test_missing_and_unexpected_keys_are_listed(tiny_checkpoint):
    model, _ = tiny_checkpoint
    state = dict(model.state_dict())
    state.pop("mask_decoder.iou_token.weight")
    state["mask_decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        check_state_dict(model, state, source="edited")
    message = str(info.value)
    assert "1 missing keys: mask_decoder.iou_token.weight" in message
    assert "1 unexpected keys: mask_decoder.extra.weight" in message


def test_wrong_released_size_says_which_it_is():
    """A ViT-B file loaded as ViT-L fails and names ViT-B (shapes only, on the meta device)."""
    with torch.device("meta"):
        vit_b = build_sam(SAM_CONFIGS["sam_vit_b"])
        vit_l = build_sam(SAM_CONFIGS["sam_vit_l"])
    state = vit_b.state_dict()
    assert infer_sam_config(state) == SAM_CONFIGS["sam_vit_b"]
    with pytest.raises(CheckpointError, match="missing keys.*shape mismatches"):
        check_state_dict(vit_l, state)
