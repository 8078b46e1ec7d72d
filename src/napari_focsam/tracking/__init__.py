"""Tracks and lineages of label stacks: napari Tracks layer data and Cell Tracking Challenge files.

Pure numpy (tifffile for writing); no Qt, no napari, no torch at import.

- :mod:`.table` -- `TrackTable`: begin / end frame and parent of every track, divisions,
- :mod:`.tracks` -- `tracks_from_labels`: per-id centroids per frame and the lineage graph,
  the data of a napari Tracks layer,
- :mod:`.division` -- `divide_object`: the division action (a mother becomes two daughters),
- :mod:`.ctc` -- `split_gaps`, `export_ctc` (atomic ``maskTTT.tif`` + ``res_track.txt``
  folders), `read_ctc_tracks`, `export_labels_tiff`.
"""

from .ctc import export_ctc, export_labels_tiff, read_ctc_tracks, split_gaps
from .division import DivisionError, divide_object
from .table import TrackingError, TrackTable, label_frames
from .tracks import lineage_graph, tracks_from_labels

__all__ = [
    "DivisionError",
    "TrackTable",
    "TrackingError",
    "divide_object",
    "export_ctc",
    "export_labels_tiff",
    "label_frames",
    "lineage_graph",
    "read_ctc_tracks",
    "split_gaps",
    "tracks_from_labels",
]
