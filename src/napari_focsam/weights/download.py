"""Fetch model checkpoints into the weights cache, or use a local copy.

A download is written to a unique ``<file>.<random>.part`` next to its target (the HTTP
transfer itself is pooch's :class:`pooch.HTTPDownloader`) and renamed over the target only
once the transfer is complete and its SHA-256 matches the published hash (or, for checkpoints
without one, the hash recorded on first download); otherwise the part file is deleted, so
nothing incomplete ever looks like a cached checkpoint. See :mod:`.cache` for the environment
variables (cache folder, mirror URL, offline mode).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ..families import WeightSpec
from .cache import (
    ENV_OFFLINE,
    FileHasher,
    cached_path,
    check_local_file,
    check_structure,
    default_file_mode,
    download_url,
    format_problem,
    is_offline,
    read_recorded_sha256,
    record_sha256,
    sidecar_path,
    verify_weights,
)
from .registry import (
    DownloadError,
    HashMismatchError,
    WeightsNotAvailableError,
    WeightsVerificationError,
    get_spec,
)

logger = logging.getLogger(__name__)

#: Bytes requested from the HTTP stream at a time (also the progress granularity).
DOWNLOAD_CHUNK_SIZE = 1 << 20
#: requests timeout: (connect, read between bytes) in seconds.
DEFAULT_TIMEOUT: tuple[float, float] = (15.0, 60.0)

#: ``progress(done_bytes, total_bytes)``; ``total_bytes`` is None when the server sends no size.
ProgressCallback = Callable[[int, "int | None"], None]
PathLike = str | os.PathLike[str]


# -------------------------------------------------------------------------------------- transfer
class _Transfer:
    """Progress object for pooch's HTTPDownloader (it sets ``total``; its own chunk counts are
    ignored) and file-like sink that hashes and counts the bytes actually written."""

    def __init__(self, out: BinaryIO, callback: ProgressCallback | None, bar: bool,
                 name: str) -> None:
        self.out, self.callback, self.name = out, callback, name
        self.total = 0
        self.done = 0
        self.hasher = FileHasher()
        self._want_bar, self._bar = bar, None

    # pooch progress-bar protocol (total is set as an attribute)
    def update(self, n: int) -> None:  # the byte counts come from write()
        pass

    def reset(self) -> None:
        pass

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # file protocol used by pooch
    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.hasher.update(data)
        self.done += len(data)
        if self._want_bar and self._bar is None:
            with contextlib.suppress(ImportError):
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total or None, unit="B", unit_scale=True,
                                 unit_divisor=1024, desc=self.name, file=sys.stderr, leave=True)
            self._want_bar = False
        if self._bar is not None:
            self._bar.update(len(data))
        if self.callback is not None:
            self.callback(self.done, self.total or None)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def _request_failure(exc: Exception, timeout: Any) -> str:
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, requests.Timeout):
        return f"timed out (timeout {timeout} s): {exc}"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed (no network, or the server refused or dropped it): {exc}"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ContentDecodingError)):
        return f"the transfer was cut off before the end: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _download(spec: WeightSpec, url: str, target: Path, progress: bool | ProgressCallback | None,
              timeout: Any) -> None:
    """Download ``url`` to ``target`` through a verified ``.part`` file (see module doc)."""
    import pooch
    import requests

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(dir=target.parent, prefix=f"{target.name}.", suffix=".part")
    part = Path(part_name)
    callback = progress if callable(progress) else None
    logger.info("downloading %s from %s to %s", spec.id, url, target)
    try:
        with os.fdopen(fd, "wb") as out:
            transfer = _Transfer(out, callback, progress is True, spec.filename)
            downloader = pooch.HTTPDownloader(progressbar=transfer, chunk_size=DOWNLOAD_CHUNK_SIZE,
                                              timeout=timeout,
                                              headers={"Accept-Encoding": "identity"})
            try:
                downloader(url, transfer, None)
            except requests.RequestException as exc:
                raise DownloadError(url, _request_failure(exc, timeout)) from exc
            except OSError as exc:
                raise DownloadError(url, f"could not write {part}: {exc}") from exc
            finally:
                transfer.close()
        if transfer.total and transfer.done != transfer.total:
            raise DownloadError(url, f"the transfer stopped at {transfer.done} of "
                                     f"{transfer.total} bytes")
        problem = format_problem(spec, part, zip_expected=spec.filename.endswith(".zip"))
        if problem:
            raise DownloadError(url, _payload_hint(spec, problem.replace(str(part), "the response")))
        digests = transfer.hasher.hexdigests()
        actual = digests["sha256"]
        expected = spec.published_hash
        if expected is None:
            recorded = read_recorded_sha256(target)
            expected = None if recorded is None else ("sha256", recorded)
        if expected is not None and digests[expected[0]] != expected[1]:
            hint = ("The file on the server differs from the one whose hash was recorded on "
                    f"first download; delete {sidecar_path(target)} to accept it."
                    if not spec.published_hash else "Nothing was saved; try again or use a local "
                    "copy.")
            raise HashMismatchError(str(target), expected[1], digests[expected[0]], url, hint,
                                    algorithm=expected[0])
        if expected is None:
            try:  # nothing vouches for the bytes: they must at least load as a checkpoint
                check_structure(spec, part)
            except WeightsVerificationError as exc:
                raise DownloadError(url, f"the downloaded file is not a readable checkpoint "
                                         f"(a transfer cut short?): {exc}") from exc
            record_sha256(target, actual)
            logger.warning("%s has no published hash; recorded its SHA-256 %s in %s and will "
                           "check the file against it from now on", spec.id, actual,
                           sidecar_path(target))
        os.chmod(part, default_file_mode())
        os.replace(part, target)
        if callback is not None and not transfer.total:
            callback(transfer.done, transfer.done)
        logger.info("saved %s (%d bytes, sha256 %s)", target, transfer.done, actual)
    finally:
        part.unlink(missing_ok=True)


def _payload_hint(spec: WeightSpec, problem: str) -> str:
    if spec.source == "gdrive":
        return (f"{problem}. Google Drive answered with a web page instead of the file (download "
                f"quota exceeded or a confirmation page). Download it in a browser from "
                f"{spec.manual_url} and choose it as the model's local file (or put it at "
                f"{cached_path(spec.id)}).")
    return f"{problem} (a proxy or captive portal page?); download {spec.manual_url} by hand"


def _offline_message(spec: WeightSpec, target: Path, why: str) -> str:
    return (f"{spec.id}: {why} and downloads are off (offline mode, {ENV_OFFLINE}), so it is "
            f"not downloaded. Download {spec.manual_url} on a machine with internet access and "
            f"put it at {target}, or choose a local copy of the file as the model's local file "
            "(--weights PATH on the command line).")


# ------------------------------------------------------------------------------------ public API
def fetch_weights(model_id: str, *, cache_dir: PathLike | None = None, url: str | None = None,
                  offline: bool | None = None, progress: bool | ProgressCallback | None = None,
                  timeout: Any = DEFAULT_TIMEOUT) -> Path:
    """The cached checkpoint of ``model_id``, downloaded first if needed.

    A cached file is verified (SHA-256) before it is returned, without using the network; one
    that fails verification is downloaded again (or, offline, reported).

    Parameters
    ----------
    model_id : str
        Registry id, e.g. ``"sam_vit_b"``.
    cache_dir : str or path-like, optional
        Cache folder (default: see :func:`~napari_focsam.weights.cache.weights_dir`).
    url : str, optional
        Base URL of a mirror: the file is fetched from ``<url>/<filename>``. Default:
        ``$NAPARI_FOCSAM_WEIGHTS_URL``, else the official URL.
    offline : bool, optional
        Never use the network (default: ``$NAPARI_FOCSAM_OFFLINE``).
    progress : bool or callable, optional
        True: a tqdm bar on stderr. A callable: called as ``progress(done_bytes, total_bytes)``
        after each chunk from the downloading thread (``total_bytes`` None if unknown); the last
        call has ``done_bytes == total_bytes``. An exception raised by it aborts the download
        (nothing is kept) and propagates.
    timeout : float or (float, float)
        requests timeout in seconds (connect, read).

    Returns
    -------
    Path
        The verified file.

    Raises
    ------
    UnknownModelError
        Unregistered ``model_id``.
    WeightsNotAvailableError
        Offline and no valid cached file.
    DownloadError
        Network failure, HTTP error, timeout, cut-off transfer, or a web page instead of the file.
    HashMismatchError
        The downloaded file's hash is not the expected one (nothing is saved).
    """
    spec = get_spec(model_id)
    target = cached_path(model_id, cache_dir)
    offline = is_offline(offline)
    why = "the file is not in the weights cache"
    if target.is_file():
        try:
            digest = verify_weights(model_id, target)
        except WeightsVerificationError as exc:
            if offline:
                raise WeightsNotAvailableError(
                    model_id, str(target),
                    _offline_message(spec, target, f"the cached file is not valid ({exc})")) from exc
            logger.warning("cached %s is not valid (%s); downloading it again", target, exc)
        else:
            if not spec.published_hash and read_recorded_sha256(target) is None:
                check_structure(spec, target)  # a hash is recorded for sound files only
                record_sha256(target, digest)
                logger.warning("%s has no published SHA-256; recorded the cached file's (%s) in %s",
                               model_id, digest, sidecar_path(target))
            return target
    if offline:
        raise WeightsNotAvailableError(model_id, str(target), _offline_message(spec, target, why))
    _download(spec, download_url(model_id, url), target, progress, timeout)
    return target


def resolve_weights(model_id: str, *, local_path: PathLike | None = None, deep: bool = False,
                    **fetch_kwargs: Any) -> Path:
    """The checkpoint file to load for ``model_id``: ``local_path`` if given, else
    :func:`fetch_weights` with ``fetch_kwargs`` (``cache_dir``, ``url``, ``offline``,
    ``progress``, ``timeout``).

    A local file is not compared with the published hash: it may hold fine-tuned weights of
    the architecture (the loader checks every key and shape). It is checked to be a PyTorch or
    zip file (``deep``: also read as a checkpoint of the model's family).

    Raises
    ------
    WeightsVerificationError
        ``local_path`` is missing, empty, an HTML page, or (``deep``) not a checkpoint of the
        model's family.
    """
    if local_path is None:
        return fetch_weights(model_id, **fetch_kwargs)
    return check_local_file(model_id, local_path, deep=deep)
