"""Live RepViT-SAM tracking in an OpenCV window, through the ``vos.live`` library API.

Drag a box (or click) on an object to track it; ``r`` resets, ``d`` removes the last object,
``p`` pauses, ``q`` quits. The full-featured command is ``python -m vos.run webcam --help``
(recording, headless mode, configs).

Usage:
    python demos/webcam.py --checkpoint weights/repvit_sam.pt [--camera 0|URL|clip.mp4]
"""

from __future__ import annotations

import argparse

from repvit_sam import SamPredictor, sam_model_registry
from vos.live import LiveApp, LiveSession, LiveWindow, open_camera


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="RepViT-SAM weights")
    parser.add_argument("--camera", default="0", help="camera index, stream URL or video file")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    args = parser.parse_args()

    predictor = SamPredictor(sam_model_registry["repvit"](checkpoint=args.checkpoint, fuse=True,
                                                          device=args.device))
    with open_camera(args.camera) as camera:
        app = LiveApp(camera, LiveSession(predictor))
        window = LiveWindow(on_mouse=app.drawer.on_mouse)
        app.window = window
        try:
            stats = app.run()
        except KeyboardInterrupt:
            stats = app.stats
        finally:
            window.close()
    print(f"{stats.frames_processed} frames processed, {stats.frames_dropped} dropped, "
          f"{stats.fps:.1f} fps, latency median {stats.latency_ms(50):.0f} ms, "
          f"p95 {stats.latency_ms(95):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
