"""The models and the `Segmenter` of the widget, built lazily in worker threads (no Qt).

`SegmenterHolder` keeps at most one `Segmenter` (for the current image, axes and models) and
the loaded models it uses; a task asks for it with a `SegmenterSpec` and gets the cached one
when nothing changed (the same data object and generation, axes, models and settings). All
model work goes through `lock`: one task at a time drives the models (the embedding stores
have their own locks, so embedding may run beside it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..api.models import RANDOM_WEIGHTS, LoadedModel, load_model
from ..api.segmenter import Segmenter
from .axes import AxesError, ImageAxes

__all__ = ["ModelChoice", "SegmenterHolder", "SegmenterSpec", "SetupChoices"]

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class SetupChoices:
    """The choices of the "Setup" section.

    Attributes
    ----------
    image : napari.layers.Image or None
    stack_axis : int or None
        The chosen stack axis (None: a 2D image, or no usable choice).
    interactive, propagation : ModelChoice
    device, dtype : str
        As `load_model` takes them.
    """

    image: object
    stack_axis: int | None
    interactive: ModelChoice
    propagation: ModelChoice
    device: str = "auto"
    dtype: str = "auto"

    def axes(self) -> ImageAxes:
        """The axis layout of `image` with `stack_axis`.

        Raises
        ------
        AxesError
            No image layer, or one the widget cannot segment.
        """
        if self.image is None:
            raise AxesError("no image layer: open an image and choose it under Setup")
        return ImageAxes(int(self.image.ndim), self.stack_axis, bool(getattr(self.image, "rgb", False)))


@dataclass(frozen=True, eq=False)
class SegmenterSpec:
    """Everything a `Segmenter` is built from.

    Attributes
    ----------
    data : array-like
        The image layer's data (highest resolution level); compared by identity (``is``).
    generation : int
        Counts the changes of the image (another layer, or its ``events.data``): a segmenter
        of an earlier generation is not reused, even for the same data object.
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
    generation: int
    axes: ImageAxes
    interactive: ModelChoice
    propagation: ModelChoice | None
    device: str = "auto"
    dtype: str = "auto"
    cache_root: object = None

    @property
    def key(self) -> tuple:
        """Every attribute but `data`."""
        return (self.generation, self.axes, self.interactive, self.propagation, self.device,
                self.dtype, str(self.cache_root))

    def same_segmenter(self, other: SegmenterSpec | None) -> bool:
        """Whether `other` calls for the same segmenter: the same data object and equal keys."""
        return other is not None and other.data is self.data and other.key == self.key


def _check_weights(choice: ModelChoice) -> None:
    from ..weights import WEIGHTS, WeightsNotAvailableError, cached_path, weights_status

    if choice.weights is not None or choice.model_id not in WEIGHTS:
        return
    if weights_status(choice.model_id) == "missing":
        raise WeightsNotAvailableError(
            choice.model_id, str(cached_path(choice.model_id)),
            f"the weights of {choice.model_id} are not downloaded: click 'Download' next to the "
            "model, or choose a local checkpoint file")


class SegmenterHolder:
    """Lazily built models and `Segmenter`; call `get` with `lock` held."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._models: dict[tuple, LoadedModel] = {}
        self._segmenter: Segmenter | None = None
        self._spec: SegmenterSpec | None = None  # holds the data: its id is not reused meanwhile

    @property
    def current(self) -> Segmenter | None:
        """The segmenter built last (None before the first `get`)."""
        return self._segmenter

    def matches(self, spec: SegmenterSpec) -> bool:
        return self._segmenter is not None and spec.same_segmenter(self._spec)

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
        self._spec = spec
        logger.info("segmenter ready: %s, axes %s", spec.interactive.model_id, axes)
        return self._segmenter

    def reset(self) -> None:
        """Drop the segmenter and the models (e.g. when the widget closes)."""
        self._segmenter = None
        self._spec = None
        self._models.clear()
