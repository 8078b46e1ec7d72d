"""The models and the `Segmenter` of the widget, built lazily in worker threads (no Qt).

`SegmenterHolder` keeps at most one `Segmenter` (for the current image, axes and interactive
model) and the loaded models it uses; a task asks for it with a `SegmenterSpec` and gets the
cached one when nothing changed (the same data object and generation, axes, interactive model
and settings). The propagation model is loaded and attached only when propagation (or its
embeddings) is first asked for (`SegmenterHolder.attach_propagation`), so previews, commits
and undo never need its weights. All model work goes through `lock`: one task at a time drives
the models (the embedding stores have their own locks, so embedding may run beside it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..api.models import RANDOM_WEIGHTS, LoadedModel, load_model
from ..api.segmenter import Segmenter
from ..engine.tiling import Tiling
from ..errors import UserError
from ..families import ModelChoiceError, Role
from .axes import AxesError, AxisOption, ImageAxes

__all__ = ["LocalWeightsError", "ModelChoice", "SegmenterHolder", "SegmenterSpec", "SetupChoices",
           "weights_problem"]

logger = logging.getLogger(__name__)

#: How the dock names the place of each role's controls in its messages.
_ROLE_PLACE = {Role.INTERACTIVE: "the model", Role.PROPAGATION: "the propagation model"}


class LocalWeightsError(UserError):
    """A local checkpoint file chosen in the dock cannot be loaded for its model."""


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

    @property
    def local_file(self) -> Path | None:
        """The chosen checkpoint file (None: registry weights or random ones)."""
        if self.weights in (None, RANDOM_WEIGHTS):
            return None
        return Path(self.weights).expanduser()


@dataclass(frozen=True)
class SetupChoices:
    """The choices of the "Setup" section.

    Attributes
    ----------
    image : napari.layers.Image or None
    stack : AxisOption or None
        The chosen stack-axis entry (None: no usable choice).
    interactive, propagation : ModelChoice
    device, dtype : str
        As `load_model` takes them.
    tiling : Tiling
        Tiles for frames larger than the interactive model's input.
    """

    image: object
    stack: AxisOption | None
    interactive: ModelChoice
    propagation: ModelChoice
    device: str = "auto"
    dtype: str = "auto"
    tiling: Tiling = Tiling()

    def axes(self) -> ImageAxes:
        """The axis layout of `image` with the chosen `stack`.

        Raises
        ------
        AxesError
            No image layer, or one the widget cannot segment.
        """
        if self.image is None:
            raise AxesError("no image layer: open an image and choose it under Setup")
        ndim, rgb = int(self.image.ndim), bool(getattr(self.image, "rgb", False))
        if self.stack is None:
            return ImageAxes(ndim, None, rgb)
        return self.stack.axes(ndim, rgb)


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
        None when the axes do not propagate (a 2D image, "none (2D slices)"); loaded only
        when propagation is asked for, so it is not part of `key`.
    device, dtype : str
        As `load_model` takes them.
    cache_root : path, None or False
        The embeddings' disk cache (None: default; False: RAM only).
    tiling : Tiling
        Tiles for frames larger than the interactive model's input.
    """

    data: object
    generation: int
    axes: ImageAxes
    interactive: ModelChoice
    propagation: ModelChoice | None
    device: str = "auto"
    dtype: str = "auto"
    cache_root: object = None
    tiling: Tiling = Tiling()

    @property
    def key(self) -> tuple:
        """What the segmenter is built from, but `data` (compared by identity) and
        `propagation` (attached later)."""
        return (self.generation, self.axes, self.interactive, self.device, self.dtype,
                str(self.cache_root), self.tiling)

    def same_segmenter(self, other: SegmenterSpec | None) -> bool:
        """Whether `other` calls for the same segmenter: the same data object and equal keys."""
        return other is not None and other.data is self.data and other.key == self.key


def weights_problem(choice: ModelChoice, role: Role | str = Role.INTERACTIVE) -> str | None:
    """Why `choice` cannot be loaded now, in the dock's words (None: it can be tried).

    Quick checks only (the file exists, the registry checkpoint is in the cache); loading may
    still fail on a damaged file.
    """
    from ..weights import WEIGHTS, weights_status

    place = _ROLE_PLACE[Role(role)]
    if choice.random:
        return None
    local = choice.local_file
    if local is not None:
        return None if local.is_file() else (f"the local file {local} does not exist: choose "
                                              f"another checkpoint file for {place} under Setup")
    if choice.model_id not in WEIGHTS:
        return (f"{choice.model_id} has no released weights: choose a local checkpoint file for "
                f"{place} under Setup")
    if weights_status(choice.model_id) == "missing":
        return (f"the weights of {choice.model_id} are not downloaded: click 'Download' next to "
                f"{place}, or choose a local checkpoint file"
                + ("" if Role(role) is Role.INTERACTIVE else " for it"))
    return None


