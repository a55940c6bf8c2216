"""``repvit_sam`` against the official segment-anything 1.0, run side by side in one process.

Both packages build the same model from their own public classes, get one deterministic
state_dict (the conformance fill of ``../shared/conformance``) and the same real images; then
every predictor call and automatic-mask-generator setting is run in both and compared with the
conformance tolerances (``../shared/conformance/README.md``): image embedding relative L2
< 1e-4, low-res logits and IoU predictions relative L2 < 1e-3, masks at least 99.9% of pixels
equal. The generator must also give the same number of masks in the same order.

Our predictor runs twice: with its default ``BatchedMaskDecoder`` (what users get) and with
``decoder="reference"`` (SAM's own decoder path).

torchvision: segment-anything imports four torchvision functions, ``resize`` and
``to_pil_image`` (image resizing) and ``batched_nms`` and ``box_area`` (the generator's NMS).
Beside the CPU build of PyTorch this project installs, PyPI's torchvision cannot load its
``nms`` operator, so when no working torchvision is importable those four are replaced, in
``sys.modules`` and for these tests only, by plain PyTorch/PIL versions written from
torchvision's documented behaviour (``tests/repvit_sam/official.py`` details them).

Default run: a small ViT (same classes and code paths as ViT-B, 2 blocks) on ``picture1.jpg``.
Slow run (``-m slow``, CI): the same on a DAVIS frame, and ``vit_b`` itself from
``sam_model_registry`` on both images. Set ``REPVIT_COMPAT_REPORT=file.jsonl`` to write the
measured differences down (``official.record``).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

import repvit_sam
import repvit_sam.modeling
from repvit_sam.utils.amg import rle_to_mask
from tests.repvit_sam.conformance_fill import make_conformance_state_dict
from tests.repvit_sam.official import (
    EMBED_REL_L2,
    LOGIT_REL_L2,
    MASK_AGREEMENT_MIN,
    CachedEncoder,
    conformance_images,
    fill_state_dict,
    max_abs,
    official_segment_anything,
    record,
    rel_l2,
    small_vit_sam,
    uses_torchvision_stand_in,
)

DECODERS = ("batched", "reference")
# The DAVIS frame doubles every comparison: it runs with the slow tests.
IMAGES = ["picture1", pytest.param("davis_dog", marks=pytest.mark.slow)]
SLOW_IMAGES = ["picture1", "davis_dog"]


@dataclass
class Pair:
    """One model built by each package, with the same weights and cached encoders."""

    name: str
    official: torch.nn.Module
    ours: torch.nn.Module
    official_pkg: types.ModuleType
    predictors: dict[tuple[str, str], Any] = field(default_factory=dict)
    records: dict[tuple[str, str], list[dict]] = field(default_factory=dict)

    def predictor(self, which: str, image_name: str, images: dict[str, np.ndarray]) -> Any:
        """A predictor ("official" or one of our DECODERS) with ``image_name`` set, cached."""
        key = (which, image_name)
        if key not in self.predictors:
            if which == "official":
                predictor = self.official_pkg.SamPredictor(self.official)
            else:
                predictor = repvit_sam.SamPredictor(self.ours, decoder=which)
            predictor.set_image(images[image_name])
            self.predictors[key] = predictor
        return self.predictors[key]


def _pair(name: str, official_pkg: types.ModuleType, official: Any, ours: Any, state: dict) -> Pair:
    official.load_state_dict(state)
    ours.load_state_dict(state)
    official.eval().image_encoder = CachedEncoder(official.image_encoder)
    ours.eval().image_encoder = CachedEncoder(ours.image_encoder)
    return Pair(name, official, ours, official_pkg)


@pytest.fixture(scope="module")
def official() -> Iterator[types.ModuleType]:
    with official_segment_anything() as package:
        yield package


@pytest.fixture(scope="module")
def images(shared_dir: Path) -> dict[str, np.ndarray]:
    return conformance_images(shared_dir)


@pytest.fixture(scope="module")
def small(official: types.ModuleType) -> Pair:
    official_model = small_vit_sam(official.modeling)
    ours = small_vit_sam(repvit_sam.modeling)
    return _pair("small_vit", official, official_model, ours, fill_state_dict(ours))


@pytest.fixture(scope="module")
def vit_b(official: types.ModuleType, conformance_dir: Path) -> Pair:
    state = make_conformance_state_dict(conformance_dir / "vit_b" / "keys.tsv")
    official_model = official.sam_model_registry["vit_b"]()
    ours = repvit_sam.sam_model_registry["vit_b"]()
    return _pair("vit_b", official, official_model, ours, state)


def _image(images: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in images:
        pytest.skip(f"image {name} not found in ../shared")
    return images[name]


# ---------------------------------------------------------------------------- predictor cases

Outputs = dict[str, np.ndarray]
Case = Callable[[Any, int, int], Outputs]


def _np(outputs: tuple[Any, Any, Any]) -> Outputs:
    masks, iou, low_res = (
        v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in outputs
    )
    return {"masks": masks, "iou": iou, "low_res": low_res}


def _xy(w: int, h: int, *fractions: tuple[float, float]) -> np.ndarray:
    """Points at fractions of the image size, (N, 2) XY in original pixels."""
    return np.array([[fx * w, fy * h] for fx, fy in fractions])


def _box(w: int, h: int) -> np.ndarray:
    return np.array([0.2 * w, 0.25 * h, 0.7 * w, 0.8 * h])


def _best_low_res(predictor: Any, w: int, h: int) -> np.ndarray:
    """(1, 256, 256) logits of the best of three masks for one click, as SAM's notebook does."""
    _, iou, low_res = predictor.predict(point_coords=_xy(w, h, (0.5, 0.55)), point_labels=[1])
    return low_res[np.argmax(iou)][None]


