"""Write the synthetic sample images to TIFF files next to this script.

Run from the repository root with the project's environment::

    .venv/bin/python sample_data/make_samples.py

The data come from :func:`napari_focsam._sample_data.synthetic_nuclei_2d` (fixed seed), the
same function behind napari's File › Open Sample › napari-focsam entry.
"""

from __future__ import annotations

import logging
from pathlib import Path

import tifffile

from napari_focsam._sample_data import synthetic_nuclei_2d

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Regenerate ``nuclei_2d.tif`` and ``nuclei_2d_labels.tif`` in this folder."""
    image, labels = synthetic_nuclei_2d()
    for name, data in (("nuclei_2d.tif", image), ("nuclei_2d_labels.tif", labels)):
        path = HERE / name
        tifffile.imwrite(path, data, compression="zlib", metadata={"axes": "YX"})
        logger.info("wrote %s (%s %s, %d bytes)", path, data.shape, data.dtype, path.stat().st_size)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
