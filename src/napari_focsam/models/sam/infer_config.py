"""Tell a SAM config from the tensor shapes of a state_dict (official key layout).

Any ViT (SAM) or TinyViT (MobileSAM) image encoder and any decoder width is recognised, so
fine-tuned and lab-trained checkpoints of unreleased sizes load with every key and shape
checked. What the shapes tell:

* ViT: embed dim, input channels and patch size (``patch_embed.proj``), depth (block count),
  head width and so the heads (rel-pos tables), which blocks attend globally and the window
  (rel-pos table lengths: ``2 * grid - 1`` for global blocks, ``2 * window - 1`` otherwise),
  grid and image size (``pos_embed``), MLP ratio, qkv bias, neck width.
* TinyViT: stage widths, depths, heads and windows (``attention_biases``: heads x window²),
  MBConv and MLP ratios, local conv kernel, classifier width, neck width.
* Decoder: width, depth, MLP width, attention downsampling, multimask outputs, IoU head depth
  and width; prompt encoder: mask-downscaling channels.

What they cannot tell comes from the released models: LayerNorm / BatchNorm epsilons, the
decoder's number of heads (8), TinyViT's image size (1024) and merge strides (halving to the
64x64 grid, as the official code requires), the heads of ViT blocks without rel-pos tables,
and the window of a ViT whose blocks are all global (14). A file whose tellable dimensions
equal those of a named config (:data:`SAM_CONFIGS`) gets that config, so messages and logs
say e.g. ``sam_vit_b``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from ..checkpoint import ConfigNotInferredError
from .config import (
    SAM_CONFIGS,
    MaskDecoderConfig,
    SamConfig,
    TinyViTConfig,
    ViTEncoderConfig,
)

logger = logging.getLogger(__name__)

__all__ = ["derive_sam_config", "infer_sam_config", "known_config"]

_ENC = "image_encoder."
_DEC = "mask_decoder."
_PROMPT = "prompt_encoder."
#: Decoder heads of every released model (not visible in any shape).
_DEFAULT_DECODER_HEADS = 8
_DEFAULT_VIT_WINDOW = 14


class _Shapes:
    """Shape lookups in one state_dict; a missing key is an incomplete file."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.sd = state_dict

    def __call__(self, key: str, ndim: int | None = None) -> tuple[int, ...]:
        value = self.sd.get(key)
        if value is None:
            raise ConfigNotInferredError(f"the key {key} is missing")
        shape = tuple(int(v) for v in value.shape)
        if ndim is not None and len(shape) != ndim:
            raise ConfigNotInferredError(f"{key} has shape {shape}, expected {ndim} dimensions")
        return shape

    def has(self, key: str) -> bool:
        return key in self.sd

    def count(self, prefix: str) -> int:
        """Number of consecutive ``<prefix><i>.`` modules (0, 1, ... with no gap)."""
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        found = {int(m.group(1)) for k in self.sd if (m := pattern.match(k))}
        if found and found != set(range(len(found))):
            missing = sorted(set(range(max(found) + 1)) - found)
            raise ConfigNotInferredError(f"{prefix}* has no modules {missing}")
        return len(found)


def _contradiction(what: str) -> ConfigNotInferredError:
    return ConfigNotInferredError(f"contradictory shapes: {what}")


