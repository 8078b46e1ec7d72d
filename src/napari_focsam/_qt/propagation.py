"""Propagation of the committed objects through the stack (part of the "Objects" section)."""

from __future__ import annotations

import logging

import numpy as np

from .commit import paint_frame
from .tasks import Failed, FrameResult, Status, propagate_task

__all__ = ["PropagationMixin", "writable_plane"]

logger = logging.getLogger(__name__)


def writable_plane(layer, plane: tuple[int, ...]) -> np.ndarray:
    """The ``(H, W)`` plane `plane` of a Labels layer's data, as a writable view.

    Raises
    ------
    TypeError
        The layer's data is not an in-memory numpy array (e.g. dask, zarr).
    """
    data = layer.data
    if not isinstance(data, np.ndarray):
        raise TypeError(f"the labels layer '{layer.name}' is not an in-memory numpy array "
                        f"({type(data).__name__}): FocSAM cannot write into it")
    return data[plane] if plane else data


class PropagationMixin:
    """Propagate every committed object with SAM 2, writing each finished frame at once.

    Used by `ObjectsPanel` (which provides ``owner``, ``viewer``, ``book``, ``_book_layer``,
    ``_propagation`` and ``_refresh_list``).
    """

    def propagate(self, direction: str) -> None:
        """Propagate every committed object (their prompts) through the stack."""
        owner = self.owner
        if owner.runner.running("propagate"):
            owner.report("Propagation is already running", True)
            return
        prompts = self.book.all_prompts()
        if not prompts:
            owner.report("Nothing to propagate: commit at least one object first", True)
            return
        target = self._book_layer
        if target is None or target not in self.viewer.layers:
            owner.report("The labels layer of the committed objects is gone", True)
            return
        try:
            spec = owner.spec()
        except Exception as exc:  # noqa: BLE001 - user errors (axes, no image)
            owner.report(str(exc), True)
            return
        if not spec.axes.is_stack:
            owner.report("Propagation needs a stack: choose a stack axis under Setup", True)
            return
        needed = spec.axes.labels_shape(spec.data.shape)
        if tuple(target.data.shape) != tuple(needed):
            owner.report(f"The labels layer '{target.name}' has shape {target.data.shape}, the image "
                         f"needs {needed}", True)
            return
        try:
            writable_plane(target, ())
        except TypeError as exc:
            owner.report(str(exc), True)
            return
        self._propagation = {"target": target, "image": owner.setup.image_layer(),
                             "ids": set(self.book.ids), "axes": spec.axes, "frames": set()}
        owner.runner.start("propagate", propagate_task, owner.holder, spec, prompts, direction,
                           on_event=self._on_propagation_event, on_done=self._on_propagation_done)
        owner.task_started("propagate")

    def _on_propagation_event(self, event) -> None:
        state = self._propagation
        if state is None:
            return
        if isinstance(event, Status):
            self.owner.report(event.text, False)
        elif isinstance(event, Failed):
            self.owner.report(f"Propagation failed: {event.message}", True)
        elif isinstance(event, FrameResult):
            target = state["target"]
            if target not in self.viewer.layers:
                return
            plane_index = state["axes"].plane_index(event.frame, event.outer)
            paint_frame(writable_plane(target, plane_index), event.labels, state["ids"],
                        plane_index=plane_index)
            target.refresh()
            state["frames"].add((event.outer, event.frame))
            self.owner.show_progress("Propagating", event.progress.done, event.progress.total)

    def _on_propagation_done(self, task) -> None:
        state, self._propagation = self._propagation, None
        if state is not None and state["frames"]:
            self.book.forget_history()  # the planes the commits changed were rewritten
            self._refresh_list()
        n_frames = len(state["frames"]) if state else 0
        if task.cancelled:
            self.owner.report(f"Propagation stopped ({task.reason}); the {n_frames} frame(s) written "
                              "are kept", task.reason != "cancelled by the user")
        elif task.failed is None:
            self.owner.report(f"Propagated {len(state['ids']) if state else 0} object(s) over "
                              f"{n_frames} frame(s)", False)
        self.owner.task_finished("propagate")

    def propagation_layers(self) -> tuple:
        """The labels and image layers of the running propagation (empty when none runs)."""
        state = self._propagation
        return () if state is None else (state["target"], state["image"])
