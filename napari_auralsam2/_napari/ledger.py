"""What the user changed in a masks layer, kept in step with napari's own undo history.

napari's Labels undo history is the one history: runs and *Clear* are recorded in it (see
`labels.py`), and so is every brush, eraser and fill stroke, which the ledger sees through
`layer.events.paint`. The ledger records each state a frame passes through — by its content hash —
together with which objects and which pixels the user has changed in that state. Undo and redo
only ever bring a frame back to a state it had before, so looking its current content up tells
exactly what on it is the user's work: model output brought back by Ctrl-Z is never mistaken for an
edit, and an erase is an edit like any other.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import weakref
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np

LOGGER = logging.getLogger(__name__)
DIGEST_BYTES = 16
_LEDGERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # layer -> its EditLedger


def digest(frame: np.ndarray) -> bytes:
    """A content hash of one frame (collisions are negligible at 128 bits)."""
    return hashlib.blake2b(np.ascontiguousarray(frame).data, digest_size=DIGEST_BYTES).digest()


@dataclass(frozen=True)
class FrameEdits:
    """The user's changes present in one state of a frame: whole objects, and exact pixels."""

    objects: frozenset[int] = frozenset()
    packed_pixels: bytes | None = None  # zlib(packbits(changed-pixel mask)); None: no pixel

    def pixels(self, shape: tuple[int, int]) -> np.ndarray:
        """The bool mask of pixels the user painted or erased."""
        if self.packed_pixels is None:
            return np.zeros(shape, dtype=bool)
        bits = np.unpackbits(np.frombuffer(zlib.decompress(self.packed_pixels), dtype=np.uint8))
        return bits[: shape[0] * shape[1]].reshape(shape).astype(bool)

    def plus(self, changed: np.ndarray, objects: set[int]) -> "FrameEdits":
        """These edits and a new change (pixels, and the object ids on them before or after)."""
        mask = self.pixels(changed.shape) | changed
        return FrameEdits(self.objects | frozenset(objects), _pack(mask))

    def minus(self, objects: set[int], freed: np.ndarray) -> "FrameEdits":
        """These edits with objects handed back to AuralSAM2 and their pixels freed (*Clear*)."""
        mask = self.pixels(freed.shape) & ~freed
        return FrameEdits(self.objects - frozenset(objects), _pack(mask))


def _pack(mask: np.ndarray) -> bytes | None:
    return zlib.compress(np.packbits(mask).tobytes()) if mask.any() else None


def present_objects(frame: np.ndarray) -> set[int]:
    """The object ids (non-zero labels) in a frame or a set of pixels."""
    return {int(v) for v in np.unique(frame) if v}


