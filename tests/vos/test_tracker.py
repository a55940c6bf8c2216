"""VideoTracker on generated videos with a ground-truth-backed fake segmenter."""

from __future__ import annotations

import numpy as np
import pytest

from tests.vos.synthetic import FakeSegmenter, Scene, SceneObject, render
from vos.config import PromptConfig, TrackerConfig
from vos.tracker import VideoTracker
from vos.types import FrameResult, Prompt, TrackStatus

HW = (96, 128)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def run(
    scene: Scene,
    tracked: list[int],
    fake: FakeSegmenter | None = None,
    config: TrackerConfig | None = None,
    prompt_config: PromptConfig | None = None,
) -> list[FrameResult]:
    fake = fake or FakeSegmenter(scene, trackable=tracked)
    tracker = VideoTracker(fake, config, prompt_config)
    prompts = {0: [Prompt(mask=scene.gt_masks[0, k], obj_id=k + 1) for k in tracked]}
    return list(tracker.track(scene.frames, prompts))


def per_object_j(scene: Scene, results: list[FrameResult], tracked: list[int]) -> dict[int, float]:
    """Mean J per object over frames 1..T-1 (DAVIS excludes the given first frame)."""
    out = {}
    for k in tracked:
        values = []
        for r in results[1:]:
            ids = r.obj_ids.tolist()
            pred = r.masks[ids.index(k + 1)] if k + 1 in ids else np.zeros(r.image_hw, bool)
            values.append(iou(pred, scene.gt_masks[r.frame_idx, k]))
        out[k + 1] = float(np.mean(values))
    return out


def assert_no_swaps(scene: Scene, results: list[FrameResult], tracked: list[int]) -> None:
    """Every reported mask overlaps its own object's ground truth more than any other's."""
    for r in results:
        for obj_id, mask in zip(r.obj_ids.tolist(), r.masks, strict=True):
            overlaps = {k: np.logical_and(mask, scene.gt_masks[r.frame_idx, k]).sum() for k in tracked}
            best = max(overlaps, key=overlaps.__getitem__)
            assert overlaps[best] == 0 or best + 1 == obj_id, (
                f"frame {r.frame_idx}: id {obj_id} sits on object {best + 1}"
            )


def crossing_scene() -> Scene:
    # Two objects swap sides and pass through each other's position (the red one in front).
    a = SceneObject(((0, 20, 45), (39, 108, 45)), (18, 18), color=(220, 40, 40), depth=1)
    b = SceneObject(((0, 108, 50), (39, 20, 50)), (16, 22), "ellipse", (40, 200, 40))
    return render([a, b], 40, HW)


def occlusion_scene() -> Scene:
    # Object 0 moves right behind a static occluder (object 1) and comes out on the other side.
    mover = SceneObject(((0, 15, 48), (44, 115, 48)), (14, 14), color=(220, 40, 40))
    wall = SceneObject(((0, 64, 48),), (26, 60), color=(90, 90, 220), depth=5)
    return render([mover, wall], 45, HW)


def exit_scene() -> Scene:
    # Object 0 leaves through the right edge, stays out for 8 frames and comes back.
    waypoints = ((0, 80, 40), (12, 140, 40), (20, 140, 40), (32, 100, 40))
    return render([SceneObject(waypoints, (16, 16), color=(220, 200, 30))], 34, HW)


def test_perfect_segmenter_tracks_two_moving_objects_exactly() -> None:
    scene = crossing_scene()
    results = run(scene, [0, 1])
    assert [r.frame_idx for r in results] == list(range(40))
    j = per_object_j(scene, results, [0, 1])
    assert min(j.values()) > 0.97, j
    assert_no_swaps(scene, results, [0, 1])


def parallel_scene() -> Scene:
    a = SceneObject(((0, 20, 25), (29, 100, 30)), (18, 18), color=(220, 40, 40))
    b = SceneObject(((0, 20, 70), (29, 100, 60)), (16, 22), "ellipse", (40, 200, 40))
    c = SceneObject(((0, 110, 50), (29, 60, 50)), (12, 12), color=(40, 40, 220))
    return render([a, b, c], 30, HW)


