"""Model choice for the headless API: registry id or config name -> a loaded model.

A *model id* is either a registry id (:data:`napari_focsam.weights.WEIGHTS`, e.g.
``"sam2.1_hiera_tiny"``; its checkpoint is fetched into the weights cache or taken from a local
file) or a config name of one of the model families (e.g. ``"sam2_test_tiny"``), which needs a
local checkpoint or explicit random weights (tests, benchmarks, demos).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..engine.precision import resolve_device, resolve_encoder_dtype

__all__ = ["RANDOM_WEIGHTS", "LoadedModel", "ModelChoiceError", "family_of", "load_model"]

logger = logging.getLogger(__name__)

#: Pass as `weights` to build a model with random weights (no checkpoint).
RANDOM_WEIGHTS = "random"

#: Families that can draw an object on one image from prompts / that can propagate.
INTERACTIVE_FAMILIES = ("sam", "focsam", "sam2")
PROPAGATION_FAMILIES = ("sam2",)


class ModelChoiceError(ValueError):
    """Unknown model id, or a model that cannot play the requested role."""


@dataclass
class LoadedModel:
    """A model ready for inference.

    Attributes
    ----------
    model_id : str
        Registry id or config name it was loaded as.
    family : str
        ``"sam"``, ``"focsam"`` or ``"sam2"``.
    net : nn.Module
        The model, in eval mode on `device`.
    device : torch.device
    dtype : torch.dtype
        Precision of the encoders and (on CPU, bf16) of the propagation.
    weights : str
        The checkpoint path, or ``"random"``.
    """

    model_id: str
    family: str
    net: nn.Module
    device: torch.device
    dtype: torch.dtype
    weights: str

    @property
    def cache_id(self) -> str:
        """Identifies the weights in embedding-cache keys (random weights are never shared)."""
        if self.weights == RANDOM_WEIGHTS:
            return f"{self.model_id}@random-{id(self.net):x}"
        return f"{self.model_id}@{Path(self.weights).name}"


def _configs() -> dict[str, tuple[str, object]]:
    from ..models.focsam.config import FOCSAM_CONFIGS
    from ..models.sam.config import SAM_CONFIGS
    from ..models.sam2.config import SAM2_CONFIGS

    table: dict[str, tuple[str, object]] = {}
    for family, configs in (("sam", SAM_CONFIGS), ("focsam", FOCSAM_CONFIGS), ("sam2", SAM2_CONFIGS)):
        for name, cfg in configs.items():
            table[name] = (family, cfg)
    return table


def family_of(model_id: str) -> str:
    """The family of a registry id or config name.

    Raises
    ------
    ModelChoiceError
        Neither a registry id nor a config name.
    """
    from ..weights import WEIGHTS

    if model_id in WEIGHTS:
        return WEIGHTS[model_id].family
    table = _configs()
    if model_id in table:
        return table[model_id][0]
    import difflib

    known = sorted(set(WEIGHTS) | set(table))
    close = difflib.get_close_matches(model_id, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ModelChoiceError(f"unknown model {model_id!r}.{hint} Known models: {', '.join(known)}")


def _build_random(family: str, config) -> nn.Module:
    if family == "sam":
        from ..models.sam.model import build_sam

        return build_sam(config)
    if family == "focsam":
        from ..models.focsam.model import build_focsam

        return build_focsam(config)
    from ..models.sam2.model import build_sam2

    return build_sam2(config)


def _load_file(family: str, path: Path, config, device: torch.device) -> nn.Module:
    if family == "sam":
        from ..models.sam.loading import load_sam

        return load_sam(path, config, device=device)
    if family == "focsam":
        from ..models.focsam.loading import load_focsam

        return load_focsam(path, config, device=device)
    from ..models.sam2.loading import load_sam2

    return load_sam2(path, config, device=device)


def load_model(
    model_id: str,
    *,
    weights: str | Path | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    role: str | None = None,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
    progress=None,
    seed: int = 0,
) -> LoadedModel:
    """Build a model and load its weights.

    Parameters
    ----------
    model_id : str
        Registry id or config name (see the module docstring).
    weights : str, Path or None
        A local checkpoint; ``"random"`` for random weights (seeded); None fetches the registry
        checkpoint (download on first use, unless offline).
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``...
    dtype : str or torch.dtype
        ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    role : {"interactive", "propagation"} or None
        Check that the model can play this role.
    offline, cache_dir, progress
        Passed to :func:`napari_focsam.weights.fetch_weights`.
    seed : int
        Seed of random weights.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelChoiceError
        Unknown id, wrong role, or a config name without weights.
    napari_focsam.weights.WeightsError
        The checkpoint cannot be fetched or verified.
    napari_focsam.models.checkpoint.CheckpointError
        The file is not a checkpoint of this model.
    """
    from ..weights import WEIGHTS, resolve_weights

    family = family_of(model_id)
    allowed = {"interactive": INTERACTIVE_FAMILIES, "propagation": PROPAGATION_FAMILIES}
    if role is not None:
        if role not in allowed:
            raise ModelChoiceError(f"role must be 'interactive' or 'propagation', got {role!r}")
        if family not in allowed[role]:
            raise ModelChoiceError(f"{model_id!r} ({family}) cannot be the {role} model; choose a "
                                   f"{' or '.join(allowed[role])} model")
    spec = WEIGHTS.get(model_id)
    config_name = spec.config if spec is not None else model_id
    config = _configs()[config_name][1]
    dev = resolve_device(device)
    precision = resolve_encoder_dtype(dev, dtype)
    if isinstance(weights, str) and weights == RANDOM_WEIGHTS:
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's RNG
            torch.manual_seed(seed)
            net = _build_random(family, config)
        net = net.to(dev)
        source = RANDOM_WEIGHTS
        logger.warning("%s: random weights (no checkpoint): masks are meaningless", model_id)
    else:
        if weights is None and spec is None:
            raise ModelChoiceError(
                f"{model_id!r} is a config name without a released checkpoint: pass a local "
                f"checkpoint file, or random weights ('{RANDOM_WEIGHTS}')")
        if spec is not None:
            path = resolve_weights(model_id, local_path=weights, offline=offline,
                                   cache_dir=cache_dir, progress=progress)
        else:
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"checkpoint {path} does not exist")
        net = _load_file(family, Path(path), config, dev)
        source = str(path)
    net.eval()
    logger.info("loaded %s (%s) from %s on %s, %s", model_id, family, source, dev, precision)
    return LoadedModel(model_id, family, net, dev, precision, source)
