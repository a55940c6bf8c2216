"""``run_video`` in both directions: backward exactness, the merge rule, and exact resume.

The scene of ``test_resume`` (object 1 leaves the frame and is LOST on frames ~11-19, then
comes back), prompted late: the backward pass carries LOST tracks too. Every comparison is
byte for byte on the written PNGs and JSON, or pixel for pixel against the tracker itself.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.vos.synthetic import FakeSegmenter, Scene
from tests.vos.test_resume import NUM_FRAMES, REPO, make_scene, outputs, write_frames
from vos.config import RunConfig
from vos.io.davis_png import read_palette_png
from vos.io.sinks import decode_rle
from vos.io.sources import open_source
from vos.passes import PassPlan, merged, selected
from vos.pipeline import OutputConflictError, run_video
from vos.tracker import VideoTracker
from vos.types import FrameResult, Prompt, PromptError

INIT_FRAME = 22  # object 1 is back in view; frames 11..19 have it LOST in the backward pass


def box_of(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def late_prompts(scene: Scene) -> dict[int, list[Prompt]]:
    """Object 2 by its box on frame 6, object 1 by its mask on frame 22, a box again on 26."""
    return {6: [Prompt(box_xyxy=box_of(scene.gt_masks[6, 1]), obj_id=2)],
            INIT_FRAME: [Prompt(mask=scene.gt_masks[INIT_FRAME, 0], obj_id=1)],
            26: [Prompt(box_xyxy=box_of(scene.gt_masks[26, 1]), obj_id=2)]}


def run_dir(scene: Scene, folder: Path, out: Path, direction: str, *,
            segmenter: FakeSegmenter | None = None, init: bool = False) -> dict:
    """One run: the late prompts (or the two masks on INIT_FRAME with ``init``)."""
    prompts = [Prompt(mask=scene.gt_masks[INIT_FRAME, k], obj_id=k + 1) for k in range(2)]
    with open_source(folder) as source:
        run_video(source, segmenter or FakeSegmenter(scene), prompts if init else [], out,
                  RunConfig(), init_frame=INIT_FRAME if init else 0,
                  frame_prompts=None if init else late_prompts(scene), direction=direction,
                  progress=False)
    return json.loads((out / "summary.json").read_text())


def records(out: Path) -> list[dict]:
    return [json.loads((out / "json" / f"{t:05d}.json").read_text()) for t in range(NUM_FRAMES)]


@pytest.fixture(scope="module")
def scene_and_frames(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scene, Path]:
    scene = make_scene()
    return scene, write_frames(scene, tmp_path_factory.mktemp("directions") / "frames")


@pytest.fixture(scope="module")
def references(scene_and_frames, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted runs of the late prompts in each direction."""
    scene, folder = scene_and_frames
    root = tmp_path_factory.mktemp("references")
    for direction in ("forward", "backward", "both"):
        run_dir(scene, folder, root / direction, direction)
    return {d: root / d for d in ("forward", "backward", "both")}


# ---------------------------------------------------------------------- semantics
def test_backward_equals_forward_tracking_of_the_reversed_frames(scene_and_frames,
                                                                 tmp_path: Path) -> None:
    scene, folder = scene_and_frames
    out = tmp_path / "backward"
    summary = run_dir(scene, folder, out, "backward", init=True)
    assert summary["complete"] and summary["frames_backward"] == INIT_FRAME + 1

    tracker = VideoTracker(FakeSegmenter(scene))
    prompts = [Prompt(mask=scene.gt_masks[INIT_FRAME, k], obj_id=k + 1) for k in range(2)]
    reversed_frames = [scene.frames[t] for t in range(INIT_FRAME, -1, -1)]
    expected = list(tracker.track(reversed_frames, {0: prompts}))
    assert any(r.lost_obj_ids.tolist() == [1] for r in expected), "LOST in the backward pass"
    for u, result in enumerate(expected):
        t = INIT_FRAME - u
        index = read_palette_png(out / "masks" / f"{t:05d}.png")
        np.testing.assert_array_equal(index, result.to_index_mask(), err_msg=f"frame {t}")
        record = json.loads((out / "json" / f"{t:05d}.json").read_text())
        assert [o["obj_id"] for o in record["objects"]] == result.obj_ids.tolist()
        assert record["lost_obj_ids"] == result.lost_obj_ids.tolist()
        for obj, mask, box in zip(record["objects"], result.masks, result.boxes_xyxy, strict=True):
            np.testing.assert_array_equal(decode_rle(obj["segmentation"]), mask)
            assert obj["box_xyxy"] == [round(float(v), 2) for v in box]
    for t in range(INIT_FRAME + 1, NUM_FRAMES):  # after the latest prompt: nothing
        assert not read_palette_png(out / "masks" / f"{t:05d}.png").any()
    assert not (out / ".backward").exists(), "the backward results go once the run is complete"