def test_encodes_each_frame_once_and_decodes_all_objects_in_one_call() -> None:
    scene = parallel_scene()
    fake = FakeSegmenter(scene)
    results = run(scene, [0, 1, 2], fake)
    assert min(per_object_j(scene, results, [0, 1, 2]).values()) > 0.97
    assert fake.encode_calls == list(range(30))
    # The three initial masks share one call, then one call for all objects per frame.
    assert fake.decode_batch_sizes == [3] + [3] * 29


def test_occluded_object_is_lost_then_reacquired_with_its_id() -> None:
    scene = occlusion_scene()
    fake = FakeSegmenter(scene, trackable=[0])
    tracker = VideoTracker(fake)
    results = list(tracker.track(scene.frames, {0: [Prompt(mask=scene.gt_masks[0, 0])]}))
    hidden = [t for t in range(45) if not scene.gt_masks[t, 0].any()]
    assert hidden, "the scene must fully hide the object for a while"
    assert any(1 in r.lost_obj_ids for r in results), "the object should become LOST"
    after = results[hidden[-1] + 5 :]
    assert all(r.obj_ids.tolist() == [1] for r in after), "re-acquired with the same id"
    assert np.mean([iou(r.masks[0], scene.gt_masks[r.frame_idx, 0]) for r in after]) > 0.9


def test_object_leaving_and_reentering_the_frame_keeps_its_id() -> None:
    scene = exit_scene()
    results = run(scene, [0])
    out_frames = [t for t in range(34) if not scene.gt_masks[t, 0].any()]
    assert out_frames
    for t in out_frames:
        assert len(results[t]) == 0 and results[t].lost_obj_ids.tolist() == [1]
    assert results[-1].obj_ids.tolist() == [1]
    assert iou(results[-1].masks[0], scene.gt_masks[-1, 0]) > 0.9


def test_max_missed_frames_removes_the_object() -> None:
    scene = exit_scene()
    fake = FakeSegmenter(scene, trackable=[0])
    tracker = VideoTracker(fake, TrackerConfig(max_missed_frames=3))
    results = list(tracker.track(scene.frames, {0: [Prompt(mask=scene.gt_masks[0, 0])]}))
    first_out = next(t for t in range(34) if not scene.gt_masks[t, 0].any())
    assert results[first_out + 2].lost_obj_ids.tolist() == [1]
    assert results[first_out + 4].lost_obj_ids.tolist() == []
    assert 1 not in tracker.tracks
    assert len(results[-1]) == 0, "a removed object never comes back"


@pytest.mark.parametrize("distractor_rate", [0.1, 0.3])
def test_distractor_answers_never_swap_identities(distractor_rate: float) -> None:
    scene = crossing_scene()
    fake = FakeSegmenter(scene, trackable=[0, 1], distractor_rate=distractor_rate, seed=3)
    results = run(scene, [0, 1], fake)
    assert_no_swaps(scene, results, [0, 1])
    j = per_object_j(scene, results, [0, 1])
    assert min(j.values()) > 0.6, j


def test_quality_degrades_gracefully_with_boundary_noise() -> None:
    scene = crossing_scene()
    scores = []
    for noise in (0, 1, 3):
        fake = FakeSegmenter(scene, trackable=[0, 1], boundary_noise=noise, seed=1)
        scores.append(np.mean(list(per_object_j(scene, run(scene, [0, 1], fake), [0, 1]).values())))
    assert scores[0] > 0.97
    assert scores[0] >= scores[1] >= scores[2] > 0.4, scores


