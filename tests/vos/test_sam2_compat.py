"""What SAM 2 code reads and calls besides the predictor's methods: the inference state as
SAM 2's dict, the predictor as an ``nn.Module`` with SAM 2's attributes and helpers, SAM 2's
factory arguments and Hydra overrides, the one device rule, and the output post-processing.

Sessions run on the ground-truth-backed fake segmenter (fast); the module tests build
RepViT-SAM with random weights (no frame is encoded).
"""

from __future__ import annotations

import copy
import logging
import pickle
from collections.abc import Mapping, MutableMapping
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from repvit_sam import SamPredictor, build_repvit_sam
from repvit_sam.build import resolve_device
from tests.vos.sam2_scenes import (
    HW,
    NUM_FRAMES,
    box_of,
    crossing_scene,
    fake_predictor,
    iou,
    write_frames,
)
from vos.config import ConfigError, RunConfig, load_config
from vos.models import ModelError, check_device
from vos.types import PromptError
from vos.video_predictor import NO_OBJ_SCORE, InferenceState, VideoPredictor
from vos.video_predictor.build import resolve_overrides
from vos.video_predictor.outputs import FILLED_HOLE_SCORE, fill_small_holes, keep_highest_score
from vos.video_predictor.state import SAM2_KEYS


@pytest.fixture
def scene_folder(tmp_path: Path):
    scene = crossing_scene()
    return scene, write_frames(scene, tmp_path / "frames")


def masks_of(logits: torch.Tensor) -> np.ndarray:
    return (logits[:, 0] > 0).cpu().numpy()


# ---------------------------------------------------------------------- the state as a dict
def test_state_is_a_dict_with_sam2s_keys_and_types(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = fake_predictor(scene)
    state = predictor.init_state(folder, offload_video_to_cpu=True)
    assert isinstance(state, dict) and isinstance(state, MutableMapping)
    assert list(state) == list(SAM2_KEYS)
    assert (state["num_frames"], state["video_height"], state["video_width"]) == (
        NUM_FRAMES, *HW)
    assert state["device"] == predictor.device == torch.device("cpu")
    assert state["storage_device"] == torch.device("cpu")
    assert (state["offload_video_to_cpu"], state["offload_state_to_cpu"]) == (True, False)
    assert state["obj_ids"] == [] and type(state["obj_ids"]).__mro__[1] is list
    for key in ("obj_id_to_idx", "obj_idx_to_id", "constants"):
        assert isinstance(state[key], dict) and not state[key], key
    for key in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj",
                "temp_output_dict_per_obj", "frames_tracked_per_obj", "frames_already_tracked",
                "cached_features"):
        assert isinstance(state[key], Mapping) and len(state[key]) == 0, key
    assert len(state["images"]) == NUM_FRAMES
    assert state["images"].shape == (NUM_FRAMES, 3, 1024, 1024)
    # dict(state), get() and items() see the same live views as state[key].
    assert all(dict(state)[k] is state[k] for k in SAM2_KEYS)
    assert state.get("images") is state["images"] and state.get("nope") is None
    assert dict(state.items())["obj_ids"] is state["obj_ids"]
    with pytest.raises(KeyError, match="not a key of this inference state"):
        state["output_dict"]  # SAM 2 1.0's consolidated dict: not kept


