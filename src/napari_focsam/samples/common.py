"""Shared bits of the synthetic samples: the layer-data type and display contrast limits."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LayerDataTuple", "contrast_limits"]

#: What a napari sample-data command returns per layer: (data, layer kwargs, layer type).
LayerDataTuple = tuple[np.ndarray, dict[str, Any], str]


def contrast_limits(image: np.ndarray) -> list[float]:
    """Display contrast limits of a sample image (its 0.5 and 99.8 percentiles)."""
    low, high = np.percentile(image, [0.5, 99.8])
    return [float(low), float(high)]


# ---- 3D nuclei ---------------------------------------------------------------------------------
