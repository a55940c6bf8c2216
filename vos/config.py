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
import math
import os
import subprocess
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from repvit_sam.runtime.fast_mode import EXACT, FastMode
from repvit_sam.runtime.runners import RUNTIMES
from vos.io.atomic import write_text_atomic
from vos.strategies import STRATEGIES
from vos.types import MAX_POINTS


class ConfigError(ValueError):
    """A config file or override does not fit the config schema."""


def _range(
    default: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field whose value :func:`_check_ranges` keeps within bounds or choices."""
    return field(default=default, metadata={"min": minimum, "max": maximum, "choices": choices})


def _check_ranges(cfg: Any, section: str) -> None:
    """Raise ConfigError naming ``section.key`` for the first value out of its range."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        meta = f.metadata
        where = f"{section}.{f.name}={value!r}" if section else f"{f.name}={value!r}"
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise ConfigError(f"{where}: expected one of {', '.join(meta['choices'])}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        low, high = meta.get("min"), meta.get("max")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number")
        if (low is not None and value < low) or (high is not None and value > high):
            kind = "an integer" if isinstance(value, int) else "a number"
            if low is not None and high is not None:
                raise ConfigError(f"{where}: expected {kind} from {low:g} to {high:g}")
            bound = f">= {low:g}" if low is not None else f"<= {high:g}"
            raise ConfigError(f"{where}: expected {kind} {bound}")


# "auto", "predictor" and every runtime of the table in repvit_sam.runtime.runners.
BACKEND_CHOICES = ("auto", "predictor", *RUNTIMES)
CANDIDATE_SELECTIONS = ("iou", "iou+agreement")
OVERLAP_RULES = ("higher_score_wins", "lower_id_wins", "none")


@dataclass(frozen=True)
class ModelConfig:
    """Which model to build and how.

    Attributes:
        model_type: key of ``repvit_sam.sam_model_registry`` ("repvit", "vit_t", "vit_b", ...).
        checkpoint: path to the official state_dict file; None means "not given".
        checkpoint_sha256: expected SHA-256 of the checkpoint (64 hex digits), checked before
            loading when set, for every model type.
        device: torch device string ("cpu", "cuda", "cuda:1", ...).
        dtype: dtype of the model's weights: "float32". bfloat16 compute is the ``bf16``
            fast mode, which keeps float32 weights and the float32 fallback on CPUs without
            native bf16; ``model.dtype=bfloat16`` says so in its error.
        fuse: apply structural re-parameterisation (BN and RepVGG branch fusion) after loading;
            models without branches to fuse (the ViT encoders) are left as they are.
        backend: "auto" (default: the fastest installed encoder backend on a CPU device,
            OpenVINO > ONNX Runtime > PyTorch; the reference SamPredictor on a GPU),
            "predictor" (PyTorch SamPredictor, the reference path), "torch" (channels-last
            PyTorch encoder), "onnxruntime" or "openvino". Graph backends export and cache
            the graph once per checkpoint and frame size (~5 s, under ~/.cache/repvit-vos).
        fast_mode: "exact", or approximations joined by "+": "nopad" (no bottom/right
            padding for non-square frames), "sizeS" (encode at long side S, e.g. size512),
            "int8" (quantised encoder, graph backends), "roi" (encode only a crop around the
            tracked objects; e.g. "roi+size512"), "bf16" (the encoder and most of the mask
            decoder in bfloat16 where the hardware has it natively, float32 with a one-line
            notice where not; e.g. "bf16+size512+nopad"). Parsed once into a
            ``repvit_sam.runtime.FastMode``. Measure with ``vos.bench --agreement``.
    """

    model_type: str = "repvit"
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    device: str = "cpu"
    dtype: str = _range("float32", choices=("float32",))
    fuse: bool = True
    backend: str = _range("auto", choices=BACKEND_CHOICES)
    fast_mode: FastMode = EXACT

    def __post_init__(self) -> None:
        if self.dtype in ("bfloat16", "bf16"):
            raise ConfigError(f"model.dtype={self.dtype!r}: expected float32 (the weights' dtype); "
                              "for bfloat16 compute set model.fast_mode=bf16")
        _check_ranges(self, "model")
        sha = self.checkpoint_sha256
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha)):
            raise ConfigError(f"model.checkpoint_sha256={sha!r}: expected 64 hex digits")


