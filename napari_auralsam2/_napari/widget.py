"""The AuralSAM2 dock widget: pick a video and its sound, click objects (or not), get masklets as Labels.

Model work runs in a napari worker (`create_worker`) so the viewer stays live; each finished frame
is shown in the Labels layer from the GUI thread as it arrives and the whole run becomes one step of
the layer's undo history when it ends (`labels.py`), writing only what the user has not edited
(`ledger.py`). Every run ends — finished, cancelled or failed — with the widget ready again. The dock
owns its runs and its session: closing it cancels the run in flight, waits for it to stop and lets go
of every viewer event, key and layer it used.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton
from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import create_worker
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import QGroupBox, QVBoxLayout, QWidget

from ..core.export import FORMATS
from .audio_plot import AudioPlot, energy_envelope
from .form import Form, set_path
from .keys import Shortcuts
from .objects_panel import ObjectsPanel
from .prompts import BOXES_SUFFIX, POINTS_SUFFIX, defaults, make_boxes_layer, make_points_layer
from .reader import AUDIO_SOURCE_KEY, FPS_KEY, VIDEO_PATH_KEY, claim_video_extensions
from .runner import AUDIO_FROM_FILE, DEFAULT_FPS, SessionSlot, VideoSpec, audio_and_times
from .settings import WidgetSettings, load_settings, save_settings
from .sound import SoundControls
from .widget_runs import Run, RunsMixin
from .widget_work import WorkMixin, ask, pick_folder
from .work import VideoWork

if TYPE_CHECKING:
    import napari

LOGGER = logging.getLogger(__name__)
STOP_WAIT_S = 120.0  # closing the dock waits this long for the frame in flight
REFRESH_DELAY_MS = 300  # the objects panel follows edits after this pause (counting frames reads every frame)


def _load_sound(spec: VideoSpec) -> tuple:
    """(track or None, envelope or None, frame times, note) for the plot and the player, off the GUI thread."""
    try:
        track, times = audio_and_times(spec)
    except Exception as error:  # the plot only informs; a run reports the same problem as an error
        return None, None, np.arange(spec.frames.shape[0]) / spec.fps, f"audio unreadable: {error}"
    return track, (None if track is None else energy_envelope(track)), times, "no audio"


class AuralSAM2Widget(RunsMixin, WorkMixin, QWidget):
    """Dock widget driving the core segmentation session from napari layers."""

    ask = staticmethod(ask)  # yes/no questions and folder choices go through these (tests replace them)
    pick_folder = staticmethod(pick_folder)

    def __init__(self, napari_viewer: "napari.viewer.Viewer", sound_backend=None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.form = Form()
        self.objects = ObjectsPanel()
        self.plot = AudioPlot()
        self.sound = SoundControls(self.viewer, self._shown_frame, backend=sound_backend)
        self.save_button = PushButton(text="Save", tooltip="Save this video's work beside it "
                                                           "(<video>.auralsam2.npz); it is then saved after every "
                                                           "run and commit, and offered back when the video is opened")
        self.export_format = ComboBox(choices=list(FORMATS), value="png", tooltip="Export format")
        self.export_button = PushButton(text="Export…", tooltip="Write the masks (committed and working) "
                                                                "into a folder you pick")
        files = Container(widgets=[self.save_button, self.export_format, self.export_button], layout="horizontal",
                          labels=False)
        objects, work = QGroupBox("Objects"), QGroupBox("Sound and files")
        QVBoxLayout(objects).addWidget(self.objects)
        work_layout = QVBoxLayout(work)
        for part in (self.sound.container, files):
            work_layout.addWidget(part.native)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.form)
        layout.addWidget(objects)
        layout.addWidget(work)
        layout.addWidget(self.plot)
        layout.addStretch(1)
        self._files_row = files
        self.run: Run | None = None
        self.slot = SessionSlot()  # this dock's session, never shared with another dock
        self.works: dict = {}  # video layer's unique_id -> its VideoWork
        self.closed = False
        self._named_layers: list = []  # layers whose name events we follow
        self._hooks: list = []  # (emitter, callback) this dock connected on layers
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_DELAY_MS)
        self._refresh_timer.timeout.connect(self.refresh_objects)
        self._plot_token = 0
        live = self._live_runs = []  # for the destroyed signal, which must not reach back into self
        self.destroyed.connect(lambda *_: [run.cancel.set() for run in live])
        self.shortcuts = Shortcuts(self.viewer, {
            "t": self.toggle_polarity, "n": self.next_object, "s": lambda: self.start("frame"),
            "Shift-S": lambda: self.start("propagate"), "a": lambda: self.start("audio"), "Escape": self.cancel},
            running=lambda: self.running)
        self._apply_settings(load_settings())
        self._connect()
        self._refresh_layers()
        self._set_busy(False)
        claim_video_extensions()

    @property
    def running(self) -> bool:
        return self.run is not None

    # -- wiring --------------------------------------------------------------------------------
    def _connect(self) -> None:
        f = self.form
        for control in (f.model, f.weights, f.release, f.device, f.direction, f.audio_mode, f.checkpoint,
                        f.sam2_checkpoint, f.audio_file, f.new_layer, f.compile):
            control.changed.connect(self._settings_changed)
        f.image_size.valueChanged.connect(self._settings_changed)
        f.audio_mode.changed.connect(self._refresh_audio)
        f.audio_file.changed.connect(self._refresh_audio)
        f.video.changed.connect(self._video_changed)
        f.object_id.changed.connect(self._prompt_defaults_changed)
        f.polarity.changed.connect(self._prompt_defaults_changed)
        f.next_object.clicked.connect(self.next_object)
        f.segment.clicked.connect(lambda: self.start("frame"))
        f.propagate.clicked.connect(lambda: self.start("propagate"))
        f.audio_only.clicked.connect(lambda: self.start("audio"))
        f.cancel.clicked.connect(self.cancel)
        f.clear_object.clicked.connect(lambda: self.clear_current_frame(only_object=True))
        f.clear_frame.clicked.connect(lambda: self.clear_current_frame())
        o = self.objects
        o.on_select = self.select_object
        o.on_rename = lambda k, name: setattr(self._video_work().book.get(k), "name", name)
        o.on_audio = lambda k, on: setattr(self._video_work().book.get(k), "audio_guidance", on)
        o.on_text = lambda k, text: setattr(self._video_work().book.get(k), "text", text)
        o.jump.clicked.connect(self.jump_to_prompt)
        o.rerun.clicked.connect(lambda: self.start("object"))
        o.correct.clicked.connect(lambda: self.start("correct"))
        o.delete.clicked.connect(self.delete_object)
        o.commit.clicked.connect(self.commit_object)
        o.reset.clicked.connect(self.reset_objects)
        self.save_button.clicked.connect(self.save)
        self.export_button.clicked.connect(self.export)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.dims.events.current_step.connect(self._step_changed)

    def _disconnect(self) -> None:
        self.viewer.layers.events.inserted.disconnect(self._refresh_layers)
        self.viewer.layers.events.removed.disconnect(self._refresh_layers)
        self.viewer.dims.events.current_step.disconnect(self._step_changed)
        for layer in self._named_layers:
            layer.events.name.disconnect(self._refresh_layers)
        self._named_layers.clear()
        for emitter, callback in self._hooks:
            emitter.disconnect(callback)
        self._hooks.clear()
        self._refresh_timer.stop()
        self.shortcuts.release()
        self.sound.close()

    def event(self, event: QEvent) -> bool:
        # napari takes the widget out of its dock (parent None) when the dock is closed or removed
        if event.type() == QEvent.ParentChange and self.parent() is None:
            self.close_down()
        return super().event(event)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.close_down()
        super().closeEvent(event)

    def close_down(self) -> None:
        """Cancel the run in flight, wait for it to stop, keep what it wrote, let go of the viewer."""
        if self.closed:
            return
        self.closed = True
        run, self.run = self.run, None
        stopped = True
        if run is not None:
            run.cancel.set()
            stopped = run.stopped.wait(STOP_WAIT_S)
            if not stopped:
                LOGGER.warning("AuralSAM2: the run did not stop within %.0f s of closing the dock", STOP_WAIT_S)
            self._end_run(run)
        self._disconnect()
        if stopped:
            self.slot.close()

    def _apply_settings(self, s: WidgetSettings) -> None:
        f = self.form
        for control, value in ((f.model, s.model), (f.weights, s.weights), (f.release, s.release),
                               (f.device, s.device), (f.direction, s.direction)):
            if value in control.choices:
                control.value = value
        f.image_size.setValue(s.image_size)
        set_path(f.checkpoint, s.checkpoint)
        set_path(f.sam2_checkpoint, s.sam2_checkpoint)
        f.new_layer.value = s.new_layer_each_run
        f.compile.value = s.compile
        f.random_banner.visible = s.weights == "random"

    def current_settings(self) -> WidgetSettings:
        f = self.form
        return WidgetSettings(model=f.model.value, image_size=f.image_size.value(), weights=f.weights.value,
                              checkpoint=f.checkpoint_path, sam2_checkpoint=f.sam2_checkpoint_path,
                              device=f.device.value, direction=f.direction.value, new_layer_each_run=f.new_layer.value,
                              release=f.release.value, compile=f.compile.value)

    def _settings_changed(self, *_) -> None:
        settings = self.current_settings()
        self.form.random_banner.visible = settings.weights == "random"
        self.form.audio_file.enabled = self.form.audio_mode.value == AUDIO_FROM_FILE and not self.running
        save_settings(settings)

    # -- layers --------------------------------------------------------------------------------
    def video_layers(self) -> list[Image]:
        """Image layers with a time axis: (T, Y, X) or RGB (T, Y, X, 3)."""
        return [layer for layer in self.viewer.layers if isinstance(layer, Image) and layer.ndim == 3]

    def video_layer(self) -> Image | None:
        layer = self.form.video.value
        return layer if layer is not None and layer in self.viewer.layers else None

    def _refresh_layers(self, *_) -> None:
        if self.closed:
            return
        box, current = self.form.video, self.form.video.value
        layers = self.video_layers()
        with box.changed.blocked():
            box.choices = [(layer.name, layer) for layer in layers]
            box.value = current if any(current is layer for layer in layers) else (layers[0] if layers else None)
        for layer in layers:
            if all(layer is not seen for seen in self._named_layers):
                layer.events.name.connect(self._refresh_layers)
                self._named_layers.append(layer)
        if box.value is not current:
            self._video_changed()

    def _video_changed(self, *_) -> None:
        video = self.video_layer()
        if video is not None and not self.running:
            points, _ = self.prompt_layers(video, create=True)
            if points is not None and len(points.feature_defaults):  # a reopened dock goes on where it was
                self.form.object_id.value = int(points.feature_defaults["object_id"].iloc[0])
            self.offer_restore(video)
        self._refresh_audio()
        self.refresh_objects()

    def work(self, video: Image) -> VideoWork:
        """The annotation of a video layer (its objects, masks and committed layers)."""
        if video.unique_id not in self.works:
            self.works[video.unique_id] = VideoWork(self.viewer, video)
        return self.works[video.unique_id]

    def _video_work(self) -> VideoWork | None:
        video = self.video_layer()
        return self.work(video) if video is not None else None

    def _follow(self, emitter) -> None:
        """Refresh the objects panel (after a pause) when the emitter fires; undone on close."""
        if all(emitter is not seen for seen, _ in self._hooks):
            emitter.connect(self._schedule_refresh)
            self._hooks.append((emitter, self._schedule_refresh))

    def _schedule_refresh(self, *_) -> None:
        if not self.closed and not self.running:
            self._refresh_timer.start()

    def _named(self, name: str, kind: type):
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, kind) else None

    def prompt_layers(self, video: Image, create: bool = False) -> tuple[Points | None, Shapes | None]:
        """The clicks and boxes layers of a video (created, with their keys, when asked)."""
        points = self._named(video.name + POINTS_SUFFIX, Points)
        boxes = self._named(video.name + BOXES_SUFFIX, Shapes)
        if create and boxes is None:
            boxes = self.viewer.add_layer(make_boxes_layer(video, self.form.object_id.value))
        if create and points is None:
            points = self.viewer.add_layer(make_points_layer(video, self.form.object_id.value,
                                                             self.form.positive))
            points.mode = "add"
            self.viewer.layers.selection.active = points
        for layer in (points, boxes):
            if layer is not None:
                self.shortcuts.bind_layer(layer)
                self._follow(layer.events.data)
        return points, boxes

    def output_layer(self, video: Image) -> Labels:
        """The masks layer a run writes to (a new one when asked), added without changing the active layer."""
        layer = self.work(video).masks_layer(create=True, new=self.form.new_layer.value)
        self.shortcuts.bind_layer(layer)
        for emitter in (layer.events.set_data, layer.events.paint):  # undo/redo and the user's strokes
            self._follow(emitter)
        return layer

    def current_frame(self, video: Image) -> int:
        position = video.world_to_data(self.viewer.dims.point)
        return int(np.clip(round(float(position[0])), 0, video.data.shape[0] - 1))

    # -- prompts -------------------------------------------------------------------------------
    def _prompt_defaults_changed(self, *_) -> None:
        video = self.video_layer()
        if video is None:
            return
        points, boxes = self.prompt_layers(video)
        object_id = self.form.object_id.value
        if points is not None:
            points.feature_defaults = defaults(object_id, self.form.positive)
        if boxes is not None:
            boxes.feature_defaults = {"object_id": object_id}

    def toggle_polarity(self) -> None:
        self.form.polarity.value = not self.form.positive

    def next_object(self) -> None:
        """Switch to a new object id: one above every id in use."""
        used = [self.form.object_id.value]
        video = self.video_layer()
        for layer in self.prompt_layers(video) if video is not None else ():
            if layer is not None and len(layer.features):
                used.append(int(layer.features["object_id"].max()))
        self.form.object_id.value = max(used) + 1
        self.form.polarity.value = True

    # -- audio plot ----------------------------------------------------------------------------
    def video_spec(self, video: Image) -> VideoSpec:
        meta = video.metadata
        return VideoSpec(layer_id=video.unique_id, path=meta.get(VIDEO_PATH_KEY), frames=video.data,
                         fps=float(meta.get(FPS_KEY) or DEFAULT_FPS), audio_mode=self.form.audio_mode.value,
                         audio_file=self.form.audio_path, audio_source=meta.get(AUDIO_SOURCE_KEY))

    def _refresh_audio(self, *_) -> None:
        self._plot_token += 1
        video = self.video_layer()
        if video is None:
            self.plot.show_energy(None, np.zeros(0), "no video")
            return
        token = self._plot_token
        self.plot.show_energy(None, np.zeros(0), "loading the sound…")
        spec = self.video_spec(video)
        create_worker(_load_sound, spec, _connect={"returned": lambda result: self._show_audio(token, spec, result)})

    def _show_audio(self, token: int, spec: VideoSpec, result: tuple) -> None:
        if token == self._plot_token and not self.closed:
            track, envelope, times, note = result
            self.plot.show_energy(envelope, times, note)
            self.sound.set_sound(track, times, spec.fps)
            video = self.video_layer()
            if video is not None:
                self.plot.mark_frame(self.current_frame(video))

    def _shown_frame(self) -> int | None:
        video = self.video_layer()
        return self.current_frame(video) if video is not None else None

    def _step_changed(self, *_) -> None:
        video = self.video_layer()
        if video is not None:
            self.plot.mark_frame(self.current_frame(video))
