"""The widget's work beyond runs: clearing, the objects panel's actions, saving, restoring, exporting.

A mixin of `AuralSAM2Widget` (it uses the widget's form, layers and `VideoWork`s). Nothing is
written over an existing file without asking: the first save beside a video that already has a
sidecar asks, and autosave (after every run and commit) only replaces a sidecar this dock saved or
restored.
"""
from __future__ import annotations

from dataclasses import asdict

from napari.layers import Image
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QFileDialog, QMessageBox

from ..core.errors import AuralSAM2Error
from . import labels as labels_io
from .files import export_target, export_work, read_work, restore_work, save_work, sidecar_of
from .prompts import collect_prompts


def ask(parent, question: str) -> bool:
    """Yes/no from the user (the tests put a stand-in here)."""
    return QMessageBox.question(parent, "AuralSAM2", question) == QMessageBox.Yes


def pick_folder(parent, caption: str) -> str:
    """A folder from the user, "" when cancelled (the tests put a stand-in here)."""
    return QFileDialog.getExistingDirectory(parent, caption)


class WorkMixin:
    """Clearing, the objects panel and its actions, saving, restoring and exporting."""

    def clear_current_frame(self, only_object: bool = False) -> None:
        """Empty the current frame of the masks layer (of the current object only, if asked)."""
        video = self.video_layer()
        layer = self.work(video).masks_layer() if video is not None else None
        if layer is None or self.running:
            return
        labels_io.clear(layer, [self.current_frame(video)], {self.form.object_id.value} if only_object else None)

    def _host_prompts(self, video: Image):
        points, boxes = self.prompt_layers(video)
        return collect_prompts(points, boxes, *video.data.shape[2:0:-1])[0]

    def refresh_objects(self) -> None:
        """Rebuild the objects panel from the prompt layers, the object book and both Labels layers."""
        video = self.video_layer()
        if self.closed or video is None:
            self.objects.show_rows([], None)
            return
        self.objects.show_rows(self.work(video).rows(self._host_prompts(video)), self.form.object_id.value)

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
        frames = self.work(video).book.prompt_frames(self._host_prompts(video), k)
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
        self.autosave(video)

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

    # -- files ---------------------------------------------------------------------------------
    def save(self) -> None:
        """Save the current video's work to its sidecar (asking before replacing one not saved here)."""
        video = self.video_layer()
        if video is None or self.running:
            return
        work, path = self.work(video), sidecar_of(video)
        replace = work.autosave or (path is not None and path.exists()
                                    and self.ask(self, f"Replace the saved work in {path.name}?"))
        if path is not None and path.exists() and not replace:
            return
        self._save(video, overwrite=True)

    def autosave(self, video: Image) -> None:
        """Save after a run or a commit, unless that would replace a sidecar this dock did not write;
        a failure (a read-only folder, say) is noted in the status, not raised."""
        work, path = self.work(video), sidecar_of(video)
        if path is None or (path.exists() and not work.autosave):
            return
        self._save(video, overwrite=work.autosave, quiet=True)

    def _save(self, video: Image, overwrite: bool, quiet: bool = False) -> None:
        work = self.work(video)
        try:
            path = save_work(work, self._host_prompts(video), asdict(self.current_settings()), overwrite)
        except (AuralSAM2Error, OSError) as error:
            if quiet:
                self.form.status.setText(f"{self.form.status.text()}\nnot saved: {error}")
            else:
                self._report_error(f"not saved: {error}")
            return
        work.autosave = True
        if not quiet:
            self.form.status.setText(f"saved to {path} (and after every run and commit from now on)")

    def offer_restore(self, video: Image) -> None:
        """When the video has saved work this dock has not seen, offer to restore it."""
        work, path = self.work(video), sidecar_of(video)
        if work.offered or path is None or not path.exists():
            return
        work.offered = True
        if not self.ask(self, f"'{video.name}' has saved work ({path.name}). Restore it?"):
            self.form.status.setText(f"not restored: autosave stays off so {path.name} is kept; Save replaces it")
            return
        try:
            restore_work(work, read_work(video), *self.prompt_layers(video))
        except AuralSAM2Error as error:
            self._report_error(str(error))
            return
        work.autosave = True
        self.form.status.setText(f"restored from {path}")
        self.refresh_objects()

    def export(self) -> None:
        """Write the masks (committed and working) in the chosen format into a folder the user picks."""
        video = self.video_layer()
        if video is None or self.running:
            return
        folder = self.pick_folder(self, "Export the masks into")
        if not folder:
            return
        fmt = self.export_format.value
        target = export_target(folder, fmt)
        if target.exists() and not self.ask(self, f"{target} exists. Replace it?"):
            return
        try:
            written = export_work(self.work(video), folder, fmt)
        except AuralSAM2Error as error:
            self._report_error(str(error))
            return
        self.form.status.setText(f"exported {fmt} to {written}")
        show_info(f"AuralSAM2 exported {fmt} to {written}")
