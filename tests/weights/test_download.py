"""Downloading, caching and verifying checkpoints against a local HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path

import pytest

from napari_focsam.weights import (
    WEIGHTS,
    DownloadError,
    HashMismatchError,
    WeightsError,
    WeightsNotAvailableError,
    WeightSpec,
    WeightsVerificationError,
    cached_path,
    download,
    fetch_weights,
    register_local_file,
    resolve_weights,
    sidecar_path,
    verify_weights,
    weights_dir,
    weights_status,
)


def files_in(folder: Path) -> list[str]:
    """Every file name in ``folder`` (hidden ones too), sorted; [] if it does not exist."""
    return sorted(os.listdir(folder)) if folder.exists() else []


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------- happy path
def test_download_verifies_then_serves_from_cache_without_network(server, specs, cache,
                                                                  closed_port_url):
    path = fetch_weights("test_good", cache_dir=cache)
    assert path == cache / "good.pth"
    assert path.read_bytes() == server.contents["good.pth"]
    assert server.requests == ["/good.pth"]
    assert files_in(cache) == ["good.pth"]  # no .part, no sidecar for a published hash

    # second call: no request, even with an unreachable URL
    assert fetch_weights("test_good", cache_dir=cache, url=closed_port_url) == path
    assert fetch_weights("test_good", cache_dir=cache) == path
    assert server.requests == ["/good.pth"]
    assert weights_status("test_good", cache, check_hash=True) == "cached"


def test_url_argument_is_a_mirror_base(server, specs, cache):
    (server.root / "mirror").mkdir()
    server.serve("mirror/good.pth", server.contents["good.pth"])
    path = fetch_weights("test_good", cache_dir=cache, url=server.url + "/mirror/")
    assert path.read_bytes() == server.contents["good.pth"]
    assert server.requests == ["/mirror/good.pth"]


def test_env_overrides_cache_dir_and_base_url(server, specs, monkeypatch, tmp_path,
                                              closed_port_url):
    # the official URL is dead: only the mirror from the environment can work
    monkeypatch.setitem(WEIGHTS, "test_good",
                        dataclasses.replace(specs["test_good"], url=f"{closed_port_url}/good.pth"))
    env_cache = tmp_path / "env-cache"
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(env_cache))
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_URL", server.url + "/")
    assert weights_dir() == env_cache
    assert weights_dir(tmp_path / "explicit") == tmp_path / "explicit"
    path = fetch_weights("test_good")
    assert path == env_cache / "good.pth"
    assert server.requests == ["/good.pth"]
    # an explicit url= wins over the environment
    path.unlink()
    with pytest.raises(DownloadError):
        fetch_weights("test_good", url=closed_port_url)


def test_default_cache_dir_is_user_cache(monkeypatch):
    import platformdirs

    monkeypatch.delenv("NAPARI_FOCSAM_WEIGHTS_DIR")
    assert weights_dir() == Path(platformdirs.user_cache_dir("napari-focsam")) / "weights"


def test_progress_callback_counts_up_to_the_total(server, specs, cache, monkeypatch):
    monkeypatch.setattr(download, "DOWNLOAD_CHUNK_SIZE", 1024)
    calls: list[tuple[int, int | None]] = []
    fetch_weights("test_good", cache_dir=cache, progress=lambda done, total: calls.append((done, total)))
    size = len(server.contents["good.pth"])
    assert len(calls) >= size // 1024
    done = [d for d, _ in calls]
    assert done == sorted(set(done))  # strictly increasing
    assert all(total == size for _, total in calls)
    assert calls[-1] == (size, size)


def test_progress_without_content_length_ends_at_size(server, specs, cache, monkeypatch):
    monkeypatch.setattr(download, "DOWNLOAD_CHUNK_SIZE", 4096)
    calls: list[tuple[int, int | None]] = []
    fetch_weights("test_good", cache_dir=cache, url=server.url + "/nolength",
                  progress=lambda done, total: calls.append((done, total)))
    size = len(server.contents["good.pth"])
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (size, size)


def test_tqdm_progress_bar_goes_to_stderr(server, specs, cache, capsys):
    fetch_weights("test_good", cache_dir=cache, progress=True)
    assert "good.pth" in capsys.readouterr().err


def test_failing_callback_aborts_and_leaves_nothing(server, specs, cache):
    def cancel(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_weights("test_good", cache_dir=cache, progress=cancel)
    assert files_in(cache) == []


# ----------------------------------------------------------------------------------- failures
def test_hash_mismatch_deletes_the_download(server, specs, cache):
    with pytest.raises(HashMismatchError) as info:
        fetch_weights("test_bad", cache_dir=cache)
    err = info.value
    assert err.expected == specs["test_bad"].sha256
    assert err.actual == sha(server.contents["bad.pth"])
    assert err.url == f"{server.url}/bad.pth"
    assert err.expected in str(err) and err.actual in str(err) and err.url in str(err)
    assert files_in(cache) == []
    assert weights_status("test_bad", cache) == "missing"


@pytest.mark.parametrize("model_id", ["test_good", "test_tofu"])
def test_cut_off_transfer_leaves_nothing(server, specs, cache, model_id):
    with pytest.raises(DownloadError) as info:
        fetch_weights(model_id, cache_dir=cache, url=server.url + "/partial")
    assert "/partial/" in str(info.value)
    assert "cut off" in str(info.value) or "stopped at" in str(info.value)
    assert files_in(cache) == []  # neither the file, a .part, nor a recorded hash


def test_connection_refused(specs, cache, closed_port_url):
    with pytest.raises(DownloadError) as info:
        fetch_weights("test_good", cache_dir=cache, url=closed_port_url)
    assert info.value.url == f"{closed_port_url}/good.pth"
    assert "connection failed" in str(info.value)
    assert files_in(cache) == []


def test_http_404(server, specs, cache):
    with pytest.raises(DownloadError) as info:
        fetch_weights("test_good", cache_dir=cache, url=server.url + "/missing")
    assert "HTTP 404" in str(info.value)
    assert info.value.url == f"{server.url}/missing/good.pth"
    assert files_in(cache) == []


def test_timeout(server, specs, cache):
    with pytest.raises(DownloadError) as info:
        fetch_weights("test_good", cache_dir=cache, url=server.url + "/hang", timeout=(2.0, 0.2))
    assert "timed out" in str(info.value)
    assert files_in(cache) == []


def test_all_errors_share_a_base():
    for exc in (DownloadError, HashMismatchError, WeightsNotAvailableError,
                WeightsVerificationError):
        assert issubclass(exc, WeightsError)


# ------------------------------------------------------------------------------------ offline
@pytest.mark.parametrize("how", ["argument", "env"])
def test_offline_and_missing(server, specs, cache, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("NAPARI_FOCSAM_OFFLINE", "1")
    with pytest.raises(WeightsNotAvailableError) as info:
        fetch_weights("test_good", cache_dir=cache, offline=True if how == "argument" else None)
    message = str(info.value)
    assert specs["test_good"].url in message
    assert str(cache / "good.pth") in message
    assert "local file" in message and "--weights PATH" in message
    assert "resolve_weights" not in message and "offline=True" not in message  # no API calls
    assert server.requests == []


def test_offline_and_cached(server, specs, cache, monkeypatch):
    path = fetch_weights("test_good", cache_dir=cache)
    monkeypatch.setenv("NAPARI_FOCSAM_OFFLINE", "yes")
    assert fetch_weights("test_good", cache_dir=cache) == path
    assert server.requests == ["/good.pth"]


def test_corrupt_cached_file_is_downloaded_again_or_reported_offline(server, specs, cache):
    path = fetch_weights("test_good", cache_dir=cache)
    data = path.read_bytes()
    path.write_bytes(data[:1000])  # truncated outside our control
    assert weights_status("test_good", cache, check_hash=True) == "unverified"
    with pytest.raises(WeightsNotAvailableError, match="not valid"):
        fetch_weights("test_good", cache_dir=cache, offline=True)
    assert fetch_weights("test_good", cache_dir=cache) == path
    assert path.read_bytes() == data
    assert len(server.requests) == 2


# --------------------------------------------------------------------------------------- TOFU
def test_unpublished_hash_is_recorded_then_enforced(server, specs, cache, caplog):
    with caplog.at_level(logging.WARNING, logger="napari_focsam.weights"):
        path = fetch_weights("test_tofu", cache_dir=cache)
    data = server.contents["tofu.pt"]
    side = sidecar_path(path)
    assert side.read_text().split() == [sha(data), "tofu.pt"]
    assert "no published hash" in caplog.text
    assert files_in(cache) == ["tofu.pt", "tofu.pt.sha256"]
    assert weights_status("test_tofu", cache) == "cached"
    assert verify_weights("test_tofu", path) == sha(data)

    # tampered later: detected by verify and by an offline fetch; an online fetch restores it
    path.write_bytes(data[:-1] + b"!")
    with pytest.raises(HashMismatchError, match="recorded on first download"):
        verify_weights("test_tofu", path)
    with pytest.raises(WeightsNotAvailableError):
        fetch_weights("test_tofu", cache_dir=cache, offline=True)
    assert fetch_weights("test_tofu", cache_dir=cache).read_bytes() == data

    # the server now has other bytes: refused against the recorded hash
    path.unlink()
    server.serve("tofu.pt", data + b"changed")
    with pytest.raises(HashMismatchError) as info:
        fetch_weights("test_tofu", cache_dir=cache)
    assert str(side) in str(info.value)
    assert files_in(cache) == ["tofu.pt.sha256"]


def test_unpublished_cached_file_without_record_is_unverified_then_recorded(specs, cache, server):
    cache.mkdir()
    (cache / "tofu.pt").write_bytes(server.contents["tofu.pt"])
    assert weights_status("test_tofu", cache) == "unverified"
    fetch_weights("test_tofu", cache_dir=cache, offline=True)
    assert weights_status("test_tofu", cache) == "cached"
    assert sidecar_path(cache / "tofu.pt").is_file()


# ------------------------------------------------------------------------------- Google Drive
def test_gdrive_html_page_gives_manual_instructions(server, specs, cache):
    with pytest.raises(DownloadError) as info:
        fetch_weights("test_gdrive_html", cache_dir=cache, url=server.url)
    message = str(info.value)
    assert "HTML page" in message
    assert "https://drive.google.com/file/d/FAKE_DRIVE_ID_123" in message
    assert "local file" in message
    assert files_in(cache) == []


def test_gdrive_zip_is_kept_as_zip_with_recorded_hash(server, specs, cache):
    path = fetch_weights("test_gdrive", cache_dir=cache, url=server.url)
    assert path.name == "focsam_test.zip"
    assert path.read_bytes() == server.contents["focsam_test.zip"]
    assert sidecar_path(path).is_file()


def test_gdrive_non_zip_is_rejected(server, specs, cache):
    server.serve("focsam_test.zip", server.contents["good.pth"][:100])  # zip magic, no archive
    with pytest.raises(DownloadError, match="not a zip archive"):
        fetch_weights("test_gdrive", cache_dir=cache, url=server.url)
    assert files_in(cache) == []


# --------------------------------------------------------------------------------- local files
def test_local_file_is_checked_and_used_in_place(server, specs, cache, tmp_path):
    """A local file is used in place; it is not held to the published hash (fine-tuned
    weights of the architecture are welcome: the loader checks every key and shape), but it
    must look like a checkpoint. Registering it as the cache's copy does check the hash."""
    local = tmp_path / "downloads" / "my copy.pth"
    local.parent.mkdir()
    local.write_bytes(server.contents["good.pth"])
    assert resolve_weights("test_good", local_path=local, cache_dir=cache) == local
    assert register_local_file("test_good", local) == local
    assert files_in(cache) == []
    assert server.requests == []

    local.write_bytes(server.contents["bad.pth"])  # other weights: fine as a local file
    assert resolve_weights("test_good", local_path=local) == local
    with pytest.raises(HashMismatchError):
        register_local_file("test_good", local)
    with pytest.raises(WeightsVerificationError, match="not found"):
        resolve_weights("test_good", local_path=tmp_path / "nope.pth")
    local.write_bytes(b"")
    with pytest.raises(WeightsVerificationError, match="empty"):
        resolve_weights("test_good", local_path=local)
    local.write_bytes(b"<html><body>Sign in</body></html>")
    with pytest.raises(WeightsVerificationError, match="HTML page"):
        resolve_weights("test_good", local_path=local)
    local.write_bytes(server.contents["tofu.pt"])  # a SAM 2 file where SAM is expected
    with pytest.raises(WeightsVerificationError, match="expected a SAM 1"):
        resolve_weights("test_good", local_path=local, deep=True)


