"""The model's side of live tracking: a :class:`LiveSession` run on the newest frame.

:class:`ModelWorker` owns the session. Threaded, it runs the model on its own thread, always on
the newest frame handed to it (a one-frame mailbox: a frame that arrives while the model is
busy replaces the one waiting), and publishes each result as a :class:`Keyframe`; the window
meanwhile shows every camera frame with the latest keyframe's masks carried along the optical
flow (:mod:`vos.live.flow`). Inline, every call runs the model at once on the caller's thread
(no carrying: today's loop, and ``--no-realtime``).

Only the worker's thread touches the tracker. Prompts and corrections go with the frame they
were drawn on: that frame is pinned in the mailbox (a newer frame does not replace it), or,
when the model is on that very frame already, they are applied just after its step, on its
embedding (decoder only). Removals and resets are commands run between two frames; each one
counts a *generation*, which every keyframe records, so the window can tell results computed
before a reset from those after.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vos.io.camera import CapturedFrame
from vos.live.flow import FlowFrame
from vos.live.session import Correction, LiveSession
from vos.types import FrameResult, Prompt

logger = logging.getLogger(__name__)

__all__ = ["Keyframe", "ModelWorker"]


@dataclass(frozen=True)
class Keyframe:
    """A model result and the frame it was computed on.

    Attributes:
        captured: the frame (its capture index and timestamp).
        result: the model's objects on it (``frame_idx`` = capture index).
        flow: the frame as the optical flow sees it (None without carrying).
        generation: removals and resets applied before this result.
        ready: ``time.perf_counter()`` when the result was ready.
    """

    captured: CapturedFrame
    result: FrameResult
    flow: FlowFrame | None
    generation: int
    ready: float

    @property
    def index(self) -> int:
        """The keyframe's capture index."""
        return self.captured.index


@dataclass
class _Job:
    captured: CapturedFrame
    flow: FlowFrame | None
    prompts: list[Prompt] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)

    @property
    def pinned(self) -> bool:
        return bool(self.prompts or self.corrections)


