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
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import QGroupBox, QVBoxLayout, QWidget

from ..core.errors import AuralSAM2Error
from ..core.session import Prompt
from ..core.weights import RANDOM_WEIGHTS_BANNER
from . import labels as labels_io
from .audio_plot import AudioPlot, energy_envelope
from .form import Form, set_path
from .keys import Shortcuts
from .objects_panel import ObjectsPanel
from .prompts import BOXES_SUFFIX, POINTS_SUFFIX, collect_prompts, defaults, make_boxes_layer, make_points_layer
from .reader import AUDIO_SOURCE_KEY, FPS_KEY, VIDEO_PATH_KEY, claim_video_extensions
from .runner import (AUDIO_FROM_FILE, DEFAULT_FPS, EngineSpec, Job, SessionSlot, Update, VideoSpec, audio_and_times,
                     describe_error, run_job)
from .settings import WidgetSettings, load_settings, save_settings
from .work import VideoWork

if TYPE_CHECKING:
    import napari

LOGGER = logging.getLogger(__name__)
RUN_TITLES = {"frame": "AuralSAM2: segmenting this frame", "propagate": "AuralSAM2: propagating",
              "audio": "AuralSAM2: following the sound", "object": "AuralSAM2: re-running object {k}",
              "correct": "AuralSAM2: propagating object {k} from its corrected mask"}
STOP_WAIT_S = 120.0  # closing the dock waits this long for the frame in flight
REFRESH_DELAY_MS = 300  # the objects panel follows edits after this pause (counting frames reads every frame)


def _load_envelope(spec: VideoSpec) -> tuple:
    """(envelope or None, frame times, note) for the audio plot, off the GUI thread."""
    try:
        track, times = audio_and_times(spec)
    except Exception as error:  # the plot only informs; a run reports the same problem as an error
        return None, np.arange(spec.frames.shape[0]) / spec.fps, f"audio unreadable: {error}"
    return (None if track is None else energy_envelope(track)), times, "no audio"


@dataclass
class Run:
    """One run in flight: its job, how to stop it, and what it has written."""

    job: Job
    video: Image
    cancel: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    writes: labels_io.RunWrites | None = None
    progress_bar: progress | None = None
    worker: object = None
    error: str = ""


