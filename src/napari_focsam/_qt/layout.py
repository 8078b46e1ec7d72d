"""Widgets that keep the docks usable on small screens: a vertical scroll area that never clips
the width, combo boxes that elide their text, and a status line of bounded height."""

from __future__ import annotations

from dataclasses import dataclass

from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtGui import QTextLayout
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QStyle,
    QStyleOptionComboBox,
    QStylePainter,
    QWidget,
)

__all__ = ["MAX_AREA", "ElidingComboBox", "SpinField", "StatusLabel", "VerticalScrollArea",
           "make_spin_box"]

#: Characters a combo box needs at least (its text is elided below its size hint).
COMBO_MIN_CHARS = 5
#: Text width (pixels) up to which a combo box asks for room for its longest entry.
COMBO_HINT_MAX = 150


class ElidingComboBox(QComboBox):
    """A combo box that may be narrower than its longest entry: the shown text is elided
    (``…``) and the full text is the tooltip; the popup lists the entries in full."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(COMBO_MIN_CHARS)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.currentTextChanged.connect(self._update_tooltip)
        self._tooltip = ""

    def setToolTip(self, text: str) -> None:
        """The tooltip shown after the current entry's full text."""
        self._tooltip = text
        self._update_tooltip()

    def _update_tooltip(self, *_args) -> None:
        text = self.currentText()
        super().setToolTip("\n".join(t for t in (text, self._tooltip) if t))

    def sizeHint(self) -> QSize:
        """Wide enough for the longest entry, up to `COMBO_HINT_MAX` pixels of text (the
        minimum stays `minimumContentsLength` characters)."""
        hint = super().sizeHint()
        metrics = self.fontMetrics()
        widest = max((metrics.horizontalAdvance(self.itemText(i)) for i in range(self.count())),
                     default=0)
        shown = metrics.horizontalAdvance("x") * self.minimumContentsLength()
        return QSize(hint.width() + max(0, min(widest, COMBO_HINT_MAX) - shown), hint.height())

    def showPopup(self) -> None:
        """Open the list at least as wide as its longest entry."""
        view = self.view()
        widest = max((self.fontMetrics().horizontalAdvance(self.itemText(i))
                      for i in range(self.count())), default=0)
        view.setMinimumWidth(widest + 40)
        super().showPopup()

    def paintEvent(self, _event) -> None:
        painter = QStylePainter(self)
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        field = self.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                            QStyle.SubControl.SC_ComboBoxEditField, self)
        option.currentText = self.fontMetrics().elidedText(option.currentText,
                                                           Qt.TextElideMode.ElideRight,
                                                           max(field.width() - 4, 0))
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)


class StatusLabel(QLabel):
    """A label wrapped to its width in at most `max_lines` lines: a longer text is elided
    (``…``) and shown in full as the tooltip. `text` returns the full text.

    Parameters
    ----------
    text : str
    max_lines : int
    """

    def __init__(self, text: str = "", max_lines: int = 4, parent=None) -> None:
        super().__init__(parent)
        self._full = ""
        self.max_lines = max_lines
        self.setWordWrap(False)  # wrapped here, line by line, so the elision is exact
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setText(text)

    def text(self) -> str:
        """The full text (the label may show it elided)."""
        return self._full

    def shown_text(self) -> str:
        """The text as shown (elided to `max_lines` lines)."""
        return super().text()

    def setText(self, text: str) -> None:
        self._full = str(text)
        self._layout_text()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._layout_text()

    def _layout_text(self) -> None:
        width = max(self.contentsRect().width() - 2, 40)
        spans = _wrapped_lines(self._full, self.font(), width)
        lines = [self._full[start:end].rstrip() for start, end in spans[:self.max_lines]]
        if len(spans) > self.max_lines:
            rest = self._full[spans[self.max_lines - 1][0]:].replace("\n", " ")
            lines[-1] = self.fontMetrics().elidedText(rest, Qt.TextElideMode.ElideRight, width)
        shown = "\n".join(lines)
        QLabel.setText(self, shown)
        self.setToolTip(self._full if len(spans) > self.max_lines else "")
        margins = self.contentsMargins()
        metrics = self.fontMetrics()  # + descent: the last line's underscores stay visible
        self.setFixedHeight(metrics.lineSpacing() * max(1, len(lines)) + metrics.descent()
                            + margins.top() + margins.bottom())


