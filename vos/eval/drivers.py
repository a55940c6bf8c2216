"""Evaluation runs: track a dataset with the tracker, write results, score them.

DAVIS 2017 (semi-supervised): every object is given by the first frame's ground-truth mask,
results are palette PNGs in the official layout, scored by :mod:`vos.eval.davis`.
UVO (class-agnostic VIS, the SAM-PT protocol): automatic-mask-generator proposals on frame 0
(at most 100), each tracked independently (masks may overlap), track score = mean predicted
IoU; results are a YouTube-VIS JSON scored by :mod:`vos.eval.uvo`.

Both are resumable: a sequence whose completion marker exists is not recomputed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vos.config import PromptConfig, TrackerConfig
from vos.eval.davis import DavisScores, evaluate_results, plot_per_object, write_official_csvs
from vos.io.davis_png import read_palette_png, write_palette_png
from vos.io.sinks import encode_rle, write_text_atomic
from vos.io.sources import ImageFolderSource, prefetch, read_rgb
from vos.pipeline import accumulate_object_stats
from vos.tracker import VideoTracker

logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete.json"
UVO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class DatasetError(ValueError):
    """A dataset root or annotation file does not have the expected layout."""


@dataclass
class SequenceTiming:
    """Per-sequence run time."""

    name: str
    frames: int
    seconds: float
    skipped: bool


def davis_sequences(root: Path, split: str, sequences: Sequence[str] | None) -> list[str]:
    """The sequences to run, validated against the DAVIS root layout."""
    for sub in ("JPEGImages/480p", "Annotations/480p"):
        if not (root / sub).is_dir():
            raise DatasetError(f"{root}: not a DAVIS root (missing {sub}/)")
    if sequences:
        names = list(sequences)
    else:
        listing = root / "ImageSets" / "2017" / f"{split}.txt"
        if not listing.exists():
            raise DatasetError(f"{root}: not a DAVIS root (missing ImageSets/2017/{split}.txt)")
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    for name in names:
        if not (root / "JPEGImages/480p" / name).is_dir():
            raise DatasetError(f"{root}: sequence {name!r} has no JPEGImages/480p/{name}/")
    return names


def run_davis(
    root: Path,
    output_dir: Path,
    make_tracker: Callable[[], VideoTracker],
    *,
    split: str = "val",
    sequences: Sequence[str] | None = None,
    progress: bool = True,
) -> tuple[DavisScores, list[SequenceTiming]]:
    """Track every DAVIS sequence from its first-frame masks, write and score the results.

    Args:
        root: DAVIS 2017 root (``JPEGImages/480p``, ``Annotations/480p``, ``ImageSets``).
        output_dir: results folder, ``<output_dir>/<seq>/<frame>.png`` (official layout);
            CSVs, ``scores.json`` and ``per_object_jf.png`` go beside them.
        make_tracker: builds a fresh tracker per sequence.
        split: ImageSets split (when ``sequences`` is None).
        sequences: run only these.
        progress: show progress bars.

    Returns:
        The scores and the per-sequence timing.
    """
    from tqdm import tqdm

    names = davis_sequences(root, split, sequences)
    timings = []
    for name in tqdm(names, desc="DAVIS sequences", unit="seq", disable=not progress):
        seq_dir = output_dir / name
        marker = seq_dir / COMPLETE_MARKER
        if marker.exists():
            record = json.loads(marker.read_text())
            timings.append(SequenceTiming(name, record["frames"], record["seconds"], True))
            continue
        source = ImageFolderSource(root / "JPEGImages/480p" / name)
        first_png = root / "Annotations/480p" / name / f"{source.paths[0].stem}.png"
        if not first_png.exists():
            raise DatasetError(f"{first_png}: the first-frame annotation is missing")
        first = read_palette_png(first_png)
        if first.shape != source.info.image_hw:
            raise DatasetError(f"{first_png}: size differs from the sequence's frames")
        obj_ids = [int(i) for i in np.unique(first) if i not in (0, 255)]
        if not obj_ids:
            raise DatasetError(f"{first_png}: no object in the first-frame annotation")
        tracker = make_tracker()
        start = time.perf_counter()
        frames = prefetch(source.frames())
        for frame_idx, frame in enumerate(
            tqdm(frames, total=source.info.num_frames, desc=name, unit="frame", leave=False,
                 disable=not progress)
        ):
            result = tracker.step(frame)
            if frame_idx == 0:
                for obj_id in obj_ids:
                    tracker.add_object(mask=first == obj_id, obj_id=obj_id)
                result = tracker.result()
            write_palette_png(seq_dir / f"{source.paths[frame_idx].stem}.png",
                              result.to_index_mask("lower_id_wins"))
        seconds = time.perf_counter() - start
        frames_done = source.info.num_frames or 0
        write_text_atomic(marker, json.dumps({"frames": frames_done, "seconds": seconds}))
        timings.append(SequenceTiming(name, frames_done, seconds, False))
    scores = evaluate_results(root, output_dir, split, names)
    write_official_csvs(scores, output_dir)
    plot_per_object(scores, output_dir / "per_object_jf.png")
    return scores, timings


def uvo_videos(gt: dict, frames_root: Path) -> list[dict]:
    """Validated video records of a YouTube-VIS/UVO annotation file."""
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


def run_uvo(
    gt: dict,
    frames_root: Path,
    output_dir: Path,
    predictor: Any,
    propose: Callable[[np.ndarray], list[np.ndarray]],
    tracker_config: TrackerConfig,
    prompt_config: PromptConfig,
    *,
    progress: bool = True,
) -> tuple[list[dict], list[SequenceTiming]]:
    """Run the SAM-PT UVO protocol; returns the YouTube-VIS results list and timings.

    Args:
        gt: the parsed annotation JSON (only ``videos`` is used here).
        frames_root: folder the ``file_names`` are relative to.
        output_dir: ``videos/<video_id>.json`` per video (resume units) and ``pred.json``.
        predictor: the segmenter (``encode``/``decode``).
        propose: frame-0 proposals, (H, W) bool masks in descending score order.
        tracker_config: thresholds; overlap resolution is switched off (VIS masks may overlap).
        prompt_config: prompt derivation.
        progress: show progress bars.
    """
    from tqdm import tqdm

    videos = uvo_videos(gt, frames_root)
    tracker_config = dataclasses.replace(tracker_config, overlap="none")
    results: list[dict] = []
    timings = []
    for video in tqdm(videos, desc="UVO videos", unit="video", disable=not progress):
        path = output_dir / "videos" / f"{video['id']}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            results.extend(saved["tracks"])
            timings.append(SequenceTiming(str(video["id"]), len(video["file_names"]),
                                          saved["seconds"], True))
            continue
        start = time.perf_counter()
        tracks = _track_video(video, frames_root, predictor, propose, tracker_config,
                              prompt_config, progress)
        seconds = time.perf_counter() - start
        write_text_atomic(path, json.dumps({"tracks": tracks, "seconds": seconds}))
        results.extend(tracks)
        timings.append(SequenceTiming(str(video["id"]), len(video["file_names"]), seconds, False))
    write_text_atomic(output_dir / "pred.json", json.dumps(results))
    return results, timings


def _track_video(
    video: dict,
    frames_root: Path,
    predictor: Any,
    propose: Callable[[np.ndarray], list[np.ndarray]],
    tracker_config: TrackerConfig,
    prompt_config: PromptConfig,
    progress: bool,
) -> list[dict]:
    from tqdm import tqdm

    hw = (int(video["height"]), int(video["width"]))
    num_frames = len(video["file_names"])
    tracker = VideoTracker(predictor, tracker_config, prompt_config)
    segmentations: dict[int, list[dict | None]] = {}
    object_stats: dict[int, dict[str, float]] = {}
    frames = prefetch(read_rgb(frames_root / name) for name in video["file_names"])
    for frame_idx, frame in enumerate(
        tqdm(frames, total=num_frames, desc=str(video.get("name", video["id"])), leave=False,
             disable=not progress)
    ):
        if frame.shape[:2] != hw:
            raise DatasetError(
                f"{frames_root / video['file_names'][frame_idx]}: size {frame.shape[1]}x"
                f"{frame.shape[0]} differs from the annotation's {hw[1]}x{hw[0]}"
            )
        result = tracker.step(frame)
        if frame_idx == 0:
            for mask in propose(frame):
                obj_id = tracker.add_object(mask=mask)
                segmentations[obj_id] = [None] * num_frames
            result = tracker.result()
        for obj_id, mask in zip(result.obj_ids.tolist(), result.masks, strict=True):
            segmentations[obj_id][frame_idx] = encode_rle(mask)
        accumulate_object_stats(object_stats, result)
    # Track score = mean predicted IoU over the frames where the object was segmented
    # (SAM-PT's per-object score); a track never seen scores 0.
    return [
        {
            "video_id": video["id"],
            "category_id": 1,
            "score": (object_stats[obj_id]["score"] / object_stats[obj_id]["frames"]
                      if obj_id in object_stats else 0.0),
            "segmentations": segs,
        }
        for obj_id, segs in sorted(segmentations.items())
    ]
