"""Shared fixtures: small real media files encoded with PyAV (mp4 with/without AAC audio, wav, a cut mp4)."""

from __future__ import annotations

import os
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

# napari's settings (the reader preference the plugin sets, among others) go to a throw-away file,
# never to the user's own napari settings; set before napari reads them
os.environ.setdefault("NAPARI_CONFIG", os.path.join(tempfile.mkdtemp(prefix="napari-settings-"), "settings.yaml"))

from napari_auralsam2.core.audio import AudioTrack  # noqa: E402
from napari_auralsam2.core.video import write_video  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: on shared cores more threads spin-wait on each other, and
    a session reads ahead on the CPU only when torch leaves a core free."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class ClipSpec:
    """What the fixture clips contain: a brightness ramp with a moving white bar, two tones."""

    n_frames: int = 20
    fps: float = 10.0
    width: int = 96
    height: int = 64
    keyframe_interval: int = 5
    sample_rate: int = 44_100
    left_hz: float = 440.0
    right_hz: float = 880.0
    audio_seconds: float = 2.0
    wav_rate: int = 16_000
    wav_seconds: float = 1.5

    def frame(self, index: int) -> np.ndarray:
        """Source frame ``index``: uniform grey 10 + 10 * index, with a white bar at x = 4 * index."""
        image = np.full((self.height, self.width, 3), 10 + 10 * index, dtype=np.uint8)
        image[10:26, 4 * index : 4 * index + 8] = 255
        return image

    def audio(self) -> AudioTrack:
        """Stereo tones: left 440 Hz, right 880 Hz, amplitude 0.5."""
        t = np.arange(int(self.audio_seconds * self.sample_rate)) / self.sample_rate
        left, right = np.sin(2 * np.pi * self.left_hz * t), np.sin(2 * np.pi * self.right_hz * t)
        return AudioTrack((0.5 * np.stack([left, right], axis=1)).astype(np.float32), self.sample_rate)

    def wav_samples(self) -> np.ndarray:
        """Deterministic int16 stereo samples of the wav fixture (full-scale noise)."""
        rng = np.random.default_rng(1234)
        return rng.integers(-32768, 32768, size=(int(self.wav_seconds * self.wav_rate), 2)).astype(np.int16)


@pytest.fixture(scope="session")
def clip_spec() -> ClipSpec:
    return ClipSpec()


@pytest.fixture(scope="session")
def sample_mp4(tmp_path_factory: pytest.TempPathFactory, clip_spec: ClipSpec) -> Path:
    """h264 96x64, 20 frames at 10 fps (keyframe every 5), stereo 44.1 kHz AAC (440/880 Hz)."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    frames = (clip_spec.frame(i) for i in range(clip_spec.n_frames))
    return write_video(path, frames, clip_spec.fps, clip_spec.audio(), keyframe_interval=clip_spec.keyframe_interval)


@pytest.fixture(scope="session")
def silent_mp4(tmp_path_factory: pytest.TempPathFactory, clip_spec: ClipSpec) -> Path:
    """The same frames as ``sample_mp4`` without an audio stream."""
    path = tmp_path_factory.mktemp("media") / "silent.mp4"
    frames = (clip_spec.frame(i) for i in range(clip_spec.n_frames))
    return write_video(path, frames, clip_spec.fps, keyframe_interval=clip_spec.keyframe_interval)


@pytest.fixture(scope="session")
def sample_wav(tmp_path_factory: pytest.TempPathFactory, clip_spec: ClipSpec) -> Path:
    """16-bit stereo 16 kHz wav holding ``clip_spec.wav_samples()``."""
    path = tmp_path_factory.mktemp("media") / "noise.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(clip_spec.wav_rate)
        handle.writeframes(clip_spec.wav_samples().astype("<i2").tobytes())
    return path


@pytest.fixture(scope="session")
def truncated_faststart_mp4(tmp_path_factory: pytest.TempPathFactory, sample_mp4: Path) -> Path:
    """``sample_mp4`` remuxed index-first ("faststart") and cut inside the packet of its 7th frame in
    decode order, like a copy still in progress: the index lists all 20 frames, the data holds fewer."""
    folder = tmp_path_factory.mktemp("truncated")
    whole = folder / "faststart.mp4"
    with av.open(str(sample_mp4)) as source, av.open(str(whole), "w", options={"movflags": "faststart"}) as target:
        streams = {stream.index: target.add_stream_from_template(stream) for stream in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                target.mux(packet)
    with av.open(str(whole)) as container:
        entry = container.streams.video[0].index_entries[6]
        cut = entry.pos + entry.size // 2
    path = folder / "truncated.mp4"
    path.write_bytes(whole.read_bytes()[:cut])
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` need a CUDA device: skipped without one (bench/gpu_check.sh runs them)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (bench/gpu_check.sh runs these on a GPU machine)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
