"""``build_sam2_video_predictor``: SAM 2's factory, and what its Hydra overrides mean here.

SAM 2 scripts pass model settings as Hydra overrides (``++model.non_overlap_masks=true``).
Each SAM 2 model key either maps to a setting of ours or is accepted with one log line saying
it has no effect; keys of our own config (``tracker.overlap=none``, ``model.backend=torch``)
go to :func:`vos.config.load_config`, which refuses an unknown one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from vos.config import ConfigError, ModelConfig, RunConfig, load_config
from vos.video_predictor.predictor import VideoPredictor

logger = logging.getLogger(__name__)

__all__ = ["SAM2_MODEL_KEYS", "build_sam2_video_predictor"]

# The model settings of SAM 2.1's configs and classes (SAM2Base, SAM2VideoPredictor and the
# Hydra ``_target_``); a key under one of these (``model.image_encoder.trunk.embed_dim``)
# belongs to it too.
SAM2_MODEL_KEYS = frozenset({
    "_target_", "image_encoder", "memory_attention", "memory_encoder", "num_maskmem",
    "image_size", "backbone_stride", "sigmoid_scale_for_mem_enc", "sigmoid_bias_for_mem_enc",
    "binarize_mask_from_pts_for_mem_enc", "use_mask_input_as_output_without_sam",
    "max_cond_frames_in_attn", "directly_add_no_mem_embed", "use_high_res_features_in_sam",
    "multimask_output_in_sam", "multimask_min_pt_num", "multimask_max_pt_num",
    "multimask_output_for_tracking", "use_multimask_token_for_obj_ptr",
    "iou_prediction_use_sigmoid", "memory_temporal_stride_for_eval",
    "non_overlap_masks_for_mem_enc", "use_obj_ptrs_in_encoder", "max_obj_ptrs_in_encoder",
    "add_tpos_enc_to_obj_ptrs", "proj_tpos_enc_in_obj_ptrs", "use_signed_tpos_enc_to_obj_ptrs",
    "only_obj_ptrs_in_the_past_for_eval", "pred_obj_scores", "pred_obj_scores_mlp",
    "fixed_no_obj_ptr", "soft_no_obj_ptr", "use_mlp_for_obj_ptr_proj", "no_obj_embed_spatial",
    "sam_mask_decoder_extra_args", "compile_image_encoder", "fill_hole_area",
    "non_overlap_masks", "clear_non_cond_mem_around_input",
    "add_all_frames_to_correct_as_cond",
})
# What SAM 2's factory adds for apply_postprocessing=True (after the caller's overrides) and
# for vos_optimized=True (before them).
_POSTPROCESSING = (
    "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "model.binarize_mask_from_pts_for_mem_enc=true",
    "model.fill_hole_area=8",
)
_VOS_OPTIMIZED = (
    "model._target_=sam2.sam2_video_predictor.SAM2VideoPredictorVOS",
    "model.compile_image_encoder=true",
)
_OURS = frozenset(f.name for f in dataclasses.fields(ModelConfig))


@dataclasses.dataclass
class _Settings:
    """The config and the predictor settings that SAM 2's overrides lead to."""

    cfg: RunConfig
    fill_hole_area: int = 0
    no_effect: list[str] = dataclasses.field(default_factory=list)


def _sam2_key(key: str) -> str | None:
    """``key`` without ``model.`` when it is a SAM 2 model setting (not one of ours), else None."""
    parts = key.split(".")
    if len(parts) < 2 or parts[0] != "model" or parts[1] in _OURS:
        return None
    return ".".join(parts[1:]) if parts[1] in SAM2_MODEL_KEYS else None


def _apply_sam2(settings: _Settings, key: str, raw: str, text: str) -> None:
    """Apply one SAM 2 model override ``model.<key>=<raw>`` (``text`` as the caller wrote it)."""
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if key == "non_overlap_masks":
        if not isinstance(value, bool):
            raise ConfigError(f"{text}: expected true or false")
        tracker = settings.cfg.tracker
        # SAM 2's non-overlapping outputs are the tracker's overlap rule here.
        overlap = ("higher_score_wins" if tracker.overlap == "none" else tracker.overlap) \
            if value else "none"
        settings.cfg = dataclasses.replace(
            settings.cfg, tracker=dataclasses.replace(tracker, overlap=overlap))
    elif key == "fill_hole_area":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{text}: expected an integer >= 0 (pixels of SAM 2's 256x256 "
                              "mask)")
        settings.fill_hole_area = value
    else:
        settings.no_effect.append(f"model.{key}")


def resolve_overrides(cfg: RunConfig, overrides: Sequence[str]) -> _Settings:
    """Apply ``section.key=value`` overrides in order, SAM 2's model keys among them.

    Hydra's prefixes are accepted: ``++`` and ``+`` (add or override) are dropped, ``~``
    (delete a key) is an override without effect here.

    Raises:
        ConfigError: an unknown key of ours, or a mapped SAM 2 key with a wrong value.
    """
    settings = _Settings(cfg)
    for text in overrides:
        body = str(text).lstrip("+")
        deleted = body.startswith("~")
        key, _, raw = body.lstrip("~").partition("=")
        sam2_key = _sam2_key(key.strip())
        if sam2_key is not None:
            if deleted:
                settings.no_effect.append(f"~model.{sam2_key}")
            else:
                _apply_sam2(settings, sam2_key, raw, str(text))
        elif deleted:
            raise ConfigError(f"{text}: deleting a key applies to SAM 2's model settings only "
                              "(give this key a value instead)")
        else:
            settings.cfg = load_config(None, [body], base=settings.cfg)
    return settings


