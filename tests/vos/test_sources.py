"""Video readers against ffmpeg's own decode, on the kinds of file that separate readers.

Each kind is made at test time with the imageio-ffmpeg binary (tests/vos/video_kinds.py,
12 frames at 96x64). The reference is ``ffmpeg -i f -f rawvideo -pix_fmt rgb24 -``.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.vos.video_kinds import KINDS, ffmpeg_decode, has_encoder, make_kind
from vos.io.sources import SourceError, open_source
from vos.video_predictor import FrameReader

READERS = [
    pytest.param(name, marks=pytest.mark.skipif(
        importlib.util.find_spec(module) is None, reason=f"{module} is not installed"))
    for name, module in (("pyav", "av"), ("decord", "decord"), ("opencv", "cv2"))
]

# Readers that convert YUV to RGB with their own code (not ffmpeg's swscale path) differ on
# 10-bit input only: measured mean |diff| 1.47 (decord 0.6.0) and 1.79 (OpenCV 5.1) grey
# levels, largest at the chroma edges of the moving square; every 8-bit kind is exact here.
OWN_CONVERSION_MEAN_DIFF_MAX = {("decord", "10bit"): 2.5, ("opencv", "10bit"): 2.5}
# "Exact here" is one FFmpeg build's SIMD path against another's: ffmpeg's own rgb24
# conversion differs between its SIMD and C paths (`-cpuflags 0` against the default on this
# AVX-512 machine, every kind: mean |diff| up to 0.95, max 3 grey levels), and PyAV's bundled
# libraries may take another path than the imageio-ffmpeg binary on another CPU. So content
# is held to that bound with margin, and frame identity separately (nearest reference frame).
SIMD_PATH_MEAN_DIFF_MAX = 1.5


def assert_same_frames(frames: np.ndarray, expected: np.ndarray, mean_max: float) -> None:
    """Each frame matches its own reference frame within ``mean_max`` and is nearer to it
    than to any other reference frame (no frame shifted, dropped or repeated)."""
    assert frames.shape == expected.shape
    diffs = np.abs(frames[:, None].astype(np.int16) - expected[None].astype(np.int16))
    mean = diffs.reshape(len(frames), len(expected), -1).mean(axis=2)
    own = np.diag(mean)
    assert float(own.max()) <= mean_max, f"mean |diff| {own.max():.3f} > {mean_max}"
    distinct = [i for i in range(len(expected))
                if (np.delete(mean[i], i) > own[i]).all()
                or any(np.array_equal(expected[i], expected[j])
                       for j in range(len(expected)) if j != i)]
    assert len(distinct) == len(expected), "a frame is nearer another reference frame"


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray]]:
    folder = tmp_path_factory.mktemp("video_kinds")
    kinds = [k for k in KINDS if k != "vp9" or has_encoder("libvpx-vp9")]
    made = {}
    for kind in kinds:
        path = make_kind(kind, folder)
        made[kind] = (path, ffmpeg_decode(path))
    return made


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", KINDS)
def test_reader_matches_ffmpeg(videos: dict[str, tuple[Path, np.ndarray]], kind: str,
                               reader: str) -> None:
    if kind not in videos:
        pytest.skip(f"the bundled ffmpeg cannot write {kind}")
    path, expected = videos[kind]
    with open_source(path, backend=reader) as source:
        frames = np.stack(list(source.frames()))
        assert source.info.num_frames == len(expected)
        assert source.info.image_hw == expected.shape[1:3]
        assert source.info.reader == reader
    assert_same_frames(frames, expected, OWN_CONVERSION_MEAN_DIFF_MAX.get(
        (reader, kind), SIMD_PATH_MEAN_DIFF_MAX))


def test_trimmed_mp4_is_the_case_that_separates_readers(
        videos: dict[str, tuple[Path, np.ndarray]]) -> None:
    """The edit list hides 8 packets that the stream header still counts (issue 23)."""
    import av

    path, expected = videos["trimmed"]
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 20
    assert len(expected) == 12


def test_pyav_is_the_default(videos: dict[str, tuple[Path, np.ndarray]]) -> None:
    pytest.importorskip("av")
    with open_source(videos["plain"][0]) as source:
        assert source.info.reader == "pyav"


@pytest.mark.parametrize("kind", ["trimmed", "vfr", "rotated", "mjpeg_avi", "vp9"])
def test_pyav_random_access_equals_forward_reads(
        videos: dict[str, tuple[Path, np.ndarray]], kind: str) -> None:
    """Seeks (keyframe, then decode forward) land on the frame the forward read gives."""
    pytest.importorskip("av")
    if kind not in videos:
        pytest.skip(f"the bundled ffmpeg cannot write {kind}")
    path, expected = videos[kind]
    n = len(expected)
    with open_source(path, backend="pyav") as source:
        for start, stop in [(5, 8), (n - 1, n), (0, 3), (n - 5, n + 3), (1, 2)]:
            got = np.stack(list(source.frames(start, stop)))
            forward = np.stack(list(source.frames(0, n)))[start:stop]
            np.testing.assert_array_equal(got, forward, err_msg=f"{start}:{stop}")
            assert_same_frames(got, expected[start:stop], SIMD_PATH_MEAN_DIFF_MAX)


@pytest.mark.parametrize("reader", READERS)
def test_predictor_backward_chunks_equal_forward(
        videos: dict[str, tuple[Path, np.ndarray]], reader: str) -> None:
    """The video predictor's reader, walked last frame to first in cached chunks."""
    path, expected = videos["trimmed"]
    with open_source(path, backend=reader) as source:
        frames = FrameReader(source, cache_frames=4)
        backward = [frames[idx] for idx in range(len(frames) - 1, -1, -1)][::-1]
        forward = [frames[idx] for idx in range(len(frames))]
    assert len(backward) == len(expected)
    for idx, (back, fwd) in enumerate(zip(backward, forward, strict=True)):
        np.testing.assert_array_equal(back, fwd, err_msg=f"frame {idx}")
    assert_same_frames(np.stack(backward), expected, OWN_CONVERSION_MEAN_DIFF_MAX.get(
        (reader, "trimmed"), SIMD_PATH_MEAN_DIFF_MAX))


