"""napari-focsam: few-click segmentation (SAM, FocSAM) and stack propagation (SAM 2) in napari.

Importing the package is cheap: it imports neither torch, Qt nor napari. The subpackages are

- :mod:`napari_focsam.models` -- pure PyTorch model code (no Qt, no napari),
- :mod:`napari_focsam.engine` -- numpy/torch inference engine (no Qt, no napari),
- :mod:`napari_focsam.cli` -- the ``napari-focsam`` command line.
"""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
