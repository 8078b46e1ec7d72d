"""Tile geometry and settings (`engine.tiling`): coverage, full-size blocks, edge shifting,
prompt placement, borders and stitching."""

from __future__ import annotations

import numpy as np
import pytest

from napari_focsam.engine.tiling import TileGrid, Tiling, TilingError, axis_origins
from napari_focsam.errors import UserError

SHAPES = [(4096, 4096), (2048, 2048), (1100, 1500), (800, 3000), (3000, 800), (1025, 1024)]


def _core_cover(grid: TileGrid) -> np.ndarray:
    """Per pixel, how many blocks hold it at least `halo` px from their inner sides."""
    cover = np.zeros(grid.frame_shape, dtype=np.int32)
    h = grid.halo
    for t in range(grid.n_tiles):
        (r0, r1), (c0, c1) = grid.region(t)
        top, bottom, left, right = grid.inner_sides(t)
        cover[r0 + (h if top else 0):r1 - (h if bottom else 0),
              c0 + (h if left else 0):c1 - (h if right else 0)] += 1
    return cover


@pytest.mark.parametrize("shape", SHAPES)
def test_blocks_have_full_size_cover_the_frame_and_keep_a_halo_of_context(shape):
    grid = Tiling().grid(shape, 1024)
    assert grid is not None
    assert grid.block == (min(1024, shape[0]), min(1024, shape[1]))
    for t in range(grid.n_tiles):
        (r0, r1), (c0, c1) = grid.region(t)
        assert 0 <= r0 and r1 <= shape[0] and 0 <= c0 and c1 <= shape[1]
        assert (r1 - r0, c1 - c0) == grid.block  # no shrunk (upsampled) edge tile
    for origins, size, block in ((grid.rows, shape[0], grid.block[0]),
                                 (grid.cols, shape[1], grid.block[1])):
        assert origins[0] == 0 and origins[-1] == size - block  # shifted inside at the far edge
        gaps = np.diff(origins)
        assert (gaps > 0).all() and (gaps <= block - 2 * grid.halo).all()  # overlap >= 2 halo
    assert (_core_cover(grid) >= 1).all()  # every pixel has `halo` px of context somewhere


def test_the_default_grids():
    grid = Tiling().grid((4096, 4096), 1024)
    assert (grid.halo, grid.n_tiles, grid.rows) == (128, 25, (0, 768, 1536, 2304, 3072))
    grid = Tiling().grid((2048, 2048), 1024)
    assert grid.rows == (0, 512, 1024)  # spread evenly: every overlap is 512 px
    grid = Tiling().grid((800, 3000), 1024)  # non-square: one row of 800 x 1024 blocks
    assert grid.block == (800, 1024) and grid.rows == (0,) and grid.cols == (0, 659, 1317, 1976)
    assert grid.inner_sides(0) == (False, False, False, True)
    assert grid.inner_sides(1) == (False, False, True, True)


def test_small_frames_are_not_tiled_and_off_never_tiles():
    assert Tiling().grid((1024, 1024), 1024) is None
    assert Tiling().grid((1000, 600), 1024) is None
    assert Tiling("off").grid((4096, 4096), 1024) is None
    # "on" tiles whatever is larger than the tile; "auto" only above the model input
    assert Tiling("on", tile=512).grid((800, 800), 1024).n_tiles == 4
    assert Tiling("auto", tile=512).grid((800, 800), 1024) is None
    assert Tiling("auto", tile=512).grid((1100, 800), 1024).block == (512, 512)


def test_settings_are_checked_as_user_errors():
    for bad in ({"mode": "sometimes"}, {"tile": 8}, {"halo": -1}, {"tile": 256, "halo": 128},
                {"tile": 100.5}):
        with pytest.raises(TilingError) as info:
            Tiling(**bad)
        assert isinstance(info.value, UserError)
    with pytest.raises(TilingError, match="halo"):
        Tiling(halo=600).grid((4096, 4096), 1024)
    assert Tiling(halo=0).grid((2048, 1024), 1024).rows == (0, 1024)  # no overlap: abutting
    assert axis_origins(1024, 1024, 128) == (0,)