def test_decord_count_checked_against_the_container(
        videos: dict[str, tuple[Path, np.ndarray]], caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("decord")
    pytest.importorskip("av")
    with caplog.at_level(logging.WARNING, logger="vos.io.sources"), \
            open_source(videos["trimmed"][0], backend="decord") as source:
        assert source.info.num_frames == 12
    lines = [r.getMessage() for r in caplog.records if "decord lists" in r.getMessage()]
    assert lines == [f"{videos['trimmed'][0]}: decord lists 20 frames where the file has 12; "
                     "reading 12"]


@pytest.mark.parametrize(("reader", "module", "hint"), [
    ("decord", "decord", "--reader opencv"),
    ("pyav", "av", "--reader decord or --reader opencv"),
])
def test_missing_reader_names_the_real_flag(videos: dict[str, tuple[Path, np.ndarray]],
                                            monkeypatch: pytest.MonkeyPatch, reader: str,
                                            module: str, hint: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SourceError, match=f"not installed; pip install .*or use {hint}\\)$"):
        open_source(videos["plain"][0], backend=reader)


@pytest.mark.parametrize("reader", READERS)
def test_not_a_video_is_one_line_naming_the_file(tmp_path: Path, reader: str) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n")
    with pytest.raises(SourceError) as info:
        open_source(path, backend=reader)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_unknown_reader_is_refused(videos: dict[str, tuple[Path, np.ndarray]]) -> None:
    with pytest.raises(SourceError, match="reader: expected one of auto, pyav, decord, opencv"):
        open_source(videos["plain"][0], backend="ffmpeg")


def test_probe_frame_size_reads_headers_only(tmp_path: Path) -> None:
    """An upload's size is known before a frame is decoded (an 8K frame is 95 MiB as RGB)."""
    import cv2

    from vos.io.sources import probe_frame_size

    path = tmp_path / "wide.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (320, 96))
    for _ in range(2):
        writer.write(np.zeros((96, 320, 3), np.uint8))
    writer.release()
    assert probe_frame_size(path) == (96, 320)
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 64)
    assert probe_frame_size(tmp_path / "junk.mp4") is None
