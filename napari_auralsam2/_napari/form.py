"""The widget's controls (Qt only, no behaviour): grouped forms the widget wires up."""
from __future__ import annotations

import torch
from qtpy.QtGui import QValidator
from qtpy.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QFileDialog, QFormLayout, QFrame, QGroupBox,
                            QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QRadioButton, QSpinBox,
                            QVBoxLayout, QWidget)

from ..core.model.auralsam2 import IMAGE_SIZE_MULTIPLE, SAM2_CONFIGS
from ..core.session import DIRECTIONS
from .runner import AUDIO_FROM_FILE, AUDIO_FROM_VIDEO, AUDIO_NONE

AUDIO_CHOICES = {AUDIO_FROM_VIDEO: "the video's own sound", AUDIO_FROM_FILE: "an audio file",
                 AUDIO_NONE: "none (clicks only, plain SAM2)"}
WEIGHT_CHOICES = {"auto": "pretrained (released or your checkpoints)", "random": "random (pipeline test only)"}
IMAGE_SIZE_RANGE = (64, 2048)
MAX_OBJECT_ID = 65535
COMBO_CHARS = 12  # combo boxes may shrink to this many characters (keeps the dock narrow)
AUDIO_FILTER = "Audio or video (*.wav *.flac *.mp3 *.m4a *.ogg *.opus *.aac *.mp4 *.mov *.mkv *.webm *.avi);;All files (*)"
CHECKPOINT_FILTER = "Checkpoints (*.pth *.pt *.safetensors);;All files (*)"
RANDOM_STYLE = "color: #ff5252; font-weight: bold"
SHORTCUT_HINT = ("Click in '… clicks', draw boxes in '… boxes'. Keys (whatever layer is active): "
                 "T +/− click, N next object, S segment this frame, Shift-S propagate, A audio only, Esc cancel.")


def devices() -> list[str]:
    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def choice_box(choices: dict[str, str] | list[str]) -> QComboBox:
    """A combo box whose item data are the keys (or the strings themselves)."""
    box = QComboBox()
    box.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(COMBO_CHARS)
    items = choices.items() if isinstance(choices, dict) else ((c, c) for c in choices)
    for key, text in items:
        box.addItem(text, key)
    return box


def select(box: QComboBox, key: str) -> None:
    index = box.findData(key)
    if index >= 0:
        box.setCurrentIndex(index)


class SizeSpinBox(QSpinBox):
    """A spin box for the model's image size: only multiples of the size SAM2 can run at are kept;
    anything else typed is rounded to the nearest one when the edit ends."""

    def __init__(self, multiple: int = IMAGE_SIZE_MULTIPLE) -> None:
        super().__init__()
        self.multiple = multiple
        self.setRange(*IMAGE_SIZE_RANGE)
        self.setSingleStep(multiple)

    def validate(self, text: str, pos: int):
        state, text, pos = super().validate(text, pos)
        if state == QValidator.Acceptable and int(text) % self.multiple:
            state = QValidator.Intermediate
        return state, text, pos

    def fixup(self, text: str) -> str:
        try:
            value = int(text)
        except ValueError:
            return str(self.value())
        value = round(value / self.multiple) * self.multiple
        return str(min(max(value, self.minimum()), self.maximum()))

    def setValue(self, value: int) -> None:  # noqa: N802 - Qt's name
        super().setValue(int(self.fixup(str(value))))


class StatusBox(QPlainTextEdit):
    """What the last run did, in full (an error's whole message, not a cut-off toast): read-only, selectable."""

    LINES = 4

    def __init__(self) -> None:
        super().__init__()
        self.setReadOnly(True)
        self.setFrameShape(QFrame.NoFrame)
        self.setFixedHeight(self.fontMetrics().lineSpacing() * self.LINES + 8)

    def setText(self, text: str) -> None:  # noqa: N802 - QLabel's name
        self.setPlainText(text)

    def text(self) -> str:
        return self.toPlainText()


class PathField(QWidget):
    """A line edit with a browse button."""

    def __init__(self, caption: str, file_filter: str, placeholder: str = "") -> None:
        super().__init__()
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.browse = QPushButton("…")
        self.browse.setFixedWidth(28)
        self.browse.clicked.connect(lambda: self._pick(caption, file_filter))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(self.browse)

    def _pick(self, caption: str, file_filter: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, caption, self.edit.text(), file_filter)
        if path:
            self.edit.setText(path)
            self.edit.editingFinished.emit()

    @property
    def path(self) -> str:
        return self.edit.text().strip()


