"""The model families: one `ModelFamily` record each, read by every layer of the package.

A record holds what the rest of the package needs to know about a family: its name (the one
spelling used everywhere), the roles it can play, its checkpoint layout, its released
checkpoints (the weights registry is built from them) and, imported on first use, its parts:
configs, ``build``, checkpoint reading, detection and loading, the stack encoder of the
embedding store and the interactive predictor of the engine.

This module imports neither torch nor any other part of the package at import time (the
weights registry and its command stay light); `FamilyParts` are built lazily. Adding a family
is its ``models/<family>/`` package plus one record below (and an engine predictor or stack
encoder only when it needs a new kind of either).
"""

from __future__ import annotations

import difflib
import enum
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from .errors import UserError

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

__all__ = [
    "FAMILIES",
    "FOCSAM",
    "SAM",
    "SAM2",
    "FamilyParts",
    "MenuEntry",
    "ModelChoiceError",
    "ModelFamily",
    "Role",
    "UnknownModelError",
    "WeightSpec",
    "detect_family",
    "expect_family",
    "family_of",
    "get_family",
    "known_model_ids",
    "model_menu",
]


class ModelChoiceError(UserError, ValueError):
    """A model id that is not known, or a model that cannot play the requested role."""


class UnknownModelError(ModelChoiceError):
    """A model id that is neither a released checkpoint nor a config name.

    Attributes
    ----------
    model_id : str
        The id asked for.
    known : tuple of str
        The ids that would have been accepted.
    suggestion : str or None
        The closest known id, if any is close.
    """

    def __init__(self, model_id: str, known: tuple[str, ...]) -> None:
        self.model_id = model_id
        self.known = known
        close = difflib.get_close_matches(str(model_id), known, n=1, cutoff=0.6)
        self.suggestion = close[0] if close else None
        hint = f" Did you mean {self.suggestion!r}?" if self.suggestion else ""
        super().__init__(f"unknown model {model_id!r}.{hint} Known models: {', '.join(known)}")


class Role(str, enum.Enum):
    """What a model is used for."""

    INTERACTIVE = "interactive"  # draws an object on one frame from prompts
    PROPAGATION = "propagation"  # carries objects through a z / t stack


