"""End-to-end test of the web annotator in headless Chromium, served as users serve it.

``python -m vos.run annotate`` runs in its own process with the default backend (OpenVINO
when installed) on synthetic fan-in weights (``size256`` fast mode so a frame encodes in a
second or two). The browser uploads a generated clip, adds two objects by clicks on
different frames and sees each mask before tracking, tracks both ways, corrects one object
and sees the frames that became stale, undoes, removes an object and brings it back with
``z``, tracks again, exports and checks the zip against ``vos.run``'s formats, sees the
connection banner while the server is down, and finds the session as it was after a SIGKILL
and a restart. Screenshots and a timing table (measured, not asserted) go to
``tests/vos/annotate/artifacts/``, and to ``docs/annotator/`` with ``REPVIT_UPDATE_DOCS=1``.
Skipped when Flask, Playwright or Chromium is missing (Debian: ``apt-get install -y
chromium``; ``pip install flask playwright``, no ``playwright install``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.vos.annotate.served import CliServer, free_port, square_at, write_clip

REPO_ROOT = Path(__file__).resolve().parents[3]
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


def test_without_a_checkpoint_the_mode_says_so(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("flask")
    pytest.importorskip("waitress")
    from vos.cli import main
    from vos.models import CHECKPOINT_ENV, NO_CHECKPOINT

    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    assert main(["annotate", "--port", "0"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {NO_CHECKPOINT}"


def test_a_missing_checkpoint_file_is_one_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("flask")
    pytest.importorskip("waitress")
    from vos.cli import main

    assert main(["annotate", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.pt" in err and err.count("\n") == 1


def test_bad_limits_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("flask")
    from vos.cli import main

    assert main(["annotate", "--checkpoint", "x.pt", "--max-pixels", "huge"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --max-pixels 'huge': expected WIDTHxHEIGHT (e.g. 1920x1080) or a number of "
        "pixels")


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium not found (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, accept_downloads=True, viewport={"width": 1100, "height": 860})
        try:
            page = context.new_page()
            page.set_default_timeout(120_000)
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


def wait_job(page: Any, kind: str, timeout_s: float = 900) -> dict[str, Any]:
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
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    if os.environ.get("REPVIT_UPDATE_DOCS") == "1":
        from PIL import Image

        DOCS.mkdir(parents=True, exist_ok=True)
        # A 64-colour palette keeps the docs' images small.
        image = Image.open(ARTIFACTS / name).convert("RGB")
        image.quantize(colors=64).save(DOCS / name, optimize=True)


def results_of(workdir: Path, sid: str) -> dict[str, bytes]:
    folder = workdir / "sessions" / sid / "results"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.mark.slow
def test_annotate_track_correct_undo_export_survive_a_kill(
        annotating_checkpoint: Path, browser_page: Any, tmp_path: Path) -> None:
    pytest.importorskip("flask")
    pytest.importorskip("waitress")
    from vos.io.davis_png import read_palette_png

    page = browser_page
    clip = write_clip(tmp_path / "clip.mp4", NUM_FRAMES, HW)
    workdir = tmp_path / "work"
    port = free_port()
    args = ("--set", "model.fast_mode=size256")
    server = CliServer(annotating_checkpoint, workdir, *args, port=port)
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

        def click(x: float, y: float, *, shift: bool = False) -> None:
            count = page.evaluate("app.latencies.length")
            click_frame(page, x, y, shift=shift)
            page.wait_for_function(f"app.latencies.length > {count}", timeout=600_000)
            assert page.text_content("#error") == ""
            timings["clicks"].append(page.evaluate("app.latencies.at(-1).ms"))

        # Object 1 by a click on frame 0, at once (the background encoder is running).
        x0, y0, x1, y1 = square_at(0, 0)
        click((x0 + x1) / 2, (y0 + y1) / 2)
        assert page.evaluate("app.objects.length") == 1 and overlay_pixels(page) > 0
        assert page.evaluate("app.info.status") == {"1": "P"}
        # Object 2 by a click on frame 3.
        page.keyboard.press("n")
        page.wait_for_function("app.objects.length === 2 && app.selected === 2")
        goto_frame(page, 3)
        before = overlay_pixels(page)
        x0, y0, x1, y1 = square_at(1, 3)
        click((x0 + x1) / 2, (y0 + y1) / 2)
        assert page.evaluate("app.info.status")["2"] == "P" and overlay_pixels(page) > before
        save_shot(page, "prompting.png")

        # Track both ways; the page follows the frames as they come.
        page.evaluate("app.job = null")
        page.keyboard.press("t")
        job = wait_job(page, "track")
        assert job["state"] == "done" and job["done"] == NUM_FRAMES + 4, job
        timings["track_fps"] = job["fps"]
        lanes = page.evaluate("app.lanes")
        assert all("." not in lane for lane in lanes.values()), lanes
        page.wait_for_function("app.stale.length === 0")

        # A correction on frame 2: the frames it makes stale show as such, until re-tracked.
        page.keyboard.press("1")
        goto_frame(page, 2)
        x0, y0, x1, y1 = square_at(0, 2)
        click(x1 - 4, y1 - 4)
        page.wait_for_function("app.stale.length > 0")
        assert page.evaluate("app.stale") == [[0, NUM_FRAMES - 1]]  # object 2 came backward
        save_shot(page, "stale.png")
        # z undoes the click, whatever has focus (a menu included), and the selection stays.
        page.focus("#direction")
        page.keyboard.press("z")
        page.wait_for_function("app.stale.length === 0")
        assert page.evaluate("document.getElementById('direction').value") == "both"
        assert page.evaluate("app.selected") == 1
        assert "undone: click on frame 2" in page.text_content("#status")
        # Remove object 2 (Delete), then bring it back with z.
        page.keyboard.press("2")
        page.keyboard.press("Delete")
        page.wait_for_function("app.objects.length === 1 && app.selected === null")
        assert "press z (Undo) to bring it back" in page.text_content("#status")
        page.keyboard.press("z")
        page.wait_for_function("app.objects.length === 2")
        assert page.evaluate("app.lanes") == lanes

        # Correct again and re-track forward from the corrected frame, at decoder speed.
        page.keyboard.press("1")
        click(x1 - 4, y1 - 4)
        page.select_option("#from", "current")
        page.evaluate("app.job = null")
        page.keyboard.press("f")
        job = wait_job(page, "track")
        assert job["state"] == "done" and job["done"] == NUM_FRAMES - 2, job
        timings["retrack_fps"] = job["fps"]
        goto_frame(page, 4)
        save_shot(page, "timeline.png")

        # Export: the zip holds vos.run's formats, and the link knows when it is out of date.
        page.evaluate("app.job = null")
        page.click("#export")
        assert wait_job(page, "export")["state"] == "done"
        page.wait_for_selector("#download:not([hidden])")
        with page.expect_download() as download_info:
            page.click("#download")
        download = download_info.value
        assert download.suggested_filename == "clip_masks.zip"
        archive = zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes()))
        assert {f"masks/{t:05d}.png" for t in range(NUM_FRAMES)} <= set(archive.namelist())
        assert archive.read("overlay.mp4")[4:8] == b"ftyp"
        stale = json.loads(archive.read("export.json"))["stale_frames"]
        for t in range(NUM_FRAMES):
            record = json.loads(archive.read(f"json/{t:05d}.json"))
            (tmp_path / "m.png").write_bytes(archive.read(f"masks/{t:05d}.png"))
            index = read_palette_png(tmp_path / "m.png")
            assert sorted(o["obj_id"] for o in record["objects"]) == sorted(
                int(i) for i in np.unique(index) if i)
        save_shot(page, "export.png")
        goto_frame(page, 1)
        click(*[(a + b) / 2 for a, b in zip(square_at(0, 1)[:2], square_at(0, 1)[2:],
                                            strict=True)])
        page.wait_for_function("document.getElementById('download').classList.contains('stale')")
        assert "out of date" in page.text_content("#download")

        # The server dies (SIGKILL): the page says so, and recovers when it is back.
        lanes = page.evaluate("app.lanes")
        saved = results_of(workdir, sid)
        server.kill()
        page.wait_for_selector("#connection:not([hidden])", timeout=30_000)
        save_shot(page, "offline.png")
        started = time.perf_counter()
        server = CliServer(annotating_checkpoint, workdir, *args, port=port)
        page.wait_for_selector("#connection[hidden]", state="attached", timeout=60_000)
        timings["restart_s"] = time.perf_counter() - started
        started = time.perf_counter()
        page.reload()
        page.wait_for_selector("#canvas[data-ready='1']")
        page.wait_for_function("Object.keys(app.lanes).length === 2")
        timings["reopen_s"] = time.perf_counter() - started
        assert page.evaluate("app.session.id") == sid and page.evaluate("app.lanes") == lanes
        assert results_of(workdir, sid) == saved
        assert page.evaluate("app.job") is None  # nothing replays: the state came from disk
        # Work goes on where it stopped, the undo history included.
        assert page.evaluate("document.getElementById('undo').title").startswith(
            "undo click on frame 1")
        page.keyboard.press("z")
        page.wait_for_function("document.getElementById('status').textContent"
                               ".includes('undone: click on frame 1')")
        assert stale == [] or isinstance(stale, list)
    finally:
        server.stop()
    write_timings(timings)


def write_timings(timings: dict[str, Any]) -> None:
    """The measured figures as a Markdown table (not asserted: shared CPUs vary)."""
    clicks = timings["clicks"]
    rows = [
        (f"click to mask in the page (median of {len(clicks)})",
         f"{statistics.median(clicks):.0f} ms"),
        ("tracking, both ways from the prompts", f"{timings['track_fps']:.2f} frames/s"),
        ("re-tracking after a correction", f"{timings['retrack_fps']:.2f} frames/s"),
        ("server restart to page reconnected (model load included)",
         f"{timings['restart_s']:.1f} s"),
        ("page reload to the session shown", f"{timings['reopen_s']:.2f} s"),
    ]
    text = ("| measure (browser test: OpenVINO, size256, synthetic weights, 2 cores) | value |\n"
            "|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "timing.md").write_text(text)
    if os.environ.get("REPVIT_UPDATE_DOCS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        (DOCS / "timing.md").write_text(text)
    print("\n" + text)
