"""Drop-in compatibility: official names, signatures and behaviours, user code unchanged.

Code written for segment-anything, MobileSAM or the official RepViT-SAM must run here with
only the package name changed. Checked here:

- every public name of the installed segment-anything 1.0 exists at the same path with a
  compatible signature (same positional parameters in the same order, the same defaults;
  extras only keyword-only or defaulted) and the same instance attributes;
- the names MobileSAM and the official RepViT-SAM add (listed below from their sources), with
  the few we do not provide and why;
- behaviours users rely on: ``sam_model_registry["default"]`` is ViT-H, predictor outputs are
  ordinary tensors (in-place edits, a decoder training step), float images in [0, 1],
  keyword calls into ``utils.amg`` and ``utils.transforms`` with SAM's results;
- the official README snippets, ``scripts/amg.py`` and ``scripts/export_onnx_model.py`` (and
  SAM's ONNX notebook), re-written here step by step from what those files do, with
  ``repvit_sam`` in place of the official package, against the official package itself.

segment-anything runs on a torchvision stand-in where torchvision cannot load (see the
docstring of ``tests/repvit_sam/official.py``: four functions, plain PyTorch/PIL).
"""

from __future__ import annotations

import csv
import importlib
import inspect
import json
import os
import shutil
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import repvit_sam
import repvit_sam.modeling
import repvit_sam.utils.onnx
from repvit_sam.modeling import tiny_vit_sam
from repvit_sam.utils import amg, transforms
from tests.repvit_sam.conformance_fill import write_conformance_checkpoint
from tests.repvit_sam.official import (
    LOGIT_REL_L2,
    MASK_AGREEMENT_MIN,
    fill_state_dict,
    max_abs,
    official_segment_anything,
    read_rgb,
    record,
    rel_l2,
    small_vit_sam,
)

# Official modules whose public names must all exist here (segment-anything's layout, which
# MobileSAM and RepViT-SAM share).
OFFICIAL_MODULES = (
    "",
    ".build_sam",
    ".predictor",
    ".automatic_mask_generator",
    ".modeling",
    ".modeling.sam",
    ".modeling.image_encoder",
    ".modeling.mask_decoder",
    ".modeling.prompt_encoder",
    ".modeling.transformer",
    ".modeling.common",
    ".utils.amg",
    ".utils.transforms",
    ".utils.onnx",
)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@pytest.fixture(scope="module")
def official() -> Iterator[types.ModuleType]:
    with official_segment_anything() as package:
        yield package


@pytest.fixture(scope="module")
def picture(conformance_dir: Path) -> np.ndarray:
    return read_rgb(conformance_dir / "picture1.jpg")


@pytest.fixture(scope="module")
def small_models(official: types.ModuleType) -> tuple[nn.Module, nn.Module]:
    """(official, ours): the small ViT SAM of ``official.small_vit_sam``, same weights."""
    theirs, ours = small_vit_sam(official.modeling), small_vit_sam(repvit_sam.modeling)
    state = fill_state_dict(ours)
    theirs.load_state_dict(state)
    ours.load_state_dict(state)
    return theirs, ours


