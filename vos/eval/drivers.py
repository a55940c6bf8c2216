"""The UVO evaluation run: track a dataset with the tracker, write results, score them.

UVO (class-agnostic VIS, the SAM-PT protocol): automatic-mask-generator proposals on frame 0
(at most 100), each tracked independently (masks may overlap), track score = mean predicted
IoU; results are a YouTube-VIS JSON scored by :mod:`vos.eval.uvo`. Resumable: a video whose
results file exists is not recomputed. The semi-supervised benchmarks (DAVIS, YouTube-VOS,
MOSE, LVOS, SA-V) run in :mod:`vos.eval.vos_driver`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vos.config import PromptConfig, TrackerConfig
from vos.eval.datasets import DatasetError, vis_videos
from vos.eval.vos_driver import SequenceTiming
from vos.io.atomic import write_text_atomic
from vos.io.sinks import encode_rle
from vos.io.sources import prefetch, read_rgb
from vos.pipeline import accumulate_object_stats
from vos.tracker import VideoTracker
from vos.types import Prompt

logger = logging.getLogger(__name__)

UVO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


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
