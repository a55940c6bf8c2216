"""CPU speed benchmark (issue #7): ``python -m vos.bench``.

Times, in one run and with the same thread settings:

- the machine's float32 GEMM rate (the bound every encoder number is compared against);
- the image encoder at 1024² and other sizes on every selected backend (PyTorch variants,
  ONNX Runtime, OpenVINO), with its GFLOPs and the fraction of the GEMM bound it reaches;
- the prompt decoder for 1/4/8/16 objects in one batched call, with the tracker's prompts;
- the whole per-frame loop of ``python -m vos.run`` (source, tracker, sinks) on a video, in
  exact mode and in each requested fast mode;
- with ``--agreement``, each fast mode's mask IoU against exact mode on the user's own
  checkpoint and video;
- with ``--only live`` (:mod:`~vos.bench.live`, issue 29), live tracking at camera rate: a
  video paced as a 30 frames/s camera (640x480 and 1280x720) through the live window's loop,
  with display and model frames/s, glass-to-mask latency p50/p95 and the share of frames
  whose masks were carried by optical flow; and, on DAVIS frames with ground truth, J of
  masks carried k frames against masks held.

Every timing is a median after warm-up. Results go to ``bench.md`` and ``bench.json`` in
``--output``, and the markdown is printed.

Without ``--checkpoint`` the models carry random weights: timings are valid (they do not
depend on the weights), agreement figures are not (random weights have no scale invariance),
so ``--agreement`` then says so in the table.

Modules: :mod:`~vos.bench.timing` (timing, GEMM bound, GFLOPs, machine),
:mod:`~vos.bench.inputs` (weights, frames, boxes, prompts), one module per section
(:mod:`~vos.bench.encoders`, :mod:`~vos.bench.decoders`, :mod:`~vos.bench.loop`,
:mod:`~vos.bench.agreement`, :mod:`~vos.bench.malloc`, :mod:`~vos.bench.live`),
:mod:`~vos.bench.segmenters` (the segmenters the loop and agreement run) and
:mod:`~vos.bench.report` (targets, markdown, files). The flags live in :mod:`vos.cli.bench`.

Example:
    python -m vos.bench --checkpoint weights/repvit_sam.pt --video clip.mp4 --agreement
    python -m vos.bench --models repvit,vit_t,vit_b --backend torch --sizes 1024
    python -m vos.bench --quick   # a tiny smoke run (CI)
    python -m vos.bench --only live --checkpoint weights/repvit_sam.pt   # camera rate
"""

from __future__ import annotations

from vos.bench.agreement import bench_agreement
from vos.bench.decoders import bench_decoders
from vos.bench.encoders import bench_encoders, encoder_configs, encoder_shapes
from vos.bench.inputs import (
    default_boxes,
    fill_synthetic_weights,
    load_frames,
    synthetic_frames,
    tracker_prompts,
)
from vos.bench.live import bench_live
from vos.bench.loop import bench_loop
from vos.bench.malloc import compare_malloc
from vos.bench.report import Report, check_targets, markdown_table, render_markdown, write_report
from vos.bench.timing import Timing, encoder_gflops, machine_info, measure_gemm_gflops, time_call

__all__ = [
    "Report",
    "Timing",
    "bench_agreement",
    "bench_decoders",
    "bench_encoders",
    "bench_live",
    "bench_loop",
    "check_targets",
    "compare_malloc",
    "default_boxes",
    "encoder_configs",
    "encoder_gflops",
    "encoder_shapes",
    "fill_synthetic_weights",
    "load_frames",
    "machine_info",
    "markdown_table",
    "measure_gemm_gflops",
    "render_markdown",
    "synthetic_frames",
    "time_call",
    "tracker_prompts",
    "write_report",
]

