"""The weights errors and the registry of downloadable checkpoints.

:data:`WEIGHTS` holds every released checkpoint of every model family
(`napari_focsam.families`), keyed by model id. Code looks entries up through :func:`get_spec`
(i.e. through the dict at call time), so tests can swap entries with
``monkeypatch.setitem(WEIGHTS, ...)``.

This module imports neither torch nor requests.
"""

from __future__ import annotations

from ..errors import UserError
from ..families import FAMILIES, UnknownModelError, WeightSpec, get_family

__all__ = [
    "WEIGHTS",
    "DownloadError",
    "HashMismatchError",
    "WeightsError",
    "WeightsNotAvailableError",
    "WeightsVerificationError",
    "get_spec",
    "list_specs",
]


# --------------------------------------------------------------------------------------- errors
class WeightsError(UserError):
    """Base class of every error raised while resolving, downloading or checking weights."""


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
    """The hash of a file differs from the published (or first-recorded) one.

    Attributes
    ----------
    path : str
        The file (or the download URL's target) that was hashed.
    expected, actual : str
        Hex digests.
    url : str or None
        Where the file was downloaded from, if it was just downloaded.
    algorithm : str
        ``"sha256"`` or ``"xxh128"``.
    """

    _NAMES = {"sha256": "SHA-256", "xxh128": "xxHash-128"}

    def __init__(self, path: str, expected: str, actual: str, url: str | None = None,
                 hint: str = "", algorithm: str = "sha256") -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        self.url = url
        self.algorithm = algorithm
        origin = f" (downloaded from {url})" if url else ""
        name = self._NAMES.get(algorithm, algorithm)
        super().__init__(f"{name} mismatch for {path}{origin}: expected {expected}, got {actual}."
                         + (f" {hint}" if hint else ""))


class WeightsNotAvailableError(WeightsError):
    """The checkpoint is not in the weights cache and may not be downloaded now (offline
    mode, or a caller that only uses cached files).

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
#: Every downloadable checkpoint, by model id. Looked up at call time (tests patch it).
WEIGHTS: dict[str, WeightSpec] = {spec.id: spec for family in FAMILIES.values()
                                  for spec in family.checkpoints}


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
    """Registered checkpoints in registry order, optionally only those of family ``family``."""
    if family is not None:
        get_family(family)  # unknown names raise
    return [s for s in WEIGHTS.values() if family is None or s.family == family]
