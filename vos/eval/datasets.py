"""Dataset layouts on disk: where frames, annotations and sequence lists are.

Every evaluation driver and scorer reads a dataset through one of these classes, so a layout
is described once. To add a dataset, add its layout class here (and a driver in
``vos.eval.drivers`` if its protocol differs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DatasetError(ValueError):
    """A dataset root or annotation file does not have the expected layout."""


@dataclass(frozen=True)
class DavisLayout:
    """A DAVIS 2017 root: ``JPEGImages/480p/<seq>/*.jpg``, ``Annotations/480p/<seq>/*.png``
    (palette PNGs, one id per object, 255 = void) and ``ImageSets/2017/<split>.txt``.

    Attributes:
        root: the dataset root.
        split: the ImageSets list read when no sequences are named.
    """

    root: Path
    split: str = "val"

    IMAGES = "JPEGImages/480p"
    ANNOTATIONS = "Annotations/480p"
    IMAGE_SETS = "ImageSets/2017"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def check(self) -> None:
        """Raise DatasetError unless the root has the frame and annotation folders."""
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: not a DAVIS root (folder not found)")
        for sub in (self.IMAGES, self.ANNOTATIONS):
            if not (self.root / sub).is_dir():
                raise DatasetError(f"{self.root}: not a DAVIS root (missing {sub}/)")

    def sequences(self, names: Sequence[str] | None = None) -> list[str]:
        """The sequences to use: ``names`` as given, else the split's list (root checked).

        Raises:
            DatasetError: an incomplete root, or a missing split list.
        """
        self.check()
        if names:
            return list(names)
        listing = self.root / self.IMAGE_SETS / f"{self.split}.txt"
        if not listing.is_file():
            raise DatasetError(
                f"{self.root}: not a DAVIS root (missing {self.IMAGE_SETS}/{self.split}.txt)"
            )
        return [line.strip() for line in listing.read_text().splitlines() if line.strip()]

    def images_dir(self, seq: str) -> Path:
        """The frames folder of a sequence."""
        return self.root / self.IMAGES / seq

    def annotations_dir(self, seq: str) -> Path:
        """The ground-truth masks folder of a sequence."""
        return self.root / self.ANNOTATIONS / seq

    def check_sequence(self, seq: str) -> None:
        """Raise DatasetError when a sequence has no frames folder."""
        if not self.images_dir(seq).is_dir():
            raise DatasetError(f"{self.root}: sequence {seq!r} has no {self.IMAGES}/{seq}/")

    def annotated_frames(self, seq: str, *, min_frames: int = 3) -> list[str]:
        """Sorted ground-truth frame stems of a sequence, one per JPEG frame.

        Raises:
            DatasetError: no frames, fewer annotations than frames (the official loader would
                pad with placeholders and crash on them), or fewer than ``min_frames``.
        """
        images, masks = self.images_dir(seq), self.annotations_dir(seq)
        num_images = len(list(images.glob("*.jpg"))) if images.is_dir() else 0
        if num_images == 0:
            raise DatasetError(f"no JPEG frames for sequence {seq!r} in {images}")
        stems = sorted(path.stem for path in masks.glob("*.png")) if masks.is_dir() else []
        if len(stems) < num_images:
            raise DatasetError(
                f"sequence {seq!r}: {len(stems)} annotation PNGs in {masks} for {num_images} frames"
            )
        if len(stems) < min_frames:
            raise DatasetError(
                f"sequence {seq!r}: needs >= {min_frames} annotated frames, found {len(stems)}"
            )
        return stems


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
