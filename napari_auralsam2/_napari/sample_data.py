"""napari sample data: the bundled synthetic clip with sound (a disc and a square taking turns to sound).

The clip is rendered deterministically by `core.sample` into the user cache directory on first
use, then reused; nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

from ..core import open_video
from ..core.sample import make_sample_clip
from .reader import LayerData, claim_video_extensions, video_layer_data

APP_NAME = "napari-auralsam2"
SAMPLE_SECONDS = 6.0
SAMPLE_FPS = 10
SAMPLE_SIZE = (320, 240)
SAMPLE_SEED = 0
SAMPLE_NAME = "AuralSAM2 sample clip"


def sample_path() -> Path:
    """Where the clip is cached; the name encodes every parameter, so a change makes a new file."""
    width, height = SAMPLE_SIZE
    name = f"sample_{SAMPLE_SECONDS:g}s_{SAMPLE_FPS}fps_{width}x{height}_seed{SAMPLE_SEED}.mp4"
    return Path(user_cache_dir(APP_NAME)) / name


def ensure_sample_clip() -> Path:
    """Render the clip once (written to a temporary name, then renamed, so a crash leaves no half file)."""
    path = sample_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"partial-{os.getpid()}-{path.name}")
        make_sample_clip(partial, seconds=SAMPLE_SECONDS, fps=SAMPLE_FPS, size=SAMPLE_SIZE, seed=SAMPLE_SEED)
        os.replace(partial, path)
    return path


def sample_clip() -> list[LayerData]:
    """The sample clip as a lazy video layer with its sound (npe2 sample-data command)."""
    claim_video_extensions()
    return [video_layer_data(open_video(ensure_sample_clip()), name=SAMPLE_NAME)]