def test_both_takes_forward_results_from_the_first_prompt_and_backward_before(
        scene_and_frames, references: dict[str, Path]) -> None:
    scene, _ = scene_and_frames
    first = {2: 6, 1: INIT_FRAME}
    forward, backward, both = (records(references[d]) for d in ("forward", "backward", "both"))
    for t in range(NUM_FRAMES):
        want = sorted(
            [o for o in forward[t]["objects"] if t >= first[o["obj_id"]]]
            + [o for o in backward[t]["objects"] if t < first[o["obj_id"]]],
            key=lambda o: o["obj_id"])
        assert both[t]["objects"] == want, f"frame {t}"
        lost = [i for i in forward[t]["lost_obj_ids"] if t >= first[i]] + \
               [i for i in backward[t]["lost_obj_ids"] if t < first[i]]
        assert both[t]["lost_obj_ids"] == sorted(lost)
    # Every frame has both objects where the scene shows them (frames before the prompts too).
    index = read_palette_png(references["both"] / "masks" / "00000.png")
    for k in range(2):
        np.testing.assert_array_equal(index == k + 1, scene.gt_masks[0, k])
    # The correction of object 2 on frame 26 replaced its track (the forward run has it).
    assert [o["obj_id"] for o in both[26]["objects"]] == [1, 2]


def test_both_matches_the_video_predictor(scene_and_frames, references: dict[str, Path]) -> None:
    """The CLI's two passes give the masks of ``vos.video_predictor`` (objects entering late)."""
    from vos.video_predictor import VideoPredictor

    scene, folder = scene_and_frames
    predictor = VideoPredictor(FakeSegmenter(scene), RunConfig())
    state = predictor.init_state(folder)
    prompts = late_prompts(scene)
    # Object 1 first, so that the predictor's tracker numbers the objects as their ids. No
    # correction: the predictor refines a click on a tracked object, a prompts file replaces.
    for t in (INIT_FRAME, 6):
        for prompt in prompts[t]:
            if prompt.mask is not None:
                predictor.add_new_mask(state, t, prompt.obj_id, prompt.mask)
            else:
                predictor.add_new_points_or_box(state, t, prompt.obj_id, box=prompt.box_xyxy)
    ours = {}
    for t, ids, logits in predictor.propagate_in_video(state):
        ours[t] = dict(zip(ids, (logits[:, 0] > 0).numpy(), strict=True))
    for t, ids, logits in predictor.propagate_in_video(state, reverse=True):
        ours[t] = dict(zip(ids, (logits[:, 0] > 0).numpy(), strict=True))
    predictor.close_state(state)

    out = references["both"].parent / "no_correction"
    with open_source(folder) as source:
        run_video(source, FakeSegmenter(scene), [], out, RunConfig(),
                  frame_prompts={t: prompts[t] for t in (6, INIT_FRAME)}, direction="both",
                  progress=False)
    for t in range(NUM_FRAMES):
        record = json.loads((out / "json" / f"{t:05d}.json").read_text())
        masks = {o["obj_id"]: decode_rle(o["segmentation"]) for o in record["objects"]}
        for obj_id in (1, 2):
            want = ours[t][obj_id]
            np.testing.assert_array_equal(masks.get(obj_id, np.zeros_like(want)), want,
                                          err_msg=f"frame {t} object {obj_id}")


def test_both_with_every_prompt_on_frame_0_is_forward(scene_and_frames, tmp_path: Path) -> None:
    """Nothing lies before the first prompt: no backward pass, the same bytes and run record."""
    scene, folder = scene_and_frames
    prompts = [Prompt(box_xyxy=box_of(scene.gt_masks[0, k])) for k in range(2)]
    for direction in ("both", "forward"):
        with open_source(folder) as source:
            summary = run_video(source, FakeSegmenter(scene), prompts, tmp_path / direction,
                                RunConfig(), direction=direction, progress=False)
        assert summary.frames_backward == 0
    assert outputs(tmp_path / "both") == outputs(tmp_path / "forward")
    assert (tmp_path / "both" / "run.json").read_bytes() == \
        (tmp_path / "forward" / "run.json").read_bytes()