def _vit_encoder(s: _Shapes) -> ViTEncoderConfig:
    embed, in_chans, patch, patch_w = s(f"{_ENC}patch_embed.proj.weight", 4)
    if patch != patch_w:
        raise _contradiction(f"non-square patch {patch}x{patch_w}")
    depth = s.count(f"{_ENC}blocks.")
    if depth == 0:
        raise ConfigNotInferredError("the image encoder has no blocks")
    pos_key = f"{_ENC}pos_embed"
    grid = None
    if s.has(pos_key):
        _, gh, gw, width = s(pos_key, 4)
        if gh != gw or width != embed:
            raise _contradiction(f"pos_embed {(1, gh, gw, width)} for embed dim {embed}")
        grid = gh
    hidden, width = s(f"{_ENC}blocks.0.mlp.lin1.weight", 2)
    if width != embed:
        raise _contradiction(f"block MLP input {width} != embed dim {embed}")
    out_chans, width, _, _ = s(f"{_ENC}neck.0.weight", 4)
    if width != embed:
        raise _contradiction(f"neck input {width} != embed dim {embed}")
    rel = [f"{_ENC}blocks.{i}.attn.rel_pos_h" for i in range(depth)]
    use_rel_pos = all(s.has(k) for k in rel)
    if not use_rel_pos and any(s.has(k) for k in rel):
        raise _contradiction("only some blocks have rel-pos tables")
    released = _released_vit(embed, depth)
    if use_rel_pos:
        sides, head_dims = [], set()
        for i, key in enumerate(rel):
            length, head_dim = s(key, 2)
            if s(f"{_ENC}blocks.{i}.attn.rel_pos_w", 2) != (length, head_dim) or length % 2 == 0:
                raise _contradiction(f"block {i} rel-pos tables {(length, head_dim)} / "
                                     f"{s(f'{_ENC}blocks.{i}.attn.rel_pos_w')}")
            sides.append((length + 1) // 2)
            head_dims.add(head_dim)
        if len(head_dims) != 1 or embed % next(iter(head_dims)):
            raise _contradiction(f"head widths {sorted(head_dims)} for embed dim {embed}")
        num_heads = embed // head_dims.pop()
        if grid is None:
            grid = max(sides)
        global_blocks = tuple(i for i, side in enumerate(sides) if side == grid)
        windows = {side for side in sides if side != grid}
        if len(windows) > 1:
            raise _contradiction(f"windowed blocks of several sizes {sorted(windows)}")
        window = windows.pop() if windows else _DEFAULT_VIT_WINDOW
    else:
        if released is None:
            raise ConfigNotInferredError(
                "the blocks have no rel-pos tables, so their heads and global-attention blocks "
                f"cannot be told (and no released ViT has embed dim {embed} and depth {depth})")
        num_heads, global_blocks = released.num_heads, released.global_attn_indexes
        window = released.window_size
        grid = grid if grid is not None else released.grid_size
    try:
        return ViTEncoderConfig(
            embed_dim=embed, depth=depth, num_heads=num_heads, global_attn_indexes=global_blocks,
            out_chans=out_chans, image_size=grid * patch, patch_size=patch, window_size=window,
            mlp_ratio=_ratio(hidden, embed), qkv_bias=s.has(f"{_ENC}blocks.0.attn.qkv.bias"),
            use_rel_pos=use_rel_pos, use_abs_pos=s.has(pos_key), in_chans=in_chans)
    except ValueError as exc:
        raise _contradiction(str(exc)) from exc


def _released_vit(embed: int, depth: int) -> ViTEncoderConfig | None:
    for cfg in SAM_CONFIGS.values():
        enc = cfg.encoder
        if isinstance(enc, ViTEncoderConfig) and (enc.embed_dim, enc.depth) == (embed, depth):
            return enc
    return None


def _tiny_vit_encoder(s: _Shapes) -> TinyViTConfig:
    released = TinyViTConfig()
    half, in_chans, _, _ = s(f"{_ENC}patch_embed.seq.0.c.weight", 4)
    dim0, half_in, _, _ = s(f"{_ENC}patch_embed.seq.2.c.weight", 4)
    if half_in != half or dim0 != 2 * half:
        raise _contradiction(f"patch embed widths {half} -> {half_in} -> {dim0}")
    stages = s.count(f"{_ENC}layers.")
    if stages < 2:
        raise ConfigNotInferredError(f"the TinyViT has {stages} stages (at least 2 expected)")
    dims, depths, heads, windows = [dim0], [], [], []
    mlp_ratio = expand = local_conv = None
    for i in range(stages):
        layer = f"{_ENC}layers.{i}."
        depth = s.count(f"{layer}blocks.")
        depths.append(depth)
        if i < stages - 1:
            out_dim, in_dim, _, _ = s(f"{layer}downsample.conv1.c.weight", 4)
            if in_dim != dims[i]:
                raise _contradiction(f"stage {i} merges {in_dim} channels, has {dims[i]}")
            dims.append(out_dim)
        default_heads = released.num_heads[i] if i < len(released.num_heads) else 1
        default_window = released.window_sizes[i] if i < len(released.window_sizes) else 7
        if i == 0 or depth == 0:  # heads and window of a conv or empty stage do not exist
            heads.append(default_heads)
            windows.append(default_window)
        if depth == 0:
            continue
        block = f"{layer}blocks.0."
        if i == 0:
            hidden, width, _, _ = s(f"{block}conv1.c.weight", 4)
            expand = _same(expand, _ratio(hidden, width), "MBConv expansion")
            continue
        n_heads, offsets = s(f"{block}attn.attention_biases", 2)
        window = math.isqrt(offsets)
        if window * window != offsets:
            raise _contradiction(f"stage {i} has {offsets} attention-bias offsets (not a square)")
        qkv_out, width = s(f"{block}attn.qkv.weight", 2)
        if width != dims[i] or qkv_out != 3 * width:
            raise _contradiction(f"stage {i} qkv {(qkv_out, width)} for width {dims[i]}")
        heads.append(n_heads)
        windows.append(window)
        hidden, _ = s(f"{block}mlp.fc1.weight", 2)
        mlp_ratio = _same(mlp_ratio, _ratio(hidden, width), "MLP ratio")
        local_conv = _same(local_conv, s(f"{block}local_conv.c.weight", 4)[-1], "local conv")
    out_chans, width, _, _ = s(f"{_ENC}neck.0.weight", 4)
    if width != dims[-1]:
        raise _contradiction(f"neck input {width} != last stage width {dims[-1]}")
    num_classes = s(f"{_ENC}head.weight", 2)[0] if s.has(f"{_ENC}head.weight") else 0
    strides = _grid_strides(released.image_size // 4, released.image_size // 16, stages - 1)
    try:
        return TinyViTConfig(
            embed_dims=tuple(dims), depths=tuple(depths), num_heads=tuple(heads),
            window_sizes=tuple(windows), merge_strides=strides, out_chans=out_chans,
            mlp_ratio=mlp_ratio if mlp_ratio is not None else released.mlp_ratio,
            mbconv_expand_ratio=expand if expand is not None else released.mbconv_expand_ratio,
            local_conv_size=local_conv if local_conv is not None else released.local_conv_size,
            num_classes=num_classes, in_chans=in_chans)
    except ValueError as exc:
        raise _contradiction(str(exc)) from exc


def _grid_strides(side: int, grid: int, merges: int) -> tuple[int, ...]:
    """Merge strides that halve `side` until it is `grid`, then keep it: the only geometry
    the official TinyViT runs (its forward assumes the 64x64 grid, its stage resolutions a
    stride-1 last merge); the released widths give the same strides by the official rule."""
    strides = []
    for _ in range(merges):
        strides.append(2 if side > grid else 1)
        side = -(-side // strides[-1])
    if side != grid:
        raise ConfigNotInferredError(
            f"a TinyViT with {merges + 1} stages cannot reach the {grid}x{grid} grid the official "
            "code assumes, and its merge strides are not in the weights")
    return tuple(strides)


def _ratio(hidden: int, width: int) -> float:
    """A float ``r`` with ``int(width * r) == hidden`` (how the modules size hidden layers)."""
    r = hidden / width
    while int(width * r) < hidden:
        r = math.nextafter(r, math.inf)
    return r


def _same(known: Any, value: Any, what: str) -> Any:
    if known is not None and known != value:
        raise _contradiction(f"{what} {known} and {value} in different stages")
    return value


def _decoder(s: _Shapes) -> MaskDecoderConfig:
    _, width = s(f"{_DEC}iou_token.weight", 2)
    tokens, token_width = s(f"{_DEC}mask_tokens.weight", 2)
    if token_width != width or tokens < 2:
        raise _contradiction(f"mask tokens {(tokens, token_width)} for decoder width {width}")
    depth = s.count(f"{_DEC}transformer.layers.")
    if depth == 0:
        raise ConfigNotInferredError("the mask decoder's transformer has no layers")
    mlp_dim, _ = s(f"{_DEC}transformer.layers.0.mlp.lin1.weight", 2)
    internal, _ = s(f"{_DEC}transformer.layers.0.cross_attn_token_to_image.q_proj.weight", 2)
    if width % internal:
        raise _contradiction(f"cross-attention width {internal} does not divide {width}")
    iou_depth = s.count(f"{_DEC}iou_prediction_head.layers.")
    iou_hidden = s(f"{_DEC}iou_prediction_head.layers.0.weight", 2)[0] if iou_depth > 1 else width
    heads = _DEFAULT_DECODER_HEADS
    while width % heads or internal % heads:  # the released 8 heads, or fewer if 8 cannot be
        heads -= 1
    if heads != _DEFAULT_DECODER_HEADS:
        logger.warning("mask decoder width %d: using %d heads (the count is not in the weights)",
                       width, heads)
    return MaskDecoderConfig(
        transformer_dim=width, depth=depth, num_heads=heads, mlp_dim=mlp_dim,
        attention_downsample_rate=width // internal, num_multimask_outputs=tokens - 1,
        iou_head_depth=iou_depth, iou_head_hidden_dim=iou_hidden)


def _mask_in_chans(s: _Shapes, width: int) -> int:
    chans = s(f"{_PROMPT}mask_downscaling.3.weight", 4)[0]
    if s(f"{_PROMPT}mask_downscaling.0.weight", 4)[0] != chans // 4:
        raise _contradiction(f"mask downscaling widths {s(f'{_PROMPT}mask_downscaling.0.weight')} "
                             f"and {chans}")
    if s(f"{_PROMPT}no_mask_embed.weight", 2)[1] != width:
        raise _contradiction(f"prompt width {s(f'{_PROMPT}no_mask_embed.weight')[1]} != decoder "
                             f"width {width}")
    return chans


def _signature(cfg: SamConfig) -> dict[str, Any]:
    """The fields of `cfg` that tensor shapes tell (see the module docstring)."""
    sig = dataclasses.asdict(cfg)
    del sig["name"]
    sig["decoder"].pop("num_heads")
    enc = sig["encoder"]
    enc["kind"] = type(cfg.encoder).__name__
    for key in ("norm_eps", "neck_norm_eps", "bn_eps"):
        enc.pop(key, None)
    if isinstance(cfg.encoder, TinyViTConfig):  # heads / windows of conv or empty stages
        for key in ("num_heads", "window_sizes"):
            enc[key] = [v for i, v in enumerate(enc[key]) if i > 0 and cfg.encoder.depths[i]]
    return sig


def known_config(cfg: SamConfig) -> SamConfig | None:
    """The named config of :data:`SAM_CONFIGS` whose tellable dimensions equal `cfg`'s."""
    sig = _signature(cfg)
    return next((known for known in SAM_CONFIGS.values() if _signature(known) == sig), None)


def derive_sam_config(state_dict: Mapping[str, torch.Tensor]) -> SamConfig:
    """The config a SAM state_dict fits, from its tensor shapes.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        Official SAM layout (``image_encoder.``, ``prompt_encoder.``, ``mask_decoder.``), ViT
        or TinyViT image encoder. Only shapes are read (meta tensors work).

    Returns
    -------
    SamConfig
        A named config of :data:`SAM_CONFIGS` when the file fits one (e.g. ``sam_vit_b``),
        else a config named after its encoder (``sam_vit_<embed>x<depth>``,
        ``sam_tinyvit_<widths>``) with released defaults for what shapes cannot tell.

    Raises
    ------
    ConfigNotInferredError
        A key the dimensions are read from is missing, or shapes contradict each other; the
        message says which.
    """
    s = _Shapes(state_dict)
    if s.has(f"{_ENC}patch_embed.seq.0.c.weight"):
        encoder: ViTEncoderConfig | TinyViTConfig = _tiny_vit_encoder(s)
        name = "sam_tinyvit_" + "-".join(str(d) for d in encoder.embed_dims)
    else:
        encoder = _vit_encoder(s)
        name = f"sam_vit_{encoder.embed_dim}x{encoder.depth}"
    decoder = _decoder(s)
    if encoder.out_chans != decoder.transformer_dim:
        raise _contradiction(f"encoder output {encoder.out_chans} != decoder width "
                             f"{decoder.transformer_dim}")
    derived = SamConfig(name=name, encoder=encoder, decoder=decoder,
                        mask_in_chans=_mask_in_chans(s, decoder.transformer_dim))
    return known_config(derived) or derived


def infer_sam_config(state_dict: Mapping[str, torch.Tensor]) -> SamConfig | None:
    """Like :func:`derive_sam_config`, but None (reason logged) when the shapes cannot tell."""
    try:
        return derive_sam_config(state_dict)
    except ConfigNotInferredError as exc:
        logger.debug("no SAM config from the state_dict's shapes: %s", exc)
        return None
