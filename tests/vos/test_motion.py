"""The motion model on tiny boxes and masks: shifts, coasting at remembered size, updates."""

from __future__ import annotations

import numpy as np

from vos.motion import coast, predicted_box, shift_mask, update_motion
from vos.types import Track, TrackStatus

HW = (20, 30)


def _track(box: list[float]) -> Track:
    return Track(obj_id=1, mask=np.zeros(HW, bool), box_xyxy=np.array(box, np.float32),
                 low_res_logits=None, score=1.0, last_seen_frame=0)


def test_shift_mask_moves_and_crops_at_the_border() -> None:
    mask = np.zeros((4, 5), bool)
    mask[1, 3] = mask[2, 4] = True
    shifted = shift_mask(mask, 1.2, -0.6)  # rounds to (+1, -1)
    assert np.argwhere(shifted).tolist() == [[0, 4]]  # the pixel at column 5 fell off
    assert shift_mask(mask, 0.4, 0.4) is mask


def test_update_measures_the_leading_edge_and_keeps_size_through_a_shrink() -> None:
    track = _track([5, 5, 15, 15])
    update_motion(track, np.array([7, 5, 17, 15], np.float32), smoothing=0.5)
    np.testing.assert_allclose(track.velocity_xy, [1.0, 0.0])
    np.testing.assert_array_equal(track.size_wh, [10, 10])
    # Sliding behind an occluder: the right edge stops, the left edge carries the motion.
    track.box_xyxy = np.array([7, 5, 17, 15], np.float32)
    update_motion(track, np.array([9, 5, 17, 15], np.float32), smoothing=0.5)
    assert track.anchor_xy[0] == 0 and track.velocity_xy[0] == 1.5
    np.testing.assert_allclose(track.size_wh, [9.7, 10])  # decays slowly, not to 8
    # Back from LOST: the coasted box says nothing about motion.
    track.status = TrackStatus.LOST
    update_motion(track, np.array([9, 5, 19, 15], np.float32), smoothing=0.5)
    np.testing.assert_array_equal(track.velocity_xy, [0, 0])


def test_coast_moves_the_anchored_edge_and_restores_the_size() -> None:
    track = _track([10, 5, 14, 15])  # shrunk to 4 wide behind something
    track.velocity_xy = np.array([2.0, 0.0], np.float32)
    track.size_wh = np.array([10.0, 10.0], np.float32)
    track.anchor_xy = np.array([0, 0])
    np.testing.assert_allclose(coast(track, HW), [12, 5, 22, 15])
    track.anchor_xy = np.array([1, 0])
    np.testing.assert_allclose(coast(track, HW), [6, 5, 16, 15])
    np.testing.assert_allclose(predicted_box(track, HW), [12, 5, 16, 15])
    track.velocity_xy = np.array([40.0, 0.0], np.float32)
    assert coast(track, HW)[2] == 30  # clipped to the frame
