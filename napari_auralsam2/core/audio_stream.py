"""A file's audio as it is decoded: `StreamedAudio`, an `AudioTrack` filled from a background thread.

A long track's start can be read (and its first log-mel block computed) while the rest is still
being decoded; readers wait only for the samples they need.
"""
from __future__ import annotations

import bisect
import threading
import weakref
from typing import Iterator

import numpy as np

from .audio import AudioTrack, _as_float_2d, _check_finite

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


__all__ = ["StreamedAudio", "STREAM_AHEAD_SECONDS", "STREAM_BLOCK_SAMPLES"]
