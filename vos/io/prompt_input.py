"""User prompts from text and files: ``--init-box``/``--init-points`` text, index-mask PNGs.

The CLI modes, the batch manifests, live tracking and the web demo all read prompts here;
every prompt is then checked by the one validator, :class:`vos.types.Prompt`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vos.types import Prompt, PromptError

# Ids a DAVIS palette PNG can hold (0 is background, 255 is "void").
MAX_OBJECT_ID = 254


def parse_box(text: str) -> np.ndarray:
    """``"x0,y0,x1,y1"`` -> (4,) float32 box in frame pixels.

    Raises:
        PromptError: not four numbers.
    """
    try:
        values = [float(v) for v in text.split(",")]  # float() allows spaces around a number
    except ValueError:
        values = []
    if len(values) != 4:
        raise PromptError(f"--init-box {text!r}: expected x0,y0,x1,y1 (four numbers)")
    return np.array(values, np.float32)


def parse_points(text: str) -> tuple[np.ndarray, np.ndarray]:
    """``"x,y[,label] x,y[,label] ..."`` -> (P, 2) points and (P,) labels (default 1).

    Raises:
        PromptError: a token that is not ``x,y`` or ``x,y,label`` with label 0 or 1, or none.
    """
    points, labels = [], []
    for token in text.replace(";", " ").split():
        parts = token.split(",")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 3) or (len(numbers) == 3 and numbers[2] not in (0.0, 1.0)):
            raise PromptError(
                f"--init-points {text!r}: expected 'x,y[,label] ...' with label 0 or 1"
            )
        points.append(numbers[:2])
        labels.append(int(numbers[2]) if len(numbers) == 3 else 1)
    if not points:
        raise PromptError(f"--init-points {text!r}: no points given")
    return np.array(points, np.float32), np.array(labels, np.int64)


def masks_from_png(path: Path, image_hw: tuple[int, int]) -> list[Prompt]:
    """One mask prompt per object id of an index/palette PNG (or a binary mask: id 1).

    Raises:
        PromptError: a missing or unreadable file, another size than the video, or no object.
    """
    if not path.exists():
        raise PromptError(f"--init-mask {path}: no such file")
    index = _read_index_image(path)
    if index.shape != image_hw:
        raise PromptError(
            f"--init-mask {path}: size {index.shape[1]}x{index.shape[0]} differs from the "
            f"video's {image_hw[1]}x{image_hw[0]}"
        )
    values = {int(v) for v in np.unique(index)}
    if values == {0, 255} or values == {255}:
        # A plain black-and-white mask (0/255), not a DAVIS map whose 255 means "void".
        index = (index == 255).astype(np.uint8)
    ids = [int(i) for i in np.unique(index) if i not in (0, 255)]
    if not ids:
        raise PromptError(f"--init-mask {path}: the mask is empty (no object pixels)")
    if ids[-1] > MAX_OBJECT_ID:
        raise PromptError(
            f"--init-mask {path}: ids up to {ids[-1]} ({len(ids)} objects); palette PNG outputs "
            f"hold ids 1..{MAX_OBJECT_ID}, so number the objects from 1 up to {MAX_OBJECT_ID}"
        )
    return [Prompt(mask=index == i, obj_id=i) for i in ids]


def _read_index_image(path: Path) -> np.ndarray:
    """(H, W) integer ids of a mask file: palette, greyscale, 16-bit or 1-bit.

    Raises:
        PromptError: an unreadable file, or a colour image (ids must be pixel values).
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            mode, fmt = image.mode, image.format
            array = np.array(image)
    except (OSError, SyntaxError):
        raise PromptError(f"--init-mask {path}: not a readable image") from None
    if mode not in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
        raise PromptError(
            f"--init-mask {path}: a colour ({mode}) image; expected a palette (indexed) PNG or a "
            "single-channel mask whose pixel values are object ids"
        )
    if fmt == "JPEG":
        # Lossy: grey levels are noise around black and white, not ids.
        return (array > 127).astype(np.uint8)
    return array.astype(np.int64)


def prompts_from_flags(
    boxes: Sequence[str],
    point_sets: Sequence[str],
    mask_png: str | None,
    image_hw: tuple[int, int],
) -> list[Prompt]:
    """The prompts of ``--init-box`` (one object each), ``--init-points`` and ``--init-mask``.

    Args:
        boxes: ``x0,y0,x1,y1`` texts.
        point_sets: ``x,y[,label] ...`` texts, one object each.
        mask_png: an index/palette PNG, one object per id, or None.
        image_hw: (H, W) of the frames (the mask must match).
    """
    prompts = [Prompt(box_xyxy=parse_box(text)) for text in boxes]
    for text in point_sets:
        points, labels = parse_points(text)
        prompts.append(Prompt(points_xy=points, point_labels=labels))
    if mask_png:
        prompts.extend(masks_from_png(Path(mask_png), image_hw))
    return prompts


def check_prompts(prompts: Sequence[Prompt], image_hw: tuple[int, int]) -> list[Prompt]:
    """The initial prompts of a run, checked against the frame size before any model loads.

    Stricter than the library's ``add_object``: a box reaching past the frame is refused,
    not clipped (given by hand, it is more likely a mistake than a detector's overshoot).

    Raises:
        PromptError: no prompt, or one that does not fit the frame.
    """
    if not prompts:
        raise PromptError("no initial prompt: give --init-box, --init-points or --init-mask")
    return [prompt.checked(image_hw, clip=False) for prompt in prompts]
