"""The weights cache: where checkpoints live, their hashes, and checking a file.

Environment variables
---------------------
NAPARI_FOCSAM_WEIGHTS_DIR
    Cache folder (default: ``platformdirs.user_cache_dir("napari-focsam")/weights``).
NAPARI_FOCSAM_WEIGHTS_URL
    Base URL of a mirror: a file is then fetched from ``<base>/<spec.filename>``.
NAPARI_FOCSAM_OFFLINE
    ``1`` / ``true`` / ``yes`` / ``on``: never use the network.

Checkpoints are checked against their published hash: SHA-256 (Meta's releases) or
xxHash-128 (micro-sam's model zoo). Those without one (SAM 2.0, FocSAM) get their SHA-256
recorded in ``<file>.sha256`` on first download ("trust on first use"), once they load as a
checkpoint, and are checked against it from then on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Literal

from ..families import WeightSpec
from .registry import HashMismatchError, WeightsVerificationError, get_spec

logger = logging.getLogger(__name__)

ENV_CACHE_DIR = "NAPARI_FOCSAM_WEIGHTS_DIR"
ENV_BASE_URL = "NAPARI_FOCSAM_WEIGHTS_URL"
ENV_OFFLINE = "NAPARI_FOCSAM_OFFLINE"
#: Bytes read at a time when hashing (files are up to a few GB).
HASH_CHUNK_SIZE = 1 << 20
SIDECAR_SUFFIX = ".sha256"
_TRUE = {"1", "true", "yes", "on"}
_HTML_MARKERS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml")
_TORCH_MAGICS = (b"PK\x03\x04", b"\x80")

__all__ = [
    "ENV_BASE_URL",
    "ENV_CACHE_DIR",
    "ENV_OFFLINE",
    "FileHasher",
    "cached_path",
    "check_local_file",
    "check_structure",
    "default_file_mode",
    "download_url",
    "expected_hash",
    "expected_sha256",
    "file_digests",
    "format_problem",
    "is_offline",
    "read_recorded_sha256",
    "record_sha256",
    "register_local_file",
    "sha256_file",
    "sidecar_path",
    "verify_weights",
    "weights_dir",
    "weights_status",
]

WeightsStatus = Literal["missing", "cached", "unverified"]

# ------------------------------------------------------------------------------ locations / env
def weights_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The weights cache folder: ``cache_dir``, else ``$NAPARI_FOCSAM_WEIGHTS_DIR``, else
    ``<user cache dir>/napari-focsam/weights``. Not created here."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-focsam")) / "weights"


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else whether ``$NAPARI_FOCSAM_OFFLINE`` is set to a true value."""
    if offline is not None:
        return bool(offline)
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in _TRUE


