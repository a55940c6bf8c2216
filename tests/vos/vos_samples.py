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
        gap: sequence -> (obj_id, a, b): the object is absent from the GT on frames a..b-1
            (b = the frame count: it leaves for good).
        parts: sequence -> n: each frame's foreground is cut into n objects (ids 1..n, left
            to right) at the quantiles of its pixels' columns, to have more objects.
    """

    root: Path
    seqs: dict[str, int | None]
    late: dict[str, tuple[int, int]] = field(default_factory=dict)
    gap: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    parts: dict[str, int] = field(default_factory=dict)

    def frames(self, seq: str) -> list[Path]:
        paths = sorted((self.root / "JPEGImages/480p" / seq).glob("*.jpg"))
        return paths[: self.seqs[seq]]

    def labels(self, seq: str) -> list[np.ndarray]:
        out = []
        for t, jpg in enumerate(self.frames(seq)):
            labels = read_palette_png(self.root / "Annotations/480p" / seq / f"{jpg.stem}.png")
            if seq in self.parts:
                labels = _cut(labels > 0, self.parts[seq])
            if seq in self.late and t < self.late[seq][1]:
                labels = np.where(labels == self.late[seq][0], 0, labels).astype(np.uint8)
            if seq in self.gap and self.gap[seq][1] <= t < self.gap[seq][2]:
                labels = np.where(labels == self.gap[seq][0], 0, labels).astype(np.uint8)
            out.append(labels)
        return out


def _cut(mask: np.ndarray, n: int) -> np.ndarray:
    """(H, W) uint8 labels 1..n: ``mask``'s pixels split left to right at column quantiles."""
    labels = np.zeros(mask.shape, np.uint8)
    cols = np.nonzero(mask)[1]
    if cols.size:
        edges = np.quantile(cols, np.linspace(0, 1, n + 1)[1:-1])
        part = np.searchsorted(edges, np.arange(mask.shape[1]), side="right") + 1
        labels[mask] = part[None, :].repeat(mask.shape[0], 0)[mask]
    return labels


def is_lvos(preset: str) -> bool:
    """The LVOS presets (``lvos``, ``lvos-v1``) share one layout."""
    return preset.startswith("lvos")


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target.resolve(), link)


