"""Both docks on a 1280 x 800 screen: the window fits, every control can be reached (scrolling
only vertically), long status texts stay bounded; the eliding combo and status widgets."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint, QRect
from qtpy.QtWidgets import QAbstractButton, QApplication, QComboBox, QLineEdit, QScrollArea

from napari_focsam._qt.layout import ElidingComboBox, StatusLabel

pytestmark = pytest.mark.gui

SCREEN = (1280, 800)
CONTROLS = (QAbstractButton, QComboBox, QLineEdit)
LONG_ERROR = ("the weights of sam2.1_hiera_tiny are not downloaded: click 'Download' next to the "
              "propagation model, or choose a local checkpoint file for it. ") * 4


def _settle(qtbot, ms: int = 300) -> None:
    qtbot.wait(ms)
    QApplication.processEvents()


def _reachable(control, dock) -> tuple[bool, str]:
    """Whether `control` is inside its dock horizontally and, vertically, inside the dock or
    reachable by scrolling its scroll area."""
    scroll = next((p for p in _parents(control) if isinstance(p, QScrollArea)), None)
    if scroll is not None:
        viewport = scroll.viewport()
        top_left = control.mapTo(viewport, QPoint(0, 0))
        box = QRect(top_left, control.size())
        inside_x = box.left() >= 0 and box.right() <= viewport.width()
        scroll_y = scroll.verticalScrollBar().value()
        reach = viewport.height() + scroll.verticalScrollBar().maximum()
        inside_y = box.top() + scroll_y >= 0 and box.bottom() + scroll_y <= reach
        return inside_x and inside_y, f"{box} in viewport {viewport.size()} (+{reach})"
    top_left = control.mapTo(dock, QPoint(0, 0))
    box = QRect(top_left, control.size())
    return dock.rect().contains(box), f"{box} in dock {dock.rect()}"


def _parents(widget):
    parent = widget.parentWidget()
    while parent is not None:
        yield parent
        parent = parent.parentWidget()


def test_both_docks_fit_a_1280x800_screen(make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setenv("NAPARI_FOCSAM_RANDOM_WEIGHTS", "1")
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((32, 128, 128), np.uint16), name="nuclei_3d")
    _, segmentation = viewer.window.add_plugin_dock_widget("napari-focsam", "FocSAM segmentation")
    _, tracking = viewer.window.add_plugin_dock_widget("napari-focsam", "FocSAM tracking")
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    _settle(qtbot)
    segmentation.controller.messages.error(LONG_ERROR)
    tracking._fail("cannot divide object 3 at frame 0: " + LONG_ERROR)
    _settle(qtbot)
    hint = window.minimumSizeHint()
    assert hint.width() <= SCREEN[0] and hint.height() <= SCREEN[1], hint
    assert window.width() <= SCREEN[0] and window.height() <= SCREEN[1]
    for widget in (segmentation, tracking):
        dock = widget.parentWidget()
        assert dock.isVisible() and dock.width() >= widget.minimumSizeHint().width()
        controls = [c for c in widget.findChildren(CONTROLS) if c.isVisibleTo(widget)]
        assert len(controls) >= 5
        for control in controls:
            ok, where = _reachable(control, dock)
            text = control.text() if hasattr(control, "text") else control.currentText()
            assert ok, f"{type(control).__name__} {text!r} of {type(widget).__name__}: {where}"
    # the long errors stay short and the buttons below the status stay in view
    for label in (segmentation.status_label, tracking.status):
        assert label.text().startswith(("the weights", "cannot divide"))
        assert label.shown_text().endswith("…") and label.toolTip() == label.text()
        assert label.height() <= 5 * label.fontMetrics().lineSpacing()
    ok, where = _reachable(segmentation.cancel_button, segmentation.parentWidget())
    assert ok, where


def test_eliding_combo_can_be_narrower_than_its_text(qtbot):
    combo = ElidingComboBox()
    qtbot.addWidget(combo)
    long_text = "SAM 2.1 base+ — unverified (a long model entry)"
    combo.addItems([long_text, "x"])
    combo.setToolTip("Model")
    assert combo.minimumSizeHint().width() < combo.fontMetrics().horizontalAdvance(long_text)
    assert combo.toolTip() == f"{long_text}\nModel"
    combo.setCurrentIndex(1)
    assert combo.toolTip() == "x\nModel"


def test_status_label_elides_to_its_lines(qtbot):
    label = StatusLabel("short", max_lines=3)
    qtbot.addWidget(label)
    label.resize(200, 100)
    label.show()
    assert label.shown_text() == "short" and label.toolTip() == ""
    label.setText(LONG_ERROR)
    assert label.text() == LONG_ERROR
    shown = label.shown_text()
    assert shown.count("\n") == 2 and shown.endswith("…") and label.toolTip() == LONG_ERROR
    assert label.height() < 4 * label.fontMetrics().lineSpacing()
