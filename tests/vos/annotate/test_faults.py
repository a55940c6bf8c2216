"""Fault injection over HTTP, as users run the annotator: ``python -m vos.run annotate`` in its
own process with the default backend (OpenVINO when installed), waitress's request threads
and the background encoder, then SIGKILL at each point where work could be lost.

Each case adds a row to ``artifacts/faults.md`` (what was done, what the user sees, what is
kept); ``docs/annotator.md`` shows that table.
"""

from __future__ import annotations

import io
import socket
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.vos.annotate.served import Browser, CliServer, square_at, write_clip
from vos.io.davis_png import read_palette_png

pytest.importorskip("flask")
pytest.importorskip("waitress")
pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
NUM_FRAMES = 8
ROWS: list[tuple[str, str, str]] = []


def row(done: str, sees: str, kept: str) -> None:
    ROWS.append((done, sees, kept))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    table = ("| what was done | what the user sees | what is kept |\n|---|---|---|\n"
             + "".join(f"| {a} | {b} | {c} |\n" for a, b, c in ROWS))
    (ARTIFACTS / "faults.md").write_text(table)


def middle(k: int, t: int) -> tuple[float, float]:
    x0, y0, x1, y1 = square_at(k, t)
    return (x0 + x1) / 2, (y0 + y1) / 2


def results(workdir: Path, sid: str) -> dict[str, bytes]:
    folder = workdir / "sessions" / sid / "results"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", NUM_FRAMES)


def annotated(browser: Browser, clip: Path) -> str:
    """An uploaded clip with two objects clicked on frames 0 and 3."""
    status, created = browser.upload(clip)
    assert status == 201, created
    sid = created["id"]
    for obj, frame in ((1, 0), (2, 3)):
        assert browser.post(f"/api/sessions/{sid}/objects")[0] == 201
        status, info = browser.click(sid, frame, obj, *middle(obj - 1, frame))
        assert status == 200, info
        assert info["status"][str(obj)] == "P"
    return sid