def test_direction_and_prompts_are_part_of_the_run(scene_and_frames, references,
                                                   tmp_path: Path) -> None:
    scene, folder = scene_and_frames
    import shutil

    out = tmp_path / "out"
    shutil.copytree(references["both"], out)
    for direction in ("forward", "backward"):
        with pytest.raises(OutputConflictError, match="different run"):
            run_dir(scene, folder, out, direction)
    moved = late_prompts(scene)
    moved[27] = moved.pop(26)
    with open_source(folder) as source, pytest.raises(OutputConflictError, match="different run"):
        run_video(source, FakeSegmenter(scene), [], out, RunConfig(), frame_prompts=moved,
                  direction="both", progress=False)
    assert outputs(out) == outputs(references["both"])


def test_plan_of_prompts() -> None:
    box = np.array([1, 1, 5, 5], np.float32)
    plan = PassPlan.of({9: [Prompt(box_xyxy=box, obj_id=1)], 4: [Prompt(box_xyxy=box, obj_id=2)],
                        12: [Prompt(box_xyxy=box, obj_id=2)]}, "both")
    assert (plan.latest, plan.first_frame, plan.backward_end) == (12, {2: 4, 1: 9}, 9)
    assert sorted(plan.backward_prompts) == [0, 3, 8]
    assert [plan.backward_ids(t) for t in (0, 4, 8, 9)] == [[1, 2], [1], [1], []]
    assert PassPlan.of({0: [Prompt(box_xyxy=box, obj_id=1)]}, "both").direction == "forward"
    backward = PassPlan.of(plan.prompts, "backward")
    assert backward.backward_end == 13 and backward.forward_prompts == {}
    with pytest.raises(ValueError, match="expected one of forward, backward, both"):
        PassPlan.of(plan.prompts, "sideways")
    with pytest.raises(PromptError, match="without obj_id"):
        PassPlan.of({0: [Prompt(box_xyxy=box)]}, "both")


def test_merged_and_selected_results() -> None:
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 0, 0] = masks[1, 3, 3] = True
    forward = FrameResult(3, np.array([2]), masks[:1], np.array([0.5], np.float32),
                          np.array([[0, 0, 1, 1]], np.float32), np.array([4]))
    backward = FrameResult(3, np.array([1, 5]), masks, np.array([0.9, 0.8], np.float32),
                           np.array([[0, 0, 1, 1], [3, 3, 4, 4]], np.float32), np.array([3, 6]))
    picked = selected(backward, [1, 3])
    assert picked.obj_ids.tolist() == [1] and picked.lost_obj_ids.tolist() == [3]
    both = merged(forward, picked)
    assert both.obj_ids.tolist() == [1, 2] and both.scores.tolist() == [pytest.approx(0.9), 0.5]
    np.testing.assert_array_equal(both.masks[0], masks[0])
    assert both.lost_obj_ids.tolist() == [3, 4]
    with pytest.raises(ValueError, match="unique"):
        merged(forward, forward)


