"""The tracker-side segmenter wrappers shared by threads (issue 27).

The annotator's background encoder and its request threads go through one session's
``StoredSegmenter`` and ``EmbeddingStore``; ``EncodeAhead`` runs its inner segmenter on a
worker and on the caller at once; the pipeline's ``TimedSegmenter`` sums times. Each is run
the way tests/repvit_sam/test_threads.py runs the segmenters (its helpers and fixtures), over
OpenVINO, the annotator's default backend: nothing may raise, and every result equals the
call made alone, bit for bit.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any

import numpy as np

from repvit_sam.runtime import GraphCache
from repvit_sam.segmenter import DecodePrompts, SegmenterBase
from tests.repvit_sam.test_threads import (  # noqa: F401  (fixtures)
    Key,
    Sam,
    assert_as_alone,
    backend_segmenter,
    graph_cache,
    make_frames,
    make_prompts,
    needs,
    seeing_model,
    shared,
    workload,
)
from vos.embedding_store import EmbeddingStore, StoredSegmenter
from vos.encode_ahead import EncodeAhead
from vos.pipeline import StageTimer, TimedSegmenter

EMBEDDING_MB = 4  # a (1, 256, 64, 64) float32 embedding


def test_stored_segmenter_spilling_and_evicting_while_threads_read(
    seeing_model: Sam, graph_cache: GraphCache  # noqa: F811
) -> None:
    """The annotator's stack: OpenVINO encoder, torch decoder, a store that holds one
    embedding in memory and one on disk, so frames spill, are read back and are evicted
    (then encoded again) while the threads read."""
    needs("openvino")
    reference = backend_segmenter(seeing_model, graph_cache, "openvino", "torch")
    work, expected = workload(reference, make_frames(3, seed=11), make_prompts()[:2])
    store = EmbeddingStore("seeing;openvino;size256", memory_mb=EMBEDDING_MB + 1,
                           disk_mb=EMBEDDING_MB + 1)
    try:
        segmenter = StoredSegmenter(
            backend_segmenter(seeing_model, graph_cache, "openvino", "torch"), store)
        results, errors = shared(segmenter, work, rounds=2)
        assert_as_alone(results, errors, expected)
        stats = store.stats
        assert stats.spilled > 0 and stats.evicted > 0 and stats.disk_hits > 0, stats
        # Each frame encoded at least once; the rest came from the store or a running encode.
        encode_calls = sum(1 for key, _ in results if key[0] == "encode")
        assert len(work.frames) <= segmenter.encodes < encode_calls
    finally:
        store.close()


class SlowCounting(SegmenterBase):
    """Encodes a frame to its first pixel after ``delay_s``, counting the calls; fails once
    when asked to."""

    def __init__(self, delay_s: float, fail_first: bool = False) -> None:
        self.delay_s = delay_s
        self.fail_first = fail_first
        self.calls = 0
        self.lock = threading.Lock()

    def encode(self, image: np.ndarray) -> Any:
        with self.lock:
            self.calls += 1
            fail, self.fail_first = self.fail_first, False
        time.sleep(self.delay_s)
        if fail:
            raise RuntimeError("encoder failed")
        return int(image[0, 0, 0])

    def decode_prompts(self, embedding: Any, prompts: DecodePrompts) -> Any:
        return embedding


def ask_at_once(call: Any, count: int) -> tuple[list[Any], list[str]]:
    """``call()`` from ``count`` threads released together; (results, errors)."""
    barrier = threading.Barrier(count)
    results: list[Any] = []
    errors: list[str] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(call())
        except Exception:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_a_frame_asked_while_it_is_encoded_waits_for_that_encode() -> None:
    """A click on the frame the background thread is encoding does not encode it again."""
    inner = SlowCounting(delay_s=0.3)
    store = EmbeddingStore("fake", memory_mb=16, disk_mb=0)
    segmenter = StoredSegmenter(inner, store)
    frame = np.full((4, 6, 3), 9, np.uint8)
    results, errors = ask_at_once(lambda: segmenter.encode(frame), 3)
    assert not errors and results == [9, 9, 9]
    assert inner.calls == 1 and segmenter.encodes == 1
    assert segmenter.encode(frame) == 9 and inner.calls == 1  # stored


def test_a_failed_encode_is_tried_again_by_its_waiters() -> None:
    """The thread whose encode fails reports it; those waiting for it encode themselves."""
    inner = SlowCounting(delay_s=0.3, fail_first=True)
    segmenter = StoredSegmenter(inner, EmbeddingStore("fake", memory_mb=16, disk_mb=0))
    frame = np.full((4, 6, 3), 5, np.uint8)
    results, errors = ask_at_once(lambda: segmenter.encode(frame), 3)
    assert results == [5, 5]
    assert len(errors) == 1 and "RuntimeError: encoder failed" in errors[0]
    assert inner.calls == 2 and segmenter.encodes == 1  # the two waiters shared one retry
    assert segmenter.encode(frame) == 5 and inner.calls == 2  # stored


def test_encode_ahead_worker_and_callers_share_the_segmenter(
    seeing_model: Sam, graph_cache: GraphCache  # noqa: F811
) -> None:
    """The worker encodes the frames read ahead while other threads encode frames on
    demand (misses, on their own thread) and decode: all on one OpenVINO segmenter."""
    needs("openvino")
    reference = backend_segmenter(seeing_model, graph_cache, "openvino", "torch")
    work, expected = workload(reference, make_frames(3, seed=12), make_prompts()[:2])
    streamed: list[tuple[Key, Any]] = []
    with EncodeAhead(backend_segmenter(seeing_model, graph_cache, "openvino", "torch")) as ahead:

        def consumer() -> None:
            # The tracker's loop: frames read through the look-ahead, then asked for.
            stream = [frame.copy() for frame in work.frames]
            for i, frame in enumerate(ahead.frames(stream)):
                streamed.append((("encode", i), ahead.encode(frame)))

        results, errors = shared(ahead, work, rounds=1, extra=[consumer])
        assert_as_alone(results + streamed, errors, expected)
        assert len(streamed) == len(work.frames)
        calls = sum(1 for key, _ in results + streamed if key[0] == "encode")
        assert ahead.hits + ahead.misses == calls and ahead.hits >= 1


class CountingTimer(StageTimer):
    """A timer whose sums are a slow read, add and write (as a dict update is, only longer):
    calls that interleave lose updates unless the caller serialises them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def add(self, stage: str, seconds: float) -> None:
        calls = self.calls.get(stage, 0)
        time.sleep(0.002)
        self.calls[stage] = calls + 1
        super().add(stage, seconds)


def test_timed_segmenter_counts_every_call_from_every_thread() -> None:
    timer = CountingTimer()
    segmenter = TimedSegmenter(SlowCounting(delay_s=0.0), timer)
    prompts = DecodePrompts.of(boxes_xyxy=np.array([[0, 0, 2, 2]], np.float32))
    frame = np.zeros((4, 6, 3), np.uint8)

    def calls() -> None:
        for _ in range(10):
            segmenter.decode(segmenter.encode(frame), prompts)

    _, errors = ask_at_once(calls, 4)
    assert not errors
    assert timer.calls == {"encode": 40, "decode masks": 40}
    assert timer.totals["encode"] > 0.0
