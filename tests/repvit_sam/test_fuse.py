"""``fuse()``: BN folding and RepVGG merging must not change the encoder's output (eval mode).

A freshly built model has trivial BatchNorm state (mean 0, var 1, and the channel mixer's last
BN weight is initialised to 0, which switches that branch off), so a fuse bug could hide. Every
BN here gets random weight, bias, running mean and running var first.

The encoder is fully convolutional, so a small non-square input exercises every fused layer
(including padding borders) at a fraction of the 1024x1024 cost.

Measured on CPU with this seed: float32 max |fused - unfused| is about 3e-6 on outputs of
std 1 (max |out| about 3.3); float64 about 6e-15. The tolerances below leave 15x and 10^4x
margin for other CPUs and BLAS builds.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from repvit_sam import Sam, build_repvit_sam
from repvit_sam.modeling.repvit import Conv2dBN, RepVGGDW

ATOL = {torch.float32: 5e-5, torch.float64: 1e-10}


def _rerandomise_batchnorm(module: nn.Module, seed: int = 0) -> int:
    generator = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                n = bn.num_features
                bn.weight.copy_(torch.empty(n).uniform_(0.5, 1.5, generator=generator))
                bn.bias.copy_(0.1 * torch.randn(n, generator=generator))
                bn.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                bn.running_var.copy_(torch.empty(n).uniform_(0.5, 2.0, generator=generator))
                count += 1
    return count


def _count(module: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _encode(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre-neck features, neck output); the neck's LayerNorms could mask errors on their own."""
    with torch.inference_mode():
        features = x
        for layer in encoder.features:
            features = layer(features)
        return features, encoder.neck(features)


@pytest.fixture(scope="module")
def model() -> Sam:
    torch.manual_seed(0)
    sam = build_repvit_sam()
    assert _rerandomise_batchnorm(sam.image_encoder) > 100
    return sam.eval()


@pytest.fixture(scope="module")
def fused(model: Sam) -> Sam:
    return copy.deepcopy(model).fuse()


def _input(dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(1, 3, 128, 192, generator=generator).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_encoder_matches_unfused(model: Sam, dtype: torch.dtype) -> None:
    plain_encoder = copy.deepcopy(model.image_encoder).to(dtype)
    # Fuse in the test's precision: folding in float32 then casting would cost ~1e-6.
    fused_encoder = copy.deepcopy(plain_encoder).fuse()
    x = _input(dtype)
    plain_feats, plain_out = _encode(plain_encoder, x)
    fused_feats, fused_out = _encode(fused_encoder, x)
    assert plain_out.shape == fused_out.shape == (1, 256, 8, 12)
    assert plain_out.std() > 0.5  # a live signal, not a collapsed one
    torch.testing.assert_close(fused_feats, plain_feats, rtol=0, atol=ATOL[dtype])
    torch.testing.assert_close(fused_out, plain_out, rtol=0, atol=ATOL[dtype])


def test_batchnorm_state_matters(model: Sam) -> None:
    """Sensitivity check: with default BN state the output differs far beyond the tolerance."""
    reset = copy.deepcopy(model.image_encoder)
    for bn in reset.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.reset_running_stats()
    x = _input(torch.float32)
    _, out = _encode(model.image_encoder, x)
    _, out_reset = _encode(reset, x)
    assert (out - out_reset).abs().max() > 100 * ATOL[torch.float32]


def test_fused_structure(model: Sam, fused: Sam) -> None:
    assert _count(model.image_encoder, nn.BatchNorm2d) > 0
    assert _count(fused, nn.BatchNorm2d) == 0
    assert _count(fused, Conv2dBN) == 0
    assert _count(fused, RepVGGDW) == 0
    assert _n_params(fused) < _n_params(model)
    assert _n_params(fused.image_encoder) < _n_params(model.image_encoder)
    assert not fused.training and not fused.image_encoder.training
    # The prompt encoder and mask decoder are untouched.
    for part in ("prompt_encoder", "mask_decoder"):
        before = getattr(model, part).state_dict()
        after = getattr(fused, part).state_dict()
        assert list(before) == list(after)
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_fuse_returns_self_and_is_idempotent(fused: Sam) -> None:
    again = copy.deepcopy(fused)
    state = {k: v.clone() for k, v in again.state_dict().items()}
    assert again.fuse() is again
    after = again.state_dict()
    assert list(after) == list(state)
    assert all(torch.equal(after[k], state[k]) for k in state)
    x = _input(torch.float32)
    torch.testing.assert_close(
        _encode(again.image_encoder, x)[1], _encode(fused.image_encoder, x)[1], rtol=0, atol=0
    )


def test_fuse_switches_to_eval(model: Sam) -> None:
    sam = copy.deepcopy(model).train()
    sam.fuse()
    assert not sam.training
    assert not any(m.training for m in sam.modules())


def test_build_with_fuse_flag() -> None:
    sam = build_repvit_sam(fuse=True)
    assert _count(sam, nn.BatchNorm2d) == 0
    assert not sam.training
