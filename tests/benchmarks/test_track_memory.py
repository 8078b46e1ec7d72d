"""The "Track all" memory benchmark runs (a few frames; the figures themselves are not tested)."""

from __future__ import annotations

import numpy as np

from napari_focsam.benchmarks.track_memory import (
    LaneStack,
    format_track_memory,
    run_track_memory_benchmark,
)


def test_lane_stack_draws_discs_that_cross_the_field():
    stack = LaneStack(50, (64, 80), lanes=3, radius=5, speed=4)
    assert stack.shape == (50, 64, 80) and stack[0].dtype == np.uint8
    assert len(stack.components(0)) == 3
    np.testing.assert_array_equal(stack[5], stack.frame(5))
    np.testing.assert_array_equal(stack[2:4, 10], np.stack([stack.frame(2), stack.frame(3)])[:, 10])
    # a disc that left on the right comes back on the left
    cols = [np.flatnonzero(stack.frame(t)[10] > 100) for t in range(50)]
    assert any(len(c) == 0 for c in cols) and any(len(c) and c[0] == 0 for c in cols)


def test_memory_benchmark_smoke():
    result = run_track_memory_benchmark(frames=6, image_size=128, model_name="sam2_test_tiny",
                                        lanes=2, sample_every=3, ram_mib=4)
    assert [s["frame"] for s in result["samples"]] == [3, 6]
    assert all(s["objects"] == 2 and s["held_mib"] > 0 for s in result["samples"])
    table = format_track_memory(result)
    assert "sam2_test_tiny" in table and "growth after frame 3" in table