@dataclass(frozen=True)
class PromptConfig:
    """How each object's prompts are derived from its previous mask.

    Attributes:
        kind: the prompt strategy of ``vos.strategies``: "box", "points", "box+points" or
            "mask" (mask = previous logits only).
        box_margin: fraction of the box size added on every side of the previous box.
        num_points: positive interior points per object (1 to 64).
        num_negative_points: negative points per object (background and other objects).
        box_jitter: std of a random box perturbation, as a fraction of box size (0 = off).
        use_prev_logits: feed the previous low-res logits as the decoder's mask input.
    """

    kind: str = "box+points"
    box_margin: float = _range(0.05, minimum=0.0, maximum=10.0)
    num_points: int = _range(1, minimum=1, maximum=MAX_POINTS)
    num_negative_points: int = _range(0, minimum=0, maximum=MAX_POINTS)
    box_jitter: float = _range(0.0, minimum=0.0, maximum=1.0)
    use_prev_logits: bool = True

    def __post_init__(self) -> None:
        # The kinds are the strategies' table: one place to add one.
        if self.kind not in STRATEGIES:
            raise ConfigError(f"prompt.kind={self.kind!r}: expected one of {', '.join(STRATEGIES)}")
        _check_ranges(self, "prompt")
        if self.kind == "mask" and not self.use_prev_logits:
            raise ConfigError("prompt.kind='mask' needs prompt.use_prev_logits=true")


@dataclass(frozen=True)
class TrackerConfig:
    """Decision thresholds of the tracker.

    Attributes:
        multimask_output: ask the decoder for 3 candidates and pick one.
        candidate_selection: "iou" (predicted IoU only) or "iou+agreement" (also IoU with the
            previous mask).
        match_iou_min: minimum IoU for a prediction to keep its track's identity, 0 to 1
            (higher = stricter).
        max_missed_frames: frames a LOST track is kept before removal (lower = stricter).
        min_mask_area: masks smaller than this many pixels count as missed (higher = stricter).
        min_score: a mask whose predicted IoU is below this counts as missed, 0 to 1
            (higher = stricter).
        min_area_ratio: a mask that shrinks below this fraction of the previous frame's area in
            one frame counts as missed, i.e. the object collapsed, 0 to 1 (higher = stricter).
        refine_iterations: extra decoder passes per frame, re-prompted with the box of the
            current mask and its logits (0 = one pass; at most 10).
        reacquire_margin: a LOST object is searched for in its motion-predicted box grown by
            this fraction on every side (higher = searches farther).
        reacquire_overlap_max: a re-acquired mask may overlap an active object's mask by at most
            this IoU, so a lost object never comes back on top of another (lower = stricter).
        overlap: how pixels claimed by two objects are resolved in the tracker's own masks:
            "higher_score_wins" (ties to the lower id), "lower_id_wins", or "none" (masks may
            overlap, as UVO/YouTube-VIS allow).
        velocity_smoothing: weight of the previous velocity in the box motion model's moving
            average, 0 to 1 (0 = last displacement only).
    """

    multimask_output: bool = True
    candidate_selection: str = _range("iou+agreement", choices=CANDIDATE_SELECTIONS)
    match_iou_min: float = _range(0.1, minimum=0.0, maximum=1.0)
    max_missed_frames: int = _range(30, minimum=0)
    min_mask_area: int = _range(16, minimum=0)
    min_score: float = _range(0.5, minimum=0.0, maximum=1.0)
    min_area_ratio: float = _range(0.1, minimum=0.0, maximum=1.0)
    refine_iterations: int = _range(0, minimum=0, maximum=10)
    reacquire_margin: float = _range(0.5, minimum=0.0, maximum=10.0)
    reacquire_overlap_max: float = _range(0.5, minimum=0.0, maximum=1.0)
    overlap: str = _range("higher_score_wins", choices=OVERLAP_RULES)
    velocity_smoothing: float = _range(0.5, minimum=0.0, maximum=1.0)

    def __post_init__(self) -> None:
        _check_ranges(self, "tracker")


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
class StoreConfig:
    """The video predictor's stores (``vos.video_predictor``, ``vos.embedding_store``).

    Attributes:
        memory_mb: MiB of frame embeddings kept in memory (a 1024² embedding is 4 MiB);
            beyond it the least recently used go to ``cache_dir``.
        disk_mb: MiB of embeddings kept in ``cache_dir``; beyond it the least recently used
            files are deleted (and logged). 0 keeps no embedding on disk.
        cache_dir: the embeddings' folder; None: a temporary folder per predictor, removed
            with it. A named folder is kept, and shared safely between runs and models
            (embeddings are keyed by checkpoint hash, model settings and frame content).
        state_memory_mb: MiB of per-frame tracker states kept in memory (~0.3 MiB per
            object and frame); beyond it they go to a temporary folder of the session.
        state_disk_mb: MiB of per-frame tracker states kept on disk; a frame whose state was
            dropped is tracked again when a pass needs it.
    """

    memory_mb: float = _range(1024.0, minimum=0.0)
    disk_mb: float = _range(8192.0, minimum=0.0)
    cache_dir: str | None = None
    state_memory_mb: float = _range(256.0, minimum=0.0)
    state_disk_mb: float = _range(16384.0, minimum=0.0)

    def __post_init__(self) -> None:
        _check_ranges(self, "store")