class Form(QWidget):
    """Every control of the AuralSAM2 dock widget, laid out in groups."""

    def __init__(self) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self._video_group())
        layout.addWidget(self._model_group())
        layout.addWidget(self._prompt_group())
        layout.addWidget(self._run_group())

    def _video_group(self) -> QGroupBox:
        group, form = _group("Video and sound")
        self.video = choice_box([])
        self.audio_mode = choice_box(AUDIO_CHOICES)
        self.audio_file = PathField("Audio for this video", AUDIO_FILTER, "wav, mp3, m4a… or a video")
        form.addRow("Video layer", self.video)
        form.addRow("Audio", self.audio_mode)
        form.addRow("Audio file", self.audio_file)
        return group

    def _model_group(self) -> QGroupBox:
        group, form = _group("Model")
        self.model = choice_box(list(SAM2_CONFIGS))
        self.image_size = SizeSpinBox()
        self.weights = choice_box(WEIGHT_CHOICES)
        self.checkpoint = PathField("AuralSAM2 checkpoint", CHECKPOINT_FILTER, "released file if empty")
        self.sam2_checkpoint = PathField("SAM2 checkpoint", CHECKPOINT_FILTER, "released file if empty")
        self.device = choice_box(devices())
        self.random_banner = QLabel("RANDOM WEIGHTS: pipeline test only")
        self.random_banner.setStyleSheet(RANDOM_STYLE)
        form.addRow("SAM2 size", self.model)
        form.addRow("Image size", self.image_size)
        form.addRow("Weights", self.weights)
        form.addRow("AuralSAM2 ckpt", self.checkpoint)
        form.addRow("SAM2 ckpt", self.sam2_checkpoint)
        form.addRow("Device", self.device)
        form.addRow(self.random_banner)
        return group

    def _prompt_group(self) -> QGroupBox:
        group, form = _group("Prompts")
        self.object_id = QSpinBox()
        self.object_id.setRange(1, MAX_OBJECT_ID)
        self.next_object = QPushButton("Next object (N)")
        row = QHBoxLayout()
        row.addWidget(self.object_id)
        row.addWidget(self.next_object)
        self.positive = QRadioButton("positive")
        self.negative = QRadioButton("negative")
        self.positive.setChecked(True)
        self.polarity = QButtonGroup(self)
        self.polarity.addButton(self.positive)
        self.polarity.addButton(self.negative)
        polarity = QHBoxLayout()
        polarity.addWidget(self.positive)
        polarity.addWidget(self.negative)
        hint = QLabel(SHORTCUT_HINT)
        hint.setWordWrap(True)
        form.addRow("Object id", row)
        form.addRow("Clicks (T)", polarity)
        form.addRow(hint)
        return group

    def _run_group(self) -> QGroupBox:
        group, form = _group("Run")
        self.direction = choice_box(list(DIRECTIONS))
        self.new_layer = QCheckBox("write each run to a new Labels layer")
        self.segment = QPushButton("Segment frame (S)")
        self.propagate = QPushButton("Propagate (⇧S)")
        self.audio_only = QPushButton("Audio only (A)")
        self.cancel = QPushButton("Cancel (Esc)")
        self.clear_object = QPushButton("Clear object")
        self.clear_frame = QPushButton("Clear frame")
        self.segment.setToolTip("Masks for the clicks/boxes on the current frame only (quick feedback)")
        self.propagate.setToolTip("Track every prompted object from the current frame")
        self.audio_only.setToolTip("No clicks: segment the sounding object through the whole video "
                                   "(object id above), starting at the current frame")
        self.clear_object.setToolTip("Remove the current object id from this frame of the masks layer "
                                     "(your edits of it included) so a run may write it again; Ctrl-Z undoes it")
        self.clear_frame.setToolTip("Empty this frame of the masks layer (your edits included) so a run may "
                                    "write it again; Ctrl-Z undoes it")
        first, second = QHBoxLayout(), QHBoxLayout()
        for button in (self.segment, self.propagate, self.audio_only):
            first.addWidget(button)
        for button in (self.cancel, self.clear_object, self.clear_frame):
            second.addWidget(button)
        self.status = StatusBox()
        form.addRow("Propagate", self.direction)
        form.addRow(self.new_layer)
        form.addRow(first)
        form.addRow(second)
        form.addRow(self.status)
        return group


def _group(title: str) -> tuple[QGroupBox, QFormLayout]:
    group = QGroupBox(title)
    form = QFormLayout(group)
    form.setContentsMargins(6, 6, 6, 6)
    return group, form
