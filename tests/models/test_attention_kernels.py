"""The encoders' attention ops in the kernel registry (``attention_bias``,
``attention_rel_pos``, ``attention_zero_key``): every candidate against the plain formulation,
forced choices, measuring once per key with a cache hit after it, the default rule for small
calls, and the cached cast weights of `common.Linear` under bf16 autocast."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from napari_focsam.models import common, cpu, kernels
from napari_focsam.models.kernels import ENV_KERNELS, KernelRegistry
from napari_focsam.models.sam import SAM_CONFIGS, build_sam
from napari_focsam.models.sam.image_encoder import ImageEncoderViT

OPS = {
    "attention_bias": ("sdpa", "blocked"),
    "attention_rel_pos": ("sdpa", "blocked", "augmented"),
    "attention_zero_key": ("flash_lse", "padded", "blocked"),
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(ENV_KERNELS, raising=False)


def _qkv(b=2, h=3, nq=40, nk=48, d=16, dv=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, nq, d, generator=g) * 2
    k = torch.randn(b, h, nk, d, generator=g) * 2
    v = torch.randn(b, h, nk, dv, generator=g)
    return q, k, v


def _inputs(op: str, seed: int = 0) -> tuple:
    """Arguments of `op`: 40 queries (3 blocks of 16, the last short), 48 keys (a 6 x 8 grid)."""
    q, k, v = _qkv(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    if op == "attention_bias":
        return q, k, v, torch.randn(3, 40, 48, generator=g) * 3  # shared by the batch
    if op == "attention_rel_pos":
        return q, k, v, torch.randn(2, 3, 40, 6, generator=g) * 3, torch.randn(2, 3, 40, 8, generator=g)
    return q, k, v


def _plain(op: str, *args: torch.Tensor) -> torch.Tensor:
    """The op's definition in fp64."""
    q, k, v = (t.double() for t in args[:3])
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if op == "attention_bias":
        scores = scores + args[3].double()
    elif op == "attention_rel_pos":
        rel_h, rel_w = args[3].double(), args[4].double()
        scores = scores + (rel_h[..., :, None] + rel_w[..., None, :]).flatten(-2)
    elif op == "attention_zero_key":  # the appended zero key: logit 0, value 0
        scores = torch.cat([scores, scores.new_zeros(*scores.shape[:-1], 1)], dim=-1)
        v = torch.cat([v, v.new_zeros(*v.shape[:-2], 1, v.shape[-1])], dim=-2)
    return torch.softmax(scores, -1) @ v


def _small_blocks(monkeypatch) -> None:
    """Blocks of 16 query rows; rel-pos bias chunks of 7 query rows (2 x 3 x 7 x 48 elements)."""
    monkeypatch.setattr(common, "ATTENTION_QUERY_BLOCK", 16)
    monkeypatch.setattr(common, "REL_POS_SDPA_CHUNK_BYTES", 2 * 3 * 48 * 4 * 7)
    monkeypatch.setattr(common, "REL_POS_BMM_CHUNK_BYTES", 2 * 3 * 48 * 4 * 7)


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize(("op", "name"), [(op, n) for op, names in OPS.items() for n in names])
def test_each_candidate_equals_the_plain_formulation(monkeypatch, op, name):
    _small_blocks(monkeypatch)
    args = _inputs(op)
    ref = _plain(op, *args)
    candidate = kernels.REGISTRY.ops[op].candidates[name]
    torch.testing.assert_close(candidate(*args).double(), ref, rtol=1e-5, atol=1e-5)
    public = {"attention_bias": common.attend_bias, "attention_rel_pos": common.attend_rel_pos,
              "attention_zero_key": common.attend_zero_key}[op]
    with kernels.force(op, name):
        torch.testing.assert_close(public(*args).double(), ref, rtol=1e-5, atol=1e-5)
    low = tuple(t.bfloat16() for t in args)
    out = candidate(*low)
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    assert _relative_error(out, _plain(op, *low)) < 2e-2  # bf16: 8 significant bits


