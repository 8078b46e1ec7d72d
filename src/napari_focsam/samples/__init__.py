"""Synthetic sample data for napari's File › Open Sample menu (and for tests and demos).

The images are generated on the fly from a fixed seed, so they are identical on every call and
need no download. Only numpy and scikit-image are used here (no Qt, no napari).

- :mod:`.nuclei` -- `synthetic_nuclei_2d`: one 2D image of nuclei,
- :mod:`.timelapse` -- `synthetic_cell_timelapse`: a 2D + t movie of drifting, growing and
  dividing cells with ground-truth labels and a Cell Tracking Challenge style lineage,
- :mod:`.volume` -- `synthetic_nuclei_volume`: a 3D stack of ellipsoid nuclei with z
  attenuation,
- :mod:`.common` -- the layer-data type and display contrast limits they share.
"""

from .nuclei import make_sample_nuclei_2d, synthetic_nuclei_2d
from .timelapse import make_sample_cell_timelapse, synthetic_cell_timelapse
from .volume import make_sample_nuclei_3d, synthetic_nuclei_volume

__all__ = [
    "make_sample_cell_timelapse",
    "make_sample_nuclei_2d",
    "make_sample_nuclei_3d",
    "synthetic_cell_timelapse",
    "synthetic_nuclei_2d",
    "synthetic_nuclei_volume",
]
