"""The widget's runs: from an action to a job in a worker, its frames into the masks layer, its end.

A mixin of `AuralSAM2Widget` (it uses the widget's form, layers and session slot). napari's
progress bars and notifications process Qt events, so the next worker signal may be handled inside
these calls: each handler updates its state first and calls them last.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning

from ..core.errors import AuralSAM2Error
from ..core.session import Prompt
from ..core.weights import RANDOM_WEIGHTS_BANNER
from . import labels as labels_io
from .prompts import collect_prompts
from .runner import AUDIO_FROM_FILE, EngineSpec, Job, Update, describe_error, run_job
from .settings import save_settings

LOGGER = logging.getLogger(__name__)
RUN_TITLES = {"frame": "AuralSAM2: segmenting this frame", "propagate": "AuralSAM2: propagating",
              "audio": "AuralSAM2: following the sound", "object": "AuralSAM2: re-running object {k}",
              "correct": "AuralSAM2: propagating object {k} from its corrected mask"}


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


class RunsMixin:
    """Starting, following, cancelling and ending runs."""

    def _set_busy(self, busy: bool) -> None:
        f = self.form
        for control in (f.segment, f.propagate, f.audio_only, f.clear_object, f.clear_frame, f.video, f.model,
                        f.weights, f.release, f.device, f.compile, f.checkpoint, f.sam2_checkpoint, f.audio_mode):
            control.enabled = not busy
        o = self.objects
        for control in (o.jump, o.rerun, o.correct, o.delete, o.commit, o.reset, self.save_button,
                        self.export_button):
            control.enabled = not busy
        f.image_size.setEnabled(not busy)
        f.audio_file.enabled = not busy and f.audio_mode.value == AUDIO_FROM_FILE
        f.cancel.enabled = busy

    def engine_spec(self) -> EngineSpec:
        s = self.current_settings()
        return EngineSpec(model=s.model, image_size=s.image_size, weights=s.weights, checkpoint=s.checkpoint,
                          sam2_checkpoint=s.sam2_checkpoint, device=s.device, release=s.release,
                          compile=s.compile)

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
        if writes is not None:
            self.autosave(run.video)
        for show, message in notes:
            show(message)


def _kept_note(writes: labels_io.RunWrites) -> str:
    by_object: dict[int, list[int]] = {}
    for t, objects in sorted(writes.kept.items()):
        for object_id in objects:
            by_object.setdefault(object_id, []).append(t)
    parts = [f"object {k} on frame(s) {labels_io.describe_frames(frames)}" for k, frames in sorted(by_object.items())]
    return (f"AuralSAM2 kept your edits of {'; '.join(parts)} in '{writes.layer.name}': use 'Clear object' "
            "or 'Clear frame' there, or tick 'new Labels layer', to let it write them again")
