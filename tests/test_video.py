"""core/video.py and core/sample.py with real PyAV-encoded files."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest

from napari_auralsam2.core import video as video_mod
from napari_auralsam2.core.audio import AudioTrack
from napari_auralsam2.core.errors import AudioError, NoAudioError, VideoError
from napari_auralsam2.core.sample import OBJECT_NAMES, OBJECT_TONES_HZ, make_sample_clip, render_sample_frames
from napari_auralsam2.core.audio_file import load_audio
from napari_auralsam2.core.video import FileVideo, frames_from_array, open_video, write_video

MAX_MEAN_ERROR = 6.0  # grey levels: h264 at crf 18 on flat frames


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


def _count_seeks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seeks: list[int] = []
    original = FileVideo._seek

    def counting(self: FileVideo, index: int) -> None:
        seeks.append(index)
        original(self, index)

    monkeypatch.setattr(FileVideo, "_seek", counting)
    return seeks


def test_index_gives_count_times_and_geometry(sample_mp4, clip_spec):
    with open_video(sample_mp4) as video:
        assert len(video) == clip_spec.n_frames
        assert video.fps == pytest.approx(clip_spec.fps)
        np.testing.assert_allclose(video.frame_times, np.arange(clip_spec.n_frames) / clip_spec.fps, atol=1e-6)
        assert video.shape == (clip_spec.n_frames, clip_spec.height, clip_spec.width, 3)
        assert (video.dtype, video.ndim, video.path) == (np.uint8, 4, sample_mp4)


def test_frames_match_the_source_in_order(sample_mp4, clip_spec):
    with open_video(sample_mp4) as video:
        for index, frame in enumerate(video):
            assert frame.dtype == np.uint8 and not frame.flags.writeable
            error = np.abs(frame.astype(float) - clip_spec.frame(index)).mean()
            assert error < MAX_MEAN_ERROR, f"frame {index} differs by {error:.1f}"


def test_random_and_backward_access_equal_sequential_decode(sample_mp4, clip_spec, monkeypatch):
    with open_video(sample_mp4) as video:
        sequential = [video.frame(i).copy() for i in range(len(video))]
    seeks = _count_seeks(monkeypatch)
    frame_bytes = clip_spec.width * clip_spec.height * 3
    with open_video(sample_mp4, cache_bytes=3 * frame_bytes) as video:
        for index in np.random.default_rng(0).permutation(len(video)):
            np.testing.assert_array_equal(video.frame(int(index)), sequential[index])
    with open_video(sample_mp4, cache_bytes=clip_spec.keyframe_interval * frame_bytes) as video:
        seeks.clear()
        for index in reversed(range(len(video))):
            np.testing.assert_array_equal(video.frame(index), sequential[index])
        assert len(seeks) <= len(video) // clip_spec.keyframe_interval + 1  # one seek per keyframe segment
        seeks.clear()
        for index in range(len(video)):
            video.frame(index)
        assert len(seeks) <= 1  # forward reads continue the live decoder


def test_array_like_indexing(sample_mp4, clip_spec, monkeypatch):
    with open_video(sample_mp4) as video:
        whole = np.asarray(video)
        assert whole.shape == video.shape
        np.testing.assert_array_equal(video[-1], whole[-1])
        np.testing.assert_array_equal(video[2:9:3], whole[2:9:3])
        np.testing.assert_array_equal(video[[4, 1]], whole[[4, 1]])
        np.testing.assert_array_equal(video[3, 5:9, :, 0], whole[3, 5:9, :, 0])  # napari-style tuple
        np.testing.assert_array_equal(video[1:3, 0], whole[1:3, 0])
        assert video[5:5].shape == (0, clip_spec.height, clip_spec.width, 3)
        with pytest.raises(IndexError):
            video.frame(clip_spec.n_frames)
        monkeypatch.setattr(video_mod, "MAX_ARRAY_BYTES", whole.nbytes - 1)
        with pytest.raises(VideoError, match="refusing to decode"):
            np.asarray(video)
    with pytest.raises(VideoError, match="is closed"):
        video.frame(0)


def test_container_audio_is_decoded_and_aligned(sample_mp4, clip_spec):
    with open_video(sample_mp4) as video:
        track = video.require_audio()
    assert (track.sample_rate, track.num_channels) == (clip_spec.sample_rate, 2)
    assert track.duration == pytest.approx(clip_spec.audio_seconds, abs=0.05)
    assert track.samples.dtype == np.float32
    middle = track.samples[track.sample_rate // 2 : 3 * track.sample_rate // 2]
    assert _peak_hz(middle[:, 0], track.sample_rate) == pytest.approx(clip_spec.left_hz, abs=2)
    assert _peak_hz(middle[:, 1], track.sample_rate) == pytest.approx(clip_spec.right_hz, abs=2)


def test_separate_audio_file_and_track(sample_mp4, sample_wav, clip_spec):
    with open_video(sample_mp4, audio=sample_wav) as video:
        np.testing.assert_array_equal(video.audio.samples, load_audio(sample_wav).samples)
    track = clip_spec.audio()
    with open_video(sample_mp4, audio=track) as video:
        assert video.audio is track
    with pytest.raises(AudioError):
        open_video(sample_mp4, audio=3.0)


def test_wav_int16_is_scaled_exactly(sample_wav, clip_spec):
    track = load_audio(sample_wav)
    assert (track.sample_rate, track.samples.shape) == (clip_spec.wav_rate, clip_spec.wav_samples().shape)
    np.testing.assert_array_equal(track.samples, clip_spec.wav_samples() / np.float32(32768))


def test_video_without_audio(silent_mp4):
    with open_video(silent_mp4) as video:
        assert len(video) > 0 and video.audio is None
        with pytest.raises(NoAudioError, match="no audio"):
            video.require_audio()
    with pytest.raises(NoAudioError):
        load_audio(silent_mp4)


@pytest.mark.parametrize("suffix", [".mkv", ".mov", ".webm", ".avi"])
def test_other_containers_round_trip(tmp_path, clip_spec, suffix):
    frames = [clip_spec.frame(i) for i in range(8)]
    path = write_video(tmp_path / f"clip{suffix}", frames, clip_spec.fps, clip_spec.audio(), keyframe_interval=4)
    with open_video(path) as video:
        assert len(video) == len(frames)
        np.testing.assert_allclose(video.frame_times, np.arange(len(frames)) / clip_spec.fps, atol=1e-3)
        assert np.abs(video[7].astype(float) - frames[7]).mean() < 2 * MAX_MEAN_ERROR
        track = video.require_audio()
    second = track.samples[: track.sample_rate]
    assert _peak_hz(second[:, 0], track.sample_rate) == pytest.approx(clip_spec.left_hz, abs=2)


def test_array_source(clip_spec, sample_wav):
    frames = np.stack([clip_spec.frame(i) for i in range(6)])
    video = frames_from_array(frames, fps=5.0, audio=sample_wav)
    assert video.shape == frames.shape and video.path is None
    np.testing.assert_allclose(video.frame_times, np.arange(6) / 5.0)
    np.testing.assert_array_equal(np.asarray(video), frames)
    assert video.audio.sample_rate == clip_spec.wav_rate
    gray = frames_from_array(frames[..., 0], fps=5.0)
    assert gray.shape == frames.shape and gray.audio is None
    np.testing.assert_array_equal(gray[2][..., 2], frames[2, ..., 0])
    np.testing.assert_array_equal(frames_from_array(frames.astype(np.float32) / 255, fps=1)[3], frames[3])
    dask_array = pytest.importorskip("dask.array")
    lazy = frames_from_array(dask_array.from_array(frames, chunks=(1, -1, -1, -1)), fps=5.0)
    np.testing.assert_array_equal(lazy[1:4], frames[1:4])
    with pytest.raises(VideoError):
        frames_from_array(np.zeros((3, 4, 5, 2), np.uint8), fps=5.0)
    with pytest.raises(VideoError):
        frames_from_array(frames, fps=0)


def test_fps_override(sample_mp4):
    with open_video(sample_mp4, fps=25.0) as video:
        assert video.fps == 25.0
        np.testing.assert_allclose(video.frame_times[:3], [0.0, 0.04, 0.08])


def _single_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


def test_errors_are_clear(tmp_path, sample_mp4, sample_wav):
    with pytest.raises(VideoError) as missing:
        open_video(tmp_path / "nope.mp4")
    assert "not found" in _single_line(missing)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError) as bad:
        open_video(garbage)
    assert "garbage.mp4" in _single_line(bad)
    chopped = tmp_path / "chopped.mp4"
    data = Path(sample_mp4).read_bytes()
    chopped.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError):
        open_video(chopped)
    with pytest.raises(VideoError, match="no video stream"):
        open_video(sample_wav)
    empty = tmp_path / "empty.mkv"  # a video stream without packets, beside an audio stream
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height = 64, 48
        sound = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        container.mux(sound.encode(frame))
    with pytest.raises(VideoError, match="no video frames"):
        open_video(empty)
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(VideoError, match="cannot write"):
        write_video(tmp_path / "x.gif", [np.zeros((8, 8, 3), np.uint8)], 10)
    with pytest.raises(VideoError, match="no frames"):
        write_video(tmp_path / "x.mp4", [], 10)


def test_truncated_file_fails_on_decode_not_silently(tmp_path, clip_spec):
    path = write_video(tmp_path / "clip.mkv", [clip_spec.frame(i) for i in range(clip_spec.n_frames)], clip_spec.fps)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with open_video(path) as video:
        assert 0 < len(video) < clip_spec.n_frames
        decoded = 0
        try:
            for frame in video:
                assert frame.shape == (clip_spec.height, clip_spec.width, 3)
                decoded += 1
        except VideoError as error:
            assert "truncated or corrupted" in str(error)
        assert decoded >= len(video) - 1


def test_write_video_pads_odd_sizes_and_rejects_size_changes(tmp_path):
    frames = [np.full((33, 45, 3), 100, np.uint8)] * 3
    with open_video(write_video(tmp_path / "odd.mp4", frames, 5)) as video:
        assert video.shape == (3, 34, 46, 3)
    with pytest.raises(VideoError, match="one size"):
        write_video(tmp_path / "mixed.mp4", [np.zeros((32, 32, 3), np.uint8), np.zeros((16, 32, 3), np.uint8)], 5)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def test_memory_stays_bounded_while_iterating_a_longer_video(tmp_path):
    count, height, width = 600, 180, 320
    frame_bytes = height * width * 3

    def frames():
        for index in range(count):
            image = np.zeros((height, width, 3), np.uint8)
            image[:, (index * 3) % width] = 255
            image[..., 1] = index % 256
            yield image

    path = write_video(tmp_path / "long.mp4", frames(), 30)
    cache_bytes = 16 * frame_bytes
    with open_video(path, cache_bytes=cache_bytes) as video:
        video.frame(0)
        rss_before = _rss_bytes()
        tracemalloc.start()
        for index, frame in enumerate(video):
            assert frame[0, (index * 3) % width, 0] > 128
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        growth = _rss_bytes() - rss_before
    total = count * frame_bytes  # 104 MB if every frame were kept
    assert peak < cache_bytes + 8 * frame_bytes, f"traced peak {peak / 2**20:.1f} MiB"
    assert growth < total / 3, f"RSS grew by {growth / 2**20:.1f} MiB"


def test_sample_clip_round_trip(tmp_path):
    info = make_sample_clip(tmp_path / "sample.mp4", seconds=2.0, fps=10, size=(160, 120), seed=3)
    assert (info.n_frames, info.size, info.path) == (20, (160, 120), tmp_path / "sample.mp4")
    assert info.sounding_masks.shape == (20, 120, 160) and info.sounding_masks.dtype == np.bool_
    assert set(info.sounding[:10]) == {info.sounding[0]} and info.sounding[10] != info.sounding[0]
    for name in OBJECT_NAMES:
        assert info.masks[name].any(axis=(1, 2)).all()
    with open_video(info.path) as video:
        assert len(video) == info.n_frames
        frame = video[4].astype(int)
        disc, square = info.masks["disc"][4], info.masks["square"][4]
        assert frame[disc, 0].mean() > frame[disc, 2].mean() + 100  # red disc
        assert frame[square, 2].mean() > frame[square, 0].mean() + 100  # blue square
        track = video.require_audio()
    first_second = track.samples[2000 : track.sample_rate - 2000, 0]
    assert _peak_hz(first_second, track.sample_rate) == pytest.approx(OBJECT_TONES_HZ[info.sounding[0]], abs=2)
    # the silent gap between the tones sits at 1 s: the audio is aligned with the frames (AAC priming removed)
    rate, window = track.sample_rate, track.sample_rate // 200
    envelope = np.convolve(np.abs(track.samples[:, 0]), np.ones(window) / window, mode="same")
    around = slice(int(0.9 * rate), int(1.1 * rate))
    assert (np.argmin(envelope[around]) + around.start) / rate == pytest.approx(1.0, abs=0.003)


def test_render_sample_frames_is_deterministic():
    frames, audio, info = render_sample_frames(seconds=1.0, fps=5, size=(64, 48), seed=1)
    again, audio_again, _ = render_sample_frames(seconds=1.0, fps=5, size=(64, 48), seed=1)
    other, _, _ = render_sample_frames(seconds=1.0, fps=5, size=(64, 48), seed=2)
    assert frames.shape == (5, 48, 64, 3) and isinstance(audio, AudioTrack)
    np.testing.assert_array_equal(frames, again)
    np.testing.assert_array_equal(audio.samples, audio_again.samples)
    assert not np.array_equal(frames, other)
    assert info.path is None and info.frame_times[-1] == pytest.approx(0.8)


# -- issue 14: rotated phone videos, files cut short, damaged frames ---------------------------
def _rotated_clip(path: Path, clip_spec, degrees: float, hflip: bool = False, frames: int = 4) -> Path:
    """An h264 mp4 of clip_spec's frames whose container asks players to turn/flip it (as phones do)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(clip_spec.fps), options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = clip_spec.width, clip_spec.height, "yuv420p"
        stream.set_display_rotation(degrees, hflip=hflip)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(clip_spec.frame(index), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("degrees, hflip, shown", [
    (-90, False, lambda image: np.rot90(image, -1)),  # a phone held upright: players turn it clockwise
    (90, False, lambda image: np.rot90(image, 1)),
    (180, False, lambda image: np.rot90(image, 2)),
    (0, True, lambda image: image[:, ::-1]),
])
def test_frames_are_given_as_players_show_them(tmp_path, clip_spec, degrees, hflip, shown):
    path = _rotated_clip(tmp_path / "phone.mp4", clip_spec, degrees, hflip)
    with open_video(path) as video:
        expected = shown(clip_spec.frame(2))
        assert video.shape == (4, *expected.shape)
        assert np.abs(video.frame(2).astype(float) - expected).mean() < MAX_MEAN_ERROR
        assert np.abs(video[3].astype(float) - shown(clip_spec.frame(3))).mean() < MAX_MEAN_ERROR


def test_a_rotation_that_is_not_a_quarter_turn_is_refused(tmp_path, clip_spec):
    path = _rotated_clip(tmp_path / "tilted.mp4", clip_spec, 30)
    with pytest.raises(VideoError, match="turned by 30 degrees") as error:
        open_video(path)
    assert "re-encode it upright" in _single_line(error)


def test_a_file_cut_short_is_indexed_up_to_its_last_decodable_frame(truncated_faststart_mp4, clip_spec):
    with open_video(truncated_faststart_mp4) as video:
        assert 0 < len(video) < clip_spec.n_frames and video.unreadable > 0
        for index in range(len(video)):  # every indexed frame decodes, and is the right one
            error = np.abs(video.frame(index).astype(float) - clip_spec.frame(index)).mean()
            assert error < MAX_MEAN_ERROR, f"frame {index} differs by {error:.1f}"
        note = video_mod.truncation_note(video)
        assert f"only its first {len(video)} of {len(video) + video.unreadable} frames" in note
    with open_video(video_mod.Path(truncated_faststart_mp4).with_name("faststart.mp4")) as whole:
        assert len(whole) == clip_spec.n_frames and whole.unreadable == 0  # the uncut file is complete
        assert video_mod.truncation_note(whole) is None


def test_indexing_never_raises_on_a_damaged_frame(tmp_path, sample_mp4, clip_spec):
    """napari slices with video[...]: a frame that cannot be decoded is black (with a warning);
    video.frame(i), which the session uses, still raises."""
    data = bytearray(Path(sample_mp4).read_bytes())
    with av.open(str(sample_mp4)) as container:
        entries = [(e.pos, e.size, e.is_keyframe) for e in container.streams.video[0].index_entries]
    pos, size, _ = next(entry for entry in entries[6:] if not entry[2])
    data[pos:pos + size] = bytes(size)  # a predicted frame's data zeroed
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    with open_video(path) as video:
        broken = []
        for index in range(len(video)):
            try:
                video.frame(index)
            except VideoError:
                broken.append(index)
        assert broken
        with pytest.warns(RuntimeWarning, match=f"showing frame {broken[0]} as black"):
            shown = video[broken[0]]
        assert shown.shape == (clip_spec.height, clip_spec.width, 3) and not shown.any()
        assert video[:, 10:20].shape == (len(video), 10, clip_spec.width, 3)
        with pytest.raises(VideoError):
            frames_from_array(video, fps=10).frame(broken[0])  # wrapped, it stays strict


def test_a_folder_is_not_a_video_or_audio_file(tmp_path):
    with pytest.raises(VideoError, match="is a folder; give the video file itself"):
        open_video(tmp_path)
    with pytest.raises(AudioError, match="is a folder; give the audio file itself"):
        load_audio(tmp_path)
