"""Sound playback: which samples play for frames t..t+k, seeks, pauses, the model's moment, and a real viewer.

The output stream is a stand-in shaped like ``sounddevice.OutputStream`` (callback API): nothing can
play sound here, so the test plays the device's part and asks for blocks of samples (`pump`).
"""
from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from napari_auralsam2._napari import playback
from napari_auralsam2._napari.playback import DRIFT_FRAMES, Player, available, connect_viewer
from napari_auralsam2.core.audio import EXAMPLE_SPAN_SAMPLES, SAMPLE_RATE, AudioTrack, FrameExamples, centred_spans

RATE = 8_000
FPS = 2.0  # slow enough that the real viewer's animation is easy to follow
FRAMES = 12


class CallbackStop(Exception):
    """sounddevice.CallbackStop"""


class PortAudioError(Exception):
    """sounddevice.PortAudioError"""


class OutputStream:
    """sounddevice.OutputStream's constructor, state and methods; `pump(n)` is the sound card asking for n frames."""

    def __init__(self, samplerate=None, blocksize=None, device=None, channels=None, dtype=None, latency=None,
                 extra_settings=None, callback=None, finished_callback=None, clip_off=None, dither_off=None,
                 never_drop_input=None, prime_output_buffers_using_stream_callback=None):
        if samplerate not in Backend.rates:
            raise PortAudioError("Error opening OutputStream: Invalid sample rate [PaErrorCode -9997]")
        self.samplerate, self.channels, self.dtype = float(samplerate), channels, dtype
        self.callback = callback
        self.stopped, self.active, self.closed, self.called_back = True, False, False, True
        Backend.streams.append(self)

    def start(self):
        if self.stopped:  # PortAudio ignores start() on a stream that was not stopped
            self.stopped, self.active, self.called_back = False, True, True

    def stop(self, ignore_errors=True):
        self.stopped, self.active = True, False

    def close(self, ignore_errors=True):
        self.stop()
        self.closed = True

    def pump(self, frames: int) -> np.ndarray:
        """What the device plays next: the callback's block, silence once stopped or after CallbackStop."""
        out = np.zeros((frames, self.channels), np.float32)
        if self.active and self.called_back:
            try:
                self.callback(out, frames, SimpleNamespace(outputBufferDacTime=0.0), 0)
            except CallbackStop:
                self.called_back, self.active = False, False  # the block still plays; no more callbacks
        return out


class Backend:
    """The parts of the sounddevice module the player uses."""

    rates = (RATE, 48_000)
    streams: list[OutputStream] = []
    OutputStream = OutputStream
    CallbackStop = CallbackStop
    PortAudioError = PortAudioError

    @staticmethod
    def query_devices(device=None, kind=None):
        return {"name": "stand-in", "max_output_channels": 2, "default_samplerate": 48_000.0}


@pytest.fixture()
def backend():
    Backend.streams = []
    Backend.rates = (RATE, 48_000)
    return Backend


@pytest.fixture()
def track() -> AudioTrack:
    """Stereo, every sample distinct: left = index, right = -index (scaled)."""
    index = np.arange(int(FRAMES / FPS * RATE) + 500, dtype=np.float32)
    return AudioTrack(np.stack([index, -index], 1) / 2**20, RATE)


@pytest.fixture()
def player(track, backend) -> Player:
    return Player(track, np.arange(FRAMES) / FPS, FPS, backend=backend)


def frame_sample(t: int) -> int:
    return int(round(t / FPS * RATE))


def test_frames_t_to_t_plus_k_play_their_samples_at_the_video_fps(player, track, backend):
    player.play(3)
    stream = backend.streams[0]
    assert stream.samplerate == RATE and stream.channels == 2 and stream.dtype == "float32"
    blocks, done = [], 0
    for k in range(4):  # the clock shows frames 3..6 as their sound plays: no seek within the drift
        player.follow(3 + k)
        while done < frame_sample(4 + k) - frame_sample(3):  # odd block sizes: the device decides, not us
            blocks.append(stream.pump(min(997, frame_sample(7) - frame_sample(3) - done)))
            done += len(blocks[-1])
    played = np.concatenate(blocks)
    np.testing.assert_array_equal(played, track.samples[frame_sample(3):frame_sample(7)])


def test_seek_pause_and_resume(player, track, backend):
    player.play(1)
    stream = backend.streams[0]
    stream.pump(1000)
    player.follow(8)  # the user dragged the slider to frame 8 while playing
    np.testing.assert_array_equal(stream.pump(500), track.samples[frame_sample(8):frame_sample(8) + 500])
    player.follow(8)  # the same frame again: within the drift, no jump back
    np.testing.assert_array_equal(stream.pump(10), track.samples[frame_sample(8) + 500:frame_sample(8) + 510])
    player.pause()
    assert stream.stopped and not player.playing
    assert not stream.pump(100).any()
    player.follow(2)  # frames shown while paused do not start the sound
    assert not player.playing
    player.play(5)
    np.testing.assert_array_equal(stream.pump(300), track.samples[frame_sample(5):frame_sample(5) + 300])
    player.close()
    assert stream.closed


