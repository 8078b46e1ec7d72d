"""Registry of the official checkpoints napari-focsam can download, and the weights errors.

Each released model has one :class:`WeightSpec` in :data:`WEIGHTS`, keyed by the model id, which
is also the name of its config in ``SAM_CONFIGS`` / ``SAM2_CONFIGS`` / ``FOCSAM_CONFIGS``.
Code looks specs up through :func:`get_spec` (i.e. through the dict at call time), so tests can
swap entries with ``monkeypatch.setitem(WEIGHTS, ...)``.

This module imports neither torch nor requests.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FAMILIES",
    "WEIGHTS",
    "DownloadError",
    "HashMismatchError",
    "UnknownModelError",
    "WeightSpec",
    "WeightsError",
    "WeightsNotAvailableError",
    "WeightsVerificationError",
    "get_spec",
    "list_specs",
]

#: Model families of the registry (the package names under :mod:`napari_focsam.models`).
FAMILIES: tuple[str, ...] = ("sam", "sam2", "focsam")

_SAM1_BASE = "https://dl.fbaipublicfiles.com/segment_anything"
_SAM21_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_SAM20_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/072824"
#: Google Drive file id of FocSAM's released checkpoint archive (FocSAM README).
FOCSAM_GDRIVE_ID = "1VOeMkY9LovfWYi66JMR8q79gFiC4n3Az"
GDRIVE_DOWNLOAD_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
GDRIVE_VIEW_URL = "https://drive.google.com/file/d/{id}"


# --------------------------------------------------------------------------------------- errors
class WeightsError(RuntimeError):
    """Base class of every error raised while resolving, downloading or checking weights."""


class UnknownModelError(WeightsError, ValueError):
    """A model id that is not in the registry.

    Attributes
    ----------
    model_id : str
        The id asked for.
    known : tuple of str
        The registered ids.
    suggestion : str or None
        The closest registered id, if any is close.
    """

    def __init__(self, model_id: str, known: tuple[str, ...]) -> None:
        self.model_id = model_id
        self.known = known
        close = difflib.get_close_matches(str(model_id), known, n=1, cutoff=0.6)
        self.suggestion = close[0] if close else None
        hint = f" Did you mean {self.suggestion!r}?" if self.suggestion else ""
        super().__init__(f"unknown model {model_id!r}.{hint} Known models: {', '.join(known)}")


class DownloadError(WeightsError):
    """The file could not be fetched (no network, HTTP error, timeout, truncated transfer,
    an HTML page instead of the file).

    Attributes
    ----------
    url : str
        The URL that was requested.
    reason : str
        What went wrong.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"could not download {url}: {reason}")


class WeightsVerificationError(WeightsError):
    """A weights file exists but is not the expected one (empty, not a zip, wrong family...)."""


class HashMismatchError(WeightsVerificationError):
    """The SHA-256 of a file differs from the published (or first-recorded) hash.

    Attributes
    ----------
    path : str
        The file (or the download URL's target) that was hashed.
    expected, actual : str
        Hex digests.
    url : str or None
        Where the file was downloaded from, if it was just downloaded.
    """

    def __init__(self, path: str, expected: str, actual: str, url: str | None = None,
                 hint: str = "") -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        self.url = url
        origin = f" (downloaded from {url})" if url else ""
        super().__init__(f"SHA-256 mismatch for {path}{origin}: expected {expected}, got {actual}."
                         + (f" {hint}" if hint else ""))


class WeightsNotAvailableError(WeightsError):
    """Offline mode and no usable cached file.

    Attributes
    ----------
    model_id : str
        The model asked for.
    path : str
        Where the file is looked for.
    """

    def __init__(self, model_id: str, path: str, message: str) -> None:
        self.model_id = model_id
        self.path = path
        super().__init__(message)


