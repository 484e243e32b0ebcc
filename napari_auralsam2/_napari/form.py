"""The widget's controls, without behaviour: magicgui widgets in titled groups that the widget wires up.

Qt is used only where magicgui has no widget: the group frames, the image-size box (it corrects a
size SAM2 cannot run at while it is typed) and the status box (several selectable lines).
"""
from __future__ import annotations

import torch
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, RadioButtons, SpinBox, Widget
from qtpy.QtGui import QValidator
from qtpy.QtWidgets import QFrame, QGroupBox, QPlainTextEdit, QSpinBox, QVBoxLayout, QWidget
from superqt import QCollapsible

from ..core.model.auralsam2 import IMAGE_SIZE_MULTIPLE, SAM2_CONFIGS
from ..core.session import DIRECTIONS
from ..core.weights import AURALSAM2_WEIGHTS, DEFAULT_RELEASE
from .runner import AUDIO_FROM_FILE, AUDIO_FROM_VIDEO, AUDIO_NONE

AUDIO_CHOICES = [("the video's own sound", AUDIO_FROM_VIDEO), ("an audio file", AUDIO_FROM_FILE),
                 ("none (clicks only, plain SAM2)", AUDIO_NONE)]
WEIGHT_CHOICES = [("pretrained (released or your checkpoints)", "auto"), ("random (pipeline test only)", "random")]
IMAGE_SIZE_RANGE = (64, 2048)
MAX_OBJECT_ID = 65535
AUDIO_FILTER = "*.wav *.flac *.mp3 *.m4a *.ogg *.opus *.aac *.mp4 *.mov *.mkv *.webm *.avi"
CHECKPOINT_FILTER = "*.pth *.pt *.safetensors"
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


def path_text(edit: FileEdit) -> str:
    """A FileEdit's path as typed or picked, "" when empty (its `value` would be '.', the working folder)."""
    return str(edit.line_edit.value).strip()


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


def row(*widgets: Widget, label: str = "") -> Container:
    """Widgets side by side (one row of a group, with an optional label)."""
    return Container(widgets=list(widgets), layout="horizontal", labels=False, label=label)


def group(title: str, *widgets: Widget | QWidget, collapsed: bool = False) -> QWidget:
    """A titled frame around magicgui widgets (labelled rows) and plain Qt widgets; `collapsed`: a
    section that opens on a click (for settings set once), keeping the dock short."""
    inner = QWidget()
    layout = QVBoxLayout(inner)
    layout.setContentsMargins(6, 6, 6, 6)
    form = Container(widgets=[w for w in widgets if isinstance(w, Widget)])
    form.margins = (0, 0, 0, 0)
    layout.addWidget(form.native)
    for widget in widgets:
        if isinstance(widget, QWidget):
            layout.addWidget(widget)
    if collapsed:
        box = QCollapsible(title)
        box.addWidget(inner)
    else:
        box = QGroupBox(title)
        QVBoxLayout(box).addWidget(inner)
        box.layout().setContentsMargins(0, 0, 0, 0)
    box.form = form  # keeps the magicgui container alive with its frame
    return box


class Form(QWidget):
    """Every control of the AuralSAM2 dock widget, laid out in groups."""

    def __init__(self) -> None:
        super().__init__()
        self.video = ComboBox(label="Video layer", choices=[], nullable=True)
        self.audio_mode = ComboBox(label="Audio", choices=AUDIO_CHOICES)
        self.audio_file = FileEdit(label="Audio file", filter=AUDIO_FILTER)

        self.model = ComboBox(label="SAM2 size", choices=list(SAM2_CONFIGS))
        self.image_size = SizeSpinBox()
        self.weights = ComboBox(label="Weights", choices=WEIGHT_CHOICES)
        self.release = ComboBox(label="Release", choices=list(AURALSAM2_WEIGHTS), value=DEFAULT_RELEASE,
                                tooltip="Which released AuralSAM2 weights: avs_v2 (default), avs_v1s, avs_v1m, or "
                                        "refavs (Ref-AVS: give each object a text in the objects panel)")
        self.checkpoint = FileEdit(label="AuralSAM2 ckpt", filter=CHECKPOINT_FILTER)
        self.sam2_checkpoint = FileEdit(label="SAM2 ckpt", filter=CHECKPOINT_FILTER)
        self.device = ComboBox(label="Device", choices=devices())
        self.compile = CheckBox(text="compile (torch.compile)",
                                tooltip="Compile the image encoder and fuser: the first window takes longer, later "
                                        "ones run faster on a GPU (little gain on a CPU)")
        self.random_banner = Label(value="RANDOM WEIGHTS: pipeline test only")
        self.random_banner.native.setStyleSheet(RANDOM_STYLE)

        self.object_id = SpinBox(label="Object id", min=1, max=MAX_OBJECT_ID, value=1)
        self.next_object = PushButton(text="Next object (N)")
        self.polarity = RadioButtons(label="Clicks (T)", choices=[("positive", True), ("negative", False)],
                                     orientation="horizontal", value=True)
        hint = Label(value=SHORTCUT_HINT)
        hint.native.setWordWrap(True)

        self.direction = ComboBox(label="Propagate", choices=list(DIRECTIONS))
        self.new_layer = CheckBox(text="write each run to a new Labels layer")
        self.segment = PushButton(text="Segment frame (S)",
                                  tooltip="Masks for the clicks/boxes on the current frame only (quick feedback)")
        self.propagate = PushButton(text="Propagate (⇧S)", tooltip="Track every prompted object from this frame")
        self.audio_only = PushButton(text="Audio only (A)",
                                     tooltip="No clicks: the sounding object becomes the current object id, "
                                             "tracked through the whole video from this frame")
        self.cancel = PushButton(text="Cancel (Esc)")
        self.clear_object = PushButton(text="Clear object",
                                       tooltip="Remove the current object id from this frame of the masks layer "
                                               "(your edits of it included) so a run may write it again; Ctrl-Z "
                                               "undoes it")
        self.clear_frame = PushButton(text="Clear frame",
                                      tooltip="Empty this frame of the masks layer (your edits included) so a run "
                                              "may write it again; Ctrl-Z undoes it")
        self.status = StatusBox()

        size = Container(widgets=[], label="Image size")  # a row holding the Qt size box
        size.native.layout().addWidget(self.image_size)
        size.margins = (0, 0, 0, 0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.random_banner.native)  # outside the folded model settings: always in sight
        for box in (
            group("Video and sound", self.video, self.audio_mode, self.audio_file),
            group("Model (size, weights, device)", self.model, size, self.weights, self.release, self.checkpoint,
                  self.sam2_checkpoint, self.device, self.compile, collapsed=True),
            group("Prompts", row(self.object_id, self.next_object, label="Object id"), self.polarity, hint),
            group("Run", self.direction, self.new_layer, row(self.segment, self.propagate, self.audio_only),
                  row(self.cancel, self.clear_object, self.clear_frame), self.status),
        ):
            layout.addWidget(box)

    @property
    def positive(self) -> bool:
        return bool(self.polarity.value)

    @property
    def audio_path(self) -> str:
        return path_text(self.audio_file)

    @property
    def checkpoint_path(self) -> str:
        return path_text(self.checkpoint)

    @property
    def sam2_checkpoint_path(self) -> str:
        return path_text(self.sam2_checkpoint)


def set_path(edit: FileEdit, text: str) -> None:
    edit.line_edit.value = text  # not `value`, which turns "" into the working folder
