"""EncodeAhead: embeddings computed ahead on a worker thread, handed out once, in order."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from repvit_sam.segmenter import DecodePrompts
from vos.encode_ahead import EncodeAhead
from vos.io.sources import FrameSource, SourceInfo


class FakeSegmenter:
    """Encodes a frame to (its first pixel value, the encoding thread's name)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.encoded: list[int] = []
        self.lock = threading.Lock()

    def encode(self, image: np.ndarray) -> tuple[int, str]:
        time.sleep(self.delay_s)
        with self.lock:
            self.encoded.append(int(image[0, 0, 0]))
        return int(image[0, 0, 0]), threading.current_thread().name

    def decode(self, embedding: Any, prompts: DecodePrompts) -> tuple[Any, DecodePrompts]:
        return embedding, prompts


def frames(count: int) -> list[np.ndarray]:
    return [np.full((4, 6, 3), i, np.uint8) for i in range(count)]


def test_every_frame_is_encoded_ahead_once_on_the_worker() -> None:
    fake = FakeSegmenter()
    with EncodeAhead(fake) as ahead:
        got = [ahead.encode(frame) for frame in ahead.frames(frames(5))]
    assert [value for value, _ in got] == [0, 1, 2, 3, 4]
    assert all(name.startswith("encode-ahead") for _, name in got)
    assert sorted(fake.encoded) == [0, 1, 2, 3, 4]
    assert (ahead.hits, ahead.misses) == (5, 0)


def test_next_frame_encodes_while_the_current_one_is_processed() -> None:
    fake = FakeSegmenter(delay_s=0.05)
    with EncodeAhead(fake) as ahead:
        stream = ahead.frames(frames(3))
        first = next(stream)
        assert ahead.encode(first)[0] == 0
        time.sleep(0.15)  # "decoding" frame 0: frame 1 is encoded meanwhile
        assert 1 in fake.encoded
        start = time.perf_counter()
        assert ahead.encode(next(stream))[0] == 1
        assert time.perf_counter() - start < 0.04


def test_skipped_frames_are_dropped_and_unknown_frames_encoded_now() -> None:
    fake = FakeSegmenter()
    with EncodeAhead(fake) as ahead:
        stream = list(ahead.frames(frames(4)))
        # Frames 0 and 1 are never asked for (nothing tracked yet); asking for frame 2 drops them.
        assert ahead.encode(stream[2])[0] == 2
        assert ahead.encode(stream[0])[0] == 0  # no longer pending: computed on the caller
        assert ahead.misses == 1
        outsider = np.full((4, 6, 3), 9, np.uint8)
        value, thread = ahead.encode(outsider)
        assert value == 9 and thread == threading.current_thread().name
        prompts = DecodePrompts.of(boxes_xyxy=np.zeros((1, 4)))
        assert ahead.decode("emb", prompts) == ("emb", prompts)  # on the caller, unchanged


def test_pending_frames_are_bounded() -> None:
    fake = FakeSegmenter()
    with EncodeAhead(fake, max_pending=2) as ahead:
        read = list(ahead.frames(frames(6)))
        assert len(ahead._pending) == 2
        assert ahead.encode(read[5])[0] == 5
    with pytest.raises(ValueError):
        EncodeAhead(fake, max_pending=1)


def test_source_view_keeps_info_and_streams_through_the_worker() -> None:
    class Source(FrameSource):
        def __init__(self) -> None:
            self.info = SourceInfo("fake", (4, 6), 3, 25.0)

        def frames(self, start: int = 0, stop: int | None = None):  # type: ignore[override]
            yield from frames(3)[start:stop]

    fake = FakeSegmenter()
    with EncodeAhead(fake) as ahead:
        view = ahead.source(Source())
        assert view.info.name == "fake"
        assert [ahead.encode(f)[0] for f in view.frames(1, 3)] == [1, 2]
