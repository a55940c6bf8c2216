"""The annotator's HTTP API through Flask's test client, on the ground-truth fake segmenter.

Fast (no model): sessions, tracking both ways, corrections, undo of every action, stale
frames and stale exports, restore from disk (without running the model) after a restart and
after a kill at each step of an edit or a pass, read-only sessions, quotas per owner, upload
limits, session bundles and mask imports, and hostile input answered with one line.
"""

from __future__ import annotations

import io
import json
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
from vos.io.davis_png import read_palette_png, write_palette_png
from vos.io.sinks import encode_rle

pytest.importorskip("flask")

NUM_FRAMES = 10
HW = (72, 96)


class SlowFake(FakeSegmenter):
    """The fake with a decode that waits while ``gate`` is clear (holds a pass mid-way)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.decodes = 0
        self.limit: int | None = None  # decodes after which the gate holds too

    def decode_prompts(self, embedding: Any, prompts: Any) -> Any:
        if self.limit is None or self.decodes >= self.limit:
            self.gate.wait(60.0)
        self.decodes += 1
        return super().decode_prompts(embedding, prompts)


def write_scene(folder: Path, scene: Any) -> Path:
    folder.mkdir(parents=True)
    for t, frame in enumerate(scene.frames):
        cv2.imwrite(str(folder / f"{t:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture
def scene_samples(tmp_path: Path) -> tuple[Any, Path]:
    """Two squares crossing a 10-frame scene, as a lossless PNG frame folder sample."""
    objects = [SceneObject(((0, 20, 24), (9, 70, 24)), (16, 16), color=(230, 50, 50)),
               SceneObject(((0, 76, 52), (9, 30, 52)), (14, 14), color=(40, 220, 40))]
    scene = render(objects, NUM_FRAMES, HW)
    write_scene(tmp_path / "samples" / "squares", scene)
    return scene, tmp_path / "samples"


class Server:
    """A store and its Flask test client (a browser with its owner cookie)."""

    def __init__(self, annotate: ModuleType, root: Path, segmenter: Any, samples: Path,
                 owner: str | None = None, **limits: Any) -> None:
        limits.setdefault("background_encode", False)
        self.annotate = annotate
        self.store = annotate.SessionStore(root, segmenter, load_config(None, []), None,
                                           annotate.Limits(**limits))
        self.app = annotate.create_app(self.store, annotate.find_samples(samples))
        self.client = self.browser(owner)

    def browser(self, owner: str | None = None) -> Any:
        client = self.app.test_client()
        if owner is None:
            client.get("/")
        else:
            client.set_cookie(self.annotate.OWNER_COOKIE, owner)
        return client

    @property
    def owner(self) -> str:
        return self.client.get_cookie(self.annotate.OWNER_COOKIE).value

    def post(self, path: str, body: Any = None, client: Any = None, **kwargs: Any) -> Any:
        return (client or self.client).post(path, json=body if body is not None else {},
                                            **kwargs)

    def poll(self, sid: str) -> dict[str, Any]:
        return self.client.get(f"/api/sessions/{sid}/poll?since=-1").get_json()

    def wait(self, sid: str, timeout: float = 30.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            data = self.poll(sid)
            if data["job"] is None or data["job"]["state"] != "running":
                return data
            time.sleep(0.02)
        raise AssertionError("the job did not finish")

    def track(self, sid: str, direction: str = "both", start: int | None = None) -> dict:
        reply = self.post(f"/api/sessions/{sid}/track", {"direction": direction, "start": start})
        assert reply.status_code == 202, reply.get_json()
        data = self.wait(sid)
        assert data["job"]["state"] == "done", data["job"]
        return data

    def results(self, sid: str) -> dict[str, bytes]:
        folder = self.store.root / sid / "results"
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


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


def index_masks(server: Server, sid: str) -> dict[int, np.ndarray]:
    folder = server.store.root / sid / "results"
    return {int(p.stem): read_palette_png(p) for p in folder.glob("*.png")}


def reopened(server: Server, root: Path, segmenter: Any, samples: Path, **limits: Any) -> Server:
    """A new server over ``root`` (a restart), with the same browser."""
    server.store.close()
    return Server(server.annotate, root, segmenter, samples, owner=server.owner, **limits)


def test_prompt_track_correct_export_restore(annotate: ModuleType,
                                             scene_samples: tuple[Any, Path],
                                             tmp_path: Path) -> None:
    scene, samples = scene_samples
    server = Server(annotate, tmp_path / "sessions", FakeSegmenter(scene), samples)
    sid = open_scene(server, scene)
    first = index_masks(server, sid)
    assert sorted(first) == [0, 6]  # each mask is there before any tracking
    np.testing.assert_array_equal(first[0] == 1, scene.gt_masks[0, 0])
    np.testing.assert_array_equal(first[6] == 2, scene.gt_masks[6, 1])

    data = server.track(sid)
    assert data["job"]["done"] == NUM_FRAMES + 7 and data["stale"] == []
    assert data["lanes"] == {"1": "P" + "T" * 9, "2": "T" * 6 + "P" + "T" * 3}
    for t, index in index_masks(server, sid).items():
        np.testing.assert_array_equal(index == 1, scene.gt_masks[t, 0], err_msg=f"{t}")
        np.testing.assert_array_equal(index == 2, scene.gt_masks[t, 1], err_msg=f"{t}")

    # A correction on a middle frame persists through re-tracking from it.
    reply = server.post(f"/api/sessions/{sid}/prompt",
                        {"frame": 4, "obj": 1, "points": [[*center(scene, 4, 0), 1]]})
    assert reply.get_json()["status"]["1"] == "P"
    data = server.track(sid, "forward", 4)
    assert data["lanes"]["1"][4] == "P" and data["job"]["done"] == NUM_FRAMES - 4
    # Object 2's results before frame 6 came from the backward pass, which crossed the
    # corrected frame: they stay stale until it runs again.
    assert data["stale"] == [[0, 4]]
    assert server.track(sid, "backward")["stale"] == []

    # Export: vos.run's layout and formats, plus what the annotator knows.
    assert server.post(f"/api/sessions/{sid}/export").status_code == 202
    data = server.wait(sid)
    assert data["job"]["state"] == "done" and data["export"]["stale"] is False
    zipped = server.client.get(f"/api/sessions/{sid}/export.zip")
    archive = zipfile.ZipFile(io.BytesIO(zipped.data))
    names = set(archive.namelist())
    assert {f"masks/{t:05d}.png" for t in range(NUM_FRAMES)} <= names
    assert "overlay.mp4" in names and archive.read("overlay.mp4")[4:8] == b"ftyp"
    record = json.loads(archive.read("json/00003.json"))
    assert record["frame_name"] == "00003" and record["image_hw"] == list(HW)
    assert json.loads(archive.read("objects.json")) == {"1": "object 1", "2": "green"}
    about = json.loads(archive.read("export.json"))
    assert about["stale_frames"] == [] and about["frames"] == NUM_FRAMES
    before = index_masks(server, sid)
    for t in range(NUM_FRAMES):
        path = tmp_path / "x.png"
        path.write_bytes(archive.read(f"masks/{t:05d}.png"))
        np.testing.assert_array_equal(read_palette_png(path), before[t])

    # A restart: the session opens from disk, without running the model, as it was.
    files = server.results(sid)
    log = (server.store.root / sid / "ops.jsonl").read_text()
    old = server.store.sessions[sid]
    fake = SlowFake(scene)
    again = reopened(server, tmp_path / "sessions", fake, samples)
    assert [s["id"] for s in again.client.get("/api/sessions").get_json()] == [sid]
    data = again.poll(sid)
    assert data["job"] is None and data["read_only"] is None and data["notice"] is None
    assert data["lanes"] == old.poll(-1)["lanes"] and data["stale"] == []
    assert fake.encode_calls == [] and fake.decodes == 0
    assert again.results(sid) == files
    session = again.store.sessions[sid]
    assert session.book.current == old.book.current and session.book.objects == old.book.objects
    # ... and carries on exactly where the old predictor was.
    again.track(sid, "forward")
    assert again.results(sid) == files
    assert (again.store.root / sid / "ops.jsonl").read_text().startswith(log)
    again.store.close()


def test_undo_takes_back_every_action(annotate: ModuleType, scene_samples: tuple[Any, Path],
                                      tmp_path: Path) -> None:
    scene, samples = scene_samples
    server = Server(annotate, tmp_path / "s", FakeSegmenter(scene), samples)
    sid = open_scene(server, scene)
    url = f"/api/sessions/{sid}"
    server.track(sid)
    tracked = server.results(sid)
    history = [(server.results(sid), server.poll(sid))]

    def act(path: str, body: dict[str, Any]) -> None:
        reply = server.post(f"{url}/{path}", body)
        assert reply.status_code in (200, 201), reply.get_json()
        history.append((server.results(sid), server.poll(sid)))

    pos = [*center(scene, 4, 0), 1]
    act("prompt", {"frame": 4, "obj": 1, "points": [pos]})
    act("prompt", {"frame": 4, "obj": 1, "points": [[pos[0] + 2, pos[1], 1]]})
    act("clear", {"frame": 0, "obj": 1})
    act("rename", {"obj": 2, "name": "lime"})
    act("remove", {"obj": 2})
    act("objects", {"name": "third"})
    assert server.poll(sid)["undo"] == "new object third"
    expected = ["new object third", "removing lime", "renaming green to lime",
                "clearing frame 0 (object 1)", "click on frame 4 (object 1)",
                "click on frame 4 (object 1)"]
    for what in expected:
        reply = server.post(f"{url}/undo")
        assert reply.status_code == 200 and reply.get_json()["undone"] == what
        history.pop()
        files, poll = history[-1]
        now = server.poll(sid)
        # Masks, statuses, objects, names and lanes are back to what they were; so is the
        # kept states' validity (no pass ran in between): nothing is stale.
        assert server.results(sid) == files, what
        for key in ("lanes", "objects", "stale"):
            assert now[key] == poll[key], (what, key)
    assert server.results(sid) == tracked and server.poll(sid)["stale"] == []
    # The undo answers where to look and keeps the page's selection meaningful.
    act("prompt", {"frame": 4, "obj": 1, "points": [pos]})
    reply = server.post(f"{url}/undo").get_json()
    assert (reply["frame"], reply["obj"]) == (4, 1) and reply["info"]["prompts"] == []
    # The whole history survives a restart: the undo stack is rebuilt from the log.
    act("remove", {"obj": 1})
    again = reopened(server, tmp_path / "s", FakeSegmenter(scene), samples)
    assert again.poll(sid)["undo"] == "removing object 1"
    reply = again.post(f"{url}/undo")
    assert reply.get_json()["undone"] == "removing object 1"
    assert again.results(sid) == tracked and again.poll(sid)["stale"] == []
    again.store.close()


def test_stale_frames_and_stale_export(annotate: ModuleType, scene_samples: tuple[Any, Path],
                                       tmp_path: Path) -> None:
    scene, samples = scene_samples
    fake = SlowFake(scene)
    server = Server(annotate, tmp_path / "s", fake, samples)
    sid = open_scene(server, scene)
    url = f"/api/sessions/{sid}"
    server.track(sid)
    server.post(f"{url}/export")
    assert server.wait(sid)["export"]["stale"] is False
    # A correction on frame 4 of object 1 (first prompted on 0): the forward results after
    # it are stale, and so are object 2's results before frame 6, which the backward pass
    # tracked across frame 4.
    server.post(f"{url}/prompt", {"frame": 4, "obj": 1, "points": [[*center(scene, 4, 0), 1]]})
    data = server.poll(sid)
    assert data["stale"] == [[0, 9]] and data["export"]["stale"] is True
    server.post(f"{url}/export")
    data = server.wait(sid)
    assert data["job"]["result"]["stale_frames"] == list(range(NUM_FRAMES))
    assert data["export"]["stale"] is False
    zipped = zipfile.ZipFile(io.BytesIO(server.client.get(f"{url}/export.zip").data))
    assert json.loads(zipped.read("export.json"))["stale_frames"] == list(range(NUM_FRAMES))
    # Forward from the correction: object 1 is fresh again; object 2 waits for a backward pass.
    assert server.track(sid, "forward", 4)["stale"] == [[0, 4]]
    assert server.track(sid, "backward")["stale"] == []

    # One object: a cancelled re-track leaves exactly the frames it did not reach stale.
    sid = server.post("/api/sessions", {"sample": "sample0"}).get_json()["id"]
    url = f"/api/sessions/{sid}"
    server.post(f"{url}/objects")
    server.post(f"{url}/prompt", {"frame": 0, "obj": 1, "points": [[*center(scene, 0, 0), 1]]})
    server.track(sid, "forward")
    server.post(f"{url}/prompt", {"frame": 4, "obj": 1, "points": [[*center(scene, 4, 0), 1]]})
    assert server.poll(sid)["stale"] == [[5, 9]]
    fake.limit = fake.decodes + 3  # a few frames, then the pass waits
    fake.gate.clear()
    server.post(f"{url}/track", {"direction": "forward", "start": 4})
    while fake.decodes < fake.limit:
        time.sleep(0.01)
    server.post(f"{url}/cancel")
    fake.gate.set()
    data = server.wait(sid)
    assert data["job"]["state"] == "cancelled" and 2 <= data["job"]["done"] < 6
    assert data["stale"] == [[4 + data["job"]["done"], 9]]
    server.store.close()


def test_a_kill_at_any_step_restores_a_consistent_session(
        annotate: ModuleType, scene_samples: tuple[Any, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the folder taken at each step of an edit and of a pass is what a kill -9
    at that moment leaves: every copy opens writable, with the prompts the log holds, masks
    that agree with them, and nothing lost that the user saw acknowledged."""
    from vos.annotate import jobs, oplog, predictor_state, results
    from vos.annotate import session as session_module

    scene, samples = scene_samples
    server = Server(annotate, tmp_path / "s", FakeSegmenter(scene), samples)
    sid = open_scene(server, scene)
    folder = server.store.root / sid
    copies: list[tuple[str, Path]] = []

    def snapshot(where: str) -> None:
        target = tmp_path / f"kill{len(copies)}"
        shutil.copytree(folder.parent, target)
        copies.append((where, target))

    def before(module: Any, name: str) -> None:
        original = getattr(module, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            snapshot(f"before {name}")
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    for module, name in ((oplog.OpLog, "append"), (results.ResultStore, "write")):
        before(module, name)
    for module, name in ((session_module, "save_checkpoint"), (jobs, "save_checkpoint"),
                         (session_module, "save_entry")):
        before(module, name)
    server.post(f"/api/sessions/{sid}/prompt",
                {"frame": 3, "obj": 1, "points": [[*center(scene, 3, 0), 1]]})
    server.post(f"/api/sessions/{sid}/undo")
    server.post(f"/api/sessions/{sid}/remove", {"obj": 2})
    server.track(sid, "forward")
    monkeypatch.undo()
    assert len(copies) > 30
    for where, root in copies:
        again = Server(annotate, root, SlowFake(scene), samples, owner=server.owner)
        data = again.poll(sid)
        assert data["read_only"] is None, (where, data["read_only"])
        session = again.store.sessions[sid]
        state = session.state
        # The predictor holds exactly the prompts the log holds...
        held = {(t, o) for t, objs in state.prompted.items() for o in objs}
        assert held == set(session.book.current), where
        # ... and every prompted frame shows what the predictor gives there.
        for t, _ in held:
            mask = index_masks(again, sid)[t]
            obj_ids, logits = predictor_state.frame_output(session.predictor, state, t)
            for row, obj in enumerate(obj_ids):
                shown = (logits[row, 0] > 0).numpy()
                np.testing.assert_array_equal(mask == obj, shown, err_msg=where)
        # And it goes on: tracking finishes and nothing is stale.
        assert again.track(sid)["stale"] == [], where
        again.store.close()
    server.store.close()


def test_kill_mid_tracking_says_so_and_keeps_the_frames(annotate: ModuleType,
                                                        scene_samples: tuple[Any, Path],
                                                        tmp_path: Path) -> None:
    scene, samples = scene_samples
    fake = SlowFake(scene)
    server = Server(annotate, tmp_path / "a", fake, samples)
    sid = open_scene(server, scene)
    server.post(f"/api/sessions/{sid}/track", {"direction": "forward"})
    session = server.store.sessions[sid]
    while session.job.done < 4:
        time.sleep(0.01)
    fake.gate.clear()  # the pass stops mid-way, as a killed server would
    time.sleep(0.1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # what a kill leaves on disk
    done = sum('"op":"frame"' in line
               for line in (tmp_path / "b" / sid / "ops.jsonl").read_text().splitlines())
    fake.gate.set()
    server.wait(sid)
    server.store.close()

    restarted = SlowFake(scene)
    again = Server(annotate, tmp_path / "b", restarted, samples, owner=server.owner)
    data = again.poll(sid)
    assert data["job"] is None and data["read_only"] is None
    assert data["notice"] == (f"Tracking forward from frame 0 was interrupted by a server "
                              f"restart after {done} frame(s); they are kept. Track again to "
                              "finish.")
    assert data["lanes"]["1"][:done] == "P" + "T" * (done - 1)
    assert restarted.decodes == 0
    restored = index_masks(again, sid)
    for t in range(done):
        np.testing.assert_array_equal(restored[t] == 1, scene.gt_masks[t, 0])
    data = again.track(sid, "forward")
    assert data["lanes"]["1"] == "P" + "T" * (NUM_FRAMES - 1) and data["notice"] is None
    again.store.close()


def test_a_damaged_session_opens_read_only_with_a_retry(annotate: ModuleType,
                                                        scene_samples: tuple[Any, Path],
                                                        tmp_path: Path) -> None:
    scene, samples = scene_samples
    server = Server(annotate, tmp_path / "s", FakeSegmenter(scene), samples)
    sid = open_scene(server, scene)
    server.track(sid)
    files = server.results(sid)
    server.store.close()
    entries = tmp_path / "s" / sid / "entries"
    moved = tmp_path / "aside"
    shutil.move(entries, moved)
    again = Server(annotate, tmp_path / "s", FakeSegmenter(scene), samples, owner=server.owner)
    data = again.poll(sid)
    assert "is missing or damaged" in data["read_only"]
    url = f"/api/sessions/{sid}"
    for path, body in (("prompt", {"frame": 0, "obj": 1, "points": [[5, 5, 1]]}),
                       ("track", {}), ("undo", {}), ("remove", {"obj": 1}),
                       ("objects", {}), ("clear", {"frame": 0, "obj": 1})):
        reply = again.post(f"{url}/{path}", body)
        assert reply.status_code == 423, path
        assert reply.get_json()["error"].startswith("this session could not be restored")
    assert again.results(sid) == files  # nothing was touched
    again.post(f"{url}/export")  # what it shows can still be taken away
    assert again.wait(sid)["job"]["state"] == "done"
    shutil.move(moved, entries)
    reply = again.post(f"{url}/retry")
    assert reply.status_code == 200 and reply.get_json()["read_only"] is None
    assert again.post(f"{url}/undo").status_code == 200
    again.store.close()


def test_hostile_input_one_line_and_session_intact(annotate: ModuleType,
                                                   scene_samples: tuple[Any, Path],
                                                   tmp_path: Path) -> None:
    scene, samples = scene_samples
    fake = SlowFake(scene)
    server = Server(annotate, tmp_path / "s", fake, samples)
    sid = open_scene(server, scene)
    url = f"/api/sessions/{sid}"
    log = server.store.root / sid / "ops.jsonl"
    ops_before = log.read_text()

    def refused(path: str, body: Any, status: int, text: str, client: Any = None) -> None:
        reply = (client or server.client).post(path, json=body)
        message = reply.get_json()["error"]
        assert reply.status_code == status and text in message, (reply.status_code, message)
        assert "\n" not in message and "points_xy" not in message and str(tmp_path) not in message

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
            "frame 99 is out of range")
    refused(f"{url}/prompt", {"frame": 0, "obj": 7, "points": [[5, 5, 1]]}, 400,
            "object 7 does not exist")
    refused(f"{url}/prompt", {"frame": 0, "obj": 1, "points": "x"}, 400, "clicks")
    refused(f"{url}/prompt", {"frame": "0", "obj": 1}, 400, "frame: expected a whole number")
    refused(f"{url}/clear", {"frame": 3, "obj": 1}, 400, "nothing to clear")
    # A "remove area" click alone, where the object has no mask: a sentence, not a parameter.
    refused(f"{url}/prompt", {"frame": 8, "obj": 1, "points": [[5, 5, 0]]}, 400,
            "'remove area' click needs a mask")
    reply = server.client.post(f"{url}/prompt", data="{not json",
                               content_type="application/json")
    assert reply.status_code == 400 and "JSON object" in reply.get_json()["error"]
    for i in range(63):  # a flood of clicks: each decoded or refused, never a crash
        assert server.post(f"{url}/prompt",
                           {"frame": 2, "obj": 1, "points": [[10 + i % 40, 20, 1]]}
                           ).status_code == 200
    refused(f"{url}/prompt", {"frame": 2, "obj": 1, "points": [[5, 5, 1], [6, 6, 1]]}, 400,
            "at most 64 clicks")
    # Another origin, another browser, a made-up or malformed id.
    reply = server.client.post(f"{url}/prompt", json={"frame": 0, "obj": 1,
                               "points": [[5, 5, 1]]}, headers={"Origin": "http://evil.example"})
    assert reply.status_code == 403 and "cross-origin" in reply.get_json()["error"]
    stranger = server.browser()
    for path in (url, f"{url}/frames/0.jpg", f"{url}/masks/0.png", f"{url}/export.zip",
                 f"{url}/bundle"):
        reply = stranger.get(path)
        assert reply.status_code == 403, path
        assert reply.get_json()["error"] == "this session belongs to another browser"
    refused(f"{url}/track", {}, 403, "another browser", client=stranger)
    assert stranger.delete(url).status_code == 403
    assert stranger.get("/api/sessions").get_json() == []
    for bad in ("A" * 32, "..", "%2e%2e%2fmeta.json"):
        assert stranger.get(f"/api/sessions/{bad}").status_code == 404
    for name, data, text in (("notes.txt", b"hello", "notes.txt is not a video"),
                             ("fake.mp4", b"\x00" * 64, "fake.mp4 could not be decoded")):
        reply = server.client.post("/api/sessions", data={"video": (io.BytesIO(data), name)},
                                   content_type="multipart/form-data")
        assert reply.status_code == 400 and text in reply.get_json()["error"]
    assert len(server.store.sessions) == 1

    # Requests while tracking: 409, nothing lost.
    fake.gate.clear()
    assert server.post(f"{url}/track", {"direction": "forward"}).status_code == 202
    refused(f"{url}/track", {"direction": "backward"}, 409, "tracking is running")
    refused(f"{url}/export", {}, 409, "tracking is running")
    refused(f"{url}/prompt", {"frame": 0, "obj": 1, "points": [[5, 5, 1]]}, 409,
            "tracking is running")
    refused(f"{url}/undo", {}, 409, "tracking is running")
    assert server.client.delete(url).status_code == 409
    assert server.post(f"{url}/cancel").status_code == 200
    fake.gate.set()
    data = server.wait(sid)
    assert data["job"]["state"] == "cancelled" and 1 <= data["job"]["done"] < NUM_FRAMES
    refused(f"{url}/cancel", {}, 400, "nothing to cancel")
    refused(f"{url}/track", {"direction": "sideways"}, 400, "direction")
    ops = [json.loads(line) for line in log.read_text().splitlines()]
    assert log.read_text().startswith(ops_before)
    assert sum(op["op"] == "add" for op in ops) == 2 + 63
    assert server.track(sid)["stale"] == []
    server.store.close()


def test_quotas_are_per_browser_and_a_full_server_says_so(
        annotate: ModuleType, scene_samples: tuple[Any, Path], tmp_path: Path) -> None:
    scene, samples = scene_samples
    server = Server(annotate, tmp_path / "s", FakeSegmenter(scene), samples,
                    max_sessions=6, max_sessions_per_owner=3)
    alice, bob = server.client, server.browser()
    mine = [server.post("/api/sessions", {"sample": "sample0"}, client=alice).get_json()["id"]
            for _ in range(3)]
    server.post(f"/api/sessions/{mine[0]}/objects", client=alice)  # annotated, oldest
    # Bob fills his own quota and more: only his own oldest sessions go, never Alice's.
    bobs = []
    for k in range(5):
        reply = server.post("/api/sessions", {"sample": "sample0"}, client=bob)
        assert reply.status_code == 201
        bobs.append(reply.get_json()["id"])
        notice = reply.get_json()["notice"]
        assert (notice is None) == (k < 3), notice
        time.sleep(0.01)
    assert "You may keep 3 sessions: your oldest (squares) was deleted" in notice
    assert sorted(s["id"] for s in bob.get("/api/sessions").get_json()) == sorted(bobs[2:])
    assert sorted(s["id"] for s in alice.get("/api/sessions").get_json()) == sorted(mine)
    assert all((server.store.root / sid).is_dir() for sid in mine)
    # The server is full (6): a new browser is refused with one line; nothing is deleted.
    carol = server.browser()
    reply = server.post("/api/sessions", {"sample": "sample0"}, client=carol)
    assert reply.status_code == 507
    assert reply.get_json()["error"] == ("the server is full (6 sessions): delete one of your "
                                         "sessions or try again later")
    assert len(server.store.sessions) == 6
    # Deleting one of yours makes room.
    assert alice.delete(f"/api/sessions/{mine[1]}").status_code == 200
    assert server.post("/api/sessions", {"sample": "sample0"}, client=carol).status_code == 201
    server.store.close()
    # Sessions unchanged for longer than their lifetime go at start, whoever owns them.
    old = time.time() - 3 * 3600
    for path in (tmp_path / "s" / mine[0]).iterdir():
        import os

        os.utime(path, (old, old))
    again = Server(annotate, tmp_path / "s", FakeSegmenter(scene), samples, ttl_hours=2.0)
    assert mine[0] not in again.store.sessions and len(again.store.sessions) == 5


def test_uploads_are_checked_before_a_session_exists(annotate: ModuleType,
                                                    scene_samples: tuple[Any, Path],
                                                    tmp_path: Path) -> None:
    scene, samples = scene_samples
    server = Server(annotate, tmp_path / "s", FakeSegmenter(scene), samples,
                    max_pixels=80 * 60, max_frames=20)

    def upload(files: list[tuple[bytes, str]]) -> Any:
        return server.client.post("/api/sessions",
                                  data={"frames": [(io.BytesIO(d), n) for d, n in files],
                                        "name": "clip"},
                                  content_type="multipart/form-data")

    def png(h: int, w: int) -> bytes:
        return cv2.imencode(".png", np.full((h, w, 3), 90, np.uint8))[1].tobytes()

    reply = upload([(png(72, 96), f"{t:05d}.png") for t in range(3)])
    assert reply.status_code == 400
    assert reply.get_json()["error"].startswith(
        "clip is 96x72; this server takes at most 0.0 megapixels a frame")
    server.store.limits = annotate.Limits(background_encode=False)
    reply = upload([(png(72, 96), "00000.png"), (png(200, 320), "00001.png"),
                    (png(72, 96), "00002.png")])
    assert reply.status_code == 400
    assert reply.get_json()["error"] == ("clip: 00001.png is 320x200 but 00000.png is 96x72; "
                                         "every frame of a folder must have the same size")
    reply = upload([(png(72, 96), "00000.png"), (b"not a png", "00001.png")])
    assert reply.get_json()["error"] == "clip: 00001.png could not be decoded as an image"
    reply = upload([(b"x", "a b.png")])
    assert "frame file name 'a b.png'" in reply.get_json()["error"]
    assert len(server.store.sessions) == 0
    assert list(server.store.root.iterdir()) == []  # refused uploads leave nothing
    reply = upload([(png(72, 96), f"{t:05d}.png") for t in range(3)]
                   + [(b"notes", "README.txt")])
    assert reply.status_code == 201 and reply.get_json()["num_frames"] == 3
    # An upload a kill interrupted (a folder without meta.json) goes when the server starts.
    (server.store.root / ("x" * 32)).mkdir()
    again = reopened(server, tmp_path / "s", FakeSegmenter(scene), samples)
    assert len(list(again.store.root.iterdir())) == 1


def test_lost_objects_stay_until_removed(annotate: ModuleType, tmp_path: Path) -> None:
    """An object hidden for longer than the tracker's own limit (30 frames) stays LOST in the
    annotator, searched for on every frame, and is found again when it comes back."""
    n = 45
    objects = [SceneObject(((0, 20, 30), (5, 20, 30), (6, 200, 30), (40, 200, 30),
                            (41, 30, 30), (44, 40, 30)), (14, 14))]
    scene = render(objects, n, (60, 80))
    write_scene(tmp_path / "samples" / "clip", scene)
    server = Server(annotate, tmp_path / "s", FakeSegmenter(scene), tmp_path / "samples")
    sid = server.post("/api/sessions", {"sample": "sample0"}).get_json()["id"]
    server.post(f"/api/sessions/{sid}/objects")
    server.post(f"/api/sessions/{sid}/prompt",
                {"frame": 0, "obj": 1, "points": [[*center(scene, 0, 0), 1]]})
    lane = server.track(sid, "forward")["lanes"]["1"]
    assert lane[:6] == "P" + "T" * 5 and set(lane[6:41]) == {"L"}
    assert lane[41:] == "T" * 4
    server.store.close()


def test_session_bundle_moves_to_another_server(annotate: ModuleType,
                                                scene_samples: tuple[Any, Path],
                                                tmp_path: Path) -> None:
    scene, samples = scene_samples
    server = Server(annotate, tmp_path / "a", FakeSegmenter(scene), samples)
    sid = open_scene(server, scene)
    server.track(sid)
    server.post(f"/api/sessions/{sid}/rename", {"obj": 2, "name": "lime"})
    files = server.results(sid)
    bundle = server.client.get(f"/api/sessions/{sid}/bundle")
    assert bundle.status_code == 200
    assert "squares.session.zip" in bundle.headers["Content-Disposition"]

    other = Server(annotate, tmp_path / "b", FakeSegmenter(scene), tmp_path / "b")
    reply = other.client.post("/api/sessions",
                              data={"bundle": (io.BytesIO(bundle.data), "squares.session.zip")},
                              content_type="multipart/form-data")
    assert reply.status_code == 201, reply.get_json()
    new = reply.get_json()
    assert new["name"] == "squares" and new["id"] != sid
    assert [o["name"] for o in new["objects"]] == ["object 1", "lime"]
    data = other.poll(new["id"])
    assert data["read_only"] is None and data["stale"] == [] and data["undo"] == \
        "renaming green to lime"
    assert other.results(new["id"]) == files
    info = other.client.get(f"/api/sessions/{new['id']}/frames/6").get_json()
    assert info["prompts"][0]["box"] is not None
    assert other.post(f"/api/sessions/{new['id']}/undo").status_code == 200
    assert other.track(new["id"])["lanes"]["1"] == "P" + "T" * 9
    # A zip that is not a bundle, or one whose paths leave the folder, is refused.
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("session.json", json.dumps({"format": "repvit-vos-session/1"}))
        archive.writestr("../../outside.txt", "x")
    for data_, text in ((b"PK\x03\x04junk", "not a session bundle"),
                        (evil.getvalue(), "unexpected file '../../outside.txt'")):
        reply = other.client.post("/api/sessions", data={"bundle": (io.BytesIO(data_), "b.zip")},
                                  content_type="multipart/form-data")
        assert reply.status_code == 400 and text in reply.get_json()["error"]
    assert not (tmp_path / "outside.txt").exists()
    server.store.close()
    other.store.close()


def test_import_masks_as_prompts(annotate: ModuleType, scene_samples: tuple[Any, Path],
                                 tmp_path: Path) -> None:
    scene, samples = scene_samples
    server = Server(annotate, tmp_path / "s", FakeSegmenter(scene), samples)
    sid = server.post("/api/sessions", {"sample": "sample0"}).get_json()["id"]
    url = f"/api/sessions/{sid}"
    # A DAVIS palette PNG for frame 2 (ids 3 and 5 in the file) and a COCO-RLE frame
    # record for frame 7 (object 5 only), in a zip with the file's names.
    index = np.zeros(HW, np.uint8)
    index[scene.gt_masks[2, 0]] = 3
    index[scene.gt_masks[2, 1]] = 5
    png = tmp_path / "00002.png"
    write_palette_png(png, index)
    record = {"frame_name": "00007", "objects": [
        {"obj_id": 5, "segmentation": encode_rle(scene.gt_masks[7, 1])}]}
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.write(png, "masks/00002.png")
        archive.writestr("json/00007.json", json.dumps(record))
        archive.writestr("objects.json", json.dumps({"3": "red", "5": "green"}))
    reply = server.client.post(f"{url}/import", data={"masks": [(io.BytesIO(packed.getvalue()),
                                                                 "masks.zip")]},
                               content_type="multipart/form-data")
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json()["imported"] == [1, 2] and reply.get_json()["frames"] == 2
    assert [o["name"] for o in reply.get_json()["objects"]] == ["red", "green"]
    info = server.client.get(f"{url}/frames/7").get_json()
    assert info["prompts"] == [{"obj": 2, "points": [], "box": None, "mask": True}]
    lanes = server.track(sid)["lanes"]
    assert lanes == {"1": "T" * 2 + "P" + "T" * 7, "2": "T" * 2 + "P" + "T" * 4 + "P" + "TT"}
    for t, idx in index_masks(server, sid).items():
        np.testing.assert_array_equal(idx == 2, scene.gt_masks[t, 1], err_msg=f"{t}")
    # One undo takes the whole import back.
    reply = server.post(f"{url}/undo").get_json()
    assert reply["undone"] == "importing masks on 2 frame(s)" and reply["objects"] == []
    # Bad mask files: one line each.
    for files, text in (([(b"x", "00002.png")], "00002.png: not a readable PNG mask"),
                        ([(png.read_bytes(), "00099.png")], "no frame of this video is called 00099"),
                        ([(b"{}", "a.json")], "no masks found"),
                        ([(json.dumps({"objects": [{"obj_id": 1, "segmentation": {
                            "size": [10, 10], "counts": "00"}}]}).encode(), "00001.json")],
                         "a mask is 10x10; the video is 96x72")):
        reply = server.client.post(f"{url}/import", data={"masks": [
            (io.BytesIO(d), n) for d, n in files]}, content_type="multipart/form-data")
        assert reply.status_code == 400 and text in reply.get_json()["error"], reply.get_json()
    server.store.close()


def test_a_session_of_the_previous_version_is_replayed_once(
        annotate: ModuleType, scene_samples: tuple[Any, Path], tmp_path: Path) -> None:
    """A log written before sessions kept their model state (no ``n``, no predictor.json,
    undo as clear + add): opening it replays it through the model once, then saves the
    state, so the next opening reads it from disk."""
    scene, samples = scene_samples
    server = Server(annotate, tmp_path / "new", FakeSegmenter(scene), samples)
    sid = server.post("/api/sessions", {"sample": "sample0"}).get_json()["id"]
    server.store.close()
    folder = tmp_path / "new" / sid
    old = [{"op": "object", "obj": 1, "name": "object 1"},
           {"op": "add", "frame": 0, "obj": 1, "points": [center(scene, 0, 0)], "labels": [1],
            "box": None, "clear_old": False},
           {"op": "add", "frame": 0, "obj": 1, "points": [center(scene, 0, 1)], "labels": [1],
            "box": None, "clear_old": False},
           {"op": "clear", "frame": 0, "obj": 1},  # the old undo: clear, then add again
           {"op": "add", "frame": 0, "obj": 1, "points": [center(scene, 0, 0)], "labels": [1],
            "box": None, "clear_old": True},
           {"op": "track", "start": 0, "reverse": False},
           *({"op": "frame", "t": t} for t in range(NUM_FRAMES))]
    (folder / "ops.jsonl").write_text("".join(json.dumps(op) + "\n" for op in old))
    fake = SlowFake(scene)
    again = Server(annotate, tmp_path / "new", fake, samples, owner=server.owner)
    data = again.wait(sid)
    assert data["job"]["kind"] == "restore" and data["job"]["state"] == "done"
    assert data["read_only"] is None and data["notice"] is None
    assert data["lanes"]["1"] == "P" + "T" * (NUM_FRAMES - 1) and data["stale"] == []
    assert (folder / "predictor.json").is_file()
    for t, index in index_masks(again, sid).items():
        np.testing.assert_array_equal(index == 1, scene.gt_masks[t, 0], err_msg=f"{t}")
    replayed = fake.decodes
    third = reopened(again, tmp_path / "new", fake, samples)
    assert third.poll(sid)["job"] is None and fake.decodes == replayed  # read from disk
    assert third.post(f"/api/sessions/{sid}/undo").get_json()["undone"] == \
        "click on frame 0 (object 1)"
    third.store.close()


def test_stale_frames_are_told_per_object(annotate: ModuleType, scene_samples: tuple[Any, Path],
                                          tmp_path: Path) -> None:
    """The timeline hatches only the object whose result is stale, not every object on the
    frame: after a correction of object 1 on frame 4 and a forward re-track from it, only
    object 2's backward results (before its prompt on frame 6, across frame 4) are stale."""
    scene, samples = scene_samples
    server = Server(annotate, tmp_path / "s", FakeSegmenter(scene), samples)
    sid = open_scene(server, scene)
    server.track(sid)
    server.post(f"/api/sessions/{sid}/prompt",
                {"frame": 4, "obj": 1, "points": [[*center(scene, 4, 0), 1]]})
    data = server.track(sid, "forward", 4)
    assert data["stale"] == [[0, 4]] and data["stale_lanes"] == {"2": [[0, 4]]}
    assert server.track(sid, "backward")["stale_lanes"] == {}
    server.store.close()


def test_opening_sweeps_what_a_kill_left_half_written(annotate: ModuleType,
                                                      scene_samples: tuple[Any, Path],
                                                      tmp_path: Path) -> None:
    scene, samples = scene_samples
    server = Server(annotate, tmp_path / "s", FakeSegmenter(scene), samples)
    sid = open_scene(server, scene)
    files = server.results(sid)
    server.store.close()
    folder = tmp_path / "s" / sid
    left = [folder / "results" / ".3.png.999999.abc.tmp", folder / "states" / ".x.pt.1.f.tmp",
            folder / "export.zip.partial", folder / "export" / "masks" / "00000.png"]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    again = Server(annotate, tmp_path / "s", FakeSegmenter(scene), samples, owner=server.owner)
    assert again.poll(sid)["read_only"] is None
    assert not any(path.exists() for path in left) and not (folder / "export").exists()
    assert again.results(sid) == files
    again.store.close()
