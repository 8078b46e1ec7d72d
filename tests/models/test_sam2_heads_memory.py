"""SAM 2 heads and memory modules: official key layout, and behaviour against plain formulas.

Every module is built from the ``sam2_*.pt`` fixture's resolved official config (never from
constants tied to one fixture) and loaded from its state_dict with every key and shape checked.
The official sam2 code is not needed: numerical parity with it is checked elsewhere.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_focsam.models.checkpoint import load_checked
from napari_focsam.models.sam.prompt_encoder import PromptEncoder
from napari_focsam.models.sam2.mask_decoder import (
    Sam2MaskDecoder,
    select_single_mask_with_fallback,
    stability_scores,
)
from napari_focsam.models.sam2.memory_attention import (
    MemoryAttention,
    RoPEAttention,
    apply_rope,
    compute_axial_rope,
)
from napari_focsam.models.sam2.memory_encoder import MemoryEncoder

#: Official SAM 2 builds the prompt encoder / decoder with these fixed (un-configured) values.
OFFICIAL_MASK_IN_CHANS = 16
OFFICIAL_BACKBONE_STRIDE = 16
ATOL = 1e-5


def _prefixed(state_dict: dict, prefix: str) -> dict:
    out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    assert out, f"fixture has no {prefix}* keys"
    return out


def _hidden_dim(cfg: dict) -> int:
    return cfg["image_encoder"]["neck"]["d_model"]


def _embedding_size(cfg: dict) -> int:
    return cfg["image_size"] // OFFICIAL_BACKBONE_STRIDE


def _decoder(cfg: dict) -> Sam2MaskDecoder:
    return Sam2MaskDecoder(
        transformer_dim=_hidden_dim(cfg),
        use_high_res_features=cfg["use_high_res_features_in_sam"],
        iou_prediction_use_sigmoid=cfg["iou_prediction_use_sigmoid"],
        pred_obj_scores=cfg["pred_obj_scores"],
        pred_obj_scores_mlp=cfg["pred_obj_scores_mlp"],
        use_multimask_token_for_obj_ptr=cfg["use_multimask_token_for_obj_ptr"],
        **(cfg.get("sam_mask_decoder_extra_args") or {}),
    )


def _memory_encoder(cfg: dict) -> MemoryEncoder:
    c = cfg["memory_encoder"]
    down, fuser, pos = c["mask_downsampler"], c["fuser"], c["position_encoding"]
    block = fuser["layer"]
    assert down["embed_dim"] == c["in_dim"] == block["dim"]
    return MemoryEncoder(
        out_dim=c["out_dim"], in_dim=c["in_dim"],
        mask_downsampler_kernel_size=down["kernel_size"], mask_downsampler_stride=down["stride"],
        mask_downsampler_padding=down["padding"],
        mask_downsampler_total_stride=down.get("total_stride", 16),
        fuser_num_layers=fuser["num_layers"], fuser_kernel_size=block["kernel_size"],
        fuser_padding=block["padding"], fuser_layer_scale_init_value=block["layer_scale_init_value"],
        fuser_use_dwconv=block["use_dwconv"], fuser_input_projection=fuser.get("input_projection", False),
        pos_num_feats=pos["num_pos_feats"], pos_temperature=pos["temperature"],
        pos_normalize=pos["normalize"], pos_scale=pos["scale"],
    )


def _memory_attention(cfg: dict) -> MemoryAttention:
    c = cfg["memory_attention"]
    layer, sa, ca = c["layer"], c["layer"]["self_attention"], c["layer"]["cross_attention"]
    assert sa["rope_theta"] == ca["rope_theta"] and list(sa["feat_sizes"]) == list(ca["feat_sizes"])
    return MemoryAttention(
        d_model=c["d_model"], num_layers=c["num_layers"], pos_enc_at_input=c["pos_enc_at_input"],
        dim_feedforward=layer["dim_feedforward"], kv_in_dim=ca["kv_in_dim"],
        activation=layer["activation"], pos_enc_at_attn=layer["pos_enc_at_attn"],
        pos_enc_at_cross_attn_keys=layer["pos_enc_at_cross_attn_keys"],
        pos_enc_at_cross_attn_queries=layer["pos_enc_at_cross_attn_queries"],
        self_attn_num_heads=sa["num_heads"], self_attn_downsample_rate=sa["downsample_rate"],
        cross_attn_num_heads=ca["num_heads"], cross_attn_downsample_rate=ca["downsample_rate"],
        cross_attn_rope_k_repeat=ca.get("rope_k_repeat", False), rope_theta=ca["rope_theta"],
        feat_sizes=tuple(ca["feat_sizes"]),
    )


def _loaded(module: torch.nn.Module, fixture: dict, prefix: str) -> torch.nn.Module:
    load_checked(module, _prefixed(fixture["state_dict"], prefix), f"{fixture['path'].name}:{prefix}")
    return module.eval()


def test_sam2_heads_and_memory_load_every_fixture_key(sam2_fixture):
    cfg = sam2_fixture["config"]
    dim, emb = _hidden_dim(cfg), _embedding_size(cfg)
    prompt = PromptEncoder(dim, emb, cfg["image_size"], OFFICIAL_MASK_IN_CHANS)
    modules = {
        "sam_prompt_encoder.": prompt,
        "sam_mask_decoder.": _decoder(cfg),
        "memory_encoder.": _memory_encoder(cfg),
        "memory_attention.": _memory_attention(cfg),
    }
    for prefix, module in modules.items():
        _loaded(module, sam2_fixture, prefix)  # raises on any missing / unexpected / misshaped key
        fixture_keys = set(_prefixed(sam2_fixture["state_dict"], prefix))
        assert fixture_keys == set(module.state_dict()), prefix


# --- mask decoder -----------------------------------------------------------------------------


def _decoder_inputs(cfg: dict, num_objects: int, grid: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    dim = _hidden_dim(cfg)
    return {
        "image_embeddings": torch.randn(1, dim, grid, grid, generator=g),
        "image_pe": torch.randn(1, dim, grid, grid, generator=g),
        "sparse_prompt_embeddings": torch.randn(num_objects, 3, dim, generator=g),
        "dense_prompt_embeddings": torch.randn(num_objects, dim, grid, grid, generator=g),
        "feat_s0": torch.randn(1, dim, 4 * grid, 4 * grid, generator=g),
        "feat_s1": torch.randn(1, dim, 2 * grid, 2 * grid, generator=g),
    }


def _reference_upscaled_masks(dec: Sam2MaskDecoder, inputs: dict, high_res) -> torch.Tensor:
    """All-token mask logits by the plain NCHW formula (dc1 + s1 -> LN -> GELU -> dc2 + s0 -> GELU)."""
    b = inputs["sparse_prompt_embeddings"].shape[0]
    out_tokens, s = dec._output_tokens()
    tokens = torch.cat([out_tokens[None].expand(b, -1, -1), inputs["sparse_prompt_embeddings"]], dim=1)
    src = inputs["image_embeddings"].repeat(b, 1, 1, 1) + inputs["dense_prompt_embeddings"]
    hs, keys = dec.transformer(src, inputs["image_pe"].repeat(b, 1, 1, 1), tokens)
    _, c, h, w = src.shape
    x = keys.transpose(1, 2).reshape(b, c, h, w)
    dc1, ln1, act1, dc2, act2 = dec.output_upscaling
    x = act2(dc2(act1(ln1(dc1(x) + high_res[1]))) + high_res[0])
    hyper = torch.stack([mlp(hs[:, s + 1 + i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], 1)
    return (hyper @ x.flatten(2)).view(b, -1, x.shape[-2], x.shape[-1])


def test_sam2_decoder_matches_plain_formula_and_official_selection(sam2_fixture):
    cfg = sam2_fixture["config"]
    dec = _loaded(_decoder(cfg), sam2_fixture, "sam_mask_decoder.")
    inputs = _decoder_inputs(cfg, num_objects=2, grid=8)
    with torch.no_grad():
        high_res = dec.project_high_res_features(inputs["feat_s0"], inputs["feat_s1"])
        expected = _reference_upscaled_masks(dec, inputs, high_res)
        args = {k: inputs[k] for k in ("image_embeddings", "image_pe", "sparse_prompt_embeddings",
                                       "dense_prompt_embeddings")}
        multi = dec(**args, multimask_output=True, repeat_image=True, high_res_features=high_res)
        # one image per object instead of a shared one: same numbers
        per_object = dict(args, image_embeddings=args["image_embeddings"].expand(2, -1, -1, -1))
        multi_b = dec(**per_object, multimask_output=True, repeat_image=False,
                      high_res_features=[f.expand(2, -1, -1, -1) for f in high_res])
    k = dec.num_multimask_outputs
    assert multi.masks.shape == (2, k, 32, 32) and multi.iou_predictions.shape == (2, k)
    torch.testing.assert_close(multi.masks, expected[:, 1:], atol=ATOL, rtol=0)
    torch.testing.assert_close(multi_b.masks, multi.masks, atol=ATOL, rtol=0)
    expected_tokens = k if dec.use_multimask_token_for_obj_ptr else 1
    assert multi.sam_tokens_out.shape == (2, expected_tokens, _hidden_dim(cfg))
    assert multi.object_score_logits.shape == (2, 1)
    if cfg["iou_prediction_use_sigmoid"]:
        assert bool(((multi.iou_predictions >= 0) & (multi.iou_predictions <= 1)).all())

    dec.dynamic_multimask_via_stability = False
    with torch.no_grad():
        single = dec(**args, multimask_output=False, repeat_image=True, high_res_features=high_res)
    torch.testing.assert_close(single.masks, expected[:, :1], atol=ATOL, rtol=0)
    assert single.sam_tokens_out.shape == (2, 1, _hidden_dim(cfg))
    torch.testing.assert_close(single.object_score_logits, multi.object_score_logits)


def test_sam2_decoder_dynamic_fallback_picks_best_multimask_when_unstable(sam2_fixture):
    cfg = sam2_fixture["config"]
    dec = _loaded(_decoder(cfg), sam2_fixture, "sam_mask_decoder.")
    dec.dynamic_multimask_via_stability = True
    inputs = _decoder_inputs(cfg, num_objects=2, grid=8, seed=1)
    args = {k: inputs[k] for k in ("image_embeddings", "image_pe", "sparse_prompt_embeddings",
                                   "dense_prompt_embeddings")}
    with torch.no_grad():
        high_res = dec.project_high_res_features(inputs["feat_s0"], inputs["feat_s1"])
        all_masks = _reference_upscaled_masks(dec, inputs, high_res)
        multi = dec(**args, multimask_output=True, repeat_image=True, high_res_features=high_res)
    delta = dec.dynamic_multimask_stability_delta
    # a threshold between the two objects' stability scores: one keeps token 0, one falls back
    scores = stability_scores(all_masks[:, 0], delta)
    assert scores[0] != scores[1], "constructed case needs two different stability scores"
    stable_obj = int(scores.argmax())
    dec.dynamic_multimask_stability_thresh = float(scores.mean())
    with torch.no_grad():
        out = dec(**args, multimask_output=False, repeat_image=True, high_res_features=high_res)
    unstable_obj = 1 - stable_obj
    best = int(multi.iou_predictions[unstable_obj].argmax())
    torch.testing.assert_close(out.masks[stable_obj, 0], all_masks[stable_obj, 0], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.masks[unstable_obj, 0], multi.masks[unstable_obj, best], atol=ATOL, rtol=0)
    assert out.iou_predictions[unstable_obj, 0] == multi.iou_predictions[unstable_obj, best]
    # the object-pointer token stays the single-mask token even after a fallback
    assert out.sam_tokens_out.shape[1] == 1

    dec.train()  # the fallback is an eval-time behaviour
    with torch.no_grad():
        trained = dec(**args, multimask_output=False, repeat_image=True, high_res_features=high_res)
    torch.testing.assert_close(trained.masks, all_masks[:, :1], atol=ATOL, rtol=0)


def test_sam2_single_mask_fallback_on_constructed_logits():
    delta, thresh = 0.05, 0.98
    masks = torch.zeros(3, 4, 4, 4)
    masks[0, 0] = 5.0                      # token 0 stable (score 1) -> kept
    masks[1, 0, :2] = 0.01                 # token 0 half inside (-delta, delta] -> score 0.5
    masks[1, 0, 2:] = 3.0
    masks[2, 0] = -3.0                     # empty union -> score 1 -> kept
    for b in range(3):
        for t in range(1, 4):
            masks[b, t] = float(10 * b + t)
    iou = torch.tensor([[0.1, 0.9, 0.2, 0.3], [0.9, 0.1, 0.7, 0.7], [0.5, 0.1, 0.2, 0.3]])
    torch.testing.assert_close(stability_scores(masks[:, 0], delta), torch.tensor([1.0, 0.5, 1.0]))
    out_masks, out_iou = select_single_mask_with_fallback(masks, iou, delta, thresh)
    assert out_masks.shape == (3, 1, 4, 4) and out_iou.shape == (3, 1)
    assert torch.equal(out_masks[0, 0], masks[0, 0]) and out_iou[0, 0] == 0.1
    assert torch.equal(out_masks[1, 0], masks[1, 2]) and out_iou[1, 0] == iou[1, 2]  # first best on ties
    assert torch.equal(out_masks[2, 0], masks[2, 0]) and out_iou[2, 0] == 0.5


def test_sam2_decoder_without_object_scores_reports_present_objects():
    dec = Sam2MaskDecoder(transformer_dim=16, transformer_num_heads=2, transformer_mlp_dim=32,
                          iou_head_hidden_dim=16).eval()
    assert not any(k.startswith(("obj_score_token", "pred_obj_score_head", "conv_s"))
                   for k in dec.state_dict())
    b, grid = 3, 4
    with torch.no_grad():
        out = dec(torch.randn(1, 16, grid, grid), torch.randn(1, 16, grid, grid), torch.randn(b, 2, 16),
                  torch.randn(b, 16, grid, grid), multimask_output=False, repeat_image=True)
    assert out.masks.shape == (b, 1, 4 * grid, 4 * grid)
    assert torch.equal(out.object_score_logits, torch.full((b, 1), 10.0))


# --- memory encoder ---------------------------------------------------------------------------


def test_sam2_memory_encoder_shapes_and_shared_frame(sam2_fixture):
    cfg = sam2_fixture["config"]
    enc = _loaded(_memory_encoder(cfg), sam2_fixture, "memory_encoder.")
    c = cfg["memory_encoder"]
    stride = c["mask_downsampler"].get("total_stride", 16)
    b, grid = 2, 4
    g = torch.Generator().manual_seed(0)
    pix = torch.randn(1, c["in_dim"], grid, grid, generator=g)
    masks = 8 * torch.randn(b, 1, stride * grid, stride * grid, generator=g)
    with torch.no_grad():
        feats, pos = enc(pix, masks)
        feats_b, _ = enc(pix.expand(b, -1, -1, -1), masks)
        feats_skip, _ = enc(pix, torch.sigmoid(masks), skip_mask_sigmoid=True)
    assert feats.shape == (b, c["out_dim"], grid, grid)
    assert len(pos) == 1 and pos[0].shape == (b, c["position_encoding"]["num_pos_feats"], grid, grid)
    torch.testing.assert_close(feats, feats_b, atol=ATOL, rtol=0)
    torch.testing.assert_close(feats, feats_skip, atol=ATOL, rtol=0)
    assert not torch.equal(feats[0], feats[1])


def test_memory_encoder_position_encoding_formula():
    h, w, feats, temp = 3, 5, 8, 100.0
    enc = MemoryEncoder(out_dim=feats, in_dim=16, fuser_num_layers=1, pos_temperature=temp)
    with torch.no_grad():
        _, (pe,) = enc(torch.randn(2, 16, h, w), torch.randn(2, 1, 16 * h, 16 * w))
    assert pe.shape == (2, feats, h, w)
    pe = pe[1]
    half = feats // 2
    expected = torch.empty(feats, h, w)
    for i in range(h):
        for j in range(w):
            y = (i + 1) / (h + 1e-6) * 2 * math.pi
            x = (j + 1) / (w + 1e-6) * 2 * math.pi
            for c in range(half):
                t = temp ** (2 * (c // 2) / half)
                f = math.sin if c % 2 == 0 else math.cos
                expected[c, i, j] = f(y / t)
                expected[half + c, i, j] = f(x / t)
    torch.testing.assert_close(pe, expected, atol=1e-6, rtol=0)


# --- RoPE and memory attention ----------------------------------------------------------------


def _complex_rope_reference(x: torch.Tensor, end_x: int, end_y: int, theta: float) -> torch.Tensor:
    """Straightforward complex-number axial RoPE of ``... x (end_x end_y) x D``."""
    dim = x.shape[-1]
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].double() / dim))
    pos = torch.arange(end_x * end_y)
    xs, ys = (pos % end_x).double(), (pos // end_x).double()
    angles = torch.cat([xs[:, None] * freqs, ys[:, None] * freqs], dim=-1)  # N x D/2
    cis = torch.polar(torch.ones_like(angles), angles)
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(xc * cis).flatten(-2).to(x.dtype)


@pytest.mark.parametrize("dim, end_x, end_y", [(8, 4, 4), (16, 5, 3), (64, 8, 8)])
def test_real_rope_equals_complex_reference(dim, end_x, end_y):
    theta = 10000.0
    x = 3 * torch.randn(2, 3, end_x * end_y, dim, generator=torch.Generator().manual_seed(dim))
    cos, sin = compute_axial_rope(dim, end_x, end_y, theta)
    assert cos.shape == (end_x * end_y, dim // 2)
    torch.testing.assert_close(apply_rope(x, cos, sin), _complex_rope_reference(x, end_x, end_y, theta),
                               atol=1e-5, rtol=0)


def test_rope_attention_repeats_rope_over_frames_and_skips_pointer_tokens():
    torch.manual_seed(0)
    side, dim, kv_dim, frames, ptrs = 4, 16, 8, 3, 2
    n = side * side
    attn = RoPEAttention(dim, 2, 1, kv_in_dim=kv_dim, rope_k_repeat=True, feat_sizes=(side, side)).eval()
    q_in, k_in, v_in = torch.randn(2, n, dim), torch.randn(2, frames * n + ptrs, kv_dim), torch.randn(
        2, frames * n + ptrs, kv_dim)
    with torch.no_grad():
        out = attn(q_in, k_in, v_in, num_k_exclude_rope=ptrs)
        # reference: rotate per head, each frame with the same grid positions, pointers untouched
        q = attn.q_proj(q_in).unflatten(-1, (2, -1)).transpose(1, 2)
        k = attn.k_proj(k_in).unflatten(-1, (2, -1)).transpose(1, 2)
        v = attn.v_proj(v_in).unflatten(-1, (2, -1)).transpose(1, 2)
        q = _complex_rope_reference(q, side, side, 10000.0)
        k = torch.cat([_complex_rope_reference(k[:, :, f * n:(f + 1) * n], side, side, 10000.0)
                       for f in range(frames)] + [k[:, :, frames * n:]], dim=2)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        expected = attn.out_proj((weights @ v).transpose(1, 2).flatten(2))
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="whole number"):
        attn(q_in, k_in[:, :-1], v_in[:, :-1], num_k_exclude_rope=ptrs)
    no_repeat = RoPEAttention(dim, 2, feat_sizes=(side, side))
    with pytest.raises(ValueError, match="rope_k_repeat"):
        no_repeat(q_in, torch.randn(2, 2 * n, dim), torch.randn(2, 2 * n, dim))


def test_sam2_memory_attention_padded_batch_equals_objects_alone(sam2_fixture):
    """Objects with different memory lengths batched with a key padding mask give their own results."""
    cfg = sam2_fixture["config"]
    attn = _loaded(_memory_attention(cfg), sam2_fixture, "memory_attention.")
    c = cfg["memory_attention"]
    dim, mem_dim = c["d_model"], c["layer"]["cross_attention"]["kv_in_dim"]
    side = 6  # a small square grid (RoPE falls back to sqrt(N) x sqrt(N) like the official code)
    hw = side * side
    g = torch.Generator().manual_seed(0)
    curr = torch.randn(1, hw, dim, generator=g)  # one frame shared by the objects
    curr_pos = torch.randn(1, hw, dim, generator=g)
    tokens_per_ptr = max(1, dim // mem_dim)
    layouts = [(2, 3), (1, 1), (2, 0)]  # (memory frames, object pointers) per object
    max_frames = max(f for f, _ in layouts)
    max_ptr_tokens = max(p for _, p in layouts) * tokens_per_ptr
    total = max_frames * hw + max_ptr_tokens
    memory = torch.randn(len(layouts), total, mem_dim, generator=g)  # padding holds junk on purpose
    memory_pos = torch.randn(len(layouts), total, mem_dim, generator=g)
    padding = torch.ones(len(layouts), total, dtype=torch.bool)
    alone = []
    with torch.no_grad():
        for i, (frames, ptrs) in enumerate(layouts):
            keep = list(range(frames * hw)) + list(range(max_frames * hw, max_frames * hw
                                                         + ptrs * tokens_per_ptr))
            padding[i, keep] = False
            alone.append(attn(curr, memory[i:i + 1, keep], curr_pos, memory_pos[i:i + 1, keep],
                              num_obj_ptr_tokens=ptrs * tokens_per_ptr))
        batched = attn(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=max_ptr_tokens,
                       memory_key_padding_mask=padding)
        shared_expanded = attn(curr.expand(len(layouts), -1, -1), memory, curr_pos, memory_pos,
                               num_obj_ptr_tokens=max_ptr_tokens, memory_key_padding_mask=padding)
    assert batched.shape == (len(layouts), hw, dim)
    torch.testing.assert_close(batched, torch.cat(alone), atol=ATOL, rtol=0)
    torch.testing.assert_close(shared_expanded, batched, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="only padding"):
        attn(curr, memory, curr_pos, memory_pos, memory_key_padding_mask=torch.ones_like(padding))


def test_sam2_memory_attention_layer_formula(sam2_fixture):
    """One pre-norm layer by hand (pos at the input x0.1, RoPE attentions, ReLU feed-forward)."""
    cfg = sam2_fixture["config"]
    attn = _loaded(_memory_attention(cfg), sam2_fixture, "memory_attention.")
    c = cfg["memory_attention"]
    dim, mem_dim = c["d_model"], c["layer"]["cross_attention"]["kv_in_dim"]
    hw, ptr_tokens = 16, 2
    g = torch.Generator().manual_seed(2)
    curr, curr_pos = torch.randn(2, hw, dim, generator=g), torch.randn(2, hw, dim, generator=g)
    memory = torch.randn(2, 2 * hw + ptr_tokens, mem_dim, generator=g)
    memory_pos = torch.randn(2, 2 * hw + ptr_tokens, mem_dim, generator=g)
    flags = c["layer"]
    with torch.no_grad():
        out = attn(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=ptr_tokens)
        x = curr + 0.1 * curr_pos if c["pos_enc_at_input"] else curr
        act = F.relu if flags["activation"] == "relu" else F.gelu
        for layer in attn.layers:
            t = layer.norm1(x)
            q = t + curr_pos if flags["pos_enc_at_attn"] else t
            x = x + layer.self_attn(q, q, t)
            t = layer.norm2(x)
            q = t + curr_pos if flags["pos_enc_at_cross_attn_queries"] else t
            k = memory + memory_pos if flags["pos_enc_at_cross_attn_keys"] else memory
            x = x + layer.cross_attn_image(q, k, memory, num_k_exclude_rope=ptr_tokens)
            x = x + layer.linear2(act(layer.linear1(layer.norm3(x))))
        expected = attn.norm(x)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
