"""Batch mode: manifest parsing, the local process pool, resume, and the Ray engine (slow).

The workers run a cheap picklable fake segmenter (bright pixels inside the prompt), built
in each worker by a top-level factory, so the engines are exercised for real (spawned
processes, Ray actors) without model weights. Videos are 64x96, 6 frames, mp4v.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from repvit_sam.segmenter import DecodePrompts, MaskPrediction, SegmenterBase
from vos.batch import (
    RESULTS_CSV,
    RESULTS_JSONL,
    BatchError,
    JobOptions,
    VideoWorker,
    WorkerInitError,
    read_manifest,
    run_batch,
)
from vos.config import RunConfig
from vos.io.davis_png import read_palette_png, write_palette_png
from vos.io.sources import open_source
from vos.pipeline import run_video
from vos.types import Prompt

H, W, T = 64, 96, 6


# --------------------------------------------------------------------------- fake model


@dataclass
class _Embedding:
    bright: np.ndarray  # (H, W) bool
    orig_hw: tuple[int, int]


class BrightSegmenter(SegmenterBase):
    """Foreground = bright pixels inside the prompt box or within 12 px of a positive point."""

    def encode(self, image: np.ndarray) -> _Embedding:
        return _Embedding(image.mean(axis=2) > 128, (image.shape[0], image.shape[1]))

    def decode_prompts(self, embedding: _Embedding, prompts: DecodePrompts) -> MaskPrediction:
        boxes_xyxy, points_xy, point_labels = prompts.boxes_xyxy, prompts.points_xy, prompts.point_labels
        mask_logits, multimask_output = prompts.mask_logits, prompts.multimask_output
        n = next(len(x) for x in (boxes_xyxy, points_xy, mask_logits) if x is not None)
        c = 3 if multimask_output else 1
        h, w = embedding.orig_hw
        masks = np.zeros((n, c, h, w), bool)
        for i in range(n):
            region = np.zeros((h, w), bool)
            if boxes_xyxy is not None:
                x0, y0, x1, y1 = np.asarray(boxes_xyxy[i], float)
                region[max(int(y0), 0) : int(np.ceil(y1)), max(int(x0), 0) : int(np.ceil(x1))] = True
            elif points_xy is not None:
                for (x, y), label in zip(np.asarray(points_xy[i]), np.asarray(point_labels[i]),
                                         strict=True):
                    if label == 1:
                        region[max(int(y) - 12, 0) : int(y) + 13, max(int(x) - 12, 0) : int(x) + 13] = True
            masks[i, :] = embedding.bright & region
        ious = torch.tensor([[0.95, 0.8, 0.7][:c]] * n, dtype=torch.float32)
        return MaskPrediction(torch.from_numpy(masks), ious, torch.zeros((n, c, 256, 256)))

    def propose(self, frame: np.ndarray, max_num_masks: int) -> list[np.ndarray]:
        count, labels = cv2.connectedComponents((frame.mean(axis=2) > 128).astype(np.uint8))
        masks = [labels == k for k in range(1, count)]
        return sorted(masks, key=lambda m: -int(m.sum()))[:max_num_masks]


class CrashOnceSegmenter(BrightSegmenter):
    """Kills its process on the first ``encode`` of the whole test (a marker file remembers)."""

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)

    def encode(self, image: np.ndarray) -> _Embedding:
        if not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return super().encode(image)


def make_bright(cfg: RunConfig) -> BrightSegmenter:
    return BrightSegmenter()


def make_crash_once(marker: str, cfg: RunConfig) -> CrashOnceSegmenter:
    return CrashOnceSegmenter(marker)


def make_broken(cfg: RunConfig) -> BrightSegmenter:
    raise FileNotFoundError("weights/missing.pt: no such file")


# --------------------------------------------------------------------------- data


def _write_video(path: Path, start_x: int, step: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    assert writer.isOpened()
    for t in range(T):
        frame = np.full((H, W, 3), 30, np.uint8)
        x = start_x + step * t
        frame[20:40, x : x + 20] = 230
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``clips/{a,b,c,d}.mp4`` (a square moving right), a corrupt file and a mask PNG."""
    root = tmp_path_factory.mktemp("batch_data")
    (root / "clips").mkdir()
    for name, x0 in (("a", 10), ("b", 30), ("c", 50), ("d", 20)):
        _write_video(root / "clips" / f"{name}.mp4", x0, 3)
    (root / "clips" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    mask = np.zeros((H, W), np.uint8)
    mask[20:40, 50:70] = 1
    write_palette_png(root / "c_first.png", mask)
    return root


MANIFEST = """video,prompt
clips/a.mp4,"8,18,32,42"
clips/corrupt.mp4,"8,18,32,42"
clips/b.mp4,"points:40,30"
clips/d.mp4,"0,0,500,500"
clips/c.mp4,mask:c_first.png
clips/a.mp4,"1,2,3"
"""


def _manifest(root: Path, text: str, name: str = "videos.csv") -> Path:
    path = root / name
    path.write_text(text)
    return path


def _by_id(summary_records: list[dict]) -> dict[str, dict]:
    return {r["id"]: r for r in summary_records}


def _outputs(folder: Path) -> dict[str, object]:
    """Everything run_video writes that must match exactly (overlay checked for presence)."""
    result: dict[str, object] = {}
    for png in sorted((folder / "masks").glob("*.png")):
        result[f"masks/{png.name}"] = read_palette_png(png).tolist()
    for record in sorted((folder / "json").glob("*.json")):
        result[f"json/{record.name}"] = json.loads(record.read_text())
    assert (folder / "overlay.mp4").is_file()
    return result


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _check_batch(out: Path, records: list[dict], first: str = "ok") -> None:
    """The statuses of MANIFEST's rows; ``first`` is row 2's (skipped when done before)."""
    by_id = {r["row"]: r for r in records}
    assert [r["row"] for r in records] == [2, 3, 4, 5, 6, 7]  # manifest order, header = line 1
    assert by_id[2]["status"] == first and by_id[2]["frames"] == T and by_id[2]["objects"] == 1
    assert by_id[3]["status"] == "failed" and "corrupt.mp4" in by_id[3]["error"]
    assert by_id[4]["status"] == "ok"
    assert by_id[5]["status"] == "failed" and "outside the 96x64 frame" in by_id[5]["error"]
    assert by_id[6]["status"] == "ok"
    assert by_id[7]["status"] == "failed" and "row 7" in by_id[7]["error"]
    assert "already used by row 2" in by_id[7]["error"] or "four numbers" in by_id[7]["error"]
    lines = (out / RESULTS_JSONL).read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == [r["status"] for r in records]
    assert (out / RESULTS_CSV).read_text().splitlines()[0].startswith("row,id,video,status")


# --------------------------------------------------------------------------- manifest


def test_a_broken_row_does_not_block_a_later_row_for_the_same_video(tmp_path: Path) -> None:
    text = "video,prompt\nv/x.mp4,1,2,3\nv/x.mp4,\"1,2,30,40\"\nv/x.mp4,\"5,6,30,40\"\n"
    broken, fixed, again = read_manifest(_manifest(tmp_path, text))
    assert broken.error is not None and "four numbers" in broken.error
    assert fixed.error is None and fixed.key == "x"
    assert again.error is not None and "already used by row 3" in again.error


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ('"1,2,30,40"', {"boxes": ((1.0, 2.0, 30.0, 40.0),)}),
        ('"box:1,2,30,40; 5,6,7,8"', {"boxes": ((1.0, 2.0, 30.0, 40.0), (5.0, 6.0, 7.0, 8.0))}),
        ('"[[1,2,30,40]]"', {"boxes": ((1.0, 2.0, 30.0, 40.0),)}),
        ('"points:3,4 5,6,0|7,8"', {"points": (((3.0, 4.0, 1), (5.0, 6.0, 0)), ((7.0, 8.0, 1),))}),
        ("auto", {"auto": 0}),
        ("auto:5", {"auto": 5}),
        ("m.png", {"mask": "m.png"}),
    ],
)
def test_manifest_prompt_cells(tmp_path: Path, cell: str, expected: dict) -> None:
    (job,) = read_manifest(_manifest(tmp_path, f"video,prompt\nv/x.mp4,{cell}\n"))
    assert job.error is None and job.key == "x" and job.source == str(tmp_path / "v/x.mp4")
    for key, value in expected.items():
        got = getattr(job, key)
        assert (got == str(tmp_path / value)) if key == "mask" else (got == value)