class AuralSAM2Widget(QWidget):
    """Dock widget driving the core segmentation session from napari layers."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.form = Form()
        self.objects = ObjectsPanel()
        self.plot = AudioPlot()
        objects = QGroupBox("Objects")
        QVBoxLayout(objects).addWidget(self.objects)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.form)
        layout.addWidget(objects)
        layout.addWidget(self.plot)
        layout.addStretch(1)
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
        for control in (f.model, f.weights, f.device, f.direction, f.audio_mode, f.checkpoint, f.sam2_checkpoint,
                        f.audio_file, f.new_layer):
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
        o.jump.clicked.connect(self.jump_to_prompt)
        o.rerun.clicked.connect(lambda: self.start("object"))
        o.correct.clicked.connect(lambda: self.start("correct"))
        o.delete.clicked.connect(self.delete_object)
        o.commit.clicked.connect(self.commit_object)
        o.reset.clicked.connect(self.reset_objects)
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
        for control, value in ((f.model, s.model), (f.weights, s.weights), (f.device, s.device),
                               (f.direction, s.direction)):
            if value in control.choices:
                control.value = value
        f.image_size.setValue(s.image_size)
        set_path(f.checkpoint, s.checkpoint)
        set_path(f.sam2_checkpoint, s.sam2_checkpoint)
        f.new_layer.value = s.new_layer_each_run
        f.random_banner.visible = s.weights == "random"

    def current_settings(self) -> WidgetSettings:
        f = self.form
        return WidgetSettings(model=f.model.value, image_size=f.image_size.value(), weights=f.weights.value,
                              checkpoint=f.checkpoint_path, sam2_checkpoint=f.sam2_checkpoint_path,
                              device=f.device.value, direction=f.direction.value, new_layer_each_run=f.new_layer.value)

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
        create_worker(_load_envelope, self.video_spec(video),
                      _connect={"returned": lambda result: self._show_audio(token, result)})

    def _show_audio(self, token: int, result: tuple) -> None:
        if token == self._plot_token and not self.closed:
            self.plot.show_energy(*result)
            video = self.video_layer()
            if video is not None:
                self.plot.mark_frame(self.current_frame(video))

    def _step_changed(self, *_) -> None:
        video = self.video_layer()
        if video is not None:
            self.plot.mark_frame(self.current_frame(video))

    # -- runs ----------------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        f = self.form
        for control in (f.segment, f.propagate, f.audio_only, f.clear_object, f.clear_frame, f.video, f.model,
                        f.weights, f.device, f.checkpoint, f.sam2_checkpoint, f.audio_mode):
            control.enabled = not busy
        f.image_size.setEnabled(not busy)
        f.audio_file.enabled = not busy and f.audio_mode.value == AUDIO_FROM_FILE
        f.cancel.enabled = busy

    def engine_spec(self) -> EngineSpec:
        s = self.current_settings()
        return EngineSpec(model=s.model, image_size=s.image_size, weights=s.weights, checkpoint=s.checkpoint,
                          sam2_checkpoint=s.sam2_checkpoint, device=s.device)

    def start(self, kind: str) -> None:
        """Start a run ("frame", "propagate" or "audio") in a worker; no-op while one is running."""
        if self.running or self.closed:
            return
        video = self.video_layer()
        if video is None:
            self._report_error("AuralSAM2: open a video first (File > Open, or File > Open Sample > "
                               "AuralSAM2 sample clip)")
            return
        try:
            job, notes = self._prepare(kind, video)
        except Exception as error:  # e.g. a malformed prompt layer: report it, stay usable
            self._report_error(describe_error(error))
            return
        run = self.run = Run(job, video)
        self._live_runs[:] = [run]
        self._set_busy(True)
        self.form.status.setText(f"{job.title} from frame {job.frame}…")
        run.progress_bar = progress(total=0, desc=job.title)
        run.worker = create_worker(run_job, job, run.cancel, self.slot, run.stopped, _connect={
            "yielded": lambda update: self._on_update(run, update), "finished": lambda: self._on_finished(run)})
        for note in notes:
            show_warning(f"AuralSAM2: {note}")

    def _prepare(self, kind: str, video: Image) -> tuple[Job, list[str]]:
        """The job for an action (prompts from the layers and the object book) and warnings about
        ignored prompts. "frame" and "propagate" run every object not committed; "audio", "object" and
        "correct" run the current object alone (after adding its audio start or mask prompt here)."""
        points, boxes = self.prompt_layers(video)
        height, width = video.data.shape[1:3]
        host, notes = collect_prompts(points, boxes, width, height)
        work = self.work(video)
        t, k = self.current_frame(video), self.form.object_id.value
        start, direction, objects = t, self.form.direction.value, None
        if kind in ("audio", "object", "correct"):
            if work.book.get(k).committed:
                raise AuralSAM2Error(f"object {k} is committed", "pick another object (N for a new one)")
            objects, direction = {k}, "both"
            if kind == "audio":
                work.book.add(Prompt(t, k))
            elif kind == "correct":
                work.mask_prompt(t, k)
            frames = work.book.prompt_frames(host, k)
            if not frames:
                raise AuralSAM2Error(f"object {k} has no prompts", "click on it, or use 'Audio only'")
            start = t if t in frames else frames[0]
        save_settings(self.current_settings())
        job = Job(kind="frame" if kind == "frame" else "track", frame=start, engine=self.engine_spec(),
                  video=self.video_spec(video), prompts=work.book.session_prompts(host, objects),
                  direction=direction, unguided=work.book.unguided(), title=RUN_TITLES[kind].format(k=k))
        return job, notes

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel.set()
            self.form.status.setText("cancelling after the current frame…")

    def _report_error(self, message: str) -> None:
        self.form.status.setText(f"failed: {message}")
        show_error(message)

    # napari's progress bars and notifications process Qt events, so the next worker signal may be
    # handled inside these calls: each handler updates its state first and calls them last.
    def _on_update(self, run: Run, update: Update) -> None:
        if run is not self.run:  # the dock was closed: the run's last signals change nothing
            return
        if update.kind == "engine":
            self.form.random_banner.visible = update.random_weights
            if update.random_weights and update.loaded:  # once per model load; the banner stays
                show_warning(RANDOM_WEIGHTS_BANNER)
        elif update.kind == "warning":
            show_warning(f"AuralSAM2: {update.message}")
        elif update.kind == "error":
            LOGGER.error("AuralSAM2 run failed", exc_info=update.error)
            run.error = update.message
            self._report_error(update.message)
        else:
            self._write(run, update)

    def _write(self, run: Run, update: Update) -> None:
        if run.writes is None:
            run.writes = labels_io.RunWrites(self.output_layer(run.video), run.job.objects)
            run.writes.layer.mouse_drag_callbacks.insert(0, self._before_user_edit)
        if run.writes.layer not in self.viewer.layers:
            self.cancel()
            return
        shown = self.current_frame(run.video) if run.video in self.viewer.layers else None
        run.writes.write(update.frame, update.masks, displayed=shown)
        self.form.status.setText(f"frame {update.frame}: {update.done}/{update.total}")
        bar = run.progress_bar
        if bar is not None:
            if bar.total != update.total:
                bar.total = update.total
            bar.update(update.done - bar.n)

    def _before_user_edit(self, layer: Labels, event) -> None:
        """A stroke on a layer a run is writing: the run's writes so far go into the history first,
        so undo takes the user's stroke back before the run's frames."""
        if self.run is not None and self.run.writes is not None and self.run.writes.layer is layer:
            self.run.writes.commit()

    def _end_run(self, run: Run) -> None:
        """Commit what the run wrote as one undo step and let go of the layer."""
        writes = run.writes
        if writes is not None:
            writes.commit()
            if self._before_user_edit in writes.layer.mouse_drag_callbacks:
                writes.layer.mouse_drag_callbacks.remove(self._before_user_edit)
        if run.progress_bar is not None:
            run.progress_bar.close()

    def _on_finished(self, run: Run) -> None:
        if run is not self.run:
            return
        self.run = None
        self._live_runs.clear()
        self._end_run(run)
        self._set_busy(False)
        writes = run.writes
        written = writes.written if writes is not None else 0
        notes = []
        if writes is not None and writes.kept:
            notes.append((show_warning, _kept_note(writes)))
        if run.cancel.is_set():
            text = f"cancelled: {written} frame(s) written, everything else untouched"
            notes.append((show_info, f"AuralSAM2 {text}"))
            self.form.status.setText(text)
        elif not run.error:
            where = f" to '{writes.layer.name}'" if writes is not None else ""
            self.form.status.setText(f"done: {written} frame(s) written{where}")
        self.refresh_objects()
        for show, message in notes:
            show(message)

    def clear_current_frame(self, only_object: bool = False) -> None:
        """Empty the current frame of the masks layer (of the current object only, if asked)."""
        video = self.video_layer()
        layer = self.work(video).masks_layer() if video is not None else None
        if layer is None or self.running:
            return
        labels_io.clear(layer, [self.current_frame(video)], {self.form.object_id.value} if only_object else None)

    # -- objects -------------------------------------------------------------------------------
    def refresh_objects(self) -> None:
        """Rebuild the objects panel from the prompt layers, the object book and both Labels layers."""
        video = self.video_layer()
        if self.closed or video is None:
            self.objects.show_rows([], None)
            return
        points, boxes = self.prompt_layers(video)
        host, _ = collect_prompts(points, boxes, *video.data.shape[2:0:-1])
        self.objects.show_rows(self.work(video).rows(host), self.form.object_id.value)

    def select_object(self, object_id: int) -> None:
        """New clicks and boxes go to this object."""
        self.form.object_id.value = object_id

    def _acting_on(self) -> tuple[Image, int] | None:
        video = self.video_layer()
        if video is None or self.running:
            return None
        return video, self.form.object_id.value

    def jump_to_prompt(self) -> None:
        """Go to the current object's next prompt frame (round and round)."""
        if (target := self._acting_on()) is None:
            return
        video, k = target
        points, boxes = self.prompt_layers(video)
        host, _ = collect_prompts(points, boxes, *video.data.shape[2:0:-1])
        frames = self.work(video).book.prompt_frames(host, k)
        if frames:
            t = self.current_frame(video)
            self.viewer.dims.set_current_step(0, next((f for f in frames if f > t), frames[0]))

    def delete_object(self) -> None:
        """Delete the current object everywhere: its prompts and its pixels on every frame (Ctrl-Z in the
        masks layer brings the pixels back)."""
        if (target := self._acting_on()) is None:
            return
        video, k = target
        self.work(video).delete(k, *self.prompt_layers(video))
        self.form.status.setText(f"object {k} deleted from every frame (Ctrl-Z in the masks layer undoes it)")
        self.refresh_objects()

    def commit_object(self) -> None:
        """Move the current object into the committed layer; no later run writes to it."""
        if (target := self._acting_on()) is None:
            return
        video, k = target
        try:
            frames = self.work(video).commit(k)
        except AuralSAM2Error as error:
            self._report_error(str(error))
            return
        self.form.status.setText(f"object {k} committed ({len(frames)} frame(s))")
        self.refresh_objects()

    def reset_objects(self) -> None:
        """Forget every prompt and the session; the masks stay."""
        if (target := self._acting_on()) is None:
            return
        video, _ = target
        self.work(video).reset(*self.prompt_layers(video))
        self.slot.close()
        self.form.object_id.value = 1
        self.form.status.setText("prompts and session reset; the masks stay")
        self.refresh_objects()


def _kept_note(writes: labels_io.RunWrites) -> str:
    by_object: dict[int, list[int]] = {}
    for t, objects in sorted(writes.kept.items()):
        for object_id in objects:
            by_object.setdefault(object_id, []).append(t)
    parts = [f"object {k} on frame(s) {labels_io.describe_frames(frames)}" for k, frames in sorted(by_object.items())]
    return (f"AuralSAM2 kept your edits of {'; '.join(parts)} in '{writes.layer.name}': use 'Clear object' "
            "or 'Clear frame' there, or tick 'new Labels layer', to let it write them again")
