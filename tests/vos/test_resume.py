"""Fault injection: a run killed, interrupted or starved of disk resumes to the same bytes.

The scene has an object that leaves the frame (LOST for several frames) and comes back, so a
resume that did not carry the full tracker state (LOST tracks, velocities, counters) would
write different masks and JSON. Each case compares every ``masks/*.png`` and ``json/*.json``
byte for byte with an uninterrupted run of the same command.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.vos.synthetic import FakeSegmenter, Scene, SceneObject, render
from vos.config import RunConfig
from vos.io.atomic import OutputWriteError
from vos.io.davis_png import read_palette_png
from vos.io.lock import FolderLock, OutputBusyError
from vos.io.sinks import probe_video_frames
from vos.io.sources import open_source
from vos.pipeline import OutputConflictError, run_video
from vos.types import Prompt

REPO = Path(__file__).resolve().parents[2]
NUM_FRAMES = 30
HW = (96, 128)
# Object 1 leaves through the right edge on frames ~11-19 (LOST there) and comes back.
LOST_FRAME = 14


def make_scene() -> Scene:
    leaver = SceneObject(((0, 80, 40), (10, 140, 40), (19, 140, 40), (29, 95, 40)), (16, 16),
                         color=(220, 200, 30))
    stayer = SceneObject(((0, 20, 70), (29, 45, 65)), (14, 18), "ellipse", (40, 200, 40))
    return render([leaver, stayer], NUM_FRAMES, HW)


def write_frames(scene: Scene, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(scene.frames):
        cv2.imwrite(str(folder / f"{t:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def prompts_for(scene: Scene) -> list[Prompt]:
    return [Prompt(mask=scene.gt_masks[0, k], obj_id=k + 1) for k in range(2)]


def run(scene: Scene, folder: Path, out: Path, segmenter: FakeSegmenter | None = None) -> dict:
    with open_source(folder) as source:
        summary = run_video(source, segmenter or FakeSegmenter(scene), prompts_for(scene), out,
                            RunConfig(), progress=False)
    return json.loads((out / "summary.json").read_text()) | {"_obj": summary}


def outputs(out: Path) -> dict[str, bytes]:
    """Every mask PNG and frame JSON of a results folder, by relative path."""
    files = sorted((out / "masks").glob("*.png")) + sorted((out / "json").glob("*.json"))
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def assert_whole_frames(out: Path) -> int:
    """Every frame present reads; no temp file is left visible. Returns the frame count."""
    names = sorted(p.stem for p in (out / "json").glob("*.json"))
    for name in names:
        json.loads((out / "json" / f"{name}.json").read_text())
        read_palette_png(out / "masks" / f"{name}.png")
    return len(names)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scene, Path, Path, dict]:
    """The scene, its frames folder, and the uninterrupted run's folder and summary."""
    root = tmp_path_factory.mktemp("resume")
    scene = make_scene()
    folder = write_frames(scene, root / "frames")
    out = root / "reference"
    summary = run(scene, folder, out)
    lost = json.loads((out / "json" / f"{LOST_FRAME:05d}.json").read_text())["lost_obj_ids"]
    assert lost == [1], "the scene must have object 1 LOST around LOST_FRAME"
    return scene, folder, out, summary


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from tests.vos.synthetic import FakeSegmenter
    from tests.vos.test_resume import make_scene, run

    class Killed(FakeSegmenter):
        def encode(self, image):
            embedding = super().encode(image)
            if embedding.frame_idx == int(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush, mid-frame
            return embedding

    scene = make_scene()
    run(scene, Path(sys.argv[1]), Path(sys.argv[2]), Killed(scene))
""")


@pytest.mark.parametrize("kill_at", [3, LOST_FRAME, 26])
def test_sigkill_then_resume_writes_the_same_bytes(reference, tmp_path: Path, kill_at: int) -> None:
    scene, folder, ref_out, ref_summary = reference
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", KILLER, str(folder), str(out), str(kill_at)],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    survived = assert_whole_frames(out)
    assert survived <= kill_at  # frames queued for the writer die with the process

    resumed = run(scene, folder, out)
    assert resumed["frames_resumed"] == survived
    assert resumed["frames_processed"] == NUM_FRAMES - survived
    assert outputs(out) == outputs(ref_out)
    # The summary covers every frame, not only those of the second run.
    assert resumed["objects"] == ref_summary["objects"]
    assert resumed["frames_tracked_all_runs"] == NUM_FRAMES
    assert probe_video_frames(out / "overlay.mp4") == NUM_FRAMES
    assert not [p for p in out.rglob("*.tmp")]
    assert len(list((out / ".resume").glob("*.npz"))) == 1, "one state file, not one per frame"


class Interrupting(FakeSegmenter):
    """Ctrl-C (KeyboardInterrupt) on the encode of frame ``stop_at``."""

    def __init__(self, scene: Scene, stop_at: int) -> None:
        super().__init__(scene)
        self.stop_at = stop_at

    def encode(self, image: np.ndarray):
        embedding = super().encode(image)
        if embedding.frame_idx == self.stop_at:
            raise KeyboardInterrupt
        return embedding


def test_ctrl_c_twice_then_resume_writes_the_same_bytes(reference, tmp_path: Path) -> None:
    scene, folder, ref_out, ref_summary = reference
    out = tmp_path / "out"
    for stop_at in (LOST_FRAME, LOST_FRAME + 4):  # both while object 1 is LOST
        with pytest.raises(KeyboardInterrupt):
            run(scene, folder, out, Interrupting(scene, stop_at))
        assert assert_whole_frames(out) == stop_at
        assert probe_video_frames(out / "overlay.mp4") == stop_at
    resumed = run(scene, folder, out)
    assert resumed["frames_resumed"] == LOST_FRAME + 4
    assert outputs(out) == outputs(ref_out)
    assert resumed["objects"] == ref_summary["objects"]


class FillsTheDisk(FakeSegmenter):
    """Fills the output's file system on frame ``at``, once the frames before are on disk."""

    def __init__(self, scene: Scene, at: int, filler: Path, out: Path) -> None:
        super().__init__(scene)
        self.at, self.filler, self.out = at, filler, out

    def encode(self, image: np.ndarray):
        embedding = super().encode(image)
        if embedding.frame_idx == self.at:
            # The writer thread may lag the tracker: let it finish the earlier frames.
            marker = self.out / "json" / f"{self.at - 1:05d}.json"
            deadline = time.monotonic() + 30
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            stats = os.statvfs(self.filler.parent)
            with open(self.filler, "wb") as handle:
                try:
                    handle.write(b"\0" * (stats.f_bavail * stats.f_frsize))
                except OSError:
                    pass
        return embedding


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs (needs root); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): the injected failure test covers it")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_stops_cleanly_and_resumes_once_space_is_freed(
        reference, small_disk: Path) -> None:
    scene, folder, ref_out, _ = reference
    out = small_disk / "out"
    filler = small_disk / "filler.bin"
    with pytest.raises(OutputWriteError) as info:
        run(scene, folder, out, FillsTheDisk(scene, 9, filler, out))
    message = str(info.value)
    assert "No space left on device" in message and "\n" not in message
    survived = assert_whole_frames(out)
    assert survived == 9
    # The overlay of the frames done is kept, cut after its last whole fragment.
    assert 0 < probe_video_frames(out / "overlay.mp4") <= survived
    filler.unlink()  # space is freed
    resumed = run(scene, folder, out)
    assert resumed["frames_resumed"] == survived
    assert outputs(out) == outputs(ref_out)


