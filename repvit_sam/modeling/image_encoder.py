"""SAM's ViT image encoder (ViT-B/L/H): windowed and global attention with decomposed
relative positional embeddings, followed by the 256-channel neck.

Module and attribute names follow the official implementation, because they are the checkpoint
key schema (``pos_embed``, ``patch_embed.proj``, ``blocks.<i>.attn.rel_pos_h``, ``neck.<j>``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from repvit_sam.modeling.common import MLPBlock, sam_neck


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection; returns channels-last tokens (B, H', W', C).

    Args:
        kernel_size: patch size.
        stride: patch stride (equal to ``kernel_size`` in SAM).
        padding: convolution padding.
        in_chans: image channels.
        embed_dim: token width.
    """

    def __init__(
        self,
        kernel_size: tuple[int, int] = (16, 16),
        stride: tuple[int, int] = (16, 16),
        padding: tuple[int, int] = (0, 0),
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split a (B, H, W, C) map into square windows, zero-padding bottom/right as needed.

    Args:
        x: (B, H, W, C) tokens.
        window_size: side of a window.

    Returns:
        (B * nH * nW, window_size, window_size, C) windows and the padded size (Hp, Wp).
    """
    batch, height, width, channels = x.shape
    pad_h = (window_size - height % window_size) % window_size
    pad_w = (window_size - width % window_size) % window_size
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    padded_h, padded_w = height + pad_h, width + pad_w
    x = x.view(
        batch, padded_h // window_size, window_size, padded_w // window_size, window_size, channels
    )
    windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, channels)
    return windows, (padded_h, padded_w)


def window_unpartition(
    windows: torch.Tensor,
    window_size: int,
    pad_hw: tuple[int, int],
    hw: tuple[int, int],
) -> torch.Tensor:
    """Inverse of :func:`window_partition`, dropping the padding.

    Args:
        windows: (B * nH * nW, window_size, window_size, C).
        window_size: side of a window.
        pad_hw: padded size (Hp, Wp).
        hw: original size (H, W).

    Returns:
        (B, H, W, C) tokens.
    """
    padded_h, padded_w = pad_hw
    height, width = hw
    n_h, n_w = padded_h // window_size, padded_w // window_size
    batch = windows.shape[0] // (n_h * n_w)
    x = windows.view(batch, n_h, n_w, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(batch, padded_h, padded_w, -1)
    if padded_h > height or padded_w > width:
        x = x[:, :height, :width, :].contiguous()
    return x


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative positional embeddings for every (query, key) pair along one axis.

    Args:
        q_size: number of query positions.
        k_size: number of key positions.
        rel_pos: (L, C) table; resized linearly when L != 2 * max(q_size, k_size) - 1.

    Returns:
        (q_size, k_size, C) embeddings.
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
            size=max_rel_dist,
            mode="linear",
        )
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0)
    # Scale coordinates with the shorter side when q and k lengths differ.
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def add_decomposed_rel_pos(
    attn: torch.Tensor,
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> torch.Tensor:
    """Add MViTv2's decomposed relative positional terms to attention logits.

    Args:
        attn: (B, q_h * q_w, k_h * k_w) attention logits.
        q: (B, q_h * q_w, C) unscaled queries.
        rel_pos_h: (Lh, C) table for the height axis.
        rel_pos_w: (Lw, C) table for the width axis.
        q_size: (q_h, q_w).
        k_size: (k_h, k_w).

    Returns:
        (B, q_h * q_w, k_h * k_w) logits with the positional terms added.
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    table_h = get_rel_pos(q_h, k_h, rel_pos_h)
    table_w = get_rel_pos(q_w, k_w, rel_pos_w)
    batch, _, dim = q.shape
    grid_q = q.reshape(batch, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", grid_q, table_h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", grid_q, table_w)
    attn = attn.view(batch, q_h, q_w, k_h, k_w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return attn.view(batch, q_h * q_w, k_h * k_w)


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) map, optionally with relative positions.

    Args:
        dim: token width.
        num_heads: attention heads.
        qkv_bias: learnable bias on the query/key/value projection.
        use_rel_pos: add decomposed relative positional embeddings.
        rel_pos_zero_init: start the positional tables at zero.
        input_size: (H, W) the tables are sized for; required with ``use_rel_pos``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required with use_rel_pos=True")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        tokens = height * width
        # (3, B, heads, N, head_dim) -> three (B * heads, N, head_dim)
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, batch * self.num_heads, tokens, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(
                attn, q, self.rel_pos_h, self.rel_pos_w, (height, width), (height, width)
            )
        attn = attn.softmax(dim=-1)
        out = (attn @ v).view(batch, self.num_heads, height, width, -1)
        out = out.permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block with windowed (``window_size > 0``) or global attention.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / ``dim``.
        qkv_bias: learnable bias on the query/key/value projection.
        norm_layer: normalisation factory (called with ``dim``).
        act_layer: MLP activation.
        use_rel_pos: add relative positional embeddings in attention.
        rel_pos_zero_init: start the positional tables at zero.
        window_size: attention window side; 0 means global attention.
        input_size: (H, W) of the token map, for the global-attention tables.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: type[nn.Module] = nn.GELU,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio), act=act_layer)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            height, width = x.shape[1], x.shape[2]
            windows, pad_hw = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(windows), self.window_size, pad_hw, (height, width))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """SAM's ViT image encoder.

    Args:
        img_size: input side S.
        patch_size: patch side (16: embedding is S/16).
        in_chans: image channels.
        embed_dim: token width.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / ``embed_dim``.
        out_chans: neck output channels.
        qkv_bias: learnable bias on the query/key/value projections.
        norm_layer: normalisation factory for the blocks (called with ``embed_dim``).
        act_layer: MLP activation.
        use_abs_pos: learnable absolute positional embedding (``pos_embed``).
        use_rel_pos: relative positional embeddings in attention.
        rel_pos_zero_init: start the relative tables at zero.
        window_size: window side of the windowed blocks.
        global_attn_indexes: blocks that attend globally instead.
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        act_layer: type[nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        global_attn_indexes: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(
            kernel_size=(patch_size, patch_size),
            stride=(patch_size, patch_size),
            in_chans=in_chans,
            embed_dim=embed_dim,
        )
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                norm_layer=norm_layer,
                act_layer=act_layer,
                use_rel_pos=use_rel_pos,
                rel_pos_zero_init=rel_pos_zero_init,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = sam_neck(embed_dim, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            x: (B, in_chans, img_size, img_size) normalised, zero-padded images.

        Returns:
            (B, out_chans, img_size / patch_size, img_size / patch_size) embedding.
        """
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
