"""Outputs written from crops equal those written from whole masks."""

from __future__ import annotations

import cv2
import numpy as np

from vos.io.sinks import (
    draw_overlay,
    encode_rle,
    encode_rle_crop,
    frame_record,
    id_boxes,
    object_color,
)
from vos.types import FrameResult


def _masks(rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for _ in range(200):
        h, w = int(rng.integers(1, 50)), int(rng.integers(1, 70))
        mask = np.zeros((h, w), bool)
        kind = rng.integers(0, 4)
        if kind == 1:  # a blob somewhere, maybe touching the edges
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            mask[y0 : y0 + int(rng.integers(1, 20)), x0 : x0 + int(rng.integers(1, 20))] = True
            mask &= rng.random((h, w)) < 0.85
        elif kind == 2:
            mask[:] = True
        elif kind == 3:
            mask[int(rng.integers(0, h)), int(rng.integers(0, w))] = True
        out.append(mask)
    return out


def test_crop_rle_equals_the_full_mask_rle() -> None:
    for mask in _masks(np.random.default_rng(0)):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if rows.size == 0:
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        assert encode_rle_crop(mask[y0:y1, x0:x1], x0, y0, mask.shape) == encode_rle(mask)


def test_frame_record_rle_and_area() -> None:
    masks = np.zeros((2, 30, 40), bool)
    masks[0, 3:9, 5:20] = True
    masks[1, 20:30, 30:40] = True
    result = FrameResult(frame_idx=4, obj_ids=np.array([3, 9]), masks=masks,
                         scores=np.array([0.5, 0.75], np.float32),
                         boxes_xyxy=np.zeros((2, 4), np.float32))
    record = frame_record(result, "00004")
    assert [o["area"] for o in record["objects"]] == [90, 100]
    assert [o["segmentation"] for o in record["objects"]] == [encode_rle(m) for m in masks]


def test_overlay_outlines_each_object_as_on_the_whole_frame() -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    index = np.zeros((60, 90), np.uint8)
    index[5:20, 10:30] = 2
    index[30:55, 40:85] = 7
    index[40:45, 0:3] = 11  # at the left edge
    boxes = id_boxes(index, [2, 7, 11])
    assert boxes == {2: (10, 5, 30, 20), 7: (40, 30, 85, 55), 11: (0, 40, 3, 45)}
    got = draw_overlay(frame, index)
    # The same picture drawn the old way, every outline found on the whole frame.
    expected = draw_overlay(frame, np.zeros_like(index))  # background only
    colours = cv2.LUT(cv2.cvtColor(index, cv2.COLOR_GRAY2RGB), _lut())
    blended = cv2.addWeighted(frame, 0.5, colours, 0.5, 0.0)
    cv2.copyTo(blended, (index > 0).astype(np.uint8), expected)
    for obj_id in (2, 7, 11):
        contours, _ = cv2.findContours((index == obj_id).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(expected, contours, -1, object_color(obj_id), 1)
        x0, y0, _, _ = cv2.boundingRect(np.concatenate(contours))
        for thickness, colour in ((1, (255, 255, 255)), (1, object_color(obj_id))):
            del thickness
            cv2.putText(expected, str(obj_id), (x0, max(y0 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.6 * 0.4, colour, 1, cv2.LINE_AA)
    assert np.array_equal(got, expected)


def _lut() -> np.ndarray:
    from vos.io.davis_png import davis_palette

    return np.array(davis_palette(), np.uint8).reshape(256, 1, 3)