def test_objects_added_mid_stream_and_removed() -> None:
    scene = crossing_scene()
    tracker = VideoTracker(FakeSegmenter(scene))
    for t in range(5):
        result = tracker.step(scene.frames[t])
    assert len(result) == 0
    box = tuple(np.argwhere(scene.gt_masks[4, 1])[:, ::-1].min(0)) + tuple(
        np.argwhere(scene.gt_masks[4, 1])[:, ::-1].max(0) + 1
    )
    obj_id = tracker.add_object(box_xyxy=np.array(box, np.float32))
    assert obj_id == 1
    assert tracker.result().obj_ids.tolist() == [1]
    assert iou(tracker.result().masks[0], scene.gt_masks[4, 1]) == 1.0
    point = np.argwhere(scene.gt_masks[5, 0])[0][::-1] + 0.5
    tracker.step(scene.frames[5])
    assert tracker.add_object(points_xy=[point]) == 2
    result = tracker.step(scene.frames[6])
    assert result.obj_ids.tolist() == [1, 2]
    tracker.remove_object(1)
    assert tracker.step(scene.frames[7]).obj_ids.tolist() == [2]
    assert tracker.add_object(mask=scene.gt_masks[7, 1]) == 3, "ids are never reused"
    with pytest.raises(ValueError, match="no such object"):
        tracker.remove_object(1)
    tracker.reset()
    assert tracker.frame_idx == -1 and not tracker.tracks


def test_prompts_given_to_step_join_on_that_frame() -> None:
    scene = crossing_scene()
    tracker = VideoTracker(FakeSegmenter(scene))
    tracker.step(scene.frames[0])
    result = tracker.step(scene.frames[1], [Prompt(mask=scene.gt_masks[1, 0], obj_id=7),
                                            Prompt(mask=scene.gt_masks[1, 1])])
    assert tracker.added_obj_ids == (7, 8)
    assert result.frame_idx == 1 and result.obj_ids.tolist() == [7, 8]
    assert tracker.step(scene.frames[2]).obj_ids.tolist() == [7, 8]
    assert tracker.added_obj_ids == ()


def test_correction_overwrites_an_existing_object() -> None:
    scene = crossing_scene()
    tracker = VideoTracker(FakeSegmenter(scene))
    tracker.step(scene.frames[0])
    tracker.add_object(mask=scene.gt_masks[0, 0])
    tracker.step(scene.frames[1])
    tracker.add_object(mask=scene.gt_masks[1, 1], obj_id=1)
    result = tracker.result()
    assert result.obj_ids.tolist() == [1]
    assert np.array_equal(result.masks[0], scene.gt_masks[1, 1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask": np.zeros(HW, bool)}, "empty"),
        ({"mask": np.ones((10, 10), bool)}, "expected shape"),
        ({"box_xyxy": [50, 40, 20, 60]}, "x0 < x1"),
        ({"box_xyxy": [200, 200, 300, 300]}, "outside"),
        ({"box_xyxy": [1, 2, 3]}, "4 finite numbers"),
        ({"points_xy": [[500, 5]]}, "outside"),
        ({"points_xy": [[5, 5]], "point_labels": [0]}, "positive"),
        ({}, "needs a mask"),
        ({"box_xyxy": [1, 1, 9, 9], "obj_id": 0}, "obj_id"),
    ],
)
def test_bad_prompts_raise_one_line_errors(kwargs: dict, message: str) -> None:
    scene = crossing_scene()
    tracker = VideoTracker(FakeSegmenter(scene))
    tracker.step(scene.frames[0])
    with pytest.raises(ValueError, match=message) as info:
        tracker.add_object(**kwargs)
    assert "\n" not in str(info.value)


