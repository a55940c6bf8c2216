"""The weights downloader against a loopback HTTP server: verify, refuse, fail cleanly offline."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from repvit_sam import download
from repvit_sam.download import DownloadError, WeightSpec, download_checkpoint, main

PAYLOAD = bytes(range(256)) * 257  # 65,792 bytes


class _Server:
    """A tiny loopback server: ``files`` maps URL paths to bytes; ``hits`` counts requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        self.truncated: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                # A path in ``truncated`` announces more bytes than it sends, then hangs up.
                extra = 1000 if self.path in outer.truncated else 0
                self.send_header("Content-Length", str(len(body) + extra))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


def _register(
    monkeypatch: pytest.MonkeyPatch, url: str, *, sha256: str | None, size: int | None = None
) -> WeightSpec:
    spec = WeightSpec(url=url, filename="tiny.pt", sha256=sha256, size=size)
    monkeypatch.setitem(download.WEIGHTS, "tiny", spec)
    return spec


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_official_table_is_well_formed() -> None:
    assert set(download.WEIGHTS) == {"repvit", "vit_t", "vit_b", "vit_l", "vit_h"}
    assert download.WEIGHTS["repvit"].url == (
        "https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_sam.pt"
    )
    for spec in download.WEIGHTS.values():
        assert spec.url.startswith("https://")
        assert spec.url.endswith("/" + spec.filename)
        if spec.sha256 is not None:
            assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        if spec.md5 is not None:
            assert len(spec.md5) == 32
            # Meta names each SAM file after the first six hex digits of its MD5.
            assert spec.filename.rsplit("_", 1)[-1].startswith(spec.md5[:6])


def test_download_with_correct_hash(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/w/tiny.pt"] = PAYLOAD
    _register(
        monkeypatch,
        server.url("/w/tiny.pt"),
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        size=len(PAYLOAD),
    )
    dest = tmp_path / "new" / "folder"
    path = download_checkpoint("tiny", dest, progress=False)
    assert path == dest / "tiny.pt"
    assert path.read_bytes() == PAYLOAD
    assert _leftovers(dest) == ["tiny.pt"]  # no temporary file left beside it


def test_download_without_known_hash_checks_length(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/tiny.pt"] = PAYLOAD
    _register(monkeypatch, server.url("/tiny.pt"), sha256=None)
    assert download_checkpoint("tiny", tmp_path, progress=False).read_bytes() == PAYLOAD


def test_hash_mismatch_raises_and_leaves_nothing(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/tiny.pt"] = PAYLOAD
    _register(monkeypatch, server.url("/tiny.pt"), sha256="0" * 64)
    with pytest.raises(DownloadError, match="SHA-256 mismatch") as info:
        download_checkpoint("tiny", tmp_path, progress=False)
    assert "\n" not in str(info.value)
    assert _leftovers(tmp_path) == []


def test_size_mismatch_raises_and_leaves_nothing(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/tiny.pt"] = PAYLOAD
    _register(monkeypatch, server.url("/tiny.pt"), sha256=None, size=len(PAYLOAD) + 1)
    with pytest.raises(DownloadError, match="size mismatch"):
        download_checkpoint("tiny", tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_truncated_download_raises_and_leaves_nothing(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/tiny.pt"] = PAYLOAD
    server.truncated.add("/tiny.pt")
    _register(monkeypatch, server.url("/tiny.pt"), sha256=None)
    with pytest.raises(DownloadError) as info:
        download_checkpoint("tiny", tmp_path, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert "connection lost" in message or "incomplete download" in message
    assert _leftovers(tmp_path) == []


def test_cli_hash_mismatch_exit_code(
    server: _Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.files["/tiny.pt"] = PAYLOAD
    _register(monkeypatch, server.url("/tiny.pt"), sha256="f" * 64)
    assert main(["--model", "tiny", "--dest", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: SHA-256 mismatch")
    assert _leftovers(tmp_path) == []


def test_offline_gives_exit_code_2_and_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _register(monkeypatch, f"http://127.0.0.1:{_unused_port()}/tiny.pt", sha256=None)
    code = main(["--model", "tiny", "--dest", str(tmp_path), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: cannot reach")
    assert "Traceback" not in captured.err
    # It says where to put the file by hand.
    assert str(tmp_path / "tiny.pt") in lines[0]
    assert _leftovers(tmp_path) == []


def test_http_error_gives_exit_code_2(
    server: _Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _register(monkeypatch, server.url("/missing.pt"), sha256=None)
    assert main(["--model", "tiny", "--dest", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: HTTP 404")
    assert str(tmp_path / "tiny.pt") in err
    assert _leftovers(tmp_path) == []


def test_existing_file_is_not_downloaded_again(
    server: _Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.files["/tiny.pt"] = PAYLOAD
    _register(monkeypatch, server.url("/tiny.pt"), sha256=hashlib.sha256(PAYLOAD).hexdigest())
    first = download_checkpoint("tiny", tmp_path, progress=False)
    assert server.hits == {"/tiny.pt": 1}
    mtime = first.stat().st_mtime_ns

    assert main(["--model", "tiny", "--dest", str(tmp_path), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(first)
    assert server.hits == {"/tiny.pt": 1}
    assert first.stat().st_mtime_ns == mtime

    download_checkpoint("tiny", tmp_path, force=True, progress=False)
    assert server.hits == {"/tiny.pt": 2}


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        download_checkpoint("vit_xxl")
    with pytest.raises(SystemExit) as info:
        main(["--model", "vit_xxl"])
    assert info.value.code == 2
