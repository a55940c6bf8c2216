"""The values of a request, checked: each mistake is one sentence naming what was sent."""

from __future__ import annotations

from typing import Any

import numpy as np

from vos.annotate.errors import AnnotatorError
from vos.types import MAX_POINTS


def whole_number(value: Any, what: str) -> int:
    """``value`` if it is an int (not a bool), else a one-line error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnnotatorError(f"{what}: expected a whole number, got {value!r}"[:200])
    return value


def number(value: Any, what: str) -> float:
    """``value`` as a finite float, else a one-line error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnnotatorError(f"{what}: expected a number, got {value!r}"[:200])
    if not np.isfinite(float(value)):
        raise AnnotatorError(f"{what}: expected a finite number (got NaN or infinity)")
    return float(value)


def ranges(flags: np.ndarray) -> list[list[int]]:
    """[[first, last], ...] of the runs of True in a (N,) bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return [[int(a), int(b) - 1] for a, b in zip(edges[::2], edges[1::2], strict=True)]


def clicks(points: Any, width: int, height: int) -> tuple[list[list[float]], list[int]]:
    """A request's clicks, ``[[x, y, label], ...]`` in video pixels, checked.

    Returns:
        (the clicks' [x, y], their labels: 1 adds to the object, 0 removes).
    """
    if points is None:
        return [], []
    if not isinstance(points, list):
        raise AnnotatorError("clicks: expected a list of [x, y, label]")
    if len(points) > MAX_POINTS:  # before looking at each one
        raise AnnotatorError(f"at most {MAX_POINTS} clicks per object on a frame: undo "
                             "or clear some first")
    xy, labels = [], []
    for point in points:
        if not isinstance(point, list) or len(point) != 3:
            raise AnnotatorError("clicks: expected a list of [x, y, label]")
        x, y = number(point[0], "click x"), number(point[1], "click y")
        label = whole_number(point[2], "click label")
        if label not in (0, 1):
            raise AnnotatorError("click label: 1 adds to the object, 0 removes")
        if not (0 <= x <= width and 0 <= y <= height):
            raise AnnotatorError(f"click ({x:g}, {y:g}) lies outside the "
                                 f"{width}x{height} frame")
        xy.append([x, y])
        labels.append(label)
    return xy, labels



def box_of(box: Any, width: int, height: int) -> list[float] | None:
    """A request's box ``[x0, y0, x1, y1]`` in video pixels, clipped to the frame."""
    if box is None:
        return None
    if not isinstance(box, list) or len(box) != 4:
        raise AnnotatorError("box: expected [x0, y0, x1, y1]")
    x0, y0, x1, y1 = (number(v, "box") for v in box)
    x0, x1 = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
    y0, y1 = sorted((min(max(y0, 0.0), height), min(max(y1, 0.0), height)))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise AnnotatorError("empty box: drag a box with a visible width and height")
    return [x0, y0, x1, y1]
