"""Cancelling inside a forward pass: `engine.cancel.stop_on` stops at the next block, in the
cancelling thread only, and leaves the propagation state and the embedding store valid."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from napari_focsam.engine.cancel import Interrupted, stop_on
from napari_focsam.engine.frame_features import StackFeatures
from napari_focsam.engine.propagation import VideoPropagator
from napari_focsam.engine.propagation_state import PropagationOptions
from napari_focsam.engine.sam_predictor import SamPredictor
from napari_focsam.errors import Cancelled
from napari_focsam.models.sam import SAM_CONFIGS, build_sam
from napari_focsam.models.sam2.config import SAM2_CONFIGS
from napari_focsam.models.sam2.model import build_sam2
from napari_focsam.store import EmbeddingStore, SamEncoder, StackSource


class Blocks(nn.Module):
    def __init__(self, n: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(3, 3) for _ in range(n))
        self.ran: list[int] = []

    def forward(self, x):
        for i, block in enumerate(self.blocks):
            self.ran.append(i)
            x = block(x)
        return x


def test_stops_at_the_next_block_and_removes_its_hooks():
    net, event = Blocks(), threading.Event()
    net.blocks[1].register_forward_hook(lambda *_: event.set())  # cancelled during block 1
    with stop_on(event, net), pytest.raises(Interrupted) as info:
        net(torch.zeros(1, 3))
    assert isinstance(info.value, Cancelled)
    assert net.ran == [0, 1, 2]  # block 2 checked the event before running
    net.ran.clear()
    net(torch.zeros(1, 3))  # hooks are gone
    assert net.ran == [0, 1, 2, 3]
    with stop_on(None, net):  # no event: nothing to check
        net(torch.zeros(1, 3))


def test_other_threads_using_the_model_are_not_stopped():
    net, event = Blocks(), threading.Event()
    event.set()
    done = []
    with stop_on(event, net):
        worker = threading.Thread(target=lambda: done.append(net(torch.zeros(1, 3))))
        worker.start()
        worker.join()
        with pytest.raises(Interrupted):
            net(torch.zeros(1, 3))
    assert len(done) == 1


def test_an_interrupted_embedding_batch_is_not_cached(tmp_path):
    torch.manual_seed(0)
    sam = build_sam(SAM_CONFIGS["sam_test_tiny"]).eval()
    encoder = SamEncoder(SamPredictor(sam, device="cpu", encoder_dtype="fp32"))
    stack = np.random.default_rng(0).integers(0, 255, (3, 24, 32)).astype(np.uint8)
    store = EmbeddingStore(StackSource(stack, stack_axis=0), encoder, cache_root=tmp_path)
    event = threading.Event()
    calls = []

    def cancel_in_frame_1(*_):
        calls.append(1)
        if len(calls) == 2:  # the second frame's first block
            event.set()

    hook = sam.image_encoder.blocks[0].register_forward_hook(cancel_in_frame_1)
    done = [p.frame for p in store.compute(cancel_event=event)]
    hook.remove()
    assert done == [0] and store.missing() == [1, 2]
    fresh = EmbeddingStore(StackSource(stack, stack_axis=0), encoder, cache_root=tmp_path)
    assert [p.from_cache for p in fresh.compute()] == [True, False, False]


def test_an_interrupted_propagation_frame_leaves_a_valid_state():
    torch.manual_seed(0)
    model = build_sam2(SAM2_CONFIGS["sam2_test_tiny"].replace(image_size=128)).eval()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 32, 40, 3)).astype(np.uint8)
    features = StackFeatures(model, frames)
    options = PropagationOptions(non_overlap=False)

    def prompted() -> VideoPropagator:
        prop = VideoPropagator(model, features, (32, 40), options)
        prop.add_points(0, 1, np.array([[20.0, 16.0]]), np.array([1]))
        return prop

    reference = [r.logits.clone() for r in prompted().propagate()]
    prop, event = prompted(), threading.Event()
    layers = model.memory_attention.layers
    hook = layers[0].register_forward_hook(lambda *_: event.set() if len(seen) == 3 else None)
    seen = []
    with stop_on(event, model), pytest.raises(Interrupted):
        for result in prop.propagate():
            seen.append(result.frame)
    hook.remove()
    assert seen == [0, 1, 2]  # frame 3 was stopped inside memory attention
    again = [r.logits for r in prop.propagate()]
    for got, ref in zip(again, reference, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