def test_a_truncated_download_without_length_is_not_trusted(server, specs, cache):
    """No published hash and no Content-Length: a transfer cut short looks complete; it must
    load as a checkpoint before its hash is recorded."""
    with pytest.raises(DownloadError, match="not a readable checkpoint"):
        fetch_weights("test_tofu", cache_dir=cache, url=f"{server.url}/cut")
    assert files_in(cache) == []  # neither the file nor a recorded hash
    fetch_weights("test_tofu", cache_dir=cache, url=f"{server.url}/nolength")
    assert files_in(cache) == ["tofu.pt", "tofu.pt.sha256"]


def test_downloads_get_the_usual_file_permissions(server, specs, cache):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = fetch_weights("test_good", cache_dir=cache)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600


def test_register_local_file_copy_makes_it_available_offline(server, specs, cache, tmp_path):
    local = tmp_path / "tofu.pt"
    local.write_bytes(server.contents["tofu.pt"])
    cached = register_local_file("test_tofu", local, copy=True, cache_dir=cache)
    assert cached == cached_path("test_tofu", cache)
    assert files_in(cache) == ["tofu.pt", "tofu.pt.sha256"]
    assert fetch_weights("test_tofu", cache_dir=cache, offline=True) == cached
    assert server.requests == []


def test_resolve_without_local_path_fetches(server, specs, cache):
    assert resolve_weights("test_good", cache_dir=cache) == cache / "good.pth"


