"""The AuralSAM2 dock widget: pick a video and its sound, click objects (or not), get masklets as Labels.

Model work runs in a napari worker (`create_worker`) so the viewer stays live; each finished
frame is written into the Labels layer from the GUI thread as it arrives, under the rule in
`labels.py` that never overwrites frames the user edited. Selecting a layer does no model work.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ..core.weights import RANDOM_WEIGHTS_BANNER
from . import labels as labels_io
from .audio_plot import AudioPlot, energy_envelope
from .form import Form, select
from .prompts import BOXES_SUFFIX, POINTS_SUFFIX, collect_prompts, defaults, make_boxes_layer, make_points_layer
from .reader import AUDIO_SOURCE_KEY, FPS_KEY, VIDEO_PATH_KEY
from .runner import (AUDIO_FROM_FILE, CACHE, DEFAULT_FPS, EngineSpec, Job, Update, VideoSpec, audio_and_times,
                     describe_error, is_out_of_memory, run_job)
from .settings import WidgetSettings, load_settings, save_settings

if TYPE_CHECKING:
    import napari

LOGGER = logging.getLogger(__name__)
TOGGLE_KEY, NEXT_OBJECT_KEY = "t", "n"
RUN_TITLES = {"frame": "AuralSAM2: segmenting this frame", "propagate": "AuralSAM2: propagating",
              "audio": "AuralSAM2: following the sound"}


def _load_envelope(spec: VideoSpec) -> tuple:
    """(envelope or None, frame times, note) for the audio plot, off the GUI thread."""
    try:
        track, times = audio_and_times(spec)
    except Exception as error:  # the plot only informs; a run reports the same problem as an error
        return None, np.arange(spec.frames.shape[0]) / spec.fps, f"audio unreadable: {error}"
    return (None if track is None else energy_envelope(track)), times, "no audio"


class AuralSAM2Widget(QWidget):
    """Dock widget driving the core segmentation session from napari layers."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.form = Form()
        self.plot = AudioPlot()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.form)
        layout.addWidget(self.plot)
        layout.addStretch(1)
        self.worker = None
        self.running = False
        self.cancel_event = threading.Event()
        self.progress_bar: progress | None = None
        self.output: Labels | None = None
        self.kept: list[int] = []
        self.written = 0
        self.failed = False
        self.outputs: dict = {}  # video layer's unique_id -> the masks layer last written for it
        self._plot_token = 0
        self._apply_settings(load_settings())
        self._connect()
        self._refresh_layers()
        self._set_busy(False)

    # -- wiring --------------------------------------------------------------------------------
    def _connect(self) -> None:
        f = self.form
        for box in (f.model, f.weights, f.device, f.direction, f.audio_mode):
            box.currentIndexChanged.connect(self._settings_changed)
        for edit in (f.checkpoint.edit, f.sam2_checkpoint.edit, f.audio_file.edit):
            edit.editingFinished.connect(self._settings_changed)
        f.image_size.valueChanged.connect(self._settings_changed)
        f.new_layer.toggled.connect(self._settings_changed)
        f.audio_mode.currentIndexChanged.connect(self._refresh_audio)
        f.audio_file.edit.editingFinished.connect(self._refresh_audio)
        f.video.currentIndexChanged.connect(self._video_changed)
        f.object_id.valueChanged.connect(self._prompt_defaults_changed)
        f.positive.toggled.connect(self._prompt_defaults_changed)
        f.next_object.clicked.connect(self.next_object)
        f.segment.clicked.connect(lambda: self.start("frame"))
        f.propagate.clicked.connect(lambda: self.start("propagate"))
        f.audio_only.clicked.connect(lambda: self.start("audio"))
        f.cancel.clicked.connect(self.cancel)
        f.clear_frame.clicked.connect(self.clear_current_frame)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.dims.events.current_step.connect(self._step_changed)

    def _apply_settings(self, s: WidgetSettings) -> None:
        f = self.form
        select(f.model, s.model)
        f.image_size.setValue(s.image_size)
        select(f.weights, s.weights)
        f.checkpoint.edit.setText(s.checkpoint)
        f.sam2_checkpoint.edit.setText(s.sam2_checkpoint)
        select(f.device, s.device)
        select(f.direction, s.direction)
        f.new_layer.setChecked(s.new_layer_each_run)
        f.random_banner.setVisible(s.weights == "random")

    def current_settings(self) -> WidgetSettings:
        f = self.form
        return WidgetSettings(model=f.model.currentData(), image_size=f.image_size.value(),
                              weights=f.weights.currentData(), checkpoint=f.checkpoint.path,
                              sam2_checkpoint=f.sam2_checkpoint.path, device=f.device.currentData(),
                              direction=f.direction.currentData(), new_layer_each_run=f.new_layer.isChecked())

    def _settings_changed(self, *_) -> None:
        settings = self.current_settings()
        self.form.random_banner.setVisible(settings.weights == "random")
        self.form.audio_file.setEnabled(self.form.audio_mode.currentData() == AUDIO_FROM_FILE)
        save_settings(settings)

    # -- layers --------------------------------------------------------------------------------
    def video_layers(self) -> list[Image]:
        """Image layers with a time axis: (T, Y, X) or RGB (T, Y, X, 3)."""
        return [layer for layer in self.viewer.layers if isinstance(layer, Image) and layer.ndim == 3]

    def video_layer(self) -> Image | None:
        layer = self.form.video.currentData()
        return layer if layer is not None and layer in self.viewer.layers else None

    def _refresh_layers(self, *_) -> None:
        box, current = self.form.video, self.form.video.currentData()
        layers = self.video_layers()
        box.blockSignals(True)
        box.clear()
        for layer in layers:
            box.addItem(layer.name, layer)
            layer.events.name.connect(self._refresh_layers)  # connecting twice is a no-op
        if current in layers:
            box.setCurrentIndex(layers.index(current))
        box.blockSignals(False)
        if box.currentData() != current:
            self._video_changed()

    def _video_changed(self, *_) -> None:
        video = self.video_layer()
        if video is not None and not self._busy():
            self.prompt_layers(video, create=True)
        self._refresh_audio()

    def _named(self, name: str, kind: type):
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, kind) else None

    def prompt_layers(self, video: Image, create: bool = False) -> tuple[Points | None, Shapes | None]:
        """The clicks and boxes layers of a video (created, with their keys, when asked)."""
        points = self._named(video.name + POINTS_SUFFIX, Points)
        boxes = self._named(video.name + BOXES_SUFFIX, Shapes)
        if create and boxes is None:
            boxes = self.viewer.add_layer(make_boxes_layer(video, self.form.object_id.value()))
            boxes.bind_key(NEXT_OBJECT_KEY, lambda _layer: self.next_object(), overwrite=True)
        if create and points is None:
            points = self.viewer.add_layer(make_points_layer(video, self.form.object_id.value(),
                                                             self.form.positive.isChecked()))
            points.bind_key(TOGGLE_KEY, lambda _layer: self.toggle_polarity(), overwrite=True)
            points.bind_key(NEXT_OBJECT_KEY, lambda _layer: self.next_object(), overwrite=True)
            points.mode = "add"
            self.viewer.layers.selection.active = points
        return points, boxes

    def output_layer(self, video: Image) -> Labels:
        """The masks layer this run writes to: the last one for this video, or a new one."""
        layer = self.outputs.get(video.unique_id)
        if self.form.new_layer.isChecked() or layer is None or layer not in self.viewer.layers \
                or not labels_io.fits(layer, video):
            layer = self.viewer.add_layer(labels_io.make_labels_layer(video))
            self.outputs[video.unique_id] = layer
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
        object_id = self.form.object_id.value()
        if points is not None:
            points.feature_defaults = defaults(object_id, self.form.positive.isChecked())
        if boxes is not None:
            boxes.feature_defaults = {"object_id": object_id}

    def toggle_polarity(self) -> None:
        (self.form.negative if self.form.positive.isChecked() else self.form.positive).setChecked(True)

    def next_object(self) -> None:
        """Switch to a new object id: one above every id in use."""
        used = [self.form.object_id.value()]
        video = self.video_layer()
        for layer in self.prompt_layers(video) if video is not None else ():
            if layer is not None and len(layer.features):
                used.append(int(layer.features["object_id"].max()))
        self.form.object_id.setValue(max(used) + 1)
        self.form.positive.setChecked(True)

    # -- audio plot ----------------------------------------------------------------------------
    def video_spec(self, video: Image) -> VideoSpec:
        meta = video.metadata
        return VideoSpec(layer_id=video.unique_id, path=meta.get(VIDEO_PATH_KEY), frames=video.data,
                         fps=float(meta.get(FPS_KEY) or DEFAULT_FPS), audio_mode=self.form.audio_mode.currentData(),
                         audio_file=self.form.audio_file.path, audio_source=meta.get(AUDIO_SOURCE_KEY))

    def _refresh_audio(self, *_) -> None:
        self._plot_token += 1
        video = self.video_layer()
        if video is None:
            self.plot.show_energy(None, np.zeros(0), "no video")
            return
        token = self._plot_token
        self.plot.show_energy(None, np.zeros(0), "loading the sound…")
        create_worker(_load_envelope, self.video_spec(video),
                      _connect={"returned": lambda result: self._show_audio(token, result)})

    def _show_audio(self, token: int, result: tuple) -> None:
        if token == self._plot_token:
            self.plot.show_energy(*result)
            video = self.video_layer()
            if video is not None:
                self.plot.mark_frame(self.current_frame(video))

    def _step_changed(self, *_) -> None:
        video = self.video_layer()
        if video is not None:
            self.plot.mark_frame(self.current_frame(video))

    # -- runs ----------------------------------------------------------------------------------
    def _busy(self) -> bool:
        return self.running

    def _set_busy(self, busy: bool) -> None:
        f = self.form
        for control in (f.segment, f.propagate, f.audio_only, f.clear_frame, f.video, f.model, f.image_size,
                        f.weights, f.device, f.checkpoint, f.sam2_checkpoint, f.audio_mode):
            control.setEnabled(not busy)
        f.audio_file.setEnabled(not busy and f.audio_mode.currentData() == AUDIO_FROM_FILE)
        f.cancel.setEnabled(busy)

    def engine_spec(self) -> EngineSpec:
        s = self.current_settings()
        return EngineSpec(model=s.model, image_size=s.image_size, weights=s.weights, checkpoint=s.checkpoint,
                          sam2_checkpoint=s.sam2_checkpoint, device=s.device)

    def start(self, kind: str) -> None:
        """Start a run ("frame", "propagate" or "audio") in a worker; no-op while one is running."""
        if self._busy():
            return
        video = self.video_layer()
        if video is None:
            show_warning("AuralSAM2: open a video first (File > Open, or File > Open Sample > AuralSAM2 sample clip)")
            return
        self.running = True  # before anything that may process events (a second click is ignored)
        self._set_busy(True)
        try:
            job, notes = self._prepare(kind, video)
        except Exception as error:  # e.g. a malformed prompt layer: report it, stay usable
            self.running = False
            self._set_busy(False)
            show_error(describe_error(error))
            return
        self.form.status.setText(f"{RUN_TITLES[kind]} from frame {job.frame}…")
        self.progress_bar = progress(total=0, desc=RUN_TITLES[kind])
        self.worker = create_worker(run_job, job, self.cancel_event, _connect={
            "yielded": self._on_update, "errored": self._on_error, "finished": self._on_finished})
        for note in notes:
            show_warning(f"AuralSAM2: {note}")

    def _prepare(self, kind: str, video: Image) -> tuple[Job, list[str]]:
        """The job for a button press (prompts read from the layers) and warnings about ignored prompts."""
        points, boxes = self.prompt_layers(video)
        height, width = video.data.shape[1:3]
        prompts, notes = collect_prompts(points, boxes, width, height) if kind != "audio" else ({}, [])
        save_settings(self.current_settings())
        self.output = self.output_layer(video)
        self.kept, self.written, self.failed = [], 0, False
        self.cancel_event = threading.Event()
        job = Job(kind=kind, frame=self.current_frame(video), engine=self.engine_spec(),
                  video=self.video_spec(video), prompts=prompts, direction=self.form.direction.currentData(),
                  object_id=self.form.object_id.value())
        return job, notes

    def cancel(self) -> None:
        if self._busy():
            self.cancel_event.set()
            self.form.status.setText("cancelling after the current frame…")

    # napari's progress bars and notifications process Qt events, so the next worker signal may be
    # handled inside these calls: each handler updates its state first and calls them last.
    def _on_update(self, update: Update) -> None:
        if update.kind == "engine":
            if update.random_weights:
                show_warning(RANDOM_WEIGHTS_BANNER)
            return
        if update.kind == "warning":
            show_warning(f"AuralSAM2: {update.message}")
            return
        if self.output not in self.viewer.layers:
            self.cancel()
            return
        video = self.video_layer()
        shown = self.current_frame(video) if video is not None else None
        if labels_io.write_frame(self.output, update.frame, update.labels, displayed=shown):
            self.written += 1
        else:
            self.kept.append(update.frame)
        self.form.status.setText(f"frame {update.frame}: {update.done}/{update.total}")
        bar = self.progress_bar
        if bar is not None:
            if bar.total != update.total:
                bar.total = update.total
            bar.update(update.done - bar.n)

    def _on_error(self, error: BaseException) -> None:
        LOGGER.error("AuralSAM2 run failed", exc_info=error)
        self.failed = True
        self.form.status.setText("failed: see the notification")
        if is_out_of_memory(error):
            CACHE.drop()
        show_error(describe_error(error))

    def _on_finished(self) -> None:
        bar, self.progress_bar, self.worker, self.running = self.progress_bar, None, None, False
        self._set_busy(False)
        notes = []
        if self.kept:
            notes.append((show_warning, f"AuralSAM2 kept your edits on frame(s) "
                          f"{labels_io.describe_frames(sorted(self.kept))} of '{self.output.name}': use 'Clear "
                          "frame' there, or tick 'new Labels layer', to recompute them"))
        if self.cancel_event.is_set():
            text = f"cancelled: {self.written} frame(s) written, everything else untouched"
            notes.append((show_info, f"AuralSAM2 {text}"))
            self.form.status.setText(text)
        elif not self.failed:
            self.form.status.setText(f"done: {self.written} frame(s) written to '{self.output.name}'")
        if bar is not None:
            bar.close()
        for show, message in notes:
            show(message)

    def clear_current_frame(self) -> None:
        video = self.video_layer()
        layer = self.outputs.get(video.unique_id) if video is not None else None
        if layer is not None and layer in self.viewer.layers:
            labels_io.clear_frame(layer, self.current_frame(video))
