"""The masklet Labels layer (uint32, value = object id) and how runs write into it.

Writes go through napari's own undo history, so Ctrl-Z undoes a whole run (or a *Clear*) in one
step and Ctrl-Shift-Z redoes it. A run shows each frame as it arrives and records the run's
writes as one history item when it ends (`RunWrites.commit`).

What a run may write follows the user's edits per object (`ledger.py`): an object the user painted,
erased or filled on a frame is kept there as it is, and no other object is written over the pixels
the user changed. Objects not in the run are never touched.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from napari.layers import Image, Labels

from .ledger import EditLedger, present_objects

LABELS_SUFFIX = " masks"
LABEL_DTYPE = np.uint32
Masks = dict[int, np.ndarray]  # object id -> bool [H, W]


def masks_to_labels(masks: Masks, height: int, width: int) -> np.ndarray:
    """{object id: bool [H, W]} -> uint32 [H, W]; a higher id wins where objects overlap."""
    frame = np.zeros((height, width), dtype=LABEL_DTYPE)
    for object_id in sorted(masks):
        frame[masks[object_id]] = object_id
    return frame


def make_labels_layer(video: Image, name: str | None = None) -> Labels:
    frames, height, width = video.data.shape[:3]
    data = np.zeros((frames, height, width), dtype=LABEL_DTYPE)  # calloc: untouched frames cost no memory
    layer = Labels(data, name=name or video.name + LABELS_SUFFIX, scale=tuple(video.scale[:3]),
                   translate=tuple(video.translate[:3]))
    EditLedger.of(layer)  # from now on every stroke of the user's is recorded
    return layer


def fits(labels: Labels, video: Image) -> bool:
    """Whether a Labels layer can hold masks for this video (same frames and size)."""
    return tuple(labels.data.shape) == tuple(video.data.shape[:3])


def compose(current: np.ndarray, masks: Masks, writable: set[int], user_pixels: np.ndarray) -> np.ndarray:
    """The frame after writing `writable` objects' masks: their old pixels are replaced, every other
    object and every pixel the user changed stay as they are."""
    new = current.copy()
    new[np.isin(current, _ids(writable))] = 0
    free = (new == 0) & ~user_pixels
    for object_id in sorted(writable):  # a higher id wins where objects overlap
        if object_id in masks:
            new[free & masks[object_id]] = object_id
    return new


class RunWrites:
    """One run's writes into a masks layer: on screen as frames arrive, one undo step once committed."""

    def __init__(self, layer: Labels, objects: set[int]) -> None:
        self.layer = layer
        self.objects = set(objects)
        self.ledger = EditLedger.of(layer)
        self.pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # frame -> (flat pixels, values before)
        self.kept: dict[int, list[int]] = {}  # frame -> objects of the run kept there (the user's edits)
        self.written = 0

    def write(self, frame_index: int, masks: Masks, displayed: int | None = None) -> None:
        """Show one frame's masks, except on objects and pixels the user edited there."""
        current = np.array(self.layer.data[frame_index])
        edits = self.ledger.edits(frame_index, current)
        kept = sorted(self.objects & edits.objects)
        if kept:
            self.kept[frame_index] = kept
        new = compose(current, masks, self.objects - edits.objects, edits.pixels(current.shape))
        flat = np.flatnonzero(new != current)
        self.ledger.record(frame_index, new, edits)  # AuralSAM2's writes leave the user's edits as they were
        self.written += 1
        if not flat.size:
            return
        if frame_index in self.pending:  # written twice in one run: keep the values from before the run
            seen, before = self.pending[frame_index]
            extra = np.setdiff1d(flat, seen)
            self.pending[frame_index] = (np.concatenate([seen, extra]),
                                         np.concatenate([before, current.ravel()[extra]]))
        else:
            self.pending[frame_index] = (flat, current.ravel()[flat])
        self.layer.data[frame_index] = new
        if displayed is None or displayed == frame_index:
            self.layer.refresh()

    def commit(self) -> None:
        """Record everything written since the last commit as one step of the layer's undo history.

        napari records a change when it is made through `data_setitem`; the frames are already on
        screen, so each is stepped back to its values from before the run and forward again through it.
        """
        if not self.pending:
            return
        layer, pending, self.pending = self.layer, self.pending, {}
        with self.ledger.own_writes(), layer.block_history():
            for t, (flat, before) in sorted(pending.items()):
                plane = layer.data[t]
                after = plane.ravel()[flat]
                moved = after != before
                yx = np.unravel_index(flat[moved], plane.shape)
                plane[yx] = before[moved]
                index = (np.full(len(yx[0]), t, dtype=np.min_scalar_type(t)),) + tuple(
                    axis.astype(np.min_scalar_type(size)) for axis, size in zip(yx, plane.shape))
                layer.data_setitem(index, after[moved], refresh=False)
        layer.refresh()


def clear(layer: Labels, frames: Iterable[int], objects: set[int] | None = None) -> None:
    """Remove objects (all if None) from frames on the user's request, as one undo step; what is
    cleared is AuralSAM2's to write again (the user's edits of it included)."""
    ledger = EditLedger.of(layer)
    with ledger.own_writes(), layer.block_history():
        for t in frames:
            current = np.array(layer.data[t])
            targets = present_objects(current) if objects is None else set(objects)
            freed = np.ones(current.shape, bool) if objects is None else np.isin(current, _ids(targets))
            edits = ledger.edits(t, current)
            yx = np.nonzero(freed & (current != 0))
            if yx[0].size:
                layer.data_setitem((np.full(len(yx[0]), t),) + yx, 0, refresh=False)
            cleared = targets | (set(edits.objects) if objects is None else set())
            ledger.record(t, np.where(freed, 0, current).astype(LABEL_DTYPE), edits.minus(cleared, freed),
                          replace=True)
    layer.refresh()


def copy_object(source: Labels, target: Labels, object_id: int) -> list[int]:
    """Write an object's pixels from one layer into another (one undo step there); returns its frames."""
    frames = [t for t in range(source.data.shape[0]) if (np.asarray(source.data[t]) == object_id).any()]
    with target.block_history():
        for t in frames:
            yx = np.nonzero(np.asarray(source.data[t]) == object_id)
            target.data_setitem((np.full(len(yx[0]), t),) + yx, object_id, refresh=False)
    target.refresh()
    return frames


def coverage(layer: Labels) -> dict[int, list[int]]:
    """object id -> the frames it is on."""
    frames: dict[int, list[int]] = {}
    for t in range(layer.data.shape[0]):
        for object_id in np.flatnonzero(np.bincount(np.asarray(layer.data[t]).ravel())):
            if object_id:
                frames.setdefault(int(object_id), []).append(t)
    return frames


def _ids(objects: Iterable[int]) -> np.ndarray:
    return np.fromiter(objects, dtype=LABEL_DTYPE)


def describe_frames(frames: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8' (for notifications and the objects panel)."""
    runs: list[list[int]] = []
    for t in sorted(frames):
        if runs and t == runs[-1][1] + 1:
            runs[-1][1] = t
        else:
            runs.append([t, t])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