# ---------------------------------------------------------------------------- deep (family) check
def test_deep_verify_checks_the_model_family(tmp_path, monkeypatch, specs):
    torch = pytest.importorskip("torch")
    sam1 = {f"{p}.w": torch.zeros(2) for p in ("image_encoder.blocks.0", "prompt_encoder",
                                                "mask_decoder")}
    sam2 = {"model": {"image_encoder.trunk.blocks.0.w": torch.zeros(2)}}
    for name, obj in (("sam1.pth", sam1), ("sam2.pt", sam2)):
        torch.save(obj, tmp_path / name)
    for model_id, name in (("test_deep_sam", "sam1.pth"), ("test_deep_sam2", "sam2.pt")):
        spec = WeightSpec(model_id, "sam" if "sam1" in name else "sam2", "x", name,
                          "http://unused/" + name)
        monkeypatch.setitem(WEIGHTS, model_id, spec)
    verify_weights("test_deep_sam", tmp_path / "sam1.pth", deep=True)
    verify_weights("test_deep_sam2", tmp_path / "sam2.pt", deep=True)
    verify_weights("test_deep_sam", tmp_path / "sam2.pt")  # shallow: no family check
    with pytest.raises(WeightsVerificationError, match=r"is a SAM 2 checkpoint.*expected a SAM 1"):
        verify_weights("test_deep_sam", tmp_path / "sam2.pt", deep=True)