def cached_path(model_id: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the checkpoint of ``model_id`` is (or will be) in the cache."""
    return weights_dir(cache_dir) / get_spec(model_id).filename


def download_url(model_id: str, url: str | None = None) -> str:
    """The URL ``model_id`` is fetched from: ``<base>/<filename>`` for a base URL given as
    ``url`` or ``$NAPARI_FOCSAM_WEIGHTS_URL``, else the official URL."""
    spec = get_spec(model_id)
    base = url if url else os.environ.get(ENV_BASE_URL, "").strip()
    return f"{base.rstrip('/')}/{spec.filename}" if base else spec.url


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The ``<file>.sha256`` holding the first-recorded hash of ``path``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_recorded_sha256(path: Path) -> str | None:
    """The hash recorded in ``<path>.sha256`` on first download, or None."""
    side = sidecar_path(path)
    try:
        text = side.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return text[0].lower() if text else None


def record_sha256(path: Path, digest: str) -> None:
    """Write ``digest`` to ``<path>.sha256`` (``sha256sum`` format), atomically."""
    side = sidecar_path(path)
    tmp = side.with_name(f"{side.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{digest}  {path.name}\n", encoding="ascii")
    os.replace(tmp, side)


def expected_hash(model_id: str, path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(algorithm, hex)`` the file must match: the published hash (SHA-256 or xxHash-128),
    else the SHA-256 recorded next to it on first download; None when there is neither."""
    spec = get_spec(model_id)
    published = spec.published_hash
    if published is not None:
        return published
    recorded = read_recorded_sha256(Path(path))
    return None if recorded is None else ("sha256", recorded)


def expected_sha256(model_id: str, path: str | os.PathLike[str]) -> str | None:
    """The published or recorded SHA-256 of ``path`` (None for an xxHash-128 published hash:
    see `expected_hash`)."""
    expected = expected_hash(model_id, path)
    return expected[1] if expected is not None and expected[0] == "sha256" else None


class FileHasher:
    """SHA-256 and xxHash-128 of a byte stream, computed together (`update` with each chunk)."""

    def __init__(self) -> None:
        import xxhash

        self._hashes = {"sha256": hashlib.sha256(), "xxh128": xxhash.xxh128()}

    def update(self, data: bytes) -> None:
        for h in self._hashes.values():
            h.update(data)

    def hexdigests(self) -> dict[str, str]:
        """``{"sha256": hex, "xxh128": hex}``."""
        return {name: h.hexdigest() for name, h in self._hashes.items()}


#: Digests of files already hashed in this process, by (path, size, mtime in ns).
_DIGESTS: dict[tuple[str, int, int], dict[str, str]] = {}


def file_digests(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{"sha256": hex, "xxh128": hex}`` of a file, read once in :data:`HASH_CHUNK_SIZE`
    chunks (remembered for the process while the file's size and modification time stay the
    same)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    cached = _DIGESTS.get(key)
    if cached is None:
        hasher = FileHasher()
        with open(resolved, "rb") as f:
            while chunk := f.read(HASH_CHUNK_SIZE):
                hasher.update(chunk)
        cached = _DIGESTS[key] = hasher.hexdigests()
    return dict(cached)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file (see `file_digests`)."""
    return file_digests(path)["sha256"]


def default_file_mode() -> int:
    """The permissions ``open`` gives a new file under the process umask (downloads go through
    temporary files, which are created 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


# ---------------------------------------------------------------------------------- verification
def _looks_like_html(head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(_HTML_MARKERS)


def format_problem(spec: WeightSpec, path: Path, zip_expected: bool | None = None) -> str | None:
    """Why ``path`` cannot be ``spec``'s file, judged from its size and first bytes (a zip
    archive is also opened when ``zip_expected``; default: a ``.zip`` file for a ``.zip``
    spec, as a ``.pth`` taken out of it is fine too); None if it looks right."""
    if zip_expected is None:
        zip_expected = spec.filename.endswith(".zip") and path.suffix.lower() == ".zip"
    size = path.stat().st_size
    if size == 0:
        return f"{path} is empty (0 bytes)"
    with path.open("rb") as f:
        head = f.read(512)
    if _looks_like_html(head):
        return f"{path} is an HTML page ({size} bytes), not a checkpoint"
    if zip_expected:
        if not zipfile.is_zipfile(path):
            return f"{path} ({size} bytes) is not a zip archive (truncated or corrupt?)"
    elif not head.startswith(_TORCH_MAGICS):
        return f"{path} ({size} bytes) is not a PyTorch checkpoint (starts with {head[:8]!r})"
    return None


def check_structure(spec: WeightSpec, path: Path) -> None:
    """Read `path` as a checkpoint of `spec`'s family (slow: loads it with torch).

    Raises
    ------
    WeightsVerificationError
        It cannot be read (truncated, corrupt) or has another family's layout.
    """
    from ..families import expect_family, get_family
    from ..models.checkpoint import CheckpointError

    family = get_family(spec.family)
    try:
        expect_family(family.read(path), family, path)
    except CheckpointError as exc:
        raise WeightsVerificationError(f"{path} cannot be used as {spec.id}: {exc}") from exc


def check_local_file(model_id: str, path: str | os.PathLike[str], *, deep: bool = False) -> Path:
    """Check that `path` can be a checkpoint of `model_id`'s family, without comparing hashes
    (a local file may hold fine-tuned weights; the loader checks every key and shape).

    Parameters
    ----------
    model_id : str
        Registry id.
    path : str or path-like
        The file.
    deep : bool
        Also read it and check its family's layout (slow).

    Returns
    -------
    Path
        The resolved path.

    Raises
    ------
    WeightsVerificationError
        Missing or empty file, an HTML page, not a zip / PyTorch file, or (``deep``) a
        checkpoint of another family.
    """
    spec = get_spec(model_id)
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise WeightsVerificationError(f"checkpoint file for {model_id} not found: {path}")
    problem = format_problem(spec, path, zip_expected=path.suffix.lower() == ".zip")
    if problem:
        raise WeightsVerificationError(f"{problem}; it cannot be a checkpoint of {model_id}")
    if deep:
        check_structure(spec, path)
    return path


def verify_weights(model_id: str, path: str | os.PathLike[str], *, deep: bool = False) -> str:
    """Check that ``path`` is the checkpoint of ``model_id``.

    Parameters
    ----------
    model_id : str
        Registry id.
    path : str or path-like
        The file (a cached one or any local copy).
    deep : bool
        Also load it and check its model family (slow: reads the whole checkpoint with torch).

    Returns
    -------
    str
        The file's SHA-256 (hex).

    Raises
    ------
    UnknownModelError
        Unregistered ``model_id``.
    WeightsVerificationError
        Missing or empty file, an HTML page, not a zip / PyTorch file, or (``deep``) a
        checkpoint of another family.
    HashMismatchError
        The hash differs from the published one or from the one recorded in ``<path>.sha256``.
    """
    spec = get_spec(model_id)
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsVerificationError(f"weights file for {model_id} not found: {path}")
    problem = format_problem(spec, path)
    if problem:
        raise WeightsVerificationError(f"{problem}; get {spec.filename} from {spec.manual_url}")
    digests = file_digests(path)
    expected = expected_hash(model_id, path)
    if expected is not None and digests[expected[0]] != expected[1]:
        hint = ("" if spec.published_hash else f"The hash was recorded on first download in "
                f"{sidecar_path(path)}; delete that file if the new one is legitimate.")
        raise HashMismatchError(str(path), expected[1], digests[expected[0]], hint=hint,
                                algorithm=expected[0])
    if deep:
        check_structure(spec, path)
    return digests["sha256"]


def weights_status(model_id: str, cache_dir: str | os.PathLike[str] | None = None, *,
                   check_hash: bool = False) -> WeightsStatus:
    """State of ``model_id`` in the cache, for the GUI.

    Returns
    -------
    {'missing', 'cached', 'unverified'}
        ``'missing'``: no file. ``'cached'``: a non-empty file with a reference hash (published
        or recorded); with ``check_hash=True`` (slow for GB files) also matching it.
        ``'unverified'``: a file with no reference hash yet, an empty one, or (``check_hash``)
        one that fails verification. :func:`fetch_weights` always verifies before use.
    """
    path = cached_path(model_id, cache_dir)
    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0 or expected_hash(model_id, path) is None:
        return "unverified"
    if check_hash:
        try:
            verify_weights(model_id, path)
        except WeightsVerificationError:
            return "unverified"
    return "cached"


def register_local_file(model_id: str, path: str | os.PathLike[str], *, copy: bool = False,
                        cache_dir: str | os.PathLike[str] | None = None, deep: bool = False) -> Path:
    """Use a checkpoint obtained by hand (e.g. downloaded in a browser).

    Parameters
    ----------
    model_id : str
        Registry id.
    path : str or path-like
        The file.
    copy : bool
        False: only verify it and return its path. True: copy it into the cache (atomically),
        recording its hash when none is published, so :func:`fetch_weights` finds it offline.
    cache_dir : str or path-like, optional
        Cache folder for ``copy=True``.
    deep : bool
        Also check its model family (slow).

    Returns
    -------
    Path
        ``path`` (resolved) or the cached copy.
    """
    src = Path(path).expanduser().resolve()
    digest = verify_weights(model_id, src, deep=deep)
    if not copy:
        return src
    target = cached_path(model_id, cache_dir)
    if src == target.resolve():
        return target
    if src.suffix.lower() != target.suffix.lower():
        raise WeightsVerificationError(
            f"{src} is not a {target.suffix} file like {target.name}: copy that file into the "
            f"cache, or use {src.name} in place (copy=False)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(dir=target.parent, prefix=f"{target.name}.", suffix=".part")
    part = Path(part_name)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            shutil.copyfileobj(inp, out, 16 << 20)
        if not get_spec(model_id).published_hash:
            check_structure(get_spec(model_id), part)  # a hash is recorded for sound files only
            record_sha256(target, digest)
        os.chmod(part, default_file_mode())
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    logger.info("copied %s to %s", src, target)
    return target