def test_clicks_during_background_encoding(annotating_checkpoint: Path, clip: Path,
                                           tmp_path: Path) -> None:
    """Issue 27's first defect: the background encoder and the request threads share one
    segmenter; with OpenVINO's single infer request the first click failed 3 times in 3."""
    server = CliServer(annotating_checkpoint, tmp_path / "work")
    try:
        browser = Browser(server)
        for attempt in range(3):
            status, created = browser.upload(clip)
            assert status == 201, created
            sid = created["id"]
            browser.post(f"/api/sessions/{sid}/objects")
            # At once, and from two threads: the encoder is on its first frames.
            replies: list[tuple[int, Any]] = []

            def click(frame: int, replies: list = replies, sid: str = sid) -> None:
                replies.append(browser.click(sid, frame, 1, *middle(0, frame)))

            threads = [threading.Thread(target=click, args=(t,)) for t in (0, 5)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(600)
            assert [status for status, _ in replies] == [200, 200], replies
            assert all(reply["status"]["1"] == "P" for _, reply in replies)
            mask = read_palette_png(tmp_path / "work" / "sessions" / sid / "results" / "0.png")
            assert (mask == 1).any(), attempt
        row("three uploads, each clicked on two frames at once while the background encoder "
            "runs (OpenVINO, waitress threads)", "each mask at once; no error",
            "every click, in the log and on disk")
    finally:
        server.stop()


def test_kill_at_each_point_and_restart(annotating_checkpoint: Path, clip: Path,
                                        tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    server = CliServer(annotating_checkpoint, workdir)
    browser = Browser(server)
    cookie = list(browser.jar)

    def restart() -> Browser:
        nonlocal server
        server = CliServer(annotating_checkpoint, workdir)
        return Browser(server, browser.jar)

    try:
        # 1. Killed right after a click was answered: the click is there.
        sid = annotated(browser, clip)
        acknowledged = results(workdir, sid)
        server.kill()
        browser = restart()
        data = browser.poll(sid)
        assert data["read_only"] is None and data["notice"] is None
        assert data["lanes"]["1"][0] == "P" and data["lanes"]["2"][3] == "P"
        assert results(workdir, sid) == acknowledged
        row("SIGKILL right after a click was answered; restart", "the session as it was, "
            "both objects and their masks", "every acknowledged click and mask")

        # 2. Killed while tracking: the finished frames stay and the page says what happened.
        status, _ = browser.post(f"/api/sessions/{sid}/track", {"direction": "forward"})
        assert status == 202
        while browser.poll(sid)["job"]["done"] < 3:
            time.sleep(0.05)
        server.kill()
        browser = restart()
        data = browser.poll(sid)
        log = (workdir / "sessions" / sid / "ops.jsonl").read_text()
        done = log.count('"op":"frame"')
        assert done >= 3 and data["notice"].startswith(
            f"Tracking forward from frame 0 was interrupted by a server restart after {done} "
            "frame(s)")
        assert "." not in data["lanes"]["1"][:done]
        status, _ = browser.post(f"/api/sessions/{sid}/track", {"direction": "both"})
        data = browser.wait(sid)
        assert data["job"]["state"] == "done" and data["stale"] == [] and data["notice"] is None
        tracked = results(workdir, sid)
        row("SIGKILL while tracking (after 3+ frames); restart",
            "the note 'Tracking forward from frame 0 was interrupted by a server restart "
            "after N frame(s); they are kept. Track again to finish.'",
            "every finished frame's masks; tracking again finishes the rest")

        # 3. Killed while exporting: no half-written zip is ever offered. (The export of 8
        # small frames may also have finished before the kill lands: then its zip is whole.)
        browser.post(f"/api/sessions/{sid}/export")
        while browser.poll(sid)["job"]["done"] < 2:
            time.sleep(0.01)
        server.kill()
        browser = restart()
        status, reply = browser.request("GET", f"/api/sessions/{sid}/export.zip")
        if (workdir / "sessions" / sid / "export.zip").exists():
            assert status == 200
            names = zipfile.ZipFile(io.BytesIO(reply)).namelist()
            assert {f"masks/{t:05d}.png" for t in range(NUM_FRAMES)} <= set(names)
        else:
            assert status == 404 and reply["error"] == "no export yet: press Export first"
        # What the killed export left half-written is gone (the session was opened since).
        leftovers = [p.name for p in (workdir / "sessions" / sid).rglob("*")
                     if p.name.endswith((".partial", ".tmp")) or p.name == "export"]
        assert leftovers == []
        browser.post(f"/api/sessions/{sid}/export")
        assert browser.wait(sid)["job"]["state"] == "done"
        assert results(workdir, sid) == tracked
        row("SIGKILL while exporting; restart", "no download link until Export is pressed "
            "again", "every mask; the half-written zip is never served")

        # 4. Killed while a session is opened (restore) and while frames are encoded.
        server.kill()
        browser = restart()
        def opening() -> None:
            try:
                browser.poll(sid)
            except OSError:  # the server died under the request: that is the point
                pass

        probe = threading.Thread(target=opening, daemon=True)
        probe.start()
        time.sleep(0.05)
        server.kill()
        browser = restart()
        data = browser.poll(sid)
        assert data["read_only"] is None and data["stale"] == []
        assert results(workdir, sid) == tracked
        embeddings = list((workdir / "sessions" / sid / "embeddings").glob("*.pt"))
        assert len(embeddings) == NUM_FRAMES  # every frame it encoded is on disk
        row("SIGKILL while a session is being opened, then while frames encode; restart",
            "the session as it was", "every mask; every encoded frame (re-tracking "
            "re-encodes nothing)")

        # 5. Killed in the middle of an upload: nothing half-made is left.
        with socket.create_connection(("127.0.0.1", int(server.base.rsplit(":", 1)[1]))) as raw:
            body = clip.read_bytes()
            head = ("POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data;"
                    f" boundary=b\r\nContent-Length: {len(body) * 3}\r\n"
                    f"Cookie: {cookie[0].name}={cookie[0].value}\r\n\r\n")
            raw.sendall(head.encode() + b"--b\r\nContent-Disposition: form-data; name=\"video\";"
                        b" filename=\"big.mp4\"\r\n\r\n" + body)
            time.sleep(0.3)
            server.kill()
        sessions = sorted(p.name for p in (workdir / "sessions").iterdir())
        browser = restart()
        assert sorted(p.name for p in (workdir / "sessions").iterdir()) == [sid] or \
            sorted(p.name for p in (workdir / "sessions").iterdir()) == sessions
        assert [s["id"] for s in browser.get("/api/sessions")] == [sid]
        row("SIGKILL in the middle of an upload; restart", "the upload is not listed; the "
            "earlier sessions are", "every earlier session; no half-made folder")
    finally:
        server.stop()


def test_two_owners_fill_the_server_and_hostile_sizes(annotating_checkpoint: Path,
                                                      clip: Path, tmp_path: Path) -> None:
    server = CliServer(annotating_checkpoint, tmp_path / "work", "--max-sessions", "4",
                       "--max-sessions-per-browser", "2", "--no-background-encode")
    try:
        alice, bob, carol = Browser(server), Browser(server), Browser(server)
        first = annotated(alice, clip)
        second = alice.upload(clip)[1]["id"]
        for _ in range(3):
            status, reply = bob.upload(clip)
            assert status == 201, reply
        assert reply["notice"].startswith("You may keep 2 sessions: your oldest")
        assert sorted(s["id"] for s in alice.get("/api/sessions")) == sorted([first, second])
        assert len(bob.get("/api/sessions")) == 2
        status, reply = carol.upload(clip)
        assert status == 507 and reply["error"].startswith("the server is full (4 sessions)")
        row("two browsers fill a server of 4 sessions (2 per browser); a third uploads",
            "the second browser's own oldest session goes, with a note; the third: 'the server "
            "is full (4 sessions): delete one of your sessions or try again later'",
            "every session of the first browser, annotated or not")

        # An 8K video of a few KB, and a frame folder of mixed sizes: one line each.
        big = tmp_path / "8k.mp4"
        writer = cv2.VideoWriter(str(big), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (7680, 4320))
        for _ in range(3):
            writer.write(np.zeros((4320, 7680, 3), np.uint8))
        writer.release()
        alice.request("DELETE", f"/api/sessions/{second}")
        import psutil

        process = psutil.Process(server.proc.pid)
        rss = process.memory_info().rss
        status, reply = alice.upload(big)
        assert status == 400 and reply["error"].startswith(
            "8k.mp4 is 7680x4320; this server takes at most 2.1 megapixels a frame")
        frames = [(f"{t:05d}.png", cv2.imencode(".png", np.zeros(hw, np.uint8))[1].tobytes())
                  for t, hw in enumerate([(120, 160), (200, 320)])]
        status, reply = alice.post("/api/sessions", files={"frames": frames})
        assert status == 400 and reply["error"] == ("frames: 00001.png is 320x200 but "
                                                    "00000.png is 160x120; every frame of a "
                                                    "folder must have the same size")
        assert "/" not in reply["error"].replace("x", "")
        grown = process.memory_info().rss - rss
        assert grown < 64 << 20, f"{grown / 2**20:.0f} MiB"  # one 8K frame is 95 MiB
        row("an 8K mp4 (7680x4320, a few KB) and a frame folder of two sizes are uploaded",
            "'8k.mp4 is 7680x4320; this server takes at most 2.1 megapixels a frame ...: "
            "downscale it first'; 'frames: 00001.png is 320x200 but 00000.png is 160x120 ...'",
            "nothing is written; the server's memory does not grow")
    finally:
        server.stop()
