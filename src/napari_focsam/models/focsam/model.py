"""The whole FocSAM model: a SAM (ViT encoder, prompt encoder, retrained decoder) plus the
FocusRefiner, with loading from FocSAM's official key layout."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..checkpoint import CheckpointError, load_checked
from ..sam.model import SamModel
from .config import FocSamConfig
from .keys import REFINER_PREFIX, SAM_PREFIXES, focsam_to_sam_state_dict, refiner_state_dict
from .refiner import FocusRefiner

__all__ = ["FocSamModel", "build_focsam"]


class FocSamModel(nn.Module):
    """SAM plus FocSAM's refiner.

    Parameters
    ----------
    config : FocSamConfig
        Architecture.

    Attributes
    ----------
    sam : SamModel
        Image encoder, prompt encoder and mask decoder (FocSAM's retrained one).
    refiner : FocusRefiner
        Refines the image embeddings around the object after the coarse pass.
    """

    def __init__(self, config: FocSamConfig) -> None:
        super().__init__()
        self.config = config
        self.sam = SamModel(config.sam)
        self.refiner = FocusRefiner(config.refiner)

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor],
                                 source: str = "state_dict") -> FocSamModel:
        """Load a state_dict in FocSAM's layout (``backbone.``, ``neck.``, ``decode_head.``,
        ``refine_head.``), checking every key and shape.

        Parameters
        ----------
        state_dict : mapping of str to torch.Tensor
            The ``state_dict`` of FocSAM's mmengine checkpoint.
        source : str
            Named in error messages (e.g. the file path).

        Returns
        -------
        FocSamModel
            ``self``.

        Raises
        ------
        CheckpointError
            Keys outside FocSAM's four prefixes, or missing, unexpected or mis-shaped keys in
            any part.
        """
        known = (*SAM_PREFIXES, REFINER_PREFIX)
        stray = sorted(k for k in state_dict if not k.startswith(known))
        if stray:
            listed = ", ".join(stray[:8]) + (" ..." if len(stray) > 8 else "")
            raise CheckpointError(
                f"{source}: {len(stray)} keys are not under FocSAM's prefixes "
                f"{', '.join(known)}: {listed}"
            )
        load_checked(self.sam, focsam_to_sam_state_dict(state_dict), source=source)
        load_checked(self.refiner, refiner_state_dict(state_dict), source=source)
        return self


def build_focsam(config: FocSamConfig) -> FocSamModel:
    """Build a randomly initialised FocSAM in eval mode.

    Parameters
    ----------
    config : FocSamConfig

    Returns
    -------
    FocSamModel
    """
    return FocSamModel(config).eval()
