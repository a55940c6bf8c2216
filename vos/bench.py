"""CPU speed benchmark (issue #7): ``python -m vos.bench``.

Times, in one run and with the same thread settings:

- the machine's float32 GEMM rate (the bound every encoder number is compared against);
- the image encoder at 1024² and other sizes on every selected backend (PyTorch variants,
  ONNX Runtime, OpenVINO), with its GFLOPs and the fraction of the GEMM bound it reaches;
- the prompt decoder for 1/4/8/16 objects in one batched call, with the tracker's prompts;
- the whole per-frame loop of ``python -m vos.run`` (source, tracker, sinks) on a video, in
  exact mode and in each requested fast mode;
- with ``--agreement``, each fast mode's mask IoU against exact mode on the user's own
  checkpoint and video.

Every timing is a median after warm-up. Results go to ``bench.md`` and ``bench.json`` in
``--output``, and the markdown is printed.

Without ``--checkpoint`` the models carry random weights: timings are valid (they do not
depend on the weights), agreement figures are not (random weights have no scale invariance),
so ``--agreement`` then says so in the table.

Example:
    python -m vos.bench --checkpoint weights/repvit_sam.pt --video clip.mp4 --agreement
    python -m vos.bench --models repvit,vit_t,vit_b --backend torch --sizes 1024
    python -m vos.bench --quick   # a tiny smoke run (CI)
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repvit_sam import Sam, SamPredictor, sam_model_registry
from repvit_sam.build import CheckpointError
from repvit_sam.runtime import BackendSegmenter, FastMode, RoiSegmenter, available_backends
from repvit_sam.runtime.preprocess import preprocess
from repvit_sam.runtime.runners import BACKENDS, TORCH_VARIANTS
from repvit_sam.segmenter import SegmenterWrapper
from repvit_sam.utils.malloc import MALLOC_ENV, retain_freed_memory
from vos.config import IOConfig, PromptConfig, RunConfig, TrackerConfig
from vos.io.sources import FrameSource, SourceInfo
from vos.matching import mask_iou
from vos.prompts import mask_to_box
from vos.tracker import VideoTracker
from vos.types import Prompt

logger = logging.getLogger(__name__)

DEFAULT_VIDEO = Path(__file__).resolve().parents[1].parent / "shared/data/videos/blackswan.mp4"
SEED_MODELS = ("repvit", "vit_t", "vit_b")

# The targets; each is checked against this run's own numbers.
TARGET_ENCODER_S = 1.40
TARGET_GEMM_FRACTION = 0.93
TARGET_DECODER_RATIO = 2.0
TARGET_LOOP_FRACTION = 0.9
TARGET_FAST_FPS = 5.0


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed repeats (after warm-up)."""

    median_s: float
    min_s: float
    repeats: int


def time_call(fn: Callable[[], object], *, warmup: int, repeats: int) -> Timing:
    """Median and minimum wall time of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), min(times), len(times))


def measure_gemm_gflops(sizes: Sequence[int] = (2048, 4096), repeats: int = 5) -> float:
    """Float32 GEMM rate (GFLOP/s) of this machine with torch's current thread setting.

    Square (n x n) @ (n x n) matmuls, 2 n³ FLOPs each, through MKL: the practical ceiling of
    a convolution network on this CPU. A bound is a best case, so this is the fastest call
    over ``repeats`` at each size, and the best size (small sizes under-fill the cores, and
    on a shared machine the median mostly measures the neighbours).
    """
    gen = torch.Generator().manual_seed(0)
    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, generator=gen)
        b = torch.randn(size, size, generator=gen)
        out = torch.empty(size, size)
        timing = time_call(functools.partial(torch.mm, a, b, out=out), warmup=1, repeats=repeats)
        best = max(best, 2.0 * size**3 / timing.min_s / 1e9)
    return best


def encoder_gflops(model: Sam, input_hw: tuple[int, int]) -> float:
    """GFLOPs (2 per multiply-add) of one encoder call on a (1, 3, H, W) input.

    Counted by ``torch.utils.flop_counter`` on convolutions and matrix products: the GEMM-like
    work the bound applies to. Element-wise operations are not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.image_encoder(torch.zeros(1, 3, *input_hw))
    return counter.get_total_flops() / 1e9


def fill_synthetic_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Give a model deterministic, dense weights in place (for runs without a checkpoint).

    A freshly built model is not a fair timing subject for graph runtimes: RepViT initialises
    every channel mixer's last BatchNorm to zero, so after fusion half the convolutions have
    all-zero weights, and ONNX Runtime and OpenVINO fold them and the branches feeding them
    away. This fill follows the shape of the conformance recipe instead: unit-variance weights
    scaled by fan-in, BN weights near 0.8, variances in [0.5, 1.5], small biases and means.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                fresh = 0.5 + torch.rand(value.shape, generator=gen)
            elif key.endswith("running_mean") or key.endswith(".bias"):
                fresh = 0.01 * torch.randn(value.shape, generator=gen)
            elif value.ndim == 1 and key.endswith(".weight"):
                fresh = 0.8 + 0.1 * torch.randn(value.shape, generator=gen)
            else:
                fan_in = int(np.prod(value.shape[1:])) if value.ndim >= 2 else value.shape[0]
                fresh = torch.randn(value.shape, generator=gen) / max(fan_in, 1) ** 0.5
            value.copy_(fresh.to(value.dtype))