def test_misuse_before_the_first_frame_and_bad_frames() -> None:
    scene = crossing_scene()
    tracker = VideoTracker(FakeSegmenter(scene))
    with pytest.raises(RuntimeError, match="step"):
        tracker.add_object(box_xyxy=[1, 1, 5, 5])
    with pytest.raises(ValueError, match="uint8"):
        tracker.step(scene.frames[0].astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        tracker.step(scene.frames[0][..., 0])
    tracker.step(scene.frames[0])
    with pytest.raises(ValueError, match="size changed"):
        tracker.step(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="candidate_selection"):
        VideoTracker(FakeSegmenter(scene), TrackerConfig(candidate_selection="best"))


def test_frame_skipping_still_advances_frames_and_counters() -> None:
    scene = exit_scene()
    fake = FakeSegmenter(scene, trackable=[0])
    tracker = VideoTracker(fake)
    results = list(
        tracker.track(scene.frames, {0: [Prompt(mask=scene.gt_masks[0, 0])]}, decode_every=2)
    )
    assert [r.frame_idx for r in results] == list(range(34))
    assert fake.encode_calls == list(range(0, 34, 2))


@pytest.mark.parametrize("kind", ["box", "points", "box+points"])
def test_every_prompt_kind_tracks(kind: str) -> None:
    scene = crossing_scene()
    prompt_config = PromptConfig(kind=kind, num_points=2, num_negative_points=1)
    results = run(scene, [0, 1], prompt_config=prompt_config)
    j = per_object_j(scene, results, [0, 1])
    assert min(j.values()) > 0.9, (kind, j)


def test_overlap_resolution_gives_each_pixel_to_one_object() -> None:
    scene = crossing_scene()
    results = run(scene, [0, 1], FakeSegmenter(scene, boundary_noise=4, seed=2))
    for r in results:
        assert (r.masks.sum(0) <= 1).all()
    keep = run(scene, [0, 1], FakeSegmenter(scene, boundary_noise=4, seed=2),
               config=TrackerConfig(overlap="none"))
    assert any((r.masks.sum(0) > 1).any() for r in keep), "noise makes masks overlap"


def test_lost_status_is_visible_in_tracks() -> None:
    scene = exit_scene()
    tracker = VideoTracker(FakeSegmenter(scene, trackable=[0]))
    out = next(t for t in range(34) if not scene.gt_masks[t, 0].any())
    for t, result in enumerate(tracker.track(scene.frames, {0: [Prompt(mask=scene.gt_masks[0, 0])]})):
        if t == out:
            assert tracker.tracks[1].status is TrackStatus.LOST
            assert tracker.tracks[1].missed_frames == 1
            assert len(result) == 0


def suite_jf(boundary_noise: int, distractor_rate: float, seed: int = 0) -> float:
    """Mean J&F (DAVIS definitions, frames 1..T-2) over the synthetic scene suite."""
    from vos.eval.davis import evaluate_sequence

    values = []
    suite = [(crossing_scene(), [0, 1]), (parallel_scene(), [0, 1, 2]),
             (occlusion_scene(), [0]), (exit_scene(), [0])]
    for scene, tracked in suite:
        fake = FakeSegmenter(scene, trackable=tracked, boundary_noise=boundary_noise,
                             distractor_rate=distractor_rate, seed=seed)
        results = run(scene, tracked, fake)
        gt = np.zeros(scene.gt_masks.shape[:1] + scene.gt_masks.shape[2:], np.uint8)
        for rank, k in enumerate(tracked):
            gt[scene.gt_masks[:, k]] = rank + 1
        pred = np.stack([r.to_index_mask() for r in results])
        # obj_id k+1 -> rank+1 so ids are 1..K like DAVIS
        remap = np.zeros(256, np.uint8)
        for rank, k in enumerate(tracked):
            remap[k + 1] = rank + 1
        j, f = evaluate_sequence(gt[1:-1], remap[pred[1:-1]], len(tracked))
        values.append((j.mean() + f.mean()) / 2)
    return float(np.mean(values))


def test_suite_jf_near_one_when_perfect_and_degrading_with_noise() -> None:
    perfect = suite_jf(0, 0.0)
    noisy = suite_jf(2, 0.0)
    noisier = suite_jf(4, 0.2)
    assert perfect > 0.93, perfect
    assert perfect > noisy > noisier > 0.4, (perfect, noisy, noisier)
