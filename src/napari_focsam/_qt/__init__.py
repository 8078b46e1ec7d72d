"""The napari widget of napari-focsam (the only package that imports Qt and napari).

- :mod:`.widget` -- `FocSamWidget`, the dock widget ("FocSAM segmentation"),
- :mod:`.setup_panel`, :mod:`.objects_panel` -- its sections,
- :mod:`.prompt_layers` -- Points / Shapes layers -> prompts in image pixels (coordinate mapping),
- :mod:`.live` -- the live preview,
- :mod:`.commit`, :mod:`.axes` -- pure numpy / Python logic (commit, undo, axis layout),
- :mod:`.session`, :mod:`.tasks`, :mod:`.workers` -- models, the segmenter and worker threads.
"""

from .widget import FocSamWidget

__all__ = ["FocSamWidget"]