# DIS optical-flow presets of live tracking (``vos.live.flow.FLOW_PRESETS``).
FLOW_PRESET_CHOICES = ("ultrafast", "fast", "medium")


@dataclass(frozen=True)
class LiveConfig:
    """Live tracking from a camera (``vos.run webcam``, ``vos.live``).

    Attributes:
        carry: give every captured frame masks: the model runs on the newest frame as fast as
            it can, and the frames in between get the latest result's masks carried along the
            optical flow. False shows only the frames the model ran on (the frames in between
            are dropped).
        flow_preset: OpenCV DIS preset of the flow: "ultrafast" (default, ~1 ms a frame at
            the default size), "fast" or "medium" (~9x slower, a little more accurate).
        flow_size: long side in pixels the flow is computed at; masks are moved at full size
            (larger = finer motion, slower).
    """

    carry: bool = True
    flow_preset: str = _range("ultrafast", choices=FLOW_PRESET_CHOICES)
    flow_size: int = _range(432, minimum=16, maximum=4096)

    def __post_init__(self) -> None:
        _check_ranges(self, "live")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation dataset location.

    Attributes:
        root: dataset root folder (``--root`` of the evaluation modes).
        split: dataset split name ("val", ...).
    """

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
    store: StoreConfig = field(default_factory=StoreConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    seed: int = _range(0, minimum=0)

    def __post_init__(self) -> None:
        _check_ranges(self, "")


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
    if annotation is FastMode:
        try:
            return FastMode.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{where}={value}: {exc}") from None
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


def _known_fields(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The field types of ``cls``; ConfigError naming any key of ``data`` that is not one."""
    types_by_name = _field_types(cls)
    unknown = sorted(set(data) - set(types_by_name))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known: {', '.join(sorted(types_by_name))}"
        )
    return types_by_name


def _from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    types_by_name = _known_fields(cls, data, where)
    kwargs = {
        name: _coerce(value, types_by_name[name], f"{where}.{name}" if where else name)
        for name, value in data.items()
    }
    return cls(**kwargs)


def merge(cfg: T, data: Mapping[str, Any], where: str = "") -> T:
    """Return ``cfg`` with the (possibly nested) keys of ``data`` replaced; unknown keys raise."""
    types_by_name = _known_fields(type(cfg), data, where)
    changes: dict[str, Any] = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        current = getattr(cfg, name)
        if dataclasses.is_dataclass(current) and not isinstance(current, FastMode):
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
        except UnicodeDecodeError:
            raise ConfigError(f"config file {file}: not a text file (expected UTF-8 YAML)") from None
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
    """Plain nested dict of a config dataclass (for YAML/JSON dumps; fast modes as text)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, FastMode):
            value = value.name
        elif dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        out[f.name] = value
    return out


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
    payload = {
        "config": config_to_dict(cfg),
        "provenance": {"git_sha": git_sha(), "checkpoint_sha256": checkpoint_sha256},
    }
    write_text_atomic(dest, yaml.safe_dump(payload, sort_keys=False))
    return dest


def read_dumped_config(path: str | os.PathLike[str]) -> RunConfig:
    """Load a ``resolved_config.yaml`` written by :func:`dump_config` back into a RunConfig."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, Mapping) or "config" not in data:
        raise ConfigError(f"{path}: not a resolved_config.yaml (missing 'config')")
    return _from_dict(RunConfig, data["config"])
