"""``napari-focsam weights ...``: list, download, verify, path and their exit codes."""

from __future__ import annotations

import argparse

import pytest

from napari_focsam.cli import weights as weights_cli
from napari_focsam.cli.exits import run_command
from napari_focsam.weights import WEIGHTS, sidecar_path


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    weights_cli.add_parser(sub)
    args = parser.parse_args(["weights", *argv])
    assert args.command == "weights"
    return run_command(args)


def test_download_then_path_verify_and_list(server, specs, cache, capsys):
    assert run("download", "test_good", "--cache-dir", str(cache)) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(cache / "good.pth")
    assert "good.pth" in out.err  # the progress bar

    assert run("path", "test_good", "--cache-dir", str(cache)) == 0
    assert capsys.readouterr().out.strip() == str(cache / "good.pth")

    assert run("verify", "test_good", "--cache-dir", str(cache)) == 0
    assert "matches the published hash" in capsys.readouterr().out

    assert run("list", "--cache-dir", str(cache), "--check") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "family", "status", "size", "path"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(WEIGHTS)
    assert rows["test_good"][2] == "cached"
    assert rows["test_good"][-1] == str(cache / "good.pth")
    assert rows["test_tofu"][2] == "missing"
    assert rows["sam_vit_h"][1:5] == ["sam", "missing", "~2.4", "GiB"]


def test_download_from_mirror_without_progress(server, specs, cache, capsys, monkeypatch):
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(cache))
    assert run("download", "test_tofu", "--url", server.url, "--no-progress") == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(cache / "tofu.pt")
    assert "tofu.pt" not in out.err.replace(str(cache), "")
    assert sidecar_path(cache / "tofu.pt").is_file()
    assert run("verify", "test_tofu") == 0
    assert "matches the recorded hash" in capsys.readouterr().out


def test_path_does_not_need_the_file(specs, cache, capsys, monkeypatch):
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(cache))
    assert run("path", "sam_vit_b") == 0
    assert capsys.readouterr().out.strip() == str(cache / "sam_vit_b_01ec64.pth")


@pytest.mark.parametrize("argv", [("download", "sam_vit_bb"), ("path", "sam_vit_bb"),
                                  ("verify", "sam_vit_bb")])
def test_unknown_model_exits_2_with_a_suggestion(argv, capsys):
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-focsam: error: unknown model 'sam_vit_bb'")
    assert "Did you mean 'sam_vit_b'?" in err


def test_network_errors_exit_3(server, specs, cache, closed_port_url, capsys):
    assert run("download", "test_good", "--cache-dir", str(cache), "--url", closed_port_url) == 3
    assert "connection failed" in capsys.readouterr().err
    assert run("download", "test_good", "--cache-dir", str(cache), "--url",
               server.url + "/missing") == 3
    assert "HTTP 404" in capsys.readouterr().err


def test_hash_mismatch_exits_4(server, specs, cache, capsys, tmp_path):
    assert run("download", "test_bad", "--cache-dir", str(cache), "--no-progress") == 4
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert not cache.exists() or not any(cache.iterdir())
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(server.contents["bad.pth"])
    assert run("verify", "test_good", "--file", str(wrong)) == 4
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert run("verify", "test_good", "--cache-dir", str(cache)) == 4  # not downloaded
    assert "not found" in capsys.readouterr().err


def test_verify_local_file_ok(server, specs, capsys, tmp_path):
    local = tmp_path / "copy.pth"
    local.write_bytes(server.contents["good.pth"])
    assert run("verify", "test_good", "--file", str(local)) == 0
    assert str(local) in capsys.readouterr().out


def test_offline_and_missing_exits_5(server, specs, cache, capsys, monkeypatch):
    monkeypatch.setenv("NAPARI_FOCSAM_OFFLINE", "1")
    assert run("download", "test_good", "--cache-dir", str(cache)) == 5
    assert "offline" in capsys.readouterr().err
    assert server.requests == []


def test_weights_needs_a_subcommand():
    parser = argparse.ArgumentParser()
    weights_cli.add_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["weights"])
    assert info.value.code == 2