def _torch_points(predictor: Any, points_xy: np.ndarray, h: int, w: int) -> torch.Tensor:
    coords = predictor.transform.apply_coords(points_xy, (h, w))
    return torch.as_tensor(coords, dtype=torch.float32)


def _case_batched_points(predictor: Any, h: int, w: int) -> Outputs:
    points = np.stack(
        [_xy(w, h, (0.3, 0.3), (0.6, 0.4)), _xy(w, h, (0.5, 0.5), (0.9, 0.9))]
        + [_xy(w, h, (0.1 * k + 0.2, 0.7), (0.0, 0.0)) for k in range(2)]
    )
    # The last two sets have one real click and one padding point (label -1).
    labels = torch.tensor([[1, 1], [1, 0], [1, -1], [1, -1]])
    coords = _torch_points(predictor, points.reshape(-1, 2), h, w).reshape(4, 2, 2)
    return _np(predictor.predict_torch(coords, labels, multimask_output=True))


def _case_batched_boxes(predictor: Any, h: int, w: int, *, with_points: bool = False) -> Outputs:
    boxes = torch.tensor(
        [[0.1 * w, 0.1 * h, 0.5 * w, 0.6 * h], [0.4 * w, 0.3 * h, 0.95 * w, 0.9 * h]]
    )
    boxes = predictor.transform.apply_boxes_torch(boxes, (h, w))
    coords = labels = None
    if with_points:
        coords = _torch_points(predictor, _xy(w, h, (0.3, 0.35), (0.6, 0.6)), h, w)[:, None]
        labels = torch.tensor([[1], [0]])
    return _np(predictor.predict_torch(coords, labels, boxes=boxes, multimask_output=False))


def _case_batched_mask_input(predictor: Any, h: int, w: int) -> Outputs:
    masks_in = torch.as_tensor(np.stack([_best_low_res(predictor, w, h)] * 2))
    coords = _torch_points(predictor, _xy(w, h, (0.5, 0.55), (0.3, 0.3)), h, w)[:, None]
    labels = torch.tensor([[1], [1]])
    return _np(predictor.predict_torch(coords, labels, mask_input=masks_in, multimask_output=False))


def _predict_case(
    points: tuple[tuple[float, float], ...] = (),
    labels: tuple[int, ...] = (),
    *,
    box: bool = False,
    mask_input: bool = False,
    **options: bool,
) -> Case:
    """A ``predict`` call: clicks at fractions of the image size, the shared box, and the
    best low-res logits of a first click as ``mask_input``; ``options`` are predict's flags."""

    def run(predictor: Any, h: int, w: int) -> Outputs:
        kwargs: dict[str, Any] = dict(options)
        if points:
            kwargs["point_coords"] = _xy(w, h, *points)
            kwargs["point_labels"] = np.array(labels)
        if box:
            kwargs["box"] = _box(w, h)
        if mask_input:
            kwargs["mask_input"] = _best_low_res(predictor, w, h)
        return _np(predictor.predict(**kwargs))

    return run


