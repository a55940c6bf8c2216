"""Prompt strategies: what each prompt.kind sends, batching, and adding a strategy in one place."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.vos.synthetic import FakeSegmenter, SceneObject, render
from vos import strategies
from vos.config import ConfigError, PromptConfig
from vos.strategies import ObjectPrompt, PromptStrategy, batch_prompts, strategy_for
from vos.tracker import VideoTracker
from vos.types import Prompt, Track

HW = (40, 60)


def _track(x0: int, y0: int, size: int = 10, velocity: tuple[float, float] = (0.0, 0.0)) -> Track:
    mask = np.zeros(HW, bool)
    mask[y0 : y0 + size, x0 : x0 + size] = True
    track = Track(obj_id=1, mask=mask, box_xyxy=np.array([x0, y0, x0 + size, y0 + size], np.float32),
                  low_res_logits=None, score=0.9, last_seen_frame=0)
    track.velocity_xy = np.array(velocity, np.float32)
    return track


@pytest.mark.parametrize(
    ("kind", "has_box", "has_points"),
    [("box+points", True, True), ("box", True, False), ("points", False, True), ("mask", False, False)],
)
def test_each_kind_sends_its_parts(kind: str, has_box: bool, has_points: bool) -> None:
    strategy = strategy_for(PromptConfig(kind=kind, num_points=2))
    prompt = strategy.propagate(_track(10, 10), [], HW, np.random.default_rng(0))
    assert (prompt.box_xyxy is not None) == has_box
    assert (prompt.points_xy is not None) == has_points
    if has_box:
        # The previous box moved by nothing, with the 5% margin on every side.
        np.testing.assert_allclose(prompt.box_xyxy, [9.5, 9.5, 20.5, 20.5])
    if has_points:
        assert len(prompt.points_xy) == 2 and (prompt.point_labels == 1).all()


def test_propagation_follows_the_velocity_and_takes_negatives_from_neighbours() -> None:
    strategy = strategy_for(PromptConfig(box_margin=0.0, num_points=1, num_negative_points=2))
    moving = _track(10, 10, velocity=(4.0, -2.0))
    neighbour = _track(22, 8)
    neighbour.obj_id = 2
    prompt = strategy.propagate(moving, [neighbour], HW, np.random.default_rng(0))
    np.testing.assert_allclose(prompt.box_xyxy, [14, 8, 24, 18])
    assert prompt.point_labels.tolist() == [1, 0, 0]
    # The positive point moved with the object; the first negative is inside the neighbour.
    assert 14 <= prompt.points_xy[0, 0] < 24
    x, y = prompt.points_xy[1].astype(int)
    assert neighbour.mask[y, x]


def test_reacquire_and_from_mask_prompts() -> None:
    strategy = strategy_for(PromptConfig(kind="points", num_points=3))
    lost = _track(30, 20)
    assert strategy.reacquire(lost).points_xy is None
    np.testing.assert_array_equal(strategy.reacquire(lost).box_xyxy, lost.box_xyxy)
    from_mask = strategy.from_mask(lost.mask)
    np.testing.assert_array_equal(from_mask.box_xyxy, [30, 20, 40, 30])
    assert len(from_mask.points_xy) == 3 and lost.mask[
        from_mask.points_xy[:, 1].astype(int), from_mask.points_xy[:, 0].astype(int)].all()


def test_batch_prompts_pads_point_sets_and_keeps_logits() -> None:
    logits = torch.randn(2, 1, 256, 256)
    prompts = batch_prompts(
        [ObjectPrompt(np.array([0, 0, 5, 5], np.float32), np.ones((1, 2), np.float32), np.ones(1)),
         ObjectPrompt(np.array([1, 1, 6, 6], np.float32), np.ones((3, 2), np.float32),
                      np.array([1, 0, 0]))],
        logits, multimask_output=True,
    )
    assert prompts.num_objects == 2 and prompts.multimask_output
    assert prompts.point_labels.tolist() == [[1, -1, -1], [1, 0, 0]]
    assert torch.equal(prompts.mask_logits, logits)


class CentreOnly(PromptStrategy):
    """A strategy added by a user: one positive point at the box centre, nothing else."""

    kind = "centre"
    use_box = False

    def propagate(self, track, others, image_hw, rng) -> ObjectPrompt:  # type: ignore[override]
        x0, y0, x1, y1 = track.box_xyxy
        return ObjectPrompt(points_xy=np.array([[(x0 + x1) / 2, (y0 + y1) / 2]], np.float32),
                            point_labels=np.ones(1, np.int64))


def test_a_new_strategy_is_one_table_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"prompt\.kind"):
        PromptConfig(kind="centre")
    monkeypatch.setitem(strategies.STRATEGIES, "centre", CentreOnly)
    scene = render([SceneObject(((0, 10, 20), (9, 40, 20)), (10, 10))], 10, HW)
    fake = FakeSegmenter(scene)
    tracker = VideoTracker(fake, prompt_config=PromptConfig(kind="centre", use_prev_logits=False))
    results = list(tracker.track(scene.frames, {0: [Prompt(mask=scene.gt_masks[0, 0])]}))
    assert isinstance(tracker.strategy, CentreOnly)
    # Tracked on every frame by a point prompt alone.
    for result, gt in zip(results, scene.gt_masks[:, 0], strict=True):
        assert result.obj_ids.tolist() == [1]
        assert (result.masks[0] & gt).sum() / (result.masks[0] | gt).sum() > 0.9