@pytest.fixture
def small_checkpoint(
    official: types.ModuleType,
    small_models: tuple[nn.Module, nn.Module],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A checkpoint file of the small model, loadable as model type "small_vit" in both
    packages (a test-only registry entry, so the scripts run unchanged on a cheap model)."""
    path = tmp_path / "small_vit.pt"
    torch.save(small_models[1].state_dict(), path)

    def builder(package: types.ModuleType) -> Any:
        def build(checkpoint: str | None = None) -> nn.Module:
            model = small_vit_sam(package.modeling)
            if checkpoint is not None:
                model.load_state_dict(torch.load(checkpoint, weights_only=True))
            return model

        return build

    monkeypatch.setitem(official.sam_model_registry, "small_vit", builder(official))
    monkeypatch.setitem(repvit_sam.sam_model_registry, "small_vit", builder(repvit_sam))
    return path


# ---------------------------------------------------------------------------- names


def _same_default(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, list | tuple) and isinstance(ours, list | tuple):
        return list(ours) == list(theirs)
    return bool(ours == theirs) or ours is theirs


def signature_problems(ours: Any, theirs: Any) -> list[str]:
    """Why a call written for ``theirs`` would not work the same on ``ours`` (empty: it does).

    Every positional parameter of ``theirs`` must be at the same place in ``ours`` with the
    same name and, when it has a default, the same default; a parameter only ``ours`` has
    must be keyword-only or have a default. ``*args``/``**kwargs`` names do not matter.
    """
    theirs_params = list(inspect.signature(theirs).parameters.values())
    ours_params = list(inspect.signature(ours).parameters.values())
    ours_positional = [p for p in ours_params if p.kind in _POSITIONAL]
    problems = []
    for i, param in enumerate(p for p in theirs_params if p.kind in _POSITIONAL):
        mine = ours_positional[i] if i < len(ours_positional) else None
        if mine is None or mine.name != param.name:
            problems.append(
                f"parameter {i} is {param.name!r}, ours {getattr(mine, 'name', None)!r}"
            )
        elif param.default is not param.empty and not _same_default(mine.default, param.default):
            problems.append(f"{param.name}: default {param.default!r}, ours {mine.default!r}")
    theirs_names = {p.name for p in theirs_params}
    theirs_kinds = {p.kind for p in theirs_params}
    for param in ours_params:
        if param.name in theirs_names or param.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            if inspect.Parameter.VAR_POSITIONAL not in theirs_kinds:
                problems.append(f"extra *{param.name}")
        elif param.kind is not inspect.Parameter.KEYWORD_ONLY and param.default is param.empty:
            problems.append(f"extra required parameter {param.name!r}")
    return problems


def _public_names(module: types.ModuleType) -> dict[str, Any]:
    """Names a user imports from ``module``: in a package's ``__init__`` every public name of
    the package; elsewhere what the module itself defines, not what it merely imports."""
    package = module.__name__.split(".")[0]
    is_package = hasattr(module, "__path__")
    names = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        origin = getattr(obj, "__module__", None)
        if origin is None:  # data (e.g. sam_model_registry) belongs where it is assigned
            names[name] = obj
        elif origin == module.__name__ or (is_package and origin.startswith(package)):
            names[name] = obj
    return names


def _class_problems(ours: type, theirs: type) -> list[str]:
    problems = [f"__init__: {p}" for p in signature_problems(ours.__init__, theirs.__init__)]
    for name, member in vars(theirs).items():
        if name.startswith("_"):
            continue
        if not hasattr(ours, name):
            problems.append(f"missing {name}")
        elif inspect.isfunction(member) or isinstance(member, staticmethod | classmethod):
            problems += [
                f"{name}: {p}"
                for p in signature_problems(getattr(ours, name), getattr(theirs, name))
            ]
    return problems


@pytest.mark.parametrize("suffix", OFFICIAL_MODULES)
def test_every_segment_anything_name_exists_with_a_compatible_signature(
    official: types.ModuleType, suffix: str
) -> None:
    theirs_module = importlib.import_module(official.__name__ + suffix)
    ours_module = importlib.import_module("repvit_sam" + suffix)
    problems = {}
    for name, obj in _public_names(theirs_module).items():
        if not hasattr(ours_module, name):
            problems[name] = ["missing"]
            continue
        mine = getattr(ours_module, name)
        if inspect.isclass(obj):
            found = _class_problems(mine, obj)
        elif callable(obj):
            found = signature_problems(mine, obj)
        else:
            found = [] if type(mine) is type(obj) else [f"a {type(mine).__name__}"]
        if found:
            problems[name] = found
        record(
            "names",
            package="segment_anything",
            module=suffix or "(package)",
            name=name,
            status="compatible" if not found else "; ".join(found),
        )
    assert not problems, problems


def test_registry_matches_the_official_one(official: types.ModuleType) -> None:
    assert set(official.sam_model_registry) <= set(repvit_sam.sam_model_registry)
    # "default" is ViT-H in segment-anything, MobileSAM and RepViT-SAM alike.
    assert official.sam_model_registry["default"] is official.build_sam_vit_h
    assert repvit_sam.sam_model_registry["default"] is repvit_sam.build_sam_vit_h
    assert repvit_sam.build_sam is repvit_sam.build_sam_vit_h
    assert {"vit_t", "repvit"} <= set(repvit_sam.sam_model_registry)


def test_default_model_type_builds_vit_h_with_the_official_keys(
    official: types.ModuleType,
) -> None:
    """``sam_model_registry["default"]`` builds ViT-H: so ``sam_vit_h_4b8939.pth`` loads.

    Both models are built on the meta device (no memory); their state_dict key and shape
    lists, the checkpoint schema, must be equal.
    """
    with torch.device("meta"):
        theirs = official.sam_model_registry["default"]()
        ours = repvit_sam.sam_model_registry["default"](device="meta")
    theirs_keys = [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    ours_keys = [(k, tuple(v.shape)) for k, v in ours.state_dict().items()]
    assert ours_keys == theirs_keys
    assert len(ours.image_encoder.blocks) == 32  # ViT-H


def test_instances_have_the_official_attributes(
    official: types.ModuleType, small_models: tuple[nn.Module, nn.Module]
) -> None:
    """Attributes user code reads (``predictor.transform``, ``model.prompt_encoder.embed_dim``,
    ``mask_decoder.num_mask_tokens``...) exist on our instances too."""
    theirs, ours = small_models
    pairs = [
        (theirs, ours),
        (theirs.image_encoder, ours.image_encoder),
        (theirs.prompt_encoder, ours.prompt_encoder),
        (theirs.prompt_encoder.pe_layer, ours.prompt_encoder.pe_layer),
        (theirs.mask_decoder, ours.mask_decoder),
        (theirs.mask_decoder.transformer, ours.mask_decoder.transformer),
        (official.SamPredictor(theirs), repvit_sam.SamPredictor(ours)),
        (official.SamAutomaticMaskGenerator(theirs), repvit_sam.SamAutomaticMaskGenerator(ours)),
    ]
    for theirs_obj, ours_obj in pairs:
        missing = {k for k in vars(theirs_obj) if not k.startswith("_")} - set(dir(ours_obj))
        assert not missing, (type(theirs_obj).__name__, missing)
    assert list(theirs.state_dict()) == list(ours.state_dict())


# MobileSAM and the official RepViT-SAM: names beyond segment-anything's, from their sources
# (mobile_sam/, sam/repvit_sam/ of their repositories), with the positional parameters of each.
MOBILE_SAM_AND_REPVIT_NAMES: dict[str, dict[str, str | None]] = {
    "repvit_sam": {"build_sam_vit_t": "checkpoint", "build_sam_repvit": "checkpoint"},
    "repvit_sam.build_sam": {
        "build_sam_vit_t": "checkpoint",
        "build_sam_repvit": "checkpoint",
        "TinyViT": None,
        "RepViT": None,
    },
    "repvit_sam.modeling": {"TinyViT": None, "RepViT": None, "ImageEncoderViT": None},
    "repvit_sam.modeling.tiny_vit_sam": {
        "Conv2d_BN": "a b ks stride pad dilation groups bn_weight_init",
        "DropPath": "drop_prob",
        "PatchEmbed": "in_chans embed_dim resolution activation",
        "MBConv": "in_chans out_chans expand_ratio activation drop_path",
        "PatchMerging": "input_resolution dim out_dim activation",
        "ConvLayer": "dim input_resolution depth activation drop_path downsample use_checkpoint "
        "out_dim conv_expand_ratio",
        "Mlp": "in_features hidden_features out_features act_layer drop",
        "Attention": "dim key_dim num_heads attn_ratio resolution",
        "TinyViTBlock": "dim input_resolution num_heads window_size mlp_ratio drop drop_path "
        "local_conv_size activation",
        "BasicLayer": "dim input_resolution depth num_heads window_size mlp_ratio drop drop_path "
        "downsample use_checkpoint local_conv_size activation out_dim",
        "LayerNorm2d": "num_channels eps",
        "TinyViT": "img_size in_chans num_classes embed_dims depths num_heads window_sizes "
        "mlp_ratio drop_rate drop_path_rate use_checkpoint mbconv_expand_ratio local_conv_size "
        "layer_lr_decay",
        **{
            name: "pretrained num_classes drop_path_rate"
            for name in (
                "tiny_vit_5m_224",
                "tiny_vit_11m_224",
                "tiny_vit_21m_224",
                "tiny_vit_21m_384",
                "tiny_vit_21m_512",
            )
        },
    },
    "repvit_sam.predictor": {"SamPredictor": "sam_model"},
    "repvit_sam.utils.onnx": {
        "SamOnnxModel": "model return_single_mask use_stability_score return_extra_metrics"
    },
}
# Official names we do not provide, and why (they appear in the closing note's name list).
NOT_PROVIDED = {
    "repvit_sam.modeling.repvit (official module)": (
        "the official file's builder repvit(), RepViT(cfgs, num_classes, distillation), "
        "Conv2d_BN, BN_Linear, Classfier: our RepViT takes stage specs and loads the same "
        "checkpoint keys; the ImageNet classifier parts are not part of RepViT-SAM"
    ),
    "repvit_sam.utils.coreml.SamCoreMLModel": (
        "Core ML export is repvit_sam.export.coreml (python -m repvit_sam.export coreml)"
    ),
    "mobile_sam.modeling.tiny_vit_sam.register_tiny_vit_model": (
        "registers timm models and downloads ImageNet weights; the library never downloads "
        "and does not depend on timm (the tiny_vit_* builders are provided, pretrained=False)"
    ),
}


def test_mobile_sam_and_repvit_sam_names_exist() -> None:
    problems = {}
    for module_name, names in MOBILE_SAM_AND_REPVIT_NAMES.items():
        module = importlib.import_module(module_name)
        for name, positional in names.items():
            obj = getattr(module, name, None)
            if obj is None:
                problems[f"{module_name}.{name}"] = "missing"
                continue
            if positional is not None:
                target = obj.__init__ if inspect.isclass(obj) else obj
                params = [
                    p.name
                    for p in inspect.signature(target).parameters.values()
                    if p.kind in _POSITIONAL and p.name != "self"
                ]
                if params[: len(positional.split())] != positional.split():
                    problems[f"{module_name}.{name}"] = f"positional {params}"
            record(
                "names",
                package="mobile_sam/repvit_sam",
                module=module_name,
                name=name,
                status=problems.get(f"{module_name}.{name}", "compatible"),
            )
    for name, why in NOT_PROVIDED.items():
        record(
            "names",
            package="mobile_sam/repvit_sam",
            module="",
            name=name,
            status=f"not provided: {why}",
        )
    assert not problems, problems
    assert "repvit" in repvit_sam.sam_model_registry and "vit_t" in repvit_sam.sam_model_registry


# ---------------------------------------------------------------------------- behaviours


def test_predictor_outputs_are_ordinary_tensors(
    small_models: tuple[nn.Module, nn.Module], picture: np.ndarray
) -> None:
    """As in SAM: the embedding and predict_torch's outputs can be edited in place outside
    inference mode, and a mask-decoder training step can start from the embedding."""
    model = small_models[1]
    predictor = repvit_sam.SamPredictor(model)
    predictor.set_image(picture)
    embedding = predictor.get_image_embedding()
    assert not embedding.is_inference() and not embedding.requires_grad
    embedding.mul_(1.0)
    coords = torch.tensor([[[400.0, 300.0]]])
    labels = torch.tensor([[1]])
    outputs = predictor.predict_torch(coords, labels, return_logits=True)
    for tensor in outputs:
        assert not tensor.is_inference()
        tensor.add_(0.0)

    decoder = model.mask_decoder
    before = [p.detach().clone() for p in decoder.parameters()]
    optimiser = torch.optim.SGD(decoder.parameters(), lr=0.1)
    try:
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low_res, iou = decoder(
            image_embeddings=embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse.detach(),
            dense_prompt_embeddings=dense.detach(),
            multimask_output=False,
        )
        target = torch.zeros_like(low_res)
        loss = nn.functional.binary_cross_entropy_with_logits(low_res, target) + iou.square().mean()
        loss.backward()
        optimiser.step()
        assert all(p.grad is not None for p in decoder.parameters() if p.requires_grad)
        assert any(not torch.equal(a, b) for a, b in zip(before, decoder.parameters(), strict=True))
    finally:
        with torch.no_grad():
            for param, original in zip(decoder.parameters(), before, strict=True):
                param.copy_(original)
                param.grad = None


def test_float_images_in_unit_range_work_as_in_sam(
    official: types.ModuleType, small_models: tuple[nn.Module, nn.Module], picture: np.ndarray
) -> None:
    """SAM accepts a float image in [0, 1] (scaled by 255 and truncated); so do we, value for
    value. A float image outside [0, 1] raises a ValueError instead of wrapping around."""
    theirs, ours = small_models
    image = picture.astype(np.float32) / 255.0
    official_predictor = official.SamPredictor(theirs)
    official_predictor.set_image(image)
    predictor = repvit_sam.SamPredictor(ours)
    predictor.set_image(image)
    assert torch.equal(predictor.get_image_embedding(), official_predictor.get_image_embedding())
    reference = repvit_sam.SamPredictor(ours)
    reference.set_image((image * 255).astype(np.uint8))
    assert torch.equal(predictor.get_image_embedding(), reference.get_image_embedding())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predictor.set_image(picture.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        repvit_sam.SamAutomaticMaskGenerator(ours).generate(picture.astype(np.float64))
    resized = predictor.transform.apply_image(image)
    assert resized.dtype == np.uint8
    assert np.array_equal(resized, official_predictor.transform.apply_image(image))


def test_utils_amg_keyword_calls_give_sams_results(official: types.ModuleType) -> None:
    """Every ``utils.amg`` function called with SAM's keyword names, on random inputs."""
    theirs = official.utils.amg
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 37, 41, generator=gen)
    masks = logits[:, 0] > 0.2
    kwargs = {"masks": logits, "mask_threshold": 0.0, "threshold_offset": 0.5}
    assert torch.equal(
        amg.calculate_stability_score(**kwargs), theirs.calculate_stability_score(**kwargs)
    )
    assert amg.mask_to_rle_pytorch(tensor=masks) == theirs.mask_to_rle_pytorch(tensor=masks)
    for rle in theirs.mask_to_rle_pytorch(tensor=masks):
        assert np.array_equal(amg.rle_to_mask(rle=rle), theirs.rle_to_mask(rle=rle))
        assert amg.area_from_rle(rle=rle) == theirs.area_from_rle(rle=rle)
        assert amg.coco_encode_rle(uncompressed_rle=rle) == theirs.coco_encode_rle(
            uncompressed_rle=rle
        )
    assert torch.equal(
        amg.batched_mask_to_box(masks=masks), theirs.batched_mask_to_box(masks=masks)
    )
    boxes = amg.batched_mask_to_box(masks)
    crop = [5, 7, 30, 33]
    for name, args in [
        (
            "is_box_near_crop_edge",
            {"boxes": boxes, "crop_box": crop, "orig_box": [0, 0, 41, 37], "atol": 3.0},
        ),
        ("uncrop_boxes_xyxy", {"boxes": boxes, "crop_box": crop}),
        ("uncrop_points", {"points": torch.rand(6, 2, generator=gen), "crop_box": crop}),
        (
            "uncrop_masks",
            {"masks": masks[:, :26, :25], "crop_box": crop, "orig_h": 37, "orig_w": 41},
        ),
        ("box_xyxy_to_xywh", {"box_xyxy": boxes[0]}),
    ]:
        assert torch.equal(getattr(amg, name)(**args), getattr(theirs, name)(**args)), name
    assert np.array_equal(amg.build_point_grid(n_per_side=5), theirs.build_point_grid(n_per_side=5))
    grid_args = {"n_per_side": 8, "n_layers": 2, "scale_per_layer": 2}
    for mine, official_grid in zip(
        amg.build_all_layer_point_grids(**grid_args),
        theirs.build_all_layer_point_grids(**grid_args),
        strict=True,
    ):
        assert np.array_equal(mine, official_grid)
    crop_args = {"im_size": (480, 854), "n_layers": 2, "overlap_ratio": 512 / 1500}
    assert amg.generate_crop_boxes(**crop_args) == theirs.generate_crop_boxes(**crop_args)
    region_args = {"mask": masks[0].numpy(), "area_thresh": 12, "mode": "islands"}
    for mode in ("holes", "islands"):
        region_args["mode"] = mode
        mine, changed = amg.remove_small_regions(**region_args)
        official_mask, official_changed = theirs.remove_small_regions(**region_args)
        assert changed == official_changed and np.array_equal(mine, official_mask)
    batches = list(amg.batch_iterator(3, np.arange(7), list("abcdefg")))
    assert [[list(a), b] for a, b in batches] == [
        [list(a), b] for a, b in theirs.batch_iterator(3, np.arange(7), list("abcdefg"))
    ]
    # MaskData(**kwargs), filter, cat(new_stats=...), to_numpy.
    fields = {"a": torch.arange(5), "b": np.arange(5) * 2, "c": list("vwxyz")}
    mine, official_data = amg.MaskData(**fields), theirs.MaskData(**fields)
    keep = torch.tensor([True, False, True, True, False])
    mine.filter(keep)
    official_data.filter(keep)
    mine.cat(new_stats=amg.MaskData(**fields))
    official_data.cat(new_stats=theirs.MaskData(**fields))
    mine.to_numpy()
    official_data.to_numpy()
    for key in fields:
        assert np.array_equal(np.asarray(mine[key]), np.asarray(official_data[key])), key


