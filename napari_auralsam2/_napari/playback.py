"""Hearing the video in napari: its sound in step with the frame slider, and "Play this moment".

`Player` is Qt-free: it feeds a stream shaped like ``sounddevice.OutputStream`` (callback API)
from an `AudioTrack` whose sample 0 is at frame time 0 (as `VideoSource.audio` is). A frame clock
drives it: `play` starts at a frame at the clock's fps (the video's own fps = normal speed; another
fps changes the speed, a negative one plays backwards), `follow` re-seeks when the shown frame and
the sound drift apart by more than `DRIFT_FRAMES` (a seek on the slider, a loop, dropped frames),
`pause` stops. `play_moment` plays the audio that the model hears for one frame: the span of its
"centred" VGGish example (`core.audio.centred_spans`: 0.96 s of hops plus one 25 ms window,
silence outside the track).

`connect_viewer` ties a player to a napari viewer: napari's slider animation (its ``QtDims``
animation thread: ``started``/``finished``, the slider's ``fps_changed``) starts, re-times and
stops the sound, and ``viewer.dims.events.current_step`` keeps it in step.

sounddevice (PortAudio) is the optional ``sound`` extra; `available` says whether sound can play
here and, if not, why (for a disabled control's tooltip).
"""
from __future__ import annotations

import importlib
import threading
from typing import Callable, Sequence

import numpy as np

from ..core.audio import AudioTrack, centred_spans

#: re-seek when the sound is this many video frames away from the frame on screen
DRIFT_FRAMES = 2.0
OUTPUT_CHANNELS = 2
SOUND_EXTRA = "pip install 'napari-auralsam2[sound]'"


def _import_backend():
    """The sounddevice module (raises ImportError, or OSError when PortAudio is missing)."""
    return importlib.import_module("sounddevice")


def available(backend=None) -> tuple[bool, str]:
    """(True, "") when sound can play here, else (False, why) for a tooltip."""
    try:
        backend = backend or _import_backend()
    except ImportError:
        return False, f"sound needs the optional 'sound' extra: {SOUND_EXTRA}"
    except OSError as err:
        return False, f"sound needs the PortAudio library ({err}): install it, e.g. apt install libportaudio2"
    try:
        backend.query_devices(kind="output")
    except (backend.PortAudioError, ValueError) as err:
        return False, f"no sound output device here ({err})"
    return True, ""


