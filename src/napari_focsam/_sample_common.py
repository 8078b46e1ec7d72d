"""Shared bits of the synthetic samples: the layer-data type and display contrast limits."""

from __future__ import annotations

from typing import Any

import numpy as np

LayerDataTuple = tuple[np.ndarray, dict[str, Any], str]


def _contrast_limits(image: np.ndarray) -> list[float]:
    low, high = np.percentile(image, [0.5, 99.8])
    return [float(low), float(high)]


# ---- 3D nuclei ---------------------------------------------------------------------------------
