"""The viewport grid (1×1 … 4×4) over the Layout model."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QGridLayout, QWidget

from workstation.model.viewer import MAX_GRID, Layout
from workstation.qt.dispatch import on_gui_thread
from workstation.qt.viewport import ViewportWidget


class ViewerArea(QWidget):
    series_dropped = Signal(int, str)

    def __init__(self, layout: Layout | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = layout or Layout()
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(2)
        self.setStyleSheet("background: #202020;")
        self.widgets = [ViewportWidget(self.model, i, self) for i in range(MAX_GRID * MAX_GRID)]
        for w in self.widgets:
            w.series_dropped.connect(self.series_dropped)
        self._shape: tuple[int, int] = (0, 0)
        self.model.changed.connect(lambda: on_gui_thread(self._sync))
        self._sync()

    def _sync(self) -> None:
        """Rebuild the grid when the shape changes; repaint all (reference lines follow)."""
        shape = (self.model.rows, self.model.cols)
        if shape != self._shape:
            self._shape = shape
            for w in self.widgets:
                self.grid.removeWidget(w)
                w.hide()
            for k in range(shape[0] * shape[1]):
                w = self.widgets[k]
                self.grid.addWidget(w, k // shape[1], k % shape[1])
                w.show()
            for r in range(MAX_GRID):
                self.grid.setRowStretch(r, 1 if r < shape[0] else 0)
                self.grid.setColumnStretch(r, 1 if r < shape[1] else 0)
        for w in self.widgets[: shape[0] * shape[1]]:
            w.update()

    def active_widget(self) -> ViewportWidget:
        return self.widgets[self.model.active]

    def set_tool(self, tool: str) -> None:
        for w in self.widgets:
            w.set_tool(tool)
