"""SAM's prompt encoder: points, boxes and low-res mask logits to sparse and dense embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from repvit_sam.modeling.common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of normalised (x, y) coordinates with a fixed random projection.

    Args:
        num_pos_feats: number of frequencies; the encoding has 2 * num_pos_feats channels.
        scale: standard deviation of the random projection.
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., 2 * num_pos_feats) encoding."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of an (h, w) grid of pixel centres -> (C, h, w)."""
        h, w = size
        matrix = self.positional_encoding_gaussian_matrix
        grid = torch.ones((h, w), device=matrix.device, dtype=matrix.dtype)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        pe = self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1))
        return pe.permute(2, 0, 1)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """(B, N, 2) XY pixel coordinates in an (H, W) frame -> (B, N, C) encoding."""
        coords = coords_input.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._pe_encoding(coords.to(self.positional_encoding_gaussian_matrix.dtype))


class PromptEncoder(nn.Module):
    """Encodes prompts for SAM's mask decoder.

    Args:
        embed_dim: embedding width (256).
        image_embedding_size: (h, w) of the image embedding (64, 64).
        input_image_size: (H, W) of the padded model input (1024, 1024).
        mask_in_chans: hidden width of the mask-downscaling path.
        activation: activation of the mask-downscaling path.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right.
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(
            [nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)]
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(
        self,
        embedding_hw: tuple[int, int] | None = None,
        full_grid_hw: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """(1, embed_dim, h, w) positional encoding of the image embedding grid.

        With no arguments this is SAM's encoding of the trained (64, 64) grid. The arguments
        serve the approximate fast modes, whose embeddings cover the model frame differently.

        Args:
            embedding_hw: (h, w) of an embedding that covers only the top-left part of the full
                grid (an image encoded without its bottom/right padding); None: the full grid.
            full_grid_hw: (H, W) of the grid that spans the whole padded model input, e.g.
                (32, 32) for a 512 input; None: ``image_embedding_size``. Coordinates are
                normalised by the full grid, so a cropped grid keeps each cell's encoding.
        """
        full_hw = tuple(full_grid_hw) if full_grid_hw is not None else self.image_embedding_size
        pe = self.pe_layer(full_hw).unsqueeze(0)
        if embedding_hw is not None and tuple(embedding_hw) != tuple(full_hw):
            pe = pe[..., : embedding_hw[0], : embedding_hw[1]]
        return pe

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel centres
        if pad:
            padding_point = torch.zeros(
                (points.shape[0], 1, 2), device=points.device, dtype=points.dtype
            )
            padding_label = -torch.ones((labels.shape[0], 1), device=labels.device)
            points = torch.cat([points, padding_point], dim=1)
            labels = torch.cat([labels, padding_label.to(labels.dtype)], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        is_pad = (labels == -1).unsqueeze(-1)
        embedding = torch.where(is_pad, self.not_a_point_embed.weight, embedding)
        embedding = embedding + (labels == 0).unsqueeze(-1) * self.point_embeddings[0].weight
        embedding = embedding + (labels == 1).unsqueeze(-1) * self.point_embeddings[1].weight
        return embedding

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        boxes = boxes + 0.5
        corners = boxes.reshape(-1, 2, 2)
        embedding = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        offsets = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return embedding + offsets

    def _get_batch_size(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        embedding_hw: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed a batch of prompt sets.

        Args:
            points: ((B, N, 2) float XY in the padded input frame, (B, N) labels: 1 positive,
                0 negative, -1 padding), or None.
            boxes: (B, 4) float XYXY in the padded input frame, or None.
            masks: (B, 1, 4h, 4w) float low-res mask logits ((B, 1, 256, 256) for SAM's grid),
                or None.
            embedding_hw: (h, w) of the image embedding the dense output must match; None:
                ``image_embedding_size`` (64, 64). Only the fast modes pass another grid.

        Returns:
            sparse (B, N', embed_dim) and dense (B, embed_dim, h, w) embeddings.
        """
        batch = self._get_batch_size(points, boxes, masks)
        device = self.point_embeddings[0].weight.device
        sparse = torch.empty((batch, 0, self.embed_dim), device=device)
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, pad=boxes is None)], 1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            grid_h, grid_w = embedding_hw or self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                batch, -1, grid_h, grid_w
            )
        return sparse, dense
