"""Deterministic synthetic audio-visual clips with ground truth, for demos, tests and tiny training.

A red disc moves in the left half of the frame and a blue square in the right half. Each has its
own tone (440 Hz and 1320 Hz); exactly one sounds at a time, switching every second (the seed
picks which starts). The stereo mix pans each tone to its shape's side, and 10 ms fades at the
switches avoid clicks. Shape paths and the background tint depend only on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .audio import AudioTrack
from .errors import VideoError
from .video import write_video

OBJECT_NAMES = ("disc", "square")
OBJECT_COLOURS = ((220, 40, 40), (40, 80, 230))
OBJECT_TONES_HZ = (440.0, 1320.0)
OBJECT_PAN = ((0.8, 0.3), (0.3, 0.8))  # (left, right) gain of each object's tone
SWITCH_SECONDS = 1.0
FADE_SECONDS = 0.01
AUDIO_RATE = 44_100
TONE_AMPLITUDE = 0.5
SHAPE_SCALE = 0.12  # disc radius / square half-side, as a fraction of min(width, height)
MIN_SIZE = 32
PATH_HZ_RANGE = (0.15, 0.45)  # frequencies of the shapes' sinusoidal paths


@dataclass(eq=False)
class SampleInfo:
    """A synthetic clip's facts and ground truth (``masks`` are bool ``[T, H, W]``)."""

    path: Path | None
    fps: float
    n_frames: int
    size: tuple[int, int]  # (width, height)
    frame_times: np.ndarray  # seconds
    sounding: np.ndarray  # int [T]: index into OBJECT_NAMES of the object sounding at each frame
    masks: dict[str, np.ndarray]  # per object name

    @property
    def sounding_masks(self) -> np.ndarray:
        """Bool ``[T, H, W]`` mask of the object that sounds at each frame."""
        stacked = np.stack([self.masks[name] for name in OBJECT_NAMES])
        return stacked[self.sounding, np.arange(self.n_frames)]


def render_sample_frames(
    seconds: float = 4.0, fps: float = 10, size: tuple[int, int] = (320, 240), seed: int = 0,
) -> tuple[np.ndarray, AudioTrack, SampleInfo]:
    """Render a clip in memory: uint8 frames ``[T, H, W, 3]``, stereo audio, and its SampleInfo."""
    width, height = int(size[0]), int(size[1])
    if width < MIN_SIZE or height < MIN_SIZE:
        raise VideoError(f"sample size {width}x{height} is too small", f"use at least {MIN_SIZE}x{MIN_SIZE}")
    if seconds <= 0 or fps <= 0:
        raise VideoError("sample clips need positive seconds and fps")
    rng = np.random.default_rng(seed)
    first = int(rng.integers(len(OBJECT_NAMES)))
    times = np.arange(int(round(seconds * fps))) / fps
    sounding = (_segment(times) + first) % len(OBJECT_NAMES)
    centres = _paths(rng, times, width, height)
    radius = SHAPE_SCALE * min(width, height)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    masks = {
        "disc": (xs - centres[0, :, 0, None, None]) ** 2 + (ys - centres[0, :, 1, None, None]) ** 2 <= radius**2,
        "square": (np.abs(xs - centres[1, :, 0, None, None]) <= radius)
        & (np.abs(ys - centres[1, :, 1, None, None]) <= radius),
    }
    frames = np.broadcast_to(_background(rng, width, height), (times.size, height, width, 3)).copy()
    for name, colour in zip(OBJECT_NAMES, OBJECT_COLOURS):
        frames[masks[name]] = colour
    info = SampleInfo(None, float(fps), int(times.size), (width, height), times, sounding, masks)
    return frames, _audio(seconds, first), info


def make_sample_clip(
    path: str | Path, seconds: float = 4.0, fps: float = 10, size: tuple[int, int] = (320, 240), seed: int = 0,
) -> SampleInfo:
    """Write a synthetic clip (h264 + stereo AAC for .mp4) to ``path``; returns its SampleInfo."""
    if size[0] % 2 or size[1] % 2:
        raise VideoError(f"sample size {size[0]}x{size[1]} must be even", "h264 needs even width and height")
    frames, audio, info = render_sample_frames(seconds, fps, size, seed)
    return replace(info, path=write_video(path, frames, fps, audio))


def _segment(times: np.ndarray) -> np.ndarray:
    """Index of the switching period each time falls in."""
    return np.floor(times / SWITCH_SECONDS).astype(np.int64)


def _paths(rng: np.random.Generator, times: np.ndarray, width: int, height: int) -> np.ndarray:
    """Shape centres ``[2, T, 2]`` (x, y): sinusoidal paths, the disc left and the square right."""
    margin = SHAPE_SCALE * min(width, height) + 2.0
    half = width / 2.0
    centres = np.empty((len(OBJECT_NAMES), times.size, 2))
    for obj in range(len(OBJECT_NAMES)):
        freq = rng.uniform(*PATH_HZ_RANGE, size=2)
        phase = rng.uniform(0.0, 2 * np.pi, size=2)
        swing = np.array([half / 2.0 - margin, height / 2.0 - margin])
        middle = np.array([half * obj + half / 2.0, height / 2.0])
        centres[obj] = middle + swing * np.sin(2 * np.pi * freq * times[:, None] + phase)
    return centres


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A dim vertical gradient with a seed-dependent tint, uint8 ``[H, W, 3]``."""
    tint = rng.uniform(20.0, 60.0, size=3)
    ramp = np.linspace(0.6, 1.4, height)[:, None, None]
    return np.broadcast_to(np.clip(ramp * tint, 0, 255), (height, width, 3)).astype(np.uint8)


def _audio(seconds: float, first: int) -> AudioTrack:
    """Stereo tones, one object at a time, with fades at every switch."""
    times = np.arange(int(round(seconds * AUDIO_RATE))) / AUDIO_RATE
    segment = _segment(times)
    offset = times - segment * SWITCH_SECONDS
    envelope = np.clip(np.minimum(offset, SWITCH_SECONDS - offset) / FADE_SECONDS, 0.0, 1.0)
    active = (segment + first) % len(OBJECT_NAMES)
    stereo = np.zeros((times.size, 2))
    for obj, (tone, pan) in enumerate(zip(OBJECT_TONES_HZ, OBJECT_PAN)):
        wave = TONE_AMPLITUDE * envelope * (active == obj) * np.sin(2 * np.pi * tone * times)
        stereo += wave[:, None] * np.asarray(pan)
    return AudioTrack(stereo.astype(np.float32), AUDIO_RATE)
