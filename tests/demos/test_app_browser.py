"""End-to-end test of the web demo (``demos/app.py``) in headless Chromium.

The app runs in a thread of this process with a random-init checkpoint; the browser uploads
a generated 3-frame clip, drags a box on the first frame, presses Segment and checks the
overlay video and the masks zip. Skipped when Flask, Playwright or Chromium is missing.
Debian: ``apt-get install -y chromium``; PyPI: ``pip install flask playwright`` (no
``playwright install``: the system Chromium is used).
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_PATH = REPO_ROOT / "demos" / "app.py"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def _chromium() -> str | None:
    """The system Chromium (``$CHROMIUM`` overrides), or None."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def demo_app() -> ModuleType:
    """``demos/app.py`` imported as a module (``demos`` is not a package)."""
    spec = importlib.util.spec_from_file_location("repvit_demo_app", APP_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_clip(path: Path, num_frames: int = 3, hw: tuple[int, int] = (96, 128)) -> Path:
    """A small mp4 with a bright square moving on a dark background."""
    import cv2

    h, w = hw
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (w, h))
    assert writer.isOpened()
    for i in range(num_frames):
        frame = np.full((h, w, 3), 30, np.uint8)
        frame[30:66, 40 + 4 * i:76 + 4 * i] = (40, 200, 240)
        writer.write(frame)
    writer.release()
    return path


