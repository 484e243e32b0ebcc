"""Host-free engine of napari-auralsam2: model, audio/video I/O, the segmentation session.

Nothing here imports napari, Qt, magicgui, cvat_sdk or nuclio_sdk. Names are imported on first
use, so a host that only reads videos (the napari reader) never pays for torch and sam2.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "AudioTrack": "audio", "waveform_to_examples": "audio",
    "AuralSAM2Error": "errors",
    "AuralSAM2": "model", "build_auralsam2": "model", "load_checkpoint": "model",
    "Engine": "session", "Prompt": "session", "SegmentationSession": "session",
    "VideoSource": "video", "frames_from_array": "video", "load_audio": "audio_file", "open_video": "video",
    "RANDOM_WEIGHTS_BANNER": "weights", "load_engine": "weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
