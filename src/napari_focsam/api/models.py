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
from ..errors import MissingFileError
from ..families import ModelChoiceError, ModelFamily, Role, config_of, family_of

__all__ = ["RANDOM_WEIGHTS", "LoadedModel", "load_model"]

logger = logging.getLogger(__name__)

#: Pass as `weights` to build a model with random weights (no checkpoint).
RANDOM_WEIGHTS = "random"


@dataclass
class LoadedModel:
    """A model ready for inference.

    Attributes
    ----------
    model_id : str
        Registry id or config name it was loaded as.
    family : ModelFamily
        Its family (which predictor and stack encoder serve it).
    net : nn.Module
        The model, in eval mode on `device`.
    device : torch.device
    dtype : torch.dtype
        Precision of the encoders and (on CPU, bf16) of the propagation.
    weights : str
        The checkpoint path, or ``"random"``.
    weights_id : str
        Identity of the weights: the checkpoint file's SHA-256, or ``"random-<seed>"``
        (part of embedding-cache keys, so fine-tuned weights never share cached features).
    """

    model_id: str
    family: ModelFamily
    net: nn.Module
    device: torch.device
    dtype: torch.dtype
    weights: str
    weights_id: str = ""

    def can(self, role: Role | str) -> bool:
        """Whether this model can play `role`."""
        return self.family.can(role)

    def interactive_predictor(self):
        """A new engine predictor drawing objects with this model (``engine.interactive``)."""
        return self.family.interactive_predictor(self.net, self.device, self.dtype)

    def stack_encoder(self):
        """A new embedding-store encoder adapter of this model (``store``), naming its weights
        by `weights_id` in cache keys."""
        name = getattr(getattr(self.net, "config", None), "name", self.model_id)
        model_id = f"{name}:{self.weights_id[:24]}" if self.weights_id else None
        return self.family.stack_encoder(self.net, self.device, self.dtype, model_id)


def load_model(
    model_id: str,
    *,
    weights: str | Path | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    role: Role | str | None = None,
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
        A local checkpoint (for a registry id: the official file or fine-tuned weights of a
        compatible architecture, its config inferred from the file; every key and shape is
        checked); ``"random"`` for random weights (seeded); None fetches the registry
        checkpoint (download on first use, unless offline; verified against its hash).
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
    napari_focsam.families.ModelChoiceError
        Unknown id, wrong role, or a config name without weights.
    napari_focsam.weights.WeightsError
        The checkpoint cannot be fetched or verified.
    napari_focsam.models.checkpoint.CheckpointError
        The file is not a checkpoint of this model.
    """
    from ..models.checkpoint import ConfigNotInferredError
    from ..weights import WEIGHTS, resolve_weights, sha256_file

    family = family_of(model_id)
    if role is not None:
        try:
            role = Role(role)
        except ValueError:
            raise ModelChoiceError(f"role must be 'interactive' or 'propagation', got {role!r}") \
                from None
        if not family.can(role):
            able = " or ".join(f.title for f in _families_for(role))
            raise ModelChoiceError(f"{model_id!r} ({family.name}) cannot be the {role.value} "
                                   f"model; choose a {able} model")
    spec = WEIGHTS.get(model_id)
    config = config_of(model_id)
    dev = resolve_device(device)
    precision = resolve_encoder_dtype(dev, dtype)
    if isinstance(weights, str) and weights == RANDOM_WEIGHTS:
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's RNG
            torch.manual_seed(seed)
            net = family.build(config)
        net = net.to(dev)
        source, weights_id = RANDOM_WEIGHTS, f"random-{seed}"
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
                raise MissingFileError(f"checkpoint {path} does not exist")
        if spec is not None and weights is not None:
            try:  # a local file: its own architecture, when the family can tell it
                net = family.load(Path(path), None, device=dev)
            except ConfigNotInferredError:
                net = family.load(Path(path), config, device=dev)
            inferred = getattr(getattr(net, "config", None), "name", config.name)
            if inferred != config.name:
                logger.warning("%s is a %s checkpoint, not %s: using its architecture", path,
                               inferred, config.name)
        else:
            net = family.load(Path(path), config, device=dev)
        source, weights_id = str(path), sha256_file(path)
    net.eval()
    logger.info("loaded %s (%s) from %s on %s, %s", model_id, family.name, source, dev, precision)
    return LoadedModel(model_id, family, net, dev, precision, source, weights_id)


def _families_for(role: Role) -> list[ModelFamily]:
    from ..families import FAMILIES

    return [f for f in FAMILIES.values() if f.can(role)]