def test_manifest_jsonl_and_row_errors(tmp_path: Path) -> None:
    text = "\n".join([
        json.dumps({"video": "a.mp4", "boxes": [[1, 2, 3, 4]], "id": "first", "max_frames": 3}),
        json.dumps({"video": "b.mp4", "points": [[[1, 2], [3, 4, 0]]]}),
        json.dumps({"video": "c.mp4", "auto": 7}),
        json.dumps({"video": "d.mp4"}),
        json.dumps({"video": "e.mp4", "boxes": "1,2,3"}),
        json.dumps({"video": "f.mp4", "auto": True, "boxes": [1, 2, 3, 4]}),
        json.dumps({"video": "x/first.mp4", "boxes": [1, 2, 3, 4]}),
        json.dumps({"video": "g.mp4", "id": "../up", "boxes": [1, 2, 3, 4]}),
    ])
    jobs = read_manifest(_manifest(tmp_path, text + "\n", "m.jsonl"), max_frames=10)
    assert jobs[0].key == "first" and jobs[0].max_frames == 3 and jobs[0].boxes == ((1, 2, 3, 4),)
    assert jobs[1].points == (((1.0, 2.0, 1), (3.0, 4.0, 0)),) and jobs[1].max_frames == 10
    assert jobs[2].auto == 7 and all(j.error is None for j in jobs[:3])
    errors = [j.error or "" for j in jobs[3:]]
    expected = ["no prompt", "four numbers", "cannot be combined", "already used by row 1",
                "plain folder name"]
    for job, error, text in zip(jobs[3:], errors, expected, strict=True):
        assert error.startswith(f"row {job.row}: ") and text in error


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.csv", "file,prompt\na.mp4,auto\n", "'video' column"),
        ("m.csv", "video,prompt\n", "lists no videos"),
        ("m.jsonl", '{"video": "a.mp4"\n', "not valid JSON"),
    ],
)
def test_manifest_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(BatchError, match=message):
        read_manifest(_manifest(tmp_path, text, name))
    with pytest.raises(BatchError, match="no such manifest"):
        read_manifest(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- local engine


def test_local_two_workers_and_resume(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Interrupted batch: only the first two rows ran.
    subset = _manifest(clips, "\n".join(MANIFEST.splitlines()[:3]) + "\n", "subset.csv")
    first = run_batch(subset, out, RunConfig(), workers=2, predictor_factory=make_bright,
                      progress=False)
    assert [r["status"] for r in first.records] == ["ok", "failed"]
    before = _mtimes(out / "a")

    full = _manifest(clips, MANIFEST)
    summary = run_batch(full, out, RunConfig(), engine="local", workers=2,
                        predictor_factory=make_bright, progress=False)
    _check_batch(out, summary.records, first="skipped")  # complete before: not recomputed
    assert _mtimes(out / "a") == before
    assert summary.counts == {"ok": 2, "failed": 3, "skipped": 1}
    assert summary.frames_processed == 2 * T
    assert len({r["worker"] for r in summary.records if r["status"] == "ok"}) >= 1

    # Outputs equal a single-video run_video run with the same model.
    for key, prompts in (("a", [Prompt(box_xyxy=np.array([8, 18, 32, 42], np.float32))]),
                         ("b", [Prompt(points_xy=np.array([[40, 30]], np.float32),
                                       point_labels=np.array([1]))])):
        single = tmp_path / f"single_{key}"
        with open_source(clips / "clips" / f"{key}.mp4") as source:
            run_video(source, BrightSegmenter(), prompts, single, RunConfig(), progress=False)
        assert _outputs(out / key) == _outputs(single)
        assert (out / key / "summary.json").is_file() and (out / key / "run.json").is_file()

    # Skipped stays skipped, also behind a failed row that shares its id (no worker starts).
    lines = MANIFEST.splitlines()
    done = _manifest(clips, "\n".join([lines[0], lines[1], lines[3], lines[5], lines[6]]) + "\n",
                     "done.csv")
    again = run_batch(done, out, RunConfig(), workers=2, predictor_factory=make_bright,
                      progress=False)
    assert again.counts == {"ok": 0, "failed": 1, "skipped": 3} and again.workers == 0
    assert _mtimes(out / "a") == before


@pytest.mark.slow
def test_changed_row_is_not_skipped(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    one = _manifest(tmp_path, 'video,prompt\nclips/a.mp4,"8,18,32,42"\n'.replace(
        "clips/", f"{clips}/clips/"), "one.csv")
    assert run_batch(one, out, RunConfig(), predictor_factory=make_bright,
                     progress=False).counts["ok"] == 1
    one.write_text(one.read_text().replace("8,18,32,42", "6,16,34,44"))
    changed = run_batch(one, out, RunConfig(), predictor_factory=make_bright, progress=False)
    assert changed.counts["failed"] == 1 and "--overwrite" in changed.records[0]["error"]
    redone = run_batch(one, out, RunConfig(), predictor_factory=make_bright, overwrite=True,
                       progress=False)
    assert redone.counts == {"ok": 1, "failed": 0, "skipped": 0}


def test_model_error_stops_the_batch(clips: Path, tmp_path: Path) -> None:
    (job, *_) = read_manifest(_manifest(clips, MANIFEST))
    worker = VideoWorker(RunConfig(), make_broken)
    for _ in range(2):  # the first error is remembered, not retried per video
        with pytest.raises(WorkerInitError, match=r"missing\.pt"):
            worker.process(job, JobOptions(str(tmp_path)))


@pytest.mark.slow
def test_model_error_stops_the_pool(clips: Path, tmp_path: Path) -> None:
    with pytest.raises(WorkerInitError, match=r"missing\.pt"):
        run_batch(_manifest(clips, MANIFEST), tmp_path / "out", RunConfig(), workers=2,
                  predictor_factory=make_broken, progress=False)


def test_cli_user_errors(clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    from vos.run import main

    monkeypatch.delenv("REPVIT_SAM_CHECKPOINT", raising=False)
    manifest = str(_manifest(clips, MANIFEST))
    assert main(["batch", manifest, "-o", str(tmp_path)]) == 2
    assert "no checkpoint given" in capsys.readouterr().err
    checkpoint = tmp_path / "w.pt"
    checkpoint.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["batch", manifest, "--engine", "ray", "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -e .[ray]" in err
    assert main(["batch", str(tmp_path / "none.csv"), "--checkpoint", str(checkpoint)]) == 2
    assert "no such manifest" in capsys.readouterr().err


@pytest.mark.slow
def test_local_worker_crash_is_retried(clips: Path, tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    summary = run_batch(_manifest(clips, MANIFEST), tmp_path / "out", RunConfig(), workers=2,
                        predictor_factory=functools.partial(make_crash_once, str(marker)),
                        progress=False)
    assert marker.exists()
    _check_batch(tmp_path / "out", summary.records)
    assert max(r["attempts"] for r in summary.records) == 2


# --------------------------------------------------------------------------- Ray engine


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    # Workers import the fake model's module by name; the checkout root must be on their path.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_matches_and_resumes(local_ray, clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    full = _manifest(clips, MANIFEST)
    summary = run_batch(full, out, RunConfig(), engine="ray", workers=2,
                        predictor_factory=make_bright, progress=False)
    _check_batch(out, summary.records)
    local = run_batch(full, tmp_path / "local", RunConfig(), workers=1,
                      predictor_factory=make_bright, progress=False)
    for key in ("a", "b", "c"):
        assert _outputs(out / key) == _outputs(tmp_path / "local" / key)
    before = _mtimes(out)
    again = run_batch(full, out, RunConfig(), engine="ray", workers=2,
                      predictor_factory=make_bright, progress=False)
    assert again.counts == {"ok": 0, "failed": 3, "skipped": 3}
    assert all(before[k] == v for k, v in _mtimes(out).items() if k.startswith(("a/", "b/", "c/")))
    assert local.counts == summary.counts


@pytest.mark.slow
def test_ray_actor_killed_mid_batch_is_retried(local_ray, clips: Path, tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    summary = run_batch(_manifest(clips, MANIFEST), tmp_path / "out", RunConfig(), engine="ray",
                        workers=2, retries=2,
                        predictor_factory=functools.partial(make_crash_once, str(marker)),
                        progress=False)
    assert marker.exists()
    _check_batch(tmp_path / "out", summary.records)
