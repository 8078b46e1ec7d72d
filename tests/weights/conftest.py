"""Fixtures for the weights tests: a local HTTP server and synthetic registry entries.

No test here touches the network or the user's cache: the ``NAPARI_FOCSAM_*`` variables are
cleared and the cache is pointed at a temporary folder for every test.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import socketserver
import threading
import time
import zipfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from napari_focsam.weights import WEIGHTS, WeightSpec

ENV_VARS = ("NAPARI_FOCSAM_WEIGHTS_DIR", "NAPARI_FOCSAM_WEIGHTS_URL", "NAPARI_FOCSAM_OFFLINE")
GDRIVE_ID = "FAKE_DRIVE_ID_123"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_checkpoint(n: int, seed: int) -> bytes:
    """Bytes that pass the cheap format check (zip magic) but are otherwise random."""
    return b"PK\x03\x04" + (hashlib.sha256(str(seed).encode()).digest() * (n // 32 + 1))[:n]


def saved(obj: object) -> bytes:
    """``torch.save`` bytes of `obj`."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def sam2_layout_checkpoint(n: int = 3000) -> bytes:
    """A small file in SAM 2's layout (``{"model": ...}`` with trunk keys): it loads as a SAM 2
    checkpoint, which checkpoints without a published hash must before their hash is recorded."""
    import torch

    return saved({"model": {"image_encoder.trunk.pos_embed": torch.arange(n, dtype=torch.float32)}})


def focsam_layout_checkpoint() -> bytes:
    import torch

    return saved({"meta": {}, "state_dict": {"backbone.pos_embed": torch.zeros(4),
                                             "decode_head.w": torch.ones(3)}})


def fake_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("focsam/iter_160000.pth", focsam_layout_checkpoint())
    return buf.getvalue()


HTML_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>"
             b"<body>Google Drive can't scan this file for viruses.</body></html>")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; ``/partial/<f>`` announces more bytes than it sends, ``/hang/<f>``
    waits before answering, ``/nolength/<f>`` sends no Content-Length, ``/cut/<f>`` sends the
    first half of the file without a Content-Length (a truncation the client cannot see)."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def _body(self, name: str) -> bytes | None:
        path = Path(self.directory) / name
        return path.read_bytes() if path.is_file() else None

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.server.requests.append(self.path)
        kind, _, rest = self.path.lstrip("/").partition("/")
        if kind == "hang":
            time.sleep(1.0)
        if kind in ("partial", "nolength", "cut") and (body := self._body(rest)) is not None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if kind == "partial":
                self.send_header("Content-Length", str(len(body) * 2))
                body = body[: len(body) // 2]
            elif kind == "cut":
                body = body[: len(body) // 2]
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        if kind == "hang":
            self.path = "/" + rest
        super().do_GET()


class _LocalServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:  # skip HTTPServer's reverse DNS lookup (slow offline)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address) -> None:
        # Clients that give up mid-transfer (the tests of cut-off, cancelled and timed-out
        # downloads) make the handler's writes fail with BrokenPipe / ConnectionReset: expected.
        pass


@dataclass
class Server:
    url: str
    root: Path
    requests: list[str]
    contents: dict[str, bytes] = field(default_factory=dict)

    def serve(self, name: str, data: bytes) -> None:
        (self.root / name).write_bytes(data)
        self.contents[name] = data


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NAPARI_FOCSAM_WEIGHTS_DIR", str(tmp_path / "default-cache"))


@pytest.fixture
def server(tmp_path):
    """A ThreadingHTTPServer (in a thread) on 127.0.0.1 serving synthetic files from a temporary folder."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = _LocalServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    srv = Server(f"http://127.0.0.1:{httpd.server_address[1]}", root, httpd.requests)
    srv.serve("good.pth", fake_checkpoint(20_000, 1))
    srv.serve("bad.pth", fake_checkpoint(20_000, 2))
    srv.serve("tofu.pt", sam2_layout_checkpoint())
    srv.serve("focsam_test.zip", fake_zip())
    srv.serve("gdrive_html.zip", HTML_PAGE)
    yield srv
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_port_url():
    """A base URL on which nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def specs(server, monkeypatch):
    """Synthetic registry entries for the served files, patched into ``WEIGHTS``."""
    good = server.contents["good.pth"]
    entries = {
        "test_good": WeightSpec("test_good", "sam", "sam_test_tiny", "good.pth",
                                f"{server.url}/good.pth", sha256(good), len(good)),
        # the registry expects the good file's hash, the server has other bytes
        "test_bad": WeightSpec("test_bad", "sam", "sam_test_tiny", "bad.pth",
                               f"{server.url}/bad.pth", sha256(good), len(good)),
        "test_tofu": WeightSpec("test_tofu", "sam2", "sam2_test_tiny", "tofu.pt",
                                f"{server.url}/tofu.pt"),
        "test_gdrive": WeightSpec(
            "test_gdrive", "focsam", "focsam_test_tiny", "focsam_test.zip",
            f"https://drive.usercontent.google.com/download?id={GDRIVE_ID}&export=download&confirm=t",
            archive_member="iter_160000.pth", source="gdrive"),
        "test_gdrive_html": WeightSpec(
            "test_gdrive_html", "focsam", "focsam_test_tiny", "gdrive_html.zip",
            f"https://drive.usercontent.google.com/download?id={GDRIVE_ID}&export=download&confirm=t",
            archive_member="iter_160000.pth", source="gdrive"),
    }
    for key, spec in entries.items():
        monkeypatch.setitem(WEIGHTS, key, spec)
    return entries


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"

