"""FocSAM's FocusRefiner: refines SAM image embeddings inside the focus region of a coarse mask.

Module and parameter names match the official ``refine_head.*`` keys, so the released
checkpoint's refiner (prefix stripped) loads with every key and shape checked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..sam.image_encoder import window_partition, window_unpartition
from .config import FocusRefinerConfig
from .focus import box_grid_mask, focus_box
from .layers import CrossAttentionBlock, MSAModule


class RefineBlock(nn.Module):
    """One refine step over the windows that touch the focus region.

    The grid is split into ``window x window`` windows (shifted by half a window, wrapping
    around, when ``shifted``). Each selected window gets its own copy of the class token, which
    reads the window (``img2cls``) and then conditions the window's update (``cls2img``); the
    other windows are left as they are. The class token becomes the mean over *all* windows
    and, with ``cls_scale``, its change is rescaled by a learned function of the fraction of
    windows selected.

    Parameters
    ----------
    cfg : FocusRefinerConfig
        Architecture.
    shifted : bool
        Roll the grid by ``-window // 2`` before partitioning (and back afterwards).
    cls_scale : bool
        Rescale the class-token update (all blocks but the last).
    """

    def __init__(self, cfg: FocusRefinerConfig, shifted: bool, cls_scale: bool) -> None:
        super().__init__()
        self.window = cfg.window_size
        self.shifted = shifted
        self.img2cls = CrossAttentionBlock(cfg.embed_dim, cfg.num_heads, cfg.mlp_dim)
        self.cls2img = MSAModule(cfg.embed_dim, cfg.num_heads)
        self.cls_scale_proj = nn.Linear(1, 1) if cls_scale else None
        if self.cls_scale_proj is not None:
            nn.init.ones_(self.cls_scale_proj.weight)
            nn.init.zeros_(self.cls_scale_proj.bias)

    def _to_windows(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``B x C x H x W`` -> windows ``nW x win x win x C`` (batch-major) and the padded size."""
        x = x.permute(0, 2, 3, 1)  # B x H x W x C
        if self.shifted:
            h, w = x.shape[1:3]
            x = F.pad(x, (0, 0, 0, -w % self.window, 0, -h % self.window))
            shift = self.window // 2
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        return window_partition(x, self.window)

    def _from_windows(self, windows: torch.Tensor, padded_hw: tuple[int, int],
                      hw: tuple[int, int]) -> torch.Tensor:
        """Inverse of :meth:`_to_windows`, ``nW x win x win x C`` -> ``B x C x H x W``."""
        if self.shifted:
            x = window_unpartition(windows, self.window, padded_hw, padded_hw)
            shift = self.window // 2
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))[:, : hw[0], : hw[1]]
        else:
            x = window_unpartition(windows, self.window, padded_hw, hw)
        return x.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, cls: torch.Tensor,
                grid_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Refine.

        Parameters
        ----------
        x : torch.Tensor
            ``B x C x H x W`` embeddings.
        cls : torch.Tensor
            ``B x 1 x C`` class token.
        grid_mask : torch.Tensor
            ``B x 1 x H x W``, nonzero on tokens in focus.

        Returns
        -------
        x : torch.Tensor
            ``B x C x H x W``.
        cls : torch.Tensor
            ``B x 1 x C``.
        """
        b, c, h, w = x.shape
        windows, padded_hw = self._to_windows(x)  # nW x win x win x C
        selected = self._to_windows(grid_mask)[0].flatten(1).amax(dim=1) > 0  # nW
        per_image = windows.shape[0] // b
        cls_all = cls.repeat_interleave(per_image, dim=0)  # nW x 1 x C
        idx = selected.nonzero().squeeze(1)
        if idx.numel():
            win = windows[idx]  # n x win x win x C
            cls_sel = self.img2cls(cls_all[idx], win.flatten(1, 2))
            out = self.cls2img(win.permute(0, 3, 1, 2), cls_sel)  # n x C x win x win
            windows = windows.index_copy(0, idx, out.permute(0, 2, 3, 1))
            cls_all = cls_all.index_copy(0, idx, cls_sel)
        x = self._from_windows(windows, padded_hw, (h, w))
        new_cls = cls_all.view(b, per_image, 1, c).mean(dim=1)
        if self.cls_scale_proj is not None:
            frac = selected.view(b, per_image).to(cls.dtype).mean(dim=1).view(b, 1, 1)
            scale = self.cls_scale_proj(-frac.clamp(min=1e-2).log()).exp()
            new_cls = scale * (new_cls - cls) + cls
        return x, new_cls


class FocusRefiner(nn.Module):
    """FocSAM's refiner of image embeddings.

    Parameters
    ----------
    cfg : FocusRefinerConfig
        Architecture.

    Notes
    -----
    Inputs: SAM image embeddings ``B x C x E x E``, the coarse single-mask logits
    ``B x 1 x 4E x 4E`` and the decoder's mask token ``B x 1 x C`` of the same pass. Output:
    refined embeddings ``B x C x E x E`` to decode all later clicks of the object with.
    """

    def __init__(self, cfg: FocusRefinerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.embed_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.token_proj = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList(
            RefineBlock(cfg, shifted=bool(i % 2), cls_scale=i < cfg.depth - 1)
            for i in range(cfg.depth)
        )

    @property
    def canvas_hw(self) -> tuple[int, int]:
        """``(H, W)`` of the model input the focus box lives on."""
        return (self.cfg.canvas_size, self.cfg.canvas_size)

    def focus_box(self, coarse_logits: torch.Tensor) -> torch.Tensor:
        """Expanded box of the coarse mask, ``B x 1 x h x w`` -> ``B x 1 x 4`` int64
        ``(left, up, right, bottom)`` on the canvas (right / bottom exclusive)."""
        return focus_box(coarse_logits, self.canvas_hw, self.cfg.expand_ratio)

    def grid_mask(self, box: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """Tokens in focus, ``B x 1 x 4`` boxes -> ``B x 1 x h x w`` float 0/1."""
        return box_grid_mask(box, self.canvas_hw, grid_hw)

    def forward(self, image_embeddings: torch.Tensor, coarse_logits: torch.Tensor | None,
                mask_token: torch.Tensor, box: torch.Tensor | None = None) -> torch.Tensor:
        """Refine embeddings in the focus region of a coarse mask.

        Parameters
        ----------
        image_embeddings : torch.Tensor
            ``B x C x E x E`` (``1 x C x E x E`` is broadcast to the batch of the token).
        coarse_logits : torch.Tensor or None
            ``B x 1 x 4E x 4E`` low-resolution logits of the coarse pass (None when ``box``
            is given).
        mask_token : torch.Tensor
            ``B x 1 x C`` or ``B x C``: mask token 0 of the coarse pass.
        box : torch.Tensor, optional
            ``B x 1 x 4`` focus box to use instead of the one of ``coarse_logits``.

        Returns
        -------
        torch.Tensor
            ``B x C x E x E`` refined embeddings.
        """
        if box is None:
            if coarse_logits is None:
                raise ValueError("give coarse_logits or a focus box")
            box = self.focus_box(coarse_logits)
        return self.refine(image_embeddings, mask_token,
                           self.grid_mask(box, tuple(image_embeddings.shape[-2:])))

    def refine(self, image_embeddings: torch.Tensor, mask_token: torch.Tensor,
               grid_mask: torch.Tensor) -> torch.Tensor:
        """The refiner proper, given the tokens in focus.

        Parameters
        ----------
        image_embeddings : torch.Tensor
            ``B x C x E x E``.
        mask_token : torch.Tensor
            ``B x 1 x C`` or ``B x C``.
        grid_mask : torch.Tensor
            ``B x 1 x E x E``, nonzero on the tokens in focus.

        Returns
        -------
        torch.Tensor
            ``B x C x E x E``.
        """
        if mask_token.ndim == 2:
            mask_token = mask_token[:, None]
        if mask_token.ndim != 3 or mask_token.shape[1] != 1:
            raise ValueError(f"mask_token must be B x 1 x C, got {tuple(mask_token.shape)}")
        b = mask_token.shape[0]
        x = self.embed_proj(image_embeddings).expand(b, -1, -1, -1)
        cls = self.token_proj(mask_token.to(x.dtype))
        grid_mask = grid_mask.to(x.dtype).expand(b, -1, -1, -1)
        for block in self.blocks:
            x, cls = block(x, cls, grid_mask)
        return x