# ------------------------------------------------------------------------------- checkpoints
_SAM1_BASE = "https://dl.fbaipublicfiles.com/segment_anything"
_SAM21_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_SAM20_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
#: Google Drive file id of FocSAM's released checkpoint archive (FocSAM README).
FOCSAM_GDRIVE_ID = "1VOeMkY9LovfWYi66JMR8q79gFiC4n3Az"
GDRIVE_DOWNLOAD_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
GDRIVE_VIEW_URL = "https://drive.google.com/file/d/{id}"


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable checkpoint.

    Attributes
    ----------
    id : str
        Model id.
    family : str
        Name of its `ModelFamily`.
    config : str
        Name of its config among the family's configs.
    filename : str
        Name of the file in the cache (and on a mirror, see ``NAPARI_FOCSAM_WEIGHTS_URL``).
    url : str
        Official download URL.
    sha256 : str or None
        Published SHA-256 (hex). With neither it nor `xxh128`, the SHA-256 is recorded after
        the first download and checked from then on.
    size : int or None
        Approximate size in bytes (for progress and information only; never checked).
    archive_member : str or None
        For a zip distribution, the checkpoint inside it (the loader reads the zip directly).
    source : {'http', 'gdrive'}
        How the official URL is downloaded.
    description : str
        One line for listings.
    label : str
        Short name in the widget's model lists ("" : the id).
    offered : bool
        Whether the widget lists it (superseded releases are downloadable but not offered).
    xxh128 : str or None
        Published xxHash-128 (hex; micro-sam's model zoo publishes these), used when no
        SHA-256 is published.
    suggested : bool
        The widget's default choice for its role.
    """

    id: str
    family: str
    config: str
    filename: str
    url: str
    sha256: str | None = None
    size: int | None = None
    archive_member: str | None = None
    source: Literal["http", "gdrive"] = "http"
    description: str = ""
    label: str = ""
    offered: bool = True
    xxh128: str | None = None
    suggested: bool = False

    @property
    def published_hash(self) -> tuple[str, str] | None:
        """``(algorithm, hex digest)`` of the published hash (``"sha256"`` or ``"xxh128"``),
        or None."""
        if self.sha256:
            return "sha256", self.sha256.lower()
        if self.xxh128:
            return "xxh128", self.xxh128.lower()
        return None

    @property
    def manual_url(self) -> str:
        """A page a person can open in a browser to download the file by hand."""
        if self.source == "gdrive":
            return GDRIVE_VIEW_URL.format(id=self.url.split("id=", 1)[1].split("&", 1)[0])
        return self.url


def _sam1(model_id: str, filename: str, sha256: str, size: int, label: str) -> WeightSpec:
    return WeightSpec(model_id, "sam", model_id, filename, f"{_SAM1_BASE}/{filename}", sha256,
                      size, description=f"{label} (Meta): natural images", label=label)


#: Where micro-sam's model zoo lives (its ``micro_sam/util.py``; see ../shared/reference).
_BIOIMAGE_IO = "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io"
_GWDG = "https://owncloud.gwdg.de/index.php/s"


def _micro_sam(model_id: str, url: str, xxh128: str, config: str, label: str, use: str,
               suggested: bool = False) -> WeightSpec:
    """A checkpoint of micro-sam's model zoo (SAM fine-tuned for microscopy; xxHash-128)."""
    return WeightSpec(model_id, "sam", config, f"{model_id}.pt", url, description=use,
                      label=label, xxh128=xxh128, suggested=suggested)


def _sam2(model_id: str, sha256: str | None, size: int | None, label: str) -> WeightSpec:
    is_21 = model_id.startswith("sam2.1")
    base = _SAM21_BASE if is_21 else _SAM20_BASE
    note = "Meta" if sha256 else "Meta; hash recorded on first download"
    return WeightSpec(model_id, "sam2", model_id, f"{model_id}.pt", f"{base}/{model_id}.pt",
                      sha256, size, description=f"{label} ({note})", label=label, offered=is_21)


# ------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class FamilyParts:
    """The heavy half of a family (imports torch and the family's package).

    Attributes
    ----------
    configs : mapping of str to config
        Every config of the family by name (released ones and test variants).
    build : callable
        ``config -> nn.Module`` with random weights.
    load : callable
        ``(path, config or None, device) -> nn.Module``: a checkpoint file, every key and shape
        checked (config inferred when None); raises ``CheckpointError``.
    read : callable
        ``path -> object``: the checkpoint as loaded (without building a model), for `detect`.
    detect : callable
        ``object -> bool``: whether a read checkpoint has the family's layout.
    interactive_predictor : callable or None
        ``(net, device, dtype) -> InteractivePredictor`` (see ``engine.interactive``).
    stack_encoder : callable
        ``(net, device, dtype, model_id) -> FrameEncoder`` of the embedding store; `model_id`
        identifies the weights in cache keys (None: a fingerprint of the weights).
    """

    configs: Mapping[str, Any]
    build: Callable[[Any], nn.Module]
    load: Callable[..., nn.Module]
    read: Callable[[Path], Any]
    detect: Callable[[Any], bool]
    interactive_predictor: Callable[[nn.Module, torch.device, torch.dtype], Any] | None
    stack_encoder: Callable[[nn.Module, torch.device, torch.dtype, str | None], Any]


@dataclass(frozen=True)
class ModelFamily:
    """One family of models.

    Attributes
    ----------
    name : str
        Identifier (``"sam"``, ``"focsam"``, ``"sam2"``), also the ``family`` of its
        `WeightSpec` entries.
    title : str
        Human name (``"SAM 2"``).
    roles : frozenset of Role
        Roles its models can play.
    layout : str
        Its checkpoint layout, for messages (``"a SAM 2 checkpoint ..."``).
    checkpoints : tuple of WeightSpec
        Released checkpoints.
    test_configs : tuple of str
        Tiny configs the widget offers with random weights (tests, demos).
    load_parts : callable
        ``() -> FamilyParts``, cached.
    """

    name: str
    title: str
    roles: frozenset[Role]
    layout: str
    checkpoints: tuple[WeightSpec, ...]
    test_configs: tuple[str, ...]
    load_parts: Callable[[], FamilyParts]

    @property
    def parts(self) -> FamilyParts:
        """The configs, loaders, encoder and predictor (imported on first use)."""
        return self.load_parts()

    def can(self, role: Role | str) -> bool:
        """Whether the family's models can play `role`."""
        return Role(role) in self.roles

    @property
    def configs(self) -> Mapping[str, Any]:
        return self.parts.configs

    def build(self, config: Any) -> nn.Module:
        """A model of `config` with random weights."""
        return self.parts.build(config)

    def load(self, path: str | Path, config: Any = None, device: str | torch.device = "cpu") -> nn.Module:
        """A model loaded from checkpoint `path` (config inferred when None)."""
        return self.parts.load(path, config, device=device)

    def read(self, path: str | Path) -> Any:
        """Checkpoint `path` as loaded, without building a model."""
        return self.parts.read(path)

    def detect(self, checkpoint: Any) -> bool:
        """Whether a read checkpoint has this family's layout."""
        return bool(self.parts.detect(checkpoint))

    def interactive_predictor(self, net: nn.Module, device: torch.device, dtype: torch.dtype):
        """The engine predictor drawing objects with `net` (``engine.interactive``)."""
        if self.parts.interactive_predictor is None:
            raise ModelChoiceError(f"{self.title} models cannot be the interactive model")
        return self.parts.interactive_predictor(net, device, dtype)

    def stack_encoder(self, net: nn.Module, device: torch.device, dtype: torch.dtype,
                      model_id: str | None = None):
        """The embedding store's encoder adapter of `net` (``store.encoders``); `model_id`
        names the weights in cache keys (None: a fingerprint of them)."""
        return self.parts.stack_encoder(net, device, dtype, model_id)


@functools.cache
def _sam_parts() -> FamilyParts:
    from .engine.sam_predictor import SamPredictor
    from .models.checkpoint import read_checkpoint
    from .models.sam import SAM_CONFIGS, build_sam, is_sam_checkpoint, load_sam
    from .store.encoders import SamEncoder

    def predictor(net, device, dtype):
        return SamPredictor(net, device=device, encoder_dtype=dtype)

    return FamilyParts(SAM_CONFIGS, build_sam, load_sam, read_checkpoint, is_sam_checkpoint,
                       predictor, lambda net, device, dtype, model_id: SamEncoder(
                           predictor(net, device, dtype), model_id=model_id))


@functools.cache
def _focsam_parts() -> FamilyParts:
    from .engine.focsam_predictor import FocSamPredictor
    from .models.focsam import (
        FOCSAM_CONFIGS,
        build_focsam,
        is_focsam_checkpoint,
        load_focsam,
        read_focsam_checkpoint,
    )
    from .store.encoders import SamEncoder

    def predictor(net, device, dtype):
        return FocSamPredictor(net, device=device, encoder_dtype=dtype)

    return FamilyParts(FOCSAM_CONFIGS, build_focsam, load_focsam,
                       lambda path: {"state_dict": read_focsam_checkpoint(path)},
                       is_focsam_checkpoint, predictor,
                       lambda net, device, dtype, model_id: SamEncoder(
                           predictor(net, device, dtype), model_id=model_id))


@functools.cache
def _sam2_parts() -> FamilyParts:
    from .engine.sam2_image_predictor import Sam2ImagePredictor
    from .models.checkpoint import read_checkpoint
    from .models.sam2 import SAM2_CONFIGS, build_sam2, is_sam2_checkpoint, load_sam2
    from .store.sam2_encoder import Sam2Encoder

    return FamilyParts(
        SAM2_CONFIGS, build_sam2, load_sam2, read_checkpoint, is_sam2_checkpoint,
        lambda net, device, dtype: Sam2ImagePredictor(net, device=device, dtype=dtype),
        lambda net, device, dtype, model_id: Sam2Encoder(net, device=device, encoder_dtype=dtype,
                                                         model_id=model_id))


SAM = ModelFamily(
    name="sam", title="SAM", roles=frozenset({Role.INTERACTIVE}),
    layout="a SAM 1 (segment-anything, MobileSAM or micro-sam) state_dict with image_encoder./"
           "prompt_encoder./mask_decoder. keys (also in torch_em's model_state with sam. keys)",
    checkpoints=(
        _micro_sam("vit_b_lm", f"{_BIOIMAGE_IO}/diplomatic-bug/1.2/files/vit_b.pt",
                   "fe9252a29f3f4ea53c15a06de471e186", "sam_vit_b", "µSAM light microscopy ViT-B",
                   "micro-sam: light microscopy (fluorescence, phase contrast, brightfield); "
                   "cells and nuclei. The suggested default", suggested=True),
        _micro_sam("vit_l_lm", f"{_BIOIMAGE_IO}/idealistic-rat/1.2/files/vit_l.pt",
                   "017f20677997d628426dec80a8018f9d", "sam_vit_l", "µSAM light microscopy ViT-L",
                   "micro-sam: light microscopy, larger and slower than ViT-B"),
        _micro_sam("vit_t_lm", f"{_BIOIMAGE_IO}/faithful-chicken/1.1/files/vit_t.pt",
                   "72ec5074774761a6e5c05a08942f981e", "sam_vit_t", "µSAM light microscopy ViT-T",
                   "micro-sam: light microscopy with MobileSAM's small encoder; fastest on a "
                   "laptop CPU"),
        _micro_sam("vit_b_em_organelles", f"{_BIOIMAGE_IO}/noisy-ox/1.2/files/vit_b.pt",
                   "f3bf2ed83d691456bae2c3f9a05fb438", "sam_vit_b", "µSAM EM organelles ViT-B",
                   "micro-sam: electron microscopy; mitochondria, nuclei and other organelles"),
        _micro_sam("vit_l_em_organelles", f"{_BIOIMAGE_IO}/humorous-crab/1.2/files/vit_l.pt",
                   "810b084b6e51acdbf760a993d8619f2d", "sam_vit_l", "µSAM EM organelles ViT-L",
                   "micro-sam: electron microscopy organelles, larger and slower than ViT-B"),
        _micro_sam("vit_t_em_organelles", f"{_BIOIMAGE_IO}/greedy-whale/1/files/vit_t.pt",
                   "253474720c497cce605e57c9b1d18fd9", "sam_vit_t", "µSAM EM organelles ViT-T",
                   "micro-sam: electron microscopy organelles with MobileSAM's small encoder"),
        _micro_sam("vit_b_histopathology", f"{_GWDG}/sBB4H8CTmIoBZsQ/download",
                   "ffd1a2cd84570458b257bd95fdd8f974", "sam_vit_b", "µSAM histopathology ViT-B",
                   "micro-sam (PathoSAM): stained tissue (H&E and others); nuclei"),
        _micro_sam("vit_l_histopathology", f"{_GWDG}/IZgnn1cpBq2PHod/download",
                   "b591833c89754271023e901281dee3f2", "sam_vit_l", "µSAM histopathology ViT-L",
                   "micro-sam (PathoSAM): stained tissue, larger and slower than ViT-B"),
        _micro_sam("vit_h_histopathology", f"{_GWDG}/L7AcvVz7DoWJ2RZ/download",
                   "bd1856dafc156a43fb3aa705f1a6e92e", "sam_vit_h", "µSAM histopathology ViT-H",
                   "micro-sam (PathoSAM): stained tissue, the largest and slowest"),
        _micro_sam("vit_b_medical_imaging", f"{_GWDG}/f5Ol4FrjPQWfjUF/download",
                   "40169f1e3c03a4b67bff58249c176d92", "sam_vit_b", "MedicoSAM ViT-B",
                   "micro-sam (MedicoSAM): medical images (CT, MRI, ultrasound, X-ray...)"),
        _micro_sam("vit_t", f"{_GWDG}/TuDzuwVDHd1ZDnQ/download",
                   "8eadbc88aeb9d8c7e0b4b60c3db48bd0", "sam_vit_t", "MobileSAM ViT-T",
                   "MobileSAM: SAM distilled into a 10 M-parameter encoder (natural images); "
                   "fast"),
        _sam1("sam_vit_b", "sam_vit_b_01ec64.pth",
              "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375042383,
              "SAM ViT-B"),
        _sam1("sam_vit_l", "sam_vit_l_0b3195.pth",
              "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1249524607,
              "SAM ViT-L"),
        _sam1("sam_vit_h", "sam_vit_h_4b8939.pth",
              "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2564550879,
              "SAM ViT-H"),
    ),
    test_configs=("sam_test_tiny", "sam_test_tinyvit"),
    load_parts=_sam_parts,
)

FOCSAM = ModelFamily(
    name="focsam", title="FocSAM", roles=frozenset({Role.INTERACTIVE}),
    layout="a FocSAM mmengine checkpoint (state_dict with backbone./neck./decode_head./"
           "refine_head. keys)",
    checkpoints=(
        WeightSpec("focsam_vit_h", "focsam", "focsam_vit_h", "focsam_vit_h.zip",
                   GDRIVE_DOWNLOAD_URL.format(id=FOCSAM_GDRIVE_ID), archive_member="iter_160000.pth",
                   source="gdrive", label="FocSAM ViT-H",
                   description="FocSAM ViT-H (Google Drive zip; hash recorded on first download)"),
    ),
    test_configs=("focsam_test_tiny",),
    load_parts=_focsam_parts,
)

SAM2 = ModelFamily(
    name="sam2", title="SAM 2", roles=frozenset({Role.INTERACTIVE, Role.PROPAGATION}),
    layout="a SAM 2 checkpoint ({'model': state_dict} with image_encoder.trunk. keys)",
    checkpoints=(
        _sam2("sam2.1_hiera_tiny",
              "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 156008466,
              "SAM 2.1 tiny"),
        _sam2("sam2.1_hiera_small",
              "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 184416285,
              "SAM 2.1 small"),
        _sam2("sam2.1_hiera_base_plus",
              "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 323606802,
              "SAM 2.1 base+"),
        _sam2("sam2.1_hiera_large",
              "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 898083611,
              "SAM 2.1 large"),
        _sam2("sam2_hiera_tiny", None, None, "SAM 2.0 tiny"),
        _sam2("sam2_hiera_small", None, None, "SAM 2.0 small"),
        _sam2("sam2_hiera_base_plus", None, None, "SAM 2.0 base+"),
        _sam2("sam2_hiera_large", None, None, "SAM 2.0 large"),
    ),
    test_configs=("sam2_test_tiny",),
    load_parts=_sam2_parts,
)

#: Every family by name, in the order of listings and menus.
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (SAM, FOCSAM, SAM2)}