# --------------------------------------------------------------------------- inputs


def synthetic_frames(num_frames: int, image_hw: tuple[int, int] = (120, 160)) -> list[np.ndarray]:
    """Textured frames with a bright square moving right (for runs without a video)."""
    rng = np.random.default_rng(0)
    h, w = image_hw
    background = rng.integers(40, 90, (h, w, 3), dtype=np.uint8)
    side = max(8, min(h, w) // 3)
    frames = []
    for i in range(num_frames):
        frame = background.copy()
        x0 = min(w - side, w // 6 + 3 * i)
        y0 = (h - side) // 2
        frame[y0 : y0 + side, x0 : x0 + side] = (220, 200, 60)
        frames.append(frame)
    return frames


def load_frames(video: str | None, num_frames: int) -> tuple[list[np.ndarray], str]:
    """The first ``num_frames`` RGB frames of ``video`` (or synthetic ones) and their name."""
    if video is None:
        return synthetic_frames(num_frames), "synthetic 160x120"
    from vos.io.sources import open_source

    with open_source(video) as source:
        frames = list(source.frames(0, num_frames))
    return frames, Path(video).name


def default_boxes(image_hw: tuple[int, int], count: int) -> np.ndarray:
    """``count`` boxes (N, 4) float32 XYXY tiled over the frame's central area."""
    h, w = image_hw
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    boxes = []
    for i in range(count):
        r, c = divmod(i, cols)
        cell_w, cell_h = 0.6 * w / cols, 0.6 * h / rows
        x0, y0 = 0.2 * w + c * cell_w, 0.2 * h + r * cell_h
        boxes.append([x0 + 0.1 * cell_w, y0 + 0.1 * cell_h, x0 + 0.9 * cell_w, y0 + 0.9 * cell_h])
    return np.asarray(boxes, np.float32)


def parse_box(text: str) -> np.ndarray:
    """``x0,y0,x1,y1`` -> (4,) float32."""
    values = [float(v) for v in text.split(",")]
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--box {text!r}: expected x0,y0,x1,y1")
    return np.asarray(values, np.float32)


# --------------------------------------------------------------------------- sections


@dataclass
class Report:
    """Everything one bench run measured (``bench.json``)."""

    machine: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    gemm_gflops: float = 0.0
    encoder: list[dict[str, Any]] = field(default_factory=list)
    decoder: list[dict[str, Any]] = field(default_factory=list)
    loop: list[dict[str, Any]] = field(default_factory=list)
    agreement: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def machine_info(threads: int, malloc: str = "system") -> dict[str, Any]:
    """CPU, thread and library versions, for the report header."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "malloc": malloc,
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for name in ("onnxruntime", "openvino"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            info[name] = None
    return info


def encoder_configs(backends: Sequence[str], torch_variants: Sequence[str]) -> list[dict]:
    """(backend, torch_variant) pairs to time, torch variants first."""
    configs = []
    for backend in backends:
        if backend == "torch":
            configs += [{"backend": "torch", "torch_variant": v} for v in torch_variants]
        else:
            configs.append({"backend": backend, "torch_variant": "fused"})
    return configs


def bench_encoders(
    report: Report,
    models: dict[str, tuple[Sam, str | None]],
    configs: Sequence[dict],
    shapes: Sequence[tuple[str, FastMode]],
    frame: np.ndarray,
    *,
    threads: int,
    warmup: int,
    repeats: int,
) -> None:
    """Encoder rows: every model x backend x input shape."""
    flops_cache: dict[tuple[str, tuple[int, int]], float] = {}
    for model_name, (model, checkpoint) in models.items():
        for config in configs:
            seg = BackendSegmenter(model, threads=threads, checkpoint=checkpoint, **config)
            for label, mode in shapes:
                if model_name != "repvit" and not mode.is_exact:
                    continue  # the ViT encoders take only their trained 1024 input
                x = preprocess(frame, mode, seg.pixel_mean, seg.pixel_std)
                input_hw = (x.shape[2], x.shape[3])
                key = (model_name, input_hw)
                if key not in flops_cache:
                    flops_cache[key] = encoder_gflops(model, input_hw)
                runner = seg.encoder_for(input_hw)
                timing = time_call(functools.partial(runner, x), warmup=warmup, repeats=repeats)
                gflops = flops_cache[key]
                rate = gflops / timing.median_s
                report.encoder.append(
                    {
                        "model": model_name,
                        "backend": seg.name.split(" ")[0],
                        "input": f"{input_hw[0]}x{input_hw[1]}",
                        "shape": label,
                        "gflops": round(gflops, 1),
                        "median_s": round(timing.median_s, 4),
                        "min_s": round(timing.min_s, 4),
                        "gflop_per_s": round(rate, 1),
                        "gemm_fraction": round(rate / report.gemm_gflops, 3),
                        "malloc": report.machine.get("malloc"),
                    }
                )
                logger.info("encoder %s", report.encoder[-1])


def tracker_prompts(
    image_hw: tuple[int, int], count: int, mask_logits: torch.Tensor
) -> dict[str, Any]:
    """What the tracker sends per frame for ``count`` objects: box, one point, last logits."""
    boxes = default_boxes(image_hw, count)
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None, :]
    return {
        "boxes_xyxy": boxes,
        "points_xy": centres.astype(np.float32),
        "point_labels": np.ones((count, 1), np.int64),
        "mask_logits": mask_logits[:1].expand(count, -1, -1, -1).contiguous(),
        "multimask_output": True,
    }


def bench_decoders(
    report: Report,
    model: Sam,
    checkpoint: str | None,
    decoder_backends: Sequence[str],
    frame: np.ndarray,
    object_counts: Sequence[int],
    *,
    threads: int,
    warmup: int,
    repeats: int,
) -> None:
    """Decoder rows: each backend x number of objects, one batched call per frame.

    ``torch`` is ``SamPredictor.decode``'s default ``BatchedMaskDecoder``; ``torch[reference]``
    is SAM's ``MaskDecoder`` path, timed alongside as the baseline it replaces.
    """
    image_hw = (frame.shape[0], frame.shape[1])
    reference = BackendSegmenter(model, backend="torch", torch_variant="fused", threads=threads)
    embedding = reference.encode(frame)
    first = reference.decode(embedding, boxes_xyxy=default_boxes(image_hw, 1))
    logits = first.low_res_logits
    decoders: list[tuple[str, Any]] = []
    for backend in decoder_backends:
        seg = BackendSegmenter(
            model, backend="torch", decoder_backend=backend, threads=threads, checkpoint=checkpoint
        )
        seg.prepare(image_hw)
        decoders.append((backend, seg))
        if backend == "torch":
            decoders.append(("torch[reference]", SamPredictor(model, decoder="reference")))
    for name, seg in decoders:
        base = None
        for count in object_counts:
            prompts = tracker_prompts(image_hw, count, logits)
            call = functools.partial(seg.decode, embedding, **prompts)
            timing = time_call(call, warmup=warmup, repeats=repeats)
            base = timing.median_s if base is None else base
            report.decoder.append(
                {
                    "backend": name,
                    "objects": count,
                    "median_ms": round(1000 * timing.median_s, 1),
                    "min_ms": round(1000 * timing.min_s, 1),
                    "vs_1_object": round(timing.median_s / base, 2),
                    "frame": f"{image_hw[1]}x{image_hw[0]}",
                    "malloc": report.machine.get("malloc"),
                }
            )
            logger.info("decoder %s", report.decoder[-1])


def bench_loop(
    report: Report,
    segmenter: BackendSegmenter,
    frames: Sequence[np.ndarray],
    boxes: np.ndarray,
    *,
    model_name: str,
    encode_ahead: bool = False,
    io: IOConfig | None = None,
) -> None:
    """One loop row: ``vos.pipeline.run_video`` (the CLI's loop) over ``frames``.

    ``fps_vs_encoder`` is the loop's FPS times the median time of ``segmenter.encode`` (with
    its pre-processing) measured just before the loop, under the same conditions: on a
    shared machine, encoder timings drift by 10% between sections of one run.

    With ``encode_ahead`` the source and segmenter go through ``vos.overlap.EncodeAhead``, so
    the encoder of the next frame overlaps the decoder, tracker and sinks of this one.
    """
    from vos.pipeline import run_video

    class _Frames(FrameSource):
        def __init__(self) -> None:
            self.info = SourceInfo("bench", frames[0].shape[:2], len(frames), 25.0)

        def frames(self, start: int = 0, stop: int | None = None):  # type: ignore[override]
            yield from frames[start:stop]

    io_config = io or IOConfig()
    image_hw = (frames[0].shape[0], frames[0].shape[1])
    segmenter.prepare(image_hw)
    warm = segmenter.encode(frames[0])
    segmenter.decode(warm, boxes_xyxy=boxes)
    encoder_s = time_call(functools.partial(segmenter.encode, frames[0]), warmup=0,
                          repeats=5).median_s
    prompts = [Prompt(box_xyxy=b, obj_id=i + 1) for i, b in enumerate(boxes)]
    source: FrameSource = _Frames()
    predictor: Any = segmenter
    ahead = None
    if encode_ahead:
        from vos.overlap import EncodeAhead

        ahead = EncodeAhead(segmenter)
        source, predictor = ahead.source(source), ahead
    try:
        with tempfile.TemporaryDirectory(prefix="vos-bench-") as tmp:
            summary = run_video(
                source, predictor, prompts, Path(tmp), RunConfig(io=io_config),
                progress=False,
            )
    finally:
        if ahead is not None:
            ahead.close()
    stages = summary.stage_ms_per_frame
    row = {
        "model": model_name,
        "backend": getattr(segmenter, "inner", segmenter).name.split(" ")[0],
        "decoder": segmenter.decoder_backend,
        "mode": mode_name(segmenter),
        "overlap": "encode-ahead" if encode_ahead else "none",
        "objects": len(boxes),
        "sinks": "+".join(k for k in ("png", "json", "video") if getattr(io_config, f"save_{k}")),
        "frames": summary.frames_processed,
        "fps": round(summary.fps, 3),
        "encoder_alone_ms": round(1000 * encoder_s, 1),
        "encode_ms": round(stages.get("encode", 0.0), 1),  # waiting time with encode-ahead
        "decode_ms": round(stages.get("decode masks", 0.0), 1),
        "other_ms": round(1000 / max(summary.fps, 1e-9) - sum(
            stages.get(k, 0.0) for k in ("encode", "decode masks")), 1),
        "fps_vs_encoder": round(summary.fps * encoder_s, 3),
    }
    report.loop.append(row)
    if isinstance(segmenter, RoiSegmenter):
        total = segmenter.crop_encodes + segmenter.whole_encodes
        report.notes.append(
            f"{row['mode']} loop: {segmenter.crop_encodes} of {total} encodes were crops (the "
            "rest whole frames: first frame, crops above 60% of the frame, prompts outside)"
        )
    logger.info("loop %s", row)


class _Recorder(SegmenterWrapper):
    """A segmenter wrapper that keeps every embedding it computes, in order."""

    def __init__(self, inner: BackendSegmenter, known: dict[int, Any] | None = None) -> None:
        super().__init__(inner)
        self.known = known or {}
        self.embeddings: list[Any] = []
        self.encode_s: list[float] = []

    def encode(self, image: np.ndarray) -> Any:
        start = time.perf_counter()
        embedding = self.known.pop(id(image), None) or self.inner.encode(image)
        self.encode_s.append(time.perf_counter() - start)
        self.embeddings.append(embedding)
        return embedding


def _track(
    segmenter: BackendSegmenter,
    frames: Sequence[np.ndarray],
    boxes: np.ndarray,
    known: dict[int, Any] | None = None,
):
    """Masks per frame {obj_id: (H, W) bool} of a tracker run, and the recorder."""
    recorder = _Recorder(segmenter, known)
    tracker = VideoTracker(recorder, TrackerConfig(), PromptConfig(), seed=0)
    per_frame = []
    start = time.perf_counter()
    for frame_idx, frame in enumerate(frames):
        result = tracker.step(frame)
        if frame_idx == 0:
            for i, box in enumerate(boxes):
                tracker.add_object(box_xyxy=box, obj_id=i + 1)
            result = tracker.result()
        per_frame.append(
            {int(i): m for i, m in zip(result.obj_ids.tolist(), result.masks, strict=True)}
        )
    seconds = time.perf_counter() - start
    return per_frame, recorder, seconds


def _iou(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None and b is None:
        return 1.0
    if a is None or b is None:
        return 0.0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def bench_agreement(
    report: Report,
    exact: BackendSegmenter,
    fast: Sequence[BackendSegmenter],
    frames: Sequence[np.ndarray],
    user_boxes: np.ndarray,
    *,
    weights_are_real: bool,
    noise_frames: int = 3,
) -> None:
    """Agreement rows: each fast mode's masks against exact mode's on the same frames.

    The exact mode's first-frame masks for ``user_boxes`` give the box prompts (tight boxes of
    those masks) that every mode starts from. Two figures per mode:

    - ``iou_same_prompts``: on every frame, decode exact mode's tracked boxes on the fast
      mode's embedding; mean IoU with exact mode's masks. Isolates the encoder approximation.
    - ``iou_tracked``: run the whole tracker in the fast mode; mean IoU of its masks with
      exact mode's tracked masks. Includes drift, which compounds over frames.
    """
    first_embedding = exact.encode(frames[0])
    first = exact.decode(first_embedding, boxes_xyxy=user_boxes, multimask_output=False)
    boxes = []
    for mask, user_box in zip(first.masks[:, 0].numpy(), user_boxes, strict=True):
        box = mask_to_box(mask)
        boxes.append(box if box is not None else user_box)
    prompt_boxes = np.asarray(boxes, np.float32)
    exact_masks, exact_rec, exact_s = _track(
        exact, frames, prompt_boxes, {id(frames[0]): first_embedding}
    )
    rows = [("exact", exact, exact_masks, exact_rec, exact_s)]
    for seg in fast:
        masks, rec, seconds = _track(seg, frames, prompt_boxes)
        rows.append((mode_name(seg), seg, masks, rec, seconds))
    report.agreement.append(
        _noise_floor(exact, frames, exact_masks, exact_rec, weights_are_real, noise_frames)
    )
    for name, seg, masks, rec, seconds in rows:
        same, tracked = [], []
        for frame_idx, exact_frame in enumerate(exact_masks):
            ids = sorted(set(exact_frame) | set(masks[frame_idx]))
            tracked += [_iou(exact_frame.get(i), masks[frame_idx].get(i)) for i in ids]
            if not exact_frame:
                continue
            obj_boxes = []
            for obj_id in sorted(exact_frame):
                box = mask_to_box(exact_frame[obj_id])
                obj_boxes.append(box if box is not None else np.zeros(4, np.float32))
            box_array = np.asarray(obj_boxes, np.float32)
            ref = exact.decode(exact_rec.embeddings[frame_idx], boxes_xyxy=box_array)
            out = seg.decode(rec.embeddings[frame_idx], boxes_xyxy=box_array)
            pair = mask_iou(out.masks[:, 0].numpy(), ref.masks[:, 0].numpy())
            same += np.diag(pair).tolist()
        report.agreement.append(
            {
                "mode": name,
                "backend": getattr(seg, "inner", seg).name.split(" ")[0],
                "frames": len(frames),
                "iou_same_prompts": round(float(np.mean(same)), 4) if same else None,
                "iou_same_prompts_min": round(float(np.min(same)), 4) if same else None,
                "iou_tracked": round(float(np.mean(tracked)), 4) if tracked else None,
                "encode_ms": round(1000 * statistics.median(rec.encode_s), 1),
                "tracker_fps": round(len(frames) / seconds, 3),
                "real_weights": weights_are_real,
            }
        )
        logger.info("agreement %s", report.agreement[-1])


def _noise_floor(
    exact: BackendSegmenter,
    frames: Sequence[np.ndarray],
    exact_masks: list[dict[int, np.ndarray]],
    exact_rec: _Recorder,
    weights_are_real: bool,
    max_frames: int = 3,
) -> dict[str, Any]:
    """A reference row: exact mode on frames with +-1 grey-level noise, same prompts.

    It tells how far this checkpoint's masks move under an imperceptible input change, which
    is the scale to read the fast modes' agreement on (untrained weights move a lot).
    """
    rng = np.random.default_rng(0)
    same = []
    for frame_idx in range(min(max_frames, len(frames))):
        objects = exact_masks[frame_idx]
        boxes = [mask_to_box(objects[i]) for i in sorted(objects)]
        boxes = [b for b in boxes if b is not None]
        if not boxes:
            continue
        noise = rng.integers(-1, 2, frames[frame_idx].shape)
        noisy = np.clip(frames[frame_idx].astype(np.int16) + noise, 0, 255).astype(np.uint8)
        box_array = np.asarray(boxes, np.float32)
        ref = exact.decode(exact_rec.embeddings[frame_idx], boxes_xyxy=box_array)
        out = exact.decode(exact.encode(noisy), boxes_xyxy=box_array)
        same += np.diag(mask_iou(out.masks[:, 0].numpy(), ref.masks[:, 0].numpy())).tolist()
    return {
        "mode": "exact, input ±1 noise (reference)",
        "backend": exact.name.split(" ")[0],
        "frames": min(max_frames, len(frames)),
        "iou_same_prompts": round(float(np.mean(same)), 4) if same else None,
        "iou_same_prompts_min": round(float(np.min(same)), 4) if same else None,
        "iou_tracked": None,
        "encode_ms": None,
        "tracker_fps": None,
        "real_weights": weights_are_real,
    }


def check_targets(report: Report, default_backend: str) -> None:
    """Compare this run's numbers with the issue's targets."""
    targets = report.targets
    malloc = report.machine.get("malloc")
    exact_1024 = [
        r for r in report.encoder
        if r["model"] == "repvit" and r["input"] == "1024x1024" and r.get("malloc") == malloc
    ]
    default_rows = [r for r in exact_1024 if r["backend"].startswith(default_backend)]
    if default_rows:
        best = min(default_rows, key=lambda r: r["median_s"])
        targets.append(_target(f"encoder 1024 exact, default backend ({best['backend']}) [s]",
                               f"<= {TARGET_ENCODER_S}", best["median_s"],
                               best["median_s"] <= TARGET_ENCODER_S))
    if exact_1024:
        best = max(exact_1024, key=lambda r: r["gemm_fraction"])
        targets.append(_target(f"encoder 1024 fraction of GEMM bound ({best['backend']})",
                               f">= {TARGET_GEMM_FRACTION}", best["gemm_fraction"],
                               best["gemm_fraction"] >= TARGET_GEMM_FRACTION))
    by_backend: dict[str, dict[int, float]] = {}
    for row in report.decoder:
        if row.get("malloc") == malloc:
            by_backend.setdefault(row["backend"], {})[row["objects"]] = row["median_ms"]
    for backend, times in by_backend.items():
        if 1 in times and 8 in times:
            ratio = times[8] / times[1]
            targets.append(_target(f"decoder 8 objects / 1 object ({backend})",
                                   f"<= {TARGET_DECODER_RATIO}", round(ratio, 2),
                                   ratio <= TARGET_DECODER_RATIO))
    for row in report.loop:
        if row["mode"] == "exact" and row["fps_vs_encoder"] is not None:
            targets.append(_target(f"loop FPS x encoder time ({row['model']}, {row['backend']}, "
                                   f"{row['overlap']})",
                                   f">= {TARGET_LOOP_FRACTION}", row["fps_vs_encoder"],
                                   row["fps_vs_encoder"] >= TARGET_LOOP_FRACTION))
    fast_rows = [r for r in report.loop if r["mode"] != "exact"]
    if fast_rows:
        best = max(fast_rows, key=lambda r: r["fps"])
        targets.append(_target(f"best fast mode loop FPS ({best['mode']}, {best['backend']})",
                               f">= {TARGET_FAST_FPS}", best["fps"], best["fps"] >= TARGET_FAST_FPS))


def _target(name: str, goal: str, value: float, met: bool) -> dict[str, Any]:
    return {"target": name, "goal": goal, "measured": value, "met": bool(met)}


# --------------------------------------------------------------------------- output


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return "_(none)_\n"
    columns = list(columns or rows[0].keys())

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        return "–" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_markdown(report: Report) -> str:
    """The whole report as markdown."""
    m = report.machine
    out = [
        "# vos.bench",
        "",
        f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('threads')} threads; torch "
        f"{m.get('torch')}, onnxruntime {m.get('onnxruntime')}, openvino {m.get('openvino')}.",
        f"fp32 GEMM bound measured in this run (best torch.mm rate, n = 2048 and 4096): "
        f"**{report.gemm_gflops:.1f} GFLOP/s**. "
        f"Timings are medians of {report.settings.get('repeats')} calls after "
        f"{report.settings.get('warmup')} warm-up call(s).",
        "",
        "## Encoder",
        "",
        markdown_table(report.encoder),
        "## Decoder (one batched call: box + point + previous logits, 3 candidates each)",
        "",
        markdown_table(report.decoder),
        "## Per-frame loop (vos.pipeline.run_video: source, tracker, sinks)",
        "",
        "fps_vs_encoder = loop FPS x encoder_alone (``encode`` timed alone just before the "
        "loop); other_ms = frame time not spent in encode or decode (tracker, queueing).",
        "",
        markdown_table(report.loop),
    ]
    if report.agreement:
        out += [
            "## Fast-mode agreement with exact mode (mean mask IoU)",
            "",
            markdown_table(report.agreement),
        ]
    out += ["## Targets (issue #7)", "", markdown_table(report.targets)]
    if report.notes:
        out += ["## Notes", ""] + [f"- {note}" for note in report.notes] + [""]
    return "\n".join(out)


def write_report(report: Report, output: Path) -> tuple[Path, Path]:
    """Write ``bench.md`` and ``bench.json`` into ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    md_path, json_path = output / "bench.md", output / "bench.json"
    md_path.write_text(render_markdown(report))
    json_path.write_text(json.dumps(asdict(report), indent=2))
    return md_path, json_path


# --------------------------------------------------------------------------- CLI


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m vos.bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m vos.bench", description="Time the encoder, decoder and video loop."
    )
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="checkpoint of the first model, or MODEL=PATH (repeatable)")
    parser.add_argument("--models", default="repvit",
                        help=f"comma-separated seed models to compare ({','.join(SEED_MODELS)})")
    parser.add_argument("--backend", default="all",
                        help=f"'all' installed, or comma-separated of {','.join(BACKENDS)}")
    parser.add_argument("--torch-variants", default=",".join(TORCH_VARIANTS),
                        help=f"torch encoder variants to time ({','.join(TORCH_VARIANTS)})")
    parser.add_argument("--sizes", default="1024,768,512",
                        help="square encoder input sizes to time (1024 is exact)")
    parser.add_argument("--objects", default="1,4,8,16", help="decoder object counts")
    parser.add_argument("--video", default=None,
                        help="video or frame folder (default: ../shared/data/videos/blackswan.mp4"
                             " when present, else synthetic frames)")
    parser.add_argument("--frames", type=int, default=30,
                        help="frames of the loop runs (start-up and the final flush count too)")
    parser.add_argument("--box", action="append", type=parse_box, default=[],
                        help="x0,y0,x1,y1 object box on frame 0 (repeatable; default: central)")
    parser.add_argument("--modes",
                        default="nopad,size768+nopad,size512+nopad,size384+nopad,roi+size512,int8",
                        help="fast modes for the loop and --agreement ('' for none)")
    parser.add_argument("--agreement", action="store_true",
                        help="measure each fast mode's mask IoU against exact mode")
    parser.add_argument("--agreement-frames", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--output", default="bench-results", help="folder for bench.md/json")
    parser.add_argument("--no-loop", action="store_true", help="skip the per-frame loop")
    parser.add_argument("--sinks", default="png,json,video",
                        help="outputs the loop writes (the CLI writes all three by default)")
    parser.add_argument("--encode-ahead", action="store_true",
                        help="also time the loops with vos.overlap.EncodeAhead")
    parser.add_argument("--compare-malloc", action="store_true",
                        help="also time the torch encoder and decoder with glibc's default "
                             f"allocator settings ({MALLOC_ENV}=system, in a child process)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny smoke run: 256² encoder, torch fused, 1-2 objects, "
                             "3 synthetic frames, fast modes size256+nopad and roi+size256")
    return parser


def _checkpoints(entries: Sequence[str], models: Sequence[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = dict.fromkeys(models)
    for entry in entries:
        name, sep, path = entry.partition("=")
        if sep and name in found:
            found[name] = path
        else:
            found[models[0]] = entry
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.quick:
        args.sizes, args.objects, args.frames, args.repeats = "256", "1,2", 3, 2
        args.torch_variants, args.modes = "fused", "size256+nopad,roi+size256"
        args.agreement_frames = min(args.agreement_frames, 2)
        if args.backend == "all":
            args.backend = "torch"
    torch.set_num_threads(args.threads)
    installed = available_backends()
    backends = installed if args.backend == "all" else _csv(args.backend)
    missing = [b for b in backends if b not in installed]
    if missing:
        print(f"vos.bench: backend(s) not installed: {', '.join(missing)}")
        return 2
    backends = [b for b in ("torch", "onnxruntime", "openvino") if b in backends]
    default = next(b for b in installed if b in backends)
    models_wanted = _csv(args.models)
    unknown = [m for m in models_wanted if m not in SEED_MODELS]
    if unknown:
        print(f"vos.bench: unknown model(s) {unknown}; expected some of {SEED_MODELS}")
        return 2
    checkpoints = _checkpoints(args.checkpoint, models_wanted)

    video = args.video
    if video is None and not args.quick and DEFAULT_VIDEO.exists():
        video = str(DEFAULT_VIDEO)
    num_frames = max(args.frames, args.agreement_frames if args.agreement else 0)
    frames, video_name = load_frames(video, num_frames)
    image_hw = (frames[0].shape[0], frames[0].shape[1])
    boxes = np.stack(args.box) if args.box else default_boxes(image_hw, 1)

    malloc = "retained" if retain_freed_memory() else "system"
    report = Report(machine=machine_info(args.threads, malloc))
    report.settings = {
        "models": models_wanted, "checkpoints": checkpoints, "backends": backends,
        "default_backend": default, "video": video_name, "frame_hw": list(image_hw),
        "warmup": args.warmup, "repeats": args.repeats, "quick": args.quick,
    }
    report.gemm_gflops = round(measure_gemm_gflops((512,) if args.quick else (2048, 4096)), 1)

    models: dict[str, tuple[Sam, str | None]] = {}
    for name in models_wanted:
        try:
            model = sam_model_registry[name](checkpoints[name]).eval()
        except CheckpointError as exc:
            print(f"vos.bench: {exc}")
            return 2
        if checkpoints[name] is None:
            fill_synthetic_weights(model)
        models[name] = (model, checkpoints[name])
    if not all(checkpoints.values()):
        report.notes.append("models without --checkpoint carry synthetic weights "
                            "(fill_synthetic_weights): timings hold, agreement figures do not "
                            "describe a trained model")

    sizes = [int(s) for s in _csv(args.sizes)]
    shapes = [(f"{s}² square" if s != 1024 else "1024² exact", FastMode(input_size=s))
              for s in sizes]
    nopad = FastMode(input_size=sizes[0], pad_square=False)
    if nopad.encoder_input_hw(image_hw) != (sizes[0], sizes[0]):
        shapes.append((f"{sizes[0]} nopad (video aspect)", nopad))
    torch_variants = _csv(args.torch_variants)
    configs = encoder_configs(backends, torch_variants)
    bench_encoders(report, models, configs, shapes, frames[0], threads=args.threads,
                   warmup=args.warmup, repeats=args.repeats)

    repvit = models.get("repvit") or next(iter(models.values()))
    bench_decoders(report, repvit[0], repvit[1], backends, frames[0],
                   [int(n) for n in _csv(args.objects)], threads=args.threads,
                   warmup=args.warmup, repeats=args.repeats)
    if args.compare_malloc and malloc == "retained" and "torch" in backends:
        compare_malloc(report, args, torch_variants, checkpoints)

    modes = _csv(args.modes)
    for text in modes:
        FastMode.parse(text)  # a bad mode fails here, before any timing
    # int8 runs on ONNX Runtime first: its QDQ kernels measured 0.36 s against OpenVINO's
    # 0.63 s on the same quantised graph (1024x576, 2 cores).
    graph_backend = next((b for b in ("onnxruntime", "openvino") if b in backends), None)

    decoder = _best_decoder(report) or default

    def segmenter(model: Sam, checkpoint: str | None, text: str) -> Any:
        roi_mode = FastMode.parse(text)
        roi, mode = roi_mode.roi, roi_mode.without_roi()
        backend = default
        if mode.int8:
            if graph_backend is None:
                return None
            backend = graph_backend
        best_variant = _best_torch_variant(report)
        seg = BackendSegmenter(model, backend=backend, decoder_backend=decoder, mode=mode,
                               threads=args.threads, checkpoint=checkpoint,
                               torch_variant=best_variant,
                               calibration_frames=frames[: min(8, len(frames))])
        return RoiSegmenter(seg) if roi else seg

    sinks = set(_csv(args.sinks))
    io = IOConfig(save_png="png" in sinks, save_json="json" in sinks,
                  save_video="video" in sinks)
    if not args.no_loop:
        loop_frames = frames[: args.frames]
        # --quick skips the exact loop: three 1024² encodes would dominate a smoke run.
        for name, (model, checkpoint) in ({} if args.quick else models).items():
            seg = segmenter(model, checkpoint, "exact")
            assert seg is not None
            for ahead in (False, True) if args.encode_ahead else (False,):
                bench_loop(report, seg, loop_frames, boxes, model_name=name,
                           encode_ahead=ahead, io=io)
        if "repvit" in models:
            model, checkpoint = models["repvit"]
            for mode in modes:
                seg = segmenter(model, checkpoint, mode)
                if seg is None:
                    report.notes.append(f"{mode}: needs onnxruntime or openvino, skipped")
                    continue
                bench_loop(report, seg, loop_frames, boxes, model_name="repvit", io=io)

    if args.agreement and "repvit" in models:
        model, checkpoint = models["repvit"]
        exact = segmenter(model, checkpoint, "exact")
        assert exact is not None
        fast = [s for s in (segmenter(model, checkpoint, m) for m in modes) if s is not None]
        bench_agreement(report, exact, fast, frames[: args.agreement_frames], boxes,
                        weights_are_real=checkpoints["repvit"] is not None,
                        noise_frames=1 if args.quick else 3)

    check_targets(report, default)
    md_path, json_path = write_report(report, Path(args.output))
    print(render_markdown(report))
    print(f"wrote {md_path} and {json_path}")
    return 0


def compare_malloc(
    report: Report,
    args: argparse.Namespace,
    torch_variants: Sequence[str],
    checkpoints: dict[str, str | None],
) -> None:
    """Rerun the torch encoder and decoder rows in a child with ``REPVIT_VOS_MALLOC=system``.

    ``mallopt`` settings cannot be undone inside a process, so the comparison runs the same
    command in a fresh interpreter right after this one's rows and appends its rows (their
    ``malloc`` column says ``system``).
    """
    command = [
        sys.executable, "-m", "vos.bench", "--backend", "torch", "--no-loop", "--modes", "",
        "--models", "repvit", "--torch-variants", ",".join(torch_variants),
        "--sizes", _csv(args.sizes)[0], "--objects", args.objects,
        "--threads", str(args.threads), "--warmup", str(args.warmup),
        "--repeats", str(args.repeats),
    ]
    if checkpoints.get("repvit"):
        command += ["--checkpoint", str(checkpoints["repvit"])]
    if args.video:
        command += ["--video", args.video]
    if args.quick:
        command.append("--quick")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, MALLOC_ENV: "system"}
        done = subprocess.run([*command, "--output", tmp], env=env, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            report.notes.append(f"--compare-malloc: child run failed ({done.stderr.strip()[-200:]})")
            return
        child = json.loads((Path(tmp) / "bench.json").read_text())
    for row in child["encoder"]:
        if row["model"] == "repvit":
            # Against this run's GEMM bound, like every other row of the report.
            row["gemm_fraction"] = round(row["gflop_per_s"] / report.gemm_gflops, 3)
            report.encoder.append(row)
    report.decoder += [r for r in child["decoder"] if r["backend"].startswith("torch")]


def mode_name(segmenter: Any) -> str:
    """A segmenter's fast mode as text (``exact``, ``size512+nopad``, ``roi+size512``)."""
    return segmenter.mode.name


def _best_decoder(report: Report) -> str | None:
    malloc = report.machine.get("malloc")
    rows = [
        r for r in report.decoder
        if r["objects"] == 1 and r["backend"] in BACKENDS and r.get("malloc") == malloc
    ]
    return min(rows, key=lambda r: r["median_ms"])["backend"] if rows else None


def _best_torch_variant(report: Report) -> str:
    malloc = report.machine.get("malloc")
    rows = [
        r for r in report.encoder
        if r["backend"].startswith("torch[") and r.get("malloc") == malloc
    ]
    rows = [r for r in rows if r["model"] == "repvit"] or rows
    largest = max((r["gflops"] for r in rows), default=0.0)
    rows = [r for r in rows if r["gflops"] == largest]
    if not rows:
        return "channels_last"
    best = min(rows, key=lambda r: r["median_s"] / max(r["gflops"], 1e-9))
    return best["backend"][len("torch[") : -1]


if __name__ == "__main__":
    raise SystemExit(main())
