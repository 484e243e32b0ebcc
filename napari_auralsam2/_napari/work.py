"""One video's annotation in the viewer: its objects (the core's `ObjectBook`) and the layers holding them.

The widget keeps one `VideoWork` per video layer. The masks layer is where runs write; the committed
layer holds finished objects and no run ever writes to it. Every change to either layer goes through
its undo history (`labels.py`).
"""
from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels, Points, Shapes

from ..core.errors import AuralSAM2Error
from ..core.objects import ObjectBook, ObjectRecord, Prompts
from ..core.session import Prompt
from . import labels as labels_io
from .objects_panel import ObjectRow
from .prompts import clear_all, remove_object

COMMITTED_SUFFIX = " committed"


class VideoWork:
    """The objects of one video layer and the Labels layers that hold them."""

    def __init__(self, viewer, video: Image) -> None:
        self.viewer = viewer
        self.video = video
        self.book = ObjectBook()
        self.masks: Labels | None = None
        self.autosave = False  # the sidecar may be replaced: this dock saved or restored it
        self.offered = False  # restoring saved work was offered

    def _named(self, suffix: str) -> Labels | None:
        name = self.video.name + suffix
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, Labels) and labels_io.fits(layer, self.video) else None

    def _add_quietly(self, layer: Labels) -> Labels:
        """Add a layer without changing which layer is active."""
        active = self.viewer.layers.selection.active
        self.viewer.add_layer(layer)
        self.viewer.layers.selection.active = active
        return layer

    def masks_layer(self, create: bool = False, new: bool = False) -> Labels | None:
        """The masks layer runs write to: the last one used (or the one named after the video), or a
        new one when asked or when there is none."""
        layer = self.masks if self.masks is not None and self.masks in self.viewer.layers else None
        layer = layer or self._named(labels_io.LABELS_SUFFIX)
        if create and (new or layer is None):
            layer = self._add_quietly(labels_io.make_labels_layer(self.video))
        self.masks = layer
        return layer

    def committed_layer(self, create: bool = False) -> Labels | None:
        layer = self._named(COMMITTED_SUFFIX)
        if layer is None and create:
            layer = self._add_quietly(labels_io.make_labels_layer(self.video, self.video.name + COMMITTED_SUFFIX))
        return layer

    # -- objects -------------------------------------------------------------------------------
    def rows(self, host: Prompts) -> list[ObjectRow]:
        """The objects panel's rows: every object with prompts, a record, or pixels in either layer."""
        masks, committed = self.masks_layer(), self.committed_layer()
        on_masks = labels_io.coverage(masks) if masks is not None else {}
        on_committed = labels_io.coverage(committed) if committed is not None else {}
        ids = set(self.book.records) | set(on_masks) | set(on_committed)
        ids |= {k for by_object in host.values() for k in by_object}
        colours = masks or committed
        rows = []
        for k in sorted(ids):
            record = self.book.records.get(k) or ObjectRecord(k)
            frames = sorted(set(on_masks.get(k, [])) | set(on_committed.get(k, [])))
            colour = tuple(float(c) for c in colours.get_color(k)) if colours is not None else (0.5, 0.5, 0.5, 1.0)
            rows.append(ObjectRow(k, record.name, record.text, colour, frames, _describe_prompts(self.book, host, k),
                                  record.audio_guidance, record.committed))
        return rows

    def mask_prompt(self, frame: int, object_id: int) -> Prompt:
        """The object's mask on a frame of the masks layer (as the user fixed it) as a mask prompt, kept in
        the book so later runs of the object start from it too."""
        masks = self.masks_layer()
        mask = np.asarray(masks.data[frame]) == object_id if masks is not None else None
        if mask is None or not mask.any():
            raise AuralSAM2Error(f"object {object_id} has no mask on frame {frame}",
                                 "paint it with the brush in the masks layer first (or pick another object)")
        prompt = Prompt(frame, object_id, mask=mask)
        self.book.add(prompt)
        return prompt

    def delete(self, object_id: int, points: Points | None, boxes: Shapes | None) -> None:
        """Remove an object from every frame (one undo step per layer), its prompts and its record."""
        remove_object(points, boxes, object_id)
        self.book.remove(object_id)
        for layer in (self.masks_layer(), self.committed_layer()):
            if layer is not None:
                labels_io.clear(layer, labels_io.coverage(layer).get(object_id, []), {object_id})

    def commit(self, object_id: int) -> list[int]:
        """Move a finished object into the committed layer, which no run writes to; returns its frames."""
        masks = self.masks_layer()
        if masks is None:
            raise AuralSAM2Error(f"object {object_id} has no masks to commit", "run it first")
        frames = labels_io.copy_object(masks, self.committed_layer(create=True), object_id)
        labels_io.clear(masks, frames, {object_id})
        self.book.get(object_id).committed = True
        return frames

    def reset(self, points: Points | None, boxes: Shapes | None) -> None:
        """Forget every prompt (the layers' clicks and boxes, the book's); the masks stay."""
        clear_all(points, boxes)
        self.book = ObjectBook()


def _describe_prompts(book: ObjectBook, host: Prompts, object_id: int) -> str:
    clicks = boxes = 0
    audio, masks = [], []
    for t, by_object in book.session_prompts(host, {object_id}).items():
        prompt = by_object[object_id]
        clicks += len(prompt.points)
        boxes += prompt.box is not None
        if prompt.mask is not None:
            masks.append(t)
        elif prompt.audio_only:
            audio.append(t)
    parts = [f"{clicks} click{'s' * (clicks > 1)}"] if clicks else []
    if boxes:
        parts.append(f"{boxes} box{'es' * (boxes > 1)}")
    if audio:
        parts.append(f"audio on {labels_io.describe_frames(audio)}")
    if masks:
        parts.append(f"mask on {labels_io.describe_frames(masks)}")
    return ", ".join(parts)
