"""Opening media files: the checks and the one-line errors video and audio readers share."""
from __future__ import annotations

from pathlib import Path

import av

from .errors import AudioError, VideoError


def existing_file(path: str | Path, error: type[VideoError] | type[AudioError], kind: str) -> Path:
    """``path`` as a Path; `error` (one line) for a folder or a missing file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise error(f"{path} is a folder", f"give the {kind} file itself, not its folder")
    if not path.is_file():
        raise error(f"file not found: {path}", "check the path")
    return path


def open_container(path: Path, error: type[VideoError] | type[AudioError]) -> av.container.InputContainer:
    """The PyAV container of ``path``; `error` (one line) when it is not a media file."""
    try:
        return av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {path.name} as a media file ({exc.__class__.__name__})",
                    "the file is not a video/audio file or is truncated/corrupted") from exc
