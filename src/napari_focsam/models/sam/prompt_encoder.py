"""SAM prompt encoder: points, boxes and low-resolution masks to decoder embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..common import LayerNorm2d

#: Point labels understood by the prompt encoder.
LABEL_PADDING = -1
LABEL_NEGATIVE = 0
LABEL_POSITIVE = 1
LABEL_BOX_TOP_LEFT = 2
LABEL_BOX_BOTTOM_RIGHT = 3


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of 2D coordinates with a fixed random Gaussian matrix.

    Parameters
    ----------
    num_pos_feats : int
        Number of frequencies; the encoding has ``2 * num_pos_feats`` channels.
    """

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def encode(self, coords01: torch.Tensor) -> torch.Tensor:
        """Encode ``... x 2`` coordinates in ``[0, 1]`` (x, y) -> ``... x 2F``."""
        proj = (2 * coords01 - 1) @ self.positional_encoding_gaussian_matrix
        proj = 2 * math.pi * proj
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def dense(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an ``h x w`` grid, ``2F x h x w``."""
        h, w = size
        matrix = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=matrix.device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=matrix.device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # h x w x 2 (x, y)
        return self.encode(grid).permute(2, 0, 1)

    def sparse(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encode pixel coordinates ``B x N x 2`` (x, y) of an ``(H, W)`` image -> ``B x N x 2F``."""
        h, w = image_size
        scale = coords.new_tensor([1.0 / w, 1.0 / h])
        return self.encode(coords.float() * scale)


class PromptEncoder(nn.Module):
    """Embeds point, box and mask prompts.

    Parameters
    ----------
    embed_dim : int
        Prompt token width ``C``.
    image_embedding_size : int
        Side ``E`` of the image-embedding grid.
    input_image_size : int
        Side of the model input the coordinates refer to.
    mask_in_chans : int
        Hidden channels of the mask downscaling convolutions.
    """

    def __init__(self, embed_dim: int, image_embedding_size: int, input_image_size: int,
                 mask_in_chans: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = (image_embedding_size, image_embedding_size)
        self.input_image_size = (input_image_size, input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # negative point, positive point, box top-left, box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size, 4 * image_embedding_size)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid, ``1 x C x E x E``."""
        return self.pe_layer.dense(self.image_embedding_size)[None]

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """Point tokens.

        Parameters
        ----------
        coords : torch.Tensor
            ``B x N x 2`` (x, y) in input-image pixels.
        labels : torch.Tensor
            ``B x N``: 1 positive, 0 negative, 2/3 box corners, -1 padding.
        pad : bool
            Append a padding point (done when no box is given).

        Returns
        -------
        torch.Tensor
            ``B x (N + pad) x C``.
        """
        coords = coords.float() + 0.5  # pixel centres
        if pad:
            b = coords.shape[0]
            coords = torch.cat([coords, coords.new_zeros(b, 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((b, 1), LABEL_PADDING)], dim=1)
        emb = self.pe_layer.sparse(coords, self.input_image_size)
        labels = labels[..., None]
        emb = torch.where(labels == LABEL_PADDING, self.not_a_point_embed.weight, emb)
        for value, table in enumerate(self.point_embeddings):
            emb = emb + (labels == value) * table.weight
        return emb

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Box tokens from ``B x 4`` (x0, y0, x1, y1) -> ``B x 2 x C``."""
        corners = boxes.float().reshape(-1, 2, 2) + 0.5
        emb = self.pe_layer.sparse(corners, self.input_image_size)
        corner_tables = torch.cat(
            [self.point_embeddings[LABEL_BOX_TOP_LEFT].weight,
             self.point_embeddings[LABEL_BOX_BOTTOM_RIGHT].weight], dim=0)
        return emb + corner_tables

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts.

        Parameters
        ----------
        points : (coords ``B x N x 2``, labels ``B x N``) or None
        boxes : ``B x 4`` or None
        masks : ``B x 1 x 4E x 4E`` logits or None

        Returns
        -------
        sparse : torch.Tensor
            ``B x T x C`` point and box tokens.
        dense : torch.Tensor
            ``B x C x E x E`` mask embedding (``no_mask_embed`` when no mask).
        """
        device = self.no_mask_embed.weight.device
        given = [t for t in (points[0] if points is not None else None, boxes, masks)
                 if t is not None]
        b = given[0].shape[0] if given else 1
        sparse = [torch.empty(b, 0, self.embed_dim, device=device)]
        if points is not None:
            sparse.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            sparse.append(self.embed_boxes(boxes))
        if masks is not None:
            dense = self.mask_downscaling(masks.float())
        else:
            e_h, e_w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, e_h, e_w)
        return torch.cat(sparse, dim=1), dense
