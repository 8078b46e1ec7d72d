"""Key mapping between FocSAM's checkpoint layout and our modules.

The released FocSAM checkpoint (an mmengine ``state_dict``) holds ``backbone.*`` (SAM ViT image
encoder, same names), ``neck.*`` (prompt encoder; ``pos_embed_layer`` and ``point_embeds``
instead of SAM's ``pe_layer`` and ``point_embeddings``), ``decode_head.*`` (mask decoder, same
names) and ``refine_head.*`` (the FocusRefiner, our names).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

#: FocSAM prefix -> our SamModel prefix.
SAM_PREFIXES: dict[str, str] = {
    "backbone.": "image_encoder.",
    "neck.": "prompt_encoder.",
    "decode_head.": "mask_decoder.",
}
#: Renamed submodules of the prompt encoder (FocSAM name -> SAM name).
NECK_RENAMES: dict[str, str] = {
    "pos_embed_layer.": "pe_layer.",
    "point_embeds.": "point_embeddings.",
}
REFINER_PREFIX = "refine_head."


def focsam_to_sam_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename FocSAM's SAM parts onto :class:`~napari_focsam.models.sam.SamModel` keys.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        FocSAM state_dict (``backbone.``, ``neck.``, ``decode_head.``, ``refine_head.`` keys).

    Returns
    -------
    dict
        ``image_encoder.*``, ``prompt_encoder.*`` and ``mask_decoder.*`` keys; the refiner's
        and any other keys are left out.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for theirs, ours in SAM_PREFIXES.items():
            if key.startswith(theirs):
                rest = key[len(theirs):]
                if theirs == "neck.":
                    for old, new in NECK_RENAMES.items():
                        if rest.startswith(old):
                            rest = new + rest[len(old):]
                out[ours + rest] = value
                break
    return out


def refiner_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``refine_head.*`` entries of a FocSAM state_dict with the prefix stripped."""
    n = len(REFINER_PREFIX)
    return {k[n:]: v for k, v in state_dict.items() if k.startswith(REFINER_PREFIX)}


def sam_to_focsam_state_dict(
    sam_state_dict: Mapping[str, torch.Tensor],
    refiner: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Rename a :class:`~napari_focsam.models.sam.SamModel` state_dict (and optionally a
    refiner's) into FocSAM's checkpoint layout; the inverse of :func:`focsam_to_sam_state_dict`
    and :func:`refiner_state_dict`.

    Parameters
    ----------
    sam_state_dict : mapping of str to torch.Tensor
        ``image_encoder.*``, ``prompt_encoder.*`` and ``mask_decoder.*`` keys; others are left
        out.
    refiner : mapping of str to torch.Tensor, optional
        :class:`~napari_focsam.models.focsam.FocusRefiner` state_dict, stored under
        ``refine_head.``.

    Returns
    -------
    dict
        ``backbone.*``, ``neck.*`` (with ``pos_embed_layer.`` / ``point_embeds.``),
        ``decode_head.*`` and, when ``refiner`` is given, ``refine_head.*`` keys.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sam_state_dict.items():
        for theirs, ours in SAM_PREFIXES.items():
            if key.startswith(ours):
                rest = key[len(ours):]
                if theirs == "neck.":
                    for old, new in NECK_RENAMES.items():
                        if rest.startswith(new):
                            rest = old + rest[len(new):]
                out[theirs + rest] = value
                break
    if refiner is not None:
        out.update({REFINER_PREFIX + k: v for k, v in refiner.items()})
    return out
