"""Model checkpoints: the registry of official weights, the cache, downloads and checks.

Imports neither torch nor requests (they are imported when a download or a deep check runs).

Examples
--------
>>> from napari_focsam.weights import fetch_weights
>>> path = fetch_weights("sam_vit_b", progress=True)  # doctest: +SKIP
"""

from ..families import UnknownModelError, WeightSpec
from .cache import (
    ENV_BASE_URL,
    ENV_CACHE_DIR,
    ENV_OFFLINE,
    cached_path,
    check_local_file,
    download_url,
    expected_hash,
    expected_sha256,
    file_digests,
    is_offline,
    register_local_file,
    sha256_file,
    sidecar_path,
    verify_weights,
    weights_dir,
    weights_status,
)
from .download import ProgressCallback, fetch_weights, resolve_weights
from .registry import (
    WEIGHTS,
    DownloadError,
    HashMismatchError,
    WeightsError,
    WeightsNotAvailableError,
    WeightsVerificationError,
    get_spec,
    list_specs,
)

__all__ = [
    "ENV_BASE_URL",
    "ENV_CACHE_DIR",
    "ENV_OFFLINE",
    "WEIGHTS",
    "DownloadError",
    "HashMismatchError",
    "ProgressCallback",
    "UnknownModelError",
    "WeightSpec",
    "WeightsError",
    "WeightsNotAvailableError",
    "WeightsVerificationError",
    "cached_path",
    "check_local_file",
    "download_url",
    "expected_hash",
    "expected_sha256",
    "file_digests",
    "fetch_weights",
    "get_spec",
    "is_offline",
    "list_specs",
    "register_local_file",
    "resolve_weights",
    "sha256_file",
    "sidecar_path",
    "verify_weights",
    "weights_dir",
    "weights_status",
]
