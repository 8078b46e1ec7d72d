"""Tiled embeddings in the `Segmenter`: prompts decoded on the tile that holds them, masks
pasted back at full resolution, fallbacks to the whole frame, sessions per tile, lazy per-tile
encoding, cache keys, propagation on stacks of large planes.

Where the numbers matter the model is the deterministic stand-in of
`napari_focsam.benchmarks.standin` (SAM's geometry, a bright-component answer); the real tiny
models (random weights) check that every family runs through the tiles.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from api_helpers import install_fakes

import napari_focsam.api.segmenter as segmenter_module
from napari_focsam.api.drawing import Location
from napari_focsam.api.models import load_model
from napari_focsam.api.prompts_file import ObjectPrompt
from napari_focsam.api.segmenter import Segmenter
from napari_focsam.benchmarks.standin import BrightComponentPredictor, standin_model
from napari_focsam.engine.propagation import VideoPropagator
from napari_focsam.engine.tiling import Tiling

#: The test field: 2048 x 2048, so tiles of 1024 start at rows / cols 0, 512, 1024.
SIZE = 2048
#: Small discs (row, col, radius): A across the seam at row / col 1024, B inside a wide box.
DISCS = {1: (1020, 1030, 8), 2: (700, 200, 12), 3: (1400, 1500, 6)}
#: A bright bar 1200 px wide: longer than a block, so every block cuts it.
BAR = (slice(300, 340), slice(700, 1900))


def _field(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(SIZE, SIZE)`` uint8 image (background 30, objects 200) and its int32 labels (the
    bar is object 9)."""
    image = np.full((SIZE, SIZE), 30, np.uint8)
    labels = np.zeros((SIZE, SIZE), np.int32)
    rr, cc = np.ogrid[:SIZE, :SIZE]
    for obj, (r, c, rad) in DISCS.items():
        disc = (rr - r) ** 2 + (cc - c) ** 2 <= rad * rad
        image[disc] = 200
        labels[disc] = obj
    image[BAR] = 200
    labels[BAR] = 9
    return image, labels


@pytest.fixture(scope="module")
def field():
    return _field()


@pytest.fixture(scope="module")
def standin():
    return standin_model()


def click(obj: int, rc, frame=None, labels=(1,), box=None) -> ObjectPrompt:
    return ObjectPrompt(obj, frame, np.array(rc, dtype=np.float64).reshape(-1, 2), np.array(labels),
                        box_rc=None if box is None else np.array(box, dtype=np.float64))


def _on_crop(image: np.ndarray, region, points=None, labels=None, box=None) -> np.ndarray:
    """The stand-in's mask on the crop `region` of `image` (the tile, encoded on its own)."""
    (r0, r1), (c0, c1) = region
    predictor = BrightComponentPredictor()
    predictor.set_image(image[r0:r1, c0:c1])
    pts = None if points is None else np.asarray(points, float) - (r0, c0)
    bx = None if box is None else np.asarray(box, float) - (r0, c0, r0, c0)
    return predictor.predict(pts, labels, bx).masks[0]


def _on_frame(image, points=None, labels=None, box=None) -> np.ndarray:
    predictor = BrightComponentPredictor()
    predictor.set_image(image)
    return predictor.predict(points, labels, box).masks[0]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / max(np.count_nonzero(a | b), 1)


# ---------------------------------------------------------------------- tiles and stitching
def test_a_click_encodes_one_tile_and_its_mask_lands_in_the_frame_at_full_resolution(field,
                                                                                    standin):
    image, labels = field
    seg = Segmenter(image, interactive=standin, cache_root=False)
    grid = seg.tile_grid
    assert grid is not None and grid.n_tiles == 9 and grid.rows == (0, 512, 1024)
    r, c, _ = DISCS[3]
    prompt = click(3, [r, c])
    assert seg.needs_encoding(prompt)
    mask = seg.draw_object(prompt)
    assert seg.tile_store.encoder_calls == 1 and seg.stores["interactive"].encoder_calls == 0
    assert not seg.needs_encoding(prompt)
    tile = grid.pick(np.array([[r, c]]))
    assert seg.drawer.current == Location(0, tile) and tile == 8  # (1024, 1024): 376 px inside
    assert mask.shape == (SIZE, SIZE)
    expected = grid.paste(tile, _on_crop(image, grid.region(tile), [[r, c]], [1]))
    np.testing.assert_array_equal(mask, expected)
    assert iou(mask, labels == 3) > 0.6
    rows, cols = np.nonzero(mask)
    assert abs(rows.mean() - r) < 2 and abs(cols.mean() - c) < 2  # at the right place
    # resized, the 6 px disc fades below the stand-in's threshold: nothing is found
    off = Segmenter(image, interactive=standin, cache_root=False, tiling=Tiling("off"))
    assert off.tile_grid is None and off.tile_store is None
    assert iou(off.draw_object(prompt), labels == 3) < 0.2
    assert off.drawer.current == Location(0)


