"""The models and the `Segmenter` of the widget, built lazily in worker threads (no Qt).

`SegmenterHolder` keeps at most one `Segmenter` (for the current image, axes and models) and
the loaded models it uses; a task asks for it with a `SegmenterSpec` and gets the cached one
when nothing changed. All model work goes through `lock`: one task at a time drives the
models (the embedding stores have their own locks, so embedding may run beside it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..api.models import RANDOM_WEIGHTS, LoadedModel, load_model
from ..api.segmenter import Segmenter
from .axes import ImageAxes

__all__ = ["ModelChoice", "SegmenterHolder", "SegmenterSpec", "WeightsMissingError"]

logger = logging.getLogger(__name__)


class WeightsMissingError(RuntimeError):
    """The checkpoint of a registry model is not in the weights cache."""


@dataclass(frozen=True)
class ModelChoice:
    """A model as the user chose it.

    Attributes
    ----------
    model_id : str
        Registry id (``"sam_vit_b"``...) or config name (``"sam_test_tiny"``).
    weights : str or None
        None: the cached registry checkpoint; a file path; or ``"random"``.
    """

    model_id: str
    weights: str | None = None

    @property
    def random(self) -> bool:
        return self.weights == RANDOM_WEIGHTS


@dataclass(frozen=True, eq=False)
class SegmenterSpec:
    """Everything a `Segmenter` is built from.

    Attributes
    ----------
    data : array-like
        The image layer's data (highest resolution level).
    data_key : int
        Identifies `data` (the layer's id and the data object's id).
    axes : ImageAxes
    interactive : ModelChoice
    propagation : ModelChoice or None
        None for a 2D image.
    device, dtype : str
        As `load_model` takes them.
    cache_root : path, None or False
        The embeddings' disk cache (None: default; False: RAM only).
    """

    data: object
    data_key: tuple
    axes: ImageAxes
    interactive: ModelChoice
    propagation: ModelChoice | None
    device: str = "auto"
    dtype: str = "auto"
    cache_root: object = None

    @property
    def key(self) -> tuple:
        return (self.data_key, self.axes, self.interactive, self.propagation, self.device,
                self.dtype, str(self.cache_root))


def _check_weights(choice: ModelChoice) -> None:
    from ..weights import WEIGHTS, weights_status

    if choice.weights is not None or choice.model_id not in WEIGHTS:
        return
    if weights_status(choice.model_id) == "missing":
        raise WeightsMissingError(
            f"the weights of {choice.model_id} are not downloaded: click 'Download', or choose a "
            "local checkpoint file")


class SegmenterHolder:
    """Lazily built models and `Segmenter`; call `get` with `lock` held."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._models: dict[tuple, LoadedModel] = {}
        self._segmenter: Segmenter | None = None
        self._key: tuple | None = None

    @property
    def current(self) -> Segmenter | None:
        """The segmenter built last (None before the first `get`)."""
        return self._segmenter

    def matches(self, spec: SegmenterSpec) -> bool:
        return self._segmenter is not None and self._key == spec.key

    def _model(self, choice: ModelChoice, spec: SegmenterSpec, role: str,
               status: Callable[[str], None]) -> LoadedModel:
        key = (choice, spec.device, spec.dtype)
        if key not in self._models:
            _check_weights(choice)
            status(f"Loading {choice.model_id}…")
            weights = choice.weights
            if weights not in (None, RANDOM_WEIGHTS):
                weights = str(Path(weights).expanduser())
            self._models[key] = load_model(choice.model_id, weights=weights, device=spec.device,
                                           dtype=spec.dtype, role=role, offline=True)
        return self._models[key]

    def get(self, spec: SegmenterSpec, status: Callable[[str], None] | None = None) -> Segmenter:
        """The segmenter of `spec`, built (models loaded) if it is not the current one."""
        status = status or (lambda _msg: None)
        if self.matches(spec):
            assert self._segmenter is not None
            return self._segmenter
        interactive = self._model(spec.interactive, spec, "interactive", status)
        propagation = None
        if spec.propagation is not None and spec.axes.is_stack:
            propagation = (interactive if spec.propagation == spec.interactive
                           else self._model(spec.propagation, spec, "propagation", status))
        used = {(spec.interactive, spec.device, spec.dtype),
                (spec.propagation, spec.device, spec.dtype)}
        for key in [k for k in self._models if k not in used]:
            del self._models[key]  # free the models of an earlier choice
        random = spec.interactive.random or (spec.propagation is not None and spec.propagation.random)
        cache_root = False if random else spec.cache_root
        axes = spec.axes
        self._segmenter = Segmenter(spec.data, interactive=interactive, propagation=propagation,
                                    stack_axis=axes.stack_axis, channel_axis=axes.channel_axis,
                                    outer_axis=axes.outer_axis, cache_root=cache_root)
        self._key = spec.key
        logger.info("segmenter ready: %s, axes %s", spec.interactive.model_id, axes)
        return self._segmenter

    def reset(self) -> None:
        """Drop the segmenter and the models (e.g. when the widget closes)."""
        self._segmenter = None
        self._key = None
        self._models.clear()