# ---------------------------------------------------------------------- factory
def build_sam2_video_predictor(
    config_file: str,
    ckpt_path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cuda",
    mode: str = "eval",
    hydra_overrides_extra: Sequence[str] = (),
    apply_postprocessing: bool = True,
    vos_optimized: bool = False,
    **kwargs: Any,
) -> VideoPredictor:
    """SAM 2's factory, on RepViT-SAM (or any model type of ``sam_model_registry``).

    Args:
        config_file: a model type (``"repvit"``, ``"vit_t"``, ``"vit_b"``, ...) or a
            repvit-vos YAML config (``configs/*.yaml``).
        ckpt_path: the checkpoint; None takes ``model.checkpoint`` of the config or the
            ``REPVIT_SAM_CHECKPOINT`` environment variable.
        device: as in SAM 2 (``"cuda"`` by default). A CUDA (or MPS) device this machine
            does not have falls back to the CPU with one warning, for ``"cuda"`` and
            ``"cuda:N"`` alike (:func:`repvit_sam.build.resolve_device`, the rule of every
            entry point).
        mode: ``"eval"``, the only mode (SAM 2 also builds for training).
        hydra_overrides_extra: overrides, in order: ``section.key=value`` keys of our config
            (``tracker.overlap=none``), and SAM 2's ``++model.<key>=value`` keys:
            ``non_overlap_masks`` sets the tracker's overlap rule (false: ``none``, true:
            ``higher_score_wins``), ``fill_hole_area`` the predictor's hole filling; every
            other SAM 2 model key (``binarize_mask_from_pts_for_mem_enc``,
            ``compile_image_encoder``, ``image_size``, ``sam_mask_decoder_extra_args.*``, ...)
            is accepted with one log line saying it has no effect here.
        apply_postprocessing: as in SAM 2, adds ``fill_hole_area=8`` (mapped: holes of up to
            8 low-res pixels in the returned masks are filled) and its dynamic-multimask and
            memory-binarising settings (no effect here), after ``hydra_overrides_extra``.
            False returns exactly the tracker's masks (those of ``vos.run``).
        vos_optimized: SAM 2's compiled predictor; no effect here (logged).
        **kwargs: ignored, as SAM 2 ignores them (logged).

    Raises:
        ValueError: an unknown model type or config, an unknown config key of ours, no
            checkpoint, ``mode`` other than ``"eval"``, an unusable device name.
    """
    from repvit_sam import sam_model_registry
    from vos.models import (
        CHECKPOINT_ENV,
        ModelError,
        build_segmenter,
        checkpoint_digest,
        load_model,
    )

    if mode != "eval":
        raise ValueError(f"mode={mode!r}: the video predictor runs in eval mode only (it "
                         "does not train)")
    overrides = [*(_VOS_OPTIMIZED if vos_optimized else ()), *hydra_overrides_extra,
                 *(_POSTPROCESSING if apply_postprocessing else ())]
    text = str(config_file)
    if text in sam_model_registry:
        base = load_config(None, [f"model.model_type={text}"])
    elif text.endswith((".yaml", ".yml")):
        if "sam2" in Path(text).name and not Path(text).is_file():
            raise ValueError(f"config_file {text!r}: a SAM 2 config; repvit-vos takes a model "
                             f"type ({', '.join(sorted(sam_model_registry))}) or one of its "
                             "own YAML configs")
        base = load_config(text)
    else:
        raise ValueError(f"config_file {text!r}: expected a model type "
                         f"({', '.join(sorted(sam_model_registry))}) or a YAML config file")
    settings = resolve_overrides(base, overrides)
    cfg = settings.cfg
    no_effect = settings.no_effect + [f"{name} (keyword argument)" for name in sorted(kwargs)]
    if no_effect:
        logger.info("SAM 2 settings without effect here: %s", ", ".join(no_effect))
    checkpoint = ckpt_path or cfg.model.checkpoint or os.environ.get(CHECKPOINT_ENV)
    if checkpoint is None:
        raise ModelError(f"no checkpoint given: pass ckpt_path (or set model.checkpoint, or "
                         f"the {CHECKPOINT_ENV} environment variable); the official RepViT-SAM "
                         "weights: `python -m repvit_sam.download --model repvit --dest "
                         "weights` gives weights/repvit_sam.pt")
    model_cfg = dataclasses.replace(cfg.model, checkpoint=None if checkpoint is None
                                    else str(checkpoint), device=str(device))
    loaded = load_model(model_cfg)
    # The device the model is on (the CPU where a CUDA device fell back): the embeddings'
    # store key and the backend choice follow it.
    model_cfg = dataclasses.replace(model_cfg, device=str(loaded.model.device))
    cfg = dataclasses.replace(cfg, model=model_cfg)
    segmenter = build_segmenter(model_cfg, loaded)
    return VideoPredictor(segmenter, cfg, checkpoint_sha256=checkpoint_digest(model_cfg),
                          model=loaded.model, fill_hole_area=settings.fill_hole_area)
