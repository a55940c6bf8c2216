"""Dataset layouts on disk: where frames, annotations and sequence lists are.

Every evaluation driver and scorer reads a dataset through :class:`VosDataset`: a root plus
a row of the preset table (:mod:`vos.eval.presets`), with its folders optionally overridden.
To add a dataset, add a preset; a new annotation storage or meta schema is a method here.

Example:
    >>> data = VosDataset(Path("YouTube-VOS/2019/valid"), preset("youtube-vos"))
    >>> for seq in data.sequences():
    ...     objects = data.read_objects(seq, data.annotation_stems(seq)[0])  # {obj_id: mask}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from vos.eval.presets import PRESETS, VosPreset
from vos.io.davis_png import read_palette_png
from vos.io.sources import IMAGE_SUFFIXES

__all__ = ["DatasetError", "DavisLayout", "VosDataset", "vis_videos"]

VOID_ID = 255


class DatasetError(ValueError):
    """A dataset root or annotation file does not have the expected layout."""


@dataclass(frozen=True)
class VosDataset:
    """A semi-supervised VOS dataset: a root laid out as ``preset`` describes.

    Attributes:
        root: the dataset root (for YouTube-VOS/MOSE/LVOS the split folder, e.g. ``valid``).
        preset: the layout, object and scoring rules.
        split: fills ``{split}`` of the preset's sequence list (None: the preset's split).
        frames_dir: frames folder overriding the preset's (relative paths are under root).
        annotations_dir_: annotations folder overriding the preset's (same).
        list_file: sequence list overriding the preset's (a ``.txt`` or a ``meta.json``).
    """

    root: Path
    preset: VosPreset
    split: str | None = None
    frames_dir: Path | None = None
    annotations_dir_: Path | None = None
    list_file: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.split is None:
            object.__setattr__(self, "split", self.preset.split)

    # ------------------------------------------------------------------ folders
    def _under_root(self, override: Path | None, default: str) -> Path:
        return self.root / (override if override is not None else default)

    @property
    def frames_root(self) -> Path:
        """The folder holding one frames folder per sequence."""
        return self._under_root(self.frames_dir, self.preset.frames)

    @property
    def annotations_root(self) -> Path:
        """The folder holding one annotations folder per sequence."""
        return self._under_root(self.annotations_dir_, self.preset.annotations)

    def _not_root(self, what: str) -> DatasetError:
        return DatasetError(f"{self.root}: not a {self.preset.title} root ({what})")

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def check(self) -> None:
        """Raise DatasetError unless the root has the frame and annotation folders."""
        if not self.root.is_dir():
            raise self._not_root("folder not found")
        for folder in (self.frames_root, self.annotations_root):
            if not folder.is_dir():
                raise self._not_root(f"missing {self._relative(folder)}/")

    def images_dir(self, seq: str) -> Path:
        """The frames folder of a sequence."""
        return self.frames_root / seq

    def annotations_dir(self, seq: str) -> Path:
        """The ground-truth masks folder of a sequence."""
        return self.annotations_root / seq

    # ------------------------------------------------------------------ sequences
    def sequences(self, names: Sequence[str] | None = None) -> list[str]:
        """The sequences to use: ``names`` as given, else the list (root checked).

        Raises:
            DatasetError: an incomplete root, or a missing sequence list.
        """
        self.check()
        if names:
            return list(names)
        listing = self.sequence_list_path
        if listing is None:
            return sorted(p.name for p in self.annotations_root.iterdir() if p.is_dir())
        if not listing.is_file():
            raise self._not_root(f"missing {self._relative(listing)}")
        if listing.suffix == ".json":
            return sorted(self._videos_of(listing))
        return _names_in_list(listing.read_text())

    @property
    def sequence_list_path(self) -> Path | None:
        """The sequence list file, or None when every annotation folder is a sequence."""
        if self.list_file is not None:
            return self.root / self.list_file
        if self.preset.sequence_list is None:
            return None
        return self.root / self.preset.sequence_list.format(split=self.split)

    def check_sequence(self, seq: str) -> None:
        """Raise DatasetError when a sequence has no frames folder."""
        if not self.images_dir(seq).is_dir():
            raise DatasetError(f"{self.root}: sequence {seq!r} has no "
                               f"{self._relative(self.images_dir(seq))}/")

    def frame_paths(self, seq: str) -> list[Path]:
        """The frames of a sequence in name order (the image files ``ImageFolderSource`` reads).

        Raises:
            DatasetError: no frame in the folder.
        """
        folder = self.images_dir(seq)
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
            if folder.is_dir() else []
        if not paths:
            raise DatasetError(f"no JPEG frames for sequence {seq!r} in {folder}")
        return paths

    # ------------------------------------------------------------------ annotations
    def annotated_frames(self, seq: str, *, min_frames: int = 3) -> list[str]:
        """Sorted ground-truth stems of a sequence annotated on every frame (the DAVIS rule).

        Raises:
            DatasetError: no frames, fewer annotations than frames (the official DAVIS loader
                would pad with placeholders and crash on them), or fewer than ``min_frames``.
        """
        num_frames = len(self.frame_paths(seq))
        stems = self.annotation_stems(seq)
        if len(stems) < num_frames:
            raise DatasetError(f"sequence {seq!r}: {len(stems)} annotation PNGs in "
                               f"{self.annotations_dir(seq)} for {num_frames} frames")
        if len(stems) < min_frames:
            raise DatasetError(
                f"sequence {seq!r}: needs >= {min_frames} annotated frames, found {len(stems)}"
            )
        return stems

    def object_folders(self, seq: str) -> list[str]:
        """Per-object layouts: the sequence's object folder names, sorted (``000``, ...)."""
        folder = self.annotations_dir(seq)
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def annotation_stems(self, seq: str) -> list[str]:
        """Sorted stems of the frames that have an annotation (any object, for per-object)."""
        folder = self.annotations_dir(seq)
        if not folder.is_dir():
            return []
        if not self.preset.per_object:
            return sorted(p.stem for p in folder.glob("*.png"))
        return sorted({p.stem for obj in self.object_folders(seq)
                       for p in (folder / obj).glob("*.png")})

    def read_objects(self, seq: str, stem: str) -> dict[int, np.ndarray]:
        """The annotated objects of one frame.

        Args:
            seq: the sequence.
            stem: the frame's stem (``00005``).

        Returns:
            obj_id -> (H, W) bool mask, empty masks included for per-object layouts. Palette
            ids are the pixel values (255 = void is no object; with ``binary`` every non-zero
            pixel is object 1); per-object ids are the 1-based positions of the object
            folders (:meth:`object_folders`).
        """
        folder = self.annotations_dir(seq)
        if self.preset.per_object:
            masks = {}
            for obj_id, obj in enumerate(self.object_folders(seq), start=1):
                path = folder / obj / f"{stem}.png"
                if path.is_file():
                    masks[obj_id] = read_palette_png(path) > 0
            return masks
        labels = read_palette_png(folder / f"{stem}.png")
        if self.preset.binary:
            return {1: labels > 0}
        return {int(i): labels == i for i in np.unique(labels) if i not in (0, VOID_ID)}

    # ------------------------------------------------------------------ meta.json
    @cached_property
    def meta(self) -> dict[str, Any]:
        """The ``videos`` table of the root's meta file (empty when the preset reads none): the
        sequence list when it is a ``.json`` (``--list``, or the preset's, e.g. LVOS's
        ``valid_meta.json``), else ``meta.json``.

        Raises:
            DatasetError: the preset needs a meta file and it is missing or not JSON.
        """
        if self.preset.meta is None:
            return {}
        listing = self.sequence_list_path
        path = listing if listing is not None and listing.suffix == ".json" \
            else self.root / "meta.json"
        return self._videos_of(path)

    def _videos_of(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise self._not_root(f"missing {self._relative(path)}")
        try:
            videos = json.loads(path.read_text()).get("videos")
        except (json.JSONDecodeError, AttributeError):
            videos = None
        if not isinstance(videos, dict):
            raise DatasetError(f"{path}: expected a JSON object with a 'videos' table")
        return videos

    def meta_objects(self, seq: str) -> dict[str, dict[str, Any]]:
        """The meta entries of a sequence's objects, keyed by object id text ("1", ...)."""
        return dict(self.meta.get(seq, {}).get("objects", {}))

    def required_stems(self, seq: str) -> list[str]:
        """The frames a server expects results for: YouTube-VOS's union of the objects'
        ``frames`` in meta.json, else every frame."""
        if self.preset.meta == "youtube" and self.meta_objects(seq):
            return sorted({str(f) for obj in self.meta_objects(seq).values()
                           for f in obj.get("frames", ())})
        return [p.stem for p in self.frame_paths(seq)]

    def categories(self, seq: str) -> dict[int, str]:
        """obj_id -> category name, where meta.json gives one (YouTube-VOS)."""
        return {int(k): str(v["category"]) for k, v in self.meta_objects(seq).items()
                if isinstance(v, dict) and "category" in v}


class DavisLayout(VosDataset):
    """A DAVIS 2017 root (the ``davis2017`` preset): ``JPEGImages/480p/<seq>/*.jpg``,
    ``Annotations/480p/<seq>/*.png`` and ``ImageSets/2017/<split>.txt``.

    Args:
        root: the dataset root.
        split: the ImageSets list read when no sequences are named.
    """

    def __init__(self, root: Path | str, split: str = "val") -> None:
        super().__init__(Path(root), PRESETS["davis2017"], split)


def _names_in_list(text: str) -> list[str]:
    """Sequence names of a list file, in order; a DAVIS 2016 ``ImageSets/480p`` line
    (``/JPEGImages/480p/bear/00000.jpg /Annotations/...``) counts as its sequence folder."""
    names: list[str] = []
    for line in text.splitlines():
        token = line.split()[0] if line.split() else ""
        name = Path(token).parent.name if "/" in token else token
        if name and name not in names:
            names.append(name)
    return names


def vis_videos(gt: Any, frames_root: Path) -> list[dict]:
    """The video records of a YouTube-VIS/UVO annotation JSON, checked against the frames.

    Args:
        gt: the parsed annotation file (``videos`` with ``id``, ``file_names``, ``height``,
            ``width``).
        frames_root: the folder the ``file_names`` are relative to.

    Raises:
        DatasetError: no ``videos`` list, an incomplete record, or a missing frame file.
    """
    videos = gt.get("videos") if isinstance(gt, dict) else None
    if not isinstance(videos, list) or not videos:
        raise DatasetError("annotations: expected a YouTube-VIS JSON with a 'videos' list")
    for video in videos:
        if not {"id", "file_names", "height", "width"} <= set(video):
            raise DatasetError(
                f"annotations: video {video.get('id')!r} lacks id/file_names/height/width"
            )
        missing = [f for f in video["file_names"] if not (frames_root / f).exists()]
        if missing:
            raise DatasetError(f"{frames_root / missing[0]}: frame missing ({len(missing)} in all)")
    return videos
