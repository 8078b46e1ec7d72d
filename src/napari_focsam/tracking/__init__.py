"""Tracks and lineages of label stacks: napari Tracks layer data and Cell Tracking Challenge files.

Pure numpy (tifffile for writing); no Qt, no napari, no torch at import (except
:mod:`.track_all`, imported on its own).

- :mod:`.table` -- `TrackTable`: begin / end frame and parent of every track, divisions,
- :mod:`.tracks` -- `tracks_from_labels`: per-id centroids per frame and the lineage graph,
  the data of a napari Tracks layer,
- :mod:`.division` -- `divide_object`, `undo_division`: the division actions (a mother becomes two
  daughters; two daughters become their mother again),
- :mod:`.ctc` -- `split_gaps`, `check_ctc_folder`, `export_ctc` (atomic ``maskTTT.tif`` + ``res_track.txt``
  folders), `read_ctc_tracks`, `export_labels_tiff`,
- :mod:`.lifecycle` -- `TrackOptions` and the rules of "Track all": when a track starts (new
  objects), ends (lost objects) or divides,
- :mod:`.track_all` -- `TrackAll`: seed every object on one frame (from labels or automatic
  masks) and track them all through the stack with SAM 2 (torch).
"""

from .ctc import check_ctc_folder, export_ctc, export_labels_tiff, read_ctc_tracks, split_gaps
from .division import DivisionError, divide_object, undo_division
from .lifecycle import TrackOptions
from .table import TrackingError, TrackTable, label_frames
from .tracks import lineage_graph, tracks_from_labels

__all__ = [
    "DivisionError",
    "TrackOptions",
    "TrackTable",
    "TrackingError",
    "check_ctc_folder",
    "divide_object",
    "export_ctc",
    "export_labels_tiff",
    "label_frames",
    "lineage_graph",
    "read_ctc_tracks",
    "split_gaps",
    "tracks_from_labels",
    "undo_division",
]
