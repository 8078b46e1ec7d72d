"""Designed decoder outputs for the automatic-mask-generation parity fixtures (``amg_*.pt``).

A random-weight decoder gives nearly the same mask for every click, which would leave the
generators' filters, NMS and clean-up untested. The recording script
(``scripts/parity/record_amg.py``) therefore replaces the official predictor's batched decoding
by `decode`, and the parity tests replace ours by the same function: both generators then see
identical masks and scores, and must make identical decisions.

The frame holds a few elliptic *objects* (from a hash of the seed and the frame size). For a
click at (x, y) in a crop whose top-left corner is at (x0, y0) of the frame, mask ``m`` (1..3 in
multimask mode, 0 in single-mask mode) is: for ``m`` = 2 or 0 and a click inside an object,
that object (so clicks inside one object give duplicate masks, within a crop and across crops,
and objects cut by a crop touch its edge); otherwise an ellipse around the click. Size,
eccentricity, logit slope (hence stability score), predicted IoU, a small detached island and a
small hole follow from a hash of ``(round(1000 (x + x0)), round(1000 (y + y0)), m, seed)``. A
refinement pass (mask input given, sam2's ``use_m2m``) shrinks the ellipse, steepens it and
raises its IoU. Logits are computed in float64 at pixel centres and returned as float32. The
low-resolution output is a (2, 2) float64 code ``[[ix, iy], [m, refined]]`` (the click's key in
the crop) that a refinement call reads back.

Only numpy is needed (the recording environment and the tests import this file).
"""

from __future__ import annotations

import math

import numpy as np

#: The recipe's parameters (stored in each fixture; the tests read them from there).
RECIPE = {
    "name": "ellipses-v1",
    "seed": 11,
    "radius": (0.04, 0.2),  # base radius, fraction of the crop's shorter side
    "scales": (1.0, 0.6, 1.0, 1.7),  # size factor of mask m = 0..3
    "slopes": (0.25, 0.6, 2.0, 8.0, 40.0),  # logits per pixel at the boundary
    "iou": (0.6, 1.0),  # predicted IoU range (quantised to 1/200: ties happen)
    "island_rate": 0.3,
    "island_radius": 1.6,
    "hole_rate": 0.3,
    "hole_radius": 1.8,
    "refine": {"shrink": 0.9, "slope": 2.0, "iou": 0.04},
    "objects": 7,  # elliptic objects in the frame
    "object_radius": (0.07, 0.2),  # their semi-axes, fraction of the frame's shorter side
    "object_slopes": (6.0, 40.0, 40.0),
    "object_iou": (0.8, 1.0),
}
#: Clicks are identified by their coordinates rounded to this many steps per pixel.
KEY_SCALE = 1000
#: A click within this many key steps of a rounding tie is refused: float32 noise (~1e-5 px)
#: could round the two pipelines' clicks differently.
KEY_MARGIN = 0.05


def point_key(x: float, y: float) -> tuple[int, int]:
    """``(round(1000 x), round(1000 y))``; raises if either is within `KEY_MARGIN` of a tie
    (float noise could then round the two pipelines' clicks differently)."""
    key = []
    for v in (x, y):
        s = float(v) * KEY_SCALE
        frac = s - math.floor(s)
        if abs(frac - 0.5) < KEY_MARGIN:
            raise ValueError(f"click coordinate {v!r} is too close to a rounding tie")
        key.append(int(math.floor(s + 0.5)))
    return key[0], key[1]


def _uniform(*ints: int) -> float:
    """A deterministic number in [0, 1) from integers (32-bit mixing hash)."""
    x = 0x9E3779B9
    for v in ints:
        x = (x ^ (int(v) & 0xFFFFFFFF)) & 0xFFFFFFFF
        x = (x * 0x85EBCA6B) & 0xFFFFFFFF
        x ^= x >> 13
        x = (x * 0xC2B2AE35) & 0xFFFFFFFF
        x ^= x >> 16
    return x / 2**32


def objects(frame_hw: tuple[int, int], recipe: dict) -> list[tuple[float, float, float, float]]:
    """The frame's objects: ``(cx, cy, a, b)`` ellipses in frame pixels."""
    h, w = (int(v) for v in frame_hw)
    seed = int(recipe["seed"])
    lo, hi = recipe["object_radius"]
    out = []
    for o in range(int(recipe["objects"])):
        u = [_uniform(seed, 7777, o, h, w, i) for i in range(4)]
        out.append((w * (0.1 + 0.8 * u[0]), h * (0.1 + 0.8 * u[1]),
                    min(h, w) * (lo + (hi - lo) * u[2]), min(h, w) * (lo + (hi - lo) * u[3])))
    return out


