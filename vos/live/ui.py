"""Live interaction: keys to actions, mouse gestures to prompts, the view and its window.

Window controls: left-drag draws a box (a new object); a left click on a tracked object
corrects it (the clicked region becomes part of it), with Ctrl held it takes the region away;
a left click away from every object adds an object from that point; shift+left-click /
right-click collect positive / negative points that Enter turns into one object. Keys: ``r``
reset, ``d``/``x`` remove the last object, ``p``/space pause, ``s`` save the current frame's
masks, ``q``/Esc quit.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from vos.io.sinks import object_color
from vos.types import FrameResult, Prompt

__all__ = [
    "KEY_ACTIONS",
    "WINDOW_NAME",
    "Action",
    "Click",
    "Display",
    "LiveError",
    "LiveWindow",
    "PromptDrawer",
    "check_display",
    "key_to_action",
    "object_at",
    "render_view",
]

WINDOW_NAME = "RepViT-SAM live"


class LiveError(ValueError):
    """A live run cannot start (no display, a bad camera, an output folder in use)."""


class Action(enum.Enum):
    """What a key does in the live window."""

    QUIT = "quit"
    RESET = "reset"
    REMOVE_LAST = "remove last object"
    PAUSE = "pause / resume"
    SAVE = "save masks"
    ADD_POINTS = "add object from the collected points"
    CLEAR_POINTS = "clear the collected points"


KEY_ACTIONS: dict[int, Action] = {
    ord("q"): Action.QUIT,
    27: Action.QUIT,  # Esc
    ord("r"): Action.RESET,
    ord("d"): Action.REMOVE_LAST,
    ord("x"): Action.REMOVE_LAST,
    ord("p"): Action.PAUSE,
    ord(" "): Action.PAUSE,
    ord("s"): Action.SAVE,
    13: Action.ADD_POINTS,  # Enter
    10: Action.ADD_POINTS,
    ord("c"): Action.CLEAR_POINTS,
}


def key_to_action(key: int) -> Action | None:
    """Map a ``cv2.waitKey`` code to an action (None for no key or an unbound key).

    Modifier bits above the low byte are ignored, and letters are case-insensitive.
    """
    if key < 0:
        return None
    key &= 0xFF
    if ord("A") <= key <= ord("Z"):
        key += ord("a") - ord("A")
    return KEY_ACTIONS.get(key)


@dataclass(frozen=True)
class Click:
    """A plain click on the view, in frame pixels.

    Attributes:
        x, y: the clicked pixel.
        label: 1 for a left click, 0 for a left click with Ctrl held.
    """

    x: int
    y: int
    label: int


def object_at(result: FrameResult | None, x: int, y: int, *, margin: float = 0.2,
              min_margin_px: int = 8) -> int | None:
    """The tracked object a click at (x, y) is meant for, or None.

    The object whose mask holds the pixel (the smallest, where masks overlap); else the one
    whose box, grown by ``margin`` of its size on every side (at least ``min_margin_px``),
    holds it, the nearest box centre first: a click just outside a mask usually asks to
    grow it.

    Args:
        result: the objects shown, masks (N, H, W) bool in frame pixels.
        x, y: the click in frame pixels.
    """
    if result is None or len(result) == 0:
        return None
    h, w = result.image_hw
    if not (0 <= x < w and 0 <= y < h):
        return None
    hits = [i for i in range(len(result)) if result.masks[i, y, x]]
    if hits:
        best = min(hits, key=lambda i: (int(result.masks[i].sum()), int(result.obj_ids[i])))
        return int(result.obj_ids[best])
    near: list[tuple[float, int]] = []
    for obj_id, (x0, y0, x1, y1) in zip(result.obj_ids, result.boxes_xyxy, strict=True):
        if x1 <= x0 or y1 <= y0:
            continue
        gx = max(min_margin_px, margin * (x1 - x0))
        gy = max(min_margin_px, margin * (y1 - y0))
        if x0 - gx <= x + 0.5 <= x1 + gx and y0 - gy <= y + 0.5 <= y1 + gy:
            near.append((float(np.hypot(x + 0.5 - (x0 + x1) / 2, y + 0.5 - (y0 + y1) / 2)),
                         int(obj_id)))
    return min(near)[1] if near else None


class PromptDrawer:
    """Turns OpenCV mouse events into prompts and clicks (pass :meth:`on_mouse` to
    setMouseCallback).

    A left-drag gives a box (a new object); a left click gives a :class:`Click` (label 1;
    label 0 with Ctrl held), which the live loop turns into a correction of the object
    clicked on or, away from every object, a new one-point object. Shift+left-click and
    right-click collect positive and negative points for :meth:`commit_points`; points
    collected before a drag go with its box.

    Args:
        image_hw: (H, W) of the frames; events are clipped to it.
        min_drag: a drag shorter than this many pixels on either axis counts as a click.
    """

    def __init__(self, image_hw: tuple[int, int], *, min_drag: int = 5) -> None:
        self.image_hw = image_hw
        self.min_drag = min_drag
        self.drag_start: tuple[int, int] | None = None
        self.drag_end: tuple[int, int] | None = None
        self.points: list[tuple[int, int, int]] = []  # (x, y, label)
        self._ready: list[Prompt] = []
        self._clicks: list[Click] = []

    def on_mouse(self, event: int, x: int, y: int, flags: int, param: Any = None) -> None:
        """OpenCV mouse callback (window pixels equal frame pixels)."""
        h, w = self.image_hw
        x, y = min(max(int(x), 0), w - 1), min(max(int(y), 0), h - 1)
        shift = bool(flags & cv2.EVENT_FLAG_SHIFTKEY)
        ctrl = bool(flags & cv2.EVENT_FLAG_CTRLKEY)
        if event == cv2.EVENT_LBUTTONDOWN:
            if shift:
                self.points.append((x, y, 1))
            elif ctrl:
                self._clicks.append(Click(x, y, 0))
            else:
                self.drag_start = self.drag_end = (x, y)
        elif event == cv2.EVENT_RBUTTONDOWN:
            self.points.append((x, y, 0))
        elif event == cv2.EVENT_MOUSEMOVE and self.drag_start is not None:
            self.drag_end = (x, y)
        elif event == cv2.EVENT_LBUTTONUP and self.drag_start is not None:
            x0, y0 = self.drag_start
            self.drag_start = self.drag_end = None
            if abs(x - x0) >= self.min_drag and abs(y - y0) >= self.min_drag:
                self._ready.append(self._with_points(_box_between((x0, y0), (x, y))))
            else:
                self._clicks.append(Click(x, y, 1))

    @property
    def drag_box(self) -> np.ndarray | None:
        """(4,) XYXY of the box being dragged, for drawing; None when not dragging."""
        if self.drag_start is None or self.drag_end is None:
            return None
        return _box_between(self.drag_start, self.drag_end)

    def commit_points(self) -> bool:
        """Turn the collected points into one object; False if none of them is positive."""
        if not any(label == 1 for _, _, label in self.points):
            return False
        self._ready.append(self._with_points(None))
        return True

    def clear(self) -> None:
        """Drop the collected points, unread clicks and any drag in progress."""
        self.points.clear()
        self._clicks.clear()
        self.drag_start = self.drag_end = None

    def take(self) -> list[Prompt]:
        """The prompts (boxes, committed points) completed since the last call."""
        ready, self._ready = self._ready, []
        return ready

    def take_clicks(self) -> list[Click]:
        """The plain clicks since the last call."""
        clicks, self._clicks = self._clicks, []
        return clicks

    def _with_points(self, box: np.ndarray | None) -> Prompt:
        points = labels = None
        if self.points:
            points = np.array([p[:2] for p in self.points], np.float32)
            labels = np.array([p[2] for p in self.points], np.int64)
        self.points = []
        return Prompt(box_xyxy=box, points_xy=points, point_labels=labels)


def _box_between(a: tuple[int, int], b: tuple[int, int]) -> np.ndarray:
    """(4,) float32 XYXY covering the pixels from corner ``a`` to corner ``b`` inclusive."""
    (x0, y0), (x1, y1) = a, b
    return np.array([min(x0, x1), min(y0, y1), max(x0, x1) + 1, max(y0, y1) + 1], np.float32)


def render_view(
    frame: np.ndarray,
    result: FrameResult | None,
    *,
    banner: str | None = None,
    drag_box: np.ndarray | None = None,
    points: Sequence[tuple[int, int, int]] = (),
    pending_boxes: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """The window image: object overlay with ids and scores, banner, prompts being drawn.

    Args:
        frame: (H, W, 3) uint8 RGB.
        result: the frame's objects (None: the plain frame).
        banner: text for the top-left corner (rates, latency, where the masks came from);
            one line per ``\n``.
        drag_box: (4,) XYXY in frame pixels of the box being dragged.
        points: (x, y, label) points being collected, or clicks waiting for the model.
        pending_boxes: (4,) XYXY boxes given to the model whose objects are not shown yet.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    view = frame.copy()
    if result is not None and len(result):
        _draw_objects(view, result)
    if drag_box is not None:
        x0, y0, x1, y1 = (int(v) for v in drag_box)
        cv2.rectangle(view, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 0), 1, cv2.LINE_AA)
    for box in pending_boxes:
        x0, y0, x1, y1 = (int(v) for v in box)
        cv2.rectangle(view, (x0, y0), (x1 - 1, y1 - 1), (255, 200, 0), 2, cv2.LINE_AA)
    for x, y, label in points:
        colour = (0, 255, 0) if label == 1 else (255, 0, 0)
        cv2.circle(view, (x, y), 4, colour, -1, cv2.LINE_AA)
        cv2.circle(view, (x, y), 4, (255, 255, 255), 1, cv2.LINE_AA)
    if banner:
        _draw_banner(view, banner.split("\n"))
    return view


