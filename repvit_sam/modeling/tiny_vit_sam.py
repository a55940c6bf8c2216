"""MobileSAM's TinyViT image encoder (TinyViT-5M at 1024 px, SAM neck to 256x64x64).

Module and attribute names follow the official MobileSAM implementation, because they are the
checkpoint key schema (``patch_embed.seq``, ``layers.<i>.blocks.<j>``, ``neck.<k>``). The
classifier head (``norm_head``, ``head``) is kept only so that the official checkpoint loads
strictly; it is unused.

Every class and builder of MobileSAM's ``mobile_sam/modeling/tiny_vit_sam.py`` is here with the
same constructor (names, order, defaults), so code that builds or fine-tunes the encoder from
its parts works unchanged: the training options (dropout, stochastic depth, activation
checkpointing, layer-wise learning-rate scales) act as there. What differs: no timm import or
timm model registration, ``pretrained=True`` raises (this library never downloads), and the
attention bias table is gathered on every call instead of being cached by ``train()``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils import checkpoint as activation_checkpoint

from repvit_sam.modeling.common import LayerNorm2d, sam_neck
from repvit_sam.modeling.repvit import Conv2dBN

__all__ = [
    "Attention",
    "BasicLayer",
    "Conv2d_BN",
    "ConvLayer",
    "DropPath",
    "LayerNorm2d",
    "MBConv",
    "Mlp",
    "PatchEmbed",
    "PatchMerging",
    "TinyViT",
    "TinyViTBlock",
    "tiny_vit_5m_224",
    "tiny_vit_11m_224",
    "tiny_vit_21m_224",
    "tiny_vit_21m_384",
    "tiny_vit_21m_512",
]

# MobileSAM keeps the last stage at 1/16: its patch merging into these widths has stride 1.
_STRIDE_ONE_OUT_DIMS = (320, 448, 576)


class Conv2d_BN(Conv2dBN):  # MobileSAM's class name (not PEP 8)
    """Convolution without bias followed by BatchNorm, with MobileSAM's argument names.

    Args:
        a: input channels.
        b: output channels.
        ks: kernel size.
        stride: convolution stride.
        pad: zero padding.
        dilation: kernel dilation.
        groups: convolution groups.
        bn_weight_init: initial BatchNorm scale (0 makes a residual branch start as identity).
    """

    def __init__(
        self,
        a: int,
        b: int,
        ks: int = 1,
        stride: int = 1,
        pad: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1,
    ) -> None:
        super().__init__(a, b, ks, stride, pad, groups=groups, bn_weight_init=bn_weight_init)
        if dilation != 1:
            self.c = nn.Conv2d(a, b, ks, stride, pad, dilation, groups, bias=False)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's branch with probability ``drop_prob``.

    Kept samples are scaled by ``1 / (1 - drop_prob)``, so the expectation is unchanged; in
    eval mode (and with ``drop_prob`` 0 or None) it is the identity.

    Args:
        drop_prob: probability of dropping the branch of one sample.
    """

    def __init__(self, drop_prob: float | None = None) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.drop_prob or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = x.new_empty(shape).bernoulli_(keep_prob)
        return x * keep / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def _drop_path_or_identity(drop_prob: float) -> nn.Module:
    return DropPath(drop_prob) if drop_prob > 0.0 else nn.Identity()


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
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.seq = nn.Sequential(
            Conv2d_BN(in_chans, embed_dim // 2, 3, 2, 1),
            activation(),
            Conv2d_BN(embed_dim // 2, embed_dim, 3, 2, 1),
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
        drop_path: stochastic depth of the residual branch (training only).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        expand_ratio: float,
        activation: type[nn.Module],
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.hidden_chans = int(in_chans * expand_ratio)
        self.out_chans = out_chans
        self.conv1 = Conv2d_BN(in_chans, self.hidden_chans, ks=1)
        self.act1 = activation()
        self.conv2 = Conv2d_BN(
            self.hidden_chans, self.hidden_chans, ks=3, stride=1, pad=1, groups=self.hidden_chans
        )
        self.act2 = activation()
        self.conv3 = Conv2d_BN(self.hidden_chans, out_chans, ks=1, bn_weight_init=0.0)
        self.act3 = activation()
        self.drop_path = _drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.conv1(x))
        y = self.act2(self.conv2(y))
        return self.act3(self.drop_path(self.conv3(y)) + x)


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
        self.dim = dim
        self.out_dim = out_dim
        self.act = activation()
        stride = 1 if out_dim in _STRIDE_ONE_OUT_DIMS else 2
        self.conv1 = Conv2d_BN(dim, out_dim, 1, 1, 0)
        self.conv2 = Conv2d_BN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2d_BN(out_dim, out_dim, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            height, width = self.input_resolution
            x = x.view(x.shape[0], height, width, -1).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        x = self.conv3(x)
        return x.flatten(2).transpose(1, 2)


def _per_block(drop_path: float | Sequence[float], depth: int) -> list[float]:
    """One stochastic-depth rate per block, from a shared rate or a per-block list."""
    if isinstance(drop_path, Sequence):
        return [float(rate) for rate in drop_path]
    return [float(drop_path)] * depth


class _Stage(nn.Module):
    """A stage: ``blocks`` in sequence (optionally checkpointed), then ``downsample``."""

    blocks: nn.ModuleList
    downsample: nn.Module | None
    use_checkpoint: bool

    def _init_stage(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        use_checkpoint: bool,
        downsample: type[nn.Module] | bool | None,
        out_dim: int | None,
        activation: type[nn.Module],
    ) -> None:
        self.dim = dim
        self.input_resolution = input_resolution
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        # MobileSAM passes the class (PatchMerging) or None; a plain True means PatchMerging.
        if downsample is True:
            downsample = PatchMerging
        self.downsample = None
        if downsample:
            self.downsample = downsample(  # type: ignore[operator]
                input_resolution, dim=dim, out_dim=out_dim, activation=activation
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = activation_checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
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
        drop_path: stochastic depth, one rate for all blocks or one per block.
        downsample: the merging class to end with (:class:`PatchMerging`), or None.
        use_checkpoint: recompute the blocks in the backward pass to save memory.
        out_dim: channels after the patch merging.
        conv_expand_ratio: MBConv expansion.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        activation: type[nn.Module],
        drop_path: float | Sequence[float] = 0.0,
        downsample: type[nn.Module] | bool | None = None,
        use_checkpoint: bool = False,
        out_dim: int | None = None,
        conv_expand_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        rates = _per_block(drop_path, depth)
        self.blocks = nn.ModuleList(
            MBConv(dim, dim, conv_expand_ratio, activation, rates[i]) for i in range(depth)
        )
        self._init_stage(
            dim, input_resolution, depth, use_checkpoint, downsample, out_dim, activation
        )


class Mlp(nn.Module):
    """LayerNorm then a two-layer MLP (``norm``, ``fc1``, ``fc2``), with dropout.

    Args:
        in_features: input width.
        hidden_features: hidden width (default ``in_features``).
        out_features: output width (default ``in_features``).
        act_layer: activation factory.
        drop: dropout after the activation and after ``fc2`` (training only).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.fc1 = nn.Linear(in_features, hidden_features or in_features)
        self.fc2 = nn.Linear(hidden_features or in_features, out_features or in_features)
        self.act = act_layer()
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(self.norm(x))))
        return self.drop(self.fc2(x))


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
        attn_ratio: float = 4,
        resolution: tuple[int, int] = (14, 14),
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.key_dim = key_dim
        self.nh_kd = key_dim * num_heads
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.attn_ratio = attn_ratio
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, self.dh + 2 * self.nh_kd)
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
        # Gathered on every call (MobileSAM caches it in train()/eval(), which goes stale
        # when weights are loaded after eval()).
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
        drop: MLP dropout (training only).
        drop_path: stochastic depth of the attention and MLP branches (training only).
        local_conv_size: kernel of the depthwise conv between attention and MLP.
        activation: MLP activation.

    Raises:
        ValueError: a non-positive window, or ``dim`` not divisible by ``num_heads``.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        local_conv_size: int = 3,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        if window_size <= 0:
            raise ValueError(f"window_size: expected > 0, got {window_size}")
        if dim % num_heads:
            raise ValueError(f"dim: expected a multiple of num_heads={num_heads}, got {dim}")
        self.dim = dim
        self.input_resolution = input_resolution
        self.num_heads = num_heads
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio
        self.drop_path = _drop_path_or_identity(drop_path)
        head_dim = dim // num_heads
        self.attn = Attention(
            dim, head_dim, num_heads, attn_ratio=1, resolution=(window_size, window_size)
        )
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=activation, drop=drop)
        pad = local_conv_size // 2
        self.local_conv = Conv2d_BN(dim, dim, ks=local_conv_size, stride=1, pad=pad, groups=dim)

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
        x = x + self.drop_path(self._window_attention(x))
        x = x.transpose(1, 2).reshape(batch, channels, height, width)
        x = self.local_conv(x)
        x = x.view(batch, channels, tokens).transpose(1, 2)
        return x + self.drop_path(self.mlp(x))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, input_resolution={self.input_resolution}, "
            f"num_heads={self.num_heads}, window_size={self.window_size}, "
            f"mlp_ratio={self.mlp_ratio}"
        )


class BasicLayer(_Stage):
    """Stage of TinyViT blocks on tokens, with optional patch merging.

    Args:
        dim: token width.
        input_resolution: (H, W).
        depth: number of blocks.
        num_heads: attention heads.
        window_size: attention window side.
        mlp_ratio: MLP hidden width / ``dim``.
        drop: MLP dropout (training only).
        drop_path: stochastic depth, one rate for all blocks or one per block.
        downsample: the merging class to end with (:class:`PatchMerging`), or None.
        use_checkpoint: recompute the blocks in the backward pass to save memory.
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
        drop: float = 0.0,
        drop_path: float | Sequence[float] = 0.0,
        downsample: type[nn.Module] | bool | None = None,
        use_checkpoint: bool = False,
        local_conv_size: int = 3,
        activation: type[nn.Module] = nn.GELU,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        rates = _per_block(drop_path, depth)
        self.blocks = nn.ModuleList(
            TinyViTBlock(
                dim=dim,
                input_resolution=input_resolution,
                num_heads=num_heads,
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                drop=drop,
                drop_path=rates[i],
                local_conv_size=local_conv_size,
                activation=activation,
            )
            for i in range(depth)
        )
        self._init_stage(
            dim, input_resolution, depth, use_checkpoint, downsample, out_dim, activation
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, input_resolution={self.input_resolution}, depth={self.depth}"


class TinyViT(nn.Module):
    """TinyViT backbone as adapted by MobileSAM (last stage at 1/16, SAM neck).

    The constructor is MobileSAM's, defaults included (TinyViT-21M-like widths at 224 px);
    MobileSAM's SAM encoder is ``TinyViT(img_size=1024, embed_dims=[64, 128, 160, 320],
    num_heads=[2, 4, 5, 10], drop_path_rate=0.0, layer_lr_decay=0.8)`` (see
    ``repvit_sam.build.build_sam_vit_t``).

    Args:
        img_size: input side S (the embedding is S/16 a side).
        in_chans: image channels.
        num_classes: width of the unused classifier head (kept for the checkpoint keys).
        embed_dims: widths of the four stages.
        depths: blocks per stage.
        num_heads: attention heads of stages 1-3 (entry 0 unused).
        window_sizes: attention windows of stages 1-3 (entry 0 unused).
        mlp_ratio: MLP hidden width / stage width.
        drop_rate: MLP dropout (training only).
        drop_path_rate: stochastic depth of the last block; earlier blocks get linearly
            smaller rates (training only).
        use_checkpoint: activation checkpointing of every block (training only).
        mbconv_expand_ratio: MBConv expansion of stage 0.
        local_conv_size: depthwise conv kernel in the attention blocks.
        layer_lr_decay: learning-rate scale per block towards the input, stored on every
            parameter as ``lr_scale`` (see :meth:`set_layer_lr_decay`).
        out_chans: neck output channels (keyword only; MobileSAM fixes 256).
    """

    def __init__(
        self,
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        use_checkpoint: bool = False,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        layer_lr_decay: float = 1.0,
        *,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.num_classes = num_classes
        self.depths = depths
        self.num_layers = len(depths)
        self.mlp_ratio = mlp_ratio
        activation = nn.GELU
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], img_size, activation)
        patches = self.patch_embed.patches_resolution
        self.patches_resolution = patches
        # Stochastic depth grows linearly over all blocks of all stages.
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            # Stages 0..2 halve the resolution; the last merging has stride 1 (1/16 output).
            scale = 2 ** (i - 1 if i == 3 else i)
            common: dict[str, Any] = {
                "dim": embed_dims[i],
                "input_resolution": (patches[0] // scale, patches[1] // scale),
                "depth": depths[i],
                "drop_path": rates[sum(depths[:i]) : sum(depths[: i + 1])],
                "downsample": PatchMerging if i < self.num_layers - 1 else None,
                "use_checkpoint": use_checkpoint,
                "out_dim": embed_dims[min(i + 1, len(embed_dims) - 1)],
                "activation": activation,
            }
            layer: nn.Module
            if i == 0:
                layer = ConvLayer(conv_expand_ratio=mbconv_expand_ratio, **common)
            else:
                layer = BasicLayer(
                    num_heads=num_heads[i],
                    window_size=window_sizes[i],
                    mlp_ratio=mlp_ratio,
                    drop=drop_rate,
                    local_conv_size=local_conv_size,
                    **common,
                )
            self.layers.append(layer)
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head: nn.Module = (
            nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        )
        self.apply(self._init_weights)
        self.set_layer_lr_decay(layer_lr_decay)
        self.neck = sam_neck(embed_dims[-1], out_chans)

    def set_layer_lr_decay(self, layer_lr_decay: float) -> None:
        """Store a learning-rate scale on every parameter (``param.lr_scale``), as MobileSAM.

        Block i of n (counted over all stages) gets ``layer_lr_decay ** (n - 1 - i)``: the
        patch embedding the smallest scale, the last block and the head 1. An optimiser that
        reads ``lr_scale`` applies it; PyTorch's own optimisers ignore it. Every parameter
        also gets its name as ``param.param_name``.
        """
        depth = sum(self.depths)
        scales = [layer_lr_decay ** (depth - i - 1) for i in range(depth)]

        def set_scale(module: nn.Module, scale: float) -> None:
            for param in module.parameters():
                param.lr_scale = scale  # type: ignore[attr-defined]

        set_scale(self.patch_embed, scales[0])
        block_idx = 0
        for layer in self.layers:
            for block in layer.blocks:  # type: ignore[union-attr]
                set_scale(block, scales[block_idx])
                block_idx += 1
            if layer.downsample is not None:  # type: ignore[union-attr]
                set_scale(layer.downsample, scales[block_idx - 1])  # type: ignore[arg-type]
        set_scale(self.norm_head, scales[-1])
        set_scale(self.head, scales[-1])
        for name, param in self.named_parameters():
            param.param_name = name  # type: ignore[attr-defined]

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # MobileSAM's initialisation (timm's trunc_normal_ is torch's with the same bounds).
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.zeros_(module.bias)
            nn.init.ones_(module.weight)

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        """Parameter-name fragments an optimiser should exempt from weight decay."""
        return {"attention_biases"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images; the same as :meth:`forward`.

        Args:
            x: (B, in_chans, img_size, img_size) normalised, zero-padded images.

        Returns:
            (B, out_chans, img_size / 16, img_size / 16) embedding.

        Raises:
            ValueError: the input side is not ``img_size``.
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, S, S) normalised, zero-padded images -> (B, 256, S/16, S/16)."""
        return self.forward_features(x)


def _tiny_vit_builder(
    name: str,
    widths: tuple[int, ...],
    heads: tuple[int, ...],
    default_drop_path: float,
    img_size: int = 224,
    window: int = 7,
) -> Callable[..., TinyViT]:
    """A builder of TinyViT's ImageNet backbones, with MobileSAM's signature."""

    def build(
        pretrained: bool = False,
        num_classes: int = 1000,
        drop_path_rate: float = default_drop_path,
    ) -> TinyViT:
        if pretrained:
            raise ValueError(
                f"{name}(pretrained=True): this library never downloads; build the model, "
                "then load a checkpoint file you fetched yourself with load_state_dict"
            )
        return TinyViT(
            img_size=img_size,
            num_classes=num_classes,
            embed_dims=widths,
            depths=(2, 2, 6, 2),
            num_heads=heads,
            window_sizes=(window, window, 2 * window, window),
            drop_path_rate=drop_path_rate,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"TinyViT's ImageNet classifier backbone ``{name}`` (widths {widths}), as in MobileSAM."
        "\n\n    ``pretrained=True`` raises ValueError: this library never downloads."
    )
    return build


_WIDTHS_21M, _HEADS_21M = (96, 192, 384, 576), (3, 6, 12, 18)
tiny_vit_5m_224 = _tiny_vit_builder("tiny_vit_5m_224", (64, 128, 160, 320), (2, 4, 5, 10), 0.0)
tiny_vit_11m_224 = _tiny_vit_builder("tiny_vit_11m_224", (64, 128, 256, 448), (2, 4, 8, 14), 0.1)
tiny_vit_21m_224 = _tiny_vit_builder("tiny_vit_21m_224", _WIDTHS_21M, _HEADS_21M, 0.2)
tiny_vit_21m_384 = _tiny_vit_builder("tiny_vit_21m_384", _WIDTHS_21M, _HEADS_21M, 0.1, 384, 12)
tiny_vit_21m_512 = _tiny_vit_builder("tiny_vit_21m_512", _WIDTHS_21M, _HEADS_21M, 0.1, 512, 16)
