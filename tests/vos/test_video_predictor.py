"""The SAM 2-style video predictor on the tracker: semantics, exactness, corrections, errors.

Most tests drive it with the ground-truth-backed fake segmenter (fast, and it answers by the
frame it is given, so a wrong frame's embedding shows); the end-to-end ones use RepViT-SAM with
fan-in synthetic weights (``seeing_checkpoint``), whose embedding depends on the image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.vos.synthetic import FakeSegmenter, SceneObject, render
from vos.config import RunConfig, load_config
from vos.io.davis_png import read_palette_png
from vos.io.sources import open_source
from vos.pipeline import run_video
from vos.tracker import VideoTracker
from vos.types import Prompt, PromptError
from vos.video_predictor import NO_OBJ_SCORE, VideoPredictor
from vos.video_predictor.outputs import fill_small_holes, hole_area_pixels

NUM_FRAMES = 12
HW = (96, 128)


@pytest.fixture
def scene_folder(tmp_path: Path):
    """Two objects crossing a 12-frame scene, written as lossless PNG frames 0.png ..."""
    objects = [SceneObject(((0, 20, 30), (11, 90, 40)), (16, 16), color=(230, 50, 50)),
               SceneObject(((0, 104, 64), (11, 50, 70)), (14, 20), "ellipse", (40, 220, 40))]
    scene = render(objects, NUM_FRAMES, HW)
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(scene.frames):
        cv2.imwrite(str(folder / f"{t}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return scene, folder


def box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def masks_of(logits: torch.Tensor) -> np.ndarray:
    return (logits[:, 0] > 0).cpu().numpy()


def predictor_for(scene, **store) -> tuple[VideoPredictor, FakeSegmenter]:
    fake = FakeSegmenter(scene)
    cfg = load_config(None, [f"store.{k}={v}" for k, v in store.items()])
    return VideoPredictor(fake, cfg), fake


def collect(gen) -> dict[int, tuple[list, np.ndarray]]:
    return {t: (ids, masks_of(m)) for t, ids, m in gen}


def tracked_session(scene, folder: Path):
    """A session with object 1 boxed on frame 0 and propagated through the video: the
    predictor, its fake segmenter, the state and the propagated results."""
    predictor, fake = predictor_for(scene)
    state = predictor.init_state(folder)
    predictor.add_new_points_or_box(state, 0, 1, box=box_of(scene.gt_masks[0, 0]))
    return predictor, fake, state, collect(predictor.propagate_in_video(state))


# ---------------------------------------------------------------------- exactness
def test_forward_from_a_box_equals_the_video_pipeline(scene_folder, tmp_path: Path) -> None:
    scene, folder = scene_folder
    boxes = [box_of(scene.gt_masks[0, k]) for k in range(2)]
    predictor, _ = predictor_for(scene)
    state = predictor.init_state(folder)
    for k, box in enumerate(boxes):
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=k + 1, box=box)
    ours = collect(predictor.propagate_in_video(state))
    assert sorted(ours) == list(range(NUM_FRAMES))

    out = tmp_path / "run"
    with open_source(folder) as source:
        run_video(source, FakeSegmenter(scene), [Prompt(box_xyxy=b) for b in boxes], out,
                  RunConfig(), progress=False)
    for t in range(NUM_FRAMES):
        index = read_palette_png(out / "masks" / f"{t}.png")
        ids, masks = ours[t]
        assert ids == [1, 2]
        for k in range(2):
            np.testing.assert_array_equal(masks[k], index == k + 1, err_msg=f"frame {t}")
    # The tracker really tracked: the masks follow the moving objects.
    assert (ours[NUM_FRAMES - 1][1][0] & scene.gt_masks[-1, 0]).sum() > 0.9 * scene.gt_masks[-1, 0].sum()


def test_backward_equals_forward_tracking_of_the_reversed_frames(scene_folder) -> None:
    scene, folder = scene_folder
    start = 9
    box = box_of(scene.gt_masks[start, 0])
    predictor, _ = predictor_for(scene)
    state = predictor.init_state(folder)
    predictor.add_new_points_or_box(state, start, 1, box=box)
    ours = collect(predictor.propagate_in_video(state, reverse=True))
    assert list(ours) == list(range(start, -1, -1))

    tracker = VideoTracker(FakeSegmenter(scene))
    reversed_frames = [scene.frames[t] for t in range(start, -1, -1)]
    expected = list(tracker.track(reversed_frames, {0: [Prompt(box_xyxy=np.array(box))]}))
    for i, result in enumerate(expected):
        t = start - i
        assert result.obj_ids.tolist() == [1] or len(result) == 0
        mask = result.masks[0] if len(result) else np.zeros(HW, bool)
        np.testing.assert_array_equal(ours[t][1][0], mask, err_msg=f"frame {t}")
    assert ours[0][1][0].any()


# ---------------------------------------------------------------------- corrections
def test_a_correction_persists_and_repropagation_encodes_no_stored_frame(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, fake, state, first = tracked_session(scene, folder)
    encoded = len(fake.encode_calls)
    assert sorted(fake.encode_calls) == list(range(NUM_FRAMES))

    # A correction on frame 6: a negative click on the object's top half leaves the fake's
    # "part" candidate out; a click on the other object moves object 1 onto it.
    k = 6
    ys, xs = np.nonzero(scene.gt_masks[k, 1])
    point = [[float(xs.mean()), float(ys.mean())]]
    _, ids, corrected = predictor.add_new_points_or_box(state, k, 1, points=point, labels=[1])
    corrected_mask = masks_of(corrected)[0]
    assert ids == [1]
    np.testing.assert_array_equal(corrected_mask, scene.gt_masks[k, 1])
    assert not np.array_equal(corrected_mask, first[k][1][0])

    again = collect(predictor.propagate_in_video(state, start_frame_idx=k))
    assert list(again) == list(range(k, NUM_FRAMES))
    np.testing.assert_array_equal(again[k][1][0], corrected_mask)
    assert len(fake.encode_calls) == encoded, "re-propagation encoded a stored frame"
    # After the correction the object follows the other shape.
    assert (again[NUM_FRAMES - 1][1][0] & scene.gt_masks[-1, 1]).sum() > 0

    # A second full propagation (from the earliest prompt) keeps the correction and gives
    # the frames before it unchanged.
    full = collect(predictor.propagate_in_video(state))
    for t in range(k):
        np.testing.assert_array_equal(full[t][1], first[t][1], err_msg=f"frame {t}")
    for t in range(k, NUM_FRAMES):
        np.testing.assert_array_equal(full[t][1], again[t][1], err_msg=f"frame {t}")
    assert len(fake.encode_calls) == encoded


def test_a_refining_click_uses_the_current_mask_as_mask_prompt(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = predictor_for(scene)
    state = predictor.init_state(folder)
    seen: list[bool] = []
    inner = predictor.segmenter.inner
    original = inner.decode_prompts

    def spy(embedding, prompts):
        seen.append(prompts.mask_logits is not None)
        return original(embedding, prompts)

    inner.decode_prompts = spy
    ys, xs = np.nonzero(scene.gt_masks[0, 0])
    click = [[float(xs.mean()), float(ys.mean())]]
    predictor.add_new_points_or_box(state, 0, 1, points=click, labels=[1])
    predictor.add_new_points_or_box(state, 0, 1, points=[click[0], [2.0, 2.0]], labels=[1, 0])
    assert seen == [False, True]


def test_objects_prompted_on_different_frames_enter_at_their_own_frames(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = predictor_for(scene)
    state = predictor.init_state(folder)
    later = 7
    predictor.add_new_points_or_box(state, 0, 10, box=box_of(scene.gt_masks[0, 0]))
    predictor.add_new_points_or_box(state, later, 20, box=box_of(scene.gt_masks[later, 1]))
    forward = {t: m for t, _, m in predictor.propagate_in_video(state)}
    assert state["obj_ids"] == [10, 20]
    for t in range(later):
        assert (forward[t][1] == NO_OBJ_SCORE).all(), f"object 20 on frame {t} before its prompt"
        assert (forward[t][0] > 0).any()
    backward = {t: m for t, _, m in predictor.propagate_in_video(state, reverse=True)}
    # The backward pass starts at the latest prompted frame, where object 20 enters.
    assert list(backward) == list(range(later, -1, -1))
    for t in range(later):
        masks = masks_of(backward[t])
        overlap = (masks[1] & scene.gt_masks[t, 1]).sum()
        assert overlap > 0.8 * scene.gt_masks[t, 1].sum(), f"object 20 on frame {t}"
        # Object 10's frames come from the forward pass: the backward pass leaves them be.
        np.testing.assert_array_equal(masks[0], masks_of(forward[t])[0])


def test_reverse_from_frame_zero_yields_nothing_and_limits_apply(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = predictor_for(scene)
    state = predictor.init_state(folder)
    predictor.add_new_points_or_box(state, 0, 1, box=box_of(scene.gt_masks[0, 0]))
    assert list(predictor.propagate_in_video(state, reverse=True)) == []
    frames = [t for t, _, _ in predictor.propagate_in_video(state, start_frame_idx=2,
                                                             max_frame_num_to_track=3)]
    assert frames == [2, 3, 4, 5]
    frames = [t for t, _, _ in predictor.propagate_in_video(state, start_frame_idx=4,
                                                             max_frame_num_to_track=2,
                                                             reverse=True)]
    assert frames == [4, 3, 2]


def test_remove_clear_and_reset(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = predictor_for(scene)
    state = predictor.init_state(folder)
    predictor.add_new_points_or_box(state, 0, 1, box=box_of(scene.gt_masks[0, 0]))
    predictor.add_new_points_or_box(state, 3, 2, box=box_of(scene.gt_masks[3, 1]))
    list(predictor.propagate_in_video(state))
    obj_ids, updated = predictor.remove_object(state, 1)
    # SAM 2's updated frames: where the removed object had prompts.
    assert obj_ids == [2] and [t for t, _ in updated] == [0]
    assert updated[0][1].shape == (1, 1, *HW)
    assert predictor.remove_object(state, 99) == ([2], [])
    with pytest.raises(RuntimeError, match="Cannot remove object id 99"):
        predictor.remove_object(state, 99, strict=True)
    t, ids, logits = predictor.clear_all_prompts_in_frame(state, 3, 2)
    assert (t, ids) == (3, [2]) and logits.shape == (1, 1, *HW)
    assert predictor.clear_all_prompts_in_frame(state, 3, 2, need_output=False) is None
    with pytest.raises(RuntimeError, match="No input points or masks"):
        list(predictor.propagate_in_video(state))
    predictor.reset_state(state)
    assert state["obj_ids"] == [] and state["num_frames"] == NUM_FRAMES
    # Removing the last object resets the session (SAM 2 does the same).
    predictor.add_new_points_or_box(state, 0, 1, box=box_of(scene.gt_masks[0, 0]))
    assert predictor.remove_object(state, 1) == ([], [])
    assert not state.prompted and not state.prompts


def test_add_new_mask_and_normalized_coordinates(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = predictor_for(scene)
    state = predictor.init_state(folder)
    _, ids, logits = predictor.add_new_mask(state, 2, 5, scene.gt_masks[2, 1])
    assert ids == [5] and logits.dtype == torch.float32
    np.testing.assert_array_equal(masks_of(logits)[0], scene.gt_masks[2, 1])
    box = np.array(box_of(scene.gt_masks[2, 0]))
    h, w = HW
    _, ids, by_pixels = predictor.add_new_points_or_box(state, 2, 6, box=box)
    _, _, by_fraction = predictor.add_new_points_or_box(
        state, 2, 6, box=box / np.array([w, h, w, h]), normalize_coords=False)
    assert ids == [5, 6]
    np.testing.assert_array_equal(masks_of(by_pixels), masks_of(by_fraction))


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda p, s: p.add_new_points_or_box(s, 12, 1, points=[[5, 5]], labels=[1]),
         ValueError, "frame_idx 12: out of range; the video has 12 frames"),
        (lambda p, s: p.add_new_points_or_box(s, -1, 1, points=[[5, 5]], labels=[1]),
         ValueError, "frame_idx -1: out of range"),
        (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[np.nan, 5]], labels=[1]),
         PromptError, "finite"),
        (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[500, 5]], labels=[1]),
         PromptError, "outside the 128x96 frame"),
        (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[5, 5]]),
         PromptError, "points and labels must be provided together"),
        (lambda p, s: p.add_new_points_or_box(s, 0, 1, points=[[5, 5]], labels=[1, 1]),
         PromptError, "expected one label per point"),
        (lambda p, s: p.add_new_points_or_box(s, 0, 1, box=[1, 1, 9, 9],
                                              clear_old_points=False),
         PromptError, "cannot add box without clearing old points"),
        (lambda p, s: p.add_new_mask(s, 0, 1, np.ones((2, 96, 128), bool)),
         PromptError, r"expected a 2-D mask .* got shape \(2, 96, 128\)"),
        (lambda p, s: p.clear_all_prompts_in_frame(s, 0, 7),
         ValueError, "obj_id 7: no such object"),
        (lambda p, s: list(p.propagate_in_video(s)),
         RuntimeError, "No input points or masks are provided"),
    ],
)
def test_bad_input_gets_one_clear_error(scene_folder, call, error, message) -> None:
    scene, folder = scene_folder
    predictor, _ = predictor_for(scene)
    state = predictor.init_state(folder)
    with pytest.raises(error, match=message):
        call(predictor, state)
    assert state["obj_ids"] == [], "a refused prompt left an object behind"


def test_any_frame_folder_is_accepted_in_our_order(tmp_path: Path, scene_folder) -> None:
    scene, folder = scene_folder
    named = tmp_path / "named"
    named.mkdir()
    for t in range(3):
        (named / f"frame_{chr(ord('a') + t)}.png").write_bytes((folder / f"{t}.png").read_bytes())
    predictor, fake = predictor_for(scene)
    state = predictor.init_state(named)
    assert state["num_frames"] == 3
    predictor.add_new_points_or_box(state, 2, 1, box=box_of(scene.gt_masks[2, 0]))
    assert fake.encode_calls == [2]
    with pytest.raises(ValueError, match="no such file or folder"):
        predictor.init_state(tmp_path / "missing")


def test_integer_named_frames_are_read_in_numeric_order(tmp_path: Path, scene_folder) -> None:
    scene, folder = scene_folder  # 0.png ... 11.png: "10" sorts before "2" by name
    predictor, fake = predictor_for(scene)
    state = predictor.init_state(folder)
    predictor.add_new_points_or_box(state, 10, 1, box=box_of(scene.gt_masks[10, 0]))
    assert fake.encode_calls == [10]


# ---------------------------------------------------------------------- memory
def test_states_spill_to_disk_and_give_the_same_results(scene_folder) -> None:
    scene, folder = scene_folder
    results = []
    for memory_mb in (256, 0):
        predictor, _ = predictor_for(scene, state_memory_mb=memory_mb)
        state = predictor.init_state(folder)
        predictor.add_new_points_or_box(state, 0, 1, box=box_of(scene.gt_masks[0, 0]))
        list(predictor.propagate_in_video(state))
        predictor.add_new_points_or_box(state, 5, 1, box=box_of(scene.gt_masks[5, 0]))
        results.append(collect(predictor.propagate_in_video(state, start_frame_idx=5)))
        if memory_mb == 0:
            assert state.states.memory_used == 0 and state.states.disk_used > 0
        predictor.close_state(state)
    for t in results[0]:
        np.testing.assert_array_equal(results[0][t][1], results[1][t][1])


def test_dropped_states_are_tracked_again(scene_folder, caplog) -> None:
    scene, folder = scene_folder
    predictor, fake, state, first = tracked_session(scene, folder)
    encoded = len(fake.encode_calls)
    state.states.clear()  # as if the state budget had dropped every kept state
    with caplog.at_level(logging.INFO, logger="vos.video_predictor"):
        again = collect(predictor.propagate_in_video(state, start_frame_idx=6))
    assert "tracking frames 0..5 again first" in caplog.text
    assert len(fake.encode_calls) == encoded  # re-tracked from the stored embeddings
    for t in again:
        np.testing.assert_array_equal(again[t][1], first[t][1])


# ---------------------------------------------------------------------- the real model
@pytest.fixture(scope="module")
def davis_frames(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Five real DAVIS frames (blackswan), named 0.jpg ... as SAM 2 expects."""
    source = data_dir / "davis-mini" / "JPEGImages" / "480p" / "blackswan"
    folder = tmp_path_factory.mktemp("blackswan")
    for t in range(5):
        (folder / f"{t}.jpg").write_bytes((source / f"{t:05d}.jpg").read_bytes())
    return folder