def test_resize_longest_side_gives_sams_results(official: types.ModuleType) -> None:
    theirs = official.utils.transforms.ResizeLongestSide(1024)
    ours = transforms.ResizeLongestSide(1024)
    image = np.random.default_rng(0).integers(0, 256, (301, 517, 3), dtype=np.uint8)
    assert np.array_equal(ours.apply_image(image=image), theirs.apply_image(image=image))
    coords = np.array([[10.5, 20.25], [300.0, 100.0]])
    boxes = np.array([[1.0, 2.0, 300.0, 200.0]])
    size = (301, 517)
    assert np.array_equal(
        ours.apply_coords(coords=coords, original_size=size), theirs.apply_coords(coords, size)
    )
    assert np.array_equal(
        ours.apply_boxes(boxes=boxes, original_size=size), theirs.apply_boxes(boxes, size)
    )
    coords_t, boxes_t = torch.as_tensor(coords), torch.as_tensor(boxes)
    assert torch.equal(
        ours.apply_coords_torch(coords=coords_t, original_size=size),
        theirs.apply_coords_torch(coords_t, size),
    )
    assert torch.equal(
        ours.apply_boxes_torch(boxes=boxes_t, original_size=size),
        theirs.apply_boxes_torch(boxes_t, size),
    )
    for h, w in [(301, 517), (1, 5000), (769, 770)]:
        args = {"oldh": h, "oldw": w, "long_side_length": 1024}
        assert ours.get_preprocess_shape(**args) == theirs.get_preprocess_shape(**args)
    # Differs on purpose: segment-anything 1.0 reads (H, W) from the (B, 3) axes here.
    batch = torch.rand(1, 3, 301, 517)
    assert ours.apply_image_torch(image=batch).shape[-2:] == (596, 1024)