def test_a_point_in_an_overlap_goes_to_the_tile_with_the_most_context(field, standin):
    image, labels = field
    seg = Segmenter(image, interactive=standin, cache_root=False)
    grid = seg.tile_grid
    r, c, _ = DISCS[1]  # (1020, 1030): in blocks of rows 0 and 512, cols 512 and 1024
    holding = []
    for t in range(grid.n_tiles):
        (r0, r1), (c0, c1) = grid.region(t)
        if r0 <= r < r1 and c0 <= c < c1:
            top, bottom, left, right = grid.inner_sides(t)
            margins = [r - r0 if top else np.inf, r1 - r if bottom else np.inf,
                       c - c0 if left else np.inf, c1 - c if right else np.inf]
            holding.append((min(margins), t))
    assert len(holding) == 4
    best = max(holding)[1]
    mask = seg.draw_object(click(1, [r, c]))
    assert seg.drawer.current == Location(0, best) and best == 4  # the centre block
    assert iou(mask, labels == 1) > 0.6


def test_a_box_across_a_seam_that_fits_a_block_uses_it_and_a_wider_one_the_whole_frame(
        field, standin):
    image, labels = field
    seg = Segmenter(image, interactive=standin, cache_root=False)
    grid = seg.tile_grid
    seam_box = [1005.0, 1015.0, 1035.0, 1045.0]  # around disc 1, across row and col 1024
    mask = seg.draw_object(ObjectPrompt(1, None, box_rc=np.array(seam_box)))
    assert seg.drawer.current == Location(0, 4)
    np.testing.assert_array_equal(mask, grid.paste(4, _on_crop(image, grid.region(4),
                                                               box=seam_box)))
    assert iou(mask, labels == 1) > 0.6
    wide = [100.0, 100.0, 1300.0, 300.0]  # 1200 rows: no block holds it
    mask = seg.draw_object(ObjectPrompt(2, None, box_rc=np.array(wide)))
    assert seg.drawer.current == Location(0)
    assert seg.stores["interactive"].encoder_calls == 1
    np.testing.assert_array_equal(mask, _on_frame(image, box=wide))
    assert iou(mask, labels == 2) > 0.3  # disc 2, seen at half resolution
    far_apart = click(2, [[700, 200], [1400, 1500]], labels=(1, 0))
    seg.draw_object(far_apart)
    assert seg.drawer.current == Location(0)


def test_a_mask_against_an_inner_border_falls_back_to_the_whole_frame(field, standin):
    image, labels = field
    seg = Segmenter(image, interactive=standin, cache_root=False)
    grid = seg.tile_grid
    point = [320.0, 1000.0]
    tile = grid.pick(np.array([point]))
    assert tile == 1  # cols 512..1536: the bar (700..1900) crosses its right side
    cut = _on_crop(image, grid.region(tile), [point], [1])
    assert grid.touches_inner_border(tile, cut, seg.drawer.border_band)
    mask = seg.draw_object(click(9, point))
    assert seg.drawer.current == Location(0)
    np.testing.assert_array_equal(mask, _on_frame(image, [point], [1]))
    assert mask[:, 1536:].any() and iou(mask, labels == 9) > 0.8  # the whole bar
    assert seg.tile_store.encoder_calls == 1 and seg.stores["interactive"].encoder_calls == 1
    # both sessions are kept: the next click recomputes only itself in each
    tile_session = seg.drawer.session(9, Location(0, tile))
    frame_session = seg.drawer.session(9, Location(0))
    seg.draw_object(click(9, [point, [320.0, 1010.0]], labels=(1, 1)))
    assert seg.drawer.session(9, Location(0, tile)) is tile_session
    assert seg.drawer.session(9, Location(0)) is frame_session and len(frame_session) == 2


