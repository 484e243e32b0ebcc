"""Video sources for the session: lazy PyAV decoding (or a wrapped array) plus an audio track.

``open_video`` indexes a file by demuxing its packets (no decoding), then decodes frames on
demand: it seeks to the keyframe before the requested frame, decodes forward, and keeps the
decoded frames in a small LRU cache whose size is set in bytes. A live decoder continues
forward reads without seeking, so forward and backward sequential access are both cheap and
memory stays bounded by the index and the cache, whatever the video's length.

Frames are given as players show them: a display rotation/flip in the container (phone videos
shot upright carry one) is applied, so ``shape``, frames, prompts and masks are all in display
orientation. Rotations other than quarter turns are refused.

A file cut short (a copy in progress, a faststart mp4 truncated) is indexed up to its last
decodable frame: ``unreadable`` counts the frames the container lists but cannot be decoded, and
``truncation_note`` says so in one line for the hosts.

Frame times are seconds from the first video frame; the container's audio is shifted onto the
same clock (silence before its first sample, samples before the first frame dropped), so
``video.frame_times`` can be passed to ``audio.frame_examples`` as is.
"""

from __future__ import annotations

import abc
import bisect
import threading
import warnings
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import av
import numpy as np
from PIL import Image

from .audio import AudioTrack
from .audio_file import audio_loader, decode_audio
from .media import existing_file, open_container
from .errors import AudioError, NoAudioError, VideoError
from .orientation import Orientation, display_orientation, orient

DEFAULT_CACHE_BYTES = 256 * 2**20
MIN_CACHE_FRAMES = 2
MAX_ARRAY_BYTES = 2**30  # np.asarray(video) refuses to decode more than this at once
MAX_FRAME_PIXELS = 8192 * 8192  # larger frames are refused (one RGB frame would exceed 192 MiB)
RGB = 3
MAX_RATE_DENOMINATOR = 1001  # keeps 30000/1001-style rates exact
# suffix -> (video codec, encoder options, audio codec, audio rate or None to keep the track's)
WRITE_CODECS: dict[str, tuple[str, dict[str, str], str, int | None]] = {
    ".mp4": ("libx264", {"crf": "18", "preset": "fast"}, "aac", None),
    ".mov": ("libx264", {"crf": "18", "preset": "fast"}, "aac", None),
    ".mkv": ("libx264", {"crf": "18", "preset": "fast"}, "aac", None),
    ".webm": ("libvpx-vp9", {"crf": "32", "b": "0"}, "libopus", 48_000),
    ".avi": ("mpeg4", {"qscale": "3"}, "pcm_s16le", None),
}
AUDIO_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}
FINGERPRINT_SIDE = 8
FINGERPRINT_DIMS = FINGERPRINT_SIDE * FINGERPRINT_SIDE * RGB