# ------------------------------------------------------------------------------------ lookups
def get_family(name: str) -> ModelFamily:
    """The family called `name`.

    Raises
    ------
    ModelChoiceError
        No such family.
    """
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ModelChoiceError(f"unknown family {name!r}; expected one of "
                               f"{', '.join(FAMILIES)}") from None


def _released() -> Mapping[str, WeightSpec]:
    from .weights.registry import WEIGHTS  # looked up at call time (tests patch it)

    return WEIGHTS


def known_model_ids() -> tuple[str, ...]:
    """Every registry id and config name, sorted (imports the families' configs)."""
    names = set(_released())
    for family in FAMILIES.values():
        names.update(family.configs)
    return tuple(sorted(names))


def family_of(model_id: str) -> ModelFamily:
    """The family of a registry id or config name.

    Raises
    ------
    UnknownModelError
        Neither a registry id nor a config name.
    """
    spec = _released().get(model_id)
    if spec is not None:
        return get_family(spec.family)
    for family in FAMILIES.values():
        if model_id in family.configs:
            return family
    raise UnknownModelError(model_id, known_model_ids())


def config_of(model_id: str) -> Any:
    """The config of a registry id or config name (see `family_of` for the errors)."""
    family = family_of(model_id)
    spec = _released().get(model_id)
    return family.configs[spec.config if spec is not None else model_id]