def _draw_objects(view: np.ndarray, result: FrameResult, alpha: float = 0.5) -> None:
    """Each object's colour, outline, id and score, drawn inside its own box (in place).

    The window draws every camera frame, so the cost follows the objects' size, not the
    frame's (the recorder's full-frame :func:`~vos.io.sinks.draw_overlay` took 11.5 ms a
    frame at 1280x720 here, this ~1 ms for one object). The lower id is drawn last, on top,
    as in the recorded PNGs (``lower_id_wins``); colours are the PNG palette's.
    """
    scale = max(view.shape[0] / 720.0, 0.4)
    order = np.argsort(-result.obj_ids, kind="stable")
    for i in order:
        x0, y0, x1, y1 = (int(v) for v in result.boxes_xyxy[i])
        if x1 <= x0 or y1 <= y0:
            continue
        mask = result.masks[i, y0:y1, x0:x1].astype(np.uint8)
        colour = object_color(int(result.obj_ids[i]))
        region = view[y0:y1, x0:x1]
        tinted = cv2.addWeighted(region, 1 - alpha, np.full_like(region, colour), alpha, 0.0)
        cv2.copyTo(tinted, mask, region)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(x0, y0))
        cv2.drawContours(view, contours, -1, colour, max(1, round(2 * scale)))
        text = f"{int(result.obj_ids[i])} {float(result.scores[i]):.2f}"
        # Above the object's topmost pixel (a box corner may lie far from the object).
        top = int(np.argmax(mask.any(1)))
        org = (x0 + int(np.argmax(mask[top])), max(y0 - 4, 12))
        for shade, width in (((255, 255, 255), max(1, round(3 * scale))),
                             (colour, max(1, round(scale)))):
            cv2.putText(view, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, shade, width,
                        cv2.LINE_AA)


