"""TF-VGGish log-mel front end and one audio example per video frame.

The log-mel equals TF-VGGish / torchvggish ``waveform_to_examples``: 16 kHz audio (other rates
are resampled with ``resampy`` kaiser_best, as the official code does), 25 ms periodic-Hann
windows hopped by 10 ms, magnitude of a 512-point rfft, 64 HTK-mel bands over 125-7500 Hz with
the DC bin zeroed, ``log(mel + 0.01)``, and examples of 96 frames (0.96 s). AuralSAM2 runs the
left and right channels separately, so every example is ``[2, 96, 64]`` (mono is duplicated,
more than two channels are down-mixed to mono).

``frame_examples`` gives one example per video frame, with one of two rules:

* ``"centred"`` (default, any fps): the example whose 0.975 s span (96 hops plus one window) is
  centred on the frame's presentation time, rounded to the 10 ms hop. Audio before 0 s and after
  the end of the track counts as silence. Frame times are seconds from the track's first sample.
* ``"avsbench"``: the official AVSBench layout for 1-fps clips: non-overlapping examples from
  t = 0, frame ``i`` gets example ``i``, and the last example is repeated when the audio yields
  fewer examples than frames (a track shorter than one example is padded with silence).

Both rules slice one log-mel of the padded track, computed lazily in blocks of
``STFT_CHUNK_FRAMES`` frames as frames ask for them (see ``FrameExamples``): the numbers equal
the whole-track computation exactly, and opening a long track costs nothing.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import resampy
from resampy.interpn import resample_f_s

from .errors import AudioError

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
FFT_LENGTH = 1 << (WINDOW_SAMPLES - 1).bit_length()  # 512
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
MEL_BREAK_HZ = 700.0
MEL_HIGH_Q = 1127.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96
EXAMPLE_SECONDS = EXAMPLE_FRAMES * HOP_SAMPLES / SAMPLE_RATE  # 0.96
EXAMPLE_SPAN_SAMPLES = (EXAMPLE_FRAMES - 1) * HOP_SAMPLES + WINDOW_SAMPLES  # 15600
LOG_MEL_FRAME_RATE = SAMPLE_RATE / HOP_SAMPLES  # 100 frames per second
CENTRED_PAD_SAMPLES = EXAMPLE_SPAN_SAMPLES // 2  # silence before the track: frame time 0 sits mid-example
CHANNELS = 2
STFT_CHUNK_FRAMES = 1024  # bounds the temporary STFT memory; also the block the lazy log-mel is computed in
CACHED_BLOCKS = 64  # log-mel blocks a FrameExamples keeps: 32 MiB, about 11 minutes of audio
RESAMPLE_FILTER = "kaiser_best"  # resampy's default, as the official code uses
SILENCE_SCAN_SAMPLES = 1 << 16  # is_silent reads this many samples at a time and stops at the first loud ones
SILENCE_THRESHOLD = 1e-4  # peak amplitude (-80 dBFS)
PARALLEL_RESAMPLE_SECONDS = 60.0  # longer tracks use resampy's multi-threaded kernel (same output)

Rule = Literal["centred", "avsbench"]
RULES: tuple[str, ...] = ("centred", "avsbench")


@dataclass(eq=False)
class AudioTrack:
    """Decoded audio: ``samples`` float32 ``(n, channels)`` in [-1, 1] at ``sample_rate`` Hz.

    Mono ``(n,)`` input becomes ``(n, 1)``; signed-integer input is scaled to [-1, 1)
    (int16 by 1/32768). NaN or infinite samples (a broken float wav) are refused: they would turn
    every log-mel example, and so every mask, into nothing without a word.
    """

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        self.samples = _as_float_2d(self.samples, np.float32)
        if self.samples.shape[1] == 0:
            raise AudioError("the audio track has no channels", "pass samples shaped (n,) or (n, channels)")
        if not np.isfinite(float(self.sample_rate)) or int(self.sample_rate) <= 0:
            raise AudioError(f"invalid audio sample rate {self.sample_rate}", "give a positive rate in Hz")
        self.sample_rate = int(self.sample_rate)
        _check_finite(self.samples, self.sample_rate)

    @property
    def num_samples(self) -> int:
        """Samples per channel."""
        return int(self.samples.shape[0])

    @property
    def num_channels(self) -> int:
        """Number of channels."""
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sample_rate

    def span(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` (fewer when the track ends before ``stop``)."""
        return self.samples[start:stop]

    def is_silent(self, threshold: float = SILENCE_THRESHOLD) -> bool:
        """True when the peak amplitude is below ``threshold`` (or the track is empty).

        Reads the track in spans and stops at the first loud one: a long track costs little.
        """
        start = 0
        while True:
            chunk = self.span(start, start + SILENCE_SCAN_SAMPLES)
            if chunk.size and not float(np.max(np.abs(chunk))) < threshold:
                return False
            if len(chunk) < SILENCE_SCAN_SAMPLES:
                return True
            start += SILENCE_SCAN_SAMPLES


