"""core/audio.py: TF-VGGish log-mel front end and the per-frame example rules."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from napari_auralsam2.core import audio
from napari_auralsam2.core.audio import AudioTrack, FrameExamples, frame_examples, waveform_to_examples
from napari_auralsam2.core.errors import AudioError
from napari_auralsam2.core.audio_file import load_audio

from ._seeded import seeded_waveform

SILENCE = np.float32(np.log(audio.LOG_OFFSET))
RATE = audio.SAMPLE_RATE


def _tone(hz: float, seconds: float, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)


def _band_of(hz: float) -> int:
    """The mel band whose centre is nearest to ``hz`` on the HTK mel scale."""
    edges = np.linspace(audio._hertz_to_mel(audio.MEL_MIN_HZ), audio._hertz_to_mel(audio.MEL_MAX_HZ),
                        audio.NUM_MEL_BINS + 2)
    return int(np.argmin(np.abs(edges[1:-1] - audio._hertz_to_mel(hz))))


def test_constants_follow_vggish():
    assert (audio.WINDOW_SAMPLES, audio.HOP_SAMPLES, audio.FFT_LENGTH) == (400, 160, 512)
    assert audio.EXAMPLE_SECONDS == pytest.approx(0.96)
    weights = audio.mel_matrix()
    assert weights.shape == (257, 64)
    assert not weights[0].any()  # DC bin excluded, as HTK does
    assert (weights.max(axis=0) > 0).all() and (weights >= 0).all()
    assert (np.diff(np.argmax(weights, axis=0)) >= 0).all()  # bands ascend in frequency


def test_shapes_and_silence():
    assert waveform_to_examples(np.zeros(RATE), RATE).shape == (1, 2, 96, 64)  # 98 frames -> 1 example
    assert waveform_to_examples(np.zeros(RATE // 2), RATE).shape == (0, 2, 96, 64)
    examples = waveform_to_examples(np.zeros((5 * RATE, 2)), RATE)
    assert examples.shape == (5, 2, 96, 64) and examples.dtype == np.float32
    assert (examples == SILENCE).all()
    assert waveform_to_examples(np.zeros(int(2.5 * 44_100)), 44_100).shape == (2, 2, 96, 64)


@pytest.mark.parametrize("hz", [300.0, 1000.0, 3000.0])
def test_pure_tone_peaks_in_its_mel_band(hz):
    examples = waveform_to_examples(_tone(hz, 1.0), RATE)
    assert int(np.argmax(examples[0, 0].mean(axis=0))) == _band_of(hz)


def test_resampled_tone_peaks_in_the_same_band():
    examples = waveform_to_examples(_tone(1000.0, 1.0, rate=44_100), 44_100)
    assert int(np.argmax(examples[0, 0].mean(axis=0))) == _band_of(1000.0)


def test_int16_is_scaled_like_the_official_reader():
    samples = np.round(_tone(440.0, 1.2) * 32767).astype(np.int16)
    np.testing.assert_array_equal(waveform_to_examples(samples, RATE), waveform_to_examples(samples / 32768.0, RATE))


def test_channel_rules():
    mono = _tone(440.0, 1.0)
    from_mono = waveform_to_examples(mono, RATE)
    np.testing.assert_array_equal(from_mono[:, 0], from_mono[:, 1])
    np.testing.assert_array_equal(from_mono, waveform_to_examples(mono[:, None], RATE))
    stereo = waveform_to_examples(np.stack([mono, np.zeros_like(mono)], axis=1), RATE)
    np.testing.assert_array_equal(stereo[:, 0], from_mono[:, 0])
    assert (stereo[:, 1] == SILENCE).all()
    four = np.stack([mono, mono, np.zeros_like(mono), mono], axis=1)
    with pytest.warns(UserWarning, match="down-mixing"):
        mixed = waveform_to_examples(four, RATE)
    np.testing.assert_array_equal(mixed, waveform_to_examples(four.mean(axis=1), RATE))


def test_audio_track():
    track = AudioTrack(np.array([[-32768, 16384], [0, 32767]], dtype=np.int16), 8000)
    assert track.samples.dtype == np.float32 and track.samples.shape == (2, 2)
    np.testing.assert_array_equal(track.samples, [[-1.0, 0.5], [0.0, 32767 / 32768]])
    assert (track.num_channels, track.duration) == (2, 2 / 8000)
    assert AudioTrack(np.zeros(10), 8000).samples.shape == (10, 1)
    assert AudioTrack(np.full(10, 1e-5), 8000).is_silent() and not track.is_silent()
    with pytest.raises(AudioError):
        AudioTrack(np.zeros(10), 0)
    with pytest.raises(AudioError):
        AudioTrack(np.zeros((2, 3, 4)), 8000)


@pytest.mark.parametrize("rate, channels", [(RATE, 2), (44_100, 2), (RATE, 1)])
def test_avsbench_rule_equals_official_patches(rate, channels):
    rng = np.random.default_rng(7)
    samples = (rng.standard_normal((int(5.2 * rate), channels)) * 0.1).astype(np.float32)
    track = AudioTrack(samples, rate)
    official = waveform_to_examples(samples, rate)
    assert official.shape[0] == 5
    one_fps = frame_examples(track, np.arange(5.0), rule="avsbench")
    np.testing.assert_array_equal(one_fps, official)
    longer = frame_examples(track, np.arange(7.0), rule="avsbench")  # last patch repeated
    np.testing.assert_array_equal(longer[5], official[4])
    np.testing.assert_array_equal(longer[6], official[4])


def test_avsbench_rule_pads_a_track_shorter_than_one_example():
    short = frame_examples(AudioTrack(np.zeros(RATE // 4), RATE), [0.0, 1.0], rule="avsbench")
    assert short.shape == (2, 2, 96, 64) and (short == SILENCE).all()


def _frame_energy(example: np.ndarray) -> np.ndarray:
    """Per log-mel frame energy above the silence floor, ``[96]``."""
    return (example[0] - SILENCE).sum(axis=1)


def test_centred_rule_puts_a_burst_at_the_window_centre():
    rate, burst_at, half_burst = 44_100, 1.5, 0.005
    samples = np.zeros(3 * rate)
    burst = slice(int((burst_at - half_burst) * rate), int((burst_at + half_burst) * rate))
    samples[burst] = _tone(2000.0, 1.0, rate=rate)[: burst.stop - burst.start]
    times = np.arange(30) / 10.0  # 10 fps
    examples = frame_examples(AudioTrack(samples, rate), times)
    assert examples.shape == (30, 2, 96, 64)
    energy = _frame_energy(examples[15])  # the frame at 1.5 s
    centre = audio.EXAMPLE_FRAMES / 2 - 0.5  # frames 47 and 48 straddle the window centre
    loud = np.flatnonzero(energy > 0.5 * energy.max())
    assert abs(loud.mean() - centre) <= 1.0
    reach = audio.EXAMPLE_SPAN_SAMPLES / audio.SAMPLE_RATE / 2 + half_burst
    for index, time in enumerate(times):  # heard only by frames whose window spans the burst
        heard = _frame_energy(examples[index]).max() > 1.0
        assert heard == (abs(time - burst_at) < reach), time


def test_centred_rule_pads_with_silence_past_both_ends():
    track = AudioTrack(_tone(1000.0, 2.0), RATE)
    examples = frame_examples(track, [0.0, 1.0, 2.0, 5.0])
    half = audio.EXAMPLE_FRAMES // 2
    first, middle, last = (_frame_energy(examples[i]) for i in range(3))
    assert (first[: half - 1] == 0).all() and (first[half + 1 :] > 1).all()  # t = 0: left half is padding
    assert (middle > 1).all()
    assert (last[half + 1 :] == 0).all() and (last[: half - 1] > 1).all()  # t = end: right half is padding
    assert (examples[3] == SILENCE).all()


def test_frame_examples_index_lazily():
    track = AudioTrack(np.random.default_rng(0).standard_normal((RATE * 3, 2)) * 0.1, RATE)
    times = np.arange(75) / 25.0
    lazy = FrameExamples(track, times)
    full = frame_examples(track, times)
    assert len(lazy) == 75 and lazy.shape == full.shape
    np.testing.assert_array_equal(lazy[10], full[10])
    np.testing.assert_array_equal(lazy[[3, 60]], full[[3, 60]])
    np.testing.assert_array_equal(lazy[-5:], full[-5:])
    assert frame_examples(track, []).shape == (0, 2, 96, 64)
    with pytest.raises(AudioError):
        FrameExamples(track, times, rule="nearest")



GOLDEN_LOGMEL = Path(__file__).parent / "data" / "golden_logmel.npz"
GOLDEN_CASES = ["a_16k_mono_3p2s", "b_44k1_stereo_5s", "c_48k_mono_2s"]
GOLDEN_TOLERANCE = 1e-4


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_matches_official_golden_log_mel(case):
    """Official TF-VGGish examples of ``tests/_seeded.py`` waveforms (see tests/data/README.md)."""
    with np.load(GOLDEN_LOGMEL) as golden:
        seconds, rate, channels, seed = golden[f"{case}__meta"]
        waveform = seeded_waveform(float(seconds), int(rate), int(channels), int(seed))
        assert waveform.sum() == pytest.approx(float(golden[f"{case}__wave_sum"]), abs=1e-9)
        expected = [golden[f"{case}__ch{i}"] for i in range(int(channels))]
    expected = expected * 2 if len(expected) == 1 else expected  # mono is duplicated
    ours = waveform_to_examples(waveform, int(rate))
    per_frame = frame_examples(AudioTrack(waveform, int(rate)), np.arange(ours.shape[0], dtype=float), "avsbench")
    for channel in range(2):
        assert ours[:, channel].shape == expected[channel].shape
        np.testing.assert_allclose(ours[:, channel], expected[channel], rtol=0, atol=GOLDEN_TOLERANCE)
    np.testing.assert_array_equal(per_frame, ours)


def _float_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """A 32-bit float mono wav (as audio editors write them), holding ``samples`` exactly."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_f32le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32)[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_non_finite_samples_are_refused_when_audio_is_read(tmp_path):
    """NaN/inf would make every log-mel example NaN and every mask empty without a word (issue 14)."""
    with pytest.raises(AudioError, match="1 samples that are NaN or infinite"):
        AudioTrack(np.array([[0.0, 0.1], [np.inf, 0.0], [0.2, 0.2]]), RATE)
    samples = _tone(440.0, 1.0)
    samples[RATE // 2:RATE // 2 + 10] = np.nan
    path = _float_wav(tmp_path / "broken.wav", samples)
    with pytest.raises(AudioError) as error:
        load_audio(path)
    message = str(error.value)
    assert message.startswith("broken.wav: the audio has 10 samples that are NaN or infinite (the first at 0.50 s)")
    assert "\n" not in message and "re-export" in message
    clean = _float_wav(tmp_path / "clean.wav", _tone(440.0, 1.0))
    np.testing.assert_array_equal(load_audio(clean).samples[:, 0], _tone(440.0, 1.0).astype(np.float32))
