"""`TrackTable`: begin / end frame and parent of every track (Cell Tracking Challenge style)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError

__all__ = ["TrackTable", "TrackingError", "check_label_stack", "label_frames"]


class TrackingError(UserError, ValueError):
    """Labels, a lineage or a tracking action that cannot be used (the message says why)."""

logger = logging.getLogger(__name__)


def label_frames(labels: np.ndarray) -> dict[int, np.ndarray]:
    """The frames in which each label id is present.

    Parameters
    ----------
    labels : numpy.ndarray
        ``T x ...`` integer label stack (``T x H x W`` or ``T x Z x Y x X``), 0 is background.

    Returns
    -------
    dict of int to numpy.ndarray
        ``{label_id: sorted 1D int64 array of the frame indices holding label_id}``, for every
        non-zero id of `labels`, ordered by id.

    Raises
    ------
    TrackingError
        If `labels` is not an integer array of at least 2 dimensions or holds negative ids.
    """
    labels = check_label_stack(labels)
    present: dict[int, list[int]] = {}
    for t in range(labels.shape[0]):
        for label_id in np.unique(labels[t]):
            if label_id:
                present.setdefault(int(label_id), []).append(t)
    return {k: np.asarray(present[k], dtype=np.int64) for k in sorted(present)}


def check_label_stack(labels: np.ndarray, min_ndim: int = 2) -> np.ndarray:
    """`labels` as an array of non-negative integer ids with at least `min_ndim` axes."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TrackingError(f"labels must be an integer array, got {labels.dtype}")
    if labels.ndim < min_ndim:
        raise TrackingError(f"labels must be a stack with time first (T x H x W), got shape {labels.shape}")
    if labels.size and labels.dtype.kind == "i" and labels.min() < 0:
        raise TrackingError("labels must not hold negative ids")
    return labels


