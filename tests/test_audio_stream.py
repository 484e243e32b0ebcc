"""The audio front end by blocks: identical to the whole-track numbers, reads only what it needs, streams."""
from __future__ import annotations

import gc
import threading
import warnings

import numpy as np
import pytest

from napari_auralsam2.core import audio as audio_module
from napari_auralsam2.core import audio_file
from napari_auralsam2.core import frames_from_array, open_video
from napari_auralsam2.core.audio import (EXAMPLE_FRAMES, EXAMPLE_SPAN_SAMPLES, HOP_SAMPLES, WINDOW_SAMPLES, AudioTrack,
                                         FrameExamples, _track_log_mel, waveform_to_examples)
from napari_auralsam2.core.audio_file import StreamedAudio
from napari_auralsam2.core.errors import AudioError

from ._seeded import seeded_waveform


def whole_track_examples(track: AudioTrack, times: np.ndarray) -> np.ndarray:
    """The centred rule computed the old way: the log-mel of the whole padded track, then sliced."""
    starts = np.floor(np.maximum(times, 0.0) * 100 + 0.5).astype(np.int64)
    needed = (int(starts.max()) + EXAMPLE_FRAMES - 1) * HOP_SAMPLES + WINDOW_SAMPLES
    log_mel = _track_log_mel(track.samples, track.sample_rate, EXAMPLE_SPAN_SAMPLES // 2, needed)
    return np.stack([log_mel[:, s:s + EXAMPLE_FRAMES] for s in starts])


class RecordingTrack(AudioTrack):
    """A real AudioTrack that remembers which spans were read."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.reads: list[tuple[int, int]] = []

    def span(self, start: int, stop: int) -> np.ndarray:
        self.reads.append((start, stop))
        return super().span(start, stop)


def streamed(samples: np.ndarray, rate: int, chunk: int = 1024, gate: threading.Event | None = None,
             open_for: int | None = None) -> StreamedAudio:
    """A StreamedAudio fed in decoder-sized chunks; with `gate`, it stalls after `open_for` samples until set."""
    def chunks():
        for start in range(0, len(samples), chunk):
            if gate is not None and start >= open_for:
                gate.wait()
            yield samples[start:start + chunk]
    return StreamedAudio(chunks(), rate, samples.shape[1])


def test_lazy_examples_equal_the_whole_track_on_a_long_track():
    # 65 s: the whole-track resampler takes its parallel kernel, the lazy one 7 blocks of its serial one
    track = AudioTrack(seeded_waveform(65.0, 44_100, channels=2, seed=3), 44_100)
    times = np.arange(int(66.0 * 25)) / 25.0  # the last frames ask for audio past the end: silence
    examples = FrameExamples(track, times)
    np.testing.assert_array_equal(examples[:], whole_track_examples(track, times))


@pytest.mark.parametrize("rate, channels, seconds, fps", [
    (48_000, 1, 6.0, 30.0),   # mono, duplicated
    (16_000, 2, 5.0, 10.0),   # no resampling
    (8_000, 6, 4.0, 7.0),     # upsampling, down-mixed to mono
    (22_050, 2, 0.5, 25.0),   # a track shorter than one example
])
def test_blocks_equal_the_whole_track_at_any_rate(monkeypatch, rate, channels, seconds, fps):
    monkeypatch.setattr(audio_module, "STFT_CHUNK_FRAMES", 96)  # many small blocks, the same rule
    samples = np.random.default_rng(rate).uniform(-0.5, 0.5, (int(seconds * rate), channels)).astype(np.float32)
    track = AudioTrack(samples, rate)
    times = np.arange(int((seconds + 1.5) * fps)) / fps - 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 6-channel down-mix warns
        lazy = FrameExamples(track, times)
        np.testing.assert_array_equal(lazy[::-1], whole_track_examples(track, times)[::-1])
        again = FrameExamples(streamed(samples, rate), times)
        np.testing.assert_array_equal(again[:], lazy[:])


def test_avsbench_rule_by_blocks_equals_the_official_patches(monkeypatch):
    monkeypatch.setattr(audio_module, "STFT_CHUNK_FRAMES", 100)  # blocks that cut examples in two
    waveform = seeded_waveform(5.3, 44_100, channels=2, seed=1)
    official = waveform_to_examples(waveform, 44_100)
    per_frame = FrameExamples(AudioTrack(waveform, 44_100), np.arange(8.0), rule="avsbench")[:]
    np.testing.assert_array_equal(per_frame[:5], official)
    np.testing.assert_array_equal(per_frame[5:], np.repeat(official[-1:], 3, axis=0))


def test_opening_reads_no_audio_and_a_window_only_its_own():
    rate = 22_050
    track = RecordingTrack(np.random.default_rng(0).uniform(-0.5, 0.5, rate * 300).astype(np.float32), rate)
    examples = FrameExamples(track, np.arange(300 * 25) / 25.0)
    assert track.reads == []
    examples[5000:5005]  # 200 s in
    block_seconds = audio_module.STFT_CHUNK_FRAMES / 100
    read = [(start / rate, stop / rate) for start, stop in track.reads]
    assert read and min(a for a, _ in read) > 200 - 2 * block_seconds
    assert max(b for _, b in read) < 201 + 2 * block_seconds


def test_a_stream_is_readable_before_it_ends_and_errors_reach_the_reader():
    samples = np.random.default_rng(1).uniform(-0.5, 0.5, (200_000, 2)).astype(np.float32)
    gate = threading.Event()
    track = streamed(samples, 44_100, gate=gate, open_for=100_000)
    try:
        np.testing.assert_array_equal(track.span(1000, 5000), samples[1000:5000])
        assert not track.is_silent()  # the first loud span answers it
        assert track.num_channels == 2 and "decoding" in repr(track)
    finally:
        gate.set()
    np.testing.assert_array_equal(track.samples, samples)
    np.testing.assert_array_equal(track.span(199_000, 300_000), samples[199_000:])

    def failing():
        yield samples[:1000]
        raise AudioError("decoding the audio of x.mp4 failed: Invalid data")
    broken = StreamedAudio(failing(), 44_100, 2)
    with pytest.raises(AudioError, match="Invalid data"):
        broken.span(0, 10_000)
    with pytest.raises(AudioError, match="Invalid data"):
        broken.samples


def test_non_finite_samples_stop_a_streamed_track_with_the_file_name():
    """A video's own track streams: a chunk with NaN/inf is refused when it arrives (issue 14 case 2)."""
    samples = np.full((44_100, 2), 0.1, np.float32)
    samples[30_000] = np.inf
    track = StreamedAudio(iter([samples[:22_050], samples[22_050:]]), 44_100, 2, "phone.mkv")
    with pytest.raises(AudioError, match=r"^phone\.mkv: the audio has samples that are NaN or infinite "
                                         r"\(the first at 0\.68 s\)"):
        track.span(0, 40_000)


def test_silence_is_still_found_in_a_long_track():
    quiet = np.zeros((44_100 * 30, 2), np.float32)
    assert streamed(quiet, 44_100, chunk=4096).is_silent()
    quiet[-10] = 0.5
    assert not AudioTrack(quiet, 44_100).is_silent()


def test_a_file_track_is_decoded_in_the_background(sample_mp4, clip_spec):
    with open_video(sample_mp4) as video:
        track = video.require_audio()
        assert isinstance(track, StreamedAudio) and track.sample_rate == clip_spec.sample_rate
        head = track.span(0, 4096).copy()
        np.testing.assert_array_equal(track.samples[:4096], head)


def test_first_mask_needs_only_the_start_of_a_long_track(clip_spec):
    """Open + audio prompt on frame 0 while the decoder is stalled 20 s into a 10-minute track."""
    from napari_auralsam2.core.model import build_auralsam2
    from napari_auralsam2.core.session import Engine

    rate = 16_000
    t = np.arange(rate * 600) / rate
    samples = np.repeat((0.4 * np.sin(2 * np.pi * 440 * t))[:, None], 2, 1).astype(np.float32)
    gate = threading.Event()
    track = streamed(samples, rate, gate=gate, open_for=rate * 20)
    frames = np.stack([clip_spec.frame(i % clip_spec.n_frames) for i in range(20)])
    engine = Engine(build_auralsam2("hiera_t", image_size=64), "cpu")
    try:
        session = engine.open_session(frames_from_array(frames, fps=1.0, audio=track))
        masks = session.add_audio_prompt(0, 1)
        assert set(masks) == {1} and not track._stream.done
    finally:
        gate.set()


def test_a_stream_reads_a_bounded_distance_ahead_and_stops_when_dropped():
    rate, chunk = 8_000, 1000
    pulled, closed = [], threading.Event()

    def endless():
        try:
            while True:
                pulled.append(chunk)
                yield np.full((chunk, 1), 0.25, np.float32)
        finally:
            closed.set()

    track = StreamedAudio(endless(), rate, 1)
    assert not track.is_silent()
    del track
    gc.collect()
    assert closed.wait(timeout=120)  # the decoder thread stopped and closed its source
    bound = audio_file.STREAM_AHEAD_SECONDS * rate + 2 * audio_file.STREAM_BLOCK_SAMPLES
    assert sum(pulled) <= bound
