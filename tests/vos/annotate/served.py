"""The annotator as users run it, for the end-to-end tests: ``python -m vos.run annotate`` in
its own process (waitress, the default backend), a browser-like HTTP client with its own
cookie, and the means to kill the server with SIGKILL at any moment."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[3]


def write_clip(path: Path, num_frames: int, hw: tuple[int, int] = (120, 160),
               fps: float = 10.0) -> Path:
    """A small mp4: a yellow square moving right, a cyan one moving left."""
    h, w = hw
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for t in range(num_frames):
        frame = np.full((h, w, 3), 30, np.uint8)
        for k, color in ((0, (40, 200, 240)), (1, (230, 220, 40))):
            x0, y0, x1, y1 = square_at(k, t)
            frame[y0:y1, x0:x1] = color
        writer.write(frame)
    writer.release()
    return path


def square_at(k: int, t: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of square ``k`` on frame ``t`` of :func:`write_clip`."""
    if k == 0:
        return 20 + 6 * t, 20, 60 + 6 * t, 60
    return 110 - 6 * t, 64, 146 - 6 * t, 100


class CliServer:
    """``python -m vos.run annotate`` on a free loopback port.

    Args:
        checkpoint: the model weights.
        workdir: the sessions folder (kept across restarts).
        args: more flags (``--set model.fast_mode=...``, limits).
    """

    def __init__(self, checkpoint: Path, workdir: Path, *args: str, port: int = 0,
                 timeout: float = 600.0) -> None:
        self.command = [sys.executable, "-m", "vos.run", "annotate", "--checkpoint",
                        str(checkpoint), "--workdir", str(workdir), "--port", str(port), *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        end = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("the annotator exited:\n" + "".join(self.lines))
            self.lines.append(line)
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            if found:
                self.base = found.group(1)
                return
        raise AssertionError("the annotator did not start:\n" + "".join(self.lines))

    def kill(self) -> None:
        """SIGKILL: what a crash, an OOM kill or a power cut leaves."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """Ctrl-C."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def free_port() -> int:
    """A loopback port nothing listens on (for a server that must come back on it)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Browser:
    """An HTTP client with its own cookie jar (one owner), JSON in and out.

    Args:
        server: where to send requests.
        jar: an earlier browser's cookies (the same owner after a restart).
    """

    def __init__(self, server: CliServer, jar: http.cookiejar.CookieJar | None = None) -> None:
        self.server = server
        self.jar = jar if jar is not None else http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.get("/")

    def request(self, method: str, path: str, body: Any = None, *,
                files: dict[str, list[tuple[str, bytes]]] | None = None,
                timeout: float = 600.0) -> tuple[int, Any]:
        headers = {}
        data = None
        if files is not None:
            boundary = uuid.uuid4().hex
            parts = []
            for field, items in files.items():
                for name, content in items:
                    parts.append(f"--{boundary}\r\nContent-Disposition: form-data; "
                                 f"name=\"{field}\"; filename=\"{name}\"\r\n"
                                 "Content-Type: application/octet-stream\r\n\r\n".encode()
                                 + content + b"\r\n")
            data = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.server.base + path, data=data, method=method,
                                     headers=headers)
        try:
            with self.opener.open(req, timeout=timeout) as reply:
                raw = reply.read()
                status = reply.status
                kind = reply.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raw, status, kind = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        return status, json.loads(raw) if "json" in kind else raw

    def get(self, path: str) -> Any:
        return self.request("GET", path)[1]

    def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return self.request("POST", path, body if body is not None else {}, **kwargs)

    def poll(self, sid: str) -> dict[str, Any]:
        return self.get(f"/api/sessions/{sid}/poll?since=-1")

    def wait(self, sid: str, timeout: float = 900.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            data = self.poll(sid)
            if data["job"] is None or data["job"]["state"] != "running":
                return data
            time.sleep(0.1)
        raise AssertionError("the job did not finish")

    def upload(self, path: Path) -> tuple[int, Any]:
        return self.post("/api/sessions", files={"video": [(path.name, path.read_bytes())]})

    def click(self, sid: str, frame: int, obj: int, x: float, y: float,
              label: int = 1) -> tuple[int, Any]:
        return self.post(f"/api/sessions/{sid}/prompt",
                         {"frame": frame, "obj": obj, "points": [[x, y, label]]})
