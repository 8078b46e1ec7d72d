"""SAM 2's FPN neck and sine position encoding.

Parameter names follow the official ``FpnNeck`` (``convs.{i}.conv.*``; ``convs[0]`` takes the
*lowest*-resolution trunk level). The sine encoding has no parameters.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .config import FpnNeckConfig

logger = logging.getLogger(__name__)


class SinePositionEncoding(nn.Module):
    """2-D sine/cosine position encoding (official ``PositionEmbeddingSine`` semantics).

    For a ``H x W`` grid, positions ``y = 1..H`` and ``x = 1..W`` are (when ``normalize``)
    scaled to ``pos / (size + 1e-6) * scale``; channel ``2i`` / ``2i + 1`` of each half holds
    ``sin`` / ``cos`` of ``pos / temperature ** (2i / half)``. Output channels: the ``y`` half
    first, then the ``x`` half.

    Parameters
    ----------
    num_pos_feats : int
        Output channels (even).
    temperature : float
        Frequency base.
    normalize : bool
        Normalise positions to ``(0, scale]``.
    scale : float or None
        Scale of normalised positions (None = 2*pi; only with ``normalize``).
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0, normalize: bool = True,
                 scale: float | None = None) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(f"num_pos_feats {num_pos_feats} must be even")
        if scale is not None and not normalize:
            raise ValueError("normalize should be True if scale is passed")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict[tuple, torch.Tensor] = {}

    def _axis(self, n: int, device: torch.device) -> torch.Tensor:
        """Encoding of positions ``1..n`` along one axis, ``n x half`` float32."""
        half = self.num_pos_feats // 2
        pos = torch.arange(1, n + 1, dtype=torch.float32, device=device)
        if self.normalize:
            pos = pos / (pos[-1:] + 1e-6) * self.scale
        dim_t = torch.arange(half, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)
        angles = pos[:, None] / dim_t  # n x half
        # interleave sin of the even and cos of the odd channels
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    def encode_grid(self, h: int, w: int, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Encoding of an ``h x w`` grid, ``1 x num_pos_feats x h x w``.

        Cached per (size, device, dtype): the returned tensor is shared, do not modify it in place.
        It is an ordinary tensor (not an inference tensor) even when first made under
        ``torch.inference_mode``, so it can later enter autograd-tracked computations.
        """
        device = torch.device(device)
        key = (h, w, device, dtype)
        pe = self._cache.get(key)
        if pe is None:
            with torch.inference_mode(False), torch.no_grad():
                pe = self._make_grid(h, w, device, dtype)
            self._cache[key] = pe
        return pe

    def _make_grid(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Uncached :meth:`encode_grid` (computed in float32, then cast)."""
        half = self.num_pos_feats // 2
        pos_y = self._axis(h, device)  # h x half
        pos_x = self._axis(w, device)  # w x half
        pe = torch.empty(1, self.num_pos_feats, h, w, dtype=torch.float32, device=device)
        pe[0, :half] = pos_y.t()[:, :, None]
        pe[0, half:] = pos_x.t()[:, None, :]
        return pe.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encoding for a feature map ``B x C x H x W`` -> ``B x num_pos_feats x H x W``.

        Returned in ``x``'s dtype as a batch-expanded view of a cached tensor (read-only use).
        """
        pe = self.encode_grid(x.shape[-2], x.shape[-1], x.device, x.dtype)
        return pe.expand(x.shape[0], -1, -1, -1)


class FpnNeck(nn.Module):
    """Feature pyramid without output convs: 1x1 laterals + top-down upsampling for some levels.

    Parameters
    ----------
    cfg : FpnNeckConfig
        Architecture.

    Notes
    -----
    ``forward(xs)`` takes the trunk outputs highest resolution first and returns
    ``(features, pos)``, both lists of ``B x d_model x H_l x W_l`` in the same order. As in the
    official code the top-down path is computed in float32 (matters under autocast).
    """

    def __init__(self, cfg: FpnNeckConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.d_model = cfg.d_model
        self.backbone_channel_list = list(cfg.backbone_channel_list)
        self.convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(dim, cfg.d_model, kernel_size=cfg.kernel_size,
                                                     stride=cfg.stride, padding=cfg.padding)))
            for dim in cfg.backbone_channel_list
        )
        self.position_encoding = SinePositionEncoding(cfg.num_pos_feats, cfg.temperature, cfg.normalize,
                                                      cfg.scale)
        self.top_down_levels = frozenset(cfg.top_down_levels)

    def fpn(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Pyramid features without position encodings.

        Parameters
        ----------
        xs : list of torch.Tensor
            Trunk levels ``B x C_l x H_l x W_l``, highest resolution first.

        Returns
        -------
        list of torch.Tensor
            ``B x d_model x H_l x W_l`` per level, highest resolution first.
        """
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise ValueError(f"FPN neck expects {n + 1} levels, got {len(xs)}")
        out: list[torch.Tensor] = [xs[0]] * (n + 1)
        prev = None
        mode = self.cfg.fpn_interp_model
        for i in range(n, -1, -1):  # coarse to fine
            lateral = self.convs[n - i](xs[i])
            if prev is not None and i in self.top_down_levels:
                top_down = F.interpolate(prev.float(), scale_factor=2.0, mode=mode,
                                         align_corners=None if mode == "nearest" else False,
                                         antialias=False)
                prev = lateral + top_down
                if self.cfg.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = prev
        return out

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``xs`` (highest resolution first) -> ``(features, position encodings)``."""
        features = self.fpn(xs)
        return features, [self.position_encoding(f) for f in features]
