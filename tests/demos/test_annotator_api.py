"""The annotator's HTTP API through Flask's test client, on the ground-truth fake segmenter.

Fast (no model): sessions, tracking both ways, corrections, export in ``vos.run``'s formats,
restore after a restart and after a kill mid-tracking (exact replay of the operation log),
cleanup, and every hostile input answered with one line while the session stays intact.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest

from tests.vos.synthetic import FakeSegmenter, SceneObject, render
from vos.config import load_config
from vos.io.davis_png import read_palette_png

pytest.importorskip("flask")

NUM_FRAMES = 10
HW = (72, 96)


class SlowFake(FakeSegmenter):
    """The fake with a decode that waits while ``gate`` is clear (holds a pass mid-way)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()

    def decode_prompts(self, embedding: Any, prompts: Any) -> Any:
        self.gate.wait(60.0)
        return super().decode_prompts(embedding, prompts)


@pytest.fixture
def scene_samples(tmp_path: Path) -> tuple[Any, Path]:
    """Two squares crossing a 10-frame scene, as a lossless PNG frame folder sample."""
    objects = [SceneObject(((0, 20, 24), (9, 70, 24)), (16, 16), color=(230, 50, 50)),
               SceneObject(((0, 76, 52), (9, 30, 52)), (14, 14), color=(40, 220, 40))]
    scene = render(objects, NUM_FRAMES, HW)
    folder = tmp_path / "samples" / "squares"
    folder.mkdir(parents=True)
    for t, frame in enumerate(scene.frames):
        cv2.imwrite(str(folder / f"{t:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return scene, tmp_path / "samples"


class Server:
    """A store and its Flask test client (a browser with its owner cookie)."""

    def __init__(self, demo_app: ModuleType, annotator: ModuleType, root: Path,
                 segmenter: Any, samples: Path, **limits: Any) -> None:
        limits.setdefault("background_encode", False)
        self.store = annotator.SessionStore(root, segmenter, load_config(None, []), None,
                                            annotator.Limits(**limits))
        self.app = demo_app.create_app(self.store, demo_app.find_samples(samples))
        self.client = self.app.test_client()
        self.client.get("/")

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.client.post(path, json=body if body is not None else {}, **kwargs)

    def wait(self, sid: str, timeout: float = 30.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            data = self.client.get(f"/api/sessions/{sid}/poll?since=-1").get_json()
            if data["job"] is None or data["job"]["state"] != "running":
                return data
            time.sleep(0.02)
        raise AssertionError("the job did not finish")


def center(scene: Any, t: int, k: int) -> list[float]:
    ys, xs = np.nonzero(scene.gt_masks[t, k])
    return [float(xs.mean()), float(ys.mean())]


def open_scene(server: Server, scene: Any) -> str:
    """A session on the sample with object 1 clicked on frame 0, object 2 boxed on frame 6."""
    created = server.post("/api/sessions", {"sample": "sample0"})
    assert created.status_code == 201, created.get_json()
    sid = created.get_json()["id"]
    assert server.post(f"/api/sessions/{sid}/objects").get_json()["obj"] == 1
    reply = server.post(f"/api/sessions/{sid}/prompt",
                        {"frame": 0, "obj": 1, "points": [[*center(scene, 0, 0), 1]]})
    assert reply.status_code == 200 and reply.get_json()["status"] == {"1": "P"}
    assert server.post(f"/api/sessions/{sid}/objects", {"name": "green"}).get_json()["obj"] == 2
    ys, xs = np.nonzero(scene.gt_masks[6, 1])
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    reply = server.post(f"/api/sessions/{sid}/prompt", {"frame": 6, "obj": 2, "box": box})
    assert reply.get_json()["status"]["2"] == "P"
    return sid


def results(server: Server, sid: str) -> dict[int, np.ndarray]:
    folder = server.store.root / sid / "results"
    return {int(p.stem): read_palette_png(p) for p in folder.glob("*.png")}


def test_prompt_track_correct_export_restore(demo_app: ModuleType, annotator: ModuleType,
                                             scene_samples: tuple[Any, Path],
                                             tmp_path: Path) -> None:
    scene, samples = scene_samples
    server = Server(demo_app, annotator, tmp_path / "sessions", FakeSegmenter(scene), samples)
    sid = open_scene(server, scene)
    # The mask is there before any tracking.
    first = results(server, sid)
    assert sorted(first) == [0, 6]
    np.testing.assert_array_equal(first[0] == 1, scene.gt_masks[0, 0])
    np.testing.assert_array_equal(first[6] == 2, scene.gt_masks[6, 1])

    assert server.post(f"/api/sessions/{sid}/track", {"direction": "both"}).status_code == 202
    data = server.wait(sid)
    assert data["job"]["state"] == "done" and data["job"]["done"] == NUM_FRAMES + 7
    lanes = data["lanes"]
    assert lanes["1"] == "P" + "T" * (NUM_FRAMES - 1)
    assert lanes["2"] == "T" * 6 + "P" + "T" * (NUM_FRAMES - 7)
    tracked = results(server, sid)
    for t in range(NUM_FRAMES):
        np.testing.assert_array_equal(tracked[t] == 1, scene.gt_masks[t, 0], err_msg=f"{t}")
        np.testing.assert_array_equal(tracked[t] == 2, scene.gt_masks[t, 1], err_msg=f"{t}")

    # A correction on a middle frame persists through re-tracking from it.
    reply = server.post(f"/api/sessions/{sid}/prompt",
                        {"frame": 4, "obj": 1, "points": [[*center(scene, 4, 0), 0]]})
    assert reply.status_code == 200 and reply.get_json()["status"]["1"] == "P"
    assert server.post(f"/api/sessions/{sid}/track",
                       {"direction": "forward", "start": 4}).status_code == 202
    data = server.wait(sid)
    assert data["lanes"]["1"][4] == "P" and data["job"]["done"] == NUM_FRAMES - 4
    # Undo takes the negative click back; clear removes the frame's prompts.
    neg, pos = [*center(scene, 4, 0), 0], [*center(scene, 4, 0), 1]
    for point in (pos, [pos[0] + 2, pos[1], 1]):
        server.post(f"/api/sessions/{sid}/prompt", {"frame": 4, "obj": 1, "points": [point]})
    reply = server.post(f"/api/sessions/{sid}/undo", {"frame": 4, "obj": 1}).get_json()
    assert reply["prompts"] == [{"obj": 1, "points": [neg, pos], "box": None}]
    reply = server.post(f"/api/sessions/{sid}/clear", {"frame": 4, "obj": 1}).get_json()
    assert reply["prompts"] == [] and reply["status"]["1"] in "TL"
    server.post(f"/api/sessions/{sid}/track", {"direction": "forward"})
    assert server.wait(sid)["lanes"]["1"] == "P" + "T" * (NUM_FRAMES - 1)

    # Export: vos.run's layout and formats.
    assert server.post(f"/api/sessions/{sid}/export").status_code == 202
    assert server.wait(sid)["job"]["state"] == "done"
    zipped = server.client.get(f"/api/sessions/{sid}/export.zip")
    assert zipped.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(zipped.data))
    names = set(archive.namelist())
    assert {f"masks/{t:05d}.png" for t in range(NUM_FRAMES)} <= names
    assert {f"json/{t:05d}.json" for t in range(NUM_FRAMES)} <= names
    assert "overlay.mp4" in names and archive.read("overlay.mp4")[4:8] == b"ftyp"
    record = json.loads(archive.read("json/00003.json"))
    assert record["frame_name"] == "00003" and record["image_hw"] == list(HW)
    assert sorted(o["obj_id"] for o in record["objects"]) == [1, 2]
    assert json.loads(archive.read("objects.json")) == {"1": "object 1", "2": "green"}
    before = results(server, sid)
    for t in range(NUM_FRAMES):
        png = archive.read(f"masks/{t:05d}.png")
        index = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        path = tmp_path / "x.png"
        path.write_bytes(png)
        np.testing.assert_array_equal(read_palette_png(path), before[t])
        assert index is not None

    # A restart: a new store over the same folder replays the log to the same state.
    log = (server.store.root / sid / "ops.jsonl").read_text()
    server.store.close()
    again = Server(demo_app, annotator, tmp_path / "sessions", FakeSegmenter(scene), samples)
    again.client.set_cookie(demo_app.OWNER_COOKIE,
                            server.client.get_cookie(demo_app.OWNER_COOKIE).value)
    listed = again.client.get("/api/sessions").get_json()
    assert [s["id"] for s in listed] == [sid]
    data = again.wait(sid)
    assert data["job"]["kind"] == "restore" and data["job"]["state"] == "done"
    assert data["lanes"] == server.store.sessions[sid].poll(-1)["lanes"]
    after = results(again, sid)
    for t in range(NUM_FRAMES):
        np.testing.assert_array_equal(after[t], before[t], err_msg=f"frame {t}")
    session = again.store.sessions[sid]
    assert session.prompts == server.store.sessions[sid].prompts
    # The replayed predictor continues exactly where the old one was.
    assert again.post(f"/api/sessions/{sid}/track", {"direction": "forward"}).status_code == 202
    assert again.wait(sid)["job"]["state"] == "done"
    for t, index in results(again, sid).items():
        np.testing.assert_array_equal(index, before[t], err_msg=f"frame {t}")
    assert (again.store.root / sid / "ops.jsonl").read_text().startswith(log)
    again.store.close()


def test_kill_mid_tracking_restores_completed_frames(demo_app: ModuleType,
                                                     annotator: ModuleType,
                                                     scene_samples: tuple[Any, Path],
                                                     tmp_path: Path) -> None:
    scene, samples = scene_samples
    fake = SlowFake(scene)
    server = Server(demo_app, annotator, tmp_path / "a", fake, samples)
    sid = open_scene(server, scene)
    server.post(f"/api/sessions/{sid}/track", {"direction": "forward"})
    session = server.store.sessions[sid]
    while session.job.done < 4:
        time.sleep(0.01)
    fake.gate.clear()  # the pass stops mid-way, as a killed server would
    time.sleep(0.1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # what a kill leaves on disk
    done = sum(1 for line in (tmp_path / "b" / sid / "ops.jsonl").read_text().splitlines()
               if '"op":"frame"' in line)
    fake.gate.set()
    server.wait(sid)
    server.store.close()

    again = Server(demo_app, annotator, tmp_path / "b", FakeSegmenter(scene), samples)
    again.client.set_cookie(demo_app.OWNER_COOKIE,
                            server.client.get_cookie(demo_app.OWNER_COOKIE).value)
    data = again.wait(sid)
    assert data["job"]["state"] == "done"
    assert data["lanes"]["1"][:done] == "P" + "T" * (done - 1)
    restored = results(again, sid)
    for t in range(done):
        np.testing.assert_array_equal(restored[t] == 1, scene.gt_masks[t, 0])
    assert again.post(f"/api/sessions/{sid}/track", {"direction": "forward"}).status_code == 202
    assert again.wait(sid)["lanes"]["1"] == "P" + "T" * (NUM_FRAMES - 1)
    again.store.close()


def test_hostile_input_one_line_and_session_intact(demo_app: ModuleType,
                                                   annotator: ModuleType,
                                                   scene_samples: tuple[Any, Path],
                                                   tmp_path: Path) -> None:
    scene, samples = scene_samples
    fake = SlowFake(scene)
    server = Server(demo_app, annotator, tmp_path / "s", fake, samples)
    sid = open_scene(server, scene)
    url = f"/api/sessions/{sid}"
    log = server.store.root / sid / "ops.jsonl"
    ops_before = log.read_text()

    def refused(path: str, body: Any, status: int, text: str, client: Any = None) -> None:
        reply = (client or server.client).post(path, json=body)
        message = reply.get_json()["error"]
        assert reply.status_code == status and text in message, (reply.status_code, message)
        assert "\n" not in message

    refused(f"{url}/prompt", {"frame": 0, "obj": 1, "points": [[500, 10, 1]]}, 400,
            "click (500, 10) lies outside the 96x72 frame")
    refused(f"{url}/prompt", {"frame": 0, "obj": 1, "points": [[-1, 10, 1]]}, 400, "outside")
    refused(f"{url}/prompt", {"frame": 0, "obj": 1, "points": [[float("nan"), 10, 1]]}, 400,
            "finite")
    refused(f"{url}/prompt", {"frame": 0, "obj": 1, "box": [1, float("inf"), 5, 5]}, 400,
            "finite")
    refused(f"{url}/prompt", {"frame": 0, "obj": 1, "points": [[5, 5, 1]] * 65}, 400,
            "at most 64 clicks")
    refused(f"{url}/prompt", {"frame": 0, "obj": 1, "points": [[5, 5, 1]] * 400_000}, 400,
            "at most 64 clicks")
    refused(f"{url}/prompt", {"frame": 99, "obj": 1, "points": [[5, 5, 1]]}, 400,
            "out of range")
    refused(f"{url}/prompt", {"frame": 0, "obj": 7, "points": [[5, 5, 1]]}, 400,
            "no such object")
    refused(f"{url}/prompt", {"frame": 0, "obj": 1, "points": "x"}, 400, "points")
    refused(f"{url}/prompt", {"frame": "0", "obj": 1}, 400, "frame: expected an integer")
    refused(f"{url}/undo", {"frame": 3, "obj": 1}, 400, "nothing to undo")
    reply = server.client.post(f"{url}/prompt", data="{not json",
                               content_type="application/json")
    assert reply.status_code == 400 and "JSON object" in reply.get_json()["error"]
    # A flood of clicks, one request each: every one decoded or refused, never a crash.
    for i in range(63):
        assert server.post(f"{url}/prompt",
                           {"frame": 2, "obj": 1, "points": [[10 + i % 40, 20, 1]]}
                           ).status_code == 200
    refused(f"{url}/prompt", {"frame": 2, "obj": 1, "points": [[5, 5, 1], [6, 6, 1]]}, 400,
            "at most 64 clicks")
    # Another origin, another browser, a made-up or malformed id.
    reply = server.client.post(f"{url}/prompt", json={"frame": 0, "obj": 1,
                               "points": [[5, 5, 1]]}, headers={"Origin": "http://evil.example"})
    assert reply.status_code == 403 and "cross-origin" in reply.get_json()["error"]
    stranger = server.app.test_client()
    stranger.get("/")
    for path in (url, f"{url}/frames/0.jpg", f"{url}/masks/0.png", f"{url}/export.zip"):
        reply = stranger.get(path)
        assert reply.status_code == 403, path
        assert reply.get_json()["error"] == "this session belongs to another browser"
    refused(f"{url}/track", {}, 403, "another browser", client=stranger)
    assert stranger.get("/api/sessions").get_json() == []
    for bad in ("A" * 32, "..", "%2e%2e%2fmeta.json"):
        assert stranger.get(f"/api/sessions/{bad}").status_code == 404
    # Uploads that are not videos.
    for name, data, text in (("notes.txt", b"hello", "notes.txt is not a video"),
                             ("fake.mp4", b"\x00" * 64, "fake.mp4 could not be decoded")):
        reply = server.client.post("/api/sessions", data={"video": (io.BytesIO(data), name)},
                                   content_type="multipart/form-data")
        assert reply.status_code == 400 and text in reply.get_json()["error"]
    assert len(server.store.sessions) == 1

    # Concurrent track requests, export and prompts during tracking: 409, nothing lost.
    fake.gate.clear()
    assert server.post(f"{url}/track", {"direction": "forward"}).status_code == 202
    job = server.client.get(f"{url}/poll").get_json()["job"]
    assert job["state"] == "running", job
    refused(f"{url}/track", {"direction": "backward"}, 409, "tracking is running")
    refused(f"{url}/export", {}, 409, "tracking is running")
    refused(f"{url}/prompt", {"frame": 0, "obj": 1, "points": [[5, 5, 1]]}, 409,
            "tracking is running")
    refused(f"{url}/remove", {"obj": 1}, 409, "tracking is running")
    assert server.post(f"{url}/cancel").status_code == 200
    fake.gate.set()
    data = server.wait(sid)
    assert data["job"]["state"] == "cancelled" and 1 <= data["job"]["done"] < NUM_FRAMES
    refused(f"{url}/cancel", {}, 400, "nothing to cancel")
    refused(f"{url}/track", {"direction": "sideways"}, 400, "direction")
    # The session is intact: the log holds only what succeeded, and work goes on.
    ops = [json.loads(line) for line in log.read_text().splitlines()]
    assert log.read_text().startswith(ops_before)
    assert sum(op["op"] == "add" for op in ops) == 2 + 63
    assert server.post(f"{url}/track", {"direction": "both"}).status_code == 202
    assert server.wait(sid)["job"]["state"] == "done"
    server.post(f"{url}/remove", {"obj": 2})
    data = server.client.get(f"{url}/poll?since=-1").get_json()
    assert list(data["lanes"]) == ["1"]
    assert set(np.unique(server.store.sessions[sid].index_mask(3))) == {0, 1}
    server.store.close()


def test_limits_and_cleanup(demo_app: ModuleType, annotator: ModuleType,
                            scene_samples: tuple[Any, Path], tmp_path: Path) -> None:
    scene, samples = scene_samples
    server = Server(demo_app, annotator, tmp_path / "s", FakeSegmenter(scene), samples,
                    max_frames=5, max_objects=1, max_sessions=2)
    refused = server.post("/api/sessions", {"sample": "sample0"})
    assert refused.status_code == 400
    assert refused.get_json()["error"] == (f"squares has {NUM_FRAMES} frames; this server "
                                           "takes at most 5")
    server.store.limits = annotator.Limits(max_objects=1, max_sessions=2,
                                           background_encode=False)
    ids = []
    for _ in range(3):
        ids.append(server.post("/api/sessions", {"sample": "sample0"}).get_json()["id"])
        time.sleep(0.02)
    # Two sessions kept: the least recently changed one went.
    assert sorted(server.store.sessions) == sorted(ids[1:])
    assert not (server.store.root / ids[0]).exists()
    sid = ids[-1]
    assert len(sid) >= 32 and sid not in ids[:-1]
    session = server.store.get(sid, server.client.get_cookie(demo_app.OWNER_COOKIE).value)
    session.limits = annotator.Limits(max_objects=1, background_encode=False)
    assert server.post(f"/api/sessions/{sid}/objects").status_code == 201
    reply = server.post(f"/api/sessions/{sid}/objects")
    assert reply.status_code == 400 and "at most 1 objects" in reply.get_json()["error"]
    server.store.close()
    # Sessions unchanged for longer than the TTL go when the server starts.
    old = time.time() - 3 * 3600
    for path in (server.store.root / ids[1]).iterdir():
        os.utime(path, (old, old))
    again = Server(demo_app, annotator, tmp_path / "s", FakeSegmenter(scene), samples,
                   ttl_hours=2.0)
    assert sorted(again.store.sessions) == [sid]
    assert not (again.store.root / ids[1]).exists()


def test_frame_folder_upload(demo_app: ModuleType, annotator: ModuleType,
                             scene_samples: tuple[Any, Path], tmp_path: Path) -> None:
    scene, samples = scene_samples
    server = Server(demo_app, annotator, tmp_path / "s", FakeSegmenter(scene), samples)
    folder = samples / "squares"
    files = [(io.BytesIO(p.read_bytes()), p.name) for p in sorted(folder.glob("*.png"))]
    files.append((io.BytesIO(b"notes"), "README.txt"))  # other files are skipped
    reply = server.client.post("/api/sessions", data={"frames": files, "name": "squares"},
                               content_type="multipart/form-data")
    assert reply.status_code == 201, reply.get_json()
    data = reply.get_json()
    assert (data["name"], data["num_frames"], data["width"]) == ("squares", NUM_FRAMES, HW[1])
    sid = data["id"]
    assert sorted(p.name for p in (server.store.root / sid / "frames").iterdir()) == [
        f"{t:05d}.png" for t in range(NUM_FRAMES)]
    server.post(f"/api/sessions/{sid}/objects")
    reply = server.post(f"/api/sessions/{sid}/prompt",
                        {"frame": 3, "obj": 1, "points": [[*center(scene, 3, 0), 1]]})
    assert reply.get_json()["status"] == {"1": "P"}
    for files, text in (([(io.BytesIO(b"x"), "a.txt")], "no image files"),
                        ([(io.BytesIO(b"x"), "a b.png")], "frame file name 'a b.png'"),
                        ([(io.BytesIO(b"x"), "a.png"), (io.BytesIO(b"x"), "d/a.png")],
                         "two frames named a.png"),
                        ([(io.BytesIO(b"x"), "a.png")], "could not be decoded")):
        reply = server.client.post("/api/sessions", data={"frames": files},
                                   content_type="multipart/form-data")
        assert reply.status_code == 400 and text in reply.get_json()["error"], reply.get_json()
    assert len(server.store.sessions) == 1
    assert len(list(server.store.root.iterdir())) == 1  # refused uploads leave nothing
    server.store.close()
