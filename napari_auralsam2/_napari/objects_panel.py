"""The objects panel: one row per object (colour, name, frames, prompts, audio, committed) and its actions.

Only display and editing live here; what an action does is the widget's (`widget.py`), and the
bookkeeping behind the rows is the core's `ObjectBook`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from magicgui.widgets import Container, PushButton
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from .labels import describe_frames

COLUMNS = ("", "id", "name", "text", "frames", "prompts", "audio", "committed")
COLOUR, ID, NAME, TEXT, FRAMES, PROMPTS, AUDIO, COMMITTED = range(len(COLUMNS))
TEXT_TIP = ("Ref-AVS weights only (Release: refavs): the words naming the sounding object, e.g. "
            "'the woman playing the violin'; the audio then picks which one sounds")
VISIBLE_ROWS = 5


@dataclass
class ObjectRow:
    """What the panel shows of one object."""

    object_id: int
    name: str
    text: str
    colour: tuple[float, float, float, float]  # the masks layer's colour for the id, RGBA 0..1
    frames: list[int]
    prompts: str  # e.g. "2 clicks, 1 box, audio on 7"
    audio: bool
    committed: bool


class ObjectsPanel(QWidget):
    """The table and its buttons; the widget sets the callbacks."""

    def __init__(self) -> None:
        super().__init__()
        self.on_select: Callable[[int], None] = lambda _k: None
        self.on_rename: Callable[[int, str], None] = lambda _k, _name: None
        self.on_text: Callable[[int, str], None] = lambda _k, _text: None
        self.on_audio: Callable[[int, bool], None] = lambda _k, _on: None
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeaderItem(TEXT).setToolTip(TEXT_TIP)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(PROMPTS, QHeaderView.Stretch)
        self.table.setFixedHeight(self.table.horizontalHeader().sizeHint().height()
                                  + VISIBLE_ROWS * self.table.verticalHeader().defaultSectionSize() + 4)
        self.jump = PushButton(text="Jump", tooltip="Go to the object's next prompt frame")
        self.rerun = PushButton(text="Re-run", tooltip="Propagate this object alone from its prompts; "
                                                       "other objects' masks stay as they are")
        self.correct = PushButton(text="Mask → prompt",
                                  tooltip="Send this object's mask on this frame (fix it with the brush first) "
                                          "to the model as a mask prompt and propagate the object from here")
        self.delete = PushButton(text="Delete", tooltip="Remove the object from every frame and its prompts "
                                                        "(Ctrl-Z in the masks layer brings its masks back)")
        self.commit = PushButton(text="Commit", tooltip="Move the finished object to the committed layer, "
                                                        "which no run writes to")
        self.reset = PushButton(text="Reset", tooltip="Forget every prompt and the session (masks stay)")
        buttons = Container(widgets=[self.jump, self.rerun, self.correct], layout="horizontal", labels=False)
        more = Container(widgets=[self.delete, self.commit, self.reset], layout="horizontal", labels=False)
        for row in (buttons, more):
            row.margins = (0, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addWidget(buttons.native)
        layout.addWidget(more.native)
        self._button_rows = (buttons, more)
        self._filling = False
        self.table.itemSelectionChanged.connect(self._selected)
        self.table.itemChanged.connect(self._edited)

    @property
    def selected(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return int(self.table.item(rows[0].row(), ID).text()) if rows else None

    def show_rows(self, rows: list[ObjectRow], selected: int | None) -> None:
        """Replace the rows (keeping the selection on `selected` when it is still there)."""
        self._filling = True
        try:
            self.table.setRowCount(len(rows))
            for i, row in enumerate(rows):
                swatch = QTableWidgetItem("")
                swatch.setBackground(QColor.fromRgbF(*row.colour))
                self._set(i, COLOUR, swatch)
                self._set(i, ID, QTableWidgetItem(str(row.object_id)))
                name = QTableWidgetItem(row.name)
                name.setFlags(name.flags() | Qt.ItemIsEditable)
                self._set(i, NAME, name, editable=True)
                text = QTableWidgetItem(row.text)
                text.setToolTip(TEXT_TIP)
                text.setFlags(text.flags() | Qt.ItemIsEditable)
                self._set(i, TEXT, text, editable=True)
                frames = QTableWidgetItem(f"{describe_frames(row.frames)} ({len(row.frames)})" if row.frames else "—")
                self._set(i, FRAMES, frames)
                self._set(i, PROMPTS, QTableWidgetItem(row.prompts or "—"))
                audio = QTableWidgetItem("")
                audio.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled | Qt.ItemIsSelectable)
                audio.setCheckState(Qt.Checked if row.audio else Qt.Unchecked)
                self._set(i, AUDIO, audio, editable=True)
                self._set(i, COMMITTED, QTableWidgetItem("yes" if row.committed else ""))
                if row.object_id == selected:
                    self.table.selectRow(i)
        finally:
            self._filling = False

    def _set(self, row: int, column: int, item: QTableWidgetItem, editable: bool = False) -> None:
        if not editable:
            item.setFlags(item.flags() & ~Qt.ItemIsEditable)
        self.table.setItem(row, column, item)

    def _selected(self) -> None:
        if not self._filling and self.selected is not None:
            self.on_select(self.selected)

    def _edited(self, item: QTableWidgetItem) -> None:
        if self._filling:
            return
        object_id = int(self.table.item(item.row(), ID).text())
        if item.column() == NAME:
            self.on_rename(object_id, item.text().strip())
        elif item.column() == TEXT:
            self.on_text(object_id, item.text().strip())
        elif item.column() == AUDIO:
            self.on_audio(object_id, item.checkState() == Qt.Checked)
