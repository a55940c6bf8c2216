"""Model construction and checkpoint loading: the only place that knows hyper-parameters.

Example:
    >>> from repvit_sam import sam_model_registry, SamPredictor
    >>> sam = sam_model_registry["repvit"](checkpoint="weights/repvit_sam.pt")
    >>> predictor = SamPredictor(sam)
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import torch
from torch import nn

from repvit_sam.modeling.mask_decoder import MaskDecoder
from repvit_sam.modeling.prompt_encoder import PromptEncoder
from repvit_sam.modeling.repvit import RepViT
from repvit_sam.modeling.sam import Sam
from repvit_sam.modeling.transformer import TwoWayTransformer

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# SAM's fixed geometry: 1024 input, 16x downsampling, 256-d embedding.
IMAGE_SIZE = 1024
EMBED_DIM = 256
EMBED_SIZE = IMAGE_SIZE // 16


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read, or does not fit the model."""


def sha256_of(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: PathLike) -> str:
    """:func:`sha256_of`, remembered per (path, size, mtime): a file is hashed once a process.

    The checkpoint check, the graph cache key and the run record all ask for it.
    """
    stat = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(path)


def fused_copy(module: nn.Module) -> nn.Module:
    """A BN/branch-fused eval copy of a module with ``fuse()`` (others: a plain eval copy).

    The original is left as it is, so one model can serve exact and fused runners at once.
    """
    module = copy.deepcopy(module).eval()
    fuse_fn = getattr(module, "fuse", None)
    if callable(fuse_fn):
        fuse_fn()
    return module


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: file not found") from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        ValueError,
    ) as exc:
        text = str(exc)
        if "allowed global" in text or "Unsupported global" in text:
            # torch's own text suggests weights_only=False, i.e. running the file's code.
            raise CheckpointError(
                f"checkpoint {path}: holds pickled Python objects besides tensors, which are "
                "not loaded (loading them could run code from the file); save only the "
                "weights: torch.save(model.state_dict(), path)"
            ) from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines and lines[0].startswith("Weights only load failed"):
            # The reason is the line after torch's advice, e.g. "Unsupported operand 110".
            marker = next((i for i, line in enumerate(lines) if "WeightsUnpickler" in line), 0)
            lines = lines[marker + 1:marker + 2] or ["not a torch file"]
        first = lines[0] if lines else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path}: not a readable torch state_dict file "
            f"(truncated or corrupt?): {first}"
        ) from None
    # timm-style unwrapping of training checkpoints.
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(
            f"checkpoint {path}: expected a state_dict (a mapping of names to tensors), "
            f"got {type(obj).__name__}"
        )
    return dict(obj)


def _describe(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return shown + more


def load_checkpoint(
    model: nn.Module,
    path: PathLike,
    *,
    strict: bool = True,
    expected_sha256: str | None = None,
) -> dict[str, list[str]]:
    """Load an official checkpoint (a flat state_dict) into ``model``.

    Args:
        model: the model to fill (``Sam``).
        path: a ``torch.save``d state_dict, optionally wrapped as {"model": ...} or
            {"state_dict": ...}.
        strict: raise on missing, unexpected or mis-shaped keys.
        expected_sha256: if given, the file's SHA-256 must match (hex, case-insensitive).

    Returns:
        {"missing": [...], "unexpected": [...]} (both empty when strict).

    Raises:
        CheckpointError: unreadable file, wrong type, hash mismatch, or (strict) key mismatch
            with the first offending keys named.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file}: file not found")
    if expected_sha256 is not None:
        actual = file_sha256(file)
        if actual.lower() != expected_sha256.lower():
            raise CheckpointError(
                f"checkpoint {file}: SHA-256 mismatch (expected {expected_sha256}, got {actual})"
            )
    state_dict = _read_state_dict(file)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mis_shaped = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if mis_shaped:
        raise CheckpointError(f"checkpoint {file}: mis-shaped keys: {_describe(mis_shaped)}")
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_describe(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_describe(unexpected)}")
        raise CheckpointError(f"checkpoint {file}: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=strict)
    logger.info("loaded %d tensors from %s", len(state_dict), file)
    return {"missing": missing, "unexpected": unexpected}


def _prompt_encoder() -> PromptEncoder:
    return PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(EMBED_SIZE, EMBED_SIZE),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )


def _mask_decoder() -> MaskDecoder:
    return MaskDecoder(
        transformer_dim=EMBED_DIM,
        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, num_heads=8, mlp_dim=2048),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )


def resolve_device(device: str | torch.device, *, warn: bool = True) -> torch.device:
    """The device a model is placed on: the one device rule of every entry point.

    ``device`` itself where this machine has it. A CUDA device (``"cuda"`` or ``"cuda:N"``,
    alike) or an MPS device on a machine without one falls back to the CPU, with one warning
    (each call): scripts written for a GPU (SAM 2's default ``device="cuda"``) run here
    unchanged, only slower. A machine with CUDA but fewer GPUs than ``cuda:N`` asks for is an
    error: that index names a GPU that does not exist, not a missing accelerator.

    Args:
        device: a torch device or its name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``;
            ``"meta"`` builds the layout without data, as the key-manifest test does).
        warn: log the fallback (False: only check and resolve).

    Raises:
        ValueError: not a device name, a device type other than cpu/cuda/mps, or a CUDA
            index this machine does not have.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r}: expected cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count and parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {device}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
        if count:
            return parsed
    elif parsed.type == "mps":
        if torch.backends.mps.is_available():
            return parsed
    elif parsed.type in ("cpu", "meta"):  # meta: shapes without data (a model's layout)
        return parsed
    else:
        raise ValueError(f"device {device!r}: expected cpu, cuda, cuda:N or mps")
    if warn:
        logger.warning("device %s: this machine has no %s device; running on the CPU",
                       parsed, "CUDA" if parsed.type == "cuda" else "MPS")
    return torch.device("cpu")