def test_no_checkpoint_refuses_to_start(demo_app: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from vos.models import CHECKPOINT_ENV, NO_CHECKPOINT

    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    assert demo_app.main(["--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {NO_CHECKPOINT}"


def test_missing_checkpoint_file(demo_app: ModuleType, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("flask")
    assert demo_app.main(["--checkpoint", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --checkpoint") and err.count("\n") == 1


@pytest.fixture(scope="module")
def server(demo_app: ModuleType, random_checkpoint: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, Path]]:
    """The demo served on a free loopback port: (base URL, DemoState, sample clip)."""
    pytest.importorskip("flask")
    from werkzeug.serving import make_server

    from vos.config import load_config
    from vos.models import build_segmenter

    root = tmp_path_factory.mktemp("demo")
    samples = root / "samples"
    samples.mkdir()
    clip = write_clip(samples / "clip.mp4")
    config = load_config(None, [f"model.checkpoint={random_checkpoint}"])
    state = demo_app.DemoState(build_segmenter(config.model), config, root / "work",
                               demo_app.find_samples(samples))
    httpd = make_server("127.0.0.1", 0, demo_app.create_app(state), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", state, clip
    finally:
        state.wait_idle(30.0)
        httpd.shutdown()
        thread.join(5.0)


def test_api_rejects_bad_requests(server: tuple[str, Any, Path]) -> None:
    """One-line JSON errors without a browser: bad upload, empty box, no prompt, unknown job."""
    import json
    import urllib.error
    import urllib.request

    base, state, _ = server

    def post(path: str, body: bytes, content_type: str, **headers: str) -> tuple[int, dict]:
        request = urllib.request.Request(base + path, data=body, method="POST",
                                         headers={"Content-Type": content_type, **headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    boundary = "xyzBOUNDARY"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; "
            f"filename=\"notes.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
            f"--{boundary}--\r\n").encode()
    status, data = post("/api/upload", form, f"multipart/form-data; boundary={boundary}")
    assert status == 400 and "notes.txt is not a video" in data["error"]
    status, data = post("/api/upload", form.replace(b"notes.txt", b"fake.mp4"),
                        f"multipart/form-data; boundary={boundary}")
    assert status == 400 and data["error"] == "fake.mp4 could not be decoded as a video"

    sample_id = state.samples[0].video_id
    status, data = post("/api/segment", json.dumps(
        {"video_id": sample_id, "box": [10, 10, 10, 50], "points": []}).encode(),
        "application/json")
    assert status == 400 and data["error"].startswith("empty box")
    status, data = post("/api/segment", json.dumps({"video_id": sample_id}).encode(),
                        "application/json")
    assert status == 400 and data["error"].startswith("empty prompt")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(base + "/api/jobs/nope", timeout=10)
    assert info.value.code == 404
    # Hostile input: NaN coordinates, a flood of points, a page on another site.
    status, data = post("/api/segment", json.dumps(
        {"video_id": sample_id, "box": None, "points": [[float("nan"), 5, 1]]}).encode(),
        "application/json")
    assert status == 400 and "finite" in data["error"]
    status, data = post("/api/segment", json.dumps(
        {"video_id": sample_id, "points": [[5, 5, 1]] * 400_000}).encode(), "application/json")
    assert status == 400 and "at most 64" in data["error"]
    good = json.dumps({"video_id": sample_id, "box": [10, 10, 40, 40]}).encode()
    status, data = post("/api/segment", good, "application/json", Origin="http://evil.example")
    assert status == 403 and "cross-origin" in data["error"]
    status, data = post("/api/upload", form, f"multipart/form-data; boundary={boundary}",
                        Referer="http://evil.example/page")
    assert status == 403
    assert not state.jobs, "no refused request started a job"


@pytest.mark.slow
def test_browser_box_segment_download(server: tuple[str, Any, Path], tmp_path: Path) -> None:
    """Upload, draw a box by mouse, Segment, then play the overlay and download the masks."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium not found (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    base, _, clip = server
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    screenshot = ARTIFACTS / "demo.png"
    started = time.perf_counter()

    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, accept_downloads=True, viewport={"width": 1280, "height": 800})
        try:
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(base + "/")
            assert page.locator("#sample option", has_text="clip.mp4").count() == 1

            # A bad upload gives one clear line in the page.
            page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                    "buffer": b"not a video"}])
            page.wait_for_function("document.getElementById('error').textContent.length > 0")
            assert "notes.txt is not a video" in page.text_content("#error")

            page.set_input_files("#upload", str(clip))
            page.wait_for_selector("#canvas[data-ready='1']")
            assert page.text_content("#error") == ""

            # Segment with no prompt: refused in the page.
            page.click("#segment")
            assert page.text_content("#error").startswith("Empty prompt")

            # Drag a box around the square by mouse.
            rect = page.locator("#canvas").bounding_box()
            assert rect is not None and rect["width"] > 100
            page.mouse.move(rect["x"] + rect["width"] * 0.25, rect["y"] + rect["height"] * 0.25)
            page.mouse.down()
            page.mouse.move(rect["x"] + rect["width"] * 0.5, rect["y"] + rect["height"] * 0.5,
                            steps=4)
            page.mouse.move(rect["x"] + rect["width"] * 0.7, rect["y"] + rect["height"] * 0.75,
                            steps=4)
            page.mouse.up()
            box = page.evaluate("state.box")
            assert box is not None and len(box) == 4
            assert 25 <= box[0] <= 39 and 18 <= box[1] <= 30, box  # 0.25 of 128 x 96
            assert 83 <= box[2] <= 96 and 66 <= box[3] <= 78, box
            assert page.evaluate("state.points.length") == 0

            page.click("#segment")
            # A 1024² CPU encode takes 3-15 s a frame on two shared cores: wait generously.
            page.wait_for_function(
                "() => { const v = document.getElementById('result');"
                " return !v.hidden && !!v.getAttribute('src'); }", timeout=150_000)
            assert page.text_content("#error") == ""
            src = page.get_attribute("#result", "src")
            assert src
            response = context.request.get(base + src)
            assert response.status == 200
            assert response.headers["content-type"].startswith("video/mp4")
            body = response.body()
            assert body[4:8] == b"ftyp" and len(body) > 1000
            # The browser decodes it (Debian's Chromium plays H.264).
            page.wait_for_function(
                "document.getElementById('result').readyState >= 2"
                " && document.getElementById('result').videoWidth === 128", timeout=10_000)

            with page.expect_download() as download_info:
                page.click("#download")
            download = download_info.value
            assert download.suggested_filename == "clip_masks.zip"
            archive = zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes()))
            names = set(archive.namelist())
            assert {f"masks/{i:05d}.png" for i in range(3)} <= names
            assert {f"json/{i:05d}.json" for i in range(3)} <= names

            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            context.close()
    print(f"\nscreenshot: {screenshot} ({time.perf_counter() - started:.1f} s in the browser)")
    assert screenshot.stat().st_size > 0
