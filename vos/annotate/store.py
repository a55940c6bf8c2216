"""Every session of the server: where they live, who owns them, how many may exist and be open.

Rules (each from :class:`~vos.annotate.limits.Limits`):

- A session belongs to the browser that made it (the hash of an HttpOnly cookie).
- The server holds at most ``max_sessions``; an upload beyond is refused with one line.
  One browser holds at most ``max_sessions_per_owner``; beyond, *its own* least recently
  changed idle session is deleted, and the reply says which. A browser never causes another
  browser's session to be deleted.
- Sessions unchanged for ``ttl_hours`` are deleted (at start and whenever one is created).
- At most ``max_open`` sessions hold a model state; opening one more closes the least
  recently used idle one, whose memory goes back to the system.
- Uploads are checked before a session exists: a readable video or frame folder, at most
  ``max_frames`` frames of at most ``max_pixels`` pixels, every frame of a folder the same
  size. What a refused upload wrote is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vos.annotate.errors import AnnotatorError, BusyError, ForbiddenError, FullError, NotFoundError
from vos.annotate.limits import Limits
from vos.annotate.session import Session
from vos.config import RunConfig
from vos.io.atomic import write_text_atomic
from vos.io.sources import IMAGE_SUFFIXES, SourceError, open_source, probe_frame_size

logger = logging.getLogger(__name__)

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22,64}")
FRAME_NAME = re.compile(r"[\w.+-]{1,128}")


def owner_hash(token: str) -> str:
    """What a session keeps of its owner's cookie (the cookie itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def save_frames(files: Sequence[tuple[str, Callable[[Path], Any]]], folder: Path,
                max_frames: int) -> Path:
    """Write an uploaded frame folder's images to ``folder/frames`` (other files skipped).

    Args:
        files: (the browser's file name, ``save(path)``) per file.
        folder: the session's folder.
        max_frames: images accepted at most.

    Returns:
        The frame folder.

    Raises:
        AnnotatorError: no images, too many, two with one name, an odd file name.
    """
    frames = folder / "frames"
    frames.mkdir()
    names: set[str] = set()
    for filename, save in files:
        # Only the base name, and only ordinary characters: never a path of the user's.
        name = Path(filename.replace("\\", "/")).name
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES or name.startswith("."):
            continue
        if not FRAME_NAME.fullmatch(name):
            raise AnnotatorError(f"frame file name {name[:60]!r}: use letters, digits, '.', "
                                 "'_', '-' or '+'")
        if name in names:
            raise AnnotatorError(f"two frames named {name}")
        names.add(name)
        if len(names) > max_frames:
            raise AnnotatorError(f"the folder has more than {max_frames} frames; this server "
                                 f"takes at most {max_frames}")
        save(frames / name)
    if not names:
        raise AnnotatorError("the folder has no image files (expected one of "
                             f"{', '.join(IMAGE_SUFFIXES)})")
    return frames


def check_frame_sizes(frames: Path, name: str) -> tuple[int, int] | None:
    """Every image of an uploaded folder has the first one's size (headers only).

    Returns:
        (H, W) of the frames (None for an empty folder).

    Raises:
        AnnotatorError: an unreadable image or one of another size (named by its file name).
    """
    from PIL import Image, UnidentifiedImageError

    first: tuple[int, int] | None = None
    first_name = ""
    for path in sorted(frames.iterdir()):
        try:
            with Image.open(path) as image:
                size = image.size
        except (OSError, UnidentifiedImageError):
            raise AnnotatorError(f"{name}: {path.name} could not be decoded as an image") from None
        if first is None:
            first, first_name = size, path.name
        elif size != first:
            raise AnnotatorError(f"{name}: {path.name} is {size[0]}x{size[1]} but "
                                 f"{first_name} is {first[0]}x{first[1]}; every frame of a "
                                 "folder must have the same size")
    return None if first is None else (first[1], first[0])


