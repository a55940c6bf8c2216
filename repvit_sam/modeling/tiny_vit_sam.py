"""MobileSAM's TinyViT image encoder (TinyViT-5M at 1024 px, SAM neck to 256x64x64).

Module and attribute names follow the official MobileSAM implementation, because they are the
checkpoint key schema (``patch_embed.seq``, ``layers.<i>.blocks.<j>``, ``neck.<k>``). The
classifier head (``norm_head``, ``head``) is kept only so that the official checkpoint loads
strictly; it is unused.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from repvit_sam.modeling.common import sam_neck
from repvit_sam.modeling.repvit import Conv2dBN

# MobileSAM keeps the last stage at 1/16: its patch merging into these widths has stride 1.
_STRIDE_ONE_OUT_DIMS = (320, 448, 576)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 conv-BN layers with an activation between them (1/4 resolution).

    Args:
        in_chans: image channels.
        embed_dim: output channels.
        resolution: input side.
        activation: activation factory.
    """

    def __init__(
        self, in_chans: int, embed_dim: int, resolution: int, activation: type[nn.Module]
    ) -> None:
        super().__init__()
        self.patches_resolution = (resolution // 4, resolution // 4)
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, 3, 2, 1),
            activation(),
            Conv2dBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, add, activate.

    Args:
        in_chans: input channels.
        out_chans: output channels (equal to ``in_chans`` for the residual).
        expand_ratio: hidden width / ``in_chans``.
        activation: activation factory.
    """

    def __init__(
        self, in_chans: int, out_chans: int, expand_ratio: float, activation: type[nn.Module]
    ) -> None:
        super().__init__()
        hidden = int(in_chans * expand_ratio)
        self.conv1 = Conv2dBN(in_chans, hidden, kernel_size=1)
        self.act1 = activation()
        self.conv2 = Conv2dBN(hidden, hidden, kernel_size=3, stride=1, padding=1, groups=hidden)
        self.act2 = activation()
        self.conv3 = Conv2dBN(hidden, out_chans, kernel_size=1, bn_weight_init=0.0)
        self.act3 = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Downsampling between stages; returns tokens (B, L, out_dim).

    Args:
        input_resolution: (H, W) of the incoming map.
        dim: input channels.
        out_dim: output channels; widths 320/448/576 keep the resolution (stride 1).
        activation: activation factory.
    """

    def __init__(
        self,
        input_resolution: tuple[int, int],
        dim: int,
        out_dim: int,
        activation: type[nn.Module],
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.act = activation()
        stride = 1 if out_dim in _STRIDE_ONE_OUT_DIMS else 2
        self.conv1 = Conv2dBN(dim, out_dim, 1, 1, 0)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            height, width = self.input_resolution
            x = x.view(x.shape[0], height, width, -1).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


class _Stage(nn.Module):
    """A stage: ``blocks`` in sequence, then an optional ``downsample`` (PatchMerging)."""

    blocks: nn.ModuleList
    downsample: nn.Module | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class ConvLayer(_Stage):
    """Stage of MBConv blocks on a (B, C, H, W) map, with optional patch merging.

    Args:
        dim: channels.
        input_resolution: (H, W).
        depth: number of MBConv blocks.
        activation: activation factory.
        downsample: whether to end with :class:`PatchMerging` to ``out_dim``.
        out_dim: channels after the patch merging.
        conv_expand_ratio: MBConv expansion.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        activation: type[nn.Module],
        downsample: bool = False,
        out_dim: int | None = None,
        conv_expand_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            MBConv(dim, dim, conv_expand_ratio, activation) for _ in range(depth)
        )
        self.downsample: PatchMerging | None = None
        if downsample:
            self.downsample = PatchMerging(input_resolution, dim, out_dim or dim, activation)


class Mlp(nn.Module):
    """LayerNorm then a two-layer MLP (``norm``, ``fc1``, ``fc2``).

    Args:
        in_features: input width.
        hidden_features: hidden width.
        out_features: output width (default ``in_features``).
        act_layer: activation factory.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.fc1 = nn.Linear(in_features, hidden_features or in_features)
        self.fc2 = nn.Linear(hidden_features or in_features, out_features or in_features)
        self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class Attention(nn.Module):
    """Pre-normed multi-head attention over a window of tokens with learned offset biases.

    One bias per head and per distinct absolute (dy, dx) offset between two window positions.

    Args:
        dim: token width.
        key_dim: query/key width per head.
        num_heads: attention heads.
        attn_ratio: value width per head / ``key_dim``.
        resolution: (h, w) of the window.
    """

    def __init__(
        self,
        dim: int,
        key_dim: int,
        num_heads: int = 8,
        attn_ratio: float = 4.0,
        resolution: tuple[int, int] = (14, 14),
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, self.dh + 2 * key_dim * num_heads)
        self.proj = nn.Linear(self.dh, dim)

        positions = list(itertools.product(range(resolution[0]), range(resolution[1])))
        offsets: dict[tuple[int, int], int] = {}
        indices = []
        for p in positions:
            for r in positions:
                offset = (abs(p[0] - r[0]), abs(p[1] - r[1]))
                indices.append(offsets.setdefault(offset, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        n = len(positions)
        self.attention_bias_idxs: torch.Tensor
        self.register_buffer(
            "attention_bias_idxs", torch.tensor(indices, dtype=torch.long).view(n, n), False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        x = self.norm(x)
        # Per head: [q | k | v] along the last axis.
        qkv = self.qkv(x).view(batch, tokens, self.num_heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = (q @ k.transpose(-2, -1)) * self.scale + bias
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, tokens, self.dh)
        return self.proj(out)


class TinyViTBlock(nn.Module):
    """Window attention, depthwise local conv, then MLP, on tokens (B, H*W, C).

    Args:
        dim: token width.
        input_resolution: (H, W) of the token map.
        num_heads: attention heads.
        window_size: attention window side (the map is zero-padded to a multiple).
        mlp_ratio: MLP hidden width / ``dim``.
        local_conv_size: kernel of the depthwise conv between attention and MLP.
        activation: MLP activation.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        local_conv_size: int = 3,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        if window_size <= 0:
            raise ValueError("window_size must be positive")
        if dim % num_heads:
            raise ValueError("dim must be divisible by num_heads")
        self.input_resolution = input_resolution
        self.window_size = window_size
        head_dim = dim // num_heads
        self.attn = Attention(
            dim, head_dim, num_heads, attn_ratio=1, resolution=(window_size, window_size)
        )
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=activation)
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.input_resolution
        batch, tokens, channels = x.shape
        ws = self.window_size
        if height == ws and width == ws:
            return self.attn(x)
        x = x.view(batch, height, width, channels)
        pad_b = (ws - height % ws) % ws
        pad_r = (ws - width % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        padded_h, padded_w = height + pad_b, width + pad_r
        n_h, n_w = padded_h // ws, padded_w // ws
        windows = (
            x.view(batch, n_h, ws, n_w, ws, channels)
            .transpose(2, 3)
            .reshape(batch * n_h * n_w, ws * ws, channels)
        )
        out = self.attn(windows)
        out = (
            out.view(batch, n_h, n_w, ws, ws, channels)
            .transpose(2, 3)
            .reshape(batch, padded_h, padded_w, channels)
        )
        if pad_b or pad_r:
            out = out[:, :height, :width].contiguous()
        return out.view(batch, tokens, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.input_resolution
        batch, tokens, channels = x.shape
        if tokens != height * width:
            raise ValueError(f"expected {height * width} tokens, got {tokens}")
        x = x + self._window_attention(x)
        x = x.transpose(1, 2).reshape(batch, channels, height, width)
        x = self.local_conv(x)
        x = x.view(batch, channels, tokens).transpose(1, 2)
        return x + self.mlp(x)


class BasicLayer(_Stage):
    """Stage of TinyViT blocks on tokens, with optional patch merging.

    Args:
        dim: token width.
        input_resolution: (H, W).
        depth: number of blocks.
        num_heads: attention heads.
        window_size: attention window side.
        mlp_ratio: MLP hidden width / ``dim``.
        downsample: whether to end with :class:`PatchMerging` to ``out_dim``.
        local_conv_size: depthwise conv kernel.
        activation: activation factory.
        out_dim: channels after the patch merging.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        downsample: bool = False,
        local_conv_size: int = 3,
        activation: type[nn.Module] = nn.GELU,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(
                dim,
                input_resolution,
                num_heads,
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                local_conv_size=local_conv_size,
                activation=activation,
            )
            for _ in range(depth)
        )
        self.downsample: PatchMerging | None = None
        if downsample:
            self.downsample = PatchMerging(input_resolution, dim, out_dim or dim, activation)


class TinyViT(nn.Module):
    """TinyViT backbone as adapted by MobileSAM (last stage at 1/16, SAM neck).

    The constructor mirrors MobileSAM's; drop rates, checkpointing and the layer-wise learning
    rate decay are training-only and accepted for compatibility (inference ignores them).

    Args:
        img_size: input side S.
        in_chans: image channels.
        num_classes: width of the unused classifier head (kept for the checkpoint keys).
        embed_dims: widths of the four stages.
        depths: blocks per stage.
        num_heads: attention heads of stages 1-3 (entry 0 unused).
        window_sizes: attention windows of stages 1-3 (entry 0 unused).
        mlp_ratio: MLP hidden width / stage width.
        drop_rate: dropout (training only; must be 0 here).
        drop_path_rate: stochastic depth (training only; must be 0 here).
        use_checkpoint: activation checkpointing (training only; ignored).
        mbconv_expand_ratio: MBConv expansion of stage 0.
        local_conv_size: depthwise conv kernel in the attention blocks.
        layer_lr_decay: training-only learning-rate decay (ignored).
        out_chans: neck output channels.
    """

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        layer_lr_decay: float = 1.0,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        del use_checkpoint, layer_lr_decay  # training-only options
        if drop_rate or drop_path_rate:
            raise ValueError("this TinyViT is inference-only: drop_rate/drop_path_rate must be 0")
        self.img_size = img_size
        activation = nn.GELU
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], img_size, activation)
        patches = self.patch_embed.patches_resolution
        num_layers = len(depths)
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            # Stages 0..2 halve the resolution; the last merging has stride 1 (1/16 output).
            scale = 2 ** (i - 1 if i == 3 else i)
            resolution = (patches[0] // scale, patches[1] // scale)
            downsample = i < num_layers - 1
            out_dim = embed_dims[min(i + 1, num_layers - 1)]
            layer: nn.Module
            if i == 0:
                layer = ConvLayer(
                    embed_dims[i],
                    resolution,
                    depths[i],
                    activation,
                    downsample=downsample,
                    out_dim=out_dim,
                    conv_expand_ratio=mbconv_expand_ratio,
                )
            else:
                layer = BasicLayer(
                    embed_dims[i],
                    resolution,
                    depths[i],
                    num_heads[i],
                    window_sizes[i],
                    mlp_ratio=mlp_ratio,
                    downsample=downsample,
                    local_conv_size=local_conv_size,
                    activation=activation,
                    out_dim=out_dim,
                )
            self.layers.append(layer)
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head: nn.Module = (
            nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        )
        self.neck = sam_neck(embed_dims[-1], out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            x: (B, in_chans, img_size, img_size) normalised, zero-padded images.

        Returns:
            (B, out_chans, img_size / 16, img_size / 16) embedding.
        """
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        batch, tokens, channels = x.shape
        side = self.img_size // 16
        if tokens != side * side:
            raise ValueError(f"expected {side * side} tokens before the neck, got {tokens}")
        x = x.view(batch, side, side, channels).permute(0, 3, 1, 2)
        return self.neck(x)
