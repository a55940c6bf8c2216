"""Typed run configuration: frozen dataclass trees, YAML overrides and ``--set`` overrides.

The dataclass defaults are the documented DAVIS defaults, so the library and the CLI work with
no YAML at all. A YAML file in ``configs/`` only overrides defaults; unknown keys are an error.

Example:
    >>> cfg = load_config(None, overrides=["tracker.max_missed_frames=10"])
    >>> cfg.tracker.max_missed_frames
    10
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml


class ConfigError(ValueError):
    """A config file or override does not fit the config schema."""


@dataclass(frozen=True)
class ModelConfig:
    """Which model to build and how.

    Attributes:
        model_type: key of ``repvit_sam.sam_model_registry`` ("repvit", "vit_t", "vit_b", ...).
        checkpoint: path to the official state_dict file; None means "not given".
        checkpoint_sha256: expected SHA-256 of the checkpoint, checked when set.
        device: torch device string ("cpu", "cuda", "cuda:1", ...).
        dtype: compute dtype of the model ("float32", "float16", "bfloat16").
        fuse: apply structural re-parameterisation (BN and RepVGG branch fusion) after loading.
        backend: "auto" (default: the fastest installed encoder backend on a CPU device,
            OpenVINO > ONNX Runtime > PyTorch; the reference SamPredictor on a GPU),
            "predictor" (PyTorch SamPredictor, the reference path), "torch" (channels-last
            PyTorch encoder), "onnxruntime" or "openvino". Graph backends export and cache
            the graph once per checkpoint and frame size (~5 s, under ~/.cache/repvit-vos).
        fast_mode: "exact", or approximations joined by "+": "nopad" (no bottom/right
            padding for non-square frames), "sizeS" (encode at long side S, e.g. size512),
            "int8" (quantised encoder, graph backends), "roi" (encode only a crop around the
            tracked objects, ``vos.roi``; e.g. "roi+size512"). Measure with
            ``vos.bench --agreement``.
    """

    model_type: str = "repvit"
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    fuse: bool = True
    backend: str = "auto"
    fast_mode: str = "exact"


@dataclass(frozen=True)
class PromptConfig:
    """How each object's prompts are derived from its previous mask.

    Attributes:
        kind: "box", "points", "box+points" or "mask" (mask = previous logits only).
        box_margin: fraction of the box size added on every side of the previous box.
        num_points: positive interior points per object.
        num_negative_points: negative points per object (background and other objects).
        box_jitter: std of a random box perturbation, as a fraction of box size (0 = off).
        num_candidates: multimask candidates considered per object.
        use_prev_logits: feed the previous low-res logits as the decoder's mask input.
    """

    kind: str = "box+points"
    box_margin: float = 0.05
    num_points: int = 1
    num_negative_points: int = 0
    box_jitter: float = 0.0
    num_candidates: int = 3
    use_prev_logits: bool = True


@dataclass(frozen=True)
class TrackerConfig:
    """Decision thresholds of the tracker.

    Attributes:
        mask_threshold: logit threshold for a pixel to be foreground (higher = stricter).
        multimask_output: ask the decoder for 3 candidates and pick one.
        candidate_selection: "iou" (predicted IoU only) or "iou+agreement" (also IoU with the
            previous mask).
        match_iou_min: minimum IoU for a prediction to keep its track's identity (higher = stricter).
        max_missed_frames: frames a LOST track is kept before removal (lower = stricter).
        min_mask_area: masks smaller than this many pixels count as missed (higher = stricter).
        min_score: a mask whose predicted IoU is below this counts as missed (higher = stricter).
        min_area_ratio: a mask that shrinks below this fraction of the previous frame's area in
            one frame counts as missed, i.e. the object collapsed (higher = stricter).
        refine_iterations: extra decoder passes per frame, re-prompted with the box of the
            current mask and its logits (0 = one pass).
        reacquire_margin: a LOST object is searched for in its motion-predicted box grown by
            this fraction on every side (higher = searches farther).
        reacquire_overlap_max: a re-acquired mask may overlap an active object's mask by at most
            this IoU, so a lost object never comes back on top of another (lower = stricter).
        overlap: how pixels claimed by two objects are resolved in the tracker's own masks:
            "higher_score_wins" (ties to the lower id), "lower_id_wins", or "none" (masks may
            overlap, as UVO/YouTube-VIS allow).
        velocity_smoothing: weight of the previous velocity in the box motion model's moving
            average (0 = last displacement only).
    """

    mask_threshold: float = 0.0
    multimask_output: bool = True
    candidate_selection: str = "iou+agreement"
    match_iou_min: float = 0.1
    max_missed_frames: int = 30
    min_mask_area: int = 16
    min_score: float = 0.5
    min_area_ratio: float = 0.1
    refine_iterations: int = 0
    reacquire_margin: float = 0.5
    reacquire_overlap_max: float = 0.5
    overlap: str = "higher_score_wins"
    velocity_smoothing: float = 0.5


@dataclass(frozen=True)
class IOConfig:
    """Inputs and outputs of a run.

    Attributes:
        source: video file, image folder, or camera index/URL.
        output_dir: folder for results; None means no outputs are written.
        save_png: write per-frame palette PNGs (DAVIS layout).
        save_json: write per-frame COCO-RLE JSON.
        save_video: write an overlay mp4.
    """

    source: str | None = None
    output_dir: str | None = None
    save_png: bool = True
    save_json: bool = True
    save_video: bool = True


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation dataset selection.

    Attributes:
        dataset: "davis" or "uvo".
        root: dataset root folder.
        split: dataset split name ("val", ...).
    """

    dataset: str = "davis"
    root: str | None = None
    split: str = "val"


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; modules receive only their own part."""

    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    io: IOConfig = field(default_factory=IOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0


T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {annotation}, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(annotation, value, where)  # type: ignore[arg-type]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation in (int, float, str) and not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got {value!r}")
    return value


def _from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    types_by_name = _field_types(cls)
    unknown = sorted(set(data) - set(types_by_name))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known: {', '.join(sorted(types_by_name))}"
        )
    kwargs = {
        name: _coerce(value, types_by_name[name], f"{where}.{name}" if where else name)
        for name, value in data.items()
    }
    return cls(**kwargs)


def merge(cfg: T, data: Mapping[str, Any], where: str = "") -> T:
    """Return ``cfg`` with the (possibly nested) keys of ``data`` replaced; unknown keys raise."""
    types_by_name = _field_types(type(cfg))
    unknown = sorted(set(data) - set(types_by_name))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known: {', '.join(sorted(types_by_name))}"
        )
    changes: dict[str, Any] = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        current = getattr(cfg, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{path}: expected a mapping, got {value!r}")
            changes[name] = merge(current, value, path)
        else:
            changes[name] = _coerce(value, types_by_name[name], path)
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``"tracker.max_missed_frames=10"`` into ``{"tracker": {"max_missed_frames": 10}}``.

    The value is parsed as YAML, so ``true``, ``0.5``, ``null`` and ``[1, 2]`` get their types.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. tracker.max_missed_frames=10")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc})") from None
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    base: RunConfig | None = None,
) -> RunConfig:
    """Build a RunConfig from defaults, an optional YAML file and ``KEY=VALUE`` overrides.

    Args:
        path: YAML file whose keys override the defaults; None for defaults only.
        overrides: ``--set`` strings, applied after the file, in order.
        base: the config to start from (defaults when None).

    Returns:
        The resolved, frozen RunConfig.

    Raises:
        ConfigError: the file is missing or malformed, or a key is unknown or mistyped.

    Example:
        >>> cfg = load_config("configs/davis2017_val.yaml", ["model.device=cuda"])
    """
    cfg = base if base is not None else RunConfig()
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file {file}: not found (expected a YAML file)")
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "parse error"
            raise ConfigError(f"config file {file}: not valid YAML ({first})") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {file}: expected a mapping at top level")
        try:
            cfg = merge(cfg, data)
        except ConfigError as exc:
            raise ConfigError(f"config file {file}: {exc}") from None
    for text in overrides:
        cfg = merge(cfg, parse_override(text))
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (for YAML/JSON dumps)."""
    return dataclasses.asdict(cfg)


def git_sha(repo_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The current git commit of the source tree, or None outside a checkout."""
    where = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def dump_config(
    cfg: RunConfig,
    path: str | os.PathLike[str],
    *,
    checkpoint_sha256: str | None = None,
) -> Path:
    """Write ``resolved_config.yaml`` atomically, with the git SHA and the checkpoint hash.

    Args:
        cfg: the resolved config.
        path: destination file.
        checkpoint_sha256: SHA-256 of the checkpoint actually loaded, if known.

    Returns:
        The path written.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": config_to_dict(cfg),
        "provenance": {"git_sha": git_sha(), "checkpoint_sha256": checkpoint_sha256},
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(payload, fh, sort_keys=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def read_dumped_config(path: str | os.PathLike[str]) -> RunConfig:
    """Load a ``resolved_config.yaml`` written by :func:`dump_config` back into a RunConfig."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, Mapping) or "config" not in data:
        raise ConfigError(f"{path}: not a resolved_config.yaml (missing 'config')")
    return _from_dict(RunConfig, data["config"])
