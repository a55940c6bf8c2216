"""Fast modes: how a frame is encoded, exact (SAM's own pre-processing) or approximate.

Approximations trade exactness for speed and are never on by default:

- ``sizeS``: resize the frame's long side to S (e.g. 512) instead of 1024. The encoder costs
  (S/1024)² as much; its (S/16)² embedding is resampled to SAM's 64x64 grid for the decoder.
- ``nopad``: skip the bottom/right padding of a non-square frame (only up to 15 pixels are
  padded, to a multiple of the encoder's stride). A 16:9 frame costs 56% of a square one. The
  encoder's squeeze-excite pooling and border convolutions then see no padding, so features
  change slightly everywhere.
- ``int8``: a statically quantised encoder (ONNX Runtime's QDQ quantisation, calibrated on a
  few frames of the user's video), run by ONNX Runtime or OpenVINO.
- ``roi``: encode only a square crop around the tracked objects
  (:class:`repvit_sam.runtime.roi.RoiSegmenter`); crops are never padded, so ``roi`` implies
  ``nopad`` for the encoder that sees them.
- ``bf16``: the encoder and the mask decoder's transformer and upscaling compute in bfloat16
  where the hardware has it (AVX512-BF16 or AMX on a CPU, any bf16 GPU); the decoder's final
  logits and IoU head stay float32. On a CPU without native bf16 (or whose bf16 GEMMs are not
  faster than float32's, by a one-time probe) it runs float32 and says so in one line
  (:mod:`repvit_sam.runtime.precision`).

Modes combine with ``+`` (``size512+nopad``, ``roi+size512``, ``bf16+roi+size512``). The text form is parsed once,
by :meth:`FastMode.parse` (the config loader does it), and travels as this typed value.
``python -m vos.bench --agreement`` measures each mode's mask IoU against exact mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# The encoders' total stride: inputs are padded to a multiple of it, so every embedding cell
# covers a whole 16x16 patch of the model frame.
ENCODER_STRIDE = 16
MODEL_SIZE = 1024


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class FastMode:
    """How a frame is encoded. The default is exact (SAM's own pre-processing).

    Attributes:
        input_size: long side the frame is resized to (1024 exact; smaller is faster and
            coarser). A multiple of 16.
        pad_square: pad bottom/right to an ``input_size`` square as SAM does (exact); False
            pads only to a multiple of 16 (approximate, faster on non-square frames).
        int8: run a statically quantised encoder (approximate; graph backends only).
        roi: encode a crop around the tracked objects instead of the frame (approximate).
        bf16: compute the encoder and most of the decoder in bfloat16 (approximate; float32
            where the hardware lacks native bf16, see :mod:`repvit_sam.runtime.precision`).

    Raises:
        ValueError: ``input_size`` is not a positive multiple of 16.
    """

    input_size: int = MODEL_SIZE
    pad_square: bool = True
    int8: bool = False
    roi: bool = False
    bf16: bool = False

    def __post_init__(self) -> None:
        if self.input_size < ENCODER_STRIDE or self.input_size % ENCODER_STRIDE:
            raise ValueError(
                f"input_size: expected a positive multiple of {ENCODER_STRIDE}, "
                f"got {self.input_size}"
            )

    @property
    def is_exact(self) -> bool:
        """True for SAM's exact pre-processing and a float32 encoder."""
        return self == EXACT

    @property
    def name(self) -> str:
        """Canonical text form, e.g. ``exact``, ``nopad``, ``size512+nopad+int8``, ``roi``,
        ``bf16+roi+size512``.

        ``roi`` modes leave out ``nopad``, which they imply.
        """
        parts = ["bf16"] if self.bf16 else []
        if self.roi:
            parts.append("roi")
        if self.input_size != MODEL_SIZE:
            parts.append(f"size{self.input_size}")
        if not self.pad_square and not self.roi:
            parts.append("nopad")
        if self.int8:
            parts.append("int8")
        return "+".join(parts) or "exact"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str | FastMode) -> FastMode:
        """``exact``, or ``+``-joined ``sizeS``, ``nopad``, ``int8``, ``roi``, ``bf16``.

        Raises:
            ValueError: on an unknown part or a size that is not a multiple of 16.
        """
        if isinstance(text, FastMode):
            return text
        if not isinstance(text, str):
            raise ValueError(f"fast mode {text!r}: expected text such as 'exact' or 'size512+nopad'")
        size, pad, int8, roi, bf16 = MODEL_SIZE, True, False, False, False
        for part in text.strip().lower().split("+"):
            if part in ("exact", ""):
                continue
            if part == "nopad":
                pad = False
            elif part == "int8":
                int8 = True
            elif part == "roi":
                roi, pad = True, False
            elif part == "bf16":
                bf16 = True
            elif part.startswith("size") and part[4:].isdigit():
                size = int(part[4:])
            else:
                raise ValueError(
                    f"fast mode {text!r}: expected 'exact' or '+'-joined parts sizeS, nopad, "
                    "int8, roi, bf16"
                )
        return cls(input_size=size, pad_square=pad, int8=int8, roi=roi, bf16=bf16)

    def without_roi(self) -> FastMode:
        """The mode of the encoder that sees the crops of a ``roi`` mode (never padded)."""
        return dataclasses.replace(self, roi=False, pad_square=self.pad_square and not self.roi)

    def encoder_input_hw(self, orig_hw: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the padded encoder input for a frame of ``orig_hw`` pixels."""
        # Imported here: this module stays free of torch for the config loader.
        from repvit_sam.utils.transforms import ResizeLongestSide

        if self.pad_square:
            return self.input_size, self.input_size
        h, w = ResizeLongestSide.get_preprocess_shape(orig_hw[0], orig_hw[1], self.input_size)
        return round_up(h, ENCODER_STRIDE), round_up(w, ENCODER_STRIDE)

    @staticmethod
    def sam_grid_cells(input_hw: tuple[int, int]) -> tuple[int, int]:
        """Cells of SAM's 16-pixel grid that an (h, w) image at 1024 touches."""
        return (
            round_up(input_hw[0], ENCODER_STRIDE) // ENCODER_STRIDE,
            round_up(input_hw[1], ENCODER_STRIDE) // ENCODER_STRIDE,
        )

    def full_grid_hw(self) -> tuple[int, int]:
        """(H, W) of the embedding grid that spans the whole padded square model frame."""
        side = self.input_size // ENCODER_STRIDE
        return side, side


EXACT = FastMode()
