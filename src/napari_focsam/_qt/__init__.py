"""The napari widgets of napari-focsam (the only package that imports Qt and napari).

- :mod:`.widget` -- `FocSamWidget`, the dock ("FocSAM segmentation"): composes the sections
  and the controllers, connects their signals, shows status and progress,
- :mod:`.controller` -- the segmenter of the Setup choices, the live preview, embeddings,
- :mod:`.propagation` -- propagation of the committed objects through the stack,
- :mod:`.setup_panel`, :mod:`.models_box`, :mod:`.prompts_panel`, :mod:`.objects_panel` -- the
  sections; :mod:`.bindings` -- their keys,
- :mod:`.live` -- the live preview; :mod:`.prepare` -- encoding the viewed slice ahead of the
  first click; :mod:`.status` -- status messages,
- :mod:`.layout`, :mod:`.layer_combo` -- scroll area, eliding combo boxes and status line that
  keep the docks usable on small screens; layer choices,
- :mod:`.prompt_layers` -- Points / Shapes layers -> prompts in image pixels,
- :mod:`.commit`, :mod:`.axes` -- pure numpy / Python logic (commit, undo, axis layout),
- :mod:`.session`, :mod:`.tasks`, :mod:`.workers` -- models, the segmenter and worker threads,
- :mod:`.tracking_panel` -- the "FocSAM tracking" dock.
"""

from .widget import FocSamWidget

__all__ = ["FocSamWidget"]
