"""The annotator's HTTP API and page (Flask, imported only when the app is built).

Every error is a JSON ``{"error": "<one line>"}`` with the status of its exception
(``errors.HTTP_STATUS``). State-changing requests from another origin are refused, so a page
on another site cannot make the user's browser upload or prompt here.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vos.annotate.errors import HTTP_STATUS, AnnotatorError, BusyError, NotFoundError, one_line
from vos.annotate.store import SessionStore, save_frames
from vos.annotate.transfer import read_masks, unpack_bundle, write_bundle
from vos.io.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, open_source
from vos.pipeline import frame_names_for

TEMPLATES = Path(__file__).resolve().parent / "templates"
OWNER_COOKIE = "annotator_owner"
FLASK_HINT = "the annotator needs Flask and waitress: pip install 'repvit-vos[demo]'"


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
    """The Flask application over a :class:`SessionStore`.

    Raises:
        ImportError: Flask is not installed (with the install hint).
    """
    try:
        from flask import Flask, jsonify, render_template, request, send_file
        from werkzeug.exceptions import HTTPException
    except ImportError as exc:
        raise ImportError(FLASK_HINT) from exc

    app = Flask(__name__, root_path=str(TEMPLATES.parent), template_folder=str(TEMPLATES))
    app.config["MAX_CONTENT_LENGTH"] = max_upload_mb * 1024 * 1024
    by_id = {s.sample_id: s for s in samples}

    def error(message: str, status: int) -> Any:
        return jsonify({"error": message}), status

    @app.before_request
    def same_origin_only() -> Any:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        origin = request.headers.get("Origin") or request.headers.get("Referer")
        if origin and urlsplit(origin).netloc != request.host:
            return error("cross-origin request refused: use the annotator's own page", 403)
        return None

    for exc_type, status in HTTP_STATUS.items():
        app.register_error_handler(
            exc_type, lambda exc, status=status: error(one_line(exc), status))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if not request.path.startswith("/api/"):
            return exc
        if exc.code == 413:
            return error(f"the upload is larger than {max_upload_mb} MB", 413)
        return error(f"{exc.code} {exc.name}", exc.code or 500)

    def owner() -> str | None:
        return request.cookies.get(OWNER_COOKIE)

    def session_of(sid: str) -> Any:
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
        bundle = request.files.get("bundle")
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

            session, notice = store.create(token, name, None, save_video)
        elif bundle is not None:
            def save_bundle(folder: Path) -> tuple[Path, str]:
                name, video = unpack_bundle(bundle.stream, folder,
                                            max_bytes=2 * max_upload_mb * 1024 * 1024)
                return video, name

            session, notice = store.create(token, "the session bundle", None, save_bundle)
        elif frames:
            name = one_line(request.form.get("name") or "frames")[:80] or "frames"
            uploads = [(f.filename or "", f.save) for f in frames]
            session, notice = store.create(token, name, None, lambda folder: save_frames(
                uploads, folder, store.limits.max_frames))
        else:
            sample = by_id.get(str(body().get("sample")))
            if sample is None:
                raise AnnotatorError("no video: upload a video or pick a sample")
            session, notice = store.create(token, sample.name, sample.path, None)
        return jsonify({**session.summary(), "notice": notice}), 201

    @app.delete("/api/sessions/<sid>")
    def delete_session(sid: str) -> Any:
        store.delete(sid, owner())
        return jsonify({"deleted": sid})

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
        session = session_of(sid)
        done = session.undo()
        frame = done["frame"]
        return jsonify({**done, **session.poll(-1),
                        "info": session.frame_info(frame) if frame is not None else None})

    @app.post("/api/sessions/<sid>/clear")
    def clear(sid: str) -> Any:
        session, data = session_of(sid), body()
        session.clear(data.get("frame"), data.get("obj"))
        return jsonify(session.frame_info(data["frame"]))

    @app.post("/api/sessions/<sid>/remove")
    def remove(sid: str) -> Any:
        session = session_of(sid)
        name = session.remove(body().get("obj"))
        return jsonify({"removed": name, **session.poll(-1)})

    @app.post("/api/sessions/<sid>/rename")
    def rename(sid: str) -> Any:
        session, data = session_of(sid), body()
        session.rename(data.get("obj"), data.get("name"))
        return jsonify(session.poll(-1))

    @app.post("/api/sessions/<sid>/import")
    def import_masks(sid: str) -> Any:
        session = session_of(sid)
        uploads = [(f.filename or "masks", f.read()) for f in request.files.getlist("masks")]
        if not uploads:
            raise AnnotatorError("no file: choose mask PNGs, JSON or a zip of them")
        with open_source(session.video_path) as source:
            names = frame_names_for(source, session.num_frames)
        masks, object_names = read_masks(uploads, names, (session.height, session.width))
        done = session.import_masks(masks, object_names)
        return jsonify({**done, **session.poll(-1)})

    @app.post("/api/sessions/<sid>/track")
    def track(sid: str) -> Any:
        session, data = session_of(sid), body()
        job = session.start_track(data.get("direction", "both"), data.get("start"))
        return jsonify(job.to_json()), 202

    @app.post("/api/sessions/<sid>/cancel")
    def cancel(sid: str) -> Any:
        return jsonify(session_of(sid).cancel().to_json())

    @app.post("/api/sessions/<sid>/retry")
    def retry(sid: str) -> Any:
        session = session_of(sid)
        session.retry()
        return jsonify({**session.summary(), **session.poll(-1)})

    @app.post("/api/sessions/<sid>/export")
    def export(sid: str) -> Any:
        return jsonify(session_of(sid).start_export().to_json()), 202

    @app.get("/api/sessions/<sid>/export.zip")
    def export_zip(sid: str) -> Any:
        session = session_of(sid)
        path = session.folder / "export.zip"
        job = session.job
        if not path.is_file() or (job is not None and job.kind == "export" and job.running):
            raise NotFoundError("no export yet: press Export first")
        return send_file(path, mimetype="application/zip", as_attachment=True,
                         download_name=f"{Path(session.meta['name']).stem}_masks.zip")

    @app.get("/api/sessions/<sid>/bundle")
    def bundle_zip(sid: str) -> Any:
        session = session_of(sid)
        path = session.folder / "bundle.zip"
        job = session.job
        if job is not None and job.running:
            raise BusyError("the session is busy: wait for its tracking or export to finish")
        with session.lock:
            write_bundle(session, path)
        return send_file(path, mimetype="application/zip", as_attachment=True,
                         download_name=f"{Path(session.meta['name']).stem}.session.zip")

    return app
