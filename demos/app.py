"""Interactive video annotator in the browser, on RepViT-SAM (``vos.video_predictor``).

Upload a video (or pick one of the ``--samples``), add any number of objects with clicks and
boxes on any frame (each mask appears as soon as it is decoded), track forward, backward or
both with the masks streaming into the page, correct any frame and track again, then export
a DAVIS-layout zip (palette PNGs, COCO-RLE JSON per frame, overlay mp4: ``vos.run``'s
formats, written by its ``ResultSink``). Sessions live on disk (``annotator.py``): a page
reload or a server restart finds them as they were.

Usage:
    python demos/app.py --checkpoint weights/repvit_sam.pt [--port 7860] [--host 127.0.0.1]
        [--samples DIR] [--device cuda] [--max-frames N] [--workdir DIR]

Needs Flask (``pip install 'repvit-vos[demo]'``).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vos.config import load_config
from vos.io.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from vos.models import CHECKPOINT_ENV, NO_CHECKPOINT, build_segmenter, checkpoint_digest

# demos/ is a folder of scripts, not a package: its modules import each other as scripts do.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from annotator import (
    AnnotatorError,
    BusyError,
    ForbiddenError,
    Limits,
    NotFoundError,
    Session,
    SessionStore,
    save_frames,
)

logger = logging.getLogger("demos.app")

TEMPLATES = Path(__file__).resolve().parent / "templates"
FLASK_HINT = "the web demo needs Flask: pip install 'repvit-vos[demo]' (or pip install flask)"
OWNER_COOKIE = "annotator_owner"


@dataclass(frozen=True)
class Sample:
    """A video file or frame folder of ``--samples`` offered in the page."""

    sample_id: str
    name: str
    path: Path


def find_samples(folder: Path) -> list[Sample]:
    """Every video file and frame folder directly inside ``folder``."""
    samples = []
    for index, path in enumerate(sorted(folder.iterdir())):
        is_video = path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES
        is_frames = path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
        if is_video or is_frames:
            samples.append(Sample(f"sample{index}", path.name, path.resolve()))
    return samples


def create_app(store: SessionStore, samples: Sequence[Sample] = (), *,
               max_upload_mb: int = 512) -> Any:
    """The Flask application over a :class:`SessionStore`."""
    from flask import Flask, jsonify, render_template, request, send_file
    from werkzeug.exceptions import HTTPException

    app = Flask(__name__, root_path=str(TEMPLATES.parent), template_folder=str(TEMPLATES))
    app.config["MAX_CONTENT_LENGTH"] = max_upload_mb * 1024 * 1024
    by_id = {s.sample_id: s for s in samples}

    def error(message: str, status: int) -> Any:
        return jsonify({"error": message}), status

    @app.before_request
    def same_origin_only() -> Any:
        # A page on another site must not make the user's browser upload or prompt here
        # (the app listens on the user's machine): browsers send Origin with every
        # cross-origin POST, so a state-changing request from another origin is refused.
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        origin = request.headers.get("Origin") or request.headers.get("Referer")
        if origin and urlsplit(origin).netloc != request.host:
            return error("cross-origin request refused: use the annotator's own page", 403)
        return None

    for exc_type, status in ((AnnotatorError, 400), (ForbiddenError, 403),
                             (NotFoundError, 404), (BusyError, 409)):
        app.register_error_handler(
            exc_type, lambda exc, status=status: error(" ".join(str(exc).split()), status))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if not request.path.startswith("/api/"):
            return exc
        if exc.code == 413:
            return error(f"the upload is larger than {max_upload_mb} MB", 413)
        return error(f"{exc.code} {exc.name}", exc.code or 500)

    def owner() -> str | None:
        return request.cookies.get(OWNER_COOKIE)

    def session_of(sid: str) -> Session:
        return store.get(sid, owner())

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise AnnotatorError("bad request: expected a JSON object")
        return data

    @app.get("/")
    def index() -> Any:
        response = app.make_response(render_template(
            "index.html", max_upload_mb=max_upload_mb, max_frames=store.limits.max_frames,
            max_objects=store.limits.max_objects))
        if not owner():
            # Who may open a session: this browser's random token (only its hash is kept).
            response.set_cookie(OWNER_COOKIE, secrets.token_urlsafe(24), max_age=10 * 365 * 86400,
                                httponly=True, samesite="Strict")
        return response

    @app.get("/api/samples")
    def list_samples() -> Any:
        return jsonify([{"id": s.sample_id, "name": s.name} for s in samples])

    @app.get("/api/sessions")
    def list_sessions() -> Any:
        return jsonify([s.summary() for s in store.owned(owner())])

    @app.post("/api/sessions")
    def create_session() -> Any:
        token = owner()
        if not token:
            raise AnnotatorError("no session cookie: reload the page")
        file = request.files.get("video")
        frames = request.files.getlist("frames")
        if file is not None:
            if not file.filename:
                raise AnnotatorError("no file: choose a video to upload")
            name = Path(file.filename.replace("\\", "/")).name or "upload"
            suffix = Path(name).suffix.lower()
            if suffix not in VIDEO_SUFFIXES:
                raise AnnotatorError(f"{name} is not a video (expected one of "
                                     f"{', '.join(VIDEO_SUFFIXES)})")

            def save_video(folder: Path) -> Path:
                path = folder / f"video{suffix}"  # the user's file name is never a path
                file.save(path)
                return path

            session = store.create(token, name, None, save_video)
        elif frames:
            name = " ".join(str(request.form.get("name") or "frames").split())[:80] or "frames"
            uploads = [(f.filename or "", f.save) for f in frames]
            session = store.create(token, name, None, lambda folder: save_frames(
                uploads, folder, store.limits.max_frames))
        else:
            sample = by_id.get(str(body().get("sample")))
            if sample is None:
                raise AnnotatorError("no video: upload a video or pick a sample")
            session = store.create(token, sample.name, sample.path, None)
        return jsonify(session.summary()), 201

    @app.get("/api/sessions/<sid>")
    def get_session(sid: str) -> Any:
        session = session_of(sid)
        return jsonify({**session.summary(), **session.poll(-1)})

    @app.get("/api/sessions/<sid>/poll")
    def poll(sid: str) -> Any:
        since = request.args.get("since", "-1")
        return jsonify(session_of(sid).poll(int(since) if since.lstrip("-").isdigit() else -1))

    @app.get("/api/sessions/<sid>/frames/<int:frame_idx>.jpg")
    def frame_jpeg(sid: str, frame_idx: int) -> Any:
        session = session_of(sid)
        session.frame_info(frame_idx)  # range check
        return send_file(io.BytesIO(session.frame_jpeg(frame_idx)), mimetype="image/jpeg",
                         max_age=3600)

    @app.get("/api/sessions/<sid>/masks/<int:frame_idx>.png")
    def mask_png(sid: str, frame_idx: int) -> Any:
        session = session_of(sid)
        session.frame_info(frame_idx)
        return send_file(io.BytesIO(session.overlay_png(frame_idx)), mimetype="image/png")

    @app.get("/api/sessions/<sid>/frames/<int:frame_idx>")
    def frame_info(sid: str, frame_idx: int) -> Any:
        session = session_of(sid)
        info = session.frame_info(frame_idx)
        session.set_cursor(frame_idx)
        return jsonify(info)

    @app.post("/api/sessions/<sid>/objects")
    def add_object(sid: str) -> Any:
        session = session_of(sid)
        obj_id = session.add_object(body().get("name"))
        return jsonify({"obj": obj_id, **session.poll(-1)}), 201

    @app.post("/api/sessions/<sid>/prompt")
    def prompt(sid: str) -> Any:
        session, data = session_of(sid), body()
        session.prompt(data.get("frame"), data.get("obj"), data.get("points"), data.get("box"))
        return jsonify(session.frame_info(data["frame"]))

    @app.post("/api/sessions/<sid>/undo")
    def undo(sid: str) -> Any:
        session, data = session_of(sid), body()
        session.undo(data.get("frame"), data.get("obj"))
        return jsonify(session.frame_info(data["frame"]))

    @app.post("/api/sessions/<sid>/clear")
    def clear(sid: str) -> Any:
        session, data = session_of(sid), body()
        session.clear(data.get("frame"), data.get("obj"))
        return jsonify(session.frame_info(data["frame"]))

    @app.post("/api/sessions/<sid>/remove")
    def remove(sid: str) -> Any:
        session = session_of(sid)
        session.remove(body().get("obj"))
        return jsonify(session.poll(-1))

    @app.post("/api/sessions/<sid>/rename")
    def rename(sid: str) -> Any:
        session, data = session_of(sid), body()
        session.rename(data.get("obj"), data.get("name"))
        return jsonify(session.poll(-1))

    @app.post("/api/sessions/<sid>/track")
    def track(sid: str) -> Any:
        session, data = session_of(sid), body()
        job = session.start_track(data.get("direction", "both"), data.get("start"))
        return jsonify(job.to_json()), 202

    @app.post("/api/sessions/<sid>/cancel")
    def cancel(sid: str) -> Any:
        return jsonify(session_of(sid).cancel().to_json())

    @app.post("/api/sessions/<sid>/export")
    def export(sid: str) -> Any:
        session = session_of(sid)
        return jsonify(session.start_export(session.meta["name"]).to_json()), 202

    @app.get("/api/sessions/<sid>/export.zip")
    def export_zip(sid: str) -> Any:
        session = session_of(sid)
        path = session.folder / "export.zip"
        job = session.job
        if not path.is_file() or (job is not None and job.kind == "export" and job.running):
            raise NotFoundError("no export yet: press Export first")
        return send_file(path, mimetype="application/zip", as_attachment=True,
                         download_name=f"{Path(session.meta['name']).stem}_masks.zip")

    return app


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags of the annotator."""
    parser = argparse.ArgumentParser(prog="python demos/app.py",
                                     description=__doc__.splitlines()[0])
    limits = Limits()
    parser.add_argument("--checkpoint", help=f"RepViT-SAM weights (default: ${CHECKPOINT_ENV})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--samples", help="folder of sample videos / frame folders to offer")
    parser.add_argument("--device", help="cpu (default), cuda, ...")
    parser.add_argument("--config", help="YAML file overriding the default config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value (repeatable)")
    parser.add_argument("--max-frames", type=int, default=limits.max_frames,
                        help=f"refuse longer videos (default {limits.max_frames})")
    parser.add_argument("--max-upload-mb", type=int, default=512, help="upload size limit")
    parser.add_argument("--max-sessions", type=int, default=limits.max_sessions,
                        help=f"sessions kept on disk (default {limits.max_sessions})")
    parser.add_argument("--session-ttl-hours", type=float, default=limits.ttl_hours,
                        help=f"delete sessions unchanged this long (default {limits.ttl_hours:g})")
    parser.add_argument("--session-disk-mb", type=float, default=limits.disk_mb,
                        help=f"embeddings kept on disk per session (default {limits.disk_mb:g})")
    parser.add_argument("--no-background-encode", action="store_true",
                        help="encode frames only when a prompt or a pass needs them")
    parser.add_argument("--workdir", help="sessions folder (default: a temporary folder, "
                        "deleted on exit; name one to keep sessions across restarts)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, load the model and serve the annotator until Ctrl-C."""
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
        if args.max_frames < 1:
            raise ValueError(f"--max-frames {args.max_frames}: expected >= 1")
        samples_dir = Path(args.samples) if args.samples else None
        if samples_dir is not None and not samples_dir.is_dir():
            raise ValueError(f"--samples {samples_dir}: no such folder")
        config = load_config(args.config, overrides)
        segmenter = build_segmenter(config.model)
    except (ValueError, CheckpointError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="repvit-annot-"))
    limits = Limits(max_frames=args.max_frames, max_sessions=args.max_sessions,
                    ttl_hours=args.session_ttl_hours, disk_mb=args.session_disk_mb,
                    background_encode=not args.no_background_encode)
    store = SessionStore(workdir / "sessions", segmenter, config,
                         checkpoint_digest(config.model), limits)
    samples = find_samples(samples_dir) if samples_dir is not None else []
    app = create_app(store, samples, max_upload_mb=args.max_upload_mb)
    print(f"RepViT-SAM video annotator on http://{args.host}:{args.port}  "
          f"({len(samples)} samples, sessions in {workdir})")
    try:
        app.run(host=args.host, port=args.port, threaded=True)
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
