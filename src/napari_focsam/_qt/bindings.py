"""FocSAM's keys and shift-click on the chosen prompt layers.

None of the keys clash with napari's default keymaps of Points and Shapes layers (``1``-``7``,
``A``, ``B``, ``D``, ``E``, ``F``, ``I``, ``L``, ``P``, ``R``, ``S``, ``X``, ``Z``...) or of
the viewer (``V``, arrows, ``Space``, ``Ctrl``-combinations).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping

from qtpy.QtCore import QTimer

from .prompt_layers import POSITIVE

__all__ = ["HELP", "KEYS", "NEGATIVE_CLICK", "PromptBindings"]

logger = logging.getLogger(__name__)

#: key -> (action name, what it does, on which layers).
KEYS = {
    "T": ("toggle_polarity", "toggle positive / negative clicks", ("points",)),
    "C": ("commit", "commit the previewed object", ("points", "shapes")),
    "U": ("undo_click", "undo the last click", ("points",)),
    "N": ("new_object", "start a new object", ("points", "shapes")),
}

#: The action a shift-click calls with the indices of the points it added.
NEGATIVE_CLICK = "set_negative_click"

HELP = ("Click: positive point · Shift+click: negative point · T: toggle positive/negative · "
        "C: commit object · U: undo last click · N: new object · in 'FocSAM boxes': a "
        "rectangle is a box, a polygon or ellipse is the object's mask")


class PromptBindings:
    """Binds FocSAM's keys (and shift-click for negative points) to the chosen layers.

    Parameters
    ----------
    actions : mapping of str to bound method
        The method of each action named in `KEYS`, and `NEGATIVE_CLICK` (``(indices) -> None``);
        held weakly, so a layer that outlives the widget never calls into a deleted widget.
    """

    def __init__(self, actions: Mapping[str, Callable]) -> None:
        missing = ({name for name, _, _ in KEYS.values()} | {NEGATIVE_CLICK}) - set(actions)
        if missing:
            raise ValueError(f"no method for the action(s) {sorted(missing)}")
        self._actions = {name: weakref.WeakMethod(method) for name, method in actions.items()}
        self._layers: dict[str, object] = {}
        self._shift = False
        self._callback = self._make_drag_callback()

    def _call(self, name: str, *args) -> None:
        method = self._actions[name]()
        if method is None:
            return
        try:
            method(*args)
        except RuntimeError:  # the widget's C++ object is gone
            logger.debug("FocSAM action %s after the widget was deleted", name, exc_info=True)

    def attach(self, kind: str, layer) -> None:
        """Bind the keys of `kind` (``"points"`` or ``"shapes"``) to `layer`, unbinding the previous."""
        previous = self._layers.pop(kind, None)
        if previous is layer:
            self._layers[kind] = layer
            return
        if previous is not None:
            self._detach(kind, previous)
        if layer is None:
            return
        for key, (name, _, kinds) in KEYS.items():
            if kind in kinds:
                layer.bind_key(key, self._key_handler(name), overwrite=True)
        if kind == "points":
            layer.mouse_drag_callbacks.insert(0, self._callback)
            layer.events.data.connect(self._on_points_data)
        self._layers[kind] = layer

    def _detach(self, kind: str, layer) -> None:
        for key, (_, _, kinds) in KEYS.items():
            if kind in kinds:
                layer.bind_key(key, None)
        if kind == "points":
            if self._callback in layer.mouse_drag_callbacks:
                layer.mouse_drag_callbacks.remove(self._callback)
            layer.events.data.disconnect(self._on_points_data)

    def detach_all(self) -> None:
        for kind, layer in list(self._layers.items()):
            self._detach(kind, layer)
        self._layers.clear()

    def _key_handler(self, name: str):
        def handler(_layer, name=name):
            self._call(name)

        handler.__doc__ = f"FocSAM: {name.replace('_', ' ')}"
        return handler

    def _make_drag_callback(self):
        ref = weakref.ref(self)

        def focsam_shift_click(layer, event):
            """Shift+click in add mode adds a negative point (FocSAM)."""
            bindings = ref()
            if bindings is None:
                return
            bindings._shift = str(layer.mode) == "add" and "Shift" in tuple(event.modifiers)
            yield
            while event.type == "mouse_move":
                yield
            QTimer.singleShot(0, bindings._clear_shift)

        return focsam_shift_click

    def _clear_shift(self) -> None:
        self._shift = False

    def _on_points_data(self, event) -> None:
        if not self._shift or str(getattr(event, "action", "")) != "added":
            return
        self._shift = False
        layer = self._layers.get("points")
        if layer is None or POSITIVE not in layer.features.columns:
            return
        indices = [i % len(layer.data) for i in getattr(event, "data_indices", (-1,))]
        self._call(NEGATIVE_CLICK, indices)
