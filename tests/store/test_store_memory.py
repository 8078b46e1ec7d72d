"""A long stack of real-size features (200 x 4 MiB = 800 MiB) goes through the store with a
64 MiB RAM bound without the process growing by anything like the total."""

from __future__ import annotations

import gc

import numpy as np
import psutil
from store_helpers import FakeEncoder

from napari_focsam.store import EmbeddingStore, StackSource

MiB = 1 << 20


def test_rss_stays_bounded(tmp_path):
    n = 200
    stack = np.zeros((n, 16, 16), np.uint16)
    stack[:, 0, 0] = np.arange(n)
    encoder = FakeEncoder(spec={"image_embeddings": (256, 64, 64)})  # 4 MiB float32 per frame
    store = EmbeddingStore(StackSource(stack, stack_axis=0), encoder, cache_root=tmp_path,
                           ram_bytes=64 * MiB)
    gc.collect()
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    for step in store.compute():
        if step.done % 10 == 0:
            peak = max(peak, process.memory_info().rss)
    for i in range(0, n, 7):  # read back, mostly from disk
        assert store[i]["image_embeddings"].shape == (256, 64, 64)
        peak = max(peak, process.memory_info().rss)
    assert store.encoder_calls == n
    assert store.ram.nbytes <= 64 * MiB and len(store.ram) <= 16
    growth = (peak - before) / MiB
    assert growth < 300, f"RSS grew by {growth:.0f} MiB"