class SessionStore:
    """Every session of the server (on disk, and the few open ones in memory).

    Args:
        root: ``<workdir>/sessions``.
        segmenter: the model shared by every session's predictor.
        config: tracker, prompt and store settings.
        checkpoint_sha256: the checkpoint's hash (part of the embeddings' keys).
        limits: the server's limits.
    """

    def __init__(self, root: Path, segmenter: Any, config: RunConfig,
                 checkpoint_sha256: str | None, limits: Limits) -> None:
        self.root = root
        self.segmenter = segmenter
        self.config = config
        self.checkpoint_sha256 = checkpoint_sha256
        self.limits = limits
        self._lock = threading.RLock()
        self.sessions: dict[str, Session] = {}
        root.mkdir(parents=True, exist_ok=True)
        for folder in sorted(root.iterdir()):
            if not (folder.is_dir() and SESSION_ID.fullmatch(folder.name)):
                continue
            meta_path = folder / "meta.json"
            if not meta_path.exists():
                # An upload the server was killed in the middle of: nothing of the user's.
                shutil.rmtree(folder, ignore_errors=True)
                logger.info("removed an unfinished upload %s", folder.name[:6])
                continue
            try:
                meta = json.loads(meta_path.read_text())
                self.sessions[folder.name] = Session(folder, meta, limits)
            except (OSError, ValueError, KeyError):
                logger.warning("skipping a damaged session folder %s", folder.name[:6])
        self.cleanup()

    # ------------------------------------------------------------------ creating
    def create(self, owner: str, name: str, video: Path | None,
               save: Callable[[Path], Path | tuple[Path, str]] | None = None,
               ) -> tuple[Session, str | None]:
        """A new session on an upload or a sample video.

        Args:
            owner: the browser's token.
            name: what the page calls the video.
            video: a sample's video file or frame folder (None for an upload).
            save: for an upload, ``save(session_folder)`` writes it inside the session's
                folder and returns the video file or frame folder it wrote (and, for a
                session bundle, the video's name with it).

        Returns:
            The session, and a notice when one of the owner's sessions was deleted to make
            room (None otherwise).

        Raises:
            FullError: the server holds ``max_sessions`` sessions.
            AnnotatorError: not a readable video, too many frames or pixels, frames of
                different sizes.
        """
        with self._lock:
            if len(self.sessions) >= self.limits.max_sessions:
                self.cleanup()
            # An owner at their own quota makes room by losing their own oldest session:
            # the server does not grow, so it is not full for them.
            mine = self.owned(owner)
            frees_own = len(mine) >= self.limits.max_sessions_per_owner and any(
                not (s.job and s.job.running) for s in mine)
            if len(self.sessions) >= self.limits.max_sessions and not frees_own:
                raise FullError(f"the server is full ({len(self.sessions)} sessions): delete "
                                "one of your sessions or try again later")
        sid = secrets.token_urlsafe(24)
        folder = self.root / sid
        folder.mkdir(parents=True)
        try:
            if save is not None:
                saved = save(folder)
                video, name = saved if isinstance(saved, tuple) else (saved, name)
            assert video is not None
            meta = self._check_video(name, video, folder if save is not None else None)
            meta["owner"] = owner_hash(owner)
            write_text_atomic(folder / "meta.json", json.dumps(meta, indent=1))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        session = Session(folder, meta, self.limits)
        with self._lock:
            self.sessions[sid] = session
        notice = self._owner_quota(owner, keep=sid)
        self.cleanup(keep=sid)
        return session, notice

    def _check_video(self, name: str, video: Path, inside: Path | None) -> dict[str, Any]:
        size = check_frame_sizes(video, name) if video.is_dir() else probe_frame_size(video)
        if size is not None:
            self._check_pixels(name, *size)  # from headers: before any frame is decoded
        try:
            with open_source(video) as source:
                info = source.info
                if info.num_frames and info.num_frames > self.limits.max_frames:
                    raise AnnotatorError(f"{name} has {info.num_frames} frames; this server "
                                         f"takes at most {self.limits.max_frames}")
                height, width = info.image_hw
                self._check_pixels(name, height, width)
                first = next(iter(source.frames(0, 1)), None)
        except SourceError:
            raise AnnotatorError(f"{name} could not be decoded as a video") from None
        if first is None or not info.num_frames:
            raise AnnotatorError(f"{name} has no readable frames")
        return {"name": name, "video": str(video.relative_to(inside)) if inside else str(video),
                "num_frames": int(info.num_frames), "width": width, "height": height,
                "fps": float(info.fps), "created": time.strftime("%Y-%m-%d %H:%M:%S")}

    def _check_pixels(self, name: str, height: int, width: int) -> None:
        if width * height > self.limits.max_pixels:
            raise AnnotatorError(
                f"{name} is {width}x{height}; this server takes at most "
                f"{self.limits.max_pixels / 1e6:.1f} megapixels a frame (1920x1080 by default): "
                "downscale it first, e.g. ffmpeg -i in.mp4 -vf scale=1920:-2 out.mp4")

    # ------------------------------------------------------------------ access
    def get(self, sid: str, owner: str | None) -> Session:
        """The session ``sid`` of this owner, opened (restored from disk) if it was not.

        Raises:
            NotFoundError: no such session.
            ForbiddenError: another browser's session.
        """
        session = self.sessions.get(sid) if SESSION_ID.fullmatch(sid or "") else None
        if session is None:
            raise NotFoundError("no such session: it may have been deleted; open the video "
                                "again")
        if owner is None or not secrets.compare_digest(session.meta["owner"], owner_hash(owner)):
            raise ForbiddenError("this session belongs to another browser")
        session.last_used = time.monotonic()
        if not session.is_open:
            with self._lock:
                if not session.is_open:
                    self._make_room()
                    try:
                        session.open(self.segmenter, self.config, self.checkpoint_sha256)
                    except SourceError:
                        raise AnnotatorError("the session's video can no longer be read") \
                            from None
        return session

    def owned(self, owner: str | None) -> list[Session]:
        """The sessions of one browser, most recently changed first."""
        if owner is None:
            return []
        digest = owner_hash(owner)
        mine = [s for s in list(self.sessions.values()) if s.meta["owner"] == digest]
        return sorted(mine, key=lambda s: -s.modified())

    def delete(self, sid: str, owner: str | None) -> None:
        """Delete one of the owner's sessions (its folder too).

        Raises:
            BusyError: it is tracking or exporting.
        """
        session = self.get(sid, owner)
        job = session.job
        if job is not None and job.running:
            raise BusyError("the session is busy: cancel its tracking or wait for its export")
        self._drop(session, "deleted by its owner")

    # ------------------------------------------------------------------ bounds
    def _drop(self, session: Session, why: str) -> None:
        with self._lock:
            self.sessions.pop(session.sid, None)
        session.close()
        shutil.rmtree(session.folder, ignore_errors=True)
        logger.info("deleted session %s (%s)", session.sid[:6], why)
        self._give_memory_back()

    def _owner_quota(self, owner: str, keep: str) -> str | None:
        mine = [s for s in self.owned(owner) if s.sid != keep]
        excess = len(mine) + 1 - self.limits.max_sessions_per_owner
        idle = sorted((s for s in mine if not (s.job and s.job.running)), key=Session.modified)
        gone = []
        for session in idle[:max(excess, 0)]:
            gone.append(session.meta["name"])
            self._drop(session, "its owner's quota")
        if not gone:
            return None
        return (f"You may keep {self.limits.max_sessions_per_owner} sessions: your oldest "
                f"({', '.join(gone)}) was deleted to make room.")

    def _make_room(self) -> None:
        open_ = [s for s in self.sessions.values() if s.is_open]
        idle = sorted((s for s in open_ if not (s.job and s.job.running)),
                      key=lambda s: s.last_used)
        closed = False
        while len(open_) >= self.limits.max_open and idle:
            victim = idle.pop(0)
            victim.close()
            open_.remove(victim)
            closed = True
            logger.info("closed idle session %s (it reopens from disk)", victim.sid[:6])
        if closed:
            self._give_memory_back()

    @staticmethod
    def _give_memory_back() -> None:
        import gc

        from repvit_sam.utils.malloc import release_freed_memory

        gc.collect()
        release_freed_memory()

    def cleanup(self, keep: str | None = None) -> list[str]:
        """Delete sessions unchanged for longer than ``ttl_hours``; returns their ids."""
        now = time.time()
        with self._lock:
            doomed = [s for s in self.sessions.values()
                      if s.sid != keep and not (s.job and s.job.running)
                      and now - s.modified() > self.limits.ttl_hours * 3600]
        for session in doomed:
            self._drop(session, "unchanged for longer than the session lifetime")
        return sorted(s.sid for s in doomed)

    def close(self) -> None:
        """Close every open session (their folders stay)."""
        for session in list(self.sessions.values()):
            job = session.job
            if job is not None and job.running:
                job.cancel.set()
            session.close()
