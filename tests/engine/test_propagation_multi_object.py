"""Multi-object propagation through the memory attention's fast path: objects grouped by memory
layout (nothing padded), the frame's own work shared, values folded; against the plain padded
formulation (``model.memory_attention.fast = False``) to fp32 rounding, and bf16 against fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2_test_models import present_tiny_sam2

from napari_focsam.engine.frame_features import StackFeatures
from napari_focsam.engine.precision import autocast_context
from napari_focsam.engine.propagation import VideoPropagator
from napari_focsam.engine.propagation_state import PropagationOptions

IMAGE_SIZE = 128
HW = (40, 48)
N_FRAMES = 7
LOGIT_ATOL = 1e-3  # logits span tens of units; fp32 reordering moves them by ~1e-5
OPTIONS = PropagationOptions(non_overlap=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return present_tiny_sam2(IMAGE_SIZE)


@pytest.fixture(scope="module")
def features(model):
    h, w = HW
    yy, xx = np.mgrid[:h, :w]
    stack = np.full((N_FRAMES, h, w, 3), 20, np.uint8)
    for t in range(N_FRAMES):
        for cx, cy, r, colour in ((10 + 2 * t, 12, 6, (250, 200, 80)),
                                  (w - 12 - 2 * t, 28, 6, (80, 220, 250)),
                                  (24, 20 + t, 4, (200, 90, 240))):
            stack[t][(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = colour
    return StackFeatures(model, stack)


def _scenario(model, features, fast: bool, dtype=torch.float32) -> list[torch.Tensor]:
    """Three objects; the third starts on frame 2 (mask) so its memory is shorter than the
    others' (two memory layouts in one frame)."""
    before = model.memory_attention.fast
    model.memory_attention.fast = fast
    out = []
    try:
        with torch.no_grad(), autocast_context(torch.device("cpu"), dtype):
            prop = VideoPropagator(model, features, HW, OPTIONS)
            prop.add_points(0, 1, [[10, 12]], [1])
            prop.add_points(0, 2, [[36, 28], [10, 12]], [1, 0])
            out += [r.logits.clone() for r in prop.propagate()]
            mask = np.zeros(HW, bool)
            mask[18:26, 20:28] = True
            prop.add_mask(2, 3, mask, result=False)
            out += [r.logits.clone() for r in prop.propagate(2)]
            prop.add_points(4, 1, [[18, 12]], [1])  # a correction: object 1 gains a cond frame
            out += [r.logits.clone() for r in prop.propagate(2)]
    finally:
        model.memory_attention.fast = before
    return out


def test_objects_are_grouped_by_memory_layout(model, features, monkeypatch):
    seen: list[list[int]] = []
    original = model.memory_attention.forward_groups

    def spy(curr, groups, curr_pos=None):
        seen.append([g[0].shape[0] for g in groups])
        assert all(g[3] is None for g in groups)  # nothing padded
        return original(curr, groups, curr_pos)

    monkeypatch.setattr(model.memory_attention, "forward_groups", spy)
    _scenario(model, features, fast=True)
    assert any(len(sizes) > 1 for sizes in seen)  # several layouts in one frame
    assert any(max(sizes) > 1 for sizes in seen)  # and objects batched within a layout


def test_fast_multi_object_propagation_equals_reference(model, features):
    fast = _scenario(model, features, fast=True)
    ref = _scenario(model, features, fast=False)
    assert len(fast) == len(ref)
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, atol=LOGIT_ATOL, rtol=1e-4)
        assert torch.equal(a > 0, b > 0) or ((a > 0) != (b > 0)).float().mean() < 1e-4


def _one_step_masks(model, features, fast: bool, dtype) -> list[torch.Tensor]:
    """Each tracked frame's step re-run from the same fp32 state (memories of an fp32 pass) with
    the memory attention in `dtype`: its bf16 error, without the drift the random-weight heads
    amplify over a pass (their logits are scaled up 30x: a whole bf16 pass agrees with fp32 on
    about half of the pixels, with either formulation)."""
    before = model.memory_attention.fast
    model.memory_attention.fast = True
    try:
        with torch.no_grad():
            prop = VideoPropagator(model, features, HW, PropagationOptions(non_overlap=False,
                                                                          bounded_memory=False))
            prop.add_points(0, 1, [[10, 12]], [1])
            prop.add_points(0, 2, [[36, 28], [10, 12]], [1, 0])
            mask = np.zeros(HW, bool)
            mask[18:26, 20:28] = True
            prop.add_mask(2, 3, mask, result=False)
            list(prop.propagate(0))
        model.memory_attention.fast = fast
        pix_with_memory = model.pix_with_memory

        def in_dtype(*args):  # only the memory attention in `dtype`; the heads stay fp32
            with autocast_context(torch.device("cpu"), dtype):
                return pix_with_memory(*args).float()

        model.pix_with_memory = in_dtype
        out = []
        with torch.no_grad():
            for frame in range(3, N_FRAMES):
                outs = prop._run_frame(list(prop.tracks.values()), frame, False, False, run_memory=False)
                out.append(torch.cat([o.pred_masks.float() for o in outs]))
    finally:
        model.memory_attention.fast = before
        model.__dict__.pop("pix_with_memory", None)
    return out


def test_bf16_masks_agree_with_fp32(model, features):
    fp32 = _one_step_masks(model, features, True, torch.float32)
    ref32 = _one_step_masks(model, features, False, torch.float32)
    for a, b in zip(fp32, ref32, strict=True):
        torch.testing.assert_close(a, b, atol=LOGIT_ATOL, rtol=1e-4)
    for fast in (True, False):
        bf16 = _one_step_masks(model, features, fast, torch.bfloat16)
        agree = [float(((a > 0) == (b > 0)).float().mean()) for a, b in zip(bf16, fp32, strict=True)]
        assert min(agree) >= 0.999, (fast, agree)


def test_non_overlap_equals_the_argmax_formulation():
    from napari_focsam.engine.propagation_state import apply_non_overlap

    def plain(logits):
        winner = logits.argmax(dim=0, keepdim=True)
        index = torch.arange(logits.shape[0])[:, None, None, None]
        return torch.where(winner == index, logits, logits.clamp(max=-10.0))

    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 7):
        x = torch.randn(n, 1, 33, 41, generator=g) * 20
        x[1, 0, :5, :5] = x[0, 0, :5, :5]  # ties go to the first object
        x[-1, 0, 6:9, :] = x[0, 0, 6:9, :]
        x[:, 0, 10, 10] = -1024.0  # every object absent
        assert torch.equal(apply_non_overlap(x), plain(x))
    one = torch.randn(1, 1, 4, 4)
    assert apply_non_overlap(one) is one
