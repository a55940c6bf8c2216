"""Automatic mask generator: every helper on tiny arrays, the pipeline on a fake predictor
with known answers, and one end-to-end run of a random-init RepViT-SAM."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
import torch

from repvit_sam import Sam, SamAutomaticMaskGenerator, sam_model_registry
from repvit_sam.utils import amg
from repvit_sam.utils.transforms import ResizeLongestSide

mask_utils = pytest.importorskip("pycocotools.mask")

# pycocotools' decode trips a numpy 2 copy-keyword DeprecationWarning inside the library.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


# --------------------------------------------------------------------------- point grids


def test_build_point_grid_by_hand() -> None:
    np.testing.assert_allclose(amg.build_point_grid(1), [[0.5, 0.5]])
    # x varies fastest, cell centres at 1/4 and 3/4.
    np.testing.assert_allclose(
        amg.build_point_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    )
    grid = amg.build_point_grid(32)
    assert grid.shape == (1024, 2)
    assert grid.min() == pytest.approx(1 / 64) and grid.max() == pytest.approx(1 - 1 / 64)
    with pytest.raises(ValueError):
        amg.build_point_grid(0)


def test_build_all_layer_point_grids() -> None:
    grids = amg.build_all_layer_point_grids(8, n_layers=2, scale_per_layer=2)
    assert [g.shape for g in grids] == [(64, 2), (16, 2), (4, 2)]
    assert [g.shape for g in amg.build_all_layer_point_grids(5, 1, 1)] == [(25, 2), (25, 2)]


# --------------------------------------------------------------------------- crops


def test_generate_crop_boxes_by_hand() -> None:
    boxes, layers = amg.generate_crop_boxes((128, 160), 0, 512 / 1500)
    assert boxes == [[0, 0, 160, 128]] and layers == [0]
    # overlap = int(512/1500 * 128) = 43; crop = ceil((43 + side) / 2) -> 102 x 86.
    boxes, layers = amg.generate_crop_boxes((128, 160), 1, 512 / 1500)
    assert boxes == [
        [0, 0, 160, 128],
        [0, 0, 102, 86],
        [0, 43, 102, 128],
        [59, 0, 160, 86],
        [59, 43, 160, 128],
    ]
    assert layers == [0, 1, 1, 1, 1]


@pytest.mark.parametrize("im_size", [(128, 160), (480, 854), (37, 11)])
def test_crop_boxes_cover_image(im_size: tuple[int, int]) -> None:
    boxes, layers = amg.generate_crop_boxes(im_size, 2, 512 / 1500)
    assert len(boxes) == 1 + 4 + 16 and layers.count(2) == 16
    h, w = im_size
    for layer in (1, 2):
        covered = np.zeros((h, w), dtype=bool)
        for (x0, y0, x1, y1), lyr in zip(boxes, layers, strict=True):
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            if lyr == layer:
                covered[y0:y1, x0:x1] = True
        assert covered.all()


def test_uncrop_helpers() -> None:
    crop = [5, 7, 15, 17]
    boxes = torch.tensor([[0, 0, 3, 4]])
    assert amg.uncrop_boxes_xyxy(boxes, crop).tolist() == [[5, 7, 8, 11]]
    assert amg.uncrop_boxes_xyxy(boxes[None], crop).shape == (1, 1, 4)
    assert amg.uncrop_points(torch.tensor([[1.5, 2.0]]), crop).tolist() == [[6.5, 9.0]]

    masks = torch.zeros(2, 10, 10, dtype=torch.bool)
    masks[1, 0, 0] = True
    full = amg.uncrop_masks(masks, crop, 20, 30)
    assert full.shape == (2, 20, 30) and full.dtype == torch.bool
    assert full.sum() == 1 and full[1, 7, 5]
    assert amg.uncrop_masks(masks, [0, 0, 10, 10], 10, 10) is masks


def test_is_box_near_crop_edge() -> None:
    crop, orig = [0, 0, 50, 50], [0, 0, 100, 100]
    boxes = torch.tensor(
        [
            [10, 10, 45, 20],  # right side within 20 px of the crop's inner edge
            [0, 0, 20, 20],  # touches crop edges that are also image edges
            [10, 10, 20, 20],  # well inside
        ]
    )
    assert amg.is_box_near_crop_edge(boxes, crop, orig).tolist() == [True, False, False]
    # Boxes are given in crop coordinates: shifting the crop shifts them too.
    near = amg.is_box_near_crop_edge(torch.tensor([[0, 0, 10, 10]]), [50, 50, 100, 100], orig)
    assert near.tolist() == [True]


def test_box_conversions() -> None:
    xyxy = torch.tensor([[1, 2, 4, 8]])
    assert amg.box_xyxy_to_xywh(xyxy).tolist() == [[1, 2, 3, 6]]
    assert xyxy.tolist() == [[1, 2, 4, 8]]  # not mutated
    assert amg.box_xyxy_to_xywh(np.array([1, 2, 4, 8])).tolist() == [1, 2, 3, 6]
    assert amg.box_area(xyxy.float()).tolist() == [18.0]


# --------------------------------------------------------------------------- batching


def test_batch_iterator() -> None:
    a, b = list(range(5)), np.arange(5) * 10
    batches = list(amg.batch_iterator(2, a, b))
    assert [x for x, _ in batches] == [[0, 1], [2, 3], [4]]
    assert [y.tolist() for _, y in batches] == [[0, 10], [20, 30], [40]]
    assert list(amg.batch_iterator(3, [])) == []
    with pytest.raises(ValueError):
        list(amg.batch_iterator(2, [1, 2], [1]))
    with pytest.raises(ValueError):
        list(amg.batch_iterator(0, [1]))


def test_mask_data_filter_cat_to_numpy() -> None:
    data = amg.MaskData(a=torch.arange(4), b=np.arange(4) * 2, c=["w", "x", "y", "z"])
    data.filter(torch.tensor([True, False, True, True]))
    assert data["a"].tolist() == [0, 2, 3] and data["b"].tolist() == [0, 4, 6]
    assert data["c"] == ["w", "y", "z"]
    data.filter(np.array([2, 0]))  # index order is respected
    assert data["c"] == ["z", "w"] and len(data) == 2
    data.cat(amg.MaskData(a=torch.tensor([9]), b=np.array([8]), c=["q"]))
    assert data["a"].tolist() == [3, 0, 9] and data["c"] == ["z", "w", "q"]
    data["d"] = torch.ones(3, dtype=torch.float16)
    data.to_numpy()
    assert isinstance(data["a"], np.ndarray) and data["d"].dtype == np.float32
    del data["d"]
    assert "d" not in data and len(amg.MaskData()) == 0
    with pytest.raises(TypeError):
        amg.MaskData(a=3)


# --------------------------------------------------------------------------- scores and boxes


def test_stability_score_by_hand() -> None:
    logits = torch.tensor([[[2.0, 0.5, -0.5], [-2.0, 1.5, 0.0]]])
    # > +1: {2.0, 1.5} = 2 pixels; > -1: all but -2.0 = 5 pixels.
    score = amg.calculate_stability_score(logits, 0.0, 1.0)
    assert score.shape == (1,) and score.item() == pytest.approx(0.4)
    # Offset 0.25 around threshold 0.25: > 0.5: {2.0, 1.5}; > 0.0: {2.0, 0.5, 1.5}.
    assert amg.calculate_stability_score(logits, 0.25, 0.25).item() == pytest.approx(2 / 3)
    batched = amg.calculate_stability_score(torch.randn(2, 3, 8, 9), 0.0, 1.0)
    assert batched.shape == (2, 3) and batched.dtype == torch.float32
    assert ((batched >= 0) & (batched <= 1)).all()
    # Empty low-threshold mask: 0/0, so it fails any threshold.
    assert torch.isnan(amg.calculate_stability_score(torch.full((1, 2, 2), -5.0), 0.0, 1.0))


def test_batched_mask_to_box() -> None:
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1, 2] = mask[3, 3] = True
    assert amg.batched_mask_to_box(mask[None]).tolist() == [[2, 1, 3, 3]]
    assert amg.batched_mask_to_box(torch.zeros(1, 4, 5, dtype=torch.bool)).tolist() == [[0] * 4]
    assert amg.batched_mask_to_box(torch.zeros(0, 4, 5, dtype=torch.bool)).shape == (0, 4)

    masks = torch.rand(2, 3, 6, 7) > 0.9
    masks[0, 0] = False
    boxes = amg.batched_mask_to_box(masks)
    assert boxes.shape == (2, 3, 4) and boxes.dtype == torch.int64
    for i in range(2):
        for j in range(3):
            ys, xs = np.nonzero(masks[i, j].numpy())
            expected = [xs.min(), ys.min(), xs.max(), ys.max()] if len(xs) else [0, 0, 0, 0]
            assert boxes[i, j].tolist() == expected


def test_remove_small_regions() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[1:7, 1:7] = True
    mask[3, 3] = False  # 1-pixel hole
    mask[8:10, 8] = True  # 2-pixel island (not 8-connected to the square)

    filled, changed = amg.remove_small_regions(mask, 3, mode="holes")
    assert changed and filled[3, 3] and filled.sum() == mask.sum() + 1

    cleaned, changed = amg.remove_small_regions(mask, 3, mode="islands")
    assert changed and not cleaned[8:10, 8].any() and cleaned.sum() == mask.sum() - 2

    same, changed = amg.remove_small_regions(mask, 1, mode="islands")
    assert not changed and np.array_equal(same, mask)

    # Every island below the threshold: keep the largest instead of emptying the mask.
    largest, changed = amg.remove_small_regions(mask, 1000, mode="islands")
    assert changed and largest.sum() == 35 and not largest[8:10, 8].any()

    with pytest.raises(ValueError):
        amg.remove_small_regions(mask, 3, mode="blobs")


# --------------------------------------------------------------------------- RLE


def _rle_test_masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    masks = [rng.random((7, 5)) > p for p in (0.2, 0.5, 0.8)]
    masks += [np.zeros((4, 6), bool), np.ones((4, 6), bool), np.ones((1, 1), bool)]
    corner = np.zeros((3, 4), bool)
    corner[0, 0] = True  # first pixel set: counts must start with a zero run
    return [*masks, corner]


def test_rle_by_hand() -> None:
    # Column-major flattening of [[0, 1], [1, 1]] is 0, 1, 1, 1.
    (rle,) = amg.mask_to_rle_pytorch(torch.tensor([[[False, True], [True, True]]]))
    assert rle == {"size": [2, 2], "counts": [1, 3]}
    (rle,) = amg.mask_to_rle_pytorch(torch.tensor([[[True, False], [False, False]]]))
    assert rle == {"size": [2, 2], "counts": [0, 1, 3]}
    assert amg.area_from_rle(rle) == 1
    assert amg.mask_to_rle_pytorch(torch.zeros(0, 3, 3, dtype=torch.bool)) == []
    with pytest.raises(ValueError):
        amg.rle_to_mask({"size": [2, 2], "counts": [1, 2]})


@pytest.mark.parametrize("idx", range(7))
def test_rle_round_trip_matches_pycocotools(idx: int) -> None:
    mask = _rle_test_masks()[idx]
    (rle,) = amg.mask_to_rle_pytorch(torch.from_numpy(mask)[None])
    assert sum(rle["counts"]) == mask.size
    decoded = amg.rle_to_mask(rle)
    assert decoded.dtype == np.bool_ and np.array_equal(decoded, mask)
    assert amg.area_from_rle(rle) == int(mask.sum())

    coco = amg.coco_encode_rle(rle)
    reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert coco["size"] == list(reference["size"])
    assert coco["counts"] == reference["counts"].decode("utf-8")
    assert np.array_equal(mask_utils.decode(coco).astype(bool), mask)
    assert int(mask_utils.area(coco)) == int(mask.sum())


def test_rle_batch_matches_single() -> None:
    masks = torch.rand(5, 6, 4) > 0.5
    masks[2] = True
    batch = amg.mask_to_rle_pytorch(masks)
    assert batch == [amg.mask_to_rle_pytorch(m[None])[0] for m in masks]


def test_pycocotools_import_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(ImportError, match="pip install pycocotools"):
        amg.import_pycocotools_mask()


# --------------------------------------------------------------------------- NMS


def _iou_f32(a: np.ndarray, b: np.ndarray) -> np.float32:
    area_a = np.float32((a[2] - a[0]) * (a[3] - a[1]))
    area_b = np.float32((b[2] - b[0]) * (b[3] - b[1]))
    iw = max(np.float32(0), min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(np.float32(0), min(a[3], b[3]) - max(a[1], b[1]))
    inter = np.float32(iw * ih)
    with np.errstate(invalid="ignore"):
        return np.float32(inter / (area_a + area_b - inter))


def _brute_force_batched_nms(
    boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, thresh: float
) -> list[int]:
    """Plain NMS per category (sorted by score, ties in input order), merged by score."""
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])  # sorted() is stable
    kept: list[int] = []
    for cat in sorted(set(idxs.tolist())):
        cat_kept: list[int] = []
        for i in (i for i in order if idxs[i] == cat):
            if all(not _iou_f32(boxes[i], boxes[k]) > np.float32(thresh) for k in cat_kept):
                cat_kept.append(i)
        kept += cat_kept
    return sorted(kept, key=order.index)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thresh", [0.0, 0.3, 0.5, 0.7])
def test_batched_nms_matches_brute_force(seed: int, thresh: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    xy = rng.integers(0, 40, size=(n, 2))
    wh = rng.integers(0, 25, size=(n, 2))  # includes zero-area boxes
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    # Few distinct scores, so ties happen and their order is tested.
    scores = rng.integers(0, 8, size=n).astype(np.float32)
    idxs = rng.integers(0, 3, size=n)
    keep = amg.batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), thresh
    )
    assert keep.dtype == torch.int64
    assert keep.tolist() == _brute_force_batched_nms(boxes, scores, idxs, thresh)
    # Row chunking must not change the answer.
    small_chunks = amg.batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), thresh, 7
    )
    assert small_chunks.tolist() == keep.tolist()


def test_batched_nms_by_hand() -> None:
    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 5, 5]],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.9, 0.95, 0.5, 0.1, 0.2])
    same = torch.zeros(5, dtype=torch.int64)
    # Box 1 (IoU 0.81 with 0 and 2) suppresses both; the zero-area box 4 overlaps nothing.
    assert amg.batched_nms(boxes, scores, same, 0.7).tolist() == [1, 4, 3]
    assert amg.batched_nms(boxes, scores, same, 0.9).tolist() == [1, 0, 4, 3]
    # Different categories never suppress each other.
    cats = torch.tensor([0, 1, 2, 0, 0])
    assert amg.batched_nms(boxes, scores, cats, 0.7).tolist() == [1, 0, 2, 4, 3]
    empty = amg.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    with pytest.raises(ValueError):
        amg.batched_nms(boxes, scores[:3], same, 0.5)


# --------------------------------------------------------------------------- generator, fake model

# Two flat rectangles on black: every point prompt has one exactly right answer.
H, W = 128, 160
RECT_A = (slice(20, 50), slice(30, 70))  # 30 x 40 px, XYWH bbox (inclusive) [30, 20, 39, 29]
RECT_B = (slice(70, 110), slice(90, 140))  # 40 x 50 px, XYWH bbox [90, 70, 49, 39]


def _scene() -> np.ndarray:
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[RECT_A] = (255, 0, 0)
    image[RECT_B] = (0, 255, 0)
    return image


def _rect_mask(rect: tuple[slice, slice]) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[rect] = True
    return mask


class _FakePredictor:
    """Answers a click with the region of the clicked colour, so outputs are known exactly.

    Candidates per point: 0 the colour region with confident logits (IoU 0.9x, stable);
    1 the same region with a low predicted IoU (0.5); 2 the region with logits of +-0.5, which
    is unstable (stability 0 or NaN) though its predicted IoU is high (0.95).
    """

    def __init__(self) -> None:
        self.transform = ResizeLongestSide(1024)
        self.device = torch.device("cpu")
        self.model = type("M", (), {"mask_threshold": 0.0})()
        self.image: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        self.image = image

    def reset_image(self) -> None:
        self.image = None

    def predict_torch(
        self,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        assert self.image is not None and multimask_output and return_logits
        h, w = self.image.shape[:2]
        new_h, new_w = self.transform.get_preprocess_shape(h, w, 1024)
        xy = point_coords[:, 0, :].numpy() * np.array([w / new_w, h / new_h])
        logits, ious = [], []
        for x, y in xy:
            col = min(int(x), w - 1)
            row = min(int(y), h - 1)
            colour = self.image[row, col]
            region = np.all(self.image == colour, axis=-1)
            sign = torch.from_numpy(np.where(region, 1.0, -1.0).astype(np.float32))
            logits.append(torch.stack([4 * sign, 4 * sign, 0.5 * sign]))
            rank = 0.01 * (int(colour[0] > 0) + 2 * int(colour[1] > 0))
            ious.append(torch.tensor([0.9 + rank, 0.5, 0.95]))
        return torch.stack(logits), torch.stack(ious), None


def _fake_generator(model: Sam, **kwargs: Any) -> SamAutomaticMaskGenerator:
    generator = SamAutomaticMaskGenerator(model, points_per_side=8, **kwargs)
    generator.predictor = _FakePredictor()  # type: ignore[assignment]
    return generator


@pytest.fixture(scope="module")
def model() -> Sam:
    torch.manual_seed(0)
    return sam_model_registry["repvit"]()


@pytest.mark.parametrize("output_mode", ["binary_mask", "uncompressed_rle", "coco_rle"])
def test_generate_fake_model_known_answer(model: Sam, output_mode: str) -> None:
    records = _fake_generator(model, output_mode=output_mode).generate(_scene())
    # NMS keeps one mask per region; ordered by predicted IoU: B (0.92), A (0.91), background.
    assert len(records) == 3
    assert [r["predicted_iou"] for r in records] == pytest.approx([0.92, 0.91, 0.90])
    background = ~(_rect_mask(RECT_A) | _rect_mask(RECT_B))
    expected = [_rect_mask(RECT_B), _rect_mask(RECT_A), background]
    for record, mask in zip(records, expected, strict=True):
        seg = record["segmentation"]
        if output_mode == "binary_mask":
            decoded = seg
        elif output_mode == "uncompressed_rle":
            decoded = amg.rle_to_mask(seg)
        else:
            assert isinstance(seg["counts"], str)
            decoded = mask_utils.decode(seg).astype(bool)
        assert decoded.shape == (H, W) and np.array_equal(decoded, mask)
        assert record["area"] == int(mask.sum())
        assert record["stability_score"] == 1.0
        assert record["crop_box"] == [0, 0, W, H]
        ((x, y),) = record["point_coords"]
        assert mask[int(y), int(x)]
    assert records[0]["bbox"] == [90, 70, 49, 39]
    assert records[1]["bbox"] == [30, 20, 39, 29]
    assert records[2]["bbox"] == [0, 0, W - 1, H - 1]


def test_generate_fake_model_filters(model: Sam) -> None:
    # Filters off and NMS off (IoU is never > 1): all 3 candidates of all 64 points survive,
    # including the low-IoU and the unstable ones.
    everything = _fake_generator(
        model, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    ).generate(_scene())
    assert len(everything) == 3 * 64
    assert {round(r["predicted_iou"], 4) for r in everything} == {0.5, 0.9, 0.91, 0.92, 0.95}
    # max_num_masks keeps the top predicted IoU, in descending order.
    top = _fake_generator(
        model,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
        max_num_masks=5,
    ).generate(_scene())
    assert [r["predicted_iou"] for r in top] == pytest.approx([0.95] * 5)
    assert len(_fake_generator(model, max_num_masks=2).generate(_scene())) == 2


def test_generate_fake_model_crops(model: Sam) -> None:
    records = _fake_generator(model, crop_n_layers=1).generate(_scene())
    # Background is cut by every crop edge, so only the full image keeps it; each rectangle
    # comes from the smallest crop that holds it whole (cross-crop NMS prefers small crops).
    by_area = {r["area"]: r for r in records}
    assert sorted(by_area) == [1200, 2000, H * W - 3200]
    assert by_area[1200]["crop_box"] == [0, 0, 102, 86]
    assert by_area[2000]["crop_box"] == [59, 43, 101, 85]
    assert by_area[H * W - 3200]["crop_box"] == [0, 0, W, H]
    for area, rect in ((1200, RECT_A), (2000, RECT_B)):
        record = by_area[area]
        assert np.array_equal(record["segmentation"], _rect_mask(rect))
        ((x, y),) = record["point_coords"]  # back in image pixels
        assert _rect_mask(rect)[int(y), int(x)]
    assert by_area[1200]["bbox"] == [30, 20, 39, 29]
    assert by_area[2000]["bbox"] == [90, 70, 49, 39]


def test_generate_fake_model_small_regions(model: Sam) -> None:
    image = _scene()
    image[30, 40] = 0  # a 1-pixel hole in A (black, so also a 1-pixel background island)
    plain = _fake_generator(model).generate(image)
    cleaned = _fake_generator(model, min_mask_region_area=10).generate(image)
    assert len(plain) == len(cleaned) == 3
    a_plain = next(r for r in plain if r["bbox"] == [30, 20, 39, 29])
    a_clean = next(r for r in cleaned if r["bbox"] == [30, 20, 39, 29])
    assert a_plain["area"] == 1199 and a_clean["area"] == 1200
    assert a_clean["segmentation"][30, 40]
    background = next(r for r in cleaned if r["bbox"] == [0, 0, W - 1, H - 1])
    assert not background["segmentation"][30, 40]


def test_generator_validation(model: Sam) -> None:
    with pytest.raises(ValueError, match="output_mode"):
        SamAutomaticMaskGenerator(model, output_mode="png")
    with pytest.raises(ValueError, match="exactly one"):
        SamAutomaticMaskGenerator(model, points_per_side=None)
    with pytest.raises(ValueError, match="exactly one"):
        SamAutomaticMaskGenerator(model, point_grids=[amg.build_point_grid(2)])
    with pytest.raises(ValueError, match="point_grids"):
        SamAutomaticMaskGenerator(
            model, points_per_side=None, point_grids=[amg.build_point_grid(2)], crop_n_layers=1
        )
    with pytest.raises(ValueError, match="max_num_masks"):
        SamAutomaticMaskGenerator(model, max_num_masks=0)
    generator = SamAutomaticMaskGenerator(model, points_per_side=2)
    # A float image is taken in [0, 1], as SAM takes it; a 0-255 float image is refused.
    bad_images = (
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.full((8, 8, 3), 255.0),
    )
    for bad in bad_images:
        with pytest.raises(ValueError, match="image"):
            generator.generate(bad)


def test_generator_point_grids_equivalent_to_points_per_side(model: Sam) -> None:
    by_side = _fake_generator(model).generate(_scene())
    generator = SamAutomaticMaskGenerator(
        model, points_per_side=None, point_grids=[amg.build_point_grid(8)]
    )
    generator.predictor = _FakePredictor()  # type: ignore[assignment]
    by_grid = generator.generate(_scene())
    assert [r["bbox"] for r in by_grid] == [r["bbox"] for r in by_side]


# --------------------------------------------------------------------------- generator, real model


def test_generate_random_init_model(model: Sam) -> None:
    # The one real-network run (about 5 s on one core): formats and shapes. Output modes are
    # covered exactly by the fake-predictor tests above.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    generator = SamAutomaticMaskGenerator(
        model,
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,  # random weights give near-identical masks; keep them all
        max_num_masks=10,
    )
    records = generator.generate(image)
    assert len(records) == 10
    ious = [r["predicted_iou"] for r in records]
    assert ious == sorted(ious, reverse=True)
    keys = {"segmentation", "area", "bbox", "predicted_iou", "point_coords"}
    keys |= {"stability_score", "crop_box"}
    grid = {tuple(p) for p in (amg.build_point_grid(4) * [W, H]).tolist()}
    for record in records:
        assert set(record) == keys
        mask = record["segmentation"]
        assert isinstance(mask, np.ndarray) and mask.shape == (H, W) and mask.dtype == np.bool_
        assert isinstance(record["area"], int) and record["area"] == int(mask.sum())
        assert len(record["bbox"]) == 4 and all(isinstance(v, int) for v in record["bbox"])
        if record["area"]:
            ys, xs = np.nonzero(mask)
            x0, y0 = int(xs.min()), int(ys.min())
            assert record["bbox"] == [x0, y0, int(xs.max()) - x0, int(ys.max()) - y0]
        assert isinstance(record["predicted_iou"], float)
        assert isinstance(record["stability_score"], float)
        (point,) = record["point_coords"]
        assert tuple(point) in grid
        assert record["crop_box"] == [0, 0, W, H]
        # The COCO form of this mask round-trips through pycocotools.
        (rle,) = amg.mask_to_rle_pytorch(torch.from_numpy(mask)[None])
        assert np.array_equal(mask_utils.decode(amg.coco_encode_rle(rle)).astype(bool), mask)