@pytest.fixture(scope="module")
def tracking_checkpoint(seeing_checkpoint: Path, tmp_path_factory) -> Path:
    """The fan-in weights with the IoU head's output bias raised by 1: synthetic weights
    predict IoU near 0, which the tracker's ``min_score`` would take for a lost object on
    every frame; this keeps the object tracked, so frames after the first are compared too."""
    weights = torch.load(seeing_checkpoint, weights_only=True)
    weights["mask_decoder.iou_prediction_head.layers.2.bias"] += 1.0
    path = tmp_path_factory.mktemp("weights") / "tracking.pt"
    torch.save(weights, path)
    return path


@pytest.mark.slow
def test_real_model_forward_equals_vos_run_and_store_is_exact(
    tracking_checkpoint: Path, davis_frames: Path, tmp_path: Path
) -> None:
    from vos import build_sam2_video_predictor
    from vos.run import main

    seeing_checkpoint = tracking_checkpoint
    box = [290.0, 140.0, 530.0, 330.0]
    overrides = ["model.backend=torch"]
    # apply_postprocessing=False: the tracker's masks as they are (SAM 2's default fills
    # small holes, checked below).
    predictor = build_sam2_video_predictor("repvit", seeing_checkpoint, device="cpu",
                                           hydra_overrides_extra=overrides,
                                           apply_postprocessing=False)
    state = predictor.init_state(davis_frames)
    # As SAM 2 users call it; exact mode must stay exact inside their autocast block.
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        predictor.add_new_points_or_box(state, 0, 1, box=box)
        ours = collect(predictor.propagate_in_video(state))
    out = tmp_path / "run"
    assert main(["video", str(davis_frames), "--init-box", ",".join(map(str, box)),
                 "--checkpoint", str(seeing_checkpoint), "--output", str(out), "--quiet",
                 "--set", "model.backend=torch"]) == 0
    for t in range(5):
        index = read_palette_png(out / "masks" / f"{t}.png")
        np.testing.assert_array_equal(ours[t][1][0], index == 1, err_msg=f"frame {t}")
    # Not a comparison of empty frames: the object is seen on most frames after the first.
    assert sum(ours[t][1][0].any() for t in range(1, 5)) >= 2

    # The same session with every embedding spilled to disk (memory budget 0) and read
    # back: the same masks. A store handing back another frame's embedding would not be.
    # Built with SAM 2's default apply_postprocessing=True: holes of up to 8 pixels of SAM
    # 2's 256x256 mask are filled in what it returns, and nothing else changes.
    spilled = build_sam2_video_predictor(
        "repvit", seeing_checkpoint, device="cpu",
        hydra_overrides_extra=[*overrides, "store.memory_mb=0"])
    state = spilled.init_state(davis_frames)
    spilled.add_new_points_or_box(state, 0, 1, box=box)
    list(spilled.propagate_in_video(state))
    assert spilled.store.cache.disk_used > 0 and spilled.store.cache.memory_used == 0
    encodes = spilled.segmenter.encodes
    again = collect(spilled.propagate_in_video(state))
    assert spilled.segmenter.encodes == encodes == 5
    # Frame 0 is the prompted frame (its result is replayed, not decoded): frames 1..4 read.
    assert spilled.store.stats.disk_hits >= 4
    assert spilled.fill_hole_area == 8
    limit = hole_area_pixels(8, ours[0][1][0].shape)
    filled_any = False
    for t in range(5):
        exact = ours[t][1][0]
        holes = fill_small_holes(exact, limit) if exact.any() else np.zeros_like(exact)
        filled_any |= bool(holes.any())
        np.testing.assert_array_equal(again[t][1][0], exact | holes, err_msg=f"frame {t}")
    assert filled_any, "no frame had a hole to fill: the comparison above shows nothing"