def design(key: tuple[int, int], origin: tuple[int, int], hw: tuple[int, int],
           frame_hw: tuple[int, int], m: int, refined: bool,
           recipe: dict) -> tuple[np.ndarray, float]:
    """Logits ``(h, w)`` float32 of the crop and predicted IoU of mask `m` of the click `key`
    (in crop key units) on the crop at `origin` ``(x0, y0)`` of the frame."""
    x0, y0 = (int(v) for v in origin)
    fx, fy = key[0] + KEY_SCALE * x0, key[1] + KEY_SCALE * y0  # frame key
    h, w = (int(s) for s in hw)
    seed = int(recipe["seed"])

    def u(i: int) -> float:
        return _uniform(seed, fx, fy, m, i)

    px, py = fx / KEY_SCALE, fy / KEY_SCALE  # the click, frame pixels
    slopes = recipe["slopes"]
    slope = slopes[min(len(slopes) - 1, int(u(5) * len(slopes)))]
    iou_lo, iou_hi = recipe["iou"]
    iou = round((iou_lo + (iou_hi - iou_lo) * u(6)) * 200) / 200
    hit = None
    if m in (0, 2):
        for cx, cy, a, b in objects(frame_hw, recipe):
            if ((px - cx) / a) ** 2 + ((py - cy) / b) ** 2 <= 1.0:
                hit = (cx, cy, a, b)
                break
    if hit is not None:  # duplicates worth keeping: steep, confident
        ex, ey, a, b = hit
        slope = recipe["object_slopes"][int(u(10) * len(recipe["object_slopes"]))]
        lo_i, hi_i = recipe["object_iou"]
        iou = round((lo_i + (hi_i - lo_i) * u(11)) * 200) / 200
    else:
        lo, hi = recipe["radius"]
        r = min(h, w) * (lo + (hi - lo) * _uniform(seed, fx, fy, 99))
        scale = recipe["scales"][m]
        a = r * scale * (0.75 + 0.5 * u(1))
        b = r * scale * (0.75 + 0.5 * u(2))
        ex = px + (u(3) - 0.5) * 0.6 * a
        ey = py + (u(4) - 0.5) * 0.6 * b
    if refined:
        ref = recipe["refine"]
        a, b, slope = a * ref["shrink"], b * ref["shrink"], slope * ref["slope"]
        iou = min(1.0, iou + ref["iou"])
    yy, xx = np.mgrid[:h, :w].astype(np.float64) + 0.5
    yy, xx = yy + y0, xx + x0  # pixel centres in frame pixels
    dist = np.sqrt(((xx - ex) / a) ** 2 + ((yy - ey) / b) ** 2)
    logits = slope * (1.0 - dist) * min(a, b)
    if hit is None and u(7) < recipe["island_rate"]:
        rad = recipe["island_radius"]
        ox, oy = ex + a + 3.0 + rad, ey + (u(8) - 0.5) * b
        island = 4.0 * (rad - np.sqrt((xx - ox) ** 2 + (yy - oy) ** 2))
        logits = np.maximum(logits, island)
    if u(9) < recipe["hole_rate"] and min(a, b) > 3 * recipe["hole_radius"]:
        rad = recipe["hole_radius"]
        ox, oy = ex + 0.35 * a, ey - 0.2 * b
        hole = 4.0 * (np.sqrt((xx - ox) ** 2 + (yy - oy) ** 2) - rad)
        logits = np.minimum(logits, hole)
    return logits.astype(np.float32), float(iou)


def decode(points_xy: np.ndarray, hw: tuple[int, int], multimask: bool,
           codes: np.ndarray | None, recipe: dict, origin: tuple[int, int] = (0, 0),
           frame_hw: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The designed outputs of one batched decoder call.

    Parameters
    ----------
    points_xy : np.ndarray
        ``(B, 2)`` click (x, y) in crop pixels.
    hw : tuple of int
        ``(h, w)`` of the crop.
    multimask : bool
        Three masks per click (m = 1, 2, 3) or one (m = 0).
    codes : np.ndarray or None
        ``(B, 2, 2)`` low-resolution codes given back as mask input (a refinement pass: the
        click and mask are read from the code, a single mask is returned).
    recipe : dict
        `RECIPE` as stored in the fixture.
    origin : tuple of int
        ``(x0, y0)`` of the crop in the frame.
    frame_hw : tuple of int or None
        ``(H, W)`` of the frame (None: the crop is the frame).

    Returns
    -------
    logits : np.ndarray
        ``(B, K, h, w)`` float32.
    iou : np.ndarray
        ``(B, K)`` float32.
    low_res : np.ndarray
        ``(B, K, 2, 2)`` float64 codes.
    """
    frame_hw = hw if frame_hw is None else frame_hw
    out_logits, out_iou, out_codes = [], [], []
    for b in range(len(points_xy)):
        if codes is not None:
            code = np.asarray(codes[b], dtype=np.float64).reshape(2, 2)
            key, ms, refined = (int(code[0, 0]), int(code[0, 1])), [int(code[1, 0])], True
        else:
            key = point_key(*points_xy[b])
            ms, refined = ([1, 2, 3] if multimask else [0]), False
        row_l, row_i, row_c = [], [], []
        for m in ms:
            logits, iou = design(key, origin, hw, frame_hw, m, refined, recipe)
            row_l.append(logits)
            row_i.append(iou)
            row_c.append(np.array([[key[0], key[1]], [m, float(refined)]], dtype=np.float64))
        out_logits.append(np.stack(row_l))
        out_iou.append(row_i)
        out_codes.append(np.stack(row_c))
    return (np.stack(out_logits), np.asarray(out_iou, dtype=np.float32), np.stack(out_codes))
