"""micro-sam's checkpoints from the command line: a registry id of its model zoo with a local
file in torch_em's training layout (or a fine-tuned state_dict) segments; the architecture is
told from the file."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from checkpoint_files import fine_tuned_state, write_torch_em
from napari_focsam.cli import main


@pytest.fixture
def image_and_prompts(tmp_path):
    image = np.full((96, 128), 20, np.uint16)
    image[30:60, 40:80] = 800
    tifffile.imwrite(tmp_path / "cells.tif", image)
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("object_id,frame,kind,row,col,label,row0,col0,row1,col1\n"
                       "1,,point,45,60,1,,,,\n")
    return tmp_path / "cells.tif", prompts


@pytest.mark.parametrize("model_id, config, layout", [
    ("vit_t_lm", "sam_vit_t", "torch_em"),
    ("vit_t_em_organelles", "sam_vit_t", "state_dict"),
    ("vit_b_lm", "sam_vit_b", "torch_em"),
])
def test_a_micro_sam_model_with_a_local_file_segments(image_and_prompts, tmp_path, capsys,
                                                       model_id, config, layout):
    image, prompts = image_and_prompts
    state = fine_tuned_state(config, seed=1)
    weights = tmp_path / f"{model_id}.pt"
    if layout == "torch_em":
        write_torch_em(weights, state)
    else:
        import torch

        torch.save(state, weights)
    out = tmp_path / "labels.tif"
    code = main(["segment", str(image), "--model", model_id, "--weights", str(weights),
                 "--prompts", str(prompts), "-o", str(out), "--device", "cpu", "--dtype", "fp32",
                 "--no-cache", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert tifffile.imread(out).shape == (96, 128)
    assert "written to" in capsys.readouterr().out


@pytest.mark.parametrize("model_id, config", [("vit_l_lm", "sam_vit_l"),
                                               ("vit_h_histopathology", "sam_vit_h")])
def test_large_micro_sam_models_load_from_a_torch_em_file(tmp_path, model_id, config):
    """ViT-L and ViT-H fine-tunes in torch_em's layout load with every key and shape checked
    (the full pipeline is covered on ViT-B and ViT-T above; encoding these sizes would take
    minutes on a CPU)."""
    import torch

    from napari_focsam.api.models import load_model

    state = fine_tuned_state(config, seed=3)
    weights = write_torch_em(tmp_path / f"{model_id}.pt", state)
    loaded = load_model(model_id, weights=weights, device="cpu", dtype="fp32")
    assert loaded.net.config.name == config
    key = "image_encoder.blocks.0.attn.qkv.weight"
    assert torch.equal(loaded.net.state_dict()[key], state[key])
    assert loaded.stack_encoder().model_id.startswith(f"{config}:{loaded.weights_id[:24]}")