def test_a_point_goes_to_the_tile_where_it_has_the_most_context():
    grid = Tiling().grid((2048, 2048), 1024)  # origins 0, 512, 1024 on both axes
    # row 600 is in blocks 0 (0..1024: 424 px to its bottom) and 1 (512..1536: 88 px to its
    # top) -> block 0; col 900 is in blocks 0 (124 px), 1 (388 / 636 px) -> block 1
    assert grid.pick(np.array([[600.0, 900.0]])) == 0 * 3 + 1
    # near the frame's corner: the border is no inner side
    assert grid.pick(np.array([[5.0, 2040.0]])) == 2
    # in the middle of an overlap the first block wins the tie
    assert grid.pick(np.array([[768.0, 10.0]])) == 0
    assert grid.pick() is None


def test_a_box_across_a_seam_goes_to_the_block_holding_it_and_a_wide_one_to_no_block():
    grid = Tiling().grid((2048, 2048), 1024)
    seam_box = np.array([900.0, 980.0, 1100.0, 1090.0])  # crosses row and col 1024 (block 0's end)
    t = grid.pick(box=seam_box)
    assert t == 1 * 3 + 1  # block (512, 512): the box is 388 / 436 px inside it
    (r0, r1), (c0, c1) = grid.region(t)
    assert r0 <= 900 and 1100 <= r1 and c0 <= 980 and 1090 <= c1
    assert grid.pick(box=np.array([100.0, 100.0, 1200.0, 300.0])) is None  # 1100 rows > a block
    # a box may end on the frame's last pixel edge; points must lie on a pixel
    assert grid.pick(box=np.array([1900.0, 1900.0, 2048.0, 2048.0])) == 8
    points = np.array([[100.0, 100.0], [1500.0, 150.0]])  # clicks 1400 rows apart
    assert grid.pick(points) is None
    # points and box together: their extent 550..700 is 324 px from block 0's inner ends and
    # only 38 px from block 4's top / left
    both = grid.pick(np.array([[600.0, 600.0]]), np.array([550.0, 550.0, 700.0, 700.0]))
    assert both == 0


def test_prompts_shift_into_the_block_and_masks_paste_back_at_full_resolution():
    grid = Tiling().grid((1100, 1500), 1024)
    t = 3
    r0, c0 = grid.origin(t)
    pts, box = grid.to_tile(t, np.array([[700.0, 900.0]]), np.array([600.0, 800.0, 800.0, 1000.0]))
    np.testing.assert_allclose(pts, [[700 - r0, 900 - c0]])
    np.testing.assert_allclose(box, [600 - r0, 800 - c0, 800 - r0, 1000 - c0])
    mask = np.zeros(grid.block, bool)
    mask[10:20, 30:45] = True
    frame = grid.paste(t, mask)
    assert frame.shape == (1100, 1500) and frame.sum() == mask.sum()
    assert frame[r0 + 10:r0 + 20, c0 + 30:c0 + 45].all()
    with pytest.raises(ValueError, match="block"):
        grid.paste(t, np.zeros((5, 5), bool))


def test_masks_against_an_inner_border_are_detected_but_not_at_the_frame_border():
    grid = Tiling().grid((2048, 2048), 1024)
    mask = np.zeros(grid.block, bool)
    mask[0:5, 500:510] = True  # on block 0's top edge: the frame's border
    assert not grid.touches_inner_border(0, mask, band=4)
    assert grid.touches_inner_border(4, mask, band=4)  # block 4's top edge is inside the frame
    mask[:] = False
    mask[500:510, 1018:1020] = True  # 4 px from block 0's right edge (inner)
    assert not grid.touches_inner_border(0, mask, band=4)
    assert grid.touches_inner_border(0, mask, band=6)
