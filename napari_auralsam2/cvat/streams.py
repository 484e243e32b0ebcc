"""Engine plumbing shared by the CVAT paths: one object tracked forward one frame per call.

CVAT hands functions one frame at a time, so a masklet is built by keeping a session (and its
SAM2 memory) alive between calls: :class:`MaskStream` holds a suspended ``propagate`` generator
and resumes it for the next frame. Torch's inference/autocast modes are thread-local and a
suspended generator sits inside them, so every call into a stream is wrapped in fresh modes (a
stream may be resumed from any thread); servers serialise model use with :func:`model_lock`.
"""
from __future__ import annotations

import threading
import weakref
from pathlib import Path

import numpy as np
import torch

from ..core.errors import PromptError, VideoError
from ..core.session import Engine, Prompt
from ..core.video import VideoSource
from ..core.weights import DEFAULT_RELEASE, load_engine

OBJECT_ID = 1
#: frames a streamed (tracker) video can reach; its frame times are one small array
STREAM_CAPACITY = 36_000
#: frames a streamed video keeps (the engine re-reads at most the current window)
STREAM_KEEP = 4

_engines: dict[tuple, Engine] = {}
_engines_lock = threading.Lock()
_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_engine(model: str = "hiera_l", image_size: int = 1024, weights: str = "auto",
                  checkpoint: str | Path | None = None, sam2_checkpoint: str | Path | None = None,
                  device: str | None = None, allow_download: bool = True, release: str = DEFAULT_RELEASE,
                  text_model: str | Path | None = None) -> Engine:
    """Load an engine once per process and configuration (functions and tests share it)."""
    key = (model, int(image_size), weights, str(checkpoint or ""), str(sam2_checkpoint or ""), device or "",
           release, str(text_model or ""))
    with _engines_lock:
        if key not in _engines:
            _engines[key] = load_engine(model=model, image_size=int(image_size), weights=weights,
                                        checkpoint=checkpoint, sam2_checkpoint=sam2_checkpoint, device=device,
                                        allow_download=allow_download, release=release, text_model=text_model)
        return _engines[key]


def frame_by_frame(engine: Engine) -> Engine:
    """The same model encoding one frame per window (a tracker cannot see frames ahead)."""
    return Engine(engine.model, device=engine.device, window=1, random_weights=engine.random_weights)


def model_lock(engine: Engine) -> threading.RLock:
    """The lock serialising every use of an engine's model (it holds per-call prompt state)."""
    with _engines_lock:
        return _locks.setdefault(engine.model, threading.RLock())


class StreamVideo(VideoSource):
    """A video that grows as CVAT sends frames (tracker); only the last few frames are kept."""

    def __init__(self, height: int, width: int, fps: float = 25.0) -> None:
        super().__init__(np.arange(STREAM_CAPACITY) / fps, fps, height, width, lambda: None, None)
        self._frames: dict[int, np.ndarray] = {}
        self.count = 0

    def check(self, frame: np.ndarray) -> None:
        """Raise if the frame cannot be the next one (another size, or the stream is full)."""
        if frame.shape[:2] != (self.height, self.width):
            raise PromptError(f"this frame is {frame.shape[1]}x{frame.shape[0]}, the track started on a "
                              f"{self.width}x{self.height} frame", "track within one video")
        if self.count >= STREAM_CAPACITY:
            raise VideoError(f"a track can follow at most {STREAM_CAPACITY} frames", "start a new track")

    def push(self, frame: np.ndarray) -> int:
        """Append a frame (uint8 [H, W, 3]); returns its index."""
        self.check(frame)
        self._frames[self.count] = np.ascontiguousarray(frame)
        self._frames.pop(self.count - STREAM_KEEP, None)
        self.count += 1
        return self.count - 1

    def _read(self, index: int) -> np.ndarray:
        try:
            return self._frames[index]
        except KeyError:
            raise VideoError(f"frame {index} of the tracked stream is no longer (or not yet) available") from None


class MaskStream:
    """One object in one video: prompted on a start frame, then tracked forward on demand."""

    def __init__(self, engine: Engine, video: VideoSource, start_frame: int, use_audio: bool = True,
                 points: list | None = None, labels: list | None = None, box: tuple | None = None,
                 text: str | None = None) -> None:
        self.engine, self.video = engine, video
        self.start_frame = int(start_frame)
        self.session = engine.open_session(video, use_audio=use_audio)
        self.session.apply(Prompt(self.start_frame, OBJECT_ID, list(points or []), list(labels or []), box,
                                  text=text))
        self._frames = self.session.propagate(start_frame=self.start_frame, direction="forward")
        self.last_frame = self.start_frame - 1

    def advance_to(self, frame: int) -> tuple[np.ndarray, float]:
        """Mask (bool [H, W]) and presence score (0..1) on ``frame`` (>= the last frame given)."""
        if frame <= self.last_frame:
            raise PromptError(f"frame {frame} is behind this stream (at {self.last_frame})")
        for index, masks in self._frames:
            if index == frame:
                self.last_frame = index
                return masks[OBJECT_ID], self._presence(index)
        raise VideoError(f"frame {frame} is past the end of the video")

    def _presence(self, frame: int) -> float:
        """SAM2's object score for the frame, as a probability (masks vanish below 0.5)."""
        outputs = self.session.state["output_dict_per_obj"][0]
        out = outputs["cond_frame_outputs"].get(frame) or outputs["non_cond_frame_outputs"][frame]
        return float(torch.sigmoid(out["object_score_logits"].float()).max())

    def close(self) -> None:
        self._frames.close()
        self.session.close()


__all__ = ["shared_engine", "frame_by_frame", "model_lock", "StreamVideo", "MaskStream", "OBJECT_ID"]