class ModelWorker:
    """Runs a :class:`LiveSession` on the newest submitted frame (module docstring).

    Args:
        session: the tracking session; from :meth:`start` on, only the worker calls it.
        threaded: run the model on a worker thread (carrying masks needs it); False runs
            every submitted frame at once, on the caller's thread.

    Example:
        >>> with ModelWorker(session, threaded=True) as worker:
        ...     worker.submit(captured, carrier.prepare(captured.image))
        ...     key = worker.latest()       # the newest finished keyframe, or None
    """

    def __init__(self, session: LiveSession, *, threaded: bool) -> None:
        self.session = session
        self.threaded = threaded
        self.generation = 0  # commands given so far (the window's view)
        self._cond = threading.Condition()
        self._pending: _Job | None = None
        self._running: _Job | None = None
        self._late: list[_Job] = []  # interactions for the frame being processed
        self._commands: list[Callable[[LiveSession], object]] = []
        self._applied = 0  # commands applied (the worker's view)
        self._latest: Keyframe | None = None
        self._history: deque[Keyframe] = deque(maxlen=32)  # the newest keyframes, in order
        self._error: BaseException | None = None
        self._stop = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ caller's side
    def start(self) -> ModelWorker:
        """Start the worker thread (threaded mode; idempotent); returns self."""
        if self.threaded and self._thread is None:
            self._thread = threading.Thread(target=self._work, name="live-model", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the frame in progress (waits up to ``timeout`` seconds for it)."""
        with self._cond:
            self._stop = True
            self._pending = None
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("the model thread did not stop within %.0f s", timeout)

    def __enter__(self) -> ModelWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self,
        captured: CapturedFrame,
        flow: FlowFrame | None = None,
        prompts: Sequence[Prompt] = (),
        corrections: Sequence[Correction] = (),
    ) -> Keyframe | None:
        """Hand a frame to the model, with prompts and corrections drawn on it.

        Threaded: the frame waits in the mailbox (replacing a waiting frame without
        interactions) and the call returns None at once. Inline: the model runs now and the
        new keyframe is returned.

        Raises:
            Exception: an error the model raised on its thread, re-raised here.
        """
        job = _Job(captured, flow, list(prompts), list(corrections))
        if not self.threaded:
            current = self.session.frame
            if job.pinned and current is not None and current.index == captured.index:
                _interact(self.session, job)  # drawn on the current frame: decoder only
            else:
                self.session.process(captured, job.prompts, job.corrections)
            return self._publish(job)
        with self._cond:
            self._raise_pending()
            if job.pinned and self._running is not None \
                    and self._running.captured.index == captured.index:
                self._late.append(job)  # applied right after that frame's step
            elif job.pinned and self._running is None and self._latest is not None \
                    and self._latest.index == captured.index and self._pending is None:
                # The tracker still stands on that frame: a decoder-only change.
                self._commands.append(lambda session: _interact(session, job))
                self.generation += 1
            elif self._pending is not None and self._pending.captured.index == captured.index:
                self._pending.prompts += job.prompts
                self._pending.corrections += job.corrections
            elif self._pending is None or not self._pending.pinned or job.pinned:
                if self._pending is not None and self._pending.pinned:
                    # Two frames with interactions: keep both, on the newer frame.
                    job.prompts = self._pending.prompts + job.prompts
                    job.corrections = self._pending.corrections + job.corrections
                self._pending = job
            self._cond.notify_all()
        return None

    def command(self, fn: Callable[[LiveSession], object]) -> None:
        """Run ``fn(session)`` between two frames (removal, reset); inline: at once.

        The current keyframe is re-published with the session's result afterwards, so the
        window sees the change without waiting for the next frame's model result.
        """
        self.generation += 1
        if not self.threaded:
            fn(self.session)
            self._applied += 1
            self._republish()
            return
        with self._cond:
            self._raise_pending()
            self._commands.append(fn)
            self._cond.notify_all()

    def latest(self) -> Keyframe | None:
        """The newest keyframe (None before the first result).

        Raises:
            Exception: an error the model raised on its thread.
        """
        with self._cond:
            self._raise_pending()
            return self._latest

    def recent(self) -> tuple[Keyframe, ...]:
        """The newest keyframes (up to 32), oldest first: the recorder's choice of sources."""
        with self._cond:
            return tuple(self._history)

    @property
    def busy_from(self) -> int | None:
        """The lowest capture index a result may still come for (None: nothing under way).

        Frames before it will get no newer keyframe than those already published.
        """
        with self._cond:
            jobs = [j for j in (self._running, self._pending) if j is not None]
            return min(j.captured.index for j in jobs) if jobs else None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running; False on timeout."""
        deadline = time.perf_counter() + timeout
        with self._cond:
            while self._running is not None or self._pending is not None or self._commands:
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._error is not None or self._stop:
                    return False
                self._cond.wait(remaining)
            return True

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stop and self._pending is None and not self._commands:
                    self._cond.wait()
                if self._stop:
                    return
                commands, self._commands = self._commands, []
                job = None
                if not commands:
                    job, self._pending = self._pending, None
                    self._running = job
            try:
                if commands:
                    for fn in commands:
                        fn(self.session)
                    with self._cond:
                        self._applied += len(commands)
                    self._republish()
                    continue
                assert job is not None
                self.session.process(job.captured, job.prompts, job.corrections)
                with self._cond:
                    late, self._late = self._late, []
                    self._running = None
                for extra in late:
                    _interact(self.session, extra)
                self._publish(job)
            except BaseException as exc:  # handed to the caller's thread
                logger.debug("the model thread failed", exc_info=True)
                with self._cond:
                    self._error = exc
                    self._running = None
                    self._stop = True
                    self._cond.notify_all()
                return

    def _publish(self, job: _Job) -> Keyframe:
        assert self.session.result is not None
        key = Keyframe(job.captured, self.session.result, job.flow, self._applied,
                       time.perf_counter())
        with self._cond:
            self._latest = key
            self._history.append(key)
            self._cond.notify_all()
        return key

    def _republish(self) -> None:
        """The current keyframe again, with the session's result after a command."""
        with self._cond:
            latest = self._latest
        session = self.session
        if latest is None or session.frame is None or session.result is None \
                or session.frame.index != latest.index:
            return
        key = Keyframe(latest.captured, session.result, latest.flow, self._applied,
                       time.perf_counter())
        with self._cond:
            self._latest = key
            self._history.append(key)
            self._cond.notify_all()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error = self._error
            raise error


def _interact(session: LiveSession, job: _Job) -> None:
    """Apply a job's prompts and corrections on the session's current frame."""
    for prompt in job.prompts:
        session.add_object(prompt)
    for correction in job.corrections:
        session.correct(correction)