def _draw_banner(view: np.ndarray, lines: Sequence[str]) -> None:
    """White text on a dark band in the top-left corner (readable on any frame)."""
    scale = max(view.shape[0] / 720.0, 0.4) * 0.6
    thickness = max(1, round(2 * scale))
    sizes = [cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0]
             for line in lines]
    step = max(h for _, h in sizes) + max(6, round(10 * scale))
    width = max(w for w, _ in sizes) + 12
    band = view[: step * len(lines) + 6, :width]
    band[:] = (band * 0.45).astype(np.uint8)  # darken in place (a view of the image)
    for k, line in enumerate(lines):
        cv2.putText(view, line, (6, step * (k + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)


class Display(Protocol):
    """Where :class:`~vos.live.app.LiveApp` shows frames: :class:`LiveWindow`, or a fake."""

    def show(self, image: np.ndarray, wait_ms: int) -> int:
        """Show a (H, W, 3) uint8 RGB image; return the key pressed (-1 for none)."""
        ...

    def close(self) -> None:
        """Close the window."""
        ...


def check_display() -> None:
    """Fail early, with a hint, where no window can open.

    Raises:
        LiveError: on Linux with neither DISPLAY nor WAYLAND_DISPLAY set.
    """
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise LiveError("no display (DISPLAY is not set): run headless with --no-window")


class LiveWindow:
    """An OpenCV HighGUI window whose mouse events go to ``on_mouse``.

    Args:
        name: window title.
        on_mouse: an OpenCV mouse callback, e.g. :meth:`PromptDrawer.on_mouse`.

    Raises:
        LiveError: no display, or an OpenCV build without GUI support (the -headless wheel).
    """

    def __init__(self, name: str = WINDOW_NAME, on_mouse: Callable[..., None] | None = None) -> None:
        check_display()
        self.name = name
        try:
            # AUTOSIZE keeps window pixels equal to frame pixels, so mouse positions need
            # no rescaling.
            cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE)
            if on_mouse is not None:
                cv2.setMouseCallback(name, on_mouse)
        except cv2.error as exc:
            raise LiveError(
                f"cannot open a window ({' '.join(str(exc).split())[:160]}); an OpenCV "
                "build with GUI support is needed (opencv-python, not -headless), "
                "or run with --no-window"
            ) from None
        self._seen_visible = False

    def show(self, image: np.ndarray, wait_ms: int = 1) -> int:
        """Show an RGB image and pump events; returns the key code, Esc if closed."""
        cv2.imshow(self.name, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        key = int(cv2.waitKey(max(1, wait_ms)))
        try:
            visible = cv2.getWindowProperty(self.name, cv2.WND_PROP_VISIBLE)
        except cv2.error:
            visible = 0.0
        # Backends without the property answer -1 from the start: trust a drop below 1
        # only after the window was once reported visible.
        if visible >= 1:
            self._seen_visible = True
        elif self._seen_visible:
            return 27  # closed with the title-bar button: quit like Esc
        return key

    def close(self) -> None:
        """Destroy the window."""
        try:
            cv2.destroyWindow(self.name)
            cv2.waitKey(1)
        except cv2.error:
            pass
