"""A file's audio: decoded whole (`load_audio`) or as it is needed (`StreamedAudio`).

A `StreamedAudio` is an `AudioTrack` filled from a background thread: a long track's start can be
read (and its first log-mel block computed) while the rest is still being decoded; readers wait only
for the samples they need.
"""
from __future__ import annotations

import bisect
import contextlib
import threading
import weakref
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np

from .audio import AudioTrack, _as_float_2d, _check_finite
from .errors import AudioError, NoAudioError
from .media import existing_file, open_container

STREAM_BLOCK_SAMPLES = 1 << 16  # a StreamedAudio publishes its decoded samples in blocks of about this size
STREAM_AHEAD_SECONDS = 30.0  # a StreamedAudio decodes this far beyond what has been asked for, then waits


class StreamedAudio(AudioTrack):
    """An `AudioTrack` whose samples arrive from an iterator on a background thread (a file's decoder).

    The thread reads `STREAM_AHEAD_SECONDS` beyond the furthest sample asked for, then waits: `span`
    and `is_silent` wait only for the samples they read; `samples`, `num_samples` and `duration`
    read to the end. An error raised by the iterator is raised again in every reader. Each chunk
    becomes float32 exactly as `AudioTrack` converts it, and NaN or infinite samples are refused as
    there (``name``, the file's, starts the message). When the track is garbage-collected, the
    thread stops and closes the iterator.
    """

    def __init__(self, chunks: Iterator[np.ndarray], sample_rate: int, num_channels: int, name: str = "") -> None:
        # not AudioTrack.__init__: the samples are not there yet
        self.sample_rate, self._channels = int(sample_rate), int(num_channels)
        self._stream = _ChunkStream(self.sample_rate, self._channels, name)
        self._whole: np.ndarray | None = None
        weakref.finalize(self, self._stream.stop)
        threading.Thread(target=self._stream.receive, args=(chunks,), name="audio-decoder", daemon=True).start()

    @property
    def samples(self) -> np.ndarray:
        """All samples (reads to the end of the stream)."""
        if self._whole is None:
            self._whole = self._stream.all()
        return self._whole

    @property
    def num_channels(self) -> int:
        return self._channels

    def span(self, start: int, stop: int) -> np.ndarray:
        return self._stream.span(start, stop)

    def __reduce__(self) -> tuple:
        """Pickled (and deep-copied) as a plain AudioTrack of all its samples."""
        return AudioTrack, (self.samples, self.sample_rate)

    def __repr__(self) -> str:
        state = "decoded" if self._stream.done else "decoding"
        return f"<StreamedAudio {self._channels} ch @ {self.sample_rate} Hz, {state}>"


class _ChunkStream:
    """The buffer between a StreamedAudio's reading thread and its readers."""

    def __init__(self, sample_rate: int, channels: int, name: str) -> None:
        self.sample_rate, self.channels, self.name = sample_rate, channels, name
        self.blocks: list[np.ndarray] = []
        self.ends: list[int] = []  # cumulative sample count after each block
        self.wanted: int | None = 0  # the furthest sample asked for (None: all)
        self.done = self.stopped = False
        self.error: BaseException | None = None
        self.changed = threading.Condition()

    def receive(self, chunks: Iterator[np.ndarray]) -> None:
        """The thread: convert and publish chunks, staying a bounded distance ahead of the readers."""
        ahead = int(STREAM_AHEAD_SECONDS * self.sample_rate)
        pending, count, received = [], 0, 0
        try:
            for chunk in chunks:
                samples = _as_float_2d(chunk, np.float32)
                _check_finite(samples, self.sample_rate, self.name, offset=received)
                pending.append(samples)
                count += len(samples)
                received += len(samples)
                if count >= STREAM_BLOCK_SAMPLES:
                    self._publish(pending)
                    pending, count = [], 0
                    with self.changed:  # far enough ahead: wait until someone reads further
                        self.changed.wait_for(lambda: self.stopped or self.wanted is None
                                              or self.ends[-1] < self.wanted + ahead)
                    if self.stopped:
                        break
            self._publish(pending)
        except BaseException as error:  # surfaces in the reader
            self.error = error
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        with self.changed:
            self.done = True
            self.changed.notify_all()

    def _publish(self, pending: list[np.ndarray]) -> None:
        if not pending:
            return
        block = np.concatenate(pending) if len(pending) > 1 else pending[0]
        with self.changed:
            self.blocks.append(block)
            self.ends.append((self.ends[-1] if self.ends else 0) + len(block))
            self.changed.notify_all()

    def stop(self) -> None:
        with self.changed:
            self.stopped = True
            self.changed.notify_all()

    def _wait(self, stop: int | None) -> tuple[list[np.ndarray], list[int]]:
        """Wait until samples up to `stop` (None: all) have arrived; the blocks so far."""
        with self.changed:
            if self.wanted is not None:
                self.wanted = None if stop is None else max(self.wanted, stop)
                self.changed.notify_all()
            self.changed.wait_for(lambda: self.done or (stop is not None and bool(self.ends)
                                                        and self.ends[-1] >= stop))
            if self.error is not None:
                raise self.error
            return list(self.blocks), list(self.ends)

    def all(self) -> np.ndarray:
        blocks, _ = self._wait(None)
        whole = np.concatenate(blocks) if blocks else np.zeros((0, self.channels), np.float32)
        with self.changed:
            self.blocks, self.ends = [whole], [len(whole)]
        return whole

    def span(self, start: int, stop: int) -> np.ndarray:
        blocks, ends = self._wait(stop)
        parts = []
        for i in range(bisect.bisect_right(ends, start), min(bisect.bisect_left(ends, stop) + 1, len(blocks))):
            begin = ends[i] - len(blocks[i])
            parts.append(blocks[i][max(start - begin, 0):stop - begin])
        if not parts:
            return np.zeros((0, self.channels), np.float32)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def load_audio(path: str | Path) -> AudioTrack:
    """Decode the whole first audio stream of an audio or video file, keeping its channels and rate.

    Sample 0 is the stream's first decoded sample (encoder priming removed by the decoder).
    """
    path = existing_file(path, AudioError, "audio")
    track = decode_audio(path, origin=None, streamed=False)
    if track is None:
        raise NoAudioError(f"{path.name} has no audio stream", "pass a file with sound (wav, flac, mp3, m4a, ogg, mp4)")
    return track