class EditLedger:
    """The user's edits per frame state of one Labels layer (one ledger per layer, for the layer's life)."""

    def __init__(self, layer) -> None:
        self._layer = weakref.ref(layer)
        self.states: dict[int, dict[bytes, FrameEdits]] = {}
        self._own = 0
        layer.events.paint.connect(self._on_paint)

    @classmethod
    def of(cls, layer) -> "EditLedger":
        """The layer's ledger, attached on first use."""
        ledger = _LEDGERS.get(layer)
        if ledger is None:
            ledger = _LEDGERS[layer] = cls(layer)
        return ledger

    @property
    def layer(self):
        return self._layer()

    @contextmanager
    def own_writes(self) -> Iterator[None]:
        """History items recorded inside this block are AuralSAM2's, not the user's."""
        self._own += 1
        try:
            yield
        finally:
            self._own -= 1

    def edits(self, frame_index: int, frame: np.ndarray) -> FrameEdits:
        """The user's edits in the frame's current content (recorded, so an undo finds it again)."""
        known = self.states.get(frame_index, {}).get(digest(frame))
        if known is None:
            # a change that bypassed napari's history (a script writing layer.data): everything
            # on the frame counts as the user's, so nothing of it can be lost
            known = FrameEdits(frozenset(present_objects(frame)), _pack(frame != 0))
            self.record(frame_index, frame, known)
        return known

    def record(self, frame_index: int, frame: np.ndarray, edits: FrameEdits, replace: bool = False) -> None:
        """Note the edits of a frame state. The same content can recur with other edits (an empty frame,
        before a run and after the user erased it all): then both are kept, so nothing of the user's is
        ever lost, unless AuralSAM2 itself was asked to redo the frame (`replace`, as *Clear* does)."""
        states = self.states.setdefault(frame_index, {})
        key = digest(frame)
        if key in states and not replace:
            old = states[key]
            edits = old.plus(edits.pixels(frame.shape), set(edits.objects)) if old != edits else old
        states[key] = edits

    # -- saved with the work ---------------------------------------------------------------
    def to_json(self) -> dict:
        """The recorded states as JSON (for the sidecar): frame -> content hash -> [objects, pixels]."""
        return {str(t): {key.hex(): [sorted(e.objects), _b64(e.packed_pixels)] for key, e in states.items()}
                for t, states in self.states.items()}

    def load_json(self, data: dict) -> None:
        """Take over states saved by `to_json` (the layer holds the saved masks again)."""
        self.states = {int(t): {bytes.fromhex(key): FrameEdits(frozenset(objects),
                                                               None if pixels is None else base64.b64decode(pixels))
                                for key, (objects, pixels) in states.items()}
                       for t, states in data.items()}

    # -- the user's strokes --------------------------------------------------------------
    def _on_paint(self, event) -> None:
        if self._own:
            return
        item = list(event.value)
        try:
            frames = {t: np.array(self.layer.data[t]) for t in _frames_of(item)}
            # napari emits the event before writing a single edit, after writing a grouped stroke
            applied = _is_applied(item[-1], frames)
        except ValueError as error:  # a history atom of a kind napari did not have when this was written
            LOGGER.warning("AuralSAM2 could not read a napari edit (%s); frames it touched are protected", error)
            return
        before = {t: frame.copy() for t, frame in frames.items()}
        after = {t: frame.copy() for t, frame in frames.items()}
        for atom in (reversed(item) if applied else item):
            _replay(atom, before if applied else after, undo=applied)
        for t in frames:
            changed = before[t] != after[t]
            if changed.any():
                touched = present_objects(before[t][changed]) | present_objects(after[t][changed])
                self.record(t, after[t], self.edits(t, before[t]).plus(changed, touched))


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _frames_of(item: list) -> list[int]:
    """The frame indices a napari history item touched (first data axis = time)."""
    frames: set[int] = set()
    for atom in item:
        key = getattr(atom, "slice_key", None)
        if key is not None:  # a masked paint atom: bounding box + mask
            frames.update(range(*key[0].indices(1 << 62)))
        elif isinstance(atom, tuple) and len(atom) == 3:  # data_setitem: (indices, old, new)
            frames.update(int(t) for t in np.unique(atom[0][0]))
        else:
            raise ValueError(f"unknown history atom {type(atom).__name__}")
    return sorted(frames)


def _region(key: tuple, frames: dict[int, np.ndarray]) -> np.ndarray:
    return np.stack([frames[t][key[1:]] for t in range(*key[0].indices(1 << 62))])


def _is_applied(atom, frames: dict[int, np.ndarray]) -> bool:
    """Whether the frames already hold the atom's new values (its old and new values always differ)."""
    key = getattr(atom, "slice_key", None)
    if key is not None:
        region = _region(key, frames)
        return bool(np.all((region if atom.mask is None else region[atom.mask]) == atom.new_value))
    (ts, *yx), _, new = atom
    return bool(frames[int(ts[0])][tuple(axis[0] for axis in yx)] == np.broadcast_to(new, ts.shape)[0])


def _replay(atom, frames: dict[int, np.ndarray], undo: bool) -> None:
    """Apply one history atom, backwards or forwards, to copies of the frames it touched (as napari does)."""
    key = getattr(atom, "slice_key", None)
    if key is not None:
        region = _region(key, frames)
        values = atom.old_values if undo else atom.new_value
        if atom.mask is None:
            region[...] = values
        else:
            region[atom.mask] = values
        first = key[0].start or 0
        for i, plane in enumerate(region):
            frames[first + i][key[1:]] = plane
        return
    (ts, *yx), old, new = atom
    values = np.broadcast_to(old if undo else new, ts.shape)
    for t in np.unique(ts):
        sel = ts == t
        frames[int(t)][tuple(axis[sel] for axis in yx)] = values[sel]
