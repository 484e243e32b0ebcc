"""The masklet Labels layer (uint32, value = object id) and the rule that protects the user's edits.

A frame may be (re)written by AuralSAM2 only when it is empty or still holds exactly what
AuralSAM2 wrote there last (a CRC kept in the layer's metadata). A frame the user painted,
erased or filled is kept as is and reported, so a re-run never silently destroys edits.
"""
from __future__ import annotations

import zlib

import numpy as np
from napari.layers import Image, Labels

LABELS_SUFFIX = " masks"
WRITTEN_KEY = "auralsam2_written"  # layer.metadata[WRITTEN_KEY]: {frame: crc32 of what AuralSAM2 wrote}
LABEL_DTYPE = np.uint32


def masks_to_labels(masks: dict[int, np.ndarray], height: int, width: int) -> np.ndarray:
    """{object id: bool [H, W]} -> uint32 [H, W]; a higher id wins where objects overlap."""
    frame = np.zeros((height, width), dtype=LABEL_DTYPE)
    for object_id in sorted(masks):
        frame[masks[object_id]] = object_id
    return frame


def make_labels_layer(video: Image, name: str | None = None) -> Labels:
    frames, height, width = video.data.shape[:3]
    data = np.zeros((frames, height, width), dtype=LABEL_DTYPE)  # calloc: untouched frames cost no memory
    return Labels(data, name=name or video.name + LABELS_SUFFIX, scale=tuple(video.scale[:3]),
                  translate=tuple(video.translate[:3]), metadata={WRITTEN_KEY: {}})


def fits(labels: Labels, video: Image) -> bool:
    """Whether a Labels layer can hold masks for this video (same frames and size)."""
    return tuple(labels.data.shape) == tuple(video.data.shape[:3])


def _crc(frame: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(frame, dtype=LABEL_DTYPE).data)


def is_writable(labels: Labels, frame_index: int) -> bool:
    """True when the frame is empty or unchanged since AuralSAM2 wrote it (no user edits to lose)."""
    current = np.asarray(labels.data[frame_index])
    if not current.any():
        return True
    return labels.metadata.get(WRITTEN_KEY, {}).get(frame_index) == _crc(current)


def write_frame(labels: Labels, frame_index: int, frame: np.ndarray, displayed: int | None = None) -> bool:
    """Write one frame unless the user edited it; refreshes the view when it is the frame on screen."""
    if not is_writable(labels, frame_index):
        return False
    labels.data[frame_index] = frame
    labels.metadata.setdefault(WRITTEN_KEY, {})[frame_index] = _crc(frame)
    if displayed is None or displayed == frame_index:
        labels.refresh()
    return True


def clear_frame(labels: Labels, frame_index: int) -> None:
    """Empty one frame on the user's explicit request (it becomes writable again)."""
    labels.data[frame_index] = 0
    labels.metadata.setdefault(WRITTEN_KEY, {}).pop(frame_index, None)
    labels.refresh()


def describe_frames(frames: list[int], shown: int = 8) -> str:
    """'3, 7, 9' or '3, 7, 9, ... (12 frames)' for notifications."""
    text = ", ".join(str(f) for f in frames[:shown])
    return text if len(frames) <= shown else f"{text}, ... ({len(frames)} frames)"
