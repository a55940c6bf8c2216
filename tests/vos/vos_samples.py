"""Small VOS benchmark samples in every preset's layout, built from ``shared/data/davis-mini*``.

Frames are symlinks to the shared JPEGs (nothing is copied into the repo); ground truth is
rewritten in each layout from the DAVIS masks, optionally changed so that an object first
appears on frame k (``late``) or leaves and comes back (``gap``). The full ground truth of
every frame is kept in ``<root>/_truth`` for :class:`OracleSegmenter`, a fake segmenter that
answers prompts with those masks (the segmenter contract of ``repvit_sam.segmenter``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests.vos.synthetic import FakeEmbedding, FakeSegmenter, Scene
from vos.config import RunConfig
from vos.io.davis_png import read_palette_png, write_palette_png
from vos.io.sources import read_rgb

CATEGORIES = {1: "dog", 2: "car"}  # YouTube-VOS meta categories of object ids 1 and 2


@dataclass
class Source:
    """Where to take a sample from and how to change its ground truth.

    Attributes:
        root: a ``shared/data/davis-mini*`` folder.
        seqs: sequence -> number of frames to keep (None: all).
        late: sequence -> (obj_id, k): the object is absent from the GT before frame k.
        gap: sequence -> (obj_id, a, b): the object is absent from the GT on frames a..b-1.
    """

    root: Path
    seqs: dict[str, int | None]
    late: dict[str, tuple[int, int]] = field(default_factory=dict)
    gap: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def frames(self, seq: str) -> list[Path]:
        paths = sorted((self.root / "JPEGImages/480p" / seq).glob("*.jpg"))
        return paths[: self.seqs[seq]]

    def labels(self, seq: str) -> list[np.ndarray]:
        out = []
        for t, jpg in enumerate(self.frames(seq)):
            labels = read_palette_png(self.root / "Annotations/480p" / seq / f"{jpg.stem}.png")
            if seq in self.late and t < self.late[seq][1]:
                labels = np.where(labels == self.late[seq][0], 0, labels).astype(np.uint8)
            if seq in self.gap and self.gap[seq][1] <= t < self.gap[seq][2]:
                labels = np.where(labels == self.gap[seq][0], 0, labels).astype(np.uint8)
            out.append(labels)
        return out


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target.resolve(), link)


def _write_l(path: Path, mask: np.ndarray) -> None:
    """A binary mask as a greyscale 0/255 PNG (how some tools store per-object masks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def build(src: Source, dst: Path, preset: str, *, sparse: bool = False,
          truth: bool = True) -> Path:
    """Write ``src`` as a ``preset`` root at ``dst`` (also its ``_truth``); returns ``dst``.

    Args:
        src: the shared sample and its GT changes.
        dst: the new root.
        preset: a key of ``vos.eval.presets.PRESETS``.
        sparse: annotate only where objects enter (YouTube-VOS / MOSE valid, DAVIS test-dev:
            server-only splits); else every frame the benchmark annotates.
        truth: also keep every frame's true labels for :class:`OracleSegmenter`.
    """
    index, meta = [], {}
    for seq in src.seqs:
        frames, labels = src.frames(seq), src.labels(seq)
        entered: set[int] = set()
        objects: dict[str, dict] = {}
        for t, (jpg, lab) in enumerate(zip(frames, labels, strict=True)):
            stem = f"{t:08d}" if preset == "lvos" else jpg.stem
            frames_dir = {"davis2016": "JPEGImages/480p", "davis2017": "JPEGImages/480p",
                          "sa-v": "JPEGImages_24fps"}.get(preset, "JPEGImages")
            frame = dst / frames_dir / seq / f"{stem}.jpg"
            _link(jpg, frame)
            if truth:
                truth_png = dst / "_truth" / seq / f"{stem}.png"
                write_palette_png(truth_png, lab)
                index.append({"frame": str(frame), "labels": str(truth_png)})
            ids = {int(i) for i in np.unique(lab) if i}
            new = ids - entered
            entered |= ids
            annotated = preset != "lvos" or t % 5 == 0  # LVOS: starts are annotated frames
            for obj in sorted(ids):
                entry = objects.setdefault(str(obj), {"category": CATEGORIES.get(obj, "thing"),
                                                      "frames": [], "start": None})
                if entry["start"] is None and annotated:
                    entry["start"] = t
            for obj in objects.values():
                obj["frames"].append(stem)
            _write_annotation(dst, preset, seq, t, stem, lab, new, sparse)
        meta[seq] = {"objects": _meta_objects(objects, preset, len(frames))}
    _write_lists(dst, preset, list(src.seqs), meta)
    if truth:
        (dst / "_truth" / "index.json").write_text(json.dumps(index))
    return dst


def _write_annotation(dst: Path, preset: str, seq: str, t: int, stem: str, lab: np.ndarray,
                      new: set[int], sparse: bool) -> None:
    if preset == "sa-v":
        if t % 4 == 0:  # SA-V: 24 fps frames, masks at 6 fps
            for obj in (1, 2):
                _write_l(dst / "Annotations_6fps" / seq / f"{obj - 1:03d}" / f"{stem}.png",
                         lab == obj)
        return
    if preset == "lvos" and t % 5:
        return  # LVOS annotates every 5th frame
    if sparse and (not new or (t > 0 and preset in ("mose", "davis2016", "davis2017"))):
        return  # valid / test-dev splits annotate where objects enter (MOSE, DAVIS: frame 0)
    if sparse and preset == "youtube-vos":
        lab = np.where(np.isin(lab, list(new)), lab, 0).astype(np.uint8)  # only the new objects
    folder = "Annotations/480p" if preset.startswith("davis") else "Annotations"
    out = (lab > 0).astype(np.uint8) * 255 if preset == "davis2016" else lab
    write_palette_png(dst / folder / seq / f"{stem}.png", out)


def _meta_objects(objects: dict[str, dict], preset: str, num_frames: int) -> dict:
    if preset != "lvos":
        return {k: {"category": v["category"], "frames": v["frames"]} for k, v in objects.items()}
    last = (num_frames - 1) // 5 * 5  # the last annotated frame
    return {k: {"frame_range": {"start": v["start"], "end": last + 1,
                                "frame_nums": len(range(v["start"], last + 1, 5))}}
            for k, v in objects.items()}


def _write_lists(dst: Path, preset: str, seqs: list[str], meta: dict) -> None:
    text = "\n".join(seqs) + "\n"
    if preset in ("davis2016", "davis2017"):
        listing = dst / "ImageSets" / preset[-4:] / "val.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text(text)
    elif preset == "sa-v":
        (dst / "sav_val.txt").write_text(text)
    elif preset in ("youtube-vos", "lvos"):
        (dst / "meta.json").write_text(json.dumps({"videos": meta}))


def convert_results(src_dir: Path, dst_dir: Path, preset: str, seqs: dict[str, int | None]) -> Path:
    """A DAVIS results folder (``<seq>/<stem>.png``) in ``preset``'s results layout."""
    for seq, count in seqs.items():
        for t, png in enumerate(sorted((src_dir / seq).glob("*.png"))[:count]):
            if preset == "sa-v":
                labels = read_palette_png(png)
                for obj in (1, 2):
                    write_palette_png(dst_dir / seq / f"{obj - 1:03d}" / f"{png.stem}.png",
                                      labels == obj)
            else:
                stem = f"{t:08d}" if preset == "lvos" else png.stem
                _link(png, dst_dir / seq / f"{stem}.png")
    return dst_dir


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


class OracleSegmenter(FakeSegmenter):
    """Answers prompts with the sample's true masks (frames recognised by their pixels)."""

    def __init__(self, root: Path) -> None:
        index = json.loads((Path(root) / "_truth" / "index.json").read_text())
        labels = np.stack([read_palette_png(Path(item["labels"])) for item in index])
        num_objects = max(int(labels.max()), 1)
        gt = np.stack([labels == k for k in range(1, num_objects + 1)], axis=1)
        super().__init__(Scene(frames=[], gt_masks=gt))
        self.frame_of = {_key(read_rgb(Path(item["frame"]))): i for i, item in enumerate(index)}

    def encode(self, image: np.ndarray) -> FakeEmbedding:
        frame_idx = self.frame_of[_key(image)]
        self.encode_calls.append(frame_idx)
        return FakeEmbedding(image, frame_idx)


def make_oracle(root: str, cfg: RunConfig) -> OracleSegmenter:
    """Top-level factory for the batch engines' workers (picklable with functools.partial)."""
    return OracleSegmenter(Path(root))
