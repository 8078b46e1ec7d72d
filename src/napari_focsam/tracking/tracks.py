"""Label stacks to napari Tracks layer data (per-id centroids per frame, lineage graph)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from .table import TrackingError, TrackTable, check_label_stack

__all__ = ["lineage_graph", "tracks_from_labels"]

logger = logging.getLogger(__name__)

LineageLike = TrackTable | Mapping[int, int | list[int]] | np.ndarray


def lineage_graph(lineage: LineageLike | None) -> dict[int, list[int]]:
    """``{child_id: [parent_id]}`` from any of the lineage forms used in this package.

    Parameters
    ----------
    lineage : TrackTable, dict, numpy.ndarray or None
        A `TrackTable`; a ``{child: parent}`` or ``{child: [parent, ...]}`` dict; or ``N x 4``
        CTC rows ``(L, B, E, P)`` (P = 0: no parent). None gives an empty graph.

    Returns
    -------
    dict of int to list of int
        Sorted by child id; children without a parent are left out.
    """
    if lineage is None:
        return {}
    if isinstance(lineage, TrackTable):
        return lineage.graph
    if isinstance(lineage, Mapping):
        graph = {}
        for child, parents in lineage.items():
            parents = [int(p) for p in (parents if isinstance(parents, (list, tuple)) else [parents])]
            parents = [p for p in parents if p]
            if parents:
                graph[int(child)] = parents
        return dict(sorted(graph.items()))
    rows = np.asarray(lineage)
    if rows.size == 0:
        return {}
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise TrackingError(f"lineage rows must be N x 4 (L B E P), got shape {rows.shape}")
    return {int(r[0]): [int(r[3])] for r in sorted(rows.tolist()) if r[3]}


def tracks_from_labels(
    labels: np.ndarray,
    lineage: LineageLike | None = None,
) -> tuple[np.ndarray, dict[int, list[int]]]:
    """Centroid tracks of a label stack, in the napari Tracks layer format.

    Parameters
    ----------
    labels : numpy.ndarray
        ``T x H x W`` integer label stack (``T x Z x Y x X`` works too), 0 is background.
        Each non-zero id is one track.
    lineage : TrackTable, dict, numpy.ndarray or None
        Parent links, in any form `lineage_graph` takes. Links naming an id that is not in
        `labels` are dropped (napari refuses them) with a warning.

    Returns
    -------
    tracks : numpy.ndarray
        ``N x 4`` float64 rows ``[track_id, t, y, x]`` (``N x 5`` ``[track_id, t, z, y, x]``
        for 4D labels): the centroid of each id in each frame it is present in, sorted by
        track id then frame. Frames where an id is absent are skipped.
    graph : dict of int to list of int
        ``{child_id: [parent_id]}`` for the napari Tracks layer ``graph`` argument.

    Raises
    ------
    ValueError
        If `labels` is not an integer array of at least 2 dimensions or holds negative ids.
    """
    labels = check_label_stack(labels, min_ndim=3)
    n_spatial = labels.ndim - 1
    rows: list[np.ndarray] = []
    for t in range(labels.shape[0]):
        frame = np.asarray(labels[t])
        ids, inverse, counts = np.unique(frame.ravel(), return_inverse=True, return_counts=True)
        keep = ids != 0
        if not keep.any():
            continue
        block = np.empty((int(keep.sum()), 2 + n_spatial), dtype=np.float64)
        block[:, 0] = ids[keep]
        block[:, 1] = t
        # sum of each coordinate per id (bincount over the compact ids), then divide by counts
        for axis in range(n_spatial):
            coord = np.indices(frame.shape, sparse=True)[axis]
            coord = np.broadcast_to(coord, frame.shape).ravel().astype(np.float64)
            sums = np.bincount(inverse.ravel(), weights=coord, minlength=ids.size)
            block[:, 2 + axis] = sums[keep] / counts[keep]
        rows.append(block)
    tracks = np.concatenate(rows) if rows else np.zeros((0, 2 + n_spatial), dtype=np.float64)
    tracks = tracks[np.lexsort((tracks[:, 1], tracks[:, 0]))]

    present = set(np.unique(tracks[:, 0]).astype(int).tolist())
    graph: dict[int, list[int]] = {}
    for child, parents in lineage_graph(lineage).items():
        kept = [p for p in parents if p in present]
        if child not in present or len(kept) != len(parents):
            logger.warning("lineage link %d -> %s names an id not in the labels; dropped", child, parents)
            continue
        graph[child] = kept
    return tracks, graph