def test_predictor_sizes_and_mobile_sams_field_export(
    small_models: tuple[nn.Module, nn.Module], picture: np.ndarray
) -> None:
    predictor = repvit_sam.SamPredictor(small_models[1])
    assert predictor.orig_h is None and predictor.input_w is None
    predictor.set_image(picture)
    h, w = picture.shape[:2]
    assert (predictor.orig_h, predictor.orig_w) == predictor.original_size == (h, w)
    assert (predictor.input_h, predictor.input_w) == predictor.input_size
    box = np.array([100, 120, 500, 600])
    expected = predictor.predict(box=box)
    fields = predictor.export_fields()
    other = repvit_sam.SamPredictor(small_models[1])
    other.import_fields(fields)
    for mine, theirs in zip(other.predict(box=box), expected, strict=True):
        assert np.array_equal(mine, theirs)
    predictor.reset_image()
    assert predictor.orig_h is None and not predictor.is_image_set


def test_tiny_vit_parts_take_mobile_sams_arguments() -> None:
    """MobileSAM's TinyViT constructors, positional arguments and training options."""
    model = tiny_vit_sam.TinyViT()
    assert (
        model.img_size == 224 and model.num_classes == 1000 and list(model.depths) == [2, 2, 6, 2]
    )
    assert model.patch_embed.embed_dim == 96 and model.layers[-1].dim == 768
    assert model.no_weight_decay_keywords() == {"attention_biases"}
    assert isinstance(model.layers[1].blocks[0].drop_path, tiny_vit_sam.DropPath)
    assert model.layers[0].blocks[0].drop_path.__class__ is nn.Identity  # rate 0 at the input
    conv = tiny_vit_sam.Conv2d_BN(4, 8, 3, 1, 2, 2, 2, 0.5)
    assert conv.c.dilation == (2, 2) and conv.c.groups == 2 and conv.bn.weight[0] == 0.5
    assert conv(torch.rand(1, 4, 9, 9)).shape == (1, 8, 9, 9)
    fused = conv.eval().fuse()
    x = torch.rand(1, 4, 9, 9)
    torch.testing.assert_close(fused(x), conv(x))
    assert isinstance(tiny_vit_sam.LayerNorm2d(8), nn.Module)

    # A small TinyViT: eval is deterministic and ignores dropout and stochastic depth; training
    # with them is stochastic; activation checkpointing gives the same outputs and gradients.
    torch.manual_seed(0)
    # The last width is 320: MobileSAM keeps the last stage's resolution only for 320/448/576.
    spec = {
        "img_size": 64,
        "embed_dims": [8, 16, 24, 320],
        "depths": [1, 1, 2, 1],
        "num_heads": [1, 2, 3, 4],
        "window_sizes": [2, 2, 2, 2],
        "num_classes": 0,
    }
    plain = tiny_vit_sam.TinyViT(**spec, drop_path_rate=0.0)
    dropping = tiny_vit_sam.TinyViT(**spec, drop_rate=0.5, drop_path_rate=0.5)
    checkpointed = tiny_vit_sam.TinyViT(**spec, drop_path_rate=0.0, use_checkpoint=True)
    dropping.load_state_dict(plain.state_dict())
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 64, 64)
    plain.eval()
    dropping.eval()
    torch.testing.assert_close(dropping(x), plain(x))
    dropping.train()
    assert not torch.equal(dropping(x), dropping(x))
    plain.train()
    checkpointed.train()
    plain(x).square().mean().backward()
    checkpointed(x).square().mean().backward()
    for a, b in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    decayed = tiny_vit_sam.TinyViT(**spec, layer_lr_decay=0.5)
    assert decayed.patch_embed.seq[0].c.weight.lr_scale == 0.5 ** (sum(spec["depths"]) - 1)
    assert decayed.layers[-1].blocks[-1].mlp.fc1.weight.lr_scale == 1.0
    with pytest.raises(ValueError, match="never downloads"):
        tiny_vit_sam.tiny_vit_5m_224(pretrained=True)
    assert tiny_vit_sam.tiny_vit_5m_224(num_classes=10).head.out_features == 10


