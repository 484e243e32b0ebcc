"""Frame-by-frame segmentation of CVAT frames with the audio of their source video.

Both detectors (the nuclio function and the cvat-sdk function) get one image per call. Each image
is located in its source video by fingerprint (:mod:`.fingerprint`); the engine then runs on that
video, with its audio, and a :class:`~.streams.MaskStream` keeps SAM2's memory while the calls
walk forward through the video, so consecutive frames form one masklet instead of independent
guesses. A jump backwards, to another video or far ahead restarts the stream on that frame.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import masks as codec
from ..core import session
from ..core.session import Engine
from ..core.video import VideoSource, open_video
from .fingerprint import MAX_SKIP, FrameIndex, Match
from .streams import OBJECT_ID, MaskStream

OPEN_VIDEOS = 2
#: the label both detectors write (nuclio: AURALSAM2_LABEL, cvat-sdk: -p label=...)
DEFAULT_LABEL = "sounding object"


@dataclass
class Prompt(session.Prompt):
    """What starts the masklet: clicks/box on ``frame``, or (none given) the audio alone; ``text``
    names the object (Ref-AVS weights).

    ``frame=None`` starts on the first frame seen (audio mode); a fixed frame is where the
    clicks were made, and frames before it get no mask.
    """

    frame: int | None = None
    object_id: int = OBJECT_ID


@dataclass(frozen=True)
class Segment:
    """The object on one located frame: ``mask`` is at the incoming image's size."""

    match: Match
    mask: np.ndarray
    score: float


class Segmenter:
    """Locates images in source videos and tracks one object through them (not thread-safe)."""

    def __init__(self, engine: Engine, index: FrameIndex, prompt: Prompt | None = None, use_audio: bool = True,
                 audio: str | Path | None = None) -> None:
        self.engine, self.index = engine, index
        self.prompt = prompt or Prompt()
        self.use_audio = use_audio
        self.audio = audio
        self._videos: OrderedDict[tuple[Path, str], VideoSource] = OrderedDict()
        self._stream: MaskStream | None = None
        self._stream_key: tuple[Path, str] | None = None  # (path, version) of the stream's video
        self._last: tuple[Path, int] | None = None

    def locate(self, image: np.ndarray) -> Match:
        match = self.index.match(image, after=self._last)
        self._last = (match.path, match.frame)
        return match

    def segment(self, image: np.ndarray) -> Segment | None:
        """Locate the image and segment it; None before a fixed prompt frame."""
        match = self.locate(image)
        stream = self._stream_for(match)
        if stream is None:
            return None
        mask, score = stream.advance_to(match.frame)
        height, width = image.shape[:2]
        return Segment(match, codec.resize_mask(mask, width, height), score)

    def _stream_for(self, match: Match) -> MaskStream | None:
        fixed = self.prompt.frame
        if fixed is not None and match.frame < fixed:
            return None
        key = (match.path, match.version)
        stream = self._stream
        if stream is not None and self._stream_key == key and stream.last_frame < match.frame \
                and (fixed is not None or match.frame - stream.last_frame <= MAX_SKIP):
            return stream
        self.close_stream()
        video = self._video(key)
        start = match.frame if fixed is None else fixed
        prompt = self.prompt
        self._stream = MaskStream(self.engine, video, start, use_audio=self.use_audio, points=prompt.points or None,
                                  labels=prompt.labels or None, box=prompt.box, text=prompt.text)
        self._stream_key = key
        return self._stream

    def _video(self, key: tuple[Path, str]) -> VideoSource:
        """The video of a match, kept open (a file that changed since is opened afresh)."""
        video = self._videos.pop(key, None)
        if video is None:
            video = open_video(key[0], audio=self.audio)
        self._videos[key] = video
        while len(self._videos) > OPEN_VIDEOS:
            self._videos.popitem(last=False)[1].close()
        return video

    def close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = self._stream_key = None

    def close(self) -> None:
        self.close_stream()
        for video in self._videos.values():
            video.close()
        self._videos.clear()


__all__ = ["Prompt", "Segment", "Segmenter"]
