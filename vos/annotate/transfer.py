"""Sessions that move, and masks that come in.

- A **session bundle** (``<name>.session.zip``) holds one session: the video, the log, the
  prompts and their decoded results, the predictor's saved facts and every frame's results.
  Imported into another server (or another browser), it opens as it was: same objects,
  prompts, masks and undo history. The kept tracker states and the embeddings stay behind
  (they are large and model-specific): the first re-track there starts from the prompts.
- **Masks** in the layouts this project and DAVIS use become prompts: palette or grey PNGs
  named by frame (``00012.png``, or the frame's index), per-frame JSON records with COCO RLE
  (``vos.run``'s ``json/`` files), a COCO-style list of ``{"image_id", "segmentation"}``
  annotations, or a zip of any of these (an export of this annotator included).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from vos.annotate.errors import AnnotatorError
from vos.io.atomic import atomic_open
from vos.io.sinks import decode_rle

if TYPE_CHECKING:
    from vos.annotate.session import Session

BUNDLE_FORMAT = "repvit-vos-session/1"
# What a bundle may hold, and nothing else (no path leaves the new session's folder).
BUNDLE_ENTRY = re.compile(
    r"(session\.json|ops\.jsonl|predictor\.json|entries/[\w.]+\.npz|results/\d+\.(png|json)"
    r"|video/[\w.+-]{1,128}|video/frames/[\w.+-]{1,128})")


# ---------------------------------------------------------------------- bundles
def write_bundle(session: Session, path: Path) -> None:
    """Write ``session`` as one zip at ``path`` (atomically). Call with its lock held."""
    video = session.video_path
    files: list[tuple[Path, str]] = []
    for name in ("ops.jsonl", "predictor.json"):
        if (session.folder / name).is_file():
            files.append((session.folder / name, name))
    for sub in ("entries", "results"):
        files += [(p, f"{sub}/{p.name}") for p in sorted((session.folder / sub).glob("*"))
                  if p.is_file() and not p.name.startswith(".")]
    if video.is_dir():
        files += [(p, f"video/frames/{p.name}") for p in sorted(video.iterdir()) if p.is_file()]
        video_name = "video/frames"
    else:
        files.append((video, f"video/{video.name}"))
        video_name = f"video/{video.name}"
    about = {"format": BUNDLE_FORMAT, "name": session.meta["name"], "video": video_name,
             "created": session.meta["created"]}
    with atomic_open(path, "wb") as handle, zipfile.ZipFile(handle, "w",
                                                             zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("session.json", json.dumps(about, indent=1))
        for source, arcname in files:
            # Videos and PNGs are compressed already.
            kind = zipfile.ZIP_STORED if arcname.startswith(("video/", "results/")) \
                else zipfile.ZIP_DEFLATED
            archive.write(source, arcname, compress_type=kind)


def unpack_bundle(data: Any, folder: Path, max_bytes: int) -> tuple[str, Path]:
    """Unpack a bundle (a file object) into a new session's folder.

    Returns:
        (the video's name, the video file or frame folder inside ``folder``).

    Raises:
        AnnotatorError: not a bundle of this format, an unexpected entry, too large.
    """
    try:
        archive = zipfile.ZipFile(data)
    except zipfile.BadZipFile:
        raise AnnotatorError("the file is not a session bundle (not a zip file)") from None
    with archive:
        try:
            about = json.loads(archive.read("session.json"))
        except (KeyError, ValueError):
            raise AnnotatorError("the file is not a session bundle (no session.json)") from None
        if not isinstance(about, dict) or about.get("format") != BUNDLE_FORMAT:
            raise AnnotatorError(f"the bundle's format is {about.get('format')!r}; this "
                                 f"server reads {BUNDLE_FORMAT}")
        total = 0
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename
            if not BUNDLE_ENTRY.fullmatch(name) or ".." in PurePosixPath(name).parts:
                raise AnnotatorError(f"the bundle holds an unexpected file {name[:80]!r}")
            total += info.file_size
            if total > max_bytes:
                raise AnnotatorError(f"the bundle unpacks to more than {max_bytes >> 20} MB")
        for info in archive.infolist():
            if info.is_dir() or info.filename == "session.json":
                continue
            target = folder / info.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, target.open("wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
    video = folder / str(about.get("video", ""))
    if not str(about.get("video", "")).startswith("video/") or not video.exists():
        raise AnnotatorError("the bundle holds no video")
    name = " ".join(str(about.get("name") or "session").split())[:80] or "session"
    return name, video


# ---------------------------------------------------------------------- masks
def _frame_index(key: Any, frame_names: list[str]) -> int | None:
    """A frame named in a mask file (its name, or its index) -> its index, or None."""
    text = str(key)
    stem = PurePosixPath(text).stem if "." in text else text
    if stem in frame_names:
        return frame_names.index(stem)
    if stem.isdigit() and 0 <= int(stem) < len(frame_names):
        return int(stem)
    return None


def read_masks(files: list[tuple[str, bytes]], frame_names: list[str],
               image_hw: tuple[int, int]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """Index masks per frame from uploaded mask files (see the module docstring).

    Args:
        files: (file name, contents) of each upload.
        frame_names: the session's frame names, in order.
        image_hw: (H, W) every mask must have.

    Returns:
        (frame_idx -> (H, W) uint8 index mask, file object id -> name where one is given).

    Raises:
        AnnotatorError: nothing usable, a mask of another size, an unknown frame.
    """
    masks: dict[int, np.ndarray] = {}
    names: dict[int, str] = {}
    expanded: list[tuple[str, bytes]] = []
    for filename, data in files:
        if filename.lower().endswith(".zip"):
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    for info in archive.infolist():
                        if not info.is_dir() and info.file_size < 64 << 20:
                            expanded.append((info.filename, archive.read(info)))
            except zipfile.BadZipFile:
                raise AnnotatorError(f"{Path(filename).name}: not a readable zip file") from None
        else:
            expanded.append((filename, data))
    for filename, data in expanded:
        base = PurePosixPath(filename.replace("\\", "/")).name
        lower = base.lower()
        if lower == "objects.json":
            try:
                names.update({int(k): str(v) for k, v in json.loads(data).items()})
            except (ValueError, AttributeError):
                raise AnnotatorError(f"{base}: expected {{\"id\": \"name\"}}") from None
        elif lower.endswith(".png"):
            frame_idx = _frame_index(base, frame_names)
            if frame_idx is None:
                raise AnnotatorError(f"{base}: no frame of this video is called "
                                     f"{PurePosixPath(base).stem}")
            masks[frame_idx] = _png_mask(base, data, image_hw)
        elif lower.endswith(".json") and lower != "export.json":
            _json_masks(base, data, frame_names, image_hw, masks)
    if not masks:
        raise AnnotatorError("no masks found: upload palette PNGs named by frame, per-frame "
                             "JSON with COCO RLE, a COCO annotation list, or a zip of them")
    return masks, names


def _png_mask(name: str, data: bytes, image_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode not in ("P", "L"):
                raise AnnotatorError(f"{name}: a {image.mode} image, not an index mask "
                                     "(expected a palette or grey PNG of object ids)")
            index = np.array(image, dtype=np.uint8)
    except (OSError, SyntaxError, UnidentifiedImageError):
        raise AnnotatorError(f"{name}: not a readable PNG mask") from None
    if index.shape != image_hw:
        raise AnnotatorError(f"{name} is {index.shape[1]}x{index.shape[0]}; the video is "
                             f"{image_hw[1]}x{image_hw[0]}")
    return index


def _json_masks(name: str, data: bytes, frame_names: list[str], image_hw: tuple[int, int],
                masks: dict[int, np.ndarray]) -> None:
    try:
        doc = json.loads(data)
    except ValueError:
        raise AnnotatorError(f"{name}: not valid JSON") from None
    # One frame's record (vos.run's json/<frame>.json), or COCO-style annotations.
    if isinstance(doc, dict) and "objects" in doc:
        items = [(doc.get("frame_name", doc.get("frame_idx", PurePosixPath(name).stem)),
                  o.get("obj_id"), o.get("segmentation")) for o in doc["objects"]]
    else:
        annotations = doc.get("annotations", []) if isinstance(doc, dict) else doc
        if not isinstance(annotations, list):
            raise AnnotatorError(f"{name}: expected a frame record or a list of annotations")
        items = [(a.get("image_id", a.get("frame_idx")),
                  a.get("obj_id", a.get("track_id", a.get("category_id", a.get("id")))),
                  a.get("segmentation")) for a in annotations if isinstance(a, dict)]
    checked = []
    for frame_key, obj_id, rle in items:
        frame_idx = _frame_index(frame_key, frame_names)
        if frame_idx is None:
            raise AnnotatorError(f"{name}: no frame of this video is called {frame_key}")
        if not isinstance(obj_id, int) or not 1 <= obj_id <= 255:
            raise AnnotatorError(f"{name}: object ids must be whole numbers from 1 to 255")
        if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
            raise AnnotatorError(f"{name}: expected COCO RLE segmentations "
                                 "({\"size\": [h, w], \"counts\": ...})")
        if tuple(rle["size"]) != image_hw:
            raise AnnotatorError(f"{name}: a mask is {rle['size'][1]}x{rle['size'][0]}; the "
                                 f"video is {image_hw[1]}x{image_hw[0]}")
        checked.append((frame_idx, obj_id, rle))
    # Lower ids win overlapping pixels, as in every index mask this project writes.
    for frame_idx, obj_id, rle in sorted(checked, key=lambda item: item[1]):
        try:
            mask = decode_rle(rle) if isinstance(rle["counts"], str) else _uncompressed(rle)
        except (ValueError, TypeError):
            raise AnnotatorError(f"{name}: a segmentation could not be decoded") from None
        index = masks.setdefault(frame_idx, np.zeros(image_hw, np.uint8))
        index[mask & (index == 0)] = obj_id


def _uncompressed(rle: dict[str, Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    h, w = rle["size"]
    compressed = mask_utils.frPyObjects(rle, h, w)
    return mask_utils.decode(compressed).astype(bool)