# ---------------------------------------------------------------------------- README snippets


def test_mobile_sam_readme_predictor_snippet(
    conformance_dir: Path, tmp_path: Path, picture: np.ndarray
) -> None:
    """MobileSAM's README: registry["vit_t"](checkpoint=...), .to(device), .eval(), then the
    predictor; segment-anything's README snippet is the same minus the two model calls."""
    checkpoint = write_conformance_checkpoint(
        conformance_dir / "vit_t" / "keys.tsv", tmp_path / "mobile_sam.pt"
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    mobile_sam = repvit_sam.sam_model_registry["vit_t"](checkpoint=str(checkpoint))
    mobile_sam.to(device=device)
    mobile_sam.eval()
    predictor = repvit_sam.SamPredictor(mobile_sam)
    predictor.set_image(picture)
    masks, scores, logits = predictor.predict(
        point_coords=np.array([[400, 300]]), point_labels=np.array([1]), multimask_output=True
    )
    assert masks.shape == (3, *picture.shape[:2]) and masks.dtype == bool
    assert scores.shape == (3,) and logits.shape == (3, 256, 256)
    masks, _, _ = predictor.predict(box=np.array([100, 100, 500, 600]), multimask_output=False)
    assert masks.shape == (1, *picture.shape[:2])


@pytest.mark.slow
def test_readme_automatic_mask_generator_snippet(
    small_models: tuple[nn.Module, nn.Module], picture: np.ndarray
) -> None:
    """SAM's README: ``SamAutomaticMaskGenerator(sam).generate(image)`` with every default
    (a 32x32 grid, SAM's thresholds), on a quarter of picture1. Its records against the
    official generator's are compared in test_compat_official.py, at smaller grids."""
    image = np.ascontiguousarray(picture[::2, ::2])
    mask_generator = repvit_sam.SamAutomaticMaskGenerator(small_models[1])
    masks = mask_generator.generate(image)
    keys = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score"}
    for mask in masks:
        assert keys | {"crop_box"} == set(mask)
        assert mask["segmentation"].shape == image.shape[:2]
        assert mask["predicted_iou"] > 0.88 and mask["stability_score"] >= 0.95


# ---------------------------------------------------------------------------- scripts/amg.py


def amg_script(
    package: types.ModuleType,
    *,
    input: str,
    output: str,
    model_type: str,
    checkpoint: str,
    device: str = "cpu",
    convert_to_rle: bool = False,
    **amg_settings: Any,
) -> None:
    """What the official ``scripts/amg.py`` does, step by step, with ``package`` imported."""
    sam = package.sam_model_registry[model_type](checkpoint=checkpoint)
    sam.to(device=device)
    output_mode = "coco_rle" if convert_to_rle else "binary_mask"
    amg_kwargs = {k: v for k, v in amg_settings.items() if v is not None}
    generator = package.SamAutomaticMaskGenerator(sam, output_mode=output_mode, **amg_kwargs)
    if os.path.isdir(input):
        targets = [
            os.path.join(input, f)
            for f in os.listdir(input)
            if not os.path.isdir(os.path.join(input, f))
        ]
    else:
        targets = [input]
    os.makedirs(output, exist_ok=True)
    for target in targets:
        image = cv2.imread(target)
        if image is None:  # the script prints a notice and skips the file
            continue
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        masks = generator.generate(image)
        save_base = os.path.join(output, os.path.splitext(os.path.basename(target))[0])
        if output_mode == "binary_mask":
            os.makedirs(save_base, exist_ok=False)
            rows = [
                "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,"
                "predicted_iou,stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
            ]
            for i, mask_data in enumerate(masks):
                cv2.imwrite(os.path.join(save_base, f"{i}.png"), mask_data["segmentation"] * 255)
                values = [
                    i,
                    mask_data["area"],
                    *mask_data["bbox"],
                    *mask_data["point_coords"][0],
                    mask_data["predicted_iou"],
                    mask_data["stability_score"],
                    *mask_data["crop_box"],
                ]
                rows.append(",".join(str(v) for v in values))
            with open(os.path.join(save_base, "metadata.csv"), "w") as fh:
                fh.write("\n".join(rows))
        else:
            with open(save_base + ".json", "w") as fh:
                json.dump(masks, fh)


def _run_amg_script_in_both(
    official: types.ModuleType, checkpoint: Path, tmp_path: Path, inputs: Path, **settings: Any
) -> tuple[Path, Path]:
    outputs = {}
    for name, package in (("official", official), ("ours", repvit_sam)):
        outputs[name] = tmp_path / f"out_{name}"
        amg_script(
            package,
            input=str(inputs),
            output=str(outputs[name]),
            model_type="small_vit",
            checkpoint=str(checkpoint),
            **settings,
        )
    return outputs["ours"], outputs["official"]


_SCRIPT_SETTINGS = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.05,
    "stability_score_offset": 0.05,
    "stability_score_thresh": 0.6,
    "box_nms_thresh": 1.0,
    "crop_n_layers": None,  # unset flags stay out of the generator's arguments
}


