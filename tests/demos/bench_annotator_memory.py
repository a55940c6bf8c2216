"""Peak RSS of the annotator's server on a long video (the issue's 2,000-frame figure).

Not a test (it takes minutes): ``python -m tests.demos.bench_annotator_memory [--frames 2000]
[--fast-mode size128] [--checkpoint weights/repvit_sam.pt]``. Without a checkpoint it uses the
fan-in synthetic weights of the test suite (IoU bias raised so objects stay tracked). It
serves a session through Flask's test client: two objects boxed on the first and the middle
frame, tracking both ways, then an export; a thread samples the process's RSS. The embeddings
are 64x64x256 whatever the fast mode, so the store's memory is what a full-size run holds;
only the encoder's time shrinks with ``sizeS``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_video(path: Path, num_frames: int, hw: tuple[int, int] = (120, 160)) -> Path:
    """Two squares crossing the frame back and forth."""
    h, w = hw
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (w, h))
    for t in range(num_frames):
        frame = np.full((h, w, 3), 30, np.uint8)
        x = int(20 + 80 * abs(((t / 100) % 2) - 1))
        frame[20:60, x:x + 40] = (40, 200, 240)
        frame[64:100, 120 - x:156 - x] = (230, 220, 40)
        writer.write(frame)
    writer.release()
    return path


def synthetic_checkpoint(folder: Path) -> Path:
    from repvit_sam import build_repvit_sam
    from tests.conftest import fan_in_state_dict

    model = build_repvit_sam()
    weights = fan_in_state_dict(model)
    weights["mask_decoder.iou_prediction_head.layers.2.bias"] += 1.0
    path = folder / "synthetic.pt"
    torch.save(weights, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--fast-mode", default="size128")
    parser.add_argument("--checkpoint")
    args = parser.parse_args(argv)

    spec = importlib.util.spec_from_file_location("annotator_app", REPO_ROOT / "demos" / "app.py")
    assert spec is not None and spec.loader is not None
    app_module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = app_module
    spec.loader.exec_module(app_module)
    annotator = sys.modules["annotator"]
    from vos.config import load_config
    from vos.models import build_segmenter, checkpoint_digest

    process = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = args.checkpoint or synthetic_checkpoint(root)
        samples = root / "samples"
        samples.mkdir()
        write_video(samples / "long.mp4", args.frames)
        config = load_config(None, [f"model.checkpoint={checkpoint}", "model.backend=torch",
                                    f"model.fast_mode={args.fast_mode}"])
        store = annotator.SessionStore(root / "sessions", build_segmenter(config.model), config,
                                       checkpoint_digest(config.model),
                                       annotator.Limits(max_frames=args.frames))
        app = app_module.create_app(store, app_module.find_samples(samples))
        client = app.test_client()
        client.get("/")
        base_rss = process.memory_info().rss
        peak = {"rss": base_rss}
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                peak["rss"] = max(peak["rss"], process.memory_info().rss)

        threading.Thread(target=sample, daemon=True).start()
        sid = client.post("/api/sessions", json={"sample": "sample0"}).get_json()["id"]
        url = f"/api/sessions/{sid}"
        for frame, box in ((0, [15, 15, 65, 65]), (args.frames // 2, [60, 60, 110, 104])):
            obj = client.post(f"{url}/objects", json={}).get_json()["obj"]
            reply = client.post(f"{url}/prompt", json={"frame": frame, "obj": obj, "box": box})
            assert reply.status_code == 200, reply.get_json()
        timings = {}
        for kind, path in (("track", "track"), ("export", "export")):
            started = time.perf_counter()
            reply = client.post(f"{url}/{path}", json={"direction": "both"})
            assert reply.status_code == 202, reply.get_json()
            while True:
                job = client.get(f"{url}/poll").get_json()["job"]
                if job["state"] != "running":
                    break
                time.sleep(1.0)
                print(f"\r{kind}: {job['done']}/{job['total']} frames, "
                      f"RSS {process.memory_info().rss / 2**20:.0f} MiB", end="", flush=True)
            assert job["state"] == "done", job
            timings[kind] = (time.perf_counter() - started, job)
        done.set()
        session = store.sessions[sid]
        store.close()
        print()
        print(f"| measure ({args.frames} frames, {args.fast_mode}) | value |\n|---|---|")
        print(f"| RSS before the session (model loaded) | {base_rss / 2**20:.0f} MiB |")
        print(f"| peak RSS (tracking both ways + export) | {peak['rss'] / 2**20:.0f} MiB |")
        print(f"| tracking, 2 objects both ways | {timings['track'][1]['fps']:.1f} frames/s |")
        print(f"| export (PNG + JSON + overlay mp4) | {timings['export'][0]:.0f} s |")
        print(f"| frames encoded | {len(session.encoded)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
