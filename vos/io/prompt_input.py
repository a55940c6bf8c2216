"""User prompts from text and files: ``--init-box``/``--init-points`` text, index-mask PNGs,
``--prompts`` JSON files (several objects on several frames).

The CLI modes, the batch manifests, live tracking and the web demo all read prompts here;
every prompt is then checked by the one validator, :class:`vos.types.Prompt`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def _read_index_image(path: Path, what: str | None = None) -> np.ndarray:
    """(H, W) integer ids of a mask file: palette, greyscale, 16-bit or 1-bit.

    Args:
        path: the image file.
        what: how errors name it (default ``--init-mask <path>``).

    Raises:
        PromptError: an unreadable file, or a colour image (ids must be pixel values).
    """
    from PIL import Image

    what = what or f"--init-mask {path}"
    try:
        with Image.open(path) as image:
            mode, fmt = image.mode, image.format
            array = np.array(image)
    except (OSError, SyntaxError):
        raise PromptError(f"{what}: not a readable image") from None
    if mode not in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
        raise PromptError(
            f"{what}: a colour ({mode}) image; expected a palette (indexed) PNG or a "
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


# ---------------------------------------------------------------------- --prompts FILE.json
PROMPT_FILE_KEYS = ("frame", "obj_id", "box", "points", "labels", "mask")


def prompts_from_file(
    path: str | Path, image_hw: tuple[int, int], num_frames: int
) -> dict[int, list[Prompt]]:
    """The prompts of a ``--prompts`` JSON file, checked against the video, by frame.

    The file is a JSON list with one entry per object and frame::

        [{"frame": 0,  "obj_id": 1, "box": [x0, y0, x1, y1]},
         {"frame": 30, "obj_id": 1, "points": [[x, y], ...], "labels": [1, 0, ...]},
         {"frame": 12, "obj_id": 2, "mask": "masks/00012.png"},
         {"frame": 40, "obj_id": 2, "box": [x0, y0, x1, y1], "points": [[x, y]], "labels": [0]}]

    - ``frame``: 0-based frame index, within the video (and ``--max-frames``).
    - ``obj_id``: the object's id, an int in 1..254 (the ids of the palette PNG outputs).
    - one of ``box`` (XYXY in frame pixels), ``points`` with ``labels`` (XY in frame pixels;
      1 positive, 0 negative, one per point), a box with points, or ``mask``.
    - ``mask``: a PNG path relative to the JSON file; a binary mask (its non-zero pixels) or
      an index/palette PNG, of which the pixels equal to ``obj_id`` are taken.

    An object enters the video at its first prompted frame; a later entry for the same
    object replaces its mask on that frame (a correction). One object has at most one entry
    per frame.

    Args:
        path: the JSON file.
        image_hw: (H, W) of the video's frames.
        num_frames: frames of the video (after ``--max-frames``); ``frame`` must be below.

    Returns:
        frame_idx -> the prompts on that frame (with their ``obj_id``), in file order;
        frames ascending.

    Raises:
        PromptError: one line naming the file, the entry's index and what was expected.
    """
    path = Path(path)
    what = f"--prompts {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptError(f"{what}: no such file") from None
    except IsADirectoryError:
        raise PromptError(f"{what}: a folder, expected a JSON file") from None
    except UnicodeDecodeError:
        raise PromptError(f"{what}: not UTF-8 text, expected a JSON file") from None
    except OSError as exc:
        raise PromptError(f"{what}: cannot read the file ({exc.strerror or exc})") from None
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptError(f"{what}: not valid JSON ({exc.msg} at line {exc.lineno} column "
                          f"{exc.colno})") from None
    if not isinstance(entries, list) or not entries:
        raise PromptError(f"{what}: expected a non-empty JSON list of prompts like "
                          '[{"frame": 0, "obj_id": 1, "box": [x0, y0, x1, y1]}]')
    by_frame: dict[int, list[Prompt]] = {}
    seen: dict[tuple[int, int], int] = {}
    for index, entry in enumerate(entries):
        where = f"{what}: entry {index}"
        frame, prompt = _file_entry(entry, where, path.parent, image_hw, num_frames)
        key = (frame, int(prompt.obj_id))  # type: ignore[arg-type]
        if key in seen:
            raise PromptError(f"{where}: object {key[1]} already has a prompt on frame "
                              f"{frame} (entry {seen[key]}); give one entry per object and frame")
        seen[key] = index
        by_frame.setdefault(frame, []).append(prompt)
    return dict(sorted(by_frame.items()))


def _file_entry(
    entry: Any, where: str, base: Path, image_hw: tuple[int, int], num_frames: int
) -> tuple[int, Prompt]:
    """One ``--prompts`` entry as (frame_idx, checked Prompt); errors start with ``where``."""
    if not isinstance(entry, dict):
        raise PromptError(f"{where}: expected an object like "
                          '{"frame": 0, "obj_id": 1, "box": [x0, y0, x1, y1]}, '
                          f"got {_short(entry)}")
    unknown = [key for key in entry if key not in PROMPT_FILE_KEYS]
    if unknown:
        raise PromptError(f"{where}: unknown key {unknown[0]!r} (expected "
                          f"{', '.join(PROMPT_FILE_KEYS)})")
    frame = _int_field(entry, "frame", where)
    if not 0 <= frame < num_frames:
        raise PromptError(f"{where}: frame {frame} out of range; the video has {num_frames} "
                          f"frames (0..{num_frames - 1})")
    obj_id = _int_field(entry, "obj_id", where)
    if not 1 <= obj_id <= MAX_OBJECT_ID:
        raise PromptError(f"{where}: obj_id {obj_id} out of range; expected an int in "
                          f"1..{MAX_OBJECT_ID} (the ids of the palette PNG outputs)")
    if not any(key in entry for key in ("box", "points", "mask")):
        raise PromptError(f"{where}: no prompt; expected \"box\", \"points\" with \"labels\", "
                          "or \"mask\"")
    if "mask" in entry and ("box" in entry or "points" in entry):
        raise PromptError(f"{where}: give either \"mask\" or \"box\"/\"points\", not both")
    if ("points" in entry) != ("labels" in entry):
        raise PromptError(f"{where}: " + ("points without labels; expected \"labels\": 1 "
                          "(positive) or 0 (negative), one per point" if "points" in entry
                          else "labels without points"))
    try:
        if "mask" in entry:
            prompt = Prompt(mask=_entry_mask(entry["mask"], obj_id, where, base, image_hw),
                            obj_id=obj_id)
        else:
            box = _numbers(entry["box"], (4,), "box", "[x0, y0, x1, y1]", where) \
                if "box" in entry else None
            points = labels = None
            if "points" in entry:
                points = _numbers(entry["points"], (-1, 2), "points", "[[x, y], ...]", where)
                labels = _labels(entry["labels"], len(points), where)
            prompt = Prompt(box_xyxy=box, points_xy=points, point_labels=labels, obj_id=obj_id)
        return frame, prompt.checked(image_hw, clip=False)
    except PromptError as exc:
        message = str(exc)
        raise PromptError(message if message.startswith(where) else f"{where}: {message}") \
            from None


def _int_field(entry: dict, key: str, where: str) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PromptError(f"{where}: {key!r} expected an integer, got "
                          + ("nothing" if key not in entry else _short(value)))
    return value


def _numbers(value: Any, shape: tuple[int, int] | tuple[int], name: str, form: str,
             where: str) -> np.ndarray:
    """A JSON list of finite numbers (never booleans or strings) of ``shape`` (-1: any >= 1)."""
    rows = value if len(shape) == 2 and isinstance(value, list) else [value]
    flat: list[Any] = []
    for row in rows:
        if not isinstance(row, list) or len(row) != shape[-1]:
            flat = []
            break
        flat.extend(row)
    if not flat or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        raise PromptError(f"{where}: {name} expected {form} (numbers), got {_short(value)}")
    if not all(math.isfinite(v) for v in flat):
        raise PromptError(f"{where}: {name} expected finite numbers, got {_short(value)}")
    return np.array(flat, np.float32).reshape(shape)


def _labels(value: Any, num_points: int, where: str) -> np.ndarray:
    if (not isinstance(value, list) or len(value) != num_points
            or not all(type(v) is int and v in (0, 1) for v in value)):
        raise PromptError(f"{where}: expected one label per point ({num_points}), each 1 "
                          f"(positive) or 0 (negative), got labels {_short(value)}")
    return np.array(value, np.int64)


def _entry_mask(value: Any, obj_id: int, where: str, base: Path,
                image_hw: tuple[int, int]) -> np.ndarray:
    """The (H, W) bool mask of an entry's ``mask`` PNG (path relative to the JSON file)."""
    if not isinstance(value, str) or not value:
        raise PromptError(f"{where}: mask expected a PNG path (relative to the JSON file), "
                          f"got {_short(value)}")
    path = base / value
    what = f"{where}: mask {value}"
    if not path.is_file():
        raise PromptError(f"{what}: no such file ({path})")
    index = _read_index_image(path, what)
    if index.shape != image_hw:
        raise PromptError(f"{what}: size {index.shape[1]}x{index.shape[0]} differs from the "
                          f"video's {image_hw[1]}x{image_hw[0]}")
    ids = [int(v) for v in np.unique(index) if v != 0]
    if len(ids) == 1:
        return index == ids[0]  # a binary mask: 0/1, 0/255 or any single value
    ids = [i for i in ids if i != 255]  # DAVIS "void"
    if obj_id not in ids:
        raise PromptError(f"{what}: " + ("the mask is empty (no object pixels)" if not ids else
                          f"an index mask without id {obj_id} (it holds ids "
                          f"{', '.join(map(str, ids[:8]))}{', ...' if len(ids) > 8 else ''})"))
    return index == obj_id


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def prompt_plan(
    init_prompts: Sequence[Prompt],
    init_frame: int,
    file_prompts: Mapping[int, Sequence[Prompt]] | None = None,
) -> dict[int, list[Prompt]]:
    """Every prompt of a run by frame, each with its obj_id (frames ascending).

    The ``--init-*`` prompts apply on ``init_frame``, before the file's prompts of that
    frame. Prompts without an id (``--init-box``, ``--init-points``) are numbered in order as
    the tracker numbers them (1, 2, ..., above the ids before them), skipping every id given
    explicitly anywhere in the run (``--init-mask``, ``--prompts``), so that no object
    replaces another.

    Args:
        init_prompts: the ``--init-*`` prompts (checked).
        init_frame: the frame they apply to.
        file_prompts: frame_idx -> prompts with ids, e.g. :func:`prompts_from_file`'s.

    Returns:
        frame_idx -> the prompts on that frame, every one with an ``obj_id``.

    Raises:
        PromptError: an object prompted on one frame by both an ``--init-*`` flag and the file.
    """
    by_frame: dict[int, list[Prompt]] = {}
    if init_prompts:
        by_frame[init_frame] = list(init_prompts)
    init_ids = {p.obj_id for p in init_prompts if p.obj_id is not None}
    for frame, prompts in (file_prompts or {}).items():
        twice = sorted(p.obj_id for p in prompts if frame == init_frame and p.obj_id in init_ids)
        if twice:
            raise PromptError(f"object {twice[0]}: prompted on frame {frame} by --init-mask and "
                              "by --prompts; give one prompt per object and frame")
        by_frame.setdefault(frame, []).extend(prompts)
    given = {p.obj_id for ps in by_frame.values() for p in ps if p.obj_id is not None}
    next_id = 1
    plan: dict[int, list[Prompt]] = {}
    for frame in sorted(by_frame):
        for prompt in by_frame[frame]:
            if prompt.obj_id is None:
                while next_id in given:
                    next_id += 1
                prompt = dataclasses.replace(prompt, obj_id=next_id)
            next_id = max(next_id, prompt.obj_id + 1)  # type: ignore[operator]
            plan.setdefault(frame, []).append(prompt)
    return plan


def tracker_numbering(prompts: Sequence[Prompt]) -> list[int]:
    """The ids a fresh tracker gives ``prompts`` added on one frame, in order (a prompt
    without an id takes the next one; a later prompt with the same id replaces the object)."""
    ids, next_id = [], 1
    for prompt in prompts:
        obj_id = next_id if prompt.obj_id is None else prompt.obj_id
        ids.append(obj_id)
        next_id = max(next_id, obj_id + 1)
    return ids
