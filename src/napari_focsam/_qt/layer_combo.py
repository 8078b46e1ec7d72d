"""A combo box of the viewer's layers of one type, kept in sync with ``viewer.layers``."""

from __future__ import annotations

import logging

from qtpy.QtCore import Signal

from .layout import ElidingComboBox

__all__ = ["LayerCombo"]

logger = logging.getLogger(__name__)


class LayerCombo(ElidingComboBox):
    """Layers of `layer_type` in `viewer`, by name, plus optional fixed entries first.

    Parameters
    ----------
    viewer : napari.Viewer
    layer_type : type
        E.g. ``napari.layers.Image``.
    none_text : str, optional
        Text of a first "no layer" entry (its layer is None); no such entry when omitted.
    accept : callable, optional
        ``accept(layer) -> bool``: only layers it accepts are listed (call `refresh` when
        what it depends on changes).
    auto_select : bool
        Select a layer added to the viewer while none is selected.
    watch : tuple of str
        Events of the layers (e.g. ``"metadata"``) after which `accept` is asked again.
    parent : QWidget, optional

    Signals
    -------
    layer_changed(object)
        The selected layer (or None) changed.
    refreshed()
        The list was rebuilt.
    """

    layer_changed = Signal(object)
    refreshed = Signal()

    def __init__(self, viewer, layer_type, *, none_text: str | None = None, accept=None,
                 auto_select: bool = True, watch: tuple[str, ...] = (), parent=None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._accept = accept or (lambda layer: True)
        self._auto_select = auto_select
        self._none_text = none_text
        self._watch = watch
        self._current = None
        self.currentIndexChanged.connect(self._on_index)
        events = viewer.layers.events
        for name in ("inserted", "removed", "reordered"):
            getattr(events, name).connect(self.refresh)
        self.refresh()

    def layers(self) -> list:
        """The listed layers (those of the type that `accept` accepts)."""
        return [layer for layer in self.candidates() if self._accept(layer)]

    def candidates(self) -> list:
        """The viewer's layers of the type, accepted or not."""
        return [layer for layer in self._viewer.layers if isinstance(layer, self._type)]

    def showPopup(self) -> None:
        self.refresh()  # what `accept` depends on may have changed without an event
        super().showPopup()

    def current_layer(self):
        """The selected layer, or None."""
        data = self.currentData()
        return data if data is not None and data in self._viewer.layers else None

    def _index_of(self, layer) -> int:
        for i in range(self.count()):
            if self.itemData(i) is layer:
                return i
        return -1

    def set_layer(self, layer) -> None:
        """Select `layer` (must be in the viewer; None selects the "no layer" entry)."""
        index = self._index_of(layer)
        if index >= 0:
            self.setCurrentIndex(index)

    def refresh(self, event=None) -> None:
        """Rebuild the list from the viewer's layers, keeping the selection when possible."""
        try:
            previous = self._current
            layers = self.layers()
            self.blockSignals(True)
            try:
                self.clear()
                if self._none_text is not None:
                    self.addItem(self._none_text, None)
                for layer in layers:
                    self.addItem(layer.name, layer)
                    layer.events.name.disconnect(self._rename)
                    layer.events.name.connect(self._rename)
                for layer in self.candidates():
                    for name in self._watch:
                        getattr(layer.events, name).disconnect(self._on_watched)
                        getattr(layer.events, name).connect(self._on_watched)
                if previous is not None and previous in layers:
                    self.setCurrentIndex(self._index_of(previous))
                elif self._auto_select and event is not None \
                        and getattr(event, "type", "") == "inserted" \
                        and event.value in layers and previous is None:
                    self.setCurrentIndex(self._index_of(event.value))
            finally:
                self.blockSignals(False)
            self._on_index(self.currentIndex())
            self.refreshed.emit()
        except RuntimeError:  # the combo was deleted while the viewer lives on
            logger.debug("layer combo gone", exc_info=True)

    def _on_watched(self, _event=None) -> None:
        self.refresh()

    def _rename(self, event=None) -> None:
        for i in range(self.count()):
            layer = self.itemData(i)
            if layer is not None:
                self.setItemText(i, layer.name)

    def _on_index(self, index: int) -> None:
        layer = self.itemData(index) if index >= 0 else None
        if layer is not self._current:
            self._current = layer
            self.layer_changed.emit(layer)