def test_sam2_keys_are_read_only_and_other_keys_are_free(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = fake_predictor(scene)
    state = predictor.init_state(folder)
    predictor.add_new_points_or_box(state, 0, 7, box=box_of(scene.gt_masks[0, 0]))
    refused = [
        lambda: state.__setitem__("images", []),
        lambda: state.__delitem__("obj_ids"),
        lambda: state.pop("num_frames"),
        lambda: state.update(device="cuda"),
        state.clear,
        state.popitem,
        lambda: state["obj_ids"].append(8),
        lambda: state["obj_ids"].__setitem__(0, 8),
        lambda: state["obj_id_to_idx"].__setitem__(8, 1),
        lambda: state["obj_idx_to_id"].clear(),
    ]
    for call in refused:
        with pytest.raises(TypeError, match=r"SAM 2|read-only|reset_state|cannot be"):
            call()
    assert state["obj_ids"] == [7] and list(state) == list(SAM2_KEYS)
    # A caller's own keys: stored, changed and deleted like a dict's; the predictor ignores
    # them. SAM 2's `constants` dict is the caller's to write too.
    state["my_frame_names"] = ["a", "b"]
    state.setdefault("my_notes", {}).update(seen=True)
    state["constants"]["mine"] = 1
    assert state["my_notes"] == {"seen": True} and "my_frame_names" in state
    assert state.pop("my_frame_names") == ["a", "b"]
    assert state.popitem() == ("my_notes", {"seen": True})
    _, ids, _ = predictor.add_new_points_or_box(state, 1, 7, box=box_of(scene.gt_masks[1, 0]))
    assert ids == [7]
    # Copies of the views are plain containers; the state itself cannot be copied.
    assert type(copy.deepcopy(state["obj_ids"])) is list
    assert type(copy.copy(state["obj_id_to_idx"])) is dict
    with pytest.raises(TypeError, match="cannot be pickled or copied"):
        pickle.dumps(state)


def test_id_views_held_by_the_caller_stay_current(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = fake_predictor(scene)
    state = predictor.init_state(folder)
    ids, to_idx, to_id = state["obj_ids"], state["obj_id_to_idx"], state["obj_idx_to_id"]
    predictor.add_new_points_or_box(state, 0, 10, box=box_of(scene.gt_masks[0, 0]))
    predictor.add_new_points_or_box(state, 6, 20, box=box_of(scene.gt_masks[6, 1]))
    assert (ids, to_idx, to_id) == ([10, 20], {10: 0, 20: 1}, {0: 10, 1: 20})
    assert predictor._obj_id_to_idx(state, 20) == 1 and predictor._obj_idx_to_id(state, 1) == 20
    assert predictor._get_obj_num(state) == 2
    with pytest.raises(ValueError, match="obj_id 30: no such object"):
        predictor._obj_id_to_idx(state, 30)
    predictor.remove_object(state, 10)
    assert (ids, to_idx, to_id) == ([20], {20: 0}, {0: 20})
    predictor.reset_state(state)
    assert (ids, to_idx, to_id) == ([], {}, {})


def test_prompt_views_have_sam2s_form(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = fake_predictor(scene)
    state = predictor.init_state(folder)
    h, w = HW
    points = state["point_inputs_per_obj"]
    masks = state["mask_inputs_per_obj"]
    ys, xs = np.nonzero(scene.gt_masks[2, 0])
    click = [float(xs.mean()), float(ys.mean())]
    predictor.add_new_points_or_box(state, 2, 5, points=[click], labels=[1])
    box = box_of(scene.gt_masks[4, 0])
    predictor.add_new_points_or_box(state, 4, 5, box=box, points=[click], labels=[0])
    predictor.add_new_mask(state, 6, 9, scene.gt_masks[6, 1])
    assert list(points) == [0, 1] and list(points[0]) == [2, 4] and list(points[1]) == []
    scale = torch.tensor([1024 / w, 1024 / h])
    first = points[0][2]
    assert first["point_coords"].dtype == torch.float32 and first["point_coords"].shape == (1, 1, 2)
    torch.testing.assert_close(first["point_coords"][0, 0], torch.tensor(click) * scale)
    assert first["point_labels"].dtype == torch.int32 and first["point_labels"].tolist() == [[1]]
    # A box is its two corners first, labelled 2 and 3, then the clicks (SAM 2's form).
    boxed = points[0][4]
    assert boxed["point_labels"].tolist() == [[2, 3, 0]]
    torch.testing.assert_close(boxed["point_coords"][0, :2],
                               torch.tensor(box).reshape(2, 2) * scale)
    assert list(masks[0]) == [] and list(masks[1]) == [6]
    mask_input = masks[1][6]
    assert mask_input.shape == (1, 1, 1024, 1024) and mask_input.dtype == torch.float32
    assert set(mask_input.unique().tolist()) == {0.0, 1.0}
    back = F.interpolate(mask_input, HW, mode="area")[0, 0] > 0.5
    assert iou(back.numpy(), scene.gt_masks[6, 1]) > 0.9
    predictor.clear_all_prompts_in_frame(state, 2, 5)
    assert list(points[0]) == [4]  # the view held from before shows it


def test_output_and_tracking_views_after_passes(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = fake_predictor(scene)
    state = predictor.init_state(folder)
    predictor.add_new_points_or_box(state, 0, 1, box=box_of(scene.gt_masks[0, 0]))
    predictor.add_new_points_or_box(state, 7, 2, box=box_of(scene.gt_masks[7, 1]))
    tracked = state["frames_tracked_per_obj"]
    outputs = state["output_dict_per_obj"]
    assert len(tracked[0]) == len(tracked[1]) == 0  # prompted, not tracked yet
    assert list(outputs[0]["cond_frame_outputs"]) == [0]
    assert list(outputs[1]["non_cond_frame_outputs"]) == []
    forward = {t: masks_of(m) for t, _, m in predictor.propagate_in_video(state)}
    backward = {t: masks_of(m) for t, _, m in predictor.propagate_in_video(state, reverse=True)}
    assert dict(tracked[0]) == {t: {"reverse": False} for t in range(NUM_FRAMES)}
    # Object 2's frames before its prompt come from the backward pass (it is LOST before
    # frame 5, where it appears, and still tracked there).
    assert dict(tracked[1]) == {t: {"reverse": t < 7} for t in range(NUM_FRAMES)}
    assert backward[6][1].any() and not backward[2][1].any()
    assert dict(state["frames_already_tracked"]) == {t: {"reverse": False}
                                                    for t in range(NUM_FRAMES)}
    cond, non_cond = outputs[1]["cond_frame_outputs"], outputs[1]["non_cond_frame_outputs"]
    assert list(cond) == [7] and 7 not in non_cond and 11 in non_cond
    for t, returned in ((7, forward[7][1]), (10, forward[10][1])):
        out = (cond if t == 7 else non_cond)[t]
        assert out["pred_masks"].shape == (1, 1, 256, 256)
        assert out["pred_masks"].dtype == torch.float32
        assert out["object_score_logits"].item() == 1.0
        up = F.interpolate(out["pred_masks"], HW, mode="bilinear", align_corners=False)
        assert iou(up[0, 0].numpy() > 0, returned) > 0.9, t
    # Object 2 before it appears (frame 2): absent, SAM 2's no-object score.
    assert non_cond[2]["object_score_logits"].item() == -1.0
    assert (non_cond[2]["pred_masks"] == NO_OBJ_SCORE).all()
    for per_obj in state["temp_output_dict_per_obj"].values():
        assert {k: len(v) for k, v in per_obj.items()} == {"cond_frame_outputs": 0,
                                                           "non_cond_frame_outputs": 0}
    predictor.reset_state(state)
    assert len(state["frames_tracked_per_obj"]) == 0 and len(state["frames_already_tracked"]) == 0


def test_images_are_sam2s_inputs_made_when_read(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = fake_predictor(scene)
    state = predictor.init_state(folder)
    assert state.frames.decoded == 0, "init_state read frames"
    images = state["images"]
    image = images[3]
    assert state.frames.decoded <= 4  # frame 3 (and at most those before it)
    assert image.shape == (3, 1024, 1024) and image.dtype == torch.float32
    squashed = np.asarray(Image.fromarray(scene.frames[3]).resize((1024, 1024),
                                                                  Image.Resampling.BICUBIC))
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    expected = (torch.from_numpy(squashed / 255.0).permute(2, 0, 1).float() - mean) / std
    torch.testing.assert_close(image, expected, rtol=0, atol=0)
    torch.testing.assert_close(images[-1], images[NUM_FRAMES - 1], rtol=0, atol=0)
    assert images[1:3].shape == (2, 3, 1024, 1024)
    with pytest.raises(IndexError, match="the video has 12 frames"):
        images[NUM_FRAMES]


def test_cached_features_are_the_stored_embeddings(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, fake = fake_predictor(scene)
    state = predictor.init_state(folder)
    predictor.add_new_points_or_box(state, 3, 1, box=box_of(scene.gt_masks[3, 0]))
    predictor.add_new_points_or_box(state, 0, 1, box=box_of(scene.gt_masks[0, 0]))
    features = state["cached_features"]
    assert list(features) == [0, 3]
    image, embedding = features[3]
    assert image.shape == (1, 3, 1024, 1024) and embedding.frame_idx == 3
    list(predictor.propagate_in_video(state, max_frame_num_to_track=4))
    assert list(features) == [0, 1, 2, 3, 4]
    assert sorted(fake.encode_calls) == [0, 1, 2, 3, 4]  # reading the view encoded nothing


# ---------------------------------------------------------------------- smaller SAM 2 points
def test_start_frames_past_the_ends(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = fake_predictor(scene)
    state = predictor.init_state(folder)
    predictor.add_new_points_or_box(state, 0, 1, box=box_of(scene.gt_masks[0, 0]))
    assert list(predictor.propagate_in_video(state, start_frame_idx=NUM_FRAMES)) == []
    assert list(predictor.propagate_in_video(state, start_frame_idx=NUM_FRAMES + 5)) == []
    with pytest.raises(ValueError, match="start_frame_idx 12: out of range"):
        list(predictor.propagate_in_video(state, start_frame_idx=NUM_FRAMES, reverse=True))
    with pytest.raises(ValueError, match="start_frame_idx -1: out of range"):
        list(predictor.propagate_in_video(state, start_frame_idx=-1))


def test_a_mask_of_another_size_is_resized_to_the_frame(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = fake_predictor(scene)
    state = predictor.init_state(folder)
    full = scene.gt_masks[4, 0]
    half = cv_resize(full, (HW[1] // 2, HW[0] // 2))
    _, _, logits = predictor.add_new_mask(state, 4, 1, torch.from_numpy(half.copy()))
    assert iou(masks_of(logits)[0], full) > 0.85
    assert state.prompts[4][1].mask.shape == HW
    with pytest.raises(PromptError, match="expected a 2-D mask"):
        predictor.add_new_mask(state, 4, 1, np.ones(HW[1], bool))


def cv_resize(mask: np.ndarray, wh: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(mask).resize(wh, Image.Resampling.NEAREST))


# ---------------------------------------------------------------------- outputs
def test_fill_small_holes_counts_8_connected_background() -> None:
    mask = np.zeros((12, 12), bool)
    mask[1:11, 1:11] = True
    mask[3:5, 3:5] = False            # a 4-pixel hole
    mask[6, 6] = mask[7, 7] = False   # two pixels touching at a corner: one 2-pixel hole
    mask[6:9, 2:5] = False            # a 9-pixel hole
    filled = fill_small_holes(mask, 4)
    expected = np.zeros_like(mask)
    expected[3:5, 3:5] = expected[6, 6] = expected[7, 7] = True
    np.testing.assert_array_equal(filled, expected)
    # The 44-pixel border ring of background is a region like any other (as in SAM 2).
    assert fill_small_holes(mask, 44)[0].all() and not fill_small_holes(mask, 43)[0].any()
    assert not fill_small_holes(np.ones((4, 4), bool), 100).any()
    assert not fill_small_holes(mask, 0).any()


def test_fill_hole_area_fills_returned_masks_not_tracked_ones(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, _ = fake_predictor(scene)
    # 100 pixels of SAM 2's 256x256 mask: 100 * 96 * 128 / 256**2 = 18.75 pixels here.
    predictor.fill_hole_area = 100
    state = predictor.init_state(folder)
    ring = np.zeros(HW, bool)
    ring[20:40, 20:40] = True
    ring[30:34, 30:34] = False  # 16 pixels: filled
    ring[22:27, 22:27] = False  # 25 pixels: kept
    _, _, logits = predictor.add_new_mask(state, 0, 1, ring)
    returned = masks_of(logits)[0]
    assert returned[30:34, 30:34].all() and (logits[0, 0, 30:34, 30:34] == FILLED_HOLE_SCORE).all()
    assert not returned[22:27, 22:27].any()
    np.testing.assert_array_equal(returned, ring | fill_small_holes(ring, 18.75))
    assert not state.prompted[0][1].mask[30:34, 30:34].any()  # tracked as given
    # A second object in the hole: masks do not overlap, so the hole stays the other's.
    inner = np.zeros(HW, bool)
    inner[30:34, 30:34] = True
    _, _, logits = predictor.add_new_mask(state, 0, 2, inner)
    both = masks_of(logits)
    assert not both[0, 30:34, 30:34].any() and both[1, 30:34, 30:34].all()
    predictor.non_overlap_masks = False  # overlaps allowed: the hole is filled under it
    both = masks_of(predictor._frame_logits(state, 0))
    assert both[0, 30:34, 30:34].all() and both[1, 30:34, 30:34].all()


def test_keep_highest_score_and_video_res_helper(scene_folder) -> None:
    scores = torch.tensor([[1.0, -2.0, 3.0, 0.5], [2.0, -1.0, 3.0, -20.0],
                           [0.5, -30.0, 1.0, 0.4]]).reshape(3, 1, 1, 4)
    kept = keep_highest_score(scores)[:, 0, 0]
    assert kept.tolist() == [[-10.0, -10.0, 3.0, 0.5], [2.0, -1.0, -10.0, -20.0],
                             [-10.0, -30.0, -10.0, -10.0]]
    one = torch.randn(1, 1, 5, 5)
    assert keep_highest_score(one) is one
    scene, folder = scene_folder
    predictor, _ = fake_predictor(scene)
    state = predictor.init_state(folder)
    low = torch.randn(2, 1, HW[0] // 4, HW[1] // 4)
    same, video = predictor._get_orig_video_res_output(state, low)
    assert same is low and video.shape == (2, 1, *HW)
    torch.testing.assert_close(video, keep_highest_score(F.interpolate(
        low, HW, mode="bilinear", align_corners=False)))
    predictor.non_overlap_masks = False
    _, plain = predictor._get_orig_video_res_output(state, low)
    torch.testing.assert_close(plain, F.interpolate(low, HW, mode="bilinear",
                                                    align_corners=False))
    assert predictor._apply_non_overlapping_constraints(scores).tolist() == \
        keep_highest_score(scores).tolist()


# ---------------------------------------------------------------------- SAM 2's attributes
def test_sam2_attributes_map_to_our_settings(scene_folder, caplog) -> None:
    scene, _ = scene_folder
    predictor, _ = fake_predictor(scene)
    assert predictor.image_size == 1024 and predictor.fill_hole_area == 0
    assert predictor.non_overlap_masks is True
    assert predictor.config.tracker.overlap == "higher_score_wins"
    predictor.non_overlap_masks = False
    assert predictor.config.tracker.overlap == "none"
    predictor.non_overlap_masks = True
    assert predictor.config.tracker.overlap == "higher_score_wins"
    with pytest.raises(ValueError, match="fill_hole_area: expected an integer >= 0"):
        predictor.fill_hole_area = -1
    assert predictor.clear_non_cond_mem_around_input is False
    assert predictor.add_all_frames_to_correct_as_cond is True
    with caplog.at_level(logging.INFO, logger="vos.video_predictor"):
        predictor.clear_non_cond_mem_around_input = True
    assert "has no effect here" in caplog.text
    assert predictor.clear_non_cond_mem_around_input is False


def test_changing_the_overlap_rule_tracks_again(scene_folder) -> None:
    scene, folder = scene_folder
    predictor, fake = fake_predictor(scene)
    state = predictor.init_state(folder)
    predictor.add_new_points_or_box(state, 0, 1, box=box_of(scene.gt_masks[0, 0]))
    list(predictor.propagate_in_video(state))
    assert state.passes["forward"].valid_end == NUM_FRAMES
    predictor.non_overlap_masks = False
    list(predictor.propagate_in_video(state, start_frame_idx=6))
    # The kept states were tracked under the old rule: frames 0..5 were tracked again.
    assert state.passes["forward"].valid_end == NUM_FRAMES
    assert fake.encode_calls.count(6) == 1  # from the store, not encoded again


# ---------------------------------------------------------------------- the module
@pytest.fixture(scope="module")
def module_predictor() -> VideoPredictor:
    torch.manual_seed(0)
    model = build_repvit_sam()
    cfg = load_config(None, ["model.backend=predictor"])
    return VideoPredictor(SamPredictor(model), cfg)


def test_predictor_is_a_module_holding_the_model(module_predictor: VideoPredictor) -> None:
    predictor = module_predictor
    model = predictor.model
    assert isinstance(predictor, torch.nn.Module) and isinstance(model, torch.nn.Module)
    ours = list(predictor.parameters())
    assert len(ours) == len(list(model.parameters())) > 0
    assert all(a is b for a, b in zip(ours, model.parameters(), strict=True))
    assert list(predictor.state_dict()) == list(model.state_dict())
    assert predictor.eval() is predictor and not model.training
    with pytest.raises(ValueError, match="eval mode only"):
        predictor.train()
    for cast in (predictor.half, predictor.bfloat16, lambda: predictor.to(torch.float64)):
        with pytest.raises(ValueError, match="runs in float32"):
            cast()
    assert {p.dtype for p in predictor.parameters()} == {torch.float32}
    assert predictor.to("cpu") is predictor and predictor.cpu() is predictor
    assert predictor.device == torch.device("cpu")
    with pytest.raises(NotImplementedError, match="use its methods"):
        predictor()


def test_loading_weights_rebuilds_the_segmenter_and_store(
        module_predictor: VideoPredictor) -> None:
    predictor = module_predictor
    old_store, old_segmenter = predictor.store, predictor.segmenter
    weights = {k: v.clone() for k, v in predictor.state_dict().items()}
    weights["mask_decoder.iou_prediction_head.layers.2.bias"] += 1.0
    predictor.load_state_dict(weights)
    assert predictor.store is not old_store and predictor.segmenter is not old_segmenter
    assert predictor.store.model_key != old_store.model_key  # new weights, new embeddings
    torch.testing.assert_close(
        predictor.model.mask_decoder.iou_prediction_head.layers[2].bias,
        weights["mask_decoder.iou_prediction_head.layers.2.bias"])
    # The new segmenter runs the loaded model (a graph backend would export it afresh).
    assert predictor.segmenter.inner.model is predictor.model


# ---------------------------------------------------------------------- overrides and factory
def test_sam2_overrides_map_to_ours_or_have_no_effect() -> None:
    base = RunConfig()
    s = resolve_overrides(base, ["++model.non_overlap_masks=false", "model.fill_hole_area=8",
                                 "++model.binarize_mask_from_pts_for_mem_enc=true",
                                 "+model.image_encoder.trunk.embed_dim=96",
                                 "~model.memory_encoder", "tracker.max_missed_frames=3",
                                 "++model.backend=torch"])
    assert s.cfg.tracker.overlap == "none" and s.fill_hole_area == 8
    assert s.cfg.tracker.max_missed_frames == 3 and s.cfg.model.backend == "torch"
    assert s.no_effect == ["model.binarize_mask_from_pts_for_mem_enc",
                           "model.image_encoder.trunk.embed_dim", "~model.memory_encoder"]
    lower = load_config(None, ["tracker.overlap=lower_id_wins"])
    assert resolve_overrides(lower, ["++model.non_overlap_masks=true"]).cfg == lower
    none = load_config(None, ["tracker.overlap=none"])
    assert resolve_overrides(none, ["++model.non_overlap_masks=true"]).cfg.tracker.overlap \
        == "higher_score_wins"
    # Later overrides win, as in Hydra.
    assert resolve_overrides(base, ["++model.non_overlap_masks=false",
                                    "tracker.overlap=lower_id_wins"]).cfg.tracker.overlap \
        == "lower_id_wins"
    for bad, message in (("model.nope=1", "unknown config key"),
                         ("++tracker.nope=1", "unknown config key"),
                         ("++model.non_overlap_masks=maybe", "expected true or false"),
                         ("++model.fill_hole_area=-2", "expected an integer >= 0"),
                         ("~tracker.overlap", "SAM 2's model settings only")):
        with pytest.raises(ConfigError, match=message):
            resolve_overrides(base, [bad])


def test_factory_takes_sam2s_arguments(random_checkpoint: Path, monkeypatch, caplog) -> None:
    from vos import build_sam2_video_predictor

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO):
        predictor = build_sam2_video_predictor(
            "repvit", random_checkpoint, device="cuda:0", mode="eval",
            hydra_overrides_extra=["++model.non_overlap_masks=false"],
            apply_postprocessing=True, vos_optimized=True, extra_option=1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "device cuda:0: this machine has no CUDA device; running on the CPU"]
    (no_effect,) = [r.getMessage() for r in caplog.records
                    if r.getMessage().startswith("SAM 2 settings without effect here")]
    for key in ("model._target_", "model.compile_image_encoder",
                "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability",
                "model.binarize_mask_from_pts_for_mem_enc", "extra_option"):
        assert key in no_effect, key
    assert predictor.device == torch.device("cpu")
    assert predictor.config.model.device == "cpu"
    assert predictor.fill_hole_area == 8 and predictor.non_overlap_masks is False
    assert not predictor.model.training
    with pytest.raises(ValueError, match="eval mode only"):
        build_sam2_video_predictor("repvit", random_checkpoint, device="cpu", mode="train")
    with pytest.raises(ConfigError, match="unknown config key"):
        build_sam2_video_predictor("repvit", random_checkpoint, device="cpu",
                                   hydra_overrides_extra=["++model.not_a_key=1"])


# ---------------------------------------------------------------------- one device rule
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3", torch.device("cuda", 1), "mps"])
def test_a_missing_accelerator_falls_back_to_the_cpu(device, monkeypatch, caplog) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert resolve_device(device) == torch.device("cpu")
    assert len(caplog.records) == 1 and "running on the CPU" in caplog.text
    check_device(str(device))  # not an error: the same rule


def test_device_errors_name_no_command_line_flag(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0", warn=False) == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"this machine has 1 CUDA device\(s\), cuda:0 to cuda:0"):
        resolve_device("cuda:1")
    for device in ("cuda:1", "tpu", "gpu0"):
        with pytest.raises(ModelError, match=r"model\.device=") as info:
            check_device(device)
        assert "--" not in str(info.value)


def test_the_model_builder_follows_the_rule(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = build_repvit_sam(device="cuda:0")
    assert model.device == torch.device("cpu")


def test_a_state_for_a_plain_dict_is_refused(scene_folder) -> None:
    scene, _ = scene_folder
    predictor, _ = fake_predictor(scene)
    with pytest.raises(TypeError, match="expected the object returned by init_state"):
        predictor.add_new_points_or_box({"num_frames": 3}, 0, 1, box=[0, 0, 5, 5])
    assert issubclass(InferenceState, dict)