_CLICKS = ((0.4, 0.4), (0.6, 0.5), (0.1, 0.9))
CASES: dict[str, Case] = {
    "point_multimask": _predict_case(((0.5, 0.55),), (1,)),
    "point_single": _predict_case(((0.3, 0.4),), (1,), multimask_output=False),
    "point_logits": _predict_case(((0.7, 0.2),), (1,), return_logits=True),
    "points_2pos_1neg_multimask": _predict_case(_CLICKS, (1, 1, 0)),
    "points_2pos_1neg_single": _predict_case(_CLICKS, (1, 1, 0), multimask_output=False),
    "box_single": _predict_case(box=True, multimask_output=False),
    "box_multimask": _predict_case(box=True),
    "box_neg_point": _predict_case(((0.45, 0.5),), (0,), box=True, multimask_output=False),
    "box_pos_point_logits": _predict_case(((0.45, 0.5),), (1,), box=True, return_logits=True),
    "point_with_mask_input": _predict_case(
        ((0.5, 0.55),), (1,), mask_input=True, multimask_output=False
    ),
    "box_with_mask_input": _predict_case(box=True, mask_input=True, multimask_output=False),
    "mask_input_only": _predict_case(mask_input=True, multimask_output=False),
    "no_prompt": _predict_case(),
    "batched_points_torch": _case_batched_points,
    "batched_boxes_torch": _case_batched_boxes,
    "batched_boxes_points_torch": lambda p, h, w: _case_batched_boxes(p, h, w, with_points=True),
    "batched_mask_input_torch": _case_batched_mask_input,
}
# The 18th case, "bgr_image", sets the image again in BGR order (test_bgr_image_format).


def _compare_outputs(ours: Outputs, expected: Outputs) -> dict[str, Any]:
    """Differences of one call's outputs; asserts the conformance tolerances."""
    assert ours["masks"].shape == expected["masks"].shape
    assert ours["masks"].dtype == expected["masks"].dtype
    assert ours["low_res"].shape == expected["low_res"].shape
    numbers: dict[str, Any] = {
        "low_res_max_abs": max_abs(ours["low_res"], expected["low_res"]),
        "iou_max_abs": max_abs(ours["iou"], expected["iou"]),
    }
    assert rel_l2(ours["low_res"], expected["low_res"]) < LOGIT_REL_L2, numbers
    assert rel_l2(ours["iou"], expected["iou"]) < LOGIT_REL_L2, numbers
    if expected["masks"].dtype == bool:
        differing = int((ours["masks"] != expected["masks"]).sum())
        numbers["mask_pixels_differing"] = differing
        numbers["masks_equal"] = differing == 0
        assert 1 - differing / expected["masks"].size >= MASK_AGREEMENT_MIN, numbers
    else:  # return_logits: the upscaled logits
        numbers["masks_max_abs"] = max_abs(ours["masks"], expected["masks"])
        numbers["masks_equal"] = bool(np.array_equal(ours["masks"], expected["masks"]))
        assert rel_l2(ours["masks"], expected["masks"]) < LOGIT_REL_L2, numbers
    return numbers


def _check_case(pair: Pair, images: dict[str, np.ndarray], image_name: str, case: str) -> None:
    image = _image(images, image_name)
    h, w = image.shape[:2]
    expected = CASES[case](pair.predictor("official", image_name, images), h, w)
    for decoder in DECODERS:
        ours = CASES[case](pair.predictor(decoder, image_name, images), h, w)
        numbers = _compare_outputs(ours, expected)
        record(
            "predictor", model=pair.name, image=image_name, case=case, decoder=decoder, **numbers
        )


def _check_embedding(pair: Pair, images: dict[str, np.ndarray], image_name: str) -> None:
    _image(images, image_name)
    expected = pair.predictor("official", image_name, images).get_image_embedding()
    for decoder in DECODERS:
        ours = pair.predictor(decoder, image_name, images).get_image_embedding()
        assert ours.shape == expected.shape == (1, 256, 64, 64)
        error = rel_l2(ours, expected)
        record(
            "embedding",
            model=pair.name,
            image=image_name,
            rel_l2=error,
            max_abs=max_abs(ours, expected),
            bit_identical=bool(torch.equal(ours, expected)),
        )
        assert error < EMBED_REL_L2


