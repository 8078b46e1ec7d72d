"""Write the synthetic sample images to TIFF files next to this script.

Run from the repository root with the project's environment::

    .venv/bin/python sample_data/make_samples.py

The data come from the fixed-seed generators in :mod:`napari_focsam.samples`
(`synthetic_nuclei_2d`, `synthetic_cell_timelapse`, `synthetic_nuclei_volume`), the same
functions behind napari's File › Open Sample › napari-focsam entries.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tifffile

from napari_focsam.samples import (
    synthetic_cell_timelapse,
    synthetic_nuclei_2d,
    synthetic_nuclei_volume,
)

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent


def _write_tiff(name: str, data: np.ndarray, axes: str) -> None:
    path = HERE / name
    tifffile.imwrite(path, data, compression="zlib", photometric="minisblack", metadata={"axes": axes})
    logger.info("wrote %s (%s %s, %d bytes)", path, data.shape, data.dtype, path.stat().st_size)


def lineage_text(lineage: np.ndarray) -> str:
    """``N x 4`` rows ``(L, B, E, P)`` as the text of a CTC ``man_track.txt``."""
    return "".join(" ".join(str(int(v)) for v in row) + "\n" for row in lineage)


def main() -> None:
    """Regenerate every sample file in this folder.

    ``nuclei_2d.tif`` / ``nuclei_2d_labels.tif`` (YX), ``cell_timelapse.tif`` /
    ``cell_timelapse_labels.tif`` (TYX) with ``cell_timelapse_lineage.txt`` (``L B E P``
    lines), ``nuclei_3d.tif`` / ``nuclei_3d_labels.tif`` (ZYX).
    """
    image, labels = synthetic_nuclei_2d()
    _write_tiff("nuclei_2d.tif", image, "YX")
    _write_tiff("nuclei_2d_labels.tif", labels, "YX")

    movie, movie_labels, lineage = synthetic_cell_timelapse()
    _write_tiff("cell_timelapse.tif", movie, "TYX")
    _write_tiff("cell_timelapse_labels.tif", movie_labels, "TYX")
    lineage_path = HERE / "cell_timelapse_lineage.txt"
    lineage_path.write_text(lineage_text(lineage), encoding="ascii")
    logger.info("wrote %s (%d tracks)", lineage_path, len(lineage))

    volume, volume_labels = synthetic_nuclei_volume()
    _write_tiff("nuclei_3d.tif", volume, "ZYX")
    _write_tiff("nuclei_3d_labels.tif", volume_labels, "ZYX")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
