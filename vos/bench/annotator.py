"""``--only annotator``: the web annotator at its default settings (issue 27's targets).

- **Click to mask** on a frame whose embedding is stored, through the HTTP layer (Flask's
  test client over the real app: JSON in, the decode, the frame's PNG and JSON, the log line,
  the saved predictor facts, JSON out), and on a frame not yet encoded.
- **Restore**: a session of N frames with 2 objects and 4 tracking passes is closed; then a
  new server process's work is timed: the store starts (it reads every session folder), the
  session opens from disk, and the first click on it is answered. Frames are a looped
  folder of distinct frames (as the predictor section's long run), so building a 2,000-frame
  session encodes only the distinct ones.
- **Memory**: RSS of one server process after 1, 3 and 20 sessions were each uploaded,
  clicked, tracked and left (at most 3 stay open), in a fresh interpreter.

Without a checkpoint the model has synthetic fan-in weights (speed is the architecture's);
their IoU head is raised so objects stay tracked, as in the tests.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vos.bench.timing import run_in_child

MiB = 1 << 20
SESSION_COUNTS = (1, 3, 20)


def annotator_checkpoint(folder: Path) -> str:
    """Synthetic fan-in weights in the official format (IoU head raised), written once."""
    import torch

    from repvit_sam import build_repvit_sam
    from vos.bench.inputs import fill_fan_in_weights

    path = folder / "fan_in_annotator.pt"
    if not path.exists():
        model = build_repvit_sam()
        fill_fan_in_weights(model, 0)
        weights = model.state_dict()
        weights["mask_decoder.iou_prediction_head.layers.2.bias"] += 1.0
        torch.save(weights, path)
    return str(path)


class Client:
    """One browser on an in-process app (Flask's test client), timing each request."""

    def __init__(self, store: Any) -> None:
        from vos.annotate import create_app

        self.client = create_app(store).test_client()
        self.client.get("/")

    def post(self, path: str, body: Any) -> tuple[Any, float]:
        started = time.perf_counter()
        reply = self.client.post(path, json=body)
        elapsed = (time.perf_counter() - started) * 1000
        if reply.status_code >= 300:
            raise RuntimeError(f"{path}: {reply.get_json()}")
        return reply.get_json(), elapsed

    def session(self, sample: str) -> str:
        return self.post("/api/sessions", {"sample": sample})[0]["id"]

    def track(self, sid: str, direction: str, start: int | None = None) -> dict[str, Any]:
        self.post(f"/api/sessions/{sid}/track", {"direction": direction, "start": start})
        while True:
            job = self.client.get(f"/api/sessions/{sid}/poll?since=-1").get_json()["job"]
            if job["state"] != "running":
                if job["state"] != "done":
                    raise RuntimeError(f"tracking {job['state']}: {job['error']}")
                return job
            time.sleep(0.05)


def _store(root: Path, checkpoint: str, overrides: list[str], **limits: Any) -> Any:
    from vos.annotate import Limits, SessionStore
    from vos.config import load_config
    from vos.models import build_segmenter, checkpoint_digest

    config = load_config(None, [f"model.checkpoint={checkpoint}", *overrides])
    return SessionStore(root, build_segmenter(config.model), config,
                        checkpoint_digest(config.model), Limits(**limits))


def _samples_store(root: Path, samples: Path, checkpoint: str, overrides: list[str],
                   **limits: Any) -> tuple[Any, Client, dict[str, str]]:
    from vos.annotate import create_app, find_samples

    store = _store(root, checkpoint, overrides, **limits)
    found = find_samples(samples)
    client = Client.__new__(Client)
    client.client = create_app(store, found).test_client()
    client.client.get("/")
    return store, client, {s.name: s.sample_id for s in found}


def measure_clicks(samples: Path, name: str, checkpoint: str, overrides: list[str],
                   box: np.ndarray, clicks: int, root: Path) -> dict[str, Any]:
    """Click-to-mask through the HTTP layer: on a stored frame, and on a new one."""
    store, client, ids = _samples_store(root, samples, checkpoint, overrides,
                                        background_encode=False)
    sid = client.session(ids[name])
    client.post(f"/api/sessions/{sid}/objects", {})
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    _, first = client.post(f"/api/sessions/{sid}/prompt",
                           {"frame": 0, "obj": 1, "box": [x0, y0, x1, y1]})
    stored = []
    for k in range(clicks):
        dx = (k % 3 - 1) * 0.1 * (x1 - x0)
        _, ms = client.post(f"/api/sessions/{sid}/prompt",
                            {"frame": 0, "obj": 1, "points": [[cx + dx, cy, 1]]})
        stored.append(ms)
    new = []
    for t in (1, 2, 3):
        _, ms = client.post(f"/api/sessions/{sid}/prompt",
                            {"frame": t, "obj": 1, "points": [[cx, cy, 1]]})
        new.append(ms)
    store.close()
    return {"stored_ms": stored, "first_ms": first, "new_ms": new}


def build_session(samples: Path, name: str, checkpoint: str, overrides: list[str],
                  boxes: np.ndarray, root: Path) -> tuple[str, str, int]:
    """A session with 2 objects (on the first and the last frame) and 4 passes.

    Returns:
        (session id, the owner's cookie, tracked frames in all).
    """
    from vos.annotate import OWNER_COOKIE

    store, client, ids = _samples_store(root, samples, checkpoint, overrides,
                                        background_encode=False)
    sid = client.session(ids[name])
    num_frames = store.sessions[sid].num_frames
    tracked = 0
    for obj, frame in ((1, 0), (2, num_frames - 1)):
        client.post(f"/api/sessions/{sid}/objects", {})
        client.post(f"/api/sessions/{sid}/prompt",
                    {"frame": frame, "obj": obj, "box": [float(v) for v in boxes[obj - 1]]})
    tracked += client.track(sid, "both")["done"]  # passes 1 and 2
    x0, y0, x1, y1 = (float(v) for v in boxes[0])
    middle = num_frames // 2
    client.post(f"/api/sessions/{sid}/prompt",
                {"frame": middle, "obj": 1, "points": [[(x0 + x1) / 2, (y0 + y1) / 2, 1]]})
    tracked += client.track(sid, "both")["done"]  # passes 3 and 4
    owner = client.client.get_cookie(OWNER_COOKIE).value
    store.close()
    return sid, owner, tracked


def measure_restore(root: Path, sid: str, owner: str, checkpoint: str, overrides: list[str],
                    box: np.ndarray) -> dict[str, Any]:
    """In a fresh interpreter: model load, store start, session open, first click answered."""
    settings = {"root": str(root), "sid": sid, "owner": owner, "checkpoint": checkpoint,
                "overrides": overrides, "box": [float(v) for v in box]}
    return run_in_child(__name__, "restore", settings)


def _restore_child(settings: dict[str, Any]) -> dict[str, Any]:
    from vos.annotate import OWNER_COOKIE, Limits, SessionStore, create_app
    from vos.config import load_config
    from vos.models import build_segmenter, checkpoint_digest

    started = time.perf_counter()
    config = load_config(None, [f"model.checkpoint={settings['checkpoint']}",
                                *settings["overrides"]])
    segmenter = build_segmenter(config.model)
    model_s = time.perf_counter() - started
    started = time.perf_counter()
    store = SessionStore(Path(settings["root"]), segmenter, config,
                         checkpoint_digest(config.model), Limits(background_encode=False))
    client = create_app(store).test_client()
    client.set_cookie(OWNER_COOKIE, settings["owner"])
    start_s = time.perf_counter() - started
    sid = settings["sid"]
    reply = client.get(f"/api/sessions/{sid}")
    if reply.status_code != 200 or reply.get_json()["read_only"]:
        raise RuntimeError(f"restore failed: {reply.get_json()}")
    open_s = time.perf_counter() - started
    x0, y0, x1, y1 = settings["box"]
    session = store.sessions[sid]
    reply = client.post(f"/api/sessions/{sid}/prompt", json={
        "frame": session.num_frames // 3, "obj": 1,
        "points": [[(x0 + x1) / 2, (y0 + y1) / 2, 1]]})
    if reply.status_code != 200:
        raise RuntimeError(f"the first click failed: {reply.get_json()}")
    usable_s = time.perf_counter() - started
    frames = session.num_frames
    encodes = session.predictor.segmenter.encodes  # frames the model ran on since the start
    store.close()
    return {"model_s": round(model_s, 2), "start_s": round(start_s, 3),
            "open_s": round(open_s, 3), "usable_s": round(usable_s, 3), "frames": frames,
            "encodes": int(encodes)}


def _memory_child(settings: dict[str, Any]) -> dict[str, Any]:
    """Sessions one after the other in one server process; RSS after each count."""
    import gc

    import psutil

    from repvit_sam.utils.malloc import retain_freed_memory

    retain_freed_memory()  # as the server's entry point does
    root = Path(settings["root"])
    store, client, ids = _samples_store(root / "sessions", Path(settings["samples"]),
                                        settings["checkpoint"], settings["overrides"],
                                        background_encode=False,
                                        max_sessions_per_owner=max(settings["counts"]))
    x0, y0, x1, y1 = settings["box"]
    rss: dict[int, float] = {}
    for count in range(1, max(settings["counts"]) + 1):
        sid = client.session(ids[settings["name"]])
        client.post(f"/api/sessions/{sid}/objects", {})
        client.post(f"/api/sessions/{sid}/prompt",
                    {"frame": 0, "obj": 1, "box": [x0, y0, x1, y1]})
        client.track(sid, "forward")
        if count in settings["counts"]:
            gc.collect()
            rss[count] = round(psutil.Process().memory_info().rss / MiB, 1)
    store.close()
    return {"rss_mb": rss}


def child_main() -> None:
    """``python -c "from vos.bench.annotator import child_main; child_main()" TASK SETTINGS``."""
    task, settings = sys.argv[1], json.loads(sys.argv[2])
    result = _restore_child(settings) if task == "restore" else _memory_child(settings)
    print(json.dumps(result))


def bench_annotator(report: Any, *, video: str | None, checkpoint: str | None,
                    box_xyxy: np.ndarray | None, clicks: int, restore_frames: list[int],
                    distinct: int, memory_frames: int, threads: int) -> None:
    """The annotator section: rows in ``report.annotator`` and notes.

    Args:
        report: the benchmark's report.
        video: a video file or frame folder; None: synthetic frames.
        checkpoint: RepViT-SAM weights; None: synthetic fan-in weights.
        box_xyxy: (4,) float32 XYXY in video pixels, the first object; None: central.
        clicks: timed clicks on a stored frame.
        restore_frames: frame counts of the restored sessions (e.g. 50, 2000).
        distinct: distinct frames the restored sessions loop over (each encoded once).
        memory_frames: frames of each session of the memory run (0 skips it).
        threads: torch threads (the model's other settings are the annotator's defaults).
    """
    from vos.bench.inputs import default_boxes
    from vos.bench.predictor import base_frames, looped_folder
    from vos.io.sources import read_rgb

    overrides: list[str] = []  # the annotator's defaults; torch threads are the caller's
    with tempfile.TemporaryDirectory(prefix="vos-bench-annotator-") as tmp:
        root = Path(tmp)
        checkpoint = checkpoint or annotator_checkpoint(root)
        files = base_frames(video, max(distinct, memory_frames, 4), root / "base")
        image_hw = read_rgb(files[0]).shape[:2]
        boxes = default_boxes(image_hw, 2)
        box = np.asarray(box_xyxy if box_xyxy is not None else boxes[0], np.float32)
        boxes[0] = box
        samples = root / "samples"
        samples.mkdir()
        looped_folder(files[:4], 4, samples / "clicks")
        clicked = measure_clicks(samples, "clicks", checkpoint, overrides, box, clicks,
                                 root / "clicks")
        median = statistics.median(clicked["stored_ms"])
        report.annotator.append({"measure": "click to mask, stored frame (HTTP, median)",
                                 "value": round(median, 1), "unit": "ms",
                                 "n": len(clicked["stored_ms"])})
        report.annotator.append({"measure": "click to mask, frame not yet encoded (median)",
                                 "value": round(statistics.median(clicked["new_ms"]), 1),
                                 "unit": "ms", "n": len(clicked["new_ms"])})
        for count in restore_frames:
            folder = looped_folder(files[:distinct], count, samples / f"long{count}")
            work = root / f"restore{count}"
            sid, owner, tracked = build_session(samples, folder.name, checkpoint, overrides,
                                                boxes, work)
            timed = measure_restore(work, sid, owner, checkpoint, overrides, box)
            for key, label in (("start_s", "server start (store reads every session)"),
                               ("open_s", "session opened from disk"),
                               ("usable_s", "first click answered")):
                report.annotator.append({
                    "measure": f"restore, {count} frames, 2 objects, 4 passes "
                               f"({tracked} tracked frames): {label}",
                    "value": timed[key], "unit": "s", "n": 1})
            report.notes.append(
                f"annotator restore ({count} frames): model load {timed['model_s']} s before "
                f"the store starts (OpenVINO's compiled graph cached); opening it and its first "
                f"click encoded {timed['encodes']} frame(s) (the embeddings are on disk)")
        if memory_frames > 0:
            looped_folder(files[:memory_frames], memory_frames, samples / "memory")
            measured = run_in_child(__name__, "memory", {
                "root": str(root / "memory"), "samples": str(samples), "name": "memory",
                "checkpoint": checkpoint, "overrides": overrides, "box": box.tolist(),
                "counts": list(SESSION_COUNTS)})
            for count, rss in sorted((int(k), v) for k, v in measured["rss_mb"].items()):
                report.annotator.append({"measure": f"server RSS after {count} session(s)",
                                         "value": rss, "unit": "MB", "n": 1})
            report.notes.append(
                f"annotator memory: one server process; each session: a {memory_frames}-frame "
                "upload, one box, one forward pass; at most 3 open (the rest closed, their "
                "memory given back); a fresh interpreter")
        report.notes.append(
            f"annotator: default settings (model.backend=auto, exact mode), {threads} "
            f"threads, frames {image_hw[1]}x{image_hw[0]}"
            + ("; synthetic fan-in weights" if checkpoint.endswith("fan_in_annotator.pt")
               else ""))
