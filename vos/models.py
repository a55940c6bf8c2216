"""The model factory: a :class:`~vos.config.ModelConfig` in, the tracker's segmenter out.

Every entry point (the CLI modes, batch workers, ``vos.bench``, live tracking, the web demo)
builds its model here, so the checkpoint checks, fusion, backend choice, fast modes and ROI
cropping behave the same everywhere.

Example:
    >>> cfg = load_config(None, ["model.checkpoint=weights/repvit_sam.pt"])
    >>> loaded = load_model(cfg.model)
    >>> segmenter = build_segmenter(cfg.model, loaded)
    >>> tracker = VideoTracker(segmenter, cfg.tracker, cfg.prompt)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repvit_sam import Sam, sam_model_registry
from repvit_sam.build import file_sha256, resolve_device
from repvit_sam.runtime import build_segmenter as build_runtime_segmenter
from repvit_sam.segmenter import SegmenterBase
from vos.config import ModelConfig

logger = logging.getLogger(__name__)

CHECKPOINT_ENV = "REPVIT_SAM_CHECKPOINT"
NO_CHECKPOINT = (
    "no checkpoint given: download the official RepViT-SAM weights with "
    "`python -m repvit_sam.download --model repvit --dest weights` and give "
    "weights/repvit_sam.pt as the checkpoint (model.checkpoint in a config, --checkpoint "
    f"on the command line, or the {CHECKPOINT_ENV} environment variable)"
)


class ModelError(ValueError):
    """The model of a config cannot be built (no checkpoint, unknown type, bad option)."""


@dataclass(frozen=True)
class LoadedModel:
    """A model built from a config, with what was loaded into it.

    Attributes:
        model: the model, in eval mode on the config's device (fused if asked).
        checkpoint: the checkpoint file loaded.
        checkpoint_sha256: the SHA-256 computed from that file (for ``resolved_config.yaml``).
    """

    model: Sam
    checkpoint: str
    checkpoint_sha256: str


# What the entry points call to get a segmenter; tests and batch workers may pass their own.
SegmenterFactory = Callable[[ModelConfig], Any]


def check_model_config(cfg: ModelConfig, *, device: bool = True) -> None:
    """Reject what would fail at load time, before any expensive work.

    Args:
        cfg: the model config.
        device: also check ``cfg.device`` (:func:`check_device`; a Ray driver need not
            have the GPUs its workers have).

    Raises:
        ModelError: no checkpoint, a missing file, an unknown model type or device.
    """
    if not cfg.checkpoint:
        raise ModelError(NO_CHECKPOINT)
    if not Path(cfg.checkpoint).is_file():
        raise ModelError(f"checkpoint {cfg.checkpoint}: no such file. " + NO_CHECKPOINT)
    if cfg.model_type not in sam_model_registry:
        raise ModelError(
            f"model.model_type={cfg.model_type!r}: expected one of "
            f"{', '.join(sorted(sam_model_registry))}"
        )
    if device:
        check_device(cfg.device)


def check_device(device: str) -> None:
    """Raise ModelError unless ``device`` names a device a model can be placed on here.

    The rule is :func:`repvit_sam.build.resolve_device`'s, the same for every entry point: a
    CUDA device (``cuda`` or ``cuda:N`` alike) or an MPS device this machine lacks is not an
    error; the model falls back to the CPU with one warning when it is built.

    Raises:
        ModelError: an unknown device string, or a CUDA index this machine does not have.
    """
    try:
        resolve_device(device, warn=False)
    except ValueError as exc:
        raise ModelError(f"model.device={device}: {str(exc).partition(': ')[2]}") from None


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Build the model of a config: strict checkpoint load, hash check, optional fusion.

    ``checkpoint_sha256`` and ``fuse`` apply to every model type.

    Raises:
        ModelError: see :func:`check_model_config`.
        repvit_sam.build.CheckpointError: an unreadable or mismatched checkpoint, or a hash
            that differs from ``checkpoint_sha256``.
    """
    check_model_config(cfg)
    assert cfg.checkpoint is not None
    model = sam_model_registry[cfg.model_type](
        checkpoint=cfg.checkpoint,
        device=cfg.device,
        fuse=cfg.fuse,
        checkpoint_sha256=cfg.checkpoint_sha256,
    )
    digest = file_sha256(cfg.checkpoint)
    logger.info("loaded %s from %s (sha256 %s)", cfg.model_type, cfg.checkpoint, digest[:16])
    return LoadedModel(model, cfg.checkpoint, digest)


def checkpoint_digest(cfg: ModelConfig) -> str | None:
    """SHA-256 of the config's checkpoint file, as computed when it was loaded (cached per
    path, size and mtime, so asking again costs nothing); None without a checkpoint file."""
    if not cfg.checkpoint or not Path(cfg.checkpoint).is_file():
        return None
    return file_sha256(cfg.checkpoint)


def build_segmenter(cfg: ModelConfig, loaded: LoadedModel | None = None) -> SegmenterBase:
    """The tracker's segmenter of a config: model, backend, fast mode and ROI in one place.

    Args:
        cfg: the model config.
        loaded: the config's model when the caller already built it (e.g. to also run the
            automatic mask generator); None builds it.

    Raises:
        ModelError: a backend that is not installed, or a fast mode it cannot run.
    """
    loaded = loaded or load_model(cfg)
    try:
        return build_runtime_segmenter(
            loaded.model, cfg.backend, mode=cfg.fast_mode, checkpoint=loaded.checkpoint
        )
    except ImportError as exc:
        raise ModelError(f"model.backend={cfg.backend}: {' '.join(str(exc).split())}") from None
    except ValueError as exc:
        raise ModelError(
            f"model.fast_mode={cfg.fast_mode.name}: {' '.join(str(exc).split())}"
        ) from None
