"""Serving the annotator: its flags, the model and session store they build, and waitress.

``repvit-vos annotate`` and ``python -m vos.run annotate`` come here through
:mod:`vos.cli.annotate`; ``demos/app.py`` is a short example of the same calls. The app is
served by waitress (a production WSGI server: a pool of threads, pure Python, every OS),
never by Flask's development server.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vos.annotate.limits import Limits, parse_pixels
from vos.annotate.routes import FLASK_HINT, create_app, find_samples
from vos.annotate.store import SessionStore

logger = logging.getLogger(__name__)

DEFAULT_PORT = 7860


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The annotator's own flags (the model's come from the CLI's common flags)."""
    limits = Limits()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on "
                        "(default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--threads", type=int, default=8, help="request threads (default 8)")
    parser.add_argument("--samples", help="folder of sample videos / frame folders to offer")
    parser.add_argument("--workdir", help="sessions folder (default: a temporary folder, "
                        "deleted on exit; name one to keep sessions across restarts)")
    parser.add_argument("--max-frames", type=int, default=limits.max_frames,
                        help=f"refuse longer videos (default {limits.max_frames})")
    parser.add_argument("--max-pixels", default="1920x1080",
                        help="refuse videos with larger frames: WIDTHxHEIGHT or a pixel count "
                             "(default 1920x1080)")
    parser.add_argument("--max-upload-mb", type=int, default=512, help="upload size limit")
    parser.add_argument("--max-sessions", type=int, default=limits.max_sessions,
                        help=f"sessions on the server (default {limits.max_sessions}); "
                             "uploads beyond are refused")
    parser.add_argument("--max-sessions-per-browser", type=int,
                        default=limits.max_sessions_per_owner,
                        help=f"sessions one browser keeps (default "
                             f"{limits.max_sessions_per_owner}); beyond, its own oldest goes")
    parser.add_argument("--max-open", type=int, default=limits.max_open,
                        help=f"sessions holding a model state in memory (default "
                             f"{limits.max_open})")
    parser.add_argument("--session-ttl-hours", type=float, default=limits.ttl_hours,
                        help=f"delete sessions unchanged this long (default {limits.ttl_hours:g})")
    parser.add_argument("--session-disk-mb", type=float, default=limits.disk_mb,
                        help=f"embeddings kept on disk per session (default {limits.disk_mb:g})")
    parser.add_argument("--no-background-encode", action="store_true",
                        help="encode frames only when a prompt or a pass needs them")


def limits_from(args: argparse.Namespace) -> Limits:
    """The :class:`Limits` of the flags (ValueError names a bad flag)."""
    return Limits(max_frames=args.max_frames, max_pixels=parse_pixels(str(args.max_pixels)),
                  max_sessions=args.max_sessions,
                  max_sessions_per_owner=args.max_sessions_per_browser,
                  max_open=args.max_open, ttl_hours=args.session_ttl_hours,
                  disk_mb=args.session_disk_mb,
                  background_encode=not args.no_background_encode)


def check_web_packages() -> None:
    """Raises ImportError with the install hint when Flask or waitress is missing."""
    try:
        import flask  # noqa: F401
        import waitress  # noqa: F401
    except ImportError as exc:
        raise ImportError(FLASK_HINT) from exc


def serve(args: argparse.Namespace, segmenter: Any, config: Any,
          checkpoint_sha256: str | None) -> int:
    """Build the store and the app and serve them until Ctrl-C.

    Args:
        args: the parsed flags (:func:`add_arguments`).
        segmenter: the model, shared by every session.
        config: the run config (tracker, prompt and store settings).
        checkpoint_sha256: the checkpoint's hash (part of the embeddings' keys).
    """
    from waitress import create_server

    limits = limits_from(args)
    samples_dir = Path(args.samples) if args.samples else None
    if samples_dir is not None and not samples_dir.is_dir():
        raise ValueError(f"--samples {samples_dir}: no such folder")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="repvit-annot-"))
    store = SessionStore(workdir / "sessions", segmenter, config, checkpoint_sha256, limits)
    samples = find_samples(samples_dir) if samples_dir is not None else []
    app = create_app(store, samples, max_upload_mb=args.max_upload_mb)
    server = create_server(app, host=args.host, port=args.port, threads=args.threads,
                           max_request_body_size=args.max_upload_mb * 1024 * 1024 + (1 << 20))
    print(f"RepViT-SAM video annotator on http://{args.host}:{server.effective_port}  "
          f"({len(samples)} samples, sessions in {workdir})", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        store.close()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0
