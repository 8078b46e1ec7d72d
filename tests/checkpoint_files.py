"""Synthetic checkpoint files of released architectures for the CLI and widget tests: a
'fine-tuned' state_dict (seeded random weights) and micro-sam's torch_em training layout.

(`tests/models/test_sam_checkpoint_formats.py` covers the pickled training objects of real
torch_em files; here the layout is what matters.)"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from napari_focsam.models.sam import SAM_CONFIGS, build_sam


def fine_tuned_state(config: str, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights of the SAM config `config` (a lab's own fine-tune)."""
    torch.manual_seed(seed)
    return build_sam(SAM_CONFIGS[config]).state_dict()


def write_torch_em(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """`state` as a torch_em training checkpoint: ``model_state`` with ``sam.`` keys, optimizer
    state and numpy metrics beside it."""
    torch.save({"iteration": 100, "best_metric": np.float64(0.2),
                "model_state": OrderedDict((f"sam.{k}", v) for k, v in state.items()),
                "optimizer_state": {"state": {0: {"exp_avg": torch.ones(3)}},
                                    "param_groups": [{"lr": 1e-5, "params": [0]}]}}, path)
    return path
