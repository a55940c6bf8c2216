"""``python -m repvit_sam.export {onnx,coreml} --checkpoint PATH|none --out DIR``.

Builds RepViT-SAM (fused), exports it and prints the written files. Failures the user can fix
(missing optional package, unreadable checkpoint, converter error) end with a one-line
``error: ...`` on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from repvit_sam.build import CheckpointError, build_repvit_sam
from repvit_sam.modeling.sam import Sam


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m repvit_sam.export",
        description="Export RepViT-SAM's image encoder and prompt decoder.",
    )
    sub = parser.add_subparsers(dest="format", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--checkpoint",
            required=True,
            help="repvit_sam.pt, or 'none' for random weights (tests, benchmarks)",
        )
        p.add_argument("--out", required=True, type=Path, help="output directory")

    onnx_p = sub.add_parser("onnx", help="encoder.onnx + decoder.onnx (ONNX Runtime)")
    common(onnx_p)
    onnx_p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    onnx_p.add_argument(
        "--return-single-mask",
        action="store_true",
        help="decoder emits 1 mask chosen by SAM's ONNX rule instead of all 4 mask tokens "
        "(OnnxSegmenter needs all 4)",
    )
    onnx_p.add_argument("--encoder-only", action="store_true", help="skip decoder.onnx")
    onnx_p.add_argument("--decoder-only", action="store_true", help="skip encoder.onnx")

    coreml_p = sub.add_parser("coreml", help="encoder.mlpackage + decoder.mlpackage (Core ML)")
    common(coreml_p)
    coreml_p.add_argument(
        "--precision", choices=("fp16", "fp32"), default="fp16", help="encoder precision"
    )
    coreml_p.add_argument(
        "--resolution", type=int, default=None, help="encoder input side (default 1024)"
    )
    coreml_p.add_argument("--encoder-only", action="store_true", help="skip decoder.mlpackage")
    return parser


def _load_model(checkpoint: str) -> Sam:
    path = None if checkpoint.lower() == "none" else checkpoint
    return build_repvit_sam(path, fuse=True)


def _export_onnx(args: argparse.Namespace, model: Sam) -> dict[str, Path]:
    from repvit_sam.export.onnx import (
        DECODER_FILENAME,
        ENCODER_FILENAME,
        export_decoder_onnx,
        export_encoder_onnx,
    )

    if args.encoder_only and args.decoder_only:
        raise ValueError("--encoder-only and --decoder-only exclude each other")
    written = {}
    if not args.decoder_only:
        written["encoder"] = export_encoder_onnx(
            model, args.out / ENCODER_FILENAME, opset=args.opset
        )
    if not args.encoder_only:
        written["decoder"] = export_decoder_onnx(
            model,
            args.out / DECODER_FILENAME,
            opset=args.opset,
            return_single_mask=args.return_single_mask,
        )
    return written


def _export_coreml(args: argparse.Namespace, model: Sam) -> dict[str, Path]:
    from repvit_sam.export.coreml import export_coreml

    return export_coreml(
        model,
        args.out,
        resolution=args.resolution,
        encoder_precision=args.precision,
        decoder=not args.encoder_only,
    )


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter.

    Args:
        argv: command-line arguments without the program name; ``sys.argv[1:]`` if None.

    Returns:
        0 on success, 1 on a reported error.
    """
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from repvit_sam.export.coreml import CoreMLExportError

    try:
        model = _load_model(args.checkpoint)
        exporter = _export_onnx if args.format == "onnx" else _export_coreml
        written = exporter(args, model)
    except (ImportError, CheckpointError, CoreMLExportError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for kind, path in written.items():
        print(f"{kind}: {path} ({_size(path) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