def test_click_sessions_belong_to_a_frame_and_tile(field, standin):
    image, _ = field
    seg = Segmenter(np.stack([image, image]), interactive=standin, stack_axis=0,
                    cache_root=False)
    r, c, _ = DISCS[3]
    seg.draw_object(click(5, [r, c], frame=1))
    loc = Location(1, 8)
    first = seg.drawer.session(5, loc).steps[0]
    seg.draw_object(click(5, [[r, c], [r + 20, c + 20]], frame=1, labels=(1, 0)))
    session = seg.drawer.session(5, loc)
    assert len(session) == 2 and session.steps[0] is first  # only the new click ran
    seg.draw_object(click(5, [r, c], frame=0))
    assert seg.drawer.current == Location(0, 8) and seg.drawer.session(5, loc) is session
    # a mask prompt alone is the object itself, on any frame size
    mask = np.zeros((SIZE, SIZE), bool)
    mask[5:50, 1900:2040] = True
    np.testing.assert_array_equal(seg.draw_object(ObjectPrompt(6, 0, mask=mask)), mask)


# ---------------------------------------------------------------------- embeddings and caches
def test_embed_encodes_every_tile_then_the_whole_frames_with_progress_and_cancel(field, standin):
    image, _ = field
    data = np.stack([image, image[::-1]])
    seg = Segmenter(data, interactive=standin, stack_axis=0, cache_root=False)
    cancel = threading.Event()
    steps = []
    for p in seg.embed(cancel_event=cancel):
        steps.append(p)
        if len(steps) == 4:
            cancel.set()
    assert [s.stage for s in steps] == ["embed:tiles"] * 4 and steps[-1].total == 18
    assert seg.encoder_calls == 4
    steps = list(seg.embed())
    stages = [s.stage for s in steps]
    assert stages == ["embed:tiles"] * 18 + ["embed:interactive"] * 2
    assert [s.frame for s in steps[:18]] == [0] * 9 + [1] * 9  # the frame of each tile
    assert seg.encoder_calls == 18 + 2
    r, c, _ = DISCS[3]
    seg.draw_object(click(1, [r, c], frame=1))
    seg.draw_object(click(2, [100.0, 100.0, 1300.0, 300.0], frame=0, labels=(1, 1)))
    assert seg.encoder_calls == 20  # nothing left to encode
    assert list(seg.embed(roles=("propagation",))) == []


def test_tiles_have_their_own_cache_entry_reused_by_the_next_segmenter(field, standin, tmp_path):
    image, _ = field
    first = Segmenter(image, interactive=standin, cache_root=tmp_path)
    r, c, _ = DISCS[3]
    mask = first.draw_object(click(1, [r, c]))
    assert first.tile_store.key != first.stores["interactive"].key
    assert first.tile_store.path != first.stores["interactive"].path
    second = Segmenter(image, interactive=standin, cache_root=tmp_path)
    assert second.tile_store.key == first.tile_store.key
    np.testing.assert_array_equal(second.draw_object(click(1, [r, c])), mask)
    assert second.encoder_calls == 0  # read back from disk
    other = Segmenter(image, interactive=standin, cache_root=tmp_path, tiling=Tiling(halo=64))
    assert other.tile_store.key != first.tile_store.key  # another geometry, another entry


# ---------------------------------------------------------------------- every family
@pytest.mark.parametrize("model_id", ["sam_test_tiny", "focsam_test_tiny", "sam2_test_tiny"])
def test_every_interactive_family_draws_through_tiles(model_id):
    model = load_model(model_id, weights="random", device="cpu", dtype="fp32")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (1100, 1300)).astype(np.uint8)
    image[500:540, 600:640] = 220
    seg = Segmenter(image, interactive=model, cache_root=False)
    grid = seg.tile_grid
    assert grid is not None and grid.block == (1024, 1024) and grid.n_tiles == 4
    point = [520.0, 620.0]
    prompt = click(1, point)
    mask = seg.draw_object(prompt)
    assert mask.shape == (1100, 1300) and mask.dtype == bool
    assert seg.tile_store.encoder_calls == 1
    tile = grid.pick(np.array([point]))
    # what the family's own predictor gives on the tile (or on the whole frame, when the
    # random mask reaches the tile's inner border)
    predictor = model.interactive_predictor()
    if seg.drawer.current == Location(0, tile):
        (r0, r1), (c0, c1) = grid.region(tile)
        predictor.set_image(image[r0:r1, c0:c1])
        session = predictor.start_session()
        expected = grid.paste(tile, session.set_clicks(np.array([point]) - (r0, c0),
                                                       np.array([1])).masks[0])
    else:
        assert seg.drawer.current == Location(0)
        predictor.set_image(image)
        expected = predictor.start_session().set_clicks(np.array([point]), np.array([1])).masks[0]
    np.testing.assert_array_equal(mask, expected)
    labels = seg.segment_frame([prompt])
    np.testing.assert_array_equal(labels == 1, mask)