def waveform_to_examples(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Official VGGish examples of a waveform, per channel: float32 ``[N, 2, 96, 64]``.

    ``samples`` is ``(n,)`` or ``(n, channels)``; N = number of whole 0.96 s examples.
    """
    log_mel = _track_log_mel(_as_float_2d(samples, np.float64), sample_rate)
    count = _whole_examples(log_mel.shape[1])
    patches = log_mel[:, : count * EXAMPLE_FRAMES].reshape(CHANNELS, count, EXAMPLE_FRAMES, NUM_MEL_BINS)
    return np.ascontiguousarray(patches.transpose(1, 0, 2, 3))


def frame_examples(track: AudioTrack, frame_times: Sequence[float], rule: Rule = "centred") -> np.ndarray:
    """One example per video frame, float32 ``[T, 2, 96, 64]`` (see the module docstring)."""
    return FrameExamples(track, frame_times, rule)[:]


class FrameExamples:
    """Lazy per-frame examples: slices of the track's log-mel, computed block by block on demand.

    ``examples[i]`` is ``[2, 96, 64]``; a slice or index array gives ``[k, 2, 96, 64]``.
    Creating one reads no audio (the ``"avsbench"`` rule needs the track's length); each access
    computes only the log-mel blocks it touches (``STFT_CHUNK_FRAMES`` frames, about 10 s) and
    keeps the last ``CACHED_BLOCKS``. The numbers are exactly those of the whole-track computation.
    """

    def __init__(self, track: AudioTrack, frame_times: Sequence[float], rule: Rule = "centred") -> None:
        if rule not in RULES:
            raise AudioError(f"unknown audio rule {rule!r}", f"use one of {', '.join(RULES)}")
        times = np.asarray(frame_times, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(times)):
            raise AudioError("frame times must be finite numbers of seconds")
        if rule == "centred":
            starts = _centred_starts(times)
            last = int(starts.max()) if starts.size else 0
            needed = (last + EXAMPLE_FRAMES - 1) * HOP_SAMPLES + WINDOW_SAMPLES
            self._log_mel = LogMelBlocks(track, CENTRED_PAD_SAMPLES, needed)
        else:
            self._log_mel = LogMelBlocks(track, 0, EXAMPLE_SPAN_SAMPLES)
            count = _whole_examples(self._log_mel.num_frames())
            starts = np.minimum(np.arange(times.size), count - 1) * EXAMPLE_FRAMES
        self._starts = starts

    def __len__(self) -> int:
        return int(self._starts.size)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(T, 2, 96, 64)``."""
        return (len(self), CHANNELS, EXAMPLE_FRAMES, NUM_MEL_BINS)

    def __getitem__(self, key: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        starts = self._starts[key]
        if np.ndim(starts) == 0:
            return self._log_mel.frames(int(starts), int(starts) + EXAMPLE_FRAMES)
        out = np.empty((starts.size, CHANNELS, EXAMPLE_FRAMES, NUM_MEL_BINS), dtype=np.float32)
        for row, start in enumerate(starts):
            out[row] = self._log_mel.frames(int(start), int(start) + EXAMPLE_FRAMES)
        return out


def _centred_starts(times: np.ndarray) -> np.ndarray:
    """The "centred" rule: first log-mel frame of each frame's example (log-mel of the padded track)."""
    return np.floor(np.maximum(times, 0.0) * LOG_MEL_FRAME_RATE + 0.5).astype(np.int64)


def centred_spans(frame_times: Sequence[float]) -> np.ndarray:
    """float64 ``[T, 2]``: start and end (seconds, the frames' clock) of the audio that the "centred"
    rule turns into each frame's example: 96 hops plus one window (0.975 s), silence outside the track."""
    times = np.asarray(frame_times, dtype=np.float64).reshape(-1)
    start = (_centred_starts(times) * HOP_SAMPLES - CENTRED_PAD_SAMPLES) / SAMPLE_RATE
    return np.stack([start, start + EXAMPLE_SPAN_SAMPLES / SAMPLE_RATE], axis=1)


class LogMelBlocks:
    """The log-mel ``[2, frames, 64]`` of a padded track (as `_track_log_mel`), computed in blocks.

    Block k holds frames ``[k * STFT_CHUNK_FRAMES, (k + 1) * STFT_CHUNK_FRAMES)``: the whole-track
    `log_mel` runs its STFT in exactly these chunks, so a block is computed from the same 16 kHz
    samples, in the same array shapes, and equals the whole-track numbers bit for bit. Those
    samples are resampled from a span of the track with the resampler's full filter reach on both
    sides (`_resample_span`). Thread-safe; the last `CACHED_BLOCKS` blocks are kept.
    """

    def __init__(self, track: AudioTrack, pad_start: int, min_length: int) -> None:
        if int(track.sample_rate) <= 0:
            raise AudioError(f"invalid audio sample rate {track.sample_rate}", "give a positive rate in Hz")
        self.track, self.pad_start, self.min_length = track, int(pad_start), int(min_length)
        self._blocks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def num_frames(self) -> int:
        """Frames of the whole padded track (needs the track's length)."""
        length = max(self.pad_start + _resampled_length(self.track.num_samples, self.track.sample_rate),
                      self.min_length)
        return 1 + (length - WINDOW_SAMPLES) // HOP_SAMPLES if length >= WINDOW_SAMPLES else 0

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Log-mel frames ``start:stop`` as float32 ``[2, stop - start, 64]``."""
        size = STFT_CHUNK_FRAMES
        parts = [self._block(k)[:, max(start - k * size, 0):stop - k * size]
                 for k in range(start // size, (stop - 1) // size + 1)]
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0].copy()

    def _block(self, index: int) -> np.ndarray:
        with self._lock:
            block = self._blocks.get(index)
            if block is None:
                block = self._compute(index)
                self._blocks[index] = block
                while len(self._blocks) > CACHED_BLOCKS:
                    self._blocks.popitem(last=False)
            self._blocks.move_to_end(index)
            return block

    def _compute(self, index: int) -> np.ndarray:
        first = index * STFT_CHUNK_FRAMES
        start = first * HOP_SAMPLES  # padded samples [start, stop) hold the block's frames
        stop = (first + STFT_CHUNK_FRAMES - 1) * HOP_SAMPLES + WINDOW_SAMPLES
        lo, hi = max(start - self.pad_start, 0), max(stop - self.pad_start, 0)  # the 16 kHz samples inside
        channels, length = _resample_span(self.track, lo, hi)
        if length is not None:  # the track ends in this block: the padded length is known
            stop = min(stop, max(self.pad_start + length, self.min_length))
        per_channel = []
        for resampled in channels:
            padded = np.zeros(stop - start, dtype=np.float64)
            offset = self.pad_start + lo - start
            padded[offset:offset + resampled.size] = resampled
            per_channel.append(log_mel(padded))
        if len(per_channel) == 1:
            per_channel *= CHANNELS
        return np.stack(per_channel)


@functools.lru_cache(maxsize=1)
def mel_matrix() -> np.ndarray:
    """HTK-mel weights ``[257, 64]`` (rfft bins x mel bands), DC row zeroed, like TF-VGGish."""
    bins_mel = _hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2.0, FFT_LENGTH // 2 + 1))[:, None]
    edges = np.linspace(_hertz_to_mel(MEL_MIN_HZ), _hertz_to_mel(MEL_MAX_HZ), NUM_MEL_BINS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel - lower) / (centre - lower)
    falling = (upper - bins_mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    weights.flags.writeable = False
    return weights


def log_mel(waveform: np.ndarray) -> np.ndarray:
    """Log-mel of a 1-D 16 kHz waveform: float32 ``[frames, 64]``, one frame per 10 ms hop."""
    waveform = np.asarray(waveform, dtype=np.float64)
    count = 1 + (waveform.size - WINDOW_SAMPLES) // HOP_SAMPLES if waveform.size >= WINDOW_SAMPLES else 0
    frames = np.lib.stride_tricks.sliding_window_view(waveform, WINDOW_SAMPLES)[::HOP_SAMPLES]
    window, weights = _periodic_hann(), mel_matrix()
    out = np.empty((count, NUM_MEL_BINS), dtype=np.float32)
    for start in range(0, count, STFT_CHUNK_FRAMES):
        spectrum = np.abs(np.fft.rfft(frames[start : start + STFT_CHUNK_FRAMES] * window, FFT_LENGTH))
        out[start : start + STFT_CHUNK_FRAMES] = np.log(np.dot(spectrum, weights) + LOG_OFFSET)
    return out


def _track_log_mel(samples: np.ndarray, sample_rate: int, pad_start: int = 0, min_length: int = 0) -> np.ndarray:
    """Log-mel ``[2, frames, 64]`` of ``(n, C)`` audio; pads the 16 kHz waveform once.

    ``pad_start`` zeros go before the audio, and zeros after it until the padded waveform holds
    at least ``min_length`` samples.
    """
    if int(sample_rate) <= 0:
        raise AudioError(f"invalid audio sample rate {sample_rate}", "give a positive rate in Hz")
    per_channel = []
    for channel in _analysis_channels(samples):
        resampled = _resample(channel(), int(sample_rate))
        pad_end = max(0, min_length - pad_start - resampled.size)
        per_channel.append(log_mel(np.pad(resampled, (pad_start, pad_end))))
    if len(per_channel) == 1:
        per_channel *= CHANNELS
    return np.stack(per_channel)


def _analysis_channels(samples: np.ndarray) -> list[Callable[[], np.ndarray]]:
    """The distinct channels VGGish sees, [mono] (used for both) or [left, right].

    Each is a thunk giving a contiguous float64 copy, so one channel at a time is materialised.
    """
    channels = samples.shape[1]
    if channels == 0:
        raise AudioError("the audio has no channels", "pass samples shaped (n,) or (n, channels)")
    if channels > CHANNELS:
        warnings.warn(f"audio has {channels} channels; down-mixing to mono for VGGish", stacklevel=4)
        return [lambda: samples.mean(axis=1, dtype=np.float64)]
    return [functools.partial(np.ascontiguousarray, samples[:, c], dtype=np.float64) for c in range(channels)]


@functools.lru_cache(maxsize=8)
def _resampler(sample_rate: int) -> tuple[np.ndarray, np.ndarray, int, float, float, int]:
    """``resampy.resample``'s set-up for sample_rate -> 16 kHz.

    Returns (filter, its differences, table precision, scale, input samples per output sample,
    filter reach in input samples).
    """
    window, precision, _ = resampy.filters.get_filter(RESAMPLE_FILTER)
    ratio = float(SAMPLE_RATE) / sample_rate
    if ratio < 1:
        window = ratio * window
    scale = min(1.0, ratio)
    reach = len(window) // int(scale * precision) + 2
    return window, np.diff(window, append=window[-1]), precision, scale, 1.0 / ratio, reach


def _resampled_length(samples: int, sample_rate: int) -> int:
    """Length of a track of ``samples`` once resampled to 16 kHz (as resampy computes it)."""
    if sample_rate == SAMPLE_RATE or samples == 0:
        return samples
    return int(samples * float(SAMPLE_RATE) / float(sample_rate))


def _resample_span(track: AudioTrack, lo: int, hi: int) -> tuple[list[np.ndarray], int | None]:
    """16 kHz samples ``lo:hi`` of the track's analysis channels, equal to `_resample` of the whole.

    Output sample j is resampy's sum over the input around ``j * increment``; reading the input
    ``reach`` samples beyond both ends of the span (or to the track's ends) gives every sum the same
    terms in the same order, and the times, shifted by a whole number of samples, stay exact.
    Returns the channels (cut where the resampled track ends) and the resampled track's length when
    it ends before ``hi`` (else None).
    """
    rate = int(track.sample_rate)
    if rate == SAMPLE_RATE:
        samples = track.span(lo, hi)
        length = track.num_samples if len(samples) < hi - lo else None
        return [channel() for channel in _analysis_channels(samples)], length
    window, delta, precision, scale, increment, reach = _resampler(rate)
    first = max(int(lo * increment) - reach, 0)
    last = int(max(hi - 1, lo) * increment) + reach + 2
    samples = track.span(first, last)
    length = None
    if len(samples) < last - first:  # the track ends here: its length is known
        length = _resampled_length(track.num_samples, rate)
        if track.num_samples and length < 1:
            raise AudioError(f"cannot resample {track.num_samples} samples at {rate} Hz: too short")
        hi = max(min(hi, length), lo)
    times = np.arange(lo, hi) * increment - first
    out = []
    for channel in _analysis_channels(samples):
        resampled = np.zeros(hi - lo, dtype=np.float64)
        if resampled.size:
            resample_f_s(channel(), times, window, delta, precision, scale, resampled)
        out.append(resampled)
    return out, length


def _resample(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resample a 1-D waveform to 16 kHz with resampy's default (kaiser_best) filter.

    resampy's parallel kernel computes every output sample exactly as the serial one does.
    """
    if sample_rate == SAMPLE_RATE or waveform.size == 0:
        return waveform
    parallel = waveform.size > PARALLEL_RESAMPLE_SECONDS * sample_rate
    try:
        return resampy.resample(waveform, sample_rate, SAMPLE_RATE, parallel=parallel)
    except ValueError as error:
        raise AudioError(f"cannot resample {waveform.size} samples at {sample_rate} Hz: {error}") from error


def _check_finite(samples: np.ndarray, sample_rate: int, name: str = "", offset: int | None = None) -> None:
    """Raise AudioError naming how many samples are NaN/infinite and where the first one is.

    ``offset``: the samples are a streamed chunk starting at that sample (only the first is named).
    """
    if np.isfinite(samples).all():
        return
    bad = ~np.isfinite(samples).all(axis=1)  # per sample instant, any channel
    first = int(np.argmax(bad)) + (offset or 0)
    how_many = "samples" if offset is not None else f"{int(bad.sum())} samples"
    raise AudioError(f"{name + ': ' if name else ''}the audio has {how_many} that are NaN or infinite (the first "
                     f"at {first / sample_rate:.2f} s), so it cannot guide segmentation",
                     "repair or re-export the audio, or run without audio")


def _whole_examples(frames: int) -> int:
    """Number of whole non-overlapping examples in ``frames`` log-mel frames."""
    return frames // EXAMPLE_FRAMES


def _as_float_2d(samples: np.ndarray, dtype: type) -> np.ndarray:
    """``(n,)``/``(n, C)`` samples as float ``(n, C)``; signed integers scaled to [-1, 1)."""
    array = np.asarray(samples)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise AudioError(f"audio samples must be shaped (n,) or (n, channels), got {array.shape}")
    if np.issubdtype(array.dtype, np.signedinteger):
        return (array / (np.iinfo(array.dtype).max + 1.0)).astype(dtype, copy=False)
    if not np.issubdtype(array.dtype, np.floating):
        raise AudioError(f"unsupported audio sample type {array.dtype}", "pass float or signed-integer samples")
    return array.astype(dtype, copy=False)


def _hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return MEL_HIGH_Q * np.log(1.0 + (np.asarray(hertz) / MEL_BREAK_HZ))


@functools.lru_cache(maxsize=1)
def _periodic_hann() -> np.ndarray:
    """Periodic Hann window of ``WINDOW_SAMPLES`` points (a full cosine period)."""
    window = 0.5 - (0.5 * np.cos(2 * np.pi / WINDOW_SAMPLES * np.arange(WINDOW_SAMPLES)))
    window.flags.writeable = False
    return window