# ---------------------------------------------------------------------- resume
KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from tests.vos.synthetic import FakeSegmenter
    from tests.vos.test_directions import run_dir
    from tests.vos.test_resume import make_scene

    class Killed(FakeSegmenter):
        def encode(self, image):
            if len(self.encode_calls) == int(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush, mid-frame
            return super().encode(image)

    scene = make_scene()
    run_dir(scene, Path(sys.argv[1]), Path(sys.argv[2]), "both", segmenter=Killed(scene))
""")

# The backward pass encodes frames 26..0 (27 calls), the forward pass frames 6..29.
BACKWARD_ENCODES = 27


@pytest.mark.parametrize("kill_at", [4, 16, BACKWARD_ENCODES + 3, BACKWARD_ENCODES + 20])
def test_sigkill_in_either_pass_then_resume_writes_the_same_bytes(
        scene_and_frames, references, tmp_path: Path, kill_at: int) -> None:
    scene, folder = scene_and_frames
    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", KILLER, str(folder), str(out), str(kill_at)],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    kept = sorted((out / ".backward").glob("*.npz"))
    if kill_at < BACKWARD_ENCODES:
        # Killed in the backward pass: its results are written as each frame completes.
        assert not (out / "json").exists() and len(kept) == kill_at
    else:
        assert len(kept) == BACKWARD_ENCODES

    fake = FakeSegmenter(scene)
    summary = run_dir(scene, folder, out, "both", segmenter=fake)
    assert outputs(out) == outputs(references["both"])
    reference = json.loads((references["both"] / "summary.json").read_text())
    assert summary["objects"] == reference["objects"]
    assert summary["frames_tracked_all_runs"] == NUM_FRAMES
    if kill_at >= BACKWARD_ENCODES:
        assert summary["frames_backward"] == 0, "the backward pass is not run again"
    else:
        # It continues after its last complete frame: frames before are not encoded again.
        assert fake.encode_calls[0] == 26 - len(kept)
    assert not (out / ".backward").exists() and not list(out.rglob("*.tmp"))


class Interrupting(FakeSegmenter):
    """Ctrl-C on the ``stop_at``-th encode call."""

    def __init__(self, scene: Scene, stop_at: int) -> None:
        super().__init__(scene)
        self.stop_at = stop_at

    def encode(self, image: np.ndarray):
        if len(self.encode_calls) == self.stop_at:
            raise KeyboardInterrupt
        return super().encode(image)


def test_ctrl_c_in_each_pass_then_resume_writes_the_same_bytes(scene_and_frames, references,
                                                                tmp_path: Path) -> None:
    scene, folder = scene_and_frames
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_dir(scene, folder, out, "both", segmenter=Interrupting(scene, 10))
    assert sorted(int(p.stem) for p in (out / ".backward").glob("*.npz")) == list(range(17, 27))
    assert json.loads((out / "summary.json").read_text())["complete"] is False
    # The second run resumes the backward pass at frame 16 and is stopped in the forward one.
    with pytest.raises(KeyboardInterrupt):
        run_dir(scene, folder, out, "both", segmenter=Interrupting(scene, 17 + 12))
    assert len(list((out / ".backward").glob("*.npz"))) == BACKWARD_ENCODES
    assert len(list((out / "json").glob("*.json"))) == 6 + 12
    summary = run_dir(scene, folder, out, "both")
    assert summary["frames_resumed"] == 18 and summary["frames_backward"] == 0
    assert outputs(out) == outputs(references["both"])


def test_backward_states_saved_every_few_frames_resume_to_the_same_bytes(
        scene_and_frames, references, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vos.pipeline as pipeline
    from vos.io.resume_state import estimated_state_bytes
    from vos.types import TrackerState

    scene, folder = scene_and_frames
    two_tracks = TrackerState(image_hw=scene.frames[0].shape[:2])
    two_tracks.tracks = {1: None, 2: None}  # type: ignore[dict-item]
    monkeypatch.setattr(pipeline, "STATE_BYTES_PER_FRAME",
                        -(-estimated_state_bytes(two_tracks) // 3))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_dir(scene, folder, out, "both", segmenter=Interrupting(scene, 14))
    # States are named by the pass's own frame count (frame 26 - u); frames 26..13 are done
    # (u = 0..13), with a state every 2 frames while one object is tracked, then every 3.
    saved = sorted(int(p.stem) for p in (out / ".backward" / ".resume").glob("*.npz"))
    assert len(saved) == 1 and saved[0] < 13, saved
    fake = FakeSegmenter(scene)
    run_dir(scene, folder, out, "both", segmenter=fake)
    assert fake.encode_calls[0] == 26 - saved[0] - 1, "tracked again from the newest state"
    assert outputs(out) == outputs(references["both"])


def test_frames_backward_reads_in_forward_chunks(scene_and_frames) -> None:
    from tests.vos.synthetic import frame_counter
    from vos.pipeline import frames_backward

    scene, folder = scene_and_frames
    with open_source(folder) as source:
        # chunk_bytes=1: chunks of 8 frames (the least), so 25..2 spans four of them.
        frames = list(frames_backward(source, 2, 25, chunk_bytes=1))
        assert [frame_counter(f) for f in frames] == list(range(25, 1, -1))
        for frame, t in zip(frames, range(25, 1, -1), strict=True):
            np.testing.assert_array_equal(frame, scene.frames[t])
        assert [frame_counter(f) for f in frames_backward(source, 0, 0)] == [0]
