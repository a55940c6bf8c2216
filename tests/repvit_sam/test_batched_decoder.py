"""BatchedMaskDecoder computes MaskDecoder's function: same logits and IoU to float32 rounding.

Every non-encoder parameter is perturbed away from its initial value first (LayerNorm weights
of 1 and biases of 0 would hide a wrong bias or normalisation term).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repvit_sam import Sam, SamPredictor, build_repvit_sam
from repvit_sam.modeling.batched_decoder import BatchedMaskDecoder

TOL = 1e-5  # relative L2; measured 3e-7 .. 1e-6


@pytest.fixture(scope="module")
def sam() -> Sam:
    torch.manual_seed(0)
    model = build_repvit_sam().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith("image_encoder"):
                param.add_(0.05 * torch.randn_like(param))
    return model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _prompts(sam: Sam, count: int, grid_hw: tuple[int, int] | None = None):
    gen = torch.Generator().manual_seed(count)
    corners = torch.rand(count, 2, generator=gen) * 500
    boxes = torch.cat([corners, corners + 100 + 300 * torch.rand(count, 2, generator=gen)], 1)
    points = torch.rand(count, 3, 2, generator=gen) * 1000
    labels = torch.tensor([[1, 0, 1]]).repeat(count, 1)
    return sam.prompt_encoder(
        points=(points, labels), boxes=boxes, masks=None, embedding_hw=grid_hw
    )


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("with_masks", [False, True])
@pytest.mark.parametrize("multimask", [False, True])
def test_matches_mask_decoder(sam: Sam, count: int, with_masks: bool, multimask: bool) -> None:
    torch.manual_seed(count)
    features = torch.randn(1, 256, 64, 64)
    masks = 4 * torch.randn(count, 1, 256, 256) if with_masks else None
    sparse, no_mask_dense = _prompts(sam, count)
    dense = sam.prompt_encoder.mask_downscaling(masks) if with_masks else no_mask_dense
    pe = sam.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        ref_logits, ref_iou = sam.mask_decoder(features, pe, sparse, dense, multimask)
        logits, iou = BatchedMaskDecoder(sam.prompt_encoder, sam.mask_decoder)(
            features, pe, sparse, masks, multimask
        )
    assert logits.shape == ref_logits.shape == (count, 3 if multimask else 1, 256, 256)
    assert iou.shape == ref_iou.shape
    assert _rel(logits, ref_logits) < TOL
    assert _rel(iou, ref_iou) < TOL
    # The objects differ from each other, so a mix-up between batch rows would show.
    if count > 1:
        assert _rel(logits[0], logits[1]) > 0.1


def test_cropped_grid_of_a_fast_mode(sam: Sam) -> None:
    """A 36x64 grid (16:9 frame encoded without padding): non-square reshapes and pixel shuffle."""
    grid_hw = (36, 64)
    features = torch.randn(1, 256, *grid_hw)
    masks = torch.randn(2, 1, 144, 256)
    sparse, _ = _prompts(sam, 2, grid_hw)
    pe = sam.prompt_encoder.get_dense_pe(grid_hw, (64, 64))
    with torch.inference_mode():
        dense = sam.prompt_encoder.mask_downscaling(masks)
        ref_logits, ref_iou = sam.mask_decoder(features, pe, sparse, dense, True)
        logits, iou = BatchedMaskDecoder(sam.prompt_encoder, sam.mask_decoder)(
            features, pe, sparse, masks, True
        )
    assert logits.shape == (2, 3, 144, 256)
    assert _rel(logits, ref_logits) < TOL
    assert _rel(iou, ref_iou) < TOL


def test_shape_errors(sam: Sam) -> None:
    decoder = BatchedMaskDecoder(sam.prompt_encoder, sam.mask_decoder)
    sparse, _ = _prompts(sam, 2)
    pe = sam.prompt_encoder.get_dense_pe()
    with pytest.raises(ValueError, match=r"one image \(1, C, h, w\), got \(2, 256, 64, 64\)"):
        decoder(torch.zeros(2, 256, 64, 64), pe, sparse, None, True)
    with pytest.raises(ValueError, match=r"mask_logits: expected \(2, 1, 256, 256\)"):
        decoder(torch.zeros(1, 256, 64, 64), pe, sparse, torch.zeros(2, 1, 128, 128), True)


def test_predictor_decoders_agree(sam: Sam) -> None:
    """SamPredictor.decode: the batched default and the reference path give the same masks."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    batched, reference = SamPredictor(sam), SamPredictor(sam, decoder="reference")
    embedding = batched.encode(image)
    boxes = np.array([[10, 10, 90, 80], [100, 30, 190, 110]], np.float32)
    logits = torch.randn(2, 1, 256, 256)
    a = batched.decode(embedding, boxes_xyxy=boxes, mask_logits=logits, multimask_output=True)
    b = reference.decode(embedding, boxes_xyxy=boxes, mask_logits=logits, multimask_output=True)
    assert _rel(a.low_res_logits, b.low_res_logits) < TOL
    assert float((a.masks == b.masks).float().mean()) > 0.9999
    mask_only = [p.decode(embedding, mask_logits=logits) for p in (batched, reference)]
    assert mask_only[0].low_res_logits.shape == (2, 1, 256, 256)
    assert _rel(mask_only[0].low_res_logits, mask_only[1].low_res_logits) < TOL
    with pytest.raises(ValueError, match="decoder: expected one of"):
        SamPredictor(sam, decoder="fast")


def test_positional_encoding_cache_is_bounded(sam: Sam) -> None:
    """ROI crops and fast modes bring many grids; the cached encodings must not pile up."""
    predictor = SamPredictor(sam)
    for rows in range(20, 64, 4):
        pe = predictor._image_pe((rows, 64), (64, 64))
        torch.testing.assert_close(pe, sam.prompt_encoder.get_dense_pe((rows, 64), (64, 64)))
    assert len(predictor._dense_pe) <= 8


# bf16 chunks against one chunk: the GEMMs of another batch size may round differently;
# measured up to 2.6e-3 relative L2 (AMX path). A misplaced chunk would be ~1.
BF16_CHUNK_TOL = 1e-2


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("with_masks", [False, True])
def test_objects_run_in_chunks_with_the_same_result(
    sam: Sam, with_masks: bool, bf16: bool
) -> None:
    """7 objects in chunks of 3 (shared image work computed once) equal one chunk of 7."""
    torch.manual_seed(7)
    features = torch.randn(1, 256, 64, 64)
    masks = 4 * torch.randn(7, 1, 256, 256) if with_masks else None
    sparse, _ = _prompts(sam, 7)
    pe = sam.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        whole = BatchedMaskDecoder(sam.prompt_encoder, sam.mask_decoder, chunk_size=64,
                                   bf16=bf16)(features, pe, sparse, masks, True)
        chunked = BatchedMaskDecoder(sam.prompt_encoder, sam.mask_decoder, chunk_size=3,
                                     bf16=bf16)(features, pe, sparse, masks, True)
    for a, b in zip(chunked, whole, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
        assert _rel(a, b) < (BF16_CHUNK_TOL if bf16 else TOL)
    with pytest.raises(ValueError, match="chunk_size"):
        BatchedMaskDecoder(sam.prompt_encoder, sam.mask_decoder, chunk_size=0)
    # Defaults: 4 objects per chunk in float32, 16 in bf16 (taller GEMMs pay more there).
    assert BatchedMaskDecoder(sam.prompt_encoder, sam.mask_decoder).chunk_size == 4
    assert BatchedMaskDecoder(sam.prompt_encoder, sam.mask_decoder, bf16=True).chunk_size == 16
