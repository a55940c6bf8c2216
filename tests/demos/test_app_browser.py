"""End-to-end test of the web annotator (``demos/app.py``) in headless Chromium.

The app runs in a thread of this process on RepViT-SAM with synthetic fan-in weights (CPU,
``size256`` fast mode so a frame encodes in seconds). The browser uploads a generated clip,
adds two objects by clicks on different frames and sees each mask before tracking, tracks
both ways, corrects one object on a middle frame and tracks again, exports and checks the zip
against ``vos.run``'s formats, reloads the page, restarts the server and finds the session
as it was. It writes the screenshots and a timing table (click-to-mask latency, tracking
frames/s; measured, not asserted) to ``tests/demos/artifacts/``, and to ``docs/annotator/``
with ``REPVIT_UPDATE_DOCS=1``. Skipped when Flask, Playwright or Chromium is missing
(Debian: ``apt-get install -y chromium``; ``pip install flask playwright``, no
``playwright install``: the system Chromium is used).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DOCS = REPO_ROOT / "docs" / "annotator"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
NUM_FRAMES = 6
HW = (120, 160)


def _chromium() -> str | None:
    """The system Chromium (``$CHROMIUM`` overrides), or None."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def square_at(k: int, t: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of square ``k`` on frame ``t`` of :func:`write_clip`."""
    if k == 0:
        return 20 + 6 * t, 20, 60 + 6 * t, 60
    return 110 - 6 * t, 64, 146 - 6 * t, 100


def write_clip(path: Path) -> Path:
    """A small mp4: a yellow square moving right, a cyan one moving left."""
    import cv2

    h, w = HW
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (w, h))
    assert writer.isOpened()
    for t in range(NUM_FRAMES):
        frame = np.full((h, w, 3), 30, np.uint8)
        for k, color in ((0, (40, 200, 240)), (1, (230, 220, 40))):
            x0, y0, x1, y1 = square_at(k, t)
            frame[y0:y1, x0:x1] = color
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
def annotating_checkpoint(seeing_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
                          ) -> Path:
    """Fan-in weights with the IoU head's output bias raised (as the predictor's tests do):
    synthetic weights predict IoU near 0, which the tracker would take for a lost object."""
    weights = torch.load(seeing_checkpoint, weights_only=True)
    weights["mask_decoder.iou_prediction_head.layers.2.bias"] += 1.0
    path = tmp_path_factory.mktemp("weights") / "annotating.pt"
    torch.save(weights, path)
    return path