class VideoSource(abc.ABC):
    """Lazy ``(T, H, W, 3)`` uint8 video with frame times and an optional audio track.

    Array-like for napari (``shape``, ``dtype``, ``ndim``, indexing); ``np.asarray(video)``
    refuses videos larger than ``MAX_ARRAY_BYTES``. Frames are read-only arrays.
    ``frame(i)`` raises VideoError when a frame cannot be decoded; indexing (``video[i]``, what
    napari's slicing calls) never does: it warns once and gives a black frame instead.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4
    unreadable = 0  #: frames the file lists but cannot decode (left out of the video; see truncation_note)

    def __init__(
        self, frame_times: np.ndarray, fps: float, height: int, width: int,
        audio_loader: Callable[[], AudioTrack | None], path: Path | None,
    ) -> None:
        self.frame_times = np.asarray(frame_times, dtype=np.float64)
        self.fps = float(fps)
        self.height, self.width = int(height), int(width)
        self.path = path
        self._audio_loader: Callable[[], AudioTrack | None] | None = audio_loader
        self._audio: AudioTrack | None = None
        self._warned: set[int] = set()

    @abc.abstractmethod
    def _read(self, index: int) -> np.ndarray:
        """Frame ``index`` (already range-checked) as uint8 ``[H, W, 3]``."""

    def close(self) -> None:
        """Release the file (no-op for arrays)."""

    @property
    def audio(self) -> AudioTrack | None:
        """The audio track (decoded on first access), or None when there is none."""
        if self._audio_loader is not None:
            self._audio, self._audio_loader = self._audio_loader(), None
        return self._audio

    def require_audio(self) -> AudioTrack:
        """The audio track; raises NoAudioError when there is none."""
        track = self.audio
        if track is None:
            name = self.path.name if self.path else "the frames"
            raise NoAudioError(f"{name} has no audio track", "pass audio='file.wav' or run without audio")
        return track

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(T, H, W, 3)``."""
        return (len(self), self.height, self.width, RGB)

    def __len__(self) -> int:
        return int(self.frame_times.size)

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (negative counts from the end) as uint8 ``[H, W, 3]``."""
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"frame {index} is out of range for a video of {count} frames")
        return self._read(index % count)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.frame(i) for i in range(len(self)))

    def _shown(self, index: int) -> np.ndarray:
        """Frame ``index`` for display: a frame that cannot be decoded is black (warned once)."""
        try:
            return self.frame(index)
        except VideoError as error:
            if index % len(self) not in self._warned:
                self._warned.add(index % len(self))
                warnings.warn(f"showing frame {index} as black: {error}", RuntimeWarning, stacklevel=3)
            return np.zeros((self.height, self.width, RGB), dtype=np.uint8)

    def __getitem__(self, key: object) -> np.ndarray:
        if isinstance(key, tuple) and key and isinstance(key[0], (int, np.integer, slice)):
            frames = self[key[0]]
            lead = () if frames.ndim == 3 else (slice(None),)
            return frames[lead + key[1:]]
        if isinstance(key, (int, np.integer)):
            return self._shown(int(key))
        if isinstance(key, slice):
            indices = np.arange(len(self))[key]
        elif isinstance(key, (list, np.ndarray)):
            indices = np.arange(len(self))[np.asarray(key)]
        else:
            return np.asarray(self)[key]
        if indices.size == 0:
            return np.empty((0, self.height, self.width, RGB), dtype=np.uint8)
        return np.stack([self._shown(int(i)) for i in indices])

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        nbytes = len(self) * self.height * self.width * RGB
        if nbytes > MAX_ARRAY_BYTES:
            raise VideoError(
                f"refusing to decode all {len(self)} frames ({nbytes / 2**30:.1f} GiB) at once",
                "index single frames or slices instead (video[i], video[a:b])",
            )
        frames = self[:]
        return frames if dtype is None else frames.astype(dtype, copy=False)

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        source = self.path.name if self.path else "array"
        return f"<{type(self).__name__} {source} {len(self)}x{self.height}x{self.width} @ {self.fps:g} fps>"


class FileVideo(VideoSource):
    """A video file decoded on demand with PyAV (see the module docstring)."""

    def __init__(
        self, path: str | Path, audio: str | Path | AudioTrack | None = None,
        fps: float | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        path = existing_file(path, VideoError, "video")
        self.path = path
        self._container = open_container(path, VideoError)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._next = 0  # index the live decoder yields next
        self._lock = threading.Lock()
        self._closed = False
        self._orientation: Orientation | None = None  # read from frame 0's display matrix
        try:
            if not self._container.streams.video:
                raise VideoError(f"{path.name} has no video stream", "pass a video file (mp4, mov, mkv, webm, avi)")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            coded_h, coded_w = self._stream.codec_context.height, self._stream.codec_context.width
            if coded_h * coded_w > MAX_FRAME_PIXELS:
                raise VideoError(f"{path.name} has {coded_w}x{coded_h} frames, too large to segment",
                                 "scale it down first (e.g. ffmpeg -vf scale=1920:-2)")
            self._coded_size = (coded_h, coded_w)
            self._capacity = max(MIN_CACHE_FRAMES, int(cache_bytes) // max(1, coded_h * coded_w * RGB))
            self._pts, self._keyframes, suspect = _index_packets(self._container, self._stream, path)
            listed = self._pts.size
            self._index_of = {int(p): i for i, p in enumerate(self._pts)}
            if suspect:
                self._keep(self._decodable_count())
            self._decode_to(0, restart_at_zero=False)  # frame 0 gives the orientation (and proves decoding)
            if 0 not in self._cache:
                raise VideoError(f"the first frame of {path.name} cannot be decoded",
                                 "the file is truncated or corrupted; re-encode it (e.g. with ffmpeg)")
        except BaseException:
            self._container.close()
            raise
        self.unreadable = int(listed - self._pts.size)
        base = float(self._stream.time_base)
        origin = float(self._pts[0]) * base
        times = (self._pts - self._pts[0]) * base if fps is None else np.arange(self._pts.size) / _positive_fps(fps)
        height, width = self._coded_size[::-1] if self._orientation[0] else self._coded_size
        super().__init__(times, fps or _stream_fps(self._stream, times), height, width,
                         audio_loader(audio, lambda: decode_audio(path, origin)), path)

    def _keep(self, count: int) -> None:
        """Index only the first ``count`` frames."""
        if count == 0:
            raise VideoError(f"no frame of {self.path.name} can be decoded",
                             "the file is truncated or corrupted; re-encode it (e.g. with ffmpeg)")
        self._pts = self._pts[:count]
        self._keyframes = [k for k in self._keyframes if k < count]
        self._index_of = {int(p): i for i, p in enumerate(self._pts)}

    def _decodable_count(self) -> int:
        """How many leading frames decode, checked from the second-to-last keyframe on (the end of
        a file cut short is all that can be missing)."""
        start = self._keyframes[-2] if len(self._keyframes) > 1 else 0
        self._seek(start)
        decoded = set()
        try:
            for frame in self._decoder:
                index = self._index_of.get(int(frame.pts)) if frame.pts is not None else None
                if index is not None:
                    decoded.add(index)
        except av.FFmpegError:
            pass  # the damaged tail: what decoded before it counts
        self._decoder = None
        count = start
        while count in decoded:
            count += 1
        return count

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed, self._decoder = True, None
                self._cache.clear()
                self._container.close()

    def _read(self, index: int) -> np.ndarray:
        with self._lock:
            if self._closed:
                raise VideoError(f"{self.path.name} is closed", "open it again with open_video")
            frame = self._cache.get(index)
            if frame is None:
                for restart_at_zero in (False, True):
                    self._decode_to(index, restart_at_zero)
                    if index in self._cache:
                        break
                else:
                    raise VideoError(
                        f"frame {index} of {self.path.name} could not be decoded",
                        "the file is truncated or corrupted; re-encode it (e.g. with ffmpeg)",
                    )
                frame = self._cache[index]
            self._cache.move_to_end(index)
            return frame

    def _decode_to(self, target: int, restart_at_zero: bool) -> None:
        """Decode up to ``target``, caching the frames that fit before it."""
        key = 0 if restart_at_zero else self._keyframes[bisect.bisect_right(self._keyframes, target) - 1]
        if restart_at_zero or self._decoder is None or not key <= self._next <= target:
            self._seek(key)
        keep_from = max(key, target - self._capacity + 1)
        try:
            for decoded in self._decoder:
                index = self._next if decoded.pts is None else self._index_of.get(int(decoded.pts))
                if index is None:
                    continue
                self._next = index + 1
                if keep_from <= index <= target:
                    self._store(index, decoded)
                if index >= target:
                    return
        except av.FFmpegError as error:
            raise VideoError(
                f"decoding {self.path.name} failed near frame {target}: {error}",
                "the file is truncated or corrupted; re-encode it (e.g. with ffmpeg)",
            ) from error
        self._decoder = None

    def _seek(self, index: int) -> None:
        try:
            self._container.seek(int(self._pts[index]), stream=self._stream, backward=True, any_frame=False)
        except av.FFmpegError as error:
            raise VideoError(f"cannot seek in {self.path.name}: {error}",
                             "re-encode the file (e.g. with ffmpeg)") from error
        self._decoder = _decode_packets(self._container, self._stream)
        self._next = index

    def _store(self, index: int, decoded: av.VideoFrame) -> None:
        if self._orientation is None:
            self._orientation = display_orientation(decoded, self.path.name)
        height, width = self._coded_size
        frame = orient(decoded.to_ndarray(format="rgb24", width=width, height=height), self._orientation)
        frame.flags.writeable = False
        self._cache[index] = frame
        self._cache.move_to_end(index)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)


class ArrayVideo(VideoSource):
    """Any ``(T, H, W[, C])`` array-like (numpy, dask, a napari layer's data), read lazily."""

    def __init__(self, data: object, fps: float, audio: str | Path | AudioTrack | None = None) -> None:
        shape = tuple(getattr(data, "shape", ()))
        if len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3, 4)):
            raise VideoError(f"frames must be shaped (T, H, W) or (T, H, W, 1|3|4), got {shape}")
        if shape[0] == 0:
            raise VideoError("the frame array is empty", "pass at least one frame")
        times = np.arange(shape[0]) / _positive_fps(fps)
        super().__init__(times, fps, shape[1], shape[2], audio_loader(audio, lambda: None), None)
        self._data = data

    def _read(self, index: int) -> np.ndarray:
        if isinstance(self._data, VideoSource):  # its indexing blanks undecodable frames; here they must fail
            return self._data.frame(index)
        return to_rgb_uint8(np.asarray(self._data[index]))