@pytest.mark.parametrize("image_name", IMAGES)
def test_image_embedding_matches_official(
    small: Pair, images: dict[str, np.ndarray], image_name: str
) -> None:
    _check_embedding(small, images, image_name)


@pytest.mark.parametrize("image_name", IMAGES)
@pytest.mark.parametrize("case", list(CASES))
def test_predictor_case_matches_official(
    small: Pair, images: dict[str, np.ndarray], image_name: str, case: str
) -> None:
    _check_case(small, images, image_name, case)


def _check_bgr(pair: Pair, images: dict[str, np.ndarray], image_name: str) -> None:
    """The 18th case: the image given in BGR order with ``image_format="BGR"``."""
    bgr = np.ascontiguousarray(_image(images, image_name)[..., ::-1])
    h, w = bgr.shape[:2]
    official_predictor = pair.official_pkg.SamPredictor(pair.official)
    official_predictor.set_image(bgr, image_format="BGR")
    expected = CASES["point_multimask"](official_predictor, h, w)
    for decoder in DECODERS:
        predictor = repvit_sam.SamPredictor(pair.ours, decoder=decoder)
        predictor.set_image(bgr, image_format="BGR")
        numbers = _compare_outputs(CASES["point_multimask"](predictor, h, w), expected)
        record(
            "predictor",
            model=pair.name,
            image=image_name,
            case="bgr_image",
            decoder=decoder,
            **numbers,
        )


@pytest.mark.parametrize("image_name", IMAGES)
def test_bgr_image_format_matches_official(
    small: Pair, images: dict[str, np.ndarray], image_name: str
) -> None:
    _check_bgr(small, images, image_name)


# ---------------------------------------------------------------------------- automatic masks

# Grid sizes are small to keep the default run short (each point costs a full decoder pass).
# With the synthetic weights the predicted IoU spans about [-1, 0.4] and the logits about
# [-0.6, 0.6], so SAM's defaults (0.88, 0.95 at offset 1) would keep nothing: the thresholds
# below sit inside those ranges, so every filter keeps some masks and drops others. The masks
# are large overlapping blobs, so NMS at 0.7 leaves one of them ("nms"); the other settings
# switch NMS off (threshold 1.0) to keep many masks through their own stage. With the crop
# layer every crop's mask touches its crop's edge and is dropped, as SAM drops them, so the
# full image's masks remain, all with the same cross-crop NMS score: that checks the order
# of ties.
_KEEP_SOME = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.05,
    "stability_score_offset": 0.05,
    "stability_score_thresh": 0.6,
}
AMG_CONFIGS: dict[str, dict[str, Any]] = {
    "nms": {**_KEEP_SOME},
    "no_nms_uncompressed_rle": {
        **_KEEP_SOME,
        "box_nms_thresh": 1.0,
        "output_mode": "uncompressed_rle",
    },
    "crop_layer_coco_rle": {
        **_KEEP_SOME,
        "box_nms_thresh": 1.0,
        "crop_nms_thresh": 1.0,
        "crop_n_layers": 1,
        "crop_n_points_downscale_factor": 2,
        "output_mode": "coco_rle",
    },
    "min_mask_region_area": {**_KEEP_SOME, "box_nms_thresh": 1.0, "min_mask_region_area": 4000},
}


def _segmentation(record: dict[str, Any]) -> np.ndarray:
    segmentation = record["segmentation"]
    if isinstance(segmentation, np.ndarray):
        return segmentation
    if isinstance(segmentation["counts"], str):  # COCO RLE
        return mask_utils.decode(segmentation).astype(bool)
    return rle_to_mask(segmentation)