class Player:
    """Plays an `AudioTrack` against a video's frame clock through a sounddevice-style output stream."""

    def __init__(self, track: AudioTrack, frame_times: Sequence[float], fps: float, backend=None) -> None:
        self.track = track
        self.frame_times = np.asarray(frame_times, dtype=np.float64)
        self.fps = float(fps)
        self._backend = backend
        channels = track.samples if track.num_channels <= OUTPUT_CHANNELS else track.samples.mean(1, keepdims=True)
        self._samples = np.ascontiguousarray(channels, dtype=np.float32)
        self._stream = None
        self._lock = threading.Lock()
        self._position = 0.0  # next track sample to play (float: other speeds land between samples)
        self._step = 1.0  # track samples per output sample
        self._end: float | None = None  # where a moment ends
        self._playing = False

    # -- state --------------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def position(self) -> float:
        """The next track sample the stream will play."""
        return self._position

    def frame_sample(self, frame: int) -> int:
        """Track sample at which a frame is shown."""
        return int(round(self.frame_times[int(frame)] * self.track.sample_rate))

    def moment(self, frame: int) -> tuple[int, int]:
        """[start, end) track samples of the audio the model hears for a frame (may reach outside the track)."""
        start, end = centred_spans(self.frame_times[int(frame):int(frame) + 1])[0] * self.track.sample_rate
        return int(round(start)), int(round(end))

    # -- commands -----------------------------------------------------------------------------
    def play(self, frame: int, fps: float | None = None) -> None:
        """Play from a frame as a clock shows frames at `fps` (default the video's; negative = backwards)."""
        with self._lock:
            self._position, self._end = float(self.frame_sample(frame)), None
            self._step = self._rate_step(self.fps if fps is None else fps)
            self._playing = True
        self._restart()

    def set_rate(self, fps: float) -> None:
        """The clock now shows `fps` frames per second (napari's slider fps changed)."""
        with self._lock:
            if self._end is None:
                self._step = self._rate_step(fps)

    def follow(self, frame: int) -> None:
        """The clock shows `frame`: seek there when the sound has drifted more than DRIFT_FRAMES away."""
        with self._lock:
            if not self._playing or self._end is not None:
                return
            target = self.frame_sample(frame)
            if abs(self._position - target) > DRIFT_FRAMES * self.track.sample_rate / self.fps:
                self._position = float(target)

    def play_moment(self, frame: int) -> None:
        """Play once the audio the model hears for `frame` (stops any playback first)."""
        start, end = self.moment(frame)
        with self._lock:
            self._position, self._end = float(start), float(end)
            self._step = self._rate_step(self.fps)
            self._playing = True
        self._restart()

    def pause(self) -> None:
        with self._lock:
            self._playing = False
        if self._stream is not None and not self._stream.stopped:
            self._stream.stop()

    def close(self) -> None:
        self.pause()
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    # -- the stream ---------------------------------------------------------------------------
    def _rate_step(self, fps: float) -> float:
        rate = self._stream.samplerate if self._stream is not None else self.track.sample_rate
        return float(fps) / self.fps * self.track.sample_rate / rate

    def _open(self):
        """The output stream, opened once (at the track's rate, else the device's)."""
        if self._stream is None:
            backend = self._backend = self._backend or _import_backend()
            settings = dict(channels=self._samples.shape[1], dtype="float32", callback=self._callback)
            try:
                self._stream = backend.OutputStream(samplerate=self.track.sample_rate, **settings)
            except backend.PortAudioError:
                rate = backend.query_devices(kind="output")["default_samplerate"]
                self._stream = backend.OutputStream(samplerate=rate, **settings)
                with self._lock:
                    self._step *= self.track.sample_rate / self._stream.samplerate
        return self._stream

    def _restart(self) -> None:
        stream = self._open()
        if not stream.stopped:
            stream.stop()  # also re-arms a stream whose moment ended (a stopped callback is not a stopped stream)
        stream.start()

    def _read(self, positions: np.ndarray) -> np.ndarray:
        """Samples at (fractional) track positions, linearly interpolated; silence outside the track."""
        low = np.floor(positions).astype(np.int64)
        fraction = (positions - low)[:, None].astype(np.float32)
        count = self._samples.shape[0]

        def at(index: np.ndarray) -> np.ndarray:
            out = np.zeros((index.size, self._samples.shape[1]), np.float32)
            inside = (index >= 0) & (index < count)
            out[inside] = self._samples[index[inside]]
            return out

        first = at(low)
        return first + (at(low + 1) - first) * fraction

    def _callback(self, outdata: np.ndarray, frames: int, time, status) -> None:
        """sounddevice's stream callback (PortAudio's thread): fill `outdata` and advance."""
        with self._lock:
            if not self._playing:
                outdata.fill(0)
                return
            positions = self._position + self._step * np.arange(frames)
            outdata[:] = self._read(positions)
            self._position += self._step * frames
            if self._end is None:
                return
            outdata[positions >= self._end] = 0
            if self._position < self._end:
                return
            self._playing = False
        raise self._backend.CallbackStop


def connect_viewer(player: Player, viewer, axis: int = 0) -> Callable[[], None]:
    """Sound follows napari's slider animation on `axis`; returns a function that disconnects it."""
    dims = viewer.dims
    qt_dims = viewer.window._qt_viewer.dims  # napari has no public API for its animation
    thread = qt_dims._animation_thread

    def animating() -> bool:
        return qt_dims.is_playing and thread.axis == axis

    def on_started() -> None:
        if thread.axis == axis:
            player.play(dims.current_step[axis], qt_dims.slider_widgets[axis].fps)

    def on_finished() -> None:
        player.pause()

    def on_step(event=None) -> None:
        if animating():
            player.follow(dims.current_step[axis])

    def on_fps(fps: float) -> None:
        if animating():
            player.set_rate(fps)

    slider = qt_dims.slider_widgets[axis]
    thread.started.connect(on_started)
    thread.finished.connect(on_finished)
    slider.fps_changed.connect(on_fps)
    dims.events.current_step.connect(on_step)

    def disconnect() -> None:
        thread.started.disconnect(on_started)
        thread.finished.disconnect(on_finished)
        slider.fps_changed.disconnect(on_fps)
        dims.events.current_step.disconnect(on_step)
        player.pause()

    return disconnect


__all__ = ["Player", "available", "connect_viewer", "DRIFT_FRAMES"]
