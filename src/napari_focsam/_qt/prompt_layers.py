"""Prompt layers: from napari Points / Shapes layers to `ObjectPrompt` in image pixels.

Each point (each rectangle vertex) goes from its layer's data coordinates to world
coordinates (``layer.data_to_world``) and from there to the image layer's data coordinates
(``image_layer.world_to_data``), so layers with different scale, translate, rotate or affine
transforms line up as napari shows them. A prompt layer with fewer dimensions than the image
(e.g. 2D points over a 3D stack) is taken to lie on the slice being viewed.

No Qt here: these functions take napari layers and numpy arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..api.prompts_file import ObjectPrompt
from .axes import ImageAxes

__all__ = ["NEGATIVE_COLOR", "POINTS_NAME", "POSITIVE", "POSITIVE_COLOR", "SHAPES_NAME",
           "MappedPrompts", "collect_prompt", "image_data", "layer_transform_kwargs",
           "make_points_layer", "make_shapes_layer", "place_below", "positive_flags",
           "to_image_data"]

logger = logging.getLogger(__name__)

#: Name of the bool feature of a Points layer telling positive (True) from negative clicks.
POSITIVE = "positive"
POINTS_NAME = "FocSAM points"
SHAPES_NAME = "FocSAM boxes"
POSITIVE_COLOR = "lime"
NEGATIVE_COLOR = "red"


def to_image_data(coords, layer, image, world_point=None) -> np.ndarray:
    """Map coordinates from `layer`'s data space to `image`'s data space.

    Parameters
    ----------
    coords : array-like
        ``(N, layer.ndim)`` positions in `layer`'s data coordinates.
    layer, image : napari.layers.Layer
        The layer the coordinates belong to, and the image layer.
    world_point : array-like, optional
        The viewer's current world position (``viewer.dims.point``): fills in the world
        dimensions `layer` does not have. Default: zeros.

    Returns
    -------
    np.ndarray
        ``(N, image.ndim)`` float64 positions in `image`'s data coordinates.
    """
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, layer.ndim)
    world_point = np.zeros(0) if world_point is None else np.asarray(world_point, dtype=np.float64)
    out = np.empty((len(coords), image.ndim), dtype=np.float64)
    for i, c in enumerate(coords):
        world = np.asarray(layer.data_to_world(c), dtype=np.float64)
        n = max(len(world), len(world_point), image.ndim)
        full = np.zeros(n)
        if len(world_point):
            full[n - len(world_point):] = world_point
        full[n - len(world):] = world
        out[i] = image.world_to_data(full)
    return out


def positive_flags(points_layer) -> np.ndarray:
    """``(N,)`` bool: which points are positive (all of them without a `POSITIVE` feature)."""
    n = len(points_layer.data)
    features = points_layer.features
    if POSITIVE not in getattr(features, "columns", ()):
        return np.ones(n, dtype=bool)
    return np.asarray(features[POSITIVE], dtype=bool).reshape(-1)[:n]


@dataclass
class MappedPrompts:
    """The prompts of the plane being viewed, with where they came from.

    Attributes
    ----------
    prompt : ObjectPrompt or None
        None when there are no points and no rectangle on this plane.
    point_indices : list of int
        Rows of the points layer used (to remove them after a commit).
    shape_indices : list of int
        Shapes used (the rectangle).
    notes : list of str
        What was left out and why (other shape types, extra rectangles).
    """

    prompt: ObjectPrompt | None
    point_indices: list[int] = field(default_factory=list)
    shape_indices: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _on_plane(pos: np.ndarray, axes: ImageAxes, frame, outer) -> np.ndarray:
    """Which mapped positions lie on plane (`frame`, `outer`)."""
    keep = np.ones(len(pos), dtype=bool)
    for axis, value in ((axes.stack_axis, frame), (axes.outer_axis, outer)):
        if axis is not None:
            keep &= np.round(pos[:, axis]) == value
    return keep


def _clip_points(rc: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Points within half a pixel of the image (its border pixels' outer halves) onto it."""
    rc = rc.copy()
    for k, size in enumerate(hw):
        inside = (rc[:, k] >= -0.5) & (rc[:, k] <= size - 0.5)
        rc[inside, k] = np.clip(rc[inside, k], 0.0, size - 1.0)
    return rc