def test_injected_write_failure_stops_cleanly_and_resumes(
        reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same as the full disk, on any machine: the PNG writer fails from frame 9 on."""
    import vos.io.sinks as sinks

    scene, folder, ref_out, _ = reference
    real = sinks.write_palette_png

    def failing(path: Path, index: np.ndarray) -> None:
        if int(Path(path).stem) >= 9:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, index)

    monkeypatch.setattr(sinks, "write_palette_png", failing)
    out = tmp_path / "out"
    with pytest.raises(OutputWriteError, match="No space left on device"):
        run(scene, folder, out)
    assert assert_whole_frames(out) == 9
    assert probe_video_frames(out / "overlay.mp4") >= 9  # ffmpeg itself could still write
    monkeypatch.setattr(sinks, "write_palette_png", real)
    resumed = run(scene, folder, out)
    assert resumed["frames_resumed"] == 9
    assert outputs(out) == outputs(ref_out)


def test_a_second_run_on_a_busy_folder_is_refused_and_writes_nothing(reference,
                                                                      tmp_path: Path) -> None:
    scene, folder, _, _ = reference
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from vos.io.lock import FolderLock\n"
         "with FolderLock(Path(sys.argv[1])):\n print('locked', flush=True); time.sleep(60)",
         str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"):
            run(scene, folder, out)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: the folder is usable at once.
    assert run(scene, folder, out)["complete"]
    with FolderLock(out), FolderLock(out):  # re-entrant within one process
        pass


def test_a_refused_different_run_leaves_the_folder_as_it_was(reference, tmp_path: Path) -> None:
    scene, folder, ref_out, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = [Prompt(box_xyxy=np.array([1, 1, 20, 20], np.float32))]
    with open_source(folder) as source, pytest.raises(OutputConflictError, match="different run"):
        run_video(source, FakeSegmenter(scene), other, out, RunConfig(), progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (out / "run.json").write_text("")
    with open_source(folder) as source, pytest.raises(OutputConflictError, match=r"run\.json"):
        run_video(source, FakeSegmenter(scene), prompts_for(scene), out, RunConfig(),
                  progress=False)


def test_states_saved_every_few_frames_resume_to_the_same_bytes(
        reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big state (many objects) is saved every k frames; the frames after it are redone."""
    import vos.pipeline as pipeline
    from vos.io.resume_state import estimated_state_bytes

    scene, folder, ref_out, ref_summary = reference
    from vos.types import TrackerState

    # A budget of a third of this scene's state per frame: a state every 3 frames.
    two_tracks = TrackerState(image_hw=HW)
    two_tracks.tracks = {1: None, 2: None}  # type: ignore[dict-item]
    monkeypatch.setattr(pipeline, "STATE_BYTES_PER_FRAME",
                        -(-estimated_state_bytes(two_tracks) // 3))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(scene, folder, out, Interrupting(scene, 17))
    saved = sorted(int(p.stem) for p in (out / ".resume").glob("*.npz"))
    assert saved == [15], saved  # frames 0, 3, ..., 15 carried a state; only the newest is kept
    resumed = run(scene, folder, out)
    assert resumed["frames_resumed"] == 16  # frame 16 is tracked again from the state of 15
    assert outputs(out) == outputs(ref_out)
    assert resumed["objects"] == ref_summary["objects"]