def _write_l(path: Path, mask: np.ndarray) -> None:
    """A binary mask as a greyscale 0/255 PNG (how some tools store per-object masks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def build(src: Source | list[Source], dst: Path, preset: str, *, sparse: bool = False,
          truth: bool = True) -> Path:
    """Write ``src`` as a ``preset`` root at ``dst`` (also its ``_truth``); returns ``dst``.

    Args:
        src: the shared sample and its GT changes (several: their sequences together).
        dst: the new root.
        preset: a key of ``vos.eval.presets.PRESETS``.
        sparse: annotate only where objects enter (YouTube-VOS / MOSE valid, DAVIS test-dev:
            server-only splits); else every frame the benchmark annotates.
        truth: also keep every frame's true labels for :class:`OracleSegmenter`.
    """
    index, meta = [], {}
    sources = [src] if isinstance(src, Source) else src
    for seq, origin in [(seq, source) for source in sources for seq in source.seqs]:
        frames, labels = origin.frames(seq), origin.labels(seq)
        all_ids = sorted({int(i) for lab in labels for i in np.unique(lab) if i})
        entered: set[int] = set()
        objects: dict[str, dict] = {}
        for t, (jpg, lab) in enumerate(zip(frames, labels, strict=True)):
            stem = f"{t:08d}" if is_lvos(preset) else jpg.stem
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
            annotated = not is_lvos(preset) or t % 5 == 0  # LVOS: every 5th frame
            for obj in sorted(ids):
                entry = objects.setdefault(str(obj), {"category": CATEGORIES.get(obj, "thing"),
                                                      "frames": [], "start": None, "last": t})
                if entry["start"] is None and annotated:
                    entry["start"] = t
                if annotated:
                    entry["last"] = t
            for obj in objects.values():
                obj["frames"].append(stem)
            _write_annotation(dst, preset, seq, t, stem, lab, new, sparse, all_ids)
        meta[seq] = {"objects": _meta_objects(objects, preset)}
    _write_lists(dst, preset, [seq for source in sources for seq in source.seqs], meta)
    if truth:
        (dst / "_truth" / "index.json").write_text(json.dumps(index))
    return dst


def _write_annotation(dst: Path, preset: str, seq: str, t: int, stem: str, lab: np.ndarray,
                      new: set[int], sparse: bool, all_ids: list[int]) -> None:
    if preset == "sa-v":
        if t % 4 == 0:  # SA-V: 24 fps frames, masks at 6 fps
            for obj in all_ids:
                _write_l(dst / "Annotations_6fps" / seq / f"{obj - 1:03d}" / f"{stem}.png",
                         lab == obj)
        return
    if is_lvos(preset) and t % 5:
        return  # LVOS annotates every 5th frame
    if sparse and (not new or (t > 0 and preset in ("mose", "davis2016", "davis2017"))):
        return  # valid / test-dev splits annotate where objects enter (MOSE, DAVIS: frame 0)
    if sparse and preset == "youtube-vos":
        lab = np.where(np.isin(lab, list(new)), lab, 0).astype(np.uint8)  # only the new objects
    folder = "Annotations/480p" if preset.startswith("davis") else "Annotations"
    out = (lab > 0).astype(np.uint8) * 255 if preset == "davis2016" else lab
    write_palette_png(dst / folder / seq / f"{stem}.png", out)


def _meta_objects(objects: dict[str, dict], preset: str) -> dict:
    if not is_lvos(preset):
        return {k: {"category": v["category"], "frames": v["frames"]} for k, v in objects.items()}
    # An object's range runs from its first to its last annotated frame showing it.
    return {k: {"frame_range": {"start": v["start"], "end": v["last"] + 1,
                                "frame_nums": len(range(v["start"], v["last"] + 1, 5))}}
            for k, v in objects.items()}


def _write_lists(dst: Path, preset: str, seqs: list[str], meta: dict) -> None:
    text = "\n".join(seqs) + "\n"
    if preset in ("davis2016", "davis2017"):
        listing = dst / "ImageSets" / preset[-4:] / "val.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text(text)
    elif preset == "sa-v":
        (dst / "sav_val.txt").write_text(text)
    elif preset == "youtube-vos":
        (dst / "meta.json").write_text(json.dumps({"videos": meta}))
    elif is_lvos(preset):
        (dst / "valid_meta.json").write_text(json.dumps({"videos": meta}))  # <split>_meta.json


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
                stem = f"{t:08d}" if is_lvos(preset) else png.stem
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


# ----------------------------------------------------------------- official-evaluator samples
# Four videos, nine objects: dog (2 objects, object 2 enters on frame 12), car-shadow (2,
# object 1 away on frames 10..24, then back), bmx-trees (cut in 3, object 3 gone from frame
# 36 on), blackswan (cut in 2). Predictions are the true masks corrupted as named below.
CORRUPTIONS = ("erode_drop", "dilate_shift_blobs", "mixed")


def official_sources(data_dir: Path) -> list[Source]:
    """The four-video sample compared with the official LVOS and SA-V evaluators.

    Args:
        data_dir: ``shared/data`` (with ``davis-mini`` and ``davis-mini-2obj``).
    """
    return [
        Source(data_dir / "davis-mini-2obj", {"dog": 46, "car-shadow": 40},
               late={"dog": (2, 12)}, gap={"car-shadow": (1, 10, 25)}),
        Source(data_dir / "davis-mini", {"bmx-trees": 51, "blackswan": 46},
               gap={"bmx-trees": (3, 36, 51)}, parts={"bmx-trees": 3, "blackswan": 2}),
    ]


def build_official_sample(data_dir: Path, dst: Path, preset: str) -> Path:
    """:func:`official_sources` as a ``preset`` root (``lvos``/``lvos-v1`` or ``sa-v``).

    For LVOS, blackswan's object 2 gets a range that stops one frame short of its last
    annotated frame (``end`` exclusive), so the v2 rule's "last frame when the range reaches
    it" is seen both ways.
    """
    root = build(official_sources(data_dir), dst, preset)
    if is_lvos(preset):
        meta_path = root / "valid_meta.json"
        meta = json.loads(meta_path.read_text())
        meta["videos"]["blackswan"]["objects"]["2"]["frame_range"]["end"] -= 1
        meta_path.write_text(json.dumps(meta))
    return root


def _disc(shape: tuple[int, int], center_yx: tuple[int, int], radius: int) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - center_yx[0]) ** 2 + (cols - center_yx[1]) ** 2 <= radius**2


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = \
        mask[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


def _morph(mask: np.ndarray, radius: int, grow: bool) -> np.ndarray:
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    op = cv2.dilate if grow else cv2.erode
    return op(mask.astype(np.uint8), kernel) > 0


def corrupt(labels: np.ndarray, t: int, seq_idx: int, recipe: str, ids: list[int]) -> np.ndarray:
    """(H, W) uint8 predicted labels of frame ``t``: the true ``labels`` changed by ``recipe``.

    ``erode_drop``: every object eroded 4 px and dropped on some frames; ``dilate_shift_blobs``:
    dilated 6 px, shifted (8, -12) px, plus a false-positive blob of each id on every frame;
    ``mixed``: per object one of erode 3 / dilate 5 / shift (-10, 6) / exact, object 1 dropped
    on every 15th frame, and a blob of each object on the frames it is absent from the GT.
    Higher ids are painted last (they win overlaps).
    """
    out = np.zeros(labels.shape, np.uint8)
    for obj in ids:
        true = labels == obj
        blob = _disc(labels.shape, (40 + 50 * obj, 60 + 3 * t), 14)
        if recipe == "erode_drop":
            mask = _morph(true, 4, grow=False) & ((t // 5 + obj) % 4 != 2)
        elif recipe == "dilate_shift_blobs":
            mask = _shift(_morph(true, 6, grow=True), 8, -12) | blob
        elif recipe == "mixed":
            kind = (obj + seq_idx) % 4
            mask = (_morph(true, 3, grow=False) if kind == 0 else _morph(true, 5, grow=True)
                    if kind == 1 else _shift(true, -10, 6) if kind == 2 else true)
            if obj == 1 and t % 15 == 10:
                mask = np.zeros_like(mask)
            if not true.any():
                mask = mask | blob
        else:
            raise ValueError(f"unknown corruption {recipe!r}")
        out[mask] = obj
    return out


def write_corrupted(root: Path, dst: Path, preset: str, recipe: str) -> Path:
    """Results of a sample built with ``truth``, in ``preset``'s layout: every frame (SA-V:
    every annotated frame)."""
    truth = root / "_truth"
    for seq_idx, seq_dir in enumerate(sorted(p for p in truth.iterdir() if p.is_dir())):
        pngs = sorted(seq_dir.glob("*.png"))
        stacked = [read_palette_png(png) for png in pngs]
        ids = sorted({int(i) for lab in stacked for i in np.unique(lab) if i})
        for t, (png, labels) in enumerate(zip(pngs, stacked, strict=True)):
            if preset == "sa-v" and t % 4:
                continue  # only the annotated (6 fps) frames are read
            pred = corrupt(labels, t, seq_idx, recipe, ids)
            if preset == "sa-v":
                for obj in ids:
                    write_palette_png(dst / seq_dir.name / f"{obj - 1:03d}" / png.name,
                                      pred == obj)
            else:
                write_palette_png(dst / seq_dir.name / png.name, pred)
    return dst
