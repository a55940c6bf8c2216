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
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vos.config import PromptConfig, TrackerConfig
from vos.eval.datasets import DatasetError, DavisLayout, vis_videos
from vos.eval.davis import DavisScores, evaluate_results
from vos.eval.davis_report import write_report
from vos.io.atomic import write_text_atomic
from vos.io.davis_png import read_palette_png, write_palette_png
from vos.io.sinks import encode_rle
from vos.io.sources import ImageFolderSource, prefetch, read_rgb
from vos.pipeline import accumulate_object_stats
from vos.tracker import VideoTracker
from vos.types import Prompt

logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete.json"
UVO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class SequenceTiming:
    """Per-sequence run time."""

    name: str
    frames: int
    seconds: float
    skipped: bool


def run_davis(
    layout: DavisLayout,
    output_dir: Path,
    make_tracker: Callable[[], VideoTracker],
    *,
    sequences: Sequence[str] | None = None,
    progress: bool = True,
) -> tuple[DavisScores, list[SequenceTiming]]:
    """Track every DAVIS sequence from its first-frame masks, write and score the results.

    Args:
        layout: the DAVIS 2017 root and split.
        output_dir: results folder, ``<output_dir>/<seq>/<frame>.png`` (official layout);
            CSVs, ``scores.json`` and ``per_object_jf.png`` go beside them.
        make_tracker: builds a fresh tracker per sequence.
        sequences: run only these (default: the split's list).
        progress: show progress bars.

    Returns:
        The scores and the per-sequence timing.
    """
    from tqdm import tqdm

    names = davis_sequences(layout, sequences)
    timings = []
    for name in tqdm(names, desc="DAVIS sequences", unit="seq", disable=not progress):
        seq_dir = output_dir / name
        marker = seq_dir / COMPLETE_MARKER
        if marker.exists():
            record = json.loads(marker.read_text())
            timings.append(SequenceTiming(name, record["frames"], record["seconds"], True))
            continue
        source = ImageFolderSource(layout.images_dir(name))
        first_png = layout.annotations_dir(name) / f"{source.paths[0].stem}.png"
        if not first_png.exists():
            raise DatasetError(f"{first_png}: the first-frame annotation is missing")
        first = read_palette_png(first_png)
        if first.shape != source.info.image_hw:
            raise DatasetError(f"{first_png}: size differs from the sequence's frames")
        obj_ids = [int(i) for i in np.unique(first) if i not in (0, 255)]
        if not obj_ids:
            raise DatasetError(f"{first_png}: no object in the first-frame annotation")
        prompts = {0: [Prompt(mask=first == obj_id, obj_id=obj_id) for obj_id in obj_ids]}
        start = time.perf_counter()
        frames = tqdm(prefetch(source.frames()), total=source.info.num_frames, desc=name,
                      unit="frame", leave=False, disable=not progress)
        for result in make_tracker().track(frames, prompts):
            write_palette_png(seq_dir / f"{source.paths[result.frame_idx].stem}.png",
                              result.to_index_mask("lower_id_wins"))
        seconds = time.perf_counter() - start
        frames_done = source.info.num_frames or 0
        write_text_atomic(marker, json.dumps({"frames": frames_done, "seconds": seconds}))
        timings.append(SequenceTiming(name, frames_done, seconds, False))
    scores = evaluate_results(layout.root, output_dir, layout.split, names)
    write_report(scores, output_dir)
    return scores, timings


def davis_sequences(layout: DavisLayout, sequences: Sequence[str] | None = None) -> list[str]:
    """The sequences to run, each checked to have its frames folder (before any model loads)."""
    names = layout.sequences(sequences)
    for name in names:
        layout.check_sequence(name)
    return names


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

    videos = vis_videos(gt, frames_root)
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

    def frames() -> Iterator[np.ndarray]:
        for name in video["file_names"]:
            frame = read_rgb(frames_root / name)
            if frame.shape[:2] != hw:
                raise DatasetError(
                    f"{frames_root / name}: size {frame.shape[1]}x{frame.shape[0]} differs "
                    f"from the annotation's {hw[1]}x{hw[0]}"
                )
            yield frame

    stream = prefetch(frames())
    first = next(stream)
    # The proposals of frame 0 are the objects (SAM-PT's protocol): one track each.
    prompts = {0: [Prompt(mask=mask) for mask in propose(first)]}
    for result in tqdm(tracker.track(itertools.chain([first], stream), prompts), total=num_frames,
                       desc=str(video.get("name", video["id"])), leave=False,
                       disable=not progress):
        if result.frame_idx == 0:
            segmentations = {obj_id: [None] * num_frames for obj_id in sorted(tracker.tracks)}
        for obj_id, mask in zip(result.obj_ids.tolist(), result.masks, strict=True):
            segmentations[obj_id][result.frame_idx] = encode_rle(mask)
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
