"""napari reader: a video file becomes a lazy RGB image layer that remembers where its sound is.

Frames are decoded on demand by the core `VideoSource` (napari slices one frame at a time), so
opening a long video costs one demux pass, not a decode. Files the core cannot open give `None`,
letting napari try other readers. Importing this module loads neither torch nor sam2.

napari's builtin reader also claims `*.mp4` & co., so napari would ask which reader to use for
every video; `claim_video_extensions` makes this one the preferred reader for the video suffixes
(napari's own per-extension preference) unless the user already chose one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import av
from napari.utils.notifications import show_info, show_warning

from ..core.errors import AuralSAM2Error
from ..core.video import VideoSource, open_video, truncation_note

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
#: layer.metadata keys the widget reads back
VIDEO_PATH_KEY = "video_path"
AUDIO_SOURCE_KEY = "audio_source"
FPS_KEY = "fps"
UINT8_RANGE = (0, 255)
PLUGIN_NAME = "napari-auralsam2"

LayerData = tuple[Any, dict, str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader for one video file, or None when it is not a video the core can open."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if Path(path).suffix.lower() not in VIDEO_SUFFIXES:
        return None
    try:
        source = open_video(path)
    except AuralSAM2Error:
        return None
    claim_video_extensions()
    return lambda _path: [video_layer_data(source)]


def claim_video_extensions() -> list[str]:
    """Make this plugin napari's reader for the video suffixes the user has no preference for.

    Returns the patterns claimed now (and says so once); a preference the user set is never changed.
    """
    from napari.settings import get_settings

    plugins = get_settings().plugins
    current = dict(plugins.extension2reader)
    patterns = [f"*{s}" for suffix in VIDEO_SUFFIXES for s in (suffix, suffix.upper())]  # as in napari.yaml
    claimed = [pattern for pattern in patterns if pattern not in current]
    if claimed:
        plugins.extension2reader = {**current, **{pattern: PLUGIN_NAME for pattern in claimed}}
        show_info(f"AuralSAM2 now opens {', '.join(p for p in claimed if p.islower())} videos with their sound (File > Open, drag and "
                  "drop, `napari clip.mp4`); change this in File > Preferences > Plugins")
    return claimed


def has_audio_stream(path: str | Path) -> bool:
    """Whether the file has an audio stream (container probe, nothing decoded)."""
    with av.open(str(path)) as container:
        return bool(container.streams.audio)


def video_layer_data(source: VideoSource, name: str | None = None) -> LayerData:
    """(data, kwargs, "image") for a lazy video; notifies when there is no sound to follow."""
    path = source.path
    audio = str(path) if path is not None and has_audio_stream(path) else None
    if audio is None:
        show_warning(f"{path.name if path else 'this video'} has no audio track: audio-guided segmentation "
                     "needs sound, so pick an audio file in the AuralSAM2 widget (clicks still work)")
    if truncation_note(source):
        show_warning(truncation_note(source))
    metadata = {VIDEO_PATH_KEY: str(path) if path else None, AUDIO_SOURCE_KEY: audio, FPS_KEY: source.fps}
    kwargs = {"name": name or (path.stem if path else "video"), "rgb": True, "multiscale": False,
              "contrast_limits": UINT8_RANGE, "metadata": metadata}
    return source, kwargs, "image"