class MenuEntry(NamedTuple):
    """One model of the widget's model lists."""

    label: str
    model_id: str
    description: str = ""
    suggested: bool = False


def model_menu(role: Role | str, *, with_test_configs: bool = False) -> list[MenuEntry]:
    """The offered checkpoints of the families that can play `role` (in registry order),
    followed by their tiny test configs when `with_test_configs`."""
    role = Role(role)
    families = [f for f in FAMILIES.values() if f.can(role)]
    menu = [MenuEntry(spec.label or spec.id, spec.id, spec.description, spec.suggested)
            for f in families for spec in f.checkpoints if spec.offered]
    if with_test_configs:
        menu += [MenuEntry(f"{f.title} test-{name.rsplit('_test_', 1)[-1]}", name,
                           "tiny test model (random weights: masks are meaningless)")
                 for f in families for name in f.test_configs]
    return menu


# ------------------------------------------------------------------------------ checkpoints
def detect_family(checkpoint: Any) -> ModelFamily | None:
    """The family whose layout a read checkpoint has, or None."""
    for family in FAMILIES.values():
        if family.detect(checkpoint):
            return family
    return None


def expect_family(checkpoint: Any, family: ModelFamily, source: object) -> None:
    """Raise ``CheckpointError`` unless a read checkpoint has `family`'s layout.

    The message says what the file is instead (another family's layout, or none).
    """
    if family.detect(checkpoint):
        return
    from .models.checkpoint import CheckpointError

    found = detect_family(checkpoint)
    what = found.layout if found is not None else "a file of no known model family"
    raise CheckpointError(f"{source} is {what}; expected {family.layout}.")