def _compare_records(ours: list[dict], expected: list[dict]) -> dict[str, Any]:
    """Differences of two generators' records; asserts same count, order and tolerances."""
    assert len(ours) == len(expected), f"{len(ours)} masks against the official {len(expected)}"
    assert len(expected) > 0, "the configuration keeps no mask: it would test nothing"
    worst_pixels, iou_diff, stability_diff = 0, 0.0, 0.0
    for k, (mine, theirs) in enumerate(zip(ours, expected, strict=True)):
        assert mine.keys() == theirs.keys()
        assert type(mine["segmentation"]) is type(theirs["segmentation"])
        assert mine["point_coords"] == theirs["point_coords"], k
        assert mine["crop_box"] == theirs["crop_box"], k
        mask, official_mask = _segmentation(mine), _segmentation(theirs)
        differing = int((mask != official_mask).sum())
        worst_pixels = max(worst_pixels, differing)
        assert 1 - differing / mask.size >= MASK_AGREEMENT_MIN, (k, differing)
        # Our area and box describe our own mask (inclusive XYWH box, as SAM's).
        assert mine["area"] == int(mask.sum())
        if differing == 0:
            assert mine["area"] == theirs["area"] and mine["bbox"] == theirs["bbox"], k
        iou_diff = max(iou_diff, abs(mine["predicted_iou"] - theirs["predicted_iou"]))
        stability_diff = max(
            stability_diff, abs(mine["stability_score"] - theirs["stability_score"])
        )
    scores = np.array([[r["predicted_iou"], r["stability_score"]] for r in ours])
    official_scores = np.array([[r["predicted_iou"], r["stability_score"]] for r in expected])
    assert rel_l2(scores, official_scores) < LOGIT_REL_L2
    return {
        "masks": len(ours),
        "count_and_order_equal": True,
        "masks_equal": worst_pixels == 0,
        "max_mask_pixels_differing": worst_pixels,
        "predicted_iou_max_abs": iou_diff,
        "stability_score_max_abs": stability_diff,
    }


def _check_amg(
    pair: Pair,
    images: dict[str, np.ndarray],
    image_name: str,
    config: str,
    kwargs: dict,
    decoders: tuple[str, ...],
) -> None:
    image = _image(images, image_name)
    key = (image_name, config)
    if key not in pair.records:
        generator = pair.official_pkg.SamAutomaticMaskGenerator(pair.official, **kwargs)
        pair.records[key] = generator.generate(image)
    expected = pair.records[key]
    for decoder in decoders:
        generator = repvit_sam.SamAutomaticMaskGenerator(pair.ours, decoder=decoder, **kwargs)
        numbers = _compare_records(generator.generate(image), expected)
        record(
            "amg",
            model=pair.name,
            image=image_name,
            config=config,
            decoder=decoder,
            torchvision_stand_in=uses_torchvision_stand_in(),
            **numbers,
        )


@pytest.mark.parametrize("image_name", IMAGES)
@pytest.mark.parametrize("config", list(AMG_CONFIGS))
@pytest.mark.parametrize("decoder", ["batched", pytest.param("reference", marks=pytest.mark.slow)])
def test_automatic_masks_match_official(
    small: Pair, images: dict[str, np.ndarray], image_name: str, config: str, decoder: str
) -> None:
    """Our generator as users get it (batched decoder), and with SAM's own decoder path."""
    _check_amg(small, images, image_name, config, AMG_CONFIGS[config], (decoder,))


# ---------------------------------------------------------------------------- ViT-B (slow)


@pytest.mark.slow
@pytest.mark.parametrize("image_name", SLOW_IMAGES)
def test_vit_b_predictor_matches_official(
    vit_b: Pair, images: dict[str, np.ndarray], image_name: str
) -> None:
    """``sam_model_registry["vit_b"]`` of both packages: embedding and every predictor case."""
    _check_embedding(vit_b, images, image_name)
    for case in CASES:
        _check_case(vit_b, images, image_name, case)
    _check_bgr(vit_b, images, image_name)


@pytest.mark.slow
def test_vit_b_automatic_masks_without_nms_match_official(
    vit_b: Pair, images: dict[str, np.ndarray]
) -> None:
    """Many masks: ViT-B on picture1, a 12x12 grid (432 candidates) with NMS off.

    With these weights ViT-B's predicted IoU spans about [-0.4, 0.65] and its stability at
    offset 0.05 about [0.55, 0.87]: the filters below keep about a third of the candidates.
    """
    kwargs = {
        "points_per_side": 12,
        "box_nms_thresh": 1.0,
        "pred_iou_thresh": 0.05,
        "stability_score_offset": 0.05,
        "stability_score_thresh": 0.7,
    }
    _check_amg(vit_b, images, "picture1", "no_nms_12x12", kwargs, DECODERS)
