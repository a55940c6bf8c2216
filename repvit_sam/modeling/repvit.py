"""RepViT-M2.3 image encoder adapted to SAM (stride 16, SAM neck to 256x64x64).

Module and attribute names follow the official implementation, because they are the checkpoint
key schema (``features.<i>.token_mixer...``, ``neck.<j>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from repvit_sam.modeling.common import sam_neck


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.0) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (never below ``divisor``)."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


class Conv2dBN(nn.Sequential):
    """Convolution without bias followed by BatchNorm (keys ``c.*`` and ``bn.*``)."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False),
        )
        self.add_module("bn", nn.BatchNorm2d(out_chans))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """Fold the BatchNorm into the convolution (exact in eval mode)."""
        conv, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            bias=True,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


class Residual(nn.Module):
    """``x + m(x)``. The wrapped module is stored as ``m`` (key schema)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class RepVGGDW(nn.Module):
    """Depthwise RepVGG token mixer: ``bn(dw3x3_bn(x) + dw1x1(x) + x)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv2dBN(channels, channels, 3, 1, 1, groups=channels)
        self.conv1 = nn.Conv2d(channels, channels, 1, 1, 0, groups=channels, bias=True)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x) + self.conv1(x) + x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """Merge the three branches into one 3x3 depthwise conv, then fold the outer BN."""
        conv3 = self.conv.fuse()
        # The 1x1 kernel and the identity both sit on the centre tap of the 3x3 kernel.
        weight = conv3.weight.clone()
        weight[:, :, 1, 1] += self.conv1.weight[:, :, 0, 0] + 1.0
        bias = conv3.bias + self.conv1.bias
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv3.weight.copy_(weight * scale[:, None, None, None])
        conv3.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
        return conv3


class SqueezeExcite(nn.Module):
    """Channel attention: global pool -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid gate.

    Args:
        channels: input and output width C.
        rd_ratio: reduced width = make_divisible(C * rd_ratio, 8).
    """

    def __init__(self, channels: int, rd_ratio: float = 0.25) -> None:
        super().__init__()
        reduced = make_divisible(channels * rd_ratio, 8)
        self.fc1 = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class RepViTBlock(nn.Module):
    """One RepViT block: a token mixer then a residual channel mixer.

    Args:
        in_chans: input width.
        hidden_chans: channel-mixer width of a stride-1 block (2 * in_chans here).
        out_chans: output width.
        kernel_size: depthwise kernel size.
        downsample: whether this is a stage's transition block (width change).
        dw_stride: depthwise stride of a transition block (2, or 1 for the last one in SAM).
        use_se: add squeeze-excitation after the depthwise mixer.
    """

    def __init__(
        self,
        in_chans: int,
        hidden_chans: int,
        out_chans: int,
        kernel_size: int,
        downsample: bool,
        dw_stride: int,
        use_se: bool,
    ) -> None:
        super().__init__()
        se: nn.Module = SqueezeExcite(in_chans) if use_se else nn.Identity()
        if downsample:
            self.token_mixer = nn.Sequential(
                Conv2dBN(
                    in_chans,
                    in_chans,
                    kernel_size,
                    dw_stride,
                    (kernel_size - 1) // 2,
                    groups=in_chans,
                ),
                se,
                Conv2dBN(in_chans, out_chans, 1, 1, 0),
            )
            mixer_width = 2 * out_chans
        else:
            if in_chans != out_chans:
                raise ValueError(f"a stride-1 block keeps its width, got {in_chans}->{out_chans}")
            self.token_mixer = nn.Sequential(RepVGGDW(in_chans), se)
            mixer_width = hidden_chans
        self.channel_mixer = Residual(
            nn.Sequential(
                Conv2dBN(out_chans, mixer_width, 1, 1, 0),
                nn.GELU(),
                Conv2dBN(mixer_width, out_chans, 1, 1, 0, bn_weight_init=0.0),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


@dataclass(frozen=True)
class StageSpec:
    """One stage of RepViT: its width and how many stride-1 blocks follow its transition."""

    width: int
    num_blocks: int


# RepViT-M2.3: 54 blocks after the stem. Stage 1 has no transition block; the others open
# with one. SE sits on every other block, starting with the first, never on a stage's last
# block or on a transition block (checked against the official key list in the tests).
REPVIT_M2_3_STAGES: tuple[StageSpec, ...] = (
    StageSpec(80, 7),
    StageSpec(160, 7),
    StageSpec(320, 35),
    StageSpec(640, 2),
)


class RepViT(nn.Module):
    """RepViT backbone with SAM's neck: (B, 3, 1024, 1024) -> (B, 256, 64, 64).

    Args:
        stages: per-stage width and block count.
        stem_chans: width after the first stem convolution.
        kernel_size: depthwise kernel size of every block.
        expand_ratio: channel-mixer expansion of stride-1 blocks.
        last_downsample_stride: depthwise stride of the last transition block. The official
            SAM variant sets it to 1 (the ImageNet model uses 2), which keeps the overall stride
            at 16 and gives SAM's 64x64 embedding at 1024.
        out_chans: neck output width.
        img_size: input side the SAM wrapper pads to.
    """

    def __init__(
        self,
        stages: Sequence[StageSpec] = REPVIT_M2_3_STAGES,
        stem_chans: int = 40,
        kernel_size: int = 3,
        expand_ratio: int = 2,
        last_downsample_stride: int = 1,
        out_chans: int = 256,
        img_size: int = 1024,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        first_width = stages[0].width
        layers: list[nn.Module] = [
            nn.Sequential(
                Conv2dBN(3, stem_chans, 3, 2, 1),
                nn.GELU(),
                Conv2dBN(stem_chans, first_width, 3, 2, 1),
            )
        ]
        in_chans = first_width
        for stage_idx, stage in enumerate(stages):
            if stage_idx > 0:
                is_last = stage_idx == len(stages) - 1
                layers.append(
                    RepViTBlock(
                        in_chans,
                        in_chans * expand_ratio,
                        stage.width,
                        kernel_size,
                        downsample=True,
                        dw_stride=last_downsample_stride if is_last else 2,
                        use_se=False,
                    )
                )
                in_chans = stage.width
            for block_idx in range(stage.num_blocks):
                use_se = block_idx % 2 == 0 and block_idx != stage.num_blocks - 1
                layers.append(
                    RepViTBlock(
                        in_chans,
                        in_chans * expand_ratio,
                        in_chans,
                        kernel_size,
                        downsample=False,
                        dw_stride=1,
                        use_se=use_se,
                    )
                )
        self.features = nn.ModuleList(layers)
        self.neck = sam_neck(in_chans, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode a normalised, padded image.

        Args:
            x: (B, 3, img_size, img_size) float image, normalised and zero-padded.

        Returns:
            (B, 256, img_size / 16, img_size / 16) image embedding.
        """
        for layer in self.features:
            x = layer(x)
        return self.neck(x)

    @torch.no_grad()
    def fuse(self) -> RepViT:
        """Structural re-parameterisation in place: fold every BN and RepVGG branch.

        Only exact in eval mode; the model is switched to eval. Returns ``self``.
        """
        self.eval()
        fuse_modules(self)
        return self


def fuse_modules(module: nn.Module) -> None:
    """Replace, top-down, every child that has a ``fuse()`` returning a new module."""
    for name, child in module.named_children():
        fuse_fn = getattr(child, "fuse", None)
        if callable(fuse_fn) and not isinstance(child, RepViT):
            setattr(module, name, fuse_fn())
        else:
            fuse_modules(child)