def test_small_drift_is_left_alone_and_large_drift_seeks(player, track, backend):
    player.play(4)
    stream = backend.streams[0]
    lag = int(DRIFT_FRAMES * RATE / FPS)
    stream.pump(lag)  # the sound runs exactly DRIFT_FRAMES frames ahead of frame 4
    player.follow(4)
    assert player.position == frame_sample(4) + lag
    stream.pump(1)
    player.follow(4)
    assert player.position == frame_sample(4)


def test_other_clock_rates_change_the_speed_and_backwards_plays_backwards(player, track, backend):
    player.play(2, fps=2 * FPS)  # napari's slider at twice the video's fps: every other sample
    stream = backend.streams[0]
    start = frame_sample(2)
    np.testing.assert_array_equal(stream.pump(100), track.samples[start:start + 200:2])
    player.set_rate(-FPS)
    np.testing.assert_array_equal(stream.pump(50), track.samples[start + 200:start + 150:-1])
    player.play(1, fps=FPS / 2)  # half speed: samples and midpoints between them
    half = stream.pump(4)
    np.testing.assert_allclose(half[::2], track.samples[frame_sample(1):frame_sample(1) + 2])
    np.testing.assert_allclose(half[1], track.samples[frame_sample(1):frame_sample(1) + 2].mean(0))


def test_play_moment_is_the_span_the_model_hears(player, track, backend):
    frame = 5
    start, end = player.moment(frame)
    assert end - start == EXAMPLE_SPAN_SAMPLES * RATE // SAMPLE_RATE
    # the very span FrameExamples turns into this frame's example: a click inside it changes the example
    times = np.arange(FRAMES) / FPS
    base = FrameExamples(AudioTrack(np.zeros((track.num_samples, 1), np.float32), RATE), times)[frame]
    for inside, sample in ((True, start + 40), (True, end - 40), (False, start - 200), (False, end + 200)):
        clicked = np.zeros((track.num_samples, 1), np.float32)
        clicked[sample] = 1.0
        changed = not np.allclose(FrameExamples(AudioTrack(clicked, RATE), times)[frame], base)
        assert changed is inside, sample
    player.play_moment(frame)
    stream = backend.streams[0]
    played = np.concatenate([stream.pump(1024) for _ in range((end - start) // 1024 + 2)])
    np.testing.assert_array_equal(played[:end - start], track.samples[start:end])
    assert not played[end - start:].any() and not player.playing and not stream.active
    player.play_moment(0)  # frame 0's moment starts before the track: silence first
    first = centred_spans([0.0])[0]
    lead = -int(round(first[0] * RATE))
    played = stream.pump(lead + 100)
    assert not played[:lead].any()
    np.testing.assert_array_equal(played[lead:], track.samples[:100])


def test_device_rate_fallback(track, backend):
    backend.rates = (48_000,)  # the device refuses the track's rate
    player = Player(track, np.arange(FRAMES) / FPS, FPS, backend=backend)
    player.play(0)
    stream = backend.streams[0]
    assert stream.samplerate == 48_000
    played = stream.pump(48)  # 1 ms at 48 kHz = 8 track samples, linearly interpolated
    np.testing.assert_allclose(played[::6], track.samples[:8], atol=1e-7)


def test_available_says_why_not(monkeypatch, backend):
    assert available(backend) == (True, "")

    class NoDevice(Backend):
        @staticmethod
        def query_devices(device=None, kind=None):
            raise PortAudioError("Error querying device -1")

    ok, why = available(NoDevice)
    assert not ok and "no sound output device" in why
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    ok, why = available()
    assert not ok and "napari-auralsam2[sound]" in why

    def no_portaudio():
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(playback, "_import_backend", no_portaudio)
    ok, why = available()
    assert not ok and "PortAudio" in why


def test_real_viewer_slider_animation_drives_the_sound(make_napari_viewer, qtbot, player, track, backend):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((FRAMES, 16, 16), np.uint8))
    viewer.dims.set_current_step(0, 2)
    disconnect = connect_viewer(player, viewer, axis=0)
    qt_dims = viewer.window._qt_viewer.dims
    qt_dims.play(axis=0, fps=FPS, loop_mode="once")
    qtbot.waitUntil(lambda: player.playing, timeout=5000)
    stream = backend.streams[0]
    first = stream.pump(RATE // 8)  # an eighth of a second of sound, starting at frame 2
    np.testing.assert_array_equal(first, track.samples[frame_sample(2):frame_sample(2) + RATE // 8])
    qtbot.waitUntil(lambda: viewer.dims.current_step[0] >= 3, timeout=5000)  # napari moved on one frame
    np.testing.assert_array_equal(stream.pump(100), track.samples[frame_sample(2) + RATE // 8:][:100])
    qt_dims.slider_widgets[0].fps = 2 * FPS  # the user changes napari's playback fps
    position = int(player.position)
    np.testing.assert_array_equal(stream.pump(10), track.samples[position:position + 20:2])
    viewer.dims.set_current_step(0, 8)  # a seek while playing
    np.testing.assert_array_equal(stream.pump(100), track.samples[frame_sample(8):frame_sample(8) + 200:2])
    qt_dims.stop()
    qtbot.waitUntil(lambda: not player.playing, timeout=5000)
    assert stream.stopped and not stream.pump(10).any()
    disconnect()