def _wrapped_lines(text: str, font, width: int) -> list[tuple[int, int]]:
    """(start, end) of each line of `text` word-wrapped at `width` pixels."""
    lines: list[tuple[int, int]] = []
    offset = 0
    for paragraph in text.split("\n"):
        layout = QTextLayout(paragraph, font)
        layout.beginLayout()
        while True:
            line = layout.createLine()
            if not line.isValid():
                break
            line.setLineWidth(width)
            lines.append((offset + line.textStart(), offset + line.textStart() + line.textLength()))
        layout.endLayout()
        if not paragraph:
            lines.append((offset, offset))
        offset += len(paragraph) + 1
    return lines


class VerticalScrollArea(QScrollArea):
    """Scrolls `widget` vertically, never horizontally: the area is as wide as the widget's
    minimum width (plus the scroll bar), so a dock can never be narrowed below it and clip
    the widget's right edge; it may be as short as `min_height`, and asks for at most
    `max_hint_height` (so that docks below it get their share of the height)."""

    def __init__(self, widget: QWidget, *, min_height: int = 120, max_hint_height: int = 100_000,
                 parent=None) -> None:
        super().__init__(parent)
        self._min_height = min_height
        self._max_hint_height = max_hint_height
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setWidget(widget)
        widget.installEventFilter(self)

    def _extra_width(self) -> int:
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:
        widget = self.widget()
        width = widget.minimumSizeHint().width() if widget is not None else 0
        return QSize(width + self._extra_width(), self._min_height)

    def sizeHint(self) -> QSize:
        widget = self.widget()
        if widget is None:
            return super().sizeHint()
        hint = widget.sizeHint()
        height = min(hint.height() + 2 * self.frameWidth(), self._max_hint_height)
        return QSize(hint.width() + self._extra_width(), height)

    def eventFilter(self, obj, event) -> bool:
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the widget's minimum width may have changed
        return super().eventFilter(obj, event)


#: Upper bound of the pixel-area settings' spin boxes.
MAX_AREA = 1 << 30


@dataclass(frozen=True)
class SpinField:
    """One numeric setting of a panel and its spin box (see `make_spin_box`).

    Attributes
    ----------
    name : str
        The setting's field name.
    label, tip : str
        Form label and tooltip.
    low, high : float
        Range.
    step : float
    decimals : int
        0: an integer box.
    suffix : str
    off : str
        Shown at `low` when it means "never" / "none".
    advanced : bool
        Folded under "Advanced".
    default : float or None
        Initial value (None: the box's own, `low`).
    """

    name: str
    label: str
    tip: str
    low: float
    high: float
    step: float = 1
    decimals: int = 0
    suffix: str = ""
    off: str = ""
    advanced: bool = False
    default: float | None = None


def make_spin_box(spec: SpinField) -> QSpinBox | QDoubleSpinBox:
    """The spin box of `spec` (no keyboard tracking: a value counts once it is entered)."""
    box = QDoubleSpinBox() if spec.decimals else QSpinBox()
    if spec.decimals:
        box.setDecimals(spec.decimals)
    box.setRange(spec.low, spec.high)
    box.setSingleStep(spec.step)
    box.setSuffix(spec.suffix)
    if spec.off:
        box.setSpecialValueText(spec.off)
    box.setToolTip(spec.tip)
    box.setKeyboardTracking(False)
    if spec.default is not None:
        box.setValue(spec.default)
    return box