def _load(choice: ModelChoice, spec: SegmenterSpec, role: Role) -> LoadedModel:
    """`load_model` for `choice`, its errors worded for the dock (GUI actions, not API calls)."""
    from ..weights import WEIGHTS, WeightsNotAvailableError, cached_path

    problem = weights_problem(choice, role)
    if problem is not None:
        if choice.local_file is not None:
            raise LocalWeightsError(problem)
        if choice.model_id not in WEIGHTS:
            raise ModelChoiceError(problem)
        raise WeightsNotAvailableError(choice.model_id, str(cached_path(choice.model_id)), problem)
    local = choice.local_file
    weights = choice.weights if local is None else str(local)
    try:
        return load_model(choice.model_id, weights=weights, device=spec.device, dtype=spec.dtype,
                          role=role.value, offline=True)
    except WeightsNotAvailableError as exc:  # a cached file that fails its check
        reason = exc.__cause__ or "it fails its check"
        raise WeightsNotAvailableError(
            choice.model_id, exc.path,
            f"the downloaded weights of {choice.model_id} ({exc.path}) are damaged ({reason}): "
            f"delete that file and click 'Download' next to {_ROLE_PLACE[role]}, or choose a local "
            "checkpoint file") from exc
    except UserError as exc:
        if local is None:
            raise
        raise LocalWeightsError(
            f"the local file {local} cannot be used for {choice.model_id}: "
            f"{str(exc).rstrip('. ')}. Choose another file for {_ROLE_PLACE[role]} under Setup "
            "('…'), or clear it to use the downloaded weights") from exc


class SegmenterHolder:
    """Lazily built models and `Segmenter`; call `get` and `attach_propagation` with `lock` held."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._models: dict[tuple, LoadedModel] = {}
        self._segmenter: Segmenter | None = None
        self._spec: SegmenterSpec | None = None  # holds the data: its id is not reused meanwhile
        self._propagation: ModelChoice | None = None  # attached to the current segmenter

    @property
    def current(self) -> Segmenter | None:
        """The segmenter built last (None before the first `get`)."""
        return self._segmenter

    def matches(self, spec: SegmenterSpec) -> bool:
        """Whether `get(spec)` returns the current segmenter (no model to load)."""
        return self._segmenter is not None and spec.same_segmenter(self._spec)

    def propagation_attached(self, spec: SegmenterSpec) -> bool:
        """Whether `attach_propagation(spec)` has nothing to load."""
        return self.matches(spec) and self._propagation == spec.propagation

    def _model(self, choice: ModelChoice, spec: SegmenterSpec, role: Role,
               status: Callable[[str], None]) -> LoadedModel:
        key = (choice, spec.device, spec.dtype)
        if key not in self._models:
            status(f"Loading {choice.model_id}…")
            self._models[key] = _load(choice, spec, role)
        return self._models[key]

    def _free_unused(self, spec: SegmenterSpec) -> None:
        used = {(spec.interactive, spec.device, spec.dtype), (spec.propagation, spec.device, spec.dtype)}
        for key in [k for k in self._models if k not in used]:
            del self._models[key]  # free the models of an earlier choice

    def get(self, spec: SegmenterSpec, status: Callable[[str], None] | None = None) -> Segmenter:
        """The segmenter of `spec` with its interactive model (built if it is not the current
        one; the propagation model is not loaded here)."""
        status = status or (lambda _msg: None)
        if self.matches(spec):
            assert self._segmenter is not None
            return self._segmenter
        interactive = self._model(spec.interactive, spec, Role.INTERACTIVE, status)
        self._free_unused(spec)
        random = spec.interactive.random or (spec.propagation is not None and spec.propagation.random)
        cache_root = False if random else spec.cache_root
        axes = spec.axes
        self._segmenter = Segmenter(spec.data, interactive=interactive, stack_axis=axes.stack_axis,
                                    channel_axis=axes.channel_axis, outer_axis=axes.outer_axis,
                                    cache_root=cache_root, tiling=spec.tiling)
        self._spec = spec
        self._propagation = None
        logger.info("segmenter ready: %s, axes %s", spec.interactive.model_id, axes)
        return self._segmenter

    def attach_propagation(self, spec: SegmenterSpec,
                           status: Callable[[str], None] | None = None) -> Segmenter:
        """The segmenter of `spec` with its propagation model attached (loaded if needed).

        Raises
        ------
        AxesError
            `spec` has no propagation model (not a z / t stack).
        """
        status = status or (lambda _msg: None)
        if spec.propagation is None or not spec.axes.propagates:
            raise AxesError("propagation needs a z or t stack: choose a stack axis under Setup")
        seg = self.get(spec, status)
        if self._propagation != spec.propagation:
            model = (seg.interactive if spec.propagation == spec.interactive
                     else self._model(spec.propagation, spec, Role.PROPAGATION, status))
            seg.set_propagation(model)
            self._propagation = spec.propagation
            logger.info("propagation model attached: %s", spec.propagation.model_id)
        return seg

    def reset(self) -> None:
        """Drop the segmenter and the models (e.g. when the widget closes)."""
        self._segmenter = None
        self._spec = None
        self._propagation = None
        self._models.clear()