def test_amg_script_writes_the_official_pngs_and_metadata(
    official: types.ModuleType, small_checkpoint: Path, tmp_path: Path, conformance_dir: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(conformance_dir / "picture1.jpg", inputs / "picture1.jpg")
    (inputs / "notes.txt").write_text("not an image: the script skips it")
    ours, theirs = _run_amg_script_in_both(
        official, small_checkpoint, tmp_path, inputs, **_SCRIPT_SETTINGS
    )
    assert (
        sorted(p.name for p in ours.iterdir())
        == sorted(p.name for p in theirs.iterdir())
        == ["picture1"]
    )
    files = sorted(p.name for p in (theirs / "picture1").iterdir())
    assert sorted(p.name for p in (ours / "picture1").iterdir()) == files
    assert len(files) > 2, "no mask written: the settings would test nothing"
    identical = 0
    for name in files:
        if name.endswith(".png"):
            mine = cv2.imread(str(ours / "picture1" / name), cv2.IMREAD_UNCHANGED)
            official_png = cv2.imread(str(theirs / "picture1" / name), cv2.IMREAD_UNCHANGED)
            assert mine.dtype == official_png.dtype and mine.shape == official_png.shape
            assert (mine == official_png).mean() >= MASK_AGREEMENT_MIN
            identical += (ours / "picture1" / name).read_bytes() == (
                theirs / "picture1" / name
            ).read_bytes()
    with open(ours / "picture1" / "metadata.csv") as fh:
        mine_rows = list(csv.DictReader(fh))
    with open(theirs / "picture1" / "metadata.csv") as fh:
        official_rows = list(csv.DictReader(fh))
    assert [list(r) for r in mine_rows] == [list(r) for r in official_rows]
    exact = (
        "id",
        "point_input_x",
        "point_input_y",
        "crop_box_x0",
        "crop_box_y0",
        "crop_box_w",
        "crop_box_h",
    )
    for mine, official_row in zip(mine_rows, official_rows, strict=True):
        assert all(mine[k] == official_row[k] for k in exact)
    scores = np.array([[float(r["predicted_iou"]), float(r["stability_score"])] for r in mine_rows])
    official_scores = np.array(
        [[float(r["predicted_iou"]), float(r["stability_score"])] for r in official_rows]
    )
    assert rel_l2(scores, official_scores) < LOGIT_REL_L2
    record(
        "scripts",
        script="amg.py",
        pngs=len(files) - 1,
        byte_identical_pngs=identical,
        score_max_abs=max_abs(scores, official_scores),
    )


def test_amg_script_coco_rle_json_matches_official(
    official: types.ModuleType, small_checkpoint: Path, tmp_path: Path, conformance_dir: Path
) -> None:
    """``--convert-to-rle``: one JSON of COCO RLE records per image."""
    image = conformance_dir / "picture1.jpg"
    settings = {**_SCRIPT_SETTINGS, "points_per_side": 3}
    ours, theirs = _run_amg_script_in_both(
        official, small_checkpoint, tmp_path, image, convert_to_rle=True, **settings
    )
    mine = json.loads((ours / "picture1.json").read_text())
    expected = json.loads((theirs / "picture1.json").read_text())
    assert len(mine) == len(expected) > 0
    from pycocotools import mask as mask_utils

    for record_mine, record_official in zip(mine, expected, strict=True):
        assert set(record_mine) == set(record_official)
        a = mask_utils.decode(record_mine["segmentation"])
        b = mask_utils.decode(record_official["segmentation"])
        assert (a == b).mean() >= MASK_AGREEMENT_MIN
        assert record_mine["point_coords"] == record_official["point_coords"]


# ---------------------------------------------------------------------------- ONNX export


def _onnx_inputs(num_points: int, orig_hw: tuple[int, int], seed: int) -> dict[str, torch.Tensor]:
    """The export script's dummy inputs (random points, labels 0-3, a mask), seeded."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "image_embeddings": torch.randn(1, 256, 64, 64, generator=gen),
        "point_coords": torch.randint(0, 1024, (1, num_points, 2), generator=gen).float(),
        "point_labels": torch.randint(0, 4, (1, num_points), generator=gen).float(),
        "mask_input": torch.randn(1, 1, 256, 256, generator=gen),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor(orig_hw, dtype=torch.float32),
    }


@pytest.mark.parametrize(
    "options",
    [
        {"return_single_mask": True},
        {"return_single_mask": False},
        {"return_single_mask": True, "use_stability_score": True},
        {"return_single_mask": False, "return_extra_metrics": True},
    ],
    ids=["single", "all_tokens", "stability_score", "extra_metrics"],
)
def test_sam_onnx_model_matches_official_in_torch(
    official: types.ModuleType, small_models: tuple[nn.Module, nn.Module], options: dict
) -> None:
    theirs_model, ours_model = small_models
    theirs = official.utils.onnx.SamOnnxModel(theirs_model, **options).eval()
    ours = repvit_sam.utils.onnx.SamOnnxModel(ours_model, **options).eval()
    for num_points, orig_hw in [(5, (1500, 2250)), (2, (770, 769)), (1, (480, 854))]:
        inputs = _onnx_inputs(num_points, orig_hw, seed=num_points)
        expected, mine = theirs(**inputs), ours(**inputs)
        assert len(mine) == len(expected)
        for a, b in zip(mine, expected, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert rel_l2(a, b) < LOGIT_REL_L2
        record(
            "onnx_torch",
            options=str(options),
            points=num_points,
            max_abs=max(max_abs(a, b) for a, b in zip(mine, expected, strict=True)),
        )


def export_onnx_script(
    package: types.ModuleType,
    *,
    model_type: str,
    checkpoint: str,
    output: str,
    opset: int = 17,
    return_single_mask: bool = True,
    gelu_approximate: bool = False,
    use_stability_score: bool = False,
    return_extra_metrics: bool = False,
) -> dict[str, torch.Tensor]:
    """What ``scripts/export_onnx_model.py``'s ``run_export`` does, with ``package``.

    One deviation: ``dynamo=False``. Since PyTorch 2.9, ``torch.onnx.export`` defaults to
    the torch.export-based exporter, which needs ``onnxscript`` (not installed here); the
    official script, written for older PyTorch, ran the TorchScript exporter selected here.
    Returns the dummy inputs it exported with.
    """
    sam = package.sam_model_registry[model_type](checkpoint=checkpoint)
    onnx_model = package.utils.onnx.SamOnnxModel(
        model=sam,
        return_single_mask=return_single_mask,
        use_stability_score=use_stability_score,
        return_extra_metrics=return_extra_metrics,
    )
    onnx_model.eval()
    if gelu_approximate:
        for _, module in onnx_model.named_modules():
            if isinstance(module, nn.GELU):
                module.approximate = "tanh"
    dynamic_axes = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    embed_dim = sam.prompt_encoder.embed_dim
    embed_size = sam.prompt_encoder.image_embedding_size
    mask_input_size = [4 * x for x in embed_size]
    dummy_inputs = {
        "image_embeddings": torch.randn(1, embed_dim, *embed_size, dtype=torch.float),
        "point_coords": torch.randint(low=0, high=1024, size=(1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, *mask_input_size, dtype=torch.float),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        with open(output, "wb") as fh:
            torch.onnx.export(
                onnx_model,
                tuple(dummy_inputs.values()),
                fh,
                export_params=True,
                verbose=False,
                opset_version=opset,
                do_constant_folding=True,
                input_names=list(dummy_inputs.keys()),
                output_names=["masks", "iou_predictions", "low_res_masks"],
                dynamic_axes=dynamic_axes,
                dynamo=False,
            )
    return dummy_inputs


def test_export_onnx_script_graph_runs_like_the_official_model(
    official: types.ModuleType,
    small_models: tuple[nn.Module, nn.Module],
    small_checkpoint: Path,
    tmp_path: Path,
    picture: np.ndarray,
) -> None:
    """Export with ``repvit_sam.utils.onnx.SamOnnxModel`` as the script does, run the graph
    with ONNX Runtime (as the script and SAM's ONNX notebook do) and compare it with the
    official ``SamOnnxModel`` in PyTorch, at other point counts and image sizes than the
    export's dummy inputs (the dynamic axes)."""
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "sam_decoder.onnx"
    export_onnx_script(
        repvit_sam, model_type="small_vit", checkpoint=str(small_checkpoint), output=str(path)
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = official.utils.onnx.SamOnnxModel(small_models[0], return_single_mask=True).eval()
    for num_points, orig_hw in [(5, (1500, 2250)), (3, (770, 769))]:
        inputs = _onnx_inputs(num_points, orig_hw, seed=10 + num_points)
        outputs = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        expected = theirs(**inputs)
        for a, b in zip(outputs, expected, strict=True):
            assert a.shape == tuple(b.shape)
            assert rel_l2(a, b) < LOGIT_REL_L2

    # SAM's ONNX notebook: the predictor's embedding, one click plus the padding point.
    predictor = repvit_sam.SamPredictor(small_models[1])
    predictor.set_image(picture)
    image_embedding = predictor.get_image_embedding().cpu().numpy()
    input_point, input_label = np.array([[400, 300]]), np.array([1])
    onnx_coord = np.concatenate([input_point, np.array([[0.0, 0.0]])], axis=0)[None, :, :]
    onnx_label = np.concatenate([input_label, np.array([-1])], axis=0)[None, :].astype(np.float32)
    onnx_coord = predictor.transform.apply_coords(onnx_coord, picture.shape[:2]).astype(np.float32)
    ort_inputs = {
        "image_embeddings": image_embedding,
        "point_coords": onnx_coord,
        "point_labels": onnx_label,
        "mask_input": np.zeros((1, 1, 256, 256), dtype=np.float32),
        "has_mask_input": np.zeros(1, dtype=np.float32),
        "orig_im_size": np.array(picture.shape[:2], dtype=np.float32),
    }
    masks, scores, _ = session.run(None, ort_inputs)
    masks = masks > predictor.model.mask_threshold
    # Two points (a click and padding) select the best of the three multimask outputs.
    predicted, iou, _ = predictor.predict(point_coords=input_point, point_labels=input_label)
    assert masks.shape == (1, 1, *picture.shape[:2])
    assert (masks[0, 0] == predicted[np.argmax(iou)]).mean() >= MASK_AGREEMENT_MIN
    assert abs(float(scores[0, 0]) - float(iou.max())) < 1e-4


def test_export_onnx_script_options_and_quantization(
    small_checkpoint: Path, tmp_path: Path
) -> None:
    """The script's other flags: all four masks, GELU approximation, stability score, five
    outputs, and ``--quantize-out`` (onnxruntime's dynamic quantization)."""
    ort = pytest.importorskip("onnxruntime")
    quantize = pytest.importorskip("onnxruntime.quantization.quantize")
    quant_type = importlib.import_module("onnxruntime.quantization").QuantType
    path = tmp_path / "all.onnx"
    inputs = export_onnx_script(
        repvit_sam,
        model_type="small_vit",
        checkpoint=str(small_checkpoint),
        output=str(path),
        return_single_mask=False,
        gelu_approximate=True,
        use_stability_score=True,
        return_extra_metrics=True,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    assert [o.shape for o in outputs] == [
        (1, 4, 1500, 2250),
        (1, 4),
        (1, 4),
        (1, 4),
        (1, 4, 256, 256),
    ]
    quantized = tmp_path / "quantized.onnx"
    quantize.quantize_dynamic(
        model_input=str(path),
        model_output=str(quantized),
        per_channel=False,
        reduce_range=False,
        weight_type=quant_type.QUInt8,
    )
    session = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    assert session.run(None, {k: v.numpy() for k, v in inputs.items()})[0].shape == (
        1,
        4,
        1500,
        2250,
    )


@pytest.mark.slow
def test_repvit_export_script_encoder_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RepViT-SAM's script also writes the image encoder (opset 11) to the working folder."""
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    sam = repvit_sam.sam_model_registry["repvit"]()
    onnx_model = repvit_sam.utils.onnx.SamOnnxModel(model=sam, return_single_mask=True).eval()
    img_size = onnx_model.model.image_encoder.img_size
    image = torch.ones((1, 3, img_size, img_size), dtype=torch.float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            onnx_model.model.image_encoder,
            image,
            "repvit_sam_image_encoder.onnx",
            opset_version=11,
            input_names=["image"],
            output_names=["image_embeddings"],
            dynamo=False,
        )
    session = ort.InferenceSession(
        "repvit_sam_image_encoder.onnx", providers=["CPUExecutionProvider"]
    )
    (embedding,) = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        expected = sam.image_encoder(image)
    assert rel_l2(embedding, expected) < LOGIT_REL_L2