class Served:
    """The annotator on a free loopback port, over a sessions folder."""

    def __init__(self, demo_app: ModuleType, annotator: ModuleType, checkpoint: Path,
                 root: Path) -> None:
        from werkzeug.serving import make_server

        from vos.config import load_config
        from vos.models import build_segmenter, checkpoint_digest

        config = load_config(None, [f"model.checkpoint={checkpoint}", "model.backend=torch",
                                    "model.fast_mode=size256"])
        self.store = annotator.SessionStore(root, build_segmenter(config.model), config,
                                            checkpoint_digest(config.model), annotator.Limits())
        self.httpd = make_server("127.0.0.1", 0, demo_app.create_app(self.store), threaded=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.thread.join(10.0)
        self.store.close()


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium not found (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, accept_downloads=True, viewport={"width": 1100, "height": 800})
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            context.close()


def click_frame(page: Any, x: float, y: float, *, shift: bool = False) -> None:
    """Click the canvas at video pixel (x, y)."""
    rect = page.locator("#canvas").bounding_box()
    scale = rect["width"] / HW[1]
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(rect["x"] + x * scale, rect["y"] + y * scale)
    if shift:
        page.keyboard.up("Shift")


def overlay_pixels(page: Any) -> int:
    """Pixels of the current frame covered by a mask, as the page drew them."""
    return page.evaluate("""() => {
        const img = app.overlay, c = document.createElement('canvas');
        c.width = img.width; c.height = img.height;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n; }""")


def wait_job(page: Any, kind: str, timeout_s: float = 600) -> dict[str, Any]:
    page.wait_for_function(
        f"app.job && app.job.kind === '{kind}' && app.job.state !== 'running'",
        timeout=timeout_s * 1000)
    return page.evaluate("app.job")


def goto_frame(page: Any, t: int) -> None:
    while page.evaluate("app.frame") != t:
        page.keyboard.press("ArrowRight" if page.evaluate("app.frame") < t else "ArrowLeft")
    page.wait_for_selector(f"#canvas[data-frame='{t}']")
    page.wait_for_function(f"app.drawn.endsWith(':{t}:' + (app.frameVersions[{t}] || 0))")


def save_shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    page.screenshot(path=str(ARTIFACTS / name))
    if os.environ.get("REPVIT_UPDATE_DOCS") == "1":
        from PIL import Image

        DOCS.mkdir(parents=True, exist_ok=True)
        # A 64-colour palette keeps the README's images small.
        image = Image.open(ARTIFACTS / name).convert("RGB")
        image.quantize(colors=64).save(DOCS / name, optimize=True)


def results_of(store: Any, sid: str) -> dict[str, bytes]:
    folder = store.root / sid / "results"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.mark.slow
def test_annotate_two_objects_track_correct_export_restore(
        demo_app: ModuleType, annotator: ModuleType, annotating_checkpoint: Path,
        browser_page: Any, tmp_path: Path) -> None:
    pytest.importorskip("flask")
    from vos.io.davis_png import read_palette_png

    page = browser_page
    clip = write_clip(tmp_path / "clip.mp4")
    root = tmp_path / "sessions"
    server = Served(demo_app, annotator, annotating_checkpoint, root)
    timings: dict[str, Any] = {"clicks": []}
    try:
        page.goto(server.base + "/")
        # A bad upload: one clear line in the page.
        page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                "buffer": b"not a video"}])
        page.wait_for_function("document.getElementById('error').textContent.length > 0")
        assert "notes.txt is not a video" in page.text_content("#error")

        page.set_input_files("#upload", str(clip))
        page.wait_for_selector("#canvas[data-ready='1'][data-frame='0']")
        assert page.text_content("#error") == ""
        sid = page.evaluate("app.session.id")
        session = server.store.sessions[sid]

        def click(x: float, y: float, *, shift: bool = False) -> None:
            count = page.evaluate("app.latencies.length")
            frame = page.evaluate("app.frame")
            stored = frame in session.encoded
            click_frame(page, x, y, shift=shift)
            page.wait_for_function(f"app.latencies.length > {count}", timeout=300_000)
            assert page.text_content("#error") == ""
            timings["clicks"].append({"ms": page.evaluate("app.latencies.at(-1).ms"),
                                      "stored": stored})

        # Object 1 by a click on frame 0: its mask shows before any tracking.
        x0, y0, x1, y1 = square_at(0, 0)
        click((x0 + x1) / 2, (y0 + y1) / 2)
        assert page.evaluate("app.objects.length") == 1
        assert overlay_pixels(page) > 0
        assert page.evaluate("app.info.status") == {"1": "P"}

        # Object 2 by a click on frame 3.
        page.keyboard.press("n")
        page.wait_for_function("app.objects.length === 2 && app.selected === 2")
        goto_frame(page, 3)
        before = overlay_pixels(page)
        x0, y0, x1, y1 = square_at(1, 3)
        click((x0 + x1) / 2, (y0 + y1) / 2)
        assert page.evaluate("app.info.status")["2"] == "P"
        assert overlay_pixels(page) > before
        save_shot(page, "prompting.png")

        # Track both ways from the prompts; masks stream in frame by frame.
        page.evaluate("app.job = null")
        page.keyboard.press("t")
        page.wait_for_function("app.job !== null")
        seen = set()
        while page.evaluate("app.job && app.job.state") == "running":
            seen.add(page.evaluate("app.frame"))
            time.sleep(0.05)
        job = wait_job(page, "track")
        assert job["state"] == "done" and job["done"] == NUM_FRAMES + 4, job
        timings["track_fps"] = job["fps"]
        lanes = page.evaluate("app.lanes")
        assert set(lanes) == {"1", "2"}
        for lane in lanes.values():
            assert "." not in lane, lanes  # every frame tracked (or LOST), none left out
        assert lanes["1"][0] == "P" and lanes["2"][3] == "P"
        assert len(seen) >= 2, "the page followed the tracking"

        # Correct object 1 on a middle frame and track forward from there.
        page.keyboard.press("1")
        goto_frame(page, 2)
        x0, y0, x1, y1 = square_at(0, 2)
        click(x1 - 4, y1 - 4)
        # Three more clicks and their undo (z): clicks on a stored frame.
        for dx in (0, 3, 6):
            click(x0 + 6 + dx, y0 + 6)
        for _ in range(3):
            count = len(page.evaluate("app.info.prompts[0].points"))
            page.keyboard.press("z")
            page.wait_for_function("app.info.prompts.length > 0 && "
                                   f"app.info.prompts[0].points.length === {count - 1}")
        page.select_option("#from", "current")
        page.evaluate("app.job = null")  # the next job is the one this key starts
        page.keyboard.press("f")
        job = wait_job(page, "track")
        assert job["state"] == "done" and job["done"] == NUM_FRAMES - 2, job
        timings["retrack_fps"] = job["fps"]
        lanes = page.evaluate("app.lanes")
        assert lanes["1"][2] == "P" and "." not in lanes["1"]
        goto_frame(page, 4)
        save_shot(page, "timeline.png")

        # Export: the zip holds vos.run's formats.
        page.evaluate("app.job = null")
        page.click("#export")
        job = wait_job(page, "export")
        assert job["state"] == "done", job
        page.wait_for_selector("#download:not([hidden])")
        with page.expect_download() as download_info:
            page.click("#download")
        download = download_info.value
        assert download.suggested_filename == "clip_masks.zip"
        archive = zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes()))
        names = set(archive.namelist())
        assert {f"masks/{t:05d}.png" for t in range(NUM_FRAMES)} <= names
        assert {f"json/{t:05d}.json" for t in range(NUM_FRAMES)} <= names
        assert archive.read("overlay.mp4")[4:8] == b"ftyp"
        for t in range(NUM_FRAMES):
            record = json.loads(archive.read(f"json/{t:05d}.json"))
            assert record["frame_idx"] == t and record["image_hw"] == list(HW)
            (tmp_path / "m.png").write_bytes(archive.read(f"masks/{t:05d}.png"))
            index = read_palette_png(tmp_path / "m.png")
            assert set(np.unique(index)) <= {0, 1, 2}
            ids = sorted(o["obj_id"] for o in record["objects"])
            assert ids == sorted(int(i) for i in np.unique(index) if i)
        save_shot(page, "export.png")

        # Reload: the session comes back as it was.
        lanes = page.evaluate("app.lanes")
        page.reload()
        page.wait_for_selector("#canvas[data-ready='1'][data-frame='0']")
        page.wait_for_function("Object.keys(app.lanes).length === 2")
        assert page.evaluate("app.session.id") == sid
        assert page.evaluate("app.lanes") == lanes

        # Restart the server: the log is replayed; the masks are the same, bit for bit.
        saved = results_of(server.store, sid)
        server.stop()
        server = Served(demo_app, annotator, annotating_checkpoint, root)
        started = time.perf_counter()
        page.goto(server.base + "/#s=" + sid)
        page.wait_for_selector("#canvas[data-ready='1'][data-frame='0']")
        job = wait_job(page, "restore")
        timings["restore_s"] = time.perf_counter() - started
        assert job["state"] == "done", job
        page.wait_for_function("Object.keys(app.lanes).length === 2")
        assert page.evaluate("app.lanes") == lanes
        assert results_of(server.store, sid) == saved
        assert page.locator("#sessions option", has_text="clip.mp4").count() == 1
        # And work goes on where it stopped.
        page.keyboard.press("2")
        goto_frame(page, 5)
        x0, y0, x1, y1 = square_at(1, 5)
        click((x0 + x1) / 2, (y0 + y1) / 2)
        assert page.evaluate("app.info.status")["2"] == "P"
    finally:
        server.stop()
    write_timings(timings)