def collect_prompt(obj_id: int, image, axes: ImageAxes, frame: int | None, outer: int | None, *,
                   points_layer=None, shapes_layer=None, world_point=None) -> MappedPrompts:
    """The `ObjectPrompt` of object `obj_id` on plane (`frame`, `outer`) of `image`.

    Points of `points_layer` on that plane become clicks (positive unless their `POSITIVE`
    feature is False); the last rectangle of `shapes_layer` on that plane becomes the box
    (its mapped vertices' min / max row and column); polygons and ellipses on that plane become
    a mask prompt (their union, rasterised in image pixels after mapping the vertices, so any
    layer transform works). Lines and paths are not used.
    """
    hw = tuple(int(s) for s in axes.labels_shape(_image_shape(image))[-2:])
    result = MappedPrompts(None)
    rc = np.zeros((0, 2))
    labels = np.zeros(0, dtype=np.int64)
    if points_layer is not None and len(points_layer.data):
        pos = to_image_data(points_layer.data, points_layer, image, world_point)
        keep = _on_plane(pos, axes, frame, outer)
        result.point_indices = [int(i) for i in np.flatnonzero(keep)]
        rc = _clip_points(pos[keep][:, -2:], hw)
        labels = positive_flags(points_layer)[keep].astype(np.int64)
    box = None
    mask = None
    if shapes_layer is not None and len(shapes_layer.data):
        others = 0
        for index, (verts, kind) in enumerate(zip(shapes_layer.data, shapes_layer.shape_type,
                                                  strict=True)):
            pos = to_image_data(verts, shapes_layer, image, world_point)
            if not _on_plane(pos.mean(axis=0, keepdims=True), axes, frame, outer)[0]:
                continue
            if kind in ("polygon", "ellipse"):
                region = rasterise_shape(pos[:, -2:], kind, hw)
                mask = region if mask is None else mask | region
                result.shape_indices.append(index)
                continue
            if kind != "rectangle":
                others += 1
                continue
            lo, hi = pos[:, -2:].min(axis=0), pos[:, -2:].max(axis=0)
            lo = np.clip(lo, 0.0, hw)
            hi = np.clip(hi, 0.0, hw)
            if box is not None:
                result.notes.append("several rectangles on this slice: the last one is the box")
            box = np.array([lo[0], lo[1], hi[0], hi[1]], dtype=np.float64)
            result.shape_indices = [i for i in result.shape_indices
                                    if shapes_layer.shape_type[i] != "rectangle"] + [index]
        if others:
            result.notes.append(f"{others} line / path shape(s) ignored (rectangles are boxes, "
                                "polygons and ellipses are mask prompts)")
    if mask is not None and not mask.any():
        result.notes.append("the polygon / ellipse covers no pixel of the image")
        mask = None
    if len(rc) == 0 and box is None and mask is None:
        return result
    if mask is not None and (len(rc) or box is not None):
        result.notes.append("clicks / box given: they draw the object, the mask prompt is not used")
    result.prompt = ObjectPrompt(int(obj_id), frame, rc, labels, box, outer, mask)
    return result


def rasterise_shape(rc: np.ndarray, kind: str, hw: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool pixels inside a polygon or an ellipse given in image (row, col).

    Parameters
    ----------
    rc : np.ndarray
        ``(N, 2)`` vertices; for an ellipse, the 4 corners of its bounding box in order (as
        napari stores it; after an affine mapping they form a parallelogram).
    kind : {"polygon", "ellipse"}
    hw : tuple of int
        Image size.
    """
    from skimage.draw import polygon as fill_polygon

    rc = np.asarray(rc, dtype=np.float64)
    if kind == "ellipse":
        centre = rc.mean(axis=0)
        half_1, half_2 = (rc[1] - rc[0]) / 2, (rc[3] - rc[0]) / 2
        t = np.linspace(0.0, 2 * np.pi, 129)[:-1, None]
        rc = centre + np.cos(t) * half_1 + np.sin(t) * half_2
    mask = np.zeros(hw, dtype=bool)
    rows, cols = fill_polygon(rc[:, 0], rc[:, 1], shape=hw)
    mask[rows, cols] = True
    return mask


def image_data(image):
    """An image layer's data array (the highest resolution level of a multiscale image)."""
    return image.data[0] if getattr(image, "multiscale", False) else image.data


def _image_shape(image) -> tuple[int, ...]:
    return tuple(int(s) for s in image_data(image).shape)


def layer_transform_kwargs(image) -> dict:
    """Keyword arguments that give a new layer the same data-to-world transform as `image`."""
    return {"scale": image.scale, "translate": image.translate, "rotate": image.rotate,
            "shear": image.shear, "affine": image.affine.affine_matrix}


def make_points_layer(viewer, image, *, name: str = POINTS_NAME, positive: bool = True):
    """Add an empty prompt Points layer aligned with `image`, coloured by its `POSITIVE` feature."""
    kwargs = layer_transform_kwargs(image) if image is not None else {}
    ndim = image.ndim if image is not None else 2
    return viewer.add_points(
        np.zeros((0, ndim)), ndim=ndim, name=name,
        features={POSITIVE: np.zeros(0, dtype=bool)}, feature_defaults={POSITIVE: bool(positive)},
        face_color=POSITIVE, face_color_cycle={True: POSITIVE_COLOR, False: NEGATIVE_COLOR},
        border_color="white", size=max(2.0, _default_point_size(image)), **kwargs)


def make_shapes_layer(viewer, image, *, name: str = SHAPES_NAME):
    """Add an empty Shapes layer for boxes, aligned with `image`."""
    kwargs = layer_transform_kwargs(image) if image is not None else {}
    ndim = image.ndim if image is not None else 2
    return viewer.add_shapes(None, ndim=ndim, name=name, edge_color="yellow",
                             face_color="transparent", edge_width=1.5, **kwargs)


def place_below(viewer, layer, others) -> None:
    """Move `layer` under the lowest of `others` in the layer list (prompts stay on top)."""
    indices = [viewer.layers.index(o) for o in others if o is not None and o in viewer.layers]
    if not indices or layer not in viewer.layers:
        return
    src, dest = viewer.layers.index(layer), min(indices)
    if src > dest:
        viewer.layers.move(src, dest)


def _default_point_size(image) -> float:
    if image is None:
        return 10.0
    h, w = _image_shape(image)[-3:-1] if image.rgb else _image_shape(image)[-2:]
    return float(np.clip(min(h, w) / 40.0, 2.0, 20.0))