@dataclass
class TrackTable:
    """Begin / end frame and parent of every track, as in a CTC ``res_track.txt``.

    A track is one label id present in one contiguous run of frames ``begin ... end``
    (inclusive). A track may have a parent: the mother cell it divided from, or, for a track
    that continues another one after a gap, that earlier track.

    Attributes
    ----------
    begin : dict of int to int
        ``{track_id: first frame}``.
    end : dict of int to int
        ``{track_id: last frame}`` (inclusive).
    parents : dict of int to int
        ``{track_id: parent track_id}``, only for tracks that have a parent.
    """

    begin: dict[int, int] = field(default_factory=dict)
    end: dict[int, int] = field(default_factory=dict)
    parents: dict[int, int] = field(default_factory=dict)

    # ---- construction ------------------------------------------------------------------

    @classmethod
    def from_labels(cls, labels: np.ndarray) -> TrackTable:
        """Tracks of a label stack: each id begins / ends at its first / last frame.

        Parameters
        ----------
        labels : numpy.ndarray
            ``T x H x W`` (or ``T x Z x Y x X``) integer label stack, 0 is background.

        Returns
        -------
        TrackTable
            One track per non-zero id, no parents. Gaps (an id missing in some frames between
            its first and last) are not split here; see `napari_focsam.tracking.split_gaps`.
        """
        frames = label_frames(labels)
        return cls(
            begin={k: int(v[0]) for k, v in frames.items()},
            end={k: int(v[-1]) for k, v in frames.items()},
        )

    def keep_links(self, other: TrackTable | None, *, except_parent: int | None = None
                   ) -> TrackTable:
        """Copy `other`'s parent links whose child and parent are both tracks of this table.

        Used when a table is rebuilt from edited labels: recorded divisions that still hold
        are kept. Links to `except_parent` are not copied. Returns this table (changed).
        """
        if other is not None:
            for child, parent in other.parents.items():
                if child in self.begin and parent in self.begin and parent != except_parent:
                    self.parents[child] = parent
        return self

    @classmethod
    def from_rows(cls, rows: Iterable[Iterable[int]] | np.ndarray) -> TrackTable:
        """A table from ``(L, B, E, P)`` rows (label, begin, end, parent; P = 0: no parent).

        Parameters
        ----------
        rows : iterable of 4 ints, or numpy.ndarray
            ``N x 4`` rows ``(label_id, begin_frame, end_frame, parent_id)``.

        Returns
        -------
        TrackTable

        Raises
        ------
        TrackingError
            A row without 4 entries, or a label id given twice.
        """
        table = cls()
        for row in rows:
            values = [int(v) for v in row]
            if len(values) != 4:
                raise TrackingError(f"a track row needs 4 values (L B E P), got {values}")
            label_id, begin, end, parent = values
            if label_id in table.begin:
                raise TrackingError(f"track {label_id} is listed twice")
            table.begin[label_id] = begin
            table.end[label_id] = end
            if parent:
                table.parents[label_id] = parent
        return table

    # ---- queries -----------------------------------------------------------------------

    @property
    def ids(self) -> list[int]:
        """Every track id, sorted."""
        return sorted(self.begin)

    def __len__(self) -> int:
        return len(self.begin)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self.begin

    def parent_of(self, track_id: int) -> int | None:
        """The parent of `track_id`, or None for a track without a parent.

        Raises
        ------
        KeyError
            If `track_id` is not in the table.
        """
        if track_id not in self.begin:
            raise KeyError(f"no track {track_id}")
        return self.parents.get(track_id)

    def children_of(self, track_id: int) -> list[int]:
        """The tracks whose parent is `track_id`, sorted."""
        return sorted(child for child, parent in self.parents.items() if parent == track_id)

    @property
    def graph(self) -> dict[int, list[int]]:
        """``{child_id: [parent_id]}``, the ``graph`` of a napari Tracks layer."""
        return {child: [self.parents[child]] for child in sorted(self.parents)}

    # ---- editing -----------------------------------------------------------------------

    def divide(self, parent: int, frame: int, daughters: tuple[int, int]) -> None:
        """Record that `parent` divided into `daughters` at `frame`.

        The parent's track ends at ``frame - 1``; both daughters begin at `frame` with
        `parent` as their parent. A daughter not yet in the table is added with
        ``begin = end = frame`` (widen its end with `extend` or rebuild from labels).

        Parameters
        ----------
        parent : int
            Id of the mother track; it must exist in a frame before `frame`.
        frame : int
            First frame of the daughters.
        daughters : tuple of int
            The two daughter ids: distinct, non-zero, different from `parent`.

        Raises
        ------
        TrackingError
            Unknown parent, a parent that begins at or after `frame`, a parent that already
            divided, bad daughter ids, or a daughter that already exists with another begin
            frame or another parent.
        """
        parent, frame = int(parent), int(frame)
        daughters = tuple(int(d) for d in daughters)
        if len(daughters) != 2 or daughters[0] == daughters[1]:
            raise TrackingError(f"a division needs two distinct daughter ids, got {daughters}")
        if parent not in self.begin:
            raise TrackingError(f"no track {parent} to divide")
        if self.begin[parent] >= frame:
            raise TrackingError(f"track {parent} begins at frame {self.begin[parent]}; it cannot "
                             f"divide at frame {frame}")
        if self.children_of(parent):
            raise TrackingError(f"track {parent} already divided into {self.children_of(parent)}")
        for d in daughters:
            if d <= 0 or d == parent:
                raise TrackingError(f"bad daughter id {d} for parent {parent}")
            if d in self.begin and self.begin[d] != frame:
                raise TrackingError(f"daughter {d} begins at frame {self.begin[d]}, not {frame}")
            if self.parents.get(d, parent) != parent:
                raise TrackingError(f"daughter {d} already has parent {self.parents[d]}")
        self.end[parent] = frame - 1
        for d in daughters:
            self.begin[d] = frame
            self.end[d] = max(self.end.get(d, frame), frame)
            self.parents[d] = parent
        logger.debug("track %d divides into %s at frame %d", parent, daughters, frame)

    def extend(self, track_id: int, frame: int) -> None:
        """Add `frame` to track `track_id` (creating the track), widening its begin / end."""
        track_id, frame = int(track_id), int(frame)
        self.begin[track_id] = min(self.begin.get(track_id, frame), frame)
        self.end[track_id] = max(self.end.get(track_id, frame), frame)

    # ---- checks and output -------------------------------------------------------------

    def validate(self) -> None:
        """Check the CTC rules: ``B <= E``, parents exist and end before their children begin.

        Raises
        ------
        TrackingError
            Naming the first track that breaks a rule.
        """
        for track_id in self.ids:
            if track_id <= 0:
                raise TrackingError(f"track ids must be positive, got {track_id}")
            begin, end = self.begin[track_id], self.end.get(track_id)
            if end is None or begin < 0 or end < begin:
                raise TrackingError(f"track {track_id}: bad frame range {begin} .. {end}")
        for child, parent in self.parents.items():
            if parent not in self.begin:
                raise TrackingError(f"track {child}: parent {parent} is not a track")
            if self.end[parent] >= self.begin[child]:
                raise TrackingError(f"track {child} begins at frame {self.begin[child]} but its parent "
                                 f"{parent} ends at frame {self.end[parent]}")

    def to_rows(self) -> np.ndarray:
        """``N x 4`` int64 rows ``(L, B, E, P)`` sorted by L (P = 0: no parent)."""
        rows = [(k, self.begin[k], self.end[k], self.parents.get(k, 0)) for k in self.ids]
        return np.asarray(rows, dtype=np.int64).reshape(-1, 4)

    def to_ctc_lines(self) -> list[str]:
        """The lines of a CTC ``res_track.txt`` / ``man_track.txt``: ``"L B E P"``, sorted by L."""
        return [" ".join(str(int(v)) for v in row) for row in self.to_rows()]

    def restricted_to(self, frames: Mapping[int, np.ndarray]) -> TrackTable:
        """Begin / end taken from `frames` (id -> frames present), parents kept where both exist.

        Parameters
        ----------
        frames : mapping of int to numpy.ndarray
            ``{label_id: sorted frame indices}`` as returned by `label_frames`.

        Returns
        -------
        TrackTable
            A new table with one track per id of `frames`; a parent link is kept when the
            parent is also in `frames`, and dropped (with a warning) otherwise.
        """
        out = TrackTable(
            begin={k: int(v[0]) for k, v in frames.items()},
            end={k: int(v[-1]) for k, v in frames.items()},
        )
        for child, parent in self.parents.items():
            if child in out.begin and parent in out.begin:
                out.parents[child] = parent
            elif child in out.begin:
                logger.warning("track %d: parent %d is not in the labels; link dropped", child, parent)
        missing = sorted(set(self.begin) - set(out.begin))
        if missing:
            logger.warning("tracks %s are not in the labels; left out", missing)
        return out