def _finish(
    model: Sam,
    checkpoint: PathLike | None,
    device: str | torch.device,
    fuse: bool,
    checkpoint_sha256: str | None,
) -> Sam:
    model.eval()
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, strict=True, expected_sha256=checkpoint_sha256)
    if fuse:
        model.fuse()
    return model.to(resolve_device(device))


def build_repvit_sam(
    checkpoint: PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    fuse: bool = False,
    checkpoint_sha256: str | None = None,
) -> Sam:
    """RepViT-SAM: RepViT-M2.3 encoder with SAM's prompt encoder and mask decoder.

    Args:
        checkpoint: the official ``repvit_sam.pt``; None leaves random weights.
        device: where the model lives (a CUDA device this machine lacks: the CPU, with a
            warning; :func:`resolve_device`).
        fuse: fold BN and RepVGG branches after loading (exact in eval mode, faster).
        checkpoint_sha256: verify the checkpoint file's hash before loading.

    Returns:
        The model in eval mode.
    """
    model = Sam(
        image_encoder=RepViT(last_downsample_stride=1, img_size=IMAGE_SIZE),
        prompt_encoder=_prompt_encoder(),
        mask_decoder=_mask_decoder(),
    )
    return _finish(model, checkpoint, device, fuse, checkpoint_sha256)


def _build_sam_vit(
    checkpoint: PathLike | None = None,
    *,
    encoder_embed_dim: int,
    encoder_depth: int,
    encoder_num_heads: int,
    encoder_global_attn_indexes: tuple[int, ...],
    device: str | torch.device = "cpu",
    fuse: bool = False,
    checkpoint_sha256: str | None = None,
) -> Sam:
    from repvit_sam.modeling.image_encoder import ImageEncoderViT

    encoder = ImageEncoderViT(
        depth=encoder_depth,
        embed_dim=encoder_embed_dim,
        img_size=IMAGE_SIZE,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=encoder_num_heads,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=encoder_global_attn_indexes,
        window_size=14,
        out_chans=EMBED_DIM,
    )
    model = Sam(
        image_encoder=encoder, prompt_encoder=_prompt_encoder(), mask_decoder=_mask_decoder()
    )
    return _finish(model, checkpoint, device, fuse, checkpoint_sha256)


def _sam_vit_builder(
    name: str,
    weights_file: str,
    embed_dim: int,
    depth: int,
    num_heads: int,
    global_attn_indexes: tuple[int, ...],
) -> Callable[..., Sam]:
    """A SAM ViT builder with SAM's signature (plus our keyword-only options)."""

    def build(
        checkpoint: PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        fuse: bool = False,
        checkpoint_sha256: str | None = None,
    ) -> Sam:
        return _build_sam_vit(
            checkpoint,
            encoder_embed_dim=embed_dim,
            encoder_depth=depth,
            encoder_num_heads=num_heads,
            encoder_global_attn_indexes=global_attn_indexes,
            device=device,
            fuse=fuse,
            checkpoint_sha256=checkpoint_sha256,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"SAM ViT-{name[-1].upper()} (``{weights_file}``); arguments and result as "
        ":func:`build_repvit_sam` (``fuse`` has nothing to fold in a ViT)."
    )
    return build


build_sam_vit_h = _sam_vit_builder(
    "build_sam_vit_h", "sam_vit_h_4b8939.pth", 1280, 32, 16, (7, 15, 23, 31)
)
build_sam_vit_l = _sam_vit_builder(
    "build_sam_vit_l", "sam_vit_l_0b3195.pth", 1024, 24, 16, (5, 11, 17, 23)
)
build_sam_vit_b = _sam_vit_builder(
    "build_sam_vit_b", "sam_vit_b_01ec64.pth", 768, 12, 12, (2, 5, 8, 11)
)


def build_sam_vit_t(
    checkpoint: PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    fuse: bool = False,
    checkpoint_sha256: str | None = None,
) -> Sam:
    """MobileSAM: TinyViT-5M encoder with SAM's prompt encoder and mask decoder."""
    from repvit_sam.modeling.tiny_vit_sam import TinyViT

    encoder = TinyViT(
        img_size=IMAGE_SIZE,
        in_chans=3,
        num_classes=1000,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    model = Sam(
        image_encoder=encoder, prompt_encoder=_prompt_encoder(), mask_decoder=_mask_decoder()
    )
    return _finish(model, checkpoint, device, fuse, checkpoint_sha256)


# segment-anything, MobileSAM and the official RepViT-SAM name their builders so; the
# official RepViT-SAM package also calls ours ``build_sam_repvit``.
build_sam = build_sam_vit_h
build_sam_repvit = build_repvit_sam

# "default" is ViT-H in all three official packages, so code written for them that loads
# ``sam_model_registry["default"](checkpoint="sam_vit_h_4b8939.pth")`` works here too.
sam_model_registry: dict[str, Callable[..., Sam]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "vit_t": build_sam_vit_t,
    "repvit": build_repvit_sam,
}
