"""FocSAM's FocusRefiner: refines SAM image embeddings inside the focus region of a coarse mask.

Module and parameter names match the official ``refine_head.*`` keys, so the released
checkpoint's refiner (prefix stripped) loads with every key and shape checked.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..common import autocast_dtype, no_autocast
from .config import FocusRefinerConfig
from .focus import box_grid_mask, focus_box
from .layers import CrossAttentionBlock, MSAModule, window_chunks

logger = logging.getLogger(__name__)


def _grid_padding(hw: tuple[int, int], window: int) -> tuple[int, int]:
    """Grid size ``(Hp, Wp)`` after zero-padding bottom/right to whole windows."""
    return (hw[0] + -hw[0] % window, hw[1] + -hw[1] % window)


class RefineBlock(nn.Module):
    """One refine step over the windows that touch the focus region.

    The grid is split into ``window x window`` windows (shifted by half a window, wrapping
    around, when ``shifted``). Each selected window gets its own copy of the class token, which
    reads the window (``img2cls``) and then conditions the window's update (``cls2img``); the
    other windows are left as they are. The class token becomes the mean over *all* windows
    and, with ``cls_scale``, its change is rescaled by a learned function of the fraction of
    windows selected.

    The work happens on a channels-last *canvas* ``B x Hp x Wp x C`` (the grid zero-padded to
    whole windows): the selected windows' tokens are gathered with precomputed row indices
    (the shift is just another index map), updated, and written back in place.

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

    def window_index(self, hw: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Canvas positions of every window's tokens.

        Parameters
        ----------
        hw : tuple of int
            Grid ``(H, W)``.
        device : torch.device
            Where the index lives.

        Returns
        -------
        torch.Tensor
            ``nW x (window * window)`` int64 flat positions in the padded ``Hp x Wp`` grid of
            one image; windows row-major, tokens row-major within a window (after the roll by
            ``-window // 2`` when ``shifted``).
        """
        hp, wp = _grid_padding(hw, self.window)
        rows = torch.arange(hp, device=device)
        cols = torch.arange(wp, device=device)
        if self.shifted:  # torch.roll by -shift: position i shows i + shift
            shift = self.window // 2
            rows, cols = (rows + shift) % hp, (cols + shift) % wp
        grid = rows[:, None] * wp + cols[None, :]
        win = self.window
        grid = grid.view(hp // win, win, wp // win, win).transpose(1, 2)
        return grid.reshape(-1, win * win)

    def select(self, grid_mask: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Windows touching the focus, ``B x 1 x H x W`` mask -> ``B x nW`` bool."""
        hp, wp = _grid_padding(tuple(grid_mask.shape[-2:]), self.window)
        h, w = grid_mask.shape[-2:]
        padded = F.pad(grid_mask[:, 0], (0, wp - w, 0, hp - h)).flatten(1)  # B x Hp*Wp
        return padded[:, index].amax(dim=-1) > 0

    def forward_canvas(self, canvas: torch.Tensor, hw: tuple[int, int], cls: torch.Tensor,
                       index: torch.Tensor, selected: torch.Tensor,
                       workspace: dict | None = None) -> torch.Tensor:
        """Refine the canvas in place and return the new class token.

        The selected windows go through ``img2cls`` and ``cls2img`` in chunks of
        :data:`~napari_focsam.models.focsam.layers.ATTENTION_CHUNK_WINDOWS` (small, cache-resident
        intermediates); only the deformable convolution sees all of them at once.

        Parameters
        ----------
        canvas : torch.Tensor
            ``B x Hp x Wp x C`` float32 contiguous, zero outside the ``H x W`` grid; updated in
            place (the padding stays zero).
        hw : tuple of int
            ``(H, W)``.
        cls : torch.Tensor
            ``B x 1 x C`` class token.
        index : torch.Tensor
            :meth:`window_index` of this grid.
        selected : torch.Tensor
            ``B x nW`` bool, :meth:`select`.
        workspace : dict, optional
            Buffers reused from block to block (see :func:`_buffer`); None allocates afresh.

        Returns
        -------
        torch.Tensor
            ``B x 1 x C`` new class token.
        """
        b, hp, wp, c = canvas.shape
        nw, t = index.shape
        flat = canvas.view(b * hp * wp, c)
        chosen = selected.reshape(-1).nonzero().squeeze(1)  # over B * nW, batch-major
        cls_all = cls.repeat_interleave(nw, dim=0)  # (B * nW) x 1 x C
        n = chosen.numel()
        if n:
            image = torch.div(chosen, nw, rounding_mode="floor")
            rows = index[chosen - image * nw] + (image * (hp * wp))[:, None]  # n x T
            parts = window_chunks(n)
            tokens = [flat.index_select(0, rows[p].reshape(-1)).view(-1, t, c) for p in parts]
            cls_sel = self.img2cls(cls_all[chosen], tokens)
            msa = self.cls2img
            y = _buffer(workspace, "y", (n, t, c), torch.float32, canvas.device)
            if y is None:
                y = torch.cat([msa.mix(tok, cls_sel[p]) for p, tok in zip(parts, tokens, strict=True)])
            else:
                for p, tok in zip(parts, tokens, strict=True):
                    msa.mix(tok, cls_sel[p], out=y[p])
            dtype = autocast_dtype(canvas.device) or torch.float32
            win = (self.window, self.window)
            d = msa.deform(y, win, out=_buffer(workspace, "d", (n, *win, c), dtype, canvas.device))
            for p, tok in zip(parts, tokens, strict=True):
                flat.index_copy_(0, rows[p].reshape(-1), msa.finish(tok, d[p]).view(-1, c))
            cls_all = cls_all.index_copy(0, chosen, cls_sel.to(cls_all.dtype))
            h, w = hw
            if (hp, wp) != (h, w):  # keep the padding zero, as a fresh zero-padding would be
                canvas[:, h:].zero_()
                canvas[:, :, w:].zero_()
        new_cls = cls_all.view(b, nw, 1, c).mean(dim=1)
        if self.cls_scale_proj is not None:
            with no_autocast(cls.device):
                frac = selected.to(cls.dtype).mean(dim=1).view(b, 1, 1)
                scale = self.cls_scale_proj(-frac.clamp(min=1e-2).log()).exp()
                new_cls = scale * (new_cls - cls) + cls
        return new_cls

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
            ``B x C x H x W`` float32 (channels-last memory).
        cls : torch.Tensor
            ``B x 1 x C``.
        """
        hw = (x.shape[-2], x.shape[-1])
        canvas = _to_canvas(x, x.shape[0], self.window)
        index = self.window_index(hw, x.device)
        cls = self.forward_canvas(canvas, hw, cls.float(), index, self.select(grid_mask, index),
                                  _workspace())
        return canvas[:, : hw[0], : hw[1]].permute(0, 3, 1, 2), cls


def _workspace() -> dict | None:
    """A buffer store for :meth:`RefineBlock.forward_canvas`, None while autograd records
    (results written into buffers cannot be differentiated)."""
    return None if torch.is_grad_enabled() else {}


def _buffer(workspace: dict | None, name: str, shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device) -> torch.Tensor | None:
    """A contiguous ``shape`` view of the workspace's buffer ``name`` of ``dtype`` (grown when
    too small), or None without a workspace. Reusing the memory from block to block avoids the
    page faults of fresh multi-MiB allocations."""
    if workspace is None:
        return None
    numel = math.prod(shape)
    buf = workspace.get((name, dtype))
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=dtype, device=device)
        workspace[(name, dtype)] = buf
    return buf[:numel].view(shape)


def _to_canvas(x: torch.Tensor, batch: int, window: int) -> torch.Tensor:
    """``b x C x H x W`` (``b`` 1 or ``batch``) -> float32 canvas ``batch x Hp x Wp x C``, zero
    padded bottom/right to whole windows."""
    _, c, h, w = x.shape
    hp, wp = _grid_padding((h, w), window)
    canvas = x.new_zeros(batch, hp, wp, c, dtype=torch.float32)
    canvas[:, :h, :w] = x.permute(0, 2, 3, 1)
    return canvas


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
        hw = (image_embeddings.shape[-2], image_embeddings.shape[-1])
        with no_autocast(image_embeddings.device):  # the residual stream stays float32
            x = self.embed_proj(image_embeddings.float())
            cls = self.token_proj(mask_token.float())
        canvas = _to_canvas(x, b, self.cfg.window_size)
        grid_mask = grid_mask.float().expand(b, -1, -1, -1)
        plans = {}
        workspace = _workspace()
        for block in self.blocks:
            if block.shifted not in plans:
                index = block.window_index(hw, canvas.device)
                plans[block.shifted] = (index, block.select(grid_mask, index))
            index, selected = plans[block.shifted]
            cls = block.forward_canvas(canvas, hw, cls, index, selected, workspace)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("refined %s windows (plain / shifted) of %d", "/".join(
                str(int(sel.sum())) for _, sel in plans.values()), plans[False][1].numel())
        return canvas[:, : hw[0], : hw[1]].permute(0, 3, 1, 2).contiguous()
