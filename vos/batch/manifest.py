"""Manifest reading: CSV or JSONL rows in, one picklable :class:`VideoJob` per row out.

A row that cannot be understood still becomes a job, with ``error`` set, so one typo is
recorded as a failed video instead of stopping the batch. Box and point texts are read by the
same parsers as the CLI's ``--init-box``/``--init-points`` (:mod:`vos.io.prompt_input`); the
JSON-list forms of JSONL manifests are read here.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vos.batch.errors import BatchError, one_line
from vos.config import RunConfig
from vos.io.prompt_input import parse_box, parse_points
from vos.types import PromptError

_MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
_KINDS = {"box": "boxes", "boxes": "boxes", "point": "points", "points": "points",
          "mask": "mask", "auto": "auto"}

Box = tuple[float, float, float, float]
Points = tuple[tuple[float, float, int], ...]


@dataclass(frozen=True)
class VideoJob:
    """One manifest row, parsed into picklable plain data.

    Attributes:
        row: 1-based manifest line (CSV: line number, header included), for messages.
        key: output folder name under the batch output folder.
        video: the video as written in the manifest.
        source: the video path resolved against the manifest's folder.
        boxes: one (x0, y0, x1, y1) per object, XYXY in frame pixels.
        points: one tuple of (x, y, label) per object, in frame pixels; label 1 is a
            foreground point, 0 a background one.
        mask: first-frame index/palette PNG (resolved), or None.
        auto: automatic-mask-generator proposals to keep on the init frame (0 = the batch
            default), or None.
        init_frame: frame index the prompts apply to.
        max_frames: process only the first N frames (None = all).
        error: why the row cannot run (the job is then recorded as failed without running).
    """

    row: int
    key: str
    video: str
    source: str
    boxes: tuple[Box, ...] = ()
    points: tuple[Points, ...] = ()
    mask: str | None = None
    auto: int | None = None
    init_frame: int = 0
    max_frames: int | None = None
    error: str | None = None

    def digest(self, cfg: RunConfig) -> str:
        """A hash of what determines this video's outputs (a changed row is not skipped)."""
        payload = {k: v for k, v in asdict(self).items() if k not in ("row", "error")}
        relevant = {"model": asdict(cfg.model), "prompt": asdict(cfg.prompt),
                    "tracker": asdict(cfg.tracker), "io": asdict(cfg.io), "seed": cfg.seed}
        text = json.dumps([payload, relevant], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_manifest(path: Path, *, max_frames: int | None = None) -> list[VideoJob]:
    """Parse a CSV (header ``video,prompt,...``) or JSONL manifest into jobs.

    A row that cannot be understood becomes a job with ``error`` set (recorded as failed),
    so one typo does not stop the batch; only an unreadable manifest raises.

    Args:
        path: the manifest; ``.jsonl``/``.ndjson`` is JSON Lines, anything else CSV.
        max_frames: default frame limit of rows without a ``max_frames`` value.

    Returns:
        The jobs in manifest order.

    Raises:
        BatchError: missing or empty manifest, no ``video`` column, invalid JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise BatchError(f"{path}: no such manifest file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BatchError(f"{path}: not a text file (expected a UTF-8 CSV or JSONL manifest)") from None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = list(_jsonl_rows(path, text))
    else:
        rows = list(_csv_rows(path, text))
    if not rows:
        raise BatchError(f"{path}: the manifest lists no videos")
    jobs = [_parse_row(row_no, row, path.parent, max_frames) for row_no, row in rows]
    # Only rows that can run claim their output folder: a broken row must not block a
    # later valid row for the same video.
    seen: dict[str, int] = {}
    for i, job in enumerate(jobs):
        if job.error is not None:
            continue
        if job.key in seen:
            jobs[i] = dataclasses.replace(job, error=(
                f"row {job.row}: output folder {job.key!r} is already used by row "
                f"{seen[job.key]}; add an 'id' column to tell the videos apart"))
        else:
            seen[job.key] = job.row
    return jobs


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text), skipinitialspace=True)
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "video" not in fields:
        raise BatchError(f"{path}: expected a CSV header with a 'video' column (video,prompt,...)")
    reader.fieldnames = fields
    for row in reader:
        values = {k: v.strip() for k, v in row.items() if k and isinstance(v, str) and v.strip()}
        if values:
            yield reader.line_num, values


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BatchError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise BatchError(f"{path}:{line_no}: expected a JSON object per line")
        yield line_no, {str(k).lower(): v for k, v in row.items() if v not in (None, "")}


def _parse_row(row_no: int, row: dict[str, Any], base: Path, max_frames: int | None) -> VideoJob:
    video = str(row.get("video", "")).strip()
    key = str(row.get("id") or Path(video).stem or Path(video).name).strip()
    job = VideoJob(row=row_no, key=key or f"row{row_no}", video=video,
                   source=str(_resolve(base, video)) if video else "")
    try:
        if not video:
            raise ValueError("no video given")
        if key in (".", "..") or any(sep in key for sep in ("/", "\\")) or not key:
            raise ValueError(f"id {key!r}: expected a plain folder name")
        boxes: list[Box] = []
        points: list[Points] = []
        mask: str | None = None
        auto: int | None = None
        if "prompt" in row:
            kind, value = _split_prompt(row["prompt"])
            if kind in row:
                raise ValueError(f"both 'prompt' and '{kind}' given; use one of them")
            row = {**row, kind: value}
        if "boxes" in row:
            boxes = _parse_boxes(row["boxes"])
        if "points" in row:
            points = _parse_point_sets(row["points"])
        if "mask" in row:
            mask = str(_resolve(base, str(row["mask"])))
        if "auto" in row and row["auto"] not in (False, "false", "0", 0):
            auto = _parse_auto(row["auto"])
        if not (boxes or points or mask) and auto is None:
            raise ValueError("no prompt: give boxes, points, a first-frame mask or auto")
        if auto is not None and (boxes or points or mask):
            raise ValueError("auto proposals cannot be combined with other prompts")
        init_frame = _parse_int(row.get("init_frame", 0), "init_frame", minimum=0)
        limit = row.get("max_frames", max_frames)
        frames = None if limit is None else _parse_int(limit, "max_frames", minimum=1)
    except (ValueError, TypeError) as exc:
        return dataclasses.replace(job, error=f"row {row_no}: {one_line(exc)}")
    return dataclasses.replace(job, boxes=tuple(boxes), points=tuple(points), mask=mask,
                               auto=auto, init_frame=init_frame, max_frames=frames)


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _split_prompt(value: Any) -> tuple[str, Any]:
    """The kind of a generic ``prompt`` cell: ``auto[:N]``, ``box:``, ``points:``, ``mask:``."""
    if isinstance(value, dict):
        if len(value) != 1:
            raise ValueError(f"prompt {value!r}: expected one of boxes, points, mask, auto")
        ((kind, inner),) = value.items()
        return _canonical_kind(str(kind)), inner
    if isinstance(value, list):
        return "boxes", value
    text = str(value).strip()
    head, sep, rest = text.partition(":")
    if text.lower() == "auto" or (sep and head.strip().lower() == "auto"):
        return "auto", rest.strip() if sep else True
    if sep and head.strip().lower() in ("box", "boxes", "points", "point", "mask"):
        return _canonical_kind(head.strip()), rest.strip()
    if text.startswith("["):
        return "boxes", text
    if text.lower().endswith(_MASK_SUFFIXES):
        return "mask", text
    return "boxes", text


def _canonical_kind(kind: str) -> str:
    if kind.lower() not in _KINDS:
        raise ValueError(f"prompt kind {kind!r}: expected boxes, points, mask or auto")
    return _KINDS[kind.lower()]


def _json_list(value: Any, name: str) -> Any:
    """The JSON a text cell holds when it starts with ``[``; any other value as it is."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{name} {value.strip()!r}: not a valid JSON list") from None
    return value


def _is_number_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _parse_boxes(value: Any) -> list[Box]:
    """``"x0,y0,x1,y1;..."``, a JSON list of boxes, one box, or a list of those."""
    if isinstance(value, str) and not value.strip().startswith("["):
        items: list[Any] = [part for part in value.split(";") if part.strip()]
    else:
        value = _json_list(value, "boxes")
        if _is_number_list(value):
            value = [value]
        items = value if isinstance(value, list) else [value]
    boxes = [_box(item) for item in items]
    if not boxes:
        raise ValueError("boxes: no box given")
    return boxes


def _box(item: Any) -> Box:
    """One box from ``"x0,y0,x1,y1"`` text or a sequence of four finite numbers."""
    try:
        numbers = parse_box(item).tolist() if isinstance(item, str) else [float(v) for v in item]
    except (TypeError, ValueError):  # PromptError is a ValueError
        numbers = []
    if len(numbers) != 4 or not all(np.isfinite(numbers)):
        raise ValueError(f"boxes {item!r}: expected x0,y0,x1,y1 (four numbers) per box, "
                         "boxes separated by ';'")
    return (numbers[0], numbers[1], numbers[2], numbers[3])


def _parse_point_sets(value: Any) -> list[Points]:
    """Objects separated by ``|`` of ``x,y[,label]`` points, or a JSON list of point lists."""
    value = _json_list(value, "points")
    objects: list[Points] = []
    if isinstance(value, str):
        objects.extend(_text_points(text) for text in value.split("|") if text.strip())
    elif isinstance(value, list):
        if value and _is_number_list(value[0]):
            value = [value]  # one object's points
        for obj in value:
            if isinstance(obj, str):
                objects.extend(_parse_point_sets(obj))
            else:
                objects.append(_list_points(obj))
    else:
        raise ValueError(f"points {value!r}: expected text or a JSON list")
    if not objects:
        raise ValueError("points: no point given")
    return objects


def _text_points(text: str) -> Points:
    """One object's ``"x,y[,label] ..."`` text (labels default to 1)."""
    try:
        points_xy, labels = parse_points(text)
    except PromptError:
        raise ValueError(f"points {text!r}: expected 'x,y[,label] ...' with label 0 or 1, "
                         "objects separated by '|'") from None
    return tuple((float(x), float(y), int(label))
                 for (x, y), label in zip(points_xy.tolist(), labels.tolist(), strict=True))


def _list_points(obj: Any) -> Points:
    """One object's JSON points: a list of [x, y] or [x, y, label] (labels default to 1)."""
    parsed = []
    for point in obj if isinstance(obj, list) else []:
        if not _is_number_list(point) or len(point) not in (2, 3) or (
                len(point) == 3 and point[2] not in (0, 1)):
            raise ValueError(f"points {obj!r}: expected [x, y] or [x, y, label 0/1] items")
        parsed.append((float(point[0]), float(point[1]), int(point[2]) if len(point) == 3 else 1))
    if not parsed:
        raise ValueError(f"points {obj!r}: expected a list of [x, y(, label)] points")
    return tuple(parsed)


def _parse_auto(value: Any) -> int | None:
    if value is True or (isinstance(value, str) and value.strip().lower() in ("", "true", "auto")):
        return 0  # 0 = the batch default (--auto-max-masks)
    return _parse_int(value, "auto", minimum=1)


def _parse_int(value: Any, name: str, *, minimum: int) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError(f"{name} {value!r}: expected an integer") from None
    if isinstance(number, bool) or number < minimum:
        raise ValueError(f"{name} {value!r}: expected an integer >= {minimum}")
    return number
