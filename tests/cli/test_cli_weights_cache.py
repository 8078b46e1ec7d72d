"""``napari-focsam weights download`` with a cache folder that cannot be used, and Ctrl-C in
the middle of a transfer: one line and the documented exit code, nothing left behind."""

from __future__ import annotations

import errno
import os

import pytest

from napari_focsam.cli import main


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the download started")

    monkeypatch.setattr("napari_focsam.cli.weights.fetch_weights", refuse)


@pytest.mark.parametrize("where", ["file", "inside-a-file"])
def test_a_file_as_cache_dir_is_refused_before_the_download(tmp_path, capsys, monkeypatch,
                                                            where):
    (tmp_path / "afile").write_text("x")
    cache = tmp_path / "afile" if where == "file" else tmp_path / "afile" / "sub"
    _no_download(monkeypatch)
    assert main(["weights", "download", "sam_vit_b", "--cache-dir", str(cache)]) == 2
    err = _one_line(capsys)
    assert err.startswith("napari-focsam: error: the weights cache ") and "not a folder" in err
    assert "--cache-dir" in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="POSIX permissions (root writes anywhere)")
def test_a_read_only_cache_dir_is_refused_before_the_download(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "ro"
    cache.mkdir()
    cache.chmod(0o555)
    _no_download(monkeypatch)
    try:
        assert main(["weights", "download", "sam_vit_b", "--cache-dir", str(cache)]) == 2
    finally:
        cache.chmod(0o755)
    assert "no permission to write in the weights cache" in _one_line(capsys)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_a_cache_dir_that_fails_while_writing_is_one_line(tmp_path, capsys, monkeypatch, code):
    def failing(*args, **kwargs):  # what mkdir / mkstemp raise on a read-only or full disk
        raise OSError(code, os.strerror(code), str(tmp_path / "cache"))

    monkeypatch.setattr("napari_focsam.cli.weights.fetch_weights", failing)
    assert main(["weights", "download", "sam_vit_b", "--cache-dir",
                 str(tmp_path / "cache")]) == 2
    err = _one_line(capsys)
    assert f"cannot write in the weights cache {tmp_path / 'cache'}: {os.strerror(code)}" in err


def test_ctrl_c_during_a_download_leaves_nothing(tmp_path, capsys, monkeypatch):
    import pooch

    def transfer(self, url, output_file, pooch_instance, check_only=False):
        output_file.write(b"\0" * 4096)  # the first chunks arrived, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", transfer)
    cache = tmp_path / "cache"
    assert main(["weights", "download", "sam_vit_b", "--cache-dir", str(cache),
                 "--no-progress"]) == 130
    assert capsys.readouterr().err == ("napari-focsam: interrupted; nothing written (the "
                                       "partial download is deleted)\n")
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]