# ---------------------------------------------------------------------- stacks of large planes
def test_a_stack_of_large_planes_segments_and_propagates_end_to_end(field, standin, monkeypatch):
    """The stand-in draws on tiles; a deterministic propagator (``api_helpers``) tracks."""
    image, labels = field
    stack = np.stack([np.roll(image, 3 * t, axis=1) for t in range(3)])
    truth = np.stack([np.roll(labels, 3 * t, axis=1) for t in range(3)])
    install_fakes(monkeypatch, interactive=False)
    sam2 = load_model("sam2_test_tiny", weights="random", device="cpu", dtype="fp32")
    seg = Segmenter(stack, interactive=standin, propagation=sam2, stack_axis=0, cache_root=False)
    r, c, _ = DISCS[3]
    prompts = [click(3, [r, c + 3], frame=1), click(1, [1020.0, 1033.0], frame=1)]
    steps = list(seg.segment(prompts))
    assert [s.stage for s in steps] == ["segment", "segment"]
    assert seg.tile_store.encoder_calls == 2 and seg.stores["interactive"].encoder_calls == 0
    for obj in (1, 3):
        assert iou(seg.labels[1] == obj, truth[1] == obj) > 0.6
    steps = list(seg.propagate(prompts, "both"))
    assert sorted({s.frame for s in steps}) == [0, 1, 2]
    for t in range(3):
        for obj in (1, 3):
            assert iou(seg.labels[t] == obj, truth[t] == obj) > 0.6


@pytest.mark.parametrize("interactive_id", ["sam2_test_tiny", "sam_test_tiny"])
def test_real_models_on_a_stack_of_large_planes_segment_and_propagate(interactive_id):
    """Tiny models end to end. With tiles the prompted frame's objects enter the propagation
    as the full-resolution masks drawn on their tile (for SAM 2 as both models too: no clicks
    on the resized frame); propagation runs on whole frames."""
    sam2 = load_model("sam2_test_tiny", weights="random", device="cpu", dtype="fp32")
    interactive = sam2 if interactive_id == "sam2_test_tiny" else load_model(
        interactive_id, weights="random", device="cpu", dtype="fp32")
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 60, (2, 1100, 1100)).astype(np.uint8)
    stack[:, 500:540, 600:640] = 220
    seg = Segmenter(stack, interactive=interactive, propagation=sam2, stack_axis=0,
                    cache_root=False)
    assert seg.tile_grid is not None and seg.tile_grid.n_tiles == 4
    prompt = click(2, [520.0, 620.0], frame=0)
    preview = seg.draw_object(prompt)
    steps = list(seg.segment([prompt]))
    assert [s.stage for s in steps] == ["segment"]
    np.testing.assert_array_equal(seg.labels[0] == 2, preview)
    calls = []

    class Spying(VideoPropagator):
        def add_mask(self, frame, obj_id, mask, **kwargs):
            calls.append(("mask", frame, obj_id, np.asarray(mask).copy()))
            return super().add_mask(frame, obj_id, mask, **kwargs)

        def add_clicks(self, *args, **kwargs):
            calls.append(("clicks",))
            return super().add_clicks(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(segmenter_module, "VideoPropagator", Spying)
        steps = list(seg.propagate([prompt], "forward"))
    assert [s.frame for s in steps] == [0, 1]
    assert [c[:3] for c in calls] == [("mask", 0, 2)]
    np.testing.assert_array_equal(calls[0][3], preview)  # the drawn mask, full resolution
    assert (seg.stores["propagation"] is seg.stores["interactive"]) == (interactive is sam2)
    assert seg.stores["propagation"].encoder_calls == 2  # whole frames
    assert seg.labels.shape == (2, 1100, 1100)
