"""Region reads of `StackSource` and the tiles of a stack as embedding-store items
(`store.tiles`): lazy per-tile encoding, compute with progress and cancel, cache keys."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from store_helpers import FakeEncoder, RecordingArray, make_stack

from napari_focsam.engine.tiling import Tiling
from napari_focsam.store import EmbeddingStore, StackSource, TileSource, tiled_content_hash

REGIONS = [((0, 24), (0, 32)), ((3, 17), (5, 30)), ((23, 24), (0, 1))]


@pytest.mark.parametrize("rows, cols", REGIONS)
def test_region_reads_equal_slices_of_the_whole_frame(rows, cols):
    rng = np.random.default_rng(1)
    cases = [
        (make_stack(4), {"stack_axis": 0}),  # uint16: the stack's contrast limits apply
        (rng.random((4, 24, 32)).astype(np.float32), {"stack_axis": 0}),
        (rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), {"stack_axis": None,
                                                              "channel_axis": 2}),
        (rng.integers(0, 4000, (2, 3, 2, 24, 32)).astype(np.uint16),
         {"stack_axis": 1, "outer_axis": 0, "channel_axis": 2}),  # (t, z, c, y, x)
        (np.moveaxis(make_stack(3), 0, -1), {"stack_axis": 2}),  # (y, x, z)
        (make_stack(3) > 500, {"stack_axis": 0}),
    ]
    for data, axes in cases:
        src = StackSource(data, **axes)
        for i in range(len(src)):
            np.testing.assert_array_equal(src.region(i, rows, cols),
                                          src[i][rows[0]:rows[1], cols[0]:cols[1]])


def test_a_region_read_reads_only_the_region():
    data = RecordingArray(make_stack(5), stack_axes=(0,))
    src = StackSource(data, stack_axis=0)
    _ = src.limits
    data.keys.clear()
    tile = src.region(2, (4, 12), (8, 20))
    assert tile.shape == (8, 12, 3)
    assert data.keys == [(2, slice(4, 12), slice(8, 20))]
    with pytest.raises(IndexError):
        src.region(2, (4, 30), (0, 5))


def _tiles(data=None, tile=16, halo=2):
    src = StackSource(make_stack(3, hw=(24, 28)) if data is None else data, stack_axis=0)
    grid = Tiling("on", tile=tile, halo=halo).grid(src.frame_shape, 1024)
    return src, TileSource(src, grid)


def test_tile_items_are_the_blocks_of_each_frame():
    src, tiles = _tiles()
    grid = tiles.grid
    assert grid.block == (16, 16) and grid.n_tiles == 2 * 2  # 24 x 28 frames
    assert len(tiles) == 3 * 4 and tiles.frame_shape == (16, 16)
    assert tiles.index(2, 1) == 9 and tiles.split(9) == (2, 1) and tiles.split(-1) == (2, 3)
    assert tiles.items_of([1]) == [4, 5, 6, 7]
    (r0, r1), (c0, c1) = grid.region(1)
    np.testing.assert_array_equal(tiles[9], src[2][r0:r1, c0:c1])
    with pytest.raises(IndexError):
        tiles.index(0, 4)
    with pytest.raises(ValueError, match="grid"):
        TileSource(StackSource(make_stack(2, hw=(30, 30)), stack_axis=0), grid)


def test_features_of_one_tile_encode_only_that_tile(tmp_path):
    src, tiles = _tiles()
    enc = FakeEncoder()
    whole = EmbeddingStore(src, enc, cache_root=tmp_path)
    store = EmbeddingStore(TileSource(src, tiles.grid), enc, cache_root=tmp_path,
                           content_hash=lambda: tiled_content_hash(whole.content_hash, tiles.grid))
    feats = store.features(tiles.index(1, 2))
    assert enc.frames_encoded == 1 and store.encoder_calls == 1 and whole.encoder_calls == 0
    expected = enc.encode([tiles[tiles.index(1, 2)]])[0]
    np.testing.assert_array_equal(feats["emb"], expected["emb"])
    assert store.missing() == [i for i in range(12) if i != 6]


def test_compute_encodes_every_tile_with_progress_and_stops_on_cancel(tmp_path):
    src, tiles = _tiles()
    make = lambda enc: EmbeddingStore(  # noqa: E731
        TileSource(src, tiles.grid), enc, cache_root=tmp_path, content_hash="tiles-hash")
    enc = FakeEncoder()
    store = make(enc)
    cancel = threading.Event()
    done = []
    for p in store.compute(tiles.items_of([0, 1, 2]), cancel_event=cancel):
        done.append(p.frame)
        if len(done) == 5:
            cancel.set()
    assert len(done) == 5 and enc.frames_encoded == 5
    steps = list(make(FakeEncoder()).compute())  # a new store on the same entry resumes
    assert [s.total for s in steps][:1] == [12]
    assert sum(not s.from_cache for s in steps) == 7 and steps[-1].done == 12


def test_the_tiles_cache_key_differs_from_the_frames_and_from_other_geometries(tmp_path):
    src = StackSource(make_stack(2, hw=(40, 40)), stack_axis=0)
    enc = FakeEncoder()
    whole = EmbeddingStore(src, enc, cache_root=tmp_path)
    keys = {whole.key}
    for halo in (2, 4):
        grid = Tiling("on", tile=24, halo=halo).grid(src.frame_shape, 1024)
        stack_hash = whole.content_hash
        tiled = EmbeddingStore(TileSource(src, grid), enc, cache_root=tmp_path,
                               content_hash=lambda g=grid, h=stack_hash: tiled_content_hash(h, g))
        keys.add(tiled.key)
        assert tiled.content_hash != whole.content_hash
    assert len(keys) == 3
    # the same stack and geometry: the same entry, reused across stores
    grid = Tiling("on", tile=24, halo=2).grid(src.frame_shape, 1024)
    first = EmbeddingStore(TileSource(src, grid), enc, cache_root=tmp_path,
                           content_hash=tiled_content_hash(whole.content_hash, grid))
    list(first.compute())
    again_enc = FakeEncoder()
    again = EmbeddingStore(TileSource(src, grid), again_enc, cache_root=tmp_path,
                           content_hash=tiled_content_hash(whole.content_hash, grid))
    assert again.path == first.path and again.missing() == []
    again.features(3)
    assert again_enc.frames_encoded == 0


def test_a_store_over_tiles_needs_a_content_hash_and_has_no_views():
    src, tiles = _tiles()
    store = EmbeddingStore(tiles, FakeEncoder(), cache_root=False)
    with pytest.raises(TypeError, match="content_hash"):
        _ = store.content_hash
    with pytest.raises(TypeError, match="views"):
        store.view(0)