def open_video(
    path: str | Path, audio: str | Path | AudioTrack | None = None,
    fps: float | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> VideoSource:
    """Open a video file lazily; ``audio`` replaces its audio track, ``fps`` its frame timing."""
    return FileVideo(path, audio=audio, fps=fps, cache_bytes=cache_bytes)


def frames_from_array(array_like: object, fps: float, audio: str | Path | AudioTrack | None = None) -> VideoSource:
    """Wrap a ``(T, H, W, 3)`` (or grayscale ``(T, H, W)``) array-like as a lazy video."""
    return ArrayVideo(array_like, fps, audio)


def write_video(
    path: str | Path, frames: Iterable[np.ndarray], fps: float, audio: AudioTrack | None = None,
    keyframe_interval: int | None = None,
) -> Path:
    """Encode frames (and audio) to mp4/mov/mkv (h264 + AAC), webm (VP9 + Opus) or avi (MPEG-4 + PCM).

    Odd frame sizes are padded by one edge pixel to even; ``keyframe_interval`` (frames) trades
    file size for faster seeking. Returns the path.
    """
    path = Path(path)
    if path.suffix.lower() not in WRITE_CODECS:
        raise VideoError(f"cannot write {path.suffix or 'extension-less'} files",
                         f"use one of {', '.join(WRITE_CODECS)}")
    if audio is not None and audio.num_channels not in AUDIO_LAYOUTS:
        raise AudioError(f"cannot encode {audio.num_channels} audio channels", "down-mix to mono or stereo first")
    rate = Fraction(_positive_fps(fps)).limit_denominator(MAX_RATE_DENOMINATOR)
    vcodec, options, acodec, arate = WRITE_CODECS[path.suffix.lower()]
    container = av.open(str(path), "w")
    try:
        vstream = astream = None
        audio_pos = 0
        for index, frame in enumerate(frames):
            rgb = _even(to_rgb_uint8(np.asarray(frame)))
            if vstream is None:
                vstream = container.add_stream(vcodec, rate=rate, options=options)
                vstream.height, vstream.width, vstream.pix_fmt = rgb.shape[0], rgb.shape[1], "yuv420p"
                if keyframe_interval:
                    vstream.codec_context.gop_size = int(keyframe_interval)
                if audio is not None:
                    astream = container.add_stream(acodec, rate=arate or audio.sample_rate,
                                                   layout=AUDIO_LAYOUTS[audio.num_channels])
            elif rgb.shape[:2] != (vstream.height, vstream.width):
                raise VideoError(f"frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, "
                                 f"the first was {vstream.width}x{vstream.height}", "give frames of one size")
            video_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            video_frame.pts = index
            container.mux(vstream.encode(video_frame))
            if astream is not None:  # interleave: audio up to the end of this frame
                end = min(audio.num_samples, round((index + 1) / float(rate) * audio.sample_rate))
                audio_pos = _encode_audio(container, astream, audio, audio_pos, end)
        if vstream is None:
            raise VideoError(f"no frames given for {path.name}", "pass at least one frame")
        container.mux(vstream.encode())
        if astream is not None:
            _encode_audio(container, astream, audio, audio_pos, audio.num_samples)
            container.mux(astream.encode())
    finally:
        container.close()
    return path


def fingerprint(image: np.ndarray | Image.Image) -> np.ndarray:
    """uint8 ``[192]``: the image's 8x8 RGB block means (area-averaged, any input size).

    Tiny and stable under re-encoding: tells which video (and frame) an image or a saved file belongs to.
    """
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.ascontiguousarray(image))
    small = picture.convert("RGB").resize((FINGERPRINT_SIDE, FINGERPRINT_SIDE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8).reshape(FINGERPRINT_DIMS)


def to_rgb_uint8(frame: np.ndarray) -> np.ndarray:
    """One frame as uint8 ``[H, W, 3]``: gray/1-channel expanded, alpha dropped.

    Floats are taken as [0, 1], booleans as {0, 255}, other integers are clipped to [0, 255].
    """
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise VideoError(f"a frame must be shaped (H, W) or (H, W, 1|3|4), got {frame.shape}")
    frame = frame[..., :RGB] if frame.shape[2] == 4 else frame
    if frame.dtype == np.bool_:
        frame = frame.astype(np.uint8) * 255
    elif np.issubdtype(frame.dtype, np.floating):
        frame = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
    elif frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    return np.repeat(frame, RGB, axis=2) if frame.shape[2] == 1 else frame


def truncation_note(video: VideoSource) -> str | None:
    """One line for the hosts when the file lists frames that cannot be decoded, else None."""
    if not video.unreadable:
        return None
    name = video.path.name if video.path else "the video"
    return (f"{name} is cut short or damaged: only its first {len(video)} of {len(video) + video.unreadable} "
            "frames can be decoded, so only those are used")


def _index_packets(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path,
) -> tuple[np.ndarray, list[int], bool]:
    """Sorted unique frame pts, the indices of keyframes, and whether the file looks cut short.

    Cut short: the demuxer failed part-way, the container's own index lists packets past the end
    of the file (a truncated faststart mp4), or, without such an index, the last packet ends
    exactly at the end of the file.
    """
    pts, keys, packets, last_end = [], [], 0, 0
    suspect = False
    try:
        for packet in container.demux(stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if packet.size == 0 or stamp is None:
                continue
            pts.append(stamp)
            packets += 1
            last_end = (packet.pos or 0) + packet.size
            if packet.is_keyframe:
                keys.append(stamp)
    except av.FFmpegError as error:
        if not pts:
            raise VideoError(f"cannot index {path.name}: {error}",
                             "the file is truncated or corrupted; re-encode it") from error
        suspect = True
    if not pts:
        raise VideoError(f"{path.name} has no video frames", "pass a video with at least one frame")
    size = path.stat().st_size
    entries = stream.index_entries
    if len(entries) >= packets:
        suspect = suspect or any(entry.pos + entry.size > size for entry in entries if entry.pos >= 0)
    else:
        suspect = suspect or last_end >= size
    ordered = np.unique(np.asarray(pts, dtype=np.int64))
    keyframes = sorted({0, *np.searchsorted(ordered, keys).tolist()})
    return ordered, keyframes, suspect


def _decode_packets(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
    """Decoded frames from the current position; a packet the decoder rejects loses only its frame."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.InvalidDataError:
            continue


def _stream_fps(stream: av.VideoStream, times: np.ndarray) -> float:
    rate = stream.average_rate or stream.guessed_rate
    if rate:
        return float(rate)
    span = float(times[-1] - times[0])
    return (times.size - 1) / span if span > 0 else 1.0


def _positive_fps(fps: float) -> float:
    if not fps or float(fps) <= 0 or not np.isfinite(float(fps)):
        raise VideoError(f"invalid frame rate {fps!r}", "give a positive fps")
    return float(fps)


def _encode_audio(container: av.container.OutputContainer, stream: av.AudioStream,
                  track: AudioTrack, start: int, end: int) -> int:
    """Encode samples ``start:end`` of ``track``; returns ``end``."""
    if end <= start:
        return start
    chunk = np.ascontiguousarray(track.samples[start:end].T)
    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=AUDIO_LAYOUTS[track.num_channels])
    frame.sample_rate, frame.pts, frame.time_base = track.sample_rate, start, Fraction(1, track.sample_rate)
    container.mux(stream.encode(frame))
    return end


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by one edge pixel (yuv420p needs even sizes)."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    return np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else frame