def write_timings(timings: dict[str, Any]) -> None:
    """The measured figures as a Markdown table (not asserted: shared CPUs vary)."""

    def stats(values: list[float]) -> str:
        if not values:
            return "–"
        if len(values) < 3:  # too few for a percentile
            return ", ".join(f"{v:.0f}" for v in values) + f" ms (n={len(values)})"
        p95 = float(np.percentile(values, 95))
        return f"{statistics.median(values):.0f} / {p95:.0f} ms (n={len(values)})"

    clicks = timings["clicks"]
    rows = [
        ("click to mask, frame embedding stored (median / p95)",
         stats([c["ms"] for c in clicks if c["stored"]])),
        ("click to mask, frame not yet stored (median / p95)",
         stats([c["ms"] for c in clicks if not c["stored"]])),
        ("tracking, both ways from the prompts", f"{timings['track_fps']:.2f} frames/s"),
        ("re-tracking after a correction", f"{timings['retrack_fps']:.2f} frames/s"),
        ("restore after a restart (replay + page)", f"{timings['restore_s']:.1f} s"),
    ]
    text = ("| measure (browser test, CPU, synthetic weights, size256) | value |\n"
            "|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "timing.md").write_text(text)
    if os.environ.get("REPVIT_UPDATE_DOCS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        (DOCS / "timing.md").write_text(text)
    print("\n" + text)
