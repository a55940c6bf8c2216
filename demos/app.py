"""Web demo of RepViT-SAM video object segmentation (the official ``app/app.py`` equivalent).

Upload a video (or pick one of the ``--samples``), drag a box and/or click points on its first
frame, press "Segment": a background job tracks the object through the video with
``vos.pipeline.run_video`` and the page then plays the overlay video and offers the masks
(palette PNGs + COCO-RLE JSON) as a zip. One job runs at a time; the page polls its progress.

Usage:
    python demos/app.py --checkpoint weights/repvit_sam.pt [--port 7860] [--host 127.0.0.1]
        [--samples DIR] [--device cuda] [--max-frames N] [--workdir DIR]

Needs Flask (``pip install 'repvit-vos[demo]'``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np

from vos.config import RunConfig, load_config
from vos.io.prompt_input import check_prompts
from vos.io.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, SourceError, open_source
from vos.models import CHECKPOINT_ENV, NO_CHECKPOINT, build_segmenter
from vos.pipeline import run_video
from vos.types import MAX_POINTS, Prompt, PromptError

logger = logging.getLogger("demos.app")

TEMPLATES = Path(__file__).resolve().parent / "templates"
FLASK_HINT = "the web demo needs Flask: pip install 'repvit-vos[demo]' (or pip install flask)"


class DemoError(ValueError):
    """A user mistake shown as one line in the page (HTTP 400)."""


class BusyError(RuntimeError):
    """Another segmentation job is still running (HTTP 409)."""


@dataclass
class Video:
    """An uploaded or sample video the page can prompt on.

    Attributes:
        video_id: opaque id used in URLs.
        name: file or folder name shown to the user.
        path: the video file or frame folder.
        width, height: frame size in pixels.
        num_frames: number of frames.
        fps: frames per second.
        first_frame_jpeg: the first frame, JPEG-encoded, for the prompt canvas.
        sample: whether it comes from ``--samples`` (never deleted).
    """

    video_id: str
    name: str
    path: Path
    width: int
    height: int
    num_frames: int
    fps: float
    first_frame_jpeg: bytes
    sample: bool = False

    def to_json(self) -> dict[str, Any]:
        """What the page needs to show the frame and validate prompts."""
        return {"id": self.video_id, "name": self.name, "width": self.width,
                "height": self.height, "num_frames": self.num_frames, "fps": self.fps,
                "sample": self.sample, "frame_url": f"/api/videos/{self.video_id}/frame.jpg"}


@dataclass
class Job:
    """One segmentation run and its state, polled by the page."""

    job_id: str
    video: Video
    output_dir: Path
    total_frames: int
    state: str = "running"  # running | done | error
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    summary: dict[str, Any] | None = None

    @property
    def overlay_path(self) -> Path:
        return self.output_dir / "overlay.mp4"

    @property
    def zip_path(self) -> Path:
        return self.output_dir / "masks.zip"

    def frames_done(self) -> int:
        """Frames whose mask PNG is written (the pipeline writes them in order)."""
        if self.state == "done":
            return self.total_frames
        masks = self.output_dir / "masks"
        return min(sum(1 for _ in masks.glob("*.png")), self.total_frames) if masks.is_dir() else 0

    def to_json(self) -> dict[str, Any]:
        """Progress and, once done, where the results are."""
        elapsed = self.seconds if self.state != "running" else time.monotonic() - self.started
        data: dict[str, Any] = {"id": self.job_id, "state": self.state, "error": self.error,
                                "done": self.frames_done(), "total": self.total_frames,
                                "seconds": round(elapsed, 2)}
        if self.state == "done":
            data["video_url"] = f"/api/jobs/{self.job_id}/overlay.mp4"
            data["zip_url"] = f"/api/jobs/{self.job_id}/masks.zip"
            data["summary"] = self.summary
        return data


def read_video(path: Path, name: str, video_id: str, *, sample: bool = False) -> Video:
    """Open a video file or frame folder and keep its size and first frame.

    Raises:
        DemoError: the file is not a (readable) video.
    """
    if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
        raise DemoError(f"{name} is not a video (expected one of {', '.join(VIDEO_SUFFIXES)})")
    try:
        with open_source(path) as source:
            info = source.info
            first = next(iter(source.frames(0, 1)), None)
    except SourceError as exc:
        detail = str(exc).replace(str(path), "").lstrip(": ").strip()
        if detail.startswith(("cannot decode", "cannot open")):
            raise DemoError(f"{name} could not be decoded as a video") from None
        raise DemoError(f"{name} could not be read as a video: {detail}") from None
    if first is None or not info.num_frames:
        raise DemoError(f"{name} has no readable frames")
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(first, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise DemoError(f"{name}: cannot encode the first frame")
    height, width = info.image_hw
    return Video(video_id=video_id, name=name, path=path, width=width, height=height,
                 num_frames=int(info.num_frames), fps=float(info.fps),
                 first_frame_jpeg=jpeg.tobytes(), sample=sample)


def find_samples(folder: Path) -> list[Video]:
    """Every readable video file and frame folder directly inside ``folder``."""
    videos = []
    for index, path in enumerate(sorted(folder.iterdir())):
        is_video = path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES
        is_frames = path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
        if not (is_video or is_frames):
            continue
        try:
            videos.append(read_video(path, path.name, f"sample{index}", sample=True))
        except DemoError as exc:
            logger.warning("skipping sample: %s", exc)
    return videos


def parse_prompt(data: Any, video: Video) -> Prompt:
    """The page's ``{"box": [x0,y0,x1,y1] | null, "points": [[x,y,label], ...]}`` as a Prompt.

    The box is clipped to the frame; box and points together describe one object.

    Raises:
        DemoError: malformed JSON, an empty box or no prompt at all.
    """
    if not isinstance(data, dict):
        raise DemoError("bad request: expected a JSON object")
    box_data, points_data = data.get("box"), data.get("points") or []
    box = None
    if box_data is not None:
        try:
            x0, y0, x1, y1 = (float(v) for v in box_data)
        except (TypeError, ValueError):
            raise DemoError("bad box: expected [x0, y0, x1, y1]") from None
        x0, x1 = sorted((min(max(x0, 0.0), video.width), min(max(x1, 0.0), video.width)))
        y0, y1 = sorted((min(max(y0, 0.0), video.height), min(max(y1, 0.0), video.height)))
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise DemoError("empty box: drag a box with a visible width and height on the frame")
        box = np.array([x0, y0, x1, y1], np.float32)
    points = labels = None
    if not isinstance(points_data, list) or len(points_data) > MAX_POINTS:
        raise DemoError(f"bad points: expected a list of at most {MAX_POINTS} [x, y, label]")
    if points_data:
        try:
            rows = [(float(p[0]), float(p[1]), int(p[2]) if len(p) > 2 else 1) for p in points_data]
        except (TypeError, ValueError, IndexError):
            raise DemoError("bad points: expected [[x, y, label], ...]") from None
        if any(label not in (0, 1) for _, _, label in rows):
            raise DemoError("bad points: a label is 1 (add) or 0 (remove)")
        points = np.array([[min(max(x, 0.0), video.width - 1), min(max(y, 0.0), video.height - 1)]
                           for x, y, _ in rows], np.float32)
        labels = np.array([label for _, _, label in rows], np.int64)
        if not labels.any():
            raise DemoError("only 'Remove area' points: click the object once in 'Add area' mode")
    if box is None and points is None:
        raise DemoError("empty prompt: drag a box around the object (or click on it) first")
    try:
        prompt = Prompt(box_xyxy=box, points_xy=points, point_labels=labels)
        check_prompts([prompt], (video.height, video.width))
    except PromptError as exc:
        raise DemoError(str(exc).replace("--init-points: ", "").replace("--init-box ", "box ")) \
            from None
    return prompt


class DemoState:
    """Videos, jobs and the single worker slot shared by the request threads."""

    def __init__(self, predictor: Any, config: RunConfig, workdir: Path,
                 samples: Sequence[Video] = (), max_frames: int | None = None) -> None:
        self.predictor = predictor
        self.config = config
        self.workdir = workdir
        self.max_frames = max_frames
        self.videos: dict[str, Video] = {v.video_id: v for v in samples}
        self.samples = list(samples)
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._running: Job | None = None

    def add_upload(self, filename: str, save: Any) -> Video:
        """Store an upload (``save(path)`` writes it) and read it as a video."""
        name = Path(filename.replace("\\", "/")).name or "upload"
        suffix = Path(name).suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise DemoError(f"{name} is not a video (expected one of {', '.join(VIDEO_SUFFIXES)})")
        video_id = uuid.uuid4().hex[:12]
        folder = self.workdir / "uploads" / video_id
        folder.mkdir(parents=True)
        path = folder / f"video{suffix}"  # the user's name is shown, never used as a path
        save(path)
        try:
            video = read_video(path, name, video_id)
        except DemoError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock:
            self.videos[video_id] = video
        return video

    def start_job(self, video: Video, prompt: Prompt) -> Job:
        """Start tracking on a background thread.

        Raises:
            BusyError: a job is already running.
        """
        with self._lock:
            if self._running is not None:
                raise BusyError("a segmentation job is already running; wait for it to finish")
            job_id = uuid.uuid4().hex[:12]
            total = video.num_frames if self.max_frames is None else min(video.num_frames,
                                                                         self.max_frames)
            job = Job(job_id=job_id, video=video, output_dir=self.workdir / "jobs" / job_id,
                      total_frames=total)
            self.jobs[job_id] = job
            self._running = job
        threading.Thread(target=self._work, args=(job, prompt), name=f"job-{job_id}",
                         daemon=True).start()
        return job

    def _work(self, job: Job, prompt: Prompt) -> None:
        cfg = dataclasses.replace(self.config, io=dataclasses.replace(
            self.config.io, source=str(job.video.path), output_dir=str(job.output_dir),
            save_png=True, save_json=True, save_video=True))
        try:
            job.output_dir.mkdir(parents=True, exist_ok=True)
            with open_source(job.video.path) as source:
                summary = run_video(source, self.predictor, [prompt], job.output_dir, cfg,
                                    max_frames=self.max_frames, overwrite=True, progress=False)
            write_masks_zip(job.output_dir, job.zip_path)
            job.summary = {"fps": round(summary.fps, 3), "frames": summary.frames_processed,
                           "objects": {str(k): v for k, v in summary.objects.items()}}
            job.state = "done"
        except Exception as exc:  # shown in the page; the traceback goes to the log
            logger.exception("job %s failed", job.job_id)
            job.error = " ".join(f"segmentation failed: {exc}".split())
            job.state = "error"
        finally:
            job.seconds = time.monotonic() - job.started
            with self._lock:
                self._running = None

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no job runs (tests and shutdown)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if self._running is None:
                    return True
            time.sleep(0.05)
        return False


def write_masks_zip(output_dir: Path, zip_path: Path) -> None:
    """Zip ``masks/``, ``json/`` and ``summary.json`` of a finished run."""
    partial = zip_path.with_name(zip_path.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for sub in ("masks", "json"):
            for path in sorted((output_dir / sub).glob("*")):
                archive.write(path, f"{sub}/{path.name}")
        if (output_dir / "summary.json").is_file():
            archive.write(output_dir / "summary.json", "summary.json")
    os.replace(partial, zip_path)


def create_app(state: DemoState, *, max_upload_mb: int = 512) -> Any:
    """The Flask application over a :class:`DemoState`."""
    from flask import Flask, abort, jsonify, render_template, request, send_file
    from werkzeug.exceptions import HTTPException

    app = Flask(__name__, root_path=str(TEMPLATES.parent), template_folder=str(TEMPLATES))
    app.config["MAX_CONTENT_LENGTH"] = max_upload_mb * 1024 * 1024

    def error(message: str, status: int = 400) -> Any:
        return jsonify({"error": message}), status

    @app.before_request
    def same_origin_only() -> Any:
        # A page on another site must not make the user's browser upload or start jobs here
        # (the demo listens on the user's machine): browsers send Origin with every
        # cross-origin POST, so a state-changing request from another origin is refused.
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        origin = request.headers.get("Origin") or request.headers.get("Referer")
        if origin and urlsplit(origin).netloc != request.host:
            return error("cross-origin request refused: use the demo's own page", 403)
        return None

    @app.errorhandler(DemoError)
    def demo_error(exc: DemoError) -> Any:
        return error(str(exc), 400)

    @app.errorhandler(BusyError)
    def busy_error(exc: BusyError) -> Any:
        return error(str(exc), 409)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if not request.path.startswith("/api/"):
            return exc
        if exc.code == 413:
            return error(f"the upload is larger than {max_upload_mb} MB", 413)
        return error(f"{exc.code} {exc.name}", exc.code or 500)

    def get_video(video_id: str) -> Video:
        video = state.videos.get(video_id)
        if video is None:
            abort(404)
        return video

    def get_job(job_id: str) -> Job:
        job = state.jobs.get(job_id)
        if job is None:
            abort(404)
        return job

    @app.get("/")
    def index() -> Any:
        return render_template("index.html", max_upload_mb=max_upload_mb,
                               max_frames=state.max_frames or 0)

    @app.get("/api/samples")
    def samples() -> Any:
        return jsonify([v.to_json() for v in state.samples])

    @app.post("/api/upload")
    def upload() -> Any:
        file = request.files.get("video")
        if file is None or not file.filename:
            raise DemoError("no file: choose a video to upload")
        return jsonify(state.add_upload(file.filename, file.save).to_json())

    @app.get("/api/videos/<video_id>/frame.jpg")
    def frame(video_id: str) -> Any:
        import io

        return send_file(io.BytesIO(get_video(video_id).first_frame_jpeg), mimetype="image/jpeg")

    @app.post("/api/segment")
    def segment() -> Any:
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or "video_id" not in data:
            raise DemoError("no video: upload a video or pick a sample first")
        video = state.videos.get(str(data["video_id"]))
        if video is None:
            raise DemoError("unknown video: upload it again")
        job = state.start_job(video, parse_prompt(data, video))
        return jsonify(job.to_json()), 202

    @app.get("/api/jobs/<job_id>")
    def job_status(job_id: str) -> Any:
        return jsonify(get_job(job_id).to_json())

    @app.get("/api/jobs/<job_id>/overlay.mp4")
    def overlay(job_id: str) -> Any:
        job = get_job(job_id)
        if job.state != "done" or not job.overlay_path.is_file():
            abort(404)
        return send_file(job.overlay_path, mimetype="video/mp4", conditional=True)

    @app.get("/api/jobs/<job_id>/masks.zip")
    def masks_zip(job_id: str) -> Any:
        job = get_job(job_id)
        if job.state != "done" or not job.zip_path.is_file():
            abort(404)
        return send_file(job.zip_path, mimetype="application/zip", as_attachment=True,
                         download_name=f"{Path(job.video.name).stem}_masks.zip")

    return app


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of the demo."""
    parser = argparse.ArgumentParser(prog="python demos/app.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help=f"RepViT-SAM weights (default: ${CHECKPOINT_ENV})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--samples", help="folder of sample videos / frame folders to offer")
    parser.add_argument("--device", help="cpu (default), cuda, ...")
    parser.add_argument("--config", help="YAML file overriding the default config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value (repeatable)")
    parser.add_argument("--max-frames", type=int, help="segment at most the first N frames")
    parser.add_argument("--max-upload-mb", type=int, default=512, help="upload size limit")
    parser.add_argument("--workdir", help="uploads and results (default: a temporary folder)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, load the model and serve the demo until Ctrl-C."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    checkpoint = args.checkpoint or os.environ.get(CHECKPOINT_ENV)
    if not checkpoint:
        print(f"error: {NO_CHECKPOINT}", file=sys.stderr)
        return 2
    try:
        import flask  # noqa: F401
    except ImportError:
        print(f"error: {FLASK_HINT}", file=sys.stderr)
        return 2
    from repvit_sam.build import CheckpointError
    from repvit_sam.utils.malloc import retain_freed_memory

    retain_freed_memory()

    overrides = [*args.set, f"model.checkpoint={checkpoint}"]
    if args.device:
        overrides.append(f"model.device={args.device}")
    try:
        if args.max_frames is not None and args.max_frames < 1:
            raise DemoError(f"--max-frames {args.max_frames}: expected >= 1")
        samples_dir = Path(args.samples) if args.samples else None
        if samples_dir is not None and not samples_dir.is_dir():
            raise DemoError(f"--samples {samples_dir}: no such folder")
        config = load_config(args.config, overrides)
        predictor = build_segmenter(config.model)
    except (ValueError, CheckpointError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="repvit-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    samples = find_samples(samples_dir) if samples_dir is not None else []
    state = DemoState(predictor, config, workdir, samples, max_frames=args.max_frames)
    app = create_app(state, max_upload_mb=args.max_upload_mb)
    print(f"RepViT-SAM video demo on http://{args.host}:{args.port}  "
          f"({len(samples)} samples, results in {workdir})")
    try:
        app.run(host=args.host, port=args.port, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        if not args.workdir:
            state.wait_idle(5.0)
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
