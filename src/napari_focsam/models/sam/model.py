"""The SAM composite: image encoder + prompt encoder + mask decoder, with pre/post-processing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SamConfig, TinyViTConfig, ViTEncoderConfig
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder, MaskDecoderOutput
from .prompt_encoder import PromptEncoder
from .tiny_vit import ImageEncoderTinyViT


def build_image_encoder(cfg: ViTEncoderConfig | TinyViTConfig) -> nn.Module:
    """SAM's ViT or MobileSAM's TinyViT image encoder for an encoder config.

    Both map ``B x 3 x S x S`` to ``B x out_chans x G x G`` (``G = cfg.grid_size``).
    """
    if isinstance(cfg, TinyViTConfig):
        return ImageEncoderTinyViT(cfg)
    return ImageEncoderViT(cfg)


class SamModel(nn.Module):
    """SAM (segment-anything 1.0), state_dict-compatible with the official checkpoints.

    The image encoder is SAM's ViT or MobileSAM's TinyViT, as `config.encoder` says; both give
    ``B x C x G x G`` embeddings for the same prompt encoder and mask decoder.

    Parameters
    ----------
    config : SamConfig
        Architecture.
    image_encoder, prompt_encoder, mask_decoder : nn.Module, optional
        Components to use instead of building them from ``config`` (FocSAM injects its own).
    """

    def __init__(
        self,
        config: SamConfig,
        *,
        image_encoder: nn.Module | None = None,
        prompt_encoder: PromptEncoder | None = None,
        mask_decoder: MaskDecoder | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder or build_image_encoder(config.encoder)
        self.prompt_encoder = prompt_encoder or PromptEncoder(
            config.prompt_embed_dim, config.image_embedding_size, config.image_size,
            config.mask_in_chans,
        )
        self.mask_decoder = mask_decoder or MaskDecoder(config.decoder)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise and zero-pad bottom/right to the square model input.

        Parameters
        ----------
        x : torch.Tensor
            ``B x 3 x h x w`` pixel values 0..255 with ``max(h, w) <= image_size``.

        Returns
        -------
        torch.Tensor
            ``B x 3 x S x S`` float32.
        """
        size = self.config.image_size
        h, w = x.shape[-2:]
        if h > size or w > size:
            raise ValueError(f"image {h}x{w} is larger than the model input {size}x{size}; "
                             "resize its longest side first")
        x = (x.float() - self.pixel_mean) / self.pixel_std
        return F.pad(x, (0, size - w, 0, size - h))

    def decode(
        self,
        image_embeddings: torch.Tensor,
        *,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = True,
    ) -> MaskDecoderOutput:
        """Prompt encoder + mask decoder on precomputed image embeddings.

        Parameters
        ----------
        image_embeddings : torch.Tensor
            ``1 x C x E x E`` (or ``B x C x E x E``).
        point_coords : torch.Tensor, optional
            ``B x N x 2`` (x, y) in model-input pixels.
        point_labels : torch.Tensor, optional
            ``B x N`` (1 positive, 0 negative, -1 padding).
        boxes : torch.Tensor, optional
            ``B x 4`` (x0, y0, x1, y1) in model-input pixels.
        mask_input : torch.Tensor, optional
            ``B x 1 x 4E x 4E`` logits of a previous prediction.
        multimask : bool
            Three masks instead of one.

        Returns
        -------
        MaskDecoderOutput
        """
        if (point_coords is None) != (point_labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.prompt_encoder(points, boxes, mask_input)
        return self.mask_decoder(
            image_embeddings.float(), self.prompt_encoder.get_dense_pe(), sparse, dense, multimask
        )

    def postprocess_masks(self, low_res_logits: torch.Tensor, input_size: tuple[int, int],
                          original_size: tuple[int, int]) -> torch.Tensor:
        """Upscale low-resolution logits to the original image.

        Parameters
        ----------
        low_res_logits : torch.Tensor
            ``B x K x 4E x 4E``.
        input_size : tuple of int
            ``(h, w)`` of the resized image inside the padded model input.
        original_size : tuple of int
            ``(H, W)`` of the original image.

        Returns
        -------
        torch.Tensor
            ``B x K x H x W`` logits.
        """
        size = self.config.image_size
        x = F.interpolate(low_res_logits, (size, size), mode="bilinear", align_corners=False)
        x = x[..., : input_size[0], : input_size[1]]
        return F.interpolate(x, tuple(original_size), mode="bilinear", align_corners=False)


def build_sam(config: SamConfig) -> SamModel:
    """Build a randomly initialised SAM in eval mode from a config.

    Parameters
    ----------
    config : SamConfig

    Returns
    -------
    SamModel
    """
    return SamModel(config).eval()