@pytest.mark.parametrize("name", ["sdpa", "blocked"])
def test_attention_bias_with_a_bias_per_batch_entry(name):
    q, k, v, _ = _inputs("attention_bias")
    bias = torch.randn(2, 3, 40, 48)
    out = kernels.REGISTRY.ops["attention_bias"].candidates[name](q, k, v, bias)
    torch.testing.assert_close(out.double(), _plain("attention_bias", q, k, v, bias),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", OPS["attention_zero_key"])
def test_zero_key_kernels_pass_gradients(name):
    q, k, v = (t.requires_grad_(True) for t in _qkv(nq=12, nk=20))
    with kernels.force("attention_zero_key", name):
        common.attend_zero_key(q, k, v).square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    ref = _plain("attention_zero_key", q, k, v)
    ref.square().sum().backward()
    for got, t in zip(grads, (q, k, v), strict=True):
        torch.testing.assert_close(got, t.grad, rtol=1e-4, atol=1e-5)


def test_the_augmented_rel_pos_kernel_needs_no_bias_buffer():
    """Its logits are dot products with one-hot key codes: the bias terms, exactly."""
    codes = common.rel_pos_key_codes(2, 3, torch.float32, torch.device("cpu"))
    assert codes.tolist() == [[1, 0, 1, 0, 0], [1, 0, 0, 1, 0], [1, 0, 0, 0, 1],
                              [0, 1, 1, 0, 0], [0, 1, 0, 1, 0], [0, 1, 0, 0, 1]]
    rel_h, rel_w = torch.randn(4, 2), torch.randn(4, 3)
    logits = torch.cat([rel_h, rel_w], -1) @ codes.T
    assert torch.equal(logits, (rel_h[:, :, None] + rel_w[:, None, :]).flatten(1))


# ----------------------------------------------------------------------------- the registry
@pytest.fixture
def registry(tmp_path):
    """A registry measuring every call (no FLOP threshold), caching in `tmp_path`, with the
    encoders' attention ops and spies counting each candidate's calls."""
    reg = KernelRegistry(cache_path=tmp_path / "kernels.json", min_flops=0, repeats=1)
    reg.calls = {}
    for name in OPS:
        op = kernels.REGISTRY.ops[name]

        def spy(cand, fn, op_name=name):
            def run(*args):
                reg.calls[op_name, cand] = reg.calls.get((op_name, cand), 0) + 1
                return fn(*args)
            return run

        reg.register(kernels.KernelOp(name, {c: spy(c, f) for c, f in op.candidates.items()},
                                      op.default, op.key, op.probe))
    return reg


@pytest.mark.parametrize("op", list(OPS))
def test_a_forced_choice_is_used(registry, op):
    args = _inputs(op)
    for name in OPS[op]:
        with registry.force(op, name), torch.no_grad():
            out = registry.run(op, *args)
        assert registry.calls == {(op, name): 1}
        registry.calls.clear()
        torch.testing.assert_close(out.double(), _plain(op, *args), rtol=1e-5, atol=1e-5)
    assert registry.measurements == 0


@pytest.mark.parametrize("op", list(OPS))
def test_measured_once_per_key_then_a_cache_hit(registry, tmp_path, op):
    args = _inputs(op)
    with torch.no_grad():
        out = registry.run(op, *args)
    assert registry.measurements == 1
    assert all(registry.calls.get((op, n), 0) >= 2 for n in OPS[op])  # warm-up + timed
    torch.testing.assert_close(out.double(), _plain(op, *args), rtol=1e-5, atol=1e-5)
    [(fingerprint, entries)] = registry.choices().items()
    [(key, entry)] = entries.items()
    assert key.startswith(f"{op}|cpu|float32|bh8.nq64.nk64.d16.dv16")
    assert set(entry["seconds"]) == set(OPS[op])
    chosen = entry["choice"]
    registry.calls.clear()
    with torch.no_grad():
        registry.run(op, *_inputs(op, seed=5))  # same key: remembered
    assert registry.measurements == 1 and registry.calls == {(op, chosen): 1}
    assert json.loads((tmp_path / "kernels.json").read_text())["machines"][fingerprint][key][
        "choice"] == chosen
    fresh = KernelRegistry(cache_path=tmp_path / "kernels.json", min_flops=0)  # "a new process"
    fresh.register(registry.ops[op])
    registry.calls.clear()
    with torch.no_grad():
        fresh.run(op, *args)
    assert fresh.measurements == 0 and registry.calls == {(op, chosen): 1}


def test_the_ops_keys_are_distinct(registry):
    q, k, v = _qkv(nq=48)
    with torch.no_grad():
        registry.run("attention_bias", q, k, v, torch.zeros(3, 48, 48))
        registry.run("attention_zero_key", q, k, v)
        registry.run("attention_rel_pos", q, k, v, torch.zeros(2, 3, 48, 6), torch.zeros(2, 3, 48, 8))
        registry.run("attention_rel_pos", q, k, v, torch.zeros(2, 3, 48, 8), torch.zeros(2, 3, 48, 6))
    keys = next(iter(registry.choices().values()))
    assert registry.measurements == 4 and len(keys) == 4
    assert {key.split("|")[-1] for key in keys} == {"bias", "zerokey", "relpos"}


def test_a_corrupt_cache_is_ignored_and_rewritten_for_the_new_ops(registry, tmp_path):
    path = tmp_path / "kernels.json"
    path.write_text(json.dumps({"version": kernels.CACHE_VERSION, "machines": [1, 2]}))
    with torch.no_grad():
        registry.run("attention_rel_pos", *_inputs("attention_rel_pos"))
        registry.run("attention_bias", *_inputs("attention_bias"))
    data = json.loads(path.read_text())
    assert data["version"] == kernels.CACHE_VERSION
    assert {key.split("|")[0] for key in next(iter(data["machines"].values()))} == {
        "attention_rel_pos", "attention_bias"}


def test_the_probes_keep_every_batch_entry_head_and_key_and_a_query_block():
    """Fewer query rows only (at least one block of `ATTENTION_QUERY_BLOCK` and 128 per
    thread): the working set per query row (scores and bias rows of every batch entry and head
    over every key) stays that of the whole call. The screens are small parts."""
    rows = max(common.ATTENTION_QUERY_BLOCK, 128 * torch.get_num_threads())
    q = k = v = torch.zeros(2, 12, 4096, 64)
    rel_h, rel_w = torch.zeros(2, 12, 4096, 64), torch.zeros(2, 12, 4096, 64)
    op = kernels.REGISTRY.ops["attention_rel_pos"]
    pq, pk, pv, ph, pw = op.probe((q, k, v, rel_h, rel_w), 5e8)
    assert pq.shape == ph.shape == pw.shape == (2, 12, rows, 64)
    assert pk.shape == pv.shape == (2, 12, 4096, 64)
    sq, sk, _, sh, _ = op.screen((q, k, v, rel_h, rel_w), 5e8)
    assert sk.shape[2] == 4096 and sh.shape[:3] == sq.shape[:3]  # the key grid stays whole
    assert 2 * sq.shape[0] * sq.shape[1] * sq.shape[2] * 4096 * 128 < 4 * 5e8

    op = kernels.REGISTRY.ops["attention_bias"]
    pq, pk, pv, pb = op.probe((q, k, v, torch.zeros(12, 4096, 4096)), 5e8)
    assert pq.shape == (2, 12, rows, 64) and pb.shape == (2, 12, rows, 4096)
    assert pk.shape == (2, 12, 4096, 64)
    sq, sk, _, sb = op.screen((q, k, v, torch.zeros(12, 4096, 4096)), 5e8)
    assert sb.shape == (*sq.shape[:3], sk.shape[2])

    windows = torch.zeros(100, 8, 256, 32)  # fewer rows than a block: the whole call
    args = (windows,) * 3
    op = kernels.REGISTRY.ops["attention_zero_key"]
    assert op.probe(args, 5e8) is args
    sq, sk, sv = op.screen(args, 5e8)
    screen_rows = min(256, 128 * torch.get_num_threads())
    screen_windows = math.ceil(5e8 / (8 * screen_rows * 256 * 128))  # about 5e8 FLOPs
    assert sq.shape == (screen_windows, 8, screen_rows, 32)
    assert sk.shape == sv.shape == (screen_windows, 8, 256, 32)  # every key of a window


# ----------------------------------------------------------------------------- the encoders
def _spy_process_registry(monkeypatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for name in OPS:
        op = kernels.REGISTRY.ops[name]
        spies = {c: (lambda *a, _o=name, _c=c, _f=f: seen.append((_o, _c)) or _f(*a))
                 for c, f in op.candidates.items()}
        monkeypatch.setitem(kernels.REGISTRY.ops, name,
                            kernels.KernelOp(name, spies, op.default, op.key, op.probe))
    return seen


def _small_vit() -> nn.Module:
    """SAM's tiny test ViT at 256 px: a 16 x 16 grid, windows of 14 and one global block."""
    return ImageEncoderViT(dataclasses.replace(SAM_CONFIGS["sam_test_tiny"].encoder, image_size=256))


@pytest.mark.parametrize("native", [True, False])
def test_small_encoders_take_the_default_rules_unmeasured(monkeypatch, native):
    monkeypatch.setattr(cpu, "cpu_native_bf16", lambda: native)
    seen = _spy_process_registry(monkeypatch)
    before = kernels.REGISTRY.measurements
    torch.manual_seed(0)
    vit = _small_vit()
    tinyvit = build_sam(SAM_CONFIGS["sam_test_tinyvit"]).image_encoder
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        vit(x)
        tinyvit(x)
    assert set(seen) == {("attention_rel_pos", "sdpa"), ("attention_bias", "sdpa")}
    seen.clear()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        vit(x)
        tinyvit(x)
    # bf16: the ViT's GEMM kernel only where the CPU has native bf16 GEMMs; TinyViT's SDPA
    rel_pos = "blocked" if native else "sdpa"
    assert set(seen) == {("attention_rel_pos", rel_pos), ("attention_bias", "sdpa")}
    assert kernels.REGISTRY.measurements == before


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rel_pos_and_plain_attention_share_the_default_rule(monkeypatch, native, dtype):
    """``"blocked"`` only for bf16 on a CPU with native bf16 GEMMs (emulated, they are 30-100x
    slower than SDPA), for both ops."""
    monkeypatch.setattr(cpu, "cpu_native_bf16", lambda: native)
    q, k, v = (t.to(dtype) for t in _qkv())
    rel_h, rel_w = torch.zeros(2, 3, 40, 6, dtype=dtype), torch.zeros(2, 3, 40, 8, dtype=dtype)
    expected = "blocked" if native and dtype == torch.bfloat16 else "sdpa"
    assert kernels.REGISTRY.ops["attention"].default(q, k, v, None) == expected
    assert kernels.REGISTRY.ops["attention_rel_pos"].default(q, k, v, rel_h, rel_w) == expected
    assert kernels.REGISTRY.choose("attention_rel_pos", q, k, v, rel_h, rel_w) == expected


@pytest.mark.parametrize("name", OPS["attention_rel_pos"])
def test_the_vit_encoder_with_each_rel_pos_kernel(name):
    torch.manual_seed(0)
    vit = _small_vit()
    for name_, p in vit.named_parameters():
        if "rel_pos" in name_:  # zero when built
            p.data.normal_(0, 0.5)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        with kernels.force("attention_rel_pos", "sdpa"):
            ref = vit(x)
        with kernels.force("attention_rel_pos", name):
            out = vit(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = vit(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert low.dtype == torch.bfloat16 and _relative_error(low, ref.double()) < 4 * 2.0 ** -8


@pytest.mark.parametrize("name", OPS["attention_bias"])
def test_the_tinyvit_encoder_with_each_bias_kernel(name):
    torch.manual_seed(0)
    tinyvit = build_sam(SAM_CONFIGS["sam_test_tinyvit"]).image_encoder
    for module in tinyvit.modules():
        if hasattr(module, "attention_biases"):
            module.attention_biases.data.normal_()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        with kernels.force("attention_bias", "sdpa"):
            ref = tinyvit(x)
        with kernels.force("attention_bias", name):
            out = tinyvit(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- cast weights
def test_linear_casts_its_weights_once_under_autocast():
    torch.manual_seed(0)
    layer = common.Linear(16, 8)
    plain = nn.Linear(16, 8)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(5, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), plain(x), rtol=0, atol=0)  # fp32: nn.Linear
        assert "_derived_cache" not in layer.__dict__
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
            first = layer.cast_parameters(torch.bfloat16)
            again = layer(x)
            expected = plain(x)
        assert out.dtype == torch.bfloat16 and torch.equal(out, expected) and torch.equal(again, out)
        assert first[0].dtype == torch.bfloat16 and layer.cast_parameters(torch.bfloat16)[0] is first[0]
        layer.weight.mul_(2)  # changed in place: cast again
        plain.weight.mul_(2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(layer(x), plain(x))
        assert layer.cast_parameters(torch.bfloat16)[0] is not first[0]


def test_linear_under_autocast_with_gradients_is_autocast():
    torch.manual_seed(0)
    layer = common.Linear(16, 8)
    x = torch.randn(5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x).float().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.dtype == torch.float32
    assert "_derived_cache" not in layer.__dict__  # nothing cached while autograd records


def test_encoders_with_cast_weights_equal_autocast_exactly():
    """The bf16 encoders with weights cast once give the very outputs of ``nn.Linear`` under
    autocast (the same bf16 weights, the same GEMMs), call after call."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 256, 256)
    for encoder in (_small_vit(), build_sam(SAM_CONFIGS["sam_test_tinyvit"]).image_encoder):
        plain = copy.deepcopy(encoder)
        swapped = 0
        for module in plain.modules():
            if type(module) is common.Linear:
                module.__class__ = nn.Linear
                swapped += 1
        assert swapped >= 4
        with torch.no_grad():
            for _ in range(2):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out, ref = encoder(x), plain(x)
                assert out.dtype == torch.bfloat16 and torch.equal(out, ref)
        cached = [m for m in encoder.modules() if type(m) is common.Linear
                  and "_derived_cache" in m.__dict__]
        assert len(cached) == swapped  # every Linear holds its bf16 copies


def test_bf16_encoder_masks_agree_with_fp32_pixelwise(sam1_fixture, tmp_path):
    """Masks from the bf16 encoder (weights cast once, measured attention kernels) against
    fp32, pixel by pixel at the original size: >= 99.9 % equal wherever the fp32 logit is
    clear of bf16 rounding.

    bf16 keeps 8 significant bits: the encoder's output carries a relative error of about
    ``2**-8`` (0.57 % here), which the fp32 decoder passes on to the logits in proportion to
    their scale (error rms ~ ``2**-8 * rms(logits)``, largest ~ ``2**-4.5 * rms``). A pixel
    can only flip where its logit is smaller than that error. The dev fixture is a tiny
    random-weight model whose logits are mostly near 0 (rms 0.06-0.18, half of them below
    0.05): there 0.03-0.15 % of all pixels flip, with every kernel of this package and with
    the code before the kernels were measured alike (worst mask 99.85 %), while trained
    checkpoints agree better (SAM 2 bench: 99.94-99.98 %). So the 99.9 % target is checked on
    the pixels whose fp32 logit exceeds ``2**-4 * rms`` (16 bf16 steps at the logits' scale:
    about 95 % of them), and all pixels must agree to 99.8 %.
    """
    from napari_focsam.models.sam import SamConfig, load_sam

    path = tmp_path / "official_layout.pth"
    torch.save(sam1_fixture["state_dict"], path)
    model = load_sam(path, SamConfig.from_official_kwargs(sam1_fixture["config"], name="fixture"))
    x = model.preprocess(sam1_fixture["image_resized"][None].float())
    hw, orig = tuple(sam1_fixture["image_hw"]), tuple(sam1_fixture["orig_hw"])
    with torch.no_grad():
        emb32 = model.image_encoder(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            emb16 = model.image_encoder(x)
    assert emb16.dtype == torch.bfloat16
    for case in sam1_fixture["cases"]:
        points = case["points"]
        prompts = {"point_coords": None if points is None else points[0],
                   "point_labels": None if points is None else points[1],
                   "boxes": case["boxes"], "mask_input": case["mask_input"],
                   "multimask": case["multimask"]}
        with torch.no_grad():
            l32, l16 = (model.postprocess_masks(model.decode(e.float(), **prompts).low_res_logits,
                                                hw, orig) for e in (emb32, emb16))
        equal = (l32 > 0) == (l16 > 0)  # B x masks x H x W
        clear = l32.abs() > 2.0 ** -4 * l32.square().mean(dim=(-1, -2), keepdim=True).sqrt()
        compared = clear.float().mean(dim=(-1, -2))
        agree_clear = (equal & clear).sum(dim=(-1, -2)) / clear.sum(dim=(-1, -2))
        agree_all = equal.float().mean(dim=(-1, -2))
        assert bool((compared >= 0.9).all()), f"{case['name']}: compared {compared.tolist()}"
        assert bool((agree_clear >= 0.999).all()), f"{case['name']}: {agree_clear.tolist()}"
        assert bool((agree_all >= 0.998).all()), f"{case['name']}: {agree_all.tolist()}"


def test_tinyvit_bias_table_follows_its_parameters():
    attn = build_sam(SAM_CONFIGS["sam_test_tinyvit"]).image_encoder.layers[1].blocks[0].attn
    with torch.no_grad():
        first = attn.bias_table(torch.float32)
        assert attn.bias_table(torch.float32) is first  # cached
        attn.attention_biases.normal_()  # e.g. load_state_dict: an in-place copy
        table = attn.bias_table(torch.float32)
    assert table is not first
    assert torch.equal(table, attn.attention_biases[:, attn.attention_bias_idxs])


def test_linear_cast_cache_can_be_switched_off_and_dropped(monkeypatch):
    layer = common.Linear(16, 8)
    x = torch.randn(5, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cached = layer(x)
        assert "_derived_cache" in layer.__dict__
        common.drop_derived(layer)
        assert "_derived_cache" not in layer.__dict__
        monkeypatch.setattr(common.Linear, "cache_casts", False)
        again = layer(x)
    assert "_derived_cache" not in layer.__dict__ and torch.equal(again, cached)
