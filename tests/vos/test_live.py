"""Live mode: newest-frame capture, dropping, latency, outputs, mouse and key handling.

A generated clip (a bright square sliding over a dark background) is played as a camera at
its own 20 fps while a fake segmenter takes 0.1 s per encode, so about every other frame
must be dropped. No test opens a window: the window is replaced by a scripted fake.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from repvit_sam.segmenter import DecodePrompts, MaskPrediction, SegmenterBase
from tests.vos.synthetic import FakeEmbedding
from vos import live
from vos.cli import webcam
from vos.io.sinks import OVERLAY_NAME, ResultSink
from vos.io.sources import SourceError, SourceInfo
from vos.live import (
    Action,
    CapturedFrame,
    FileCamera,
    FrameGrabber,
    LiveApp,
    LiveError,
    LiveSession,
    PromptDrawer,
    key_to_action,
)
from vos.types import Prompt

H, W, NUM_FRAMES, FPS, SIDE = 96, 128, 40, 20.0, 16


def square_x(t: int) -> int:
    """Left edge of the square on frame t (2.4 px per frame, left to right)."""
    return 8 + round(t * 2.4)


def render(t: int) -> np.ndarray:
    frame = np.full((H, W, 3), 20, np.uint8)
    x = square_x(t)
    frame[40 : 40 + SIDE, x : x + SIDE] = 230
    return frame


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("live") / "square.avi"
    # MJPG in AVI is in every OpenCV build and near-lossless on flat shapes.
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert writer.isOpened()
    for t in range(NUM_FRAMES):
        writer.write(cv2.cvtColor(render(t), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


class BrightSegmenter(SegmenterBase):
    """Segments the bright blobs a prompt touches; ``encode`` sleeps like a slow model."""

    def __init__(self, encode_s: float = 0.0) -> None:
        self.encode_s = encode_s
        self.encodes = 0

    def encode(self, image: np.ndarray) -> FakeEmbedding:
        time.sleep(self.encode_s)
        self.encodes += 1
        return FakeEmbedding(image)

    def decode_prompts(self, embedding: FakeEmbedding, prompts: DecodePrompts) -> MaskPrediction:
        boxes_xyxy, points_xy, point_labels = prompts.boxes_xyxy, prompts.points_xy, prompts.point_labels
        multimask_output = prompts.multimask_output
        bright = embedding.image.max(-1) > 128
        _, blobs = cv2.connectedComponents(bright.astype(np.uint8))
        n = len(boxes_xyxy) if boxes_xyxy is not None else len(points_xy)
        masks = []
        for i in range(n):
            touched = np.zeros_like(bright)
            if boxes_xyxy is not None:
                x0, y0, x1, y1 = np.round(np.asarray(boxes_xyxy[i])).astype(int)
                touched[max(y0, 0) : y1, max(x0, 0) : x1] = True
            if points_xy is not None:
                for (x, y), label in zip(points_xy[i], point_labels[i], strict=True):
                    if label == 1:
                        touched[int(y), int(x)] = True
            ids = np.unique(blobs[touched & bright])
            masks.append(np.isin(blobs, ids[ids > 0]))
        c = 3 if multimask_output else 1
        stacked = torch.from_numpy(np.stack(masks))[:, None].repeat(1, c, 1, 1)
        return MaskPrediction(stacked, torch.full((n, c), 0.9), torch.zeros(n, c, 256, 256))


def start_box(t: int = 0) -> np.ndarray:
    x = square_x(t)
    return np.array([x - 2, 38, x + SIDE + 2, 40 + SIDE + 2], np.float32)


# ---------------------------------------------------------------------------- keys, mouse
@pytest.mark.parametrize(
    ("key", "action"),
    [(ord("q"), Action.QUIT), (27, Action.QUIT), (ord("Q"), Action.QUIT),
     (ord("r"), Action.RESET), (ord("d"), Action.REMOVE_LAST), (ord("x"), Action.REMOVE_LAST),
     (ord("p"), Action.PAUSE), (ord("s"), Action.SAVE), (13, Action.ADD_POINTS),
     (0x10000 | ord("r"), Action.RESET), (-1, None), (ord("z"), None)],
)
def test_key_to_action(key: int, action: Action | None) -> None:
    assert key_to_action(key) is action


def test_drag_gives_a_box_and_click_gives_a_point() -> None:
    drawer = PromptDrawer((H, W))
    drawer.on_mouse(cv2.EVENT_LBUTTONDOWN, 10, 20, 0)
    drawer.on_mouse(cv2.EVENT_MOUSEMOVE, 30, 50, cv2.EVENT_FLAG_LBUTTON)
    np.testing.assert_array_equal(drawer.drag_box, [10, 20, 31, 51])
    drawer.on_mouse(cv2.EVENT_LBUTTONUP, 40, 60, 0)
    assert drawer.drag_box is None
    drawer.on_mouse(cv2.EVENT_LBUTTONDOWN, 50, 50, 0)
    drawer.on_mouse(cv2.EVENT_LBUTTONUP, 52, 51, 0)  # moved 2 px: a click, not a drag
    box, point = drawer.take()
    np.testing.assert_array_equal(box.box_xyxy, [10, 20, 41, 61])
    assert box.points_xy is None
    np.testing.assert_array_equal(point.points_xy, [[52, 51]])
    np.testing.assert_array_equal(point.point_labels, [1])
    assert drawer.take() == []


def test_drag_right_to_left_is_clipped_to_the_frame() -> None:
    drawer = PromptDrawer((H, W))
    drawer.on_mouse(cv2.EVENT_LBUTTONDOWN, 500, -7, 0)
    drawer.on_mouse(cv2.EVENT_LBUTTONUP, 100, 30, 0)
    (prompt,) = drawer.take()
    np.testing.assert_array_equal(prompt.box_xyxy, [100, 0, W, 31])


def test_shift_and_right_clicks_collect_points_until_enter() -> None:
    drawer = PromptDrawer((H, W))
    assert not drawer.commit_points()
    drawer.on_mouse(cv2.EVENT_RBUTTONDOWN, 5, 5, 0)
    assert not drawer.commit_points()  # negatives alone make no object
    drawer.on_mouse(cv2.EVENT_LBUTTONDOWN, 20, 30, cv2.EVENT_FLAG_SHIFTKEY)
    drawer.on_mouse(cv2.EVENT_LBUTTONUP, 20, 30, cv2.EVENT_FLAG_SHIFTKEY)
    assert drawer.take() == []
    assert drawer.points == [(5, 5, 0), (20, 30, 1)]
    assert drawer.commit_points()
    (prompt,) = drawer.take()
    np.testing.assert_array_equal(prompt.points_xy, [[5, 5], [20, 30]])
    np.testing.assert_array_equal(prompt.point_labels, [0, 1])
    assert prompt.box_xyxy is None and drawer.points == []


# ---------------------------------------------------------------------------- capture
def test_grabber_keeps_only_the_newest_frame() -> None:
    info = SourceInfo("synthetic", (H, W), 30, 200.0)
    frames = [render(t) for t in range(30)]
    read = []
    with FrameGrabber(frames, info=info, pace_fps=200.0) as grabber:
        while (captured := grabber.read(timeout=2.0)) is not None:
            read.append(captured)
            time.sleep(0.03)  # a consumer 6x slower than the camera
    assert grabber.finished
    indices = [c.index for c in read]
    assert indices == sorted(indices) and indices[-1] == 29
    assert grabber.frames_dropped > 10
    assert grabber.frames_captured == 30 == grabber.frames_read + grabber.frames_dropped
    np.testing.assert_array_equal(read[-1].image, frames[29])


def test_grabber_without_dropping_hands_out_every_frame() -> None:
    info = SourceInfo("synthetic", (H, W), 10, 25.0)
    with FrameGrabber([render(t) for t in range(10)], info=info, drop_stale=False) as grabber:
        indices = []
        while (captured := grabber.read(timeout=2.0)) is not None:
            indices.append(captured.index)
            time.sleep(0.005)
    assert indices == list(range(10))
    assert grabber.frames_dropped == 0


def test_grabber_reraises_reader_errors_and_close_stops_it() -> None:
    def broken() -> Iterator[np.ndarray]:
        yield render(0)
        raise SourceError("camera unplugged")

    info = SourceInfo("broken", (H, W), None, 25.0)
    with FrameGrabber(broken(), info=info, drop_stale=False) as grabber:
        assert grabber.read(timeout=2.0) is not None
        with pytest.raises(SourceError, match="unplugged"):
            grabber.read(timeout=2.0)

    endless = FrameGrabber(itertools.repeat(render(0)), info=info).start()
    assert endless.read(timeout=2.0) is not None
    endless.close()
    assert not endless._thread.is_alive()
    assert endless.frames_captured == endless.frames_read + endless.frames_dropped


# ---------------------------------------------------------------------------- headless loop
def test_realtime_file_camera_drops_frames_and_bounds_latency(clip: Path, tmp_path: Path) -> None:
    segmenter = BrightSegmenter(encode_s=0.1)  # half the speed of the 20 fps clip
    session = LiveSession(segmenter)
    out = tmp_path / "rec"
    with FileCamera(clip) as camera, ResultSink(out, (H, W), FPS) as sink:
        assert camera.info.fps == pytest.approx(FPS)
        app = LiveApp(camera, session, recorder=sink, init_prompts=[Prompt(box_xyxy=start_box())])
        stats = app.run()
    assert stats.frames_captured == NUM_FRAMES
    assert stats.frames_processed + stats.frames_dropped == NUM_FRAMES
    assert stats.frames_dropped >= 10, stats.as_dict()
    assert stats.frames_processed >= 10, stats.as_dict()
    # Newest-frame capture bounds latency by about one model period plus one frame period
    # (0.15 s here); a FIFO would end near (40 * 0.1 - 2) s = 2 s behind.
    period = 1 / FPS
    assert stats.latency_ms(50) < 1000 * 5 * period, stats.as_dict()
    assert stats.latency_ms(95) < 1000 * 8 * period, stats.as_dict()
    assert 0 < stats.fps <= FPS + 1e-6

    result = session.result
    assert result is not None and result.obj_ids.tolist() == [1]
    last_x = square_x(session.frame.index)
    np.testing.assert_allclose(result.boxes_xyxy[0], [last_x, 40, last_x + SIDE, 40 + SIDE],
                               atol=2)

    pngs = sorted((out / "masks").glob("*.png"))
    assert len(pngs) == stats.frames_processed == len(list((out / "json").glob("*.json")))
    assert pngs[-1].stem == f"{NUM_FRAMES - 1:05d}"  # named by capture index, as video mode
    cap = cv2.VideoCapture(str(out / OVERLAY_NAME))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    # Timed by capture time: dropped frames hold the previous overlay, so the overlay lasts
    # about as long as the capture did (within a frame or two of the pacing thread's jitter).
    assert stats.frames_processed < count and abs(count - (session.frame.index + 1)) <= 3


def test_no_realtime_processes_every_frame(clip: Path) -> None:
    session = LiveSession(BrightSegmenter())
    with FileCamera(clip, realtime=False) as camera:
        stats = LiveApp(camera, session, init_prompts=[Prompt(box_xyxy=start_box())]).run()
    assert stats.frames_processed == NUM_FRAMES and stats.frames_dropped == 0
    assert session.result.obj_ids.tolist() == [1]


def test_max_frames_stops_early(clip: Path) -> None:
    with FileCamera(clip, realtime=False) as camera:
        stats = LiveApp(camera, LiveSession(BrightSegmenter()), max_frames=3).run()
    assert stats.frames_processed == 3


# ---------------------------------------------------------------------------- window loop
class ScriptedWindow:
    """Stands in for the OpenCV window: replays mouse gestures and keys by show() call."""

    def __init__(self, script: dict[int, list]) -> None:
        self.script = script
        self.shown: list[np.ndarray] = []
        self.drawer: PromptDrawer | None = None

    def show(self, image: np.ndarray, wait_ms: int) -> int:
        self.shown.append(image)
        key = -1
        for step in self.script.get(len(self.shown), []):
            if isinstance(step, int):
                key = step
            else:
                self.drawer.on_mouse(*step)
        return key

    def close(self) -> None:
        pass


def in_memory_camera(num_frames: int) -> FrameGrabber:
    info = SourceInfo("memory", (H, W), num_frames, FPS)
    return FrameGrabber([render(t) for t in range(num_frames)], info=info, drop_stale=False)


def test_window_loop_applies_mouse_boxes_and_keys(tmp_path: Path) -> None:
    x = square_x(1)
    drag = [(cv2.EVENT_LBUTTONDOWN, x - 3, 37, 0), (cv2.EVENT_MOUSEMOVE, x + 10, 50, 1),
            (cv2.EVENT_LBUTTONUP, x + SIDE + 2, 40 + SIDE + 2, 0)]
    window = ScriptedWindow({
        2: drag,                 # shown frame 1: draw a box around the square
        5: [ord("s")],           # save frame 3's masks
        6: [ord("d")],           # remove the object again
        8: drag[:1] + drag[2:],  # a new object on frame 5 ...
        10: [ord("r")],          # ... reset on frame 6
        12: [ord("q")],
    })
    session = LiveSession(BrightSegmenter())
    with in_memory_camera(20) as camera:
        app = LiveApp(camera, session, window=window, snapshot_dir=tmp_path / "snap")
        window.drawer = app.drawer
        counts = []
        original = session.process

        def process(captured: CapturedFrame, prompts=()):
            counts.append(len(session.tracker.tracks))
            return original(captured, prompts)

        session.process = process
        stats = app.run()
    assert app.quit and stats.frames_processed < 20
    # show() calls: one per frame, plus an immediate redraw after a prompt was added.
    assert counts[:3] == [0, 0, 1]              # object 1 tracked from frame 2 on
    assert 1 in counts and counts[-1] == 0      # removed, re-added, reset
    assert session.tracker.tracks == {}
    assert session.tracker.state.next_obj_id == 1  # reset restarts ids
    assert (tmp_path / "snap" / "masks" / "00003.png").is_file()
    assert app.snapshots_saved == 1
    overlay = window.shown[2]  # the redraw right after the box: the square is coloured
    assert not np.array_equal(overlay[48, x + 8], render(1)[48, x + 8])


def test_remove_last_then_reset_keeps_the_frame_current() -> None:
    frame = render(0)
    frame[5:15, 100:110] = 230  # a second blob
    session = LiveSession(BrightSegmenter())
    captured = CapturedFrame(0, frame, time.perf_counter())
    session.process(captured, [Prompt(box_xyxy=start_box())])
    assert session.add_object(Prompt(points_xy=np.array([[104.0, 9.0]]))) == 2
    with in_memory_camera(1) as camera:
        app = LiveApp(camera, session)
        assert app.handle_key(ord("d")) is Action.REMOVE_LAST
        assert sorted(session.tracker.tracks) == [1]
        app.handle_key(ord("x"))
        assert session.tracker.tracks == {} and session.remove_last() is None
        session.add_object(Prompt(box_xyxy=start_box()))
        app.handle_key(ord("r"))
        assert session.tracker.tracks == {} and len(session.result) == 0
        # The frame is still current after a reset: a prompt applies at once.
        assert session.add_object(Prompt(box_xyxy=start_box())) == 1
        app.handle_key(ord("p"))
        assert app.paused
        app.handle_key(ord("p"))
        assert not app.paused
        app.handle_key(27)
        assert app.quit


def test_window_needs_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(LiveError, match="--no-window"):
        live.LiveWindow()


# ---------------------------------------------------------------------------- CLI
def _webcam_args(*extra: str):
    from vos.cli import build_parser

    return build_parser().parse_args(["webcam", *extra])


def test_cli_headless_writes_outputs_and_a_summary(clip: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = _webcam_args("--camera", str(clip), "--no-window", "--output", str(out),
                        "--init-box", ",".join(str(int(v)) for v in start_box()),
                        "--max-frames", "6")
    code = webcam.run(args, segmenter_factory=lambda cfg: BrightSegmenter(encode_s=0.02))
    assert code == 0
    printed = capsys.readouterr().out
    assert "6 processed" in printed and "latency" in printed and "median" in printed
    assert len(list((out / "masks").glob("*.png"))) == 6
    assert (out / OVERLAY_NAME).is_file()  # default config: io.save_video=true
    assert (out / "live_summary.json").is_file() and (out / "resolved_config.yaml").is_file()
    # A second run into the same folder would mix two sessions' frames.
    with pytest.raises(LiveError, match="earlier run"):
        webcam.run(args, segmenter_factory=lambda cfg: BrightSegmenter())


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--camera", "no/such/clip.mp4", "--no-window"], "no such file"),
     (["--no-window", "--init-box", "0,0,500,500"], "outside the 128x96 frame"),
     (["--no-window", "--max-frames", "0"], "--max-frames 0"),
     ([], "no display")],
)
def test_cli_user_errors_are_one_line(argv: list[str], message: str, clip: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from vos.run import main

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.chdir(clip.parent)
    if "--camera" not in argv:
        argv = ["--camera", str(clip), *argv]
    assert main(["webcam", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.slow
def test_cli_real_model_headless(clip: Path, tmp_path: Path) -> None:
    """End to end with the random-init RepViT-SAM (synthetic checkpoint), 2 frames."""
    from tests.conftest import SHARED_DIR
    from tests.repvit_sam.conformance_fill import write_conformance_checkpoint
    from vos.run import main

    keys = SHARED_DIR / "conformance" / "keys.tsv"
    if not keys.is_file():
        pytest.skip(f"{keys} not found")
    checkpoint = write_conformance_checkpoint(keys, tmp_path / "synthetic.pt")
    out = tmp_path / "real"
    box = ",".join(str(int(v)) for v in start_box())
    assert main(["webcam", "--camera", str(clip), "--no-window", "--no-realtime",
                 "--output", str(out), "--init-box", box, "--max-frames", "2",
                 "--checkpoint", str(checkpoint)]) == 0
    assert len(list((out / "json").glob("*.json"))) == 2


def test_threads_are_not_leaked() -> None:
    names = [t.name for t in threading.enumerate()]
    assert names.count("live-capture") == 0, names