# ------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class WeightSpec:
    """One downloadable checkpoint.

    Attributes
    ----------
    id : str
        Model id (also the config name).
    family : {'sam', 'sam2', 'focsam'}
        Model family (which loader reads the file).
    config : str
        Key of the config in the family's ``*_CONFIGS`` dict.
    filename : str
        Name of the file in the cache (and on a mirror, see ``NAPARI_FOCSAM_WEIGHTS_URL``).
    url : str
        Official download URL.
    sha256 : str or None
        Published SHA-256 (hex), or None when unpublished: the hash is then recorded after the
        first download and checked from then on.
    size : int or None
        Approximate size in bytes (for progress and information only; never checked).
    archive_member : str or None
        For a zip distribution, the checkpoint inside it. The zip itself is kept (the loader
        reads it directly).
    source : {'http', 'gdrive'}
        How the official URL is downloaded.
    description : str
        One line for listings.
    """

    id: str
    family: Literal["sam", "sam2", "focsam"]
    config: str
    filename: str
    url: str
    sha256: str | None = None
    size: int | None = None
    archive_member: str | None = None
    source: Literal["http", "gdrive"] = "http"
    description: str = ""

    @property
    def manual_url(self) -> str:
        """A page a person can open in a browser to download the file by hand."""
        if self.source == "gdrive":
            return GDRIVE_VIEW_URL.format(id=self.url.split("id=", 1)[1].split("&", 1)[0])
        return self.url


def _sam1(model_id: str, filename: str, sha256: str, size: int, desc: str) -> WeightSpec:
    return WeightSpec(model_id, "sam", model_id, filename, f"{_SAM1_BASE}/{filename}", sha256,
                      size, description=desc)


def _sam2(model_id: str, sha256: str | None, size: int | None, desc: str) -> WeightSpec:
    base = _SAM21_BASE if model_id.startswith("sam2.1") else _SAM20_BASE
    return WeightSpec(model_id, "sam2", model_id, f"{model_id}.pt", f"{base}/{model_id}.pt",
                      sha256, size, description=desc)


_SPECS: tuple[WeightSpec, ...] = (
    _sam1("sam_vit_b", "sam_vit_b_01ec64.pth",
          "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375042383,
          "SAM ViT-B (Meta)"),
    _sam1("sam_vit_l", "sam_vit_l_0b3195.pth",
          "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1249524607,
          "SAM ViT-L (Meta)"),
    _sam1("sam_vit_h", "sam_vit_h_4b8939.pth",
          "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2564550879,
          "SAM ViT-H (Meta)"),
    _sam2("sam2.1_hiera_tiny", "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
          156008466, "SAM 2.1 Hiera-T (Meta)"),
    _sam2("sam2.1_hiera_small", "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
          184416285, "SAM 2.1 Hiera-S (Meta)"),
    _sam2("sam2.1_hiera_base_plus",
          "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 323606802,
          "SAM 2.1 Hiera-B+ (Meta)"),
    _sam2("sam2.1_hiera_large", "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
          898083611, "SAM 2.1 Hiera-L (Meta)"),
    _sam2("sam2_hiera_tiny", None, None, "SAM 2.0 Hiera-T (Meta; hash recorded on first download)"),
    _sam2("sam2_hiera_small", None, None, "SAM 2.0 Hiera-S (Meta; hash recorded on first download)"),
    _sam2("sam2_hiera_base_plus", None, None,
          "SAM 2.0 Hiera-B+ (Meta; hash recorded on first download)"),
    _sam2("sam2_hiera_large", None, None, "SAM 2.0 Hiera-L (Meta; hash recorded on first download)"),
    WeightSpec("focsam_vit_h", "focsam", "focsam_vit_h", "focsam_vit_h.zip",
               GDRIVE_DOWNLOAD_URL.format(id=FOCSAM_GDRIVE_ID), None, None,
               archive_member="iter_160000.pth", source="gdrive",
               description="FocSAM ViT-H (Google Drive zip; hash recorded on first download)"),
)

#: Every downloadable checkpoint, by model id. Looked up at call time (tests patch it).
WEIGHTS: dict[str, WeightSpec] = {spec.id: spec for spec in _SPECS}


def get_spec(model_id: str) -> WeightSpec:
    """The registry entry of ``model_id``.

    Parameters
    ----------
    model_id : str
        A key of :data:`WEIGHTS`, e.g. ``"sam_vit_b"``.

    Returns
    -------
    WeightSpec

    Raises
    ------
    UnknownModelError
        ``model_id`` is not registered; the message lists the known ids and the closest one.
    """
    try:
        return WEIGHTS[model_id]
    except (KeyError, TypeError):
        raise UnknownModelError(model_id, tuple(WEIGHTS)) from None


def list_specs(family: str | None = None) -> list[WeightSpec]:
    """Registered checkpoints in registry order, optionally only those of ``family``."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    return [s for s in WEIGHTS.values() if family is None or s.family == family]