def _xxh128(data: bytes) -> str:
    import xxhash

    return xxhash.xxh128(data).hexdigest()


def test_xxh128_published_hashes_are_verified(server, specs, cache, monkeypatch):
    """micro-sam's model zoo publishes xxHash-128: a download is checked against it, a wrong
    one keeps nothing, and `verify_weights` re-checks the cached file with it."""
    good = server.contents["good.pth"]
    monkeypatch.setitem(WEIGHTS, "test_xxh", dataclasses.replace(
        specs["test_good"], id="test_xxh", sha256=None, xxh128=_xxh128(good), filename="good.pth"))
    monkeypatch.setitem(WEIGHTS, "test_xxh_bad", dataclasses.replace(
        specs["test_good"], id="test_xxh_bad", sha256=None, xxh128=_xxh128(good),
        filename="bad.pth", url=f"{server.url}/bad.pth"))
    path = fetch_weights("test_xxh", cache_dir=cache)
    assert path.read_bytes() == good and not sidecar_path(path).exists()  # nothing recorded
    assert verify_weights("test_xxh", path) == sha(good)
    with pytest.raises(HashMismatchError, match="xxHash-128 mismatch") as info:
        fetch_weights("test_xxh_bad", cache_dir=cache)
    assert info.value.algorithm == "xxh128"
    assert files_in(cache) == ["good.pth"]  # the bad download left nothing
    (cache / "good.pth").write_bytes(good + b"tampered")
    with pytest.raises(HashMismatchError, match="xxHash-128"):
        verify_weights("test_xxh", cache / "good.pth")