def audio_loader(
    audio: str | Path | AudioTrack | None, default: Callable[[], AudioTrack | None],
) -> Callable[[], AudioTrack | None]:
    """A lazy loader for the ``audio`` argument of open_video/frames_from_array."""
    if isinstance(audio, AudioTrack):
        return lambda: audio
    if isinstance(audio, (str, Path)):
        return lambda: load_audio(audio)
    if audio is not None:
        raise AudioError(f"audio must be a file path or an AudioTrack, got {type(audio).__name__}")
    return default


def decode_audio(path: Path, origin: float | None, streamed: bool = True) -> AudioTrack | None:
    """First audio stream of ``path``; sample 0 is at ``origin`` seconds (None: first sample).

    ``streamed``: decode the first frame here and the rest on a background thread (`StreamedAudio`),
    so a long track can be read from its start at once; otherwise decode (and check) it all here.
    """
    container = open_container(path, AudioError)
    if not container.streams.audio:
        container.close()
        return None
    chunks = _audio_chunks(container, path, origin)
    first = next(chunks, None)
    if first is None:
        return None
    rate, samples = first
    if streamed:
        return StreamedAudio(_samples_of(samples, chunks), rate, samples.shape[1], path.name)
    try:
        return AudioTrack(np.concatenate(list(_samples_of(samples, chunks))), rate)
    except AudioError as error:
        raise AudioError(f"{path.name}: {error}") from None


def _samples_of(first: np.ndarray, chunks: Iterator[tuple[int, np.ndarray]]) -> Iterator[np.ndarray]:
    """``first``, then the samples of ``chunks``; closing this closes the decoder."""
    with contextlib.closing(chunks):
        yield first
        for _, samples in chunks:
            yield samples


def _audio_chunks(container: av.container.InputContainer, path: Path,
                  origin: float | None) -> Iterator[tuple[int, np.ndarray]]:
    """(rate, samples) of each decoded frame, shifted so that sample 0 is at ``origin`` (see above).

    Closes the container when done.
    """
    with container:
        stream = container.streams.audio[0]
        rate = channels = None
        skip = 0  # samples before ``origin`` still to drop
        try:
            for decoded in container.decode(stream):
                samples = _frame_samples(decoded)
                if rate is None:
                    rate, channels = decoded.sample_rate, samples.shape[1]
                    shift = 0 if origin is None else round(((decoded.time or 0.0) - origin) * rate)
                    if shift > 0:
                        yield rate, np.zeros((shift, channels), np.float32)
                    skip = max(0, -shift)
                elif decoded.sample_rate != rate:
                    raise AudioError(f"the audio of {path.name} changes sample rate", "convert it to one rate first")
                if samples.shape[1] != channels:
                    raise AudioError(f"the audio of {path.name} changes channel count", "convert it to one layout first")
                if skip:
                    dropped = min(skip, len(samples))
                    samples, skip = samples[dropped:], skip - dropped
                yield rate, samples
        except av.FFmpegError as error:
            raise AudioError(f"decoding the audio of {path.name} failed: {error}",
                             "the file is truncated or corrupted; re-encode it") from error


def _frame_samples(decoded: av.AudioFrame) -> np.ndarray:
    """Samples of one audio frame as ``(n, channels)`` in the frame's own dtype (u8 centred)."""
    array = decoded.to_ndarray()
    channels = decoded.layout.nb_channels
    array = array.T if decoded.format.is_planar else array.reshape(-1, channels)
    if array.dtype == np.uint8:
        return (array.astype(np.float32) - 128.0) / 128.0
    return array


__all__ = ["StreamedAudio", "load_audio", "audio_loader", "decode_audio", "STREAM_AHEAD_SECONDS",
           "STREAM_BLOCK_SAMPLES"]