def test_a_negative_click_alone_corrects_a_tracked_mask_only(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = predictor_for(scene)
    state = predictor.init_state(folder)
    with pytest.raises(PromptError, match="at least one positive point"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[5, 5]], labels=[0])
    predictor.add_new_points_or_box(state, 0, 1, box=box_of(scene.gt_masks[0, 0]))
    list(predictor.propagate_in_video(state))
    ys, xs = np.nonzero(scene.gt_masks[4, 0])
    _, ids, logits = predictor.add_new_points_or_box(
        state, 4, 1, points=[[float(xs.mean()), float(ys.mean())]], labels=[0])
    assert ids == [1]
    # The fake answers a lone negative click on the object with nothing: the object is
    # LOST on that frame, and stays so through a re-propagation from there.
    assert (logits == NO_OBJ_SCORE).all()
    again = {t: m for t, _, m in predictor.propagate_in_video(state, start_frame_idx=4)}
    assert (again[4] == NO_OBJ_SCORE).all()


@pytest.mark.parametrize(
    ("config_file", "message"),
    [
        ("configs/sam2.1/sam2.1_hiera_t.yaml", "a SAM 2 config; repvit-vos takes a model type"),
        ("hiera_t", "expected a model type"),
        ("configs/missing.yaml", "missing.yaml"),
    ],
)
def test_build_refuses_what_it_cannot_build(config_file: str, message: str) -> None:
    from vos import build_sam2_video_predictor

    with pytest.raises(ValueError, match=message):
        build_sam2_video_predictor(config_file, None, device="cpu")


def test_build_without_a_checkpoint_says_how_to_get_one(monkeypatch) -> None:
    from vos import build_sam2_video_predictor

    monkeypatch.delenv("REPVIT_SAM_CHECKPOINT", raising=False)
    with pytest.raises(ValueError, match="no checkpoint given: pass ckpt_path.*repvit_sam.download"):
        build_sam2_video_predictor("repvit", None, device="cpu")
