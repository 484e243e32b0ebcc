"""Which source video, and which frame of it, is this image? (the audio side channel of CVAT hosts)

CVAT sends a function only pixels: no task, job or frame number, and never audio. The detector is
deployed next to a read-only volume holding the tasks' source videos; it fingerprints every frame
of every video once (8x8 RGB block means: tiny, resolution-independent, and stable under CVAT's
PNG re-encoding of video frames and under JPEG compression of image tasks), caches the index on
disk and in memory, and looks incoming images up in it.

A lookup never guesses: an image farther than ``tolerance`` (mean absolute difference in grey
levels) from every frame raises :class:`FrameNotFoundError`, and one that fits frames of several
videos equally well raises :class:`AmbiguousFrameError`. Within one video, near-identical frames
(a static shot) are resolved by continuity: the frames just after the previous match win.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import AuralSAM2Error
from ..core.video import FINGERPRINT_DIMS as DIMS, fingerprint, open_video

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
#: mean |difference| (grey levels) under which an image counts as a frame; JPEG q75 stays under ~3
DEFAULT_TOLERANCE = 8.0
#: candidates within this much of the best are indistinguishable
DEFAULT_MARGIN = 1.5
#: how far ahead of the previous match continuity looks (CVAT tasks with a frame step skip frames)
MAX_SKIP = 30
CACHE_VERSION = 1


class FrameNotFoundError(AuralSAM2Error):
    """The image matches no frame of the indexed videos."""


class AmbiguousFrameError(AuralSAM2Error):
    """The image matches frames of several videos equally well."""


@dataclass(frozen=True)
class Match:
    """An image located in a video: ``frame`` indexes the video's decoded frames."""

    path: Path
    frame: int
    distance: float


@dataclass
class VideoPrints:
    path: Path
    signature: str
    prints: np.ndarray  # uint8 [T, DIMS]
    size: tuple[int, int]  # (width, height)


def video_fingerprints(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Fingerprints of every frame of a video (decoded in order, once)."""
    with open_video(path) as video:
        prints = np.stack([fingerprint(frame) for frame in video]) if len(video) else np.empty((0, DIMS), np.uint8)
        return prints, (video.width, video.height)


def _signature(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha1(f"{CACHE_VERSION}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()


class FrameIndex:
    """Fingerprints of the videos under some roots (files or folders), refreshed on demand."""

    def __init__(self, roots: Iterable[str | Path], cache_dir: str | Path | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, margin: float = DEFAULT_MARGIN) -> None:
        self.roots = [Path(root) for root in roots]
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.tolerance, self.margin = float(tolerance), float(margin)
        self.videos: dict[Path, VideoPrints] = {}
        self._lock = threading.Lock()

    def _files(self) -> list[Path]:
        found = []
        for root in self.roots:
            if root.is_file():
                found.append(root)
            elif root.is_dir():
                found += [p for p in sorted(root.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()]
            else:
                raise FrameNotFoundError(f"the video source {root} does not exist",
                                         "mount the task's source videos there (see docs/cvat.md)")
        return found

    def refresh(self) -> list[Path]:
        """Index new or changed videos and forget removed ones; returns the videos (re)indexed."""
        with self._lock:
            files = self._files()
            for gone in set(self.videos) - set(files):
                del self.videos[gone]
            indexed = []
            for path in files:
                signature = _signature(path)
                known = self.videos.get(path)
                if known is None or known.signature != signature:
                    self.videos[path] = self._load(path, signature)
                    indexed.append(path)
            return indexed

    def _load(self, path: Path, signature: str) -> VideoPrints:
        cached = self.cache_dir / f"{signature}.npz" if self.cache_dir else None
        if cached is not None and cached.is_file():
            try:
                with np.load(cached) as data:
                    return VideoPrints(path, signature, data["prints"], tuple(int(v) for v in data["size"]))
            except (OSError, KeyError, ValueError):
                pass  # unreadable cache entry: rebuild it below
        prints, size = video_fingerprints(path)
        if cached is not None:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                partial = cached.with_suffix(f".{os.getpid()}.part.npz")
                np.savez(partial, prints=prints, size=np.asarray(size))
                partial.replace(cached)
            except OSError:
                pass  # a read-only cache only costs re-indexing on restart
        return VideoPrints(path, signature, prints, size)

    def match(self, image: np.ndarray | Image.Image, after: tuple[Path, int] | None = None) -> Match:
        """Locate an image; ``after`` = the previous match (continuity for static or stepped frames)."""
        probe = fingerprint(image).astype(np.float32)
        with self._lock:
            videos = list(self.videos.values())
        if not videos:
            raise FrameNotFoundError("no source video is indexed", "put the task's source videos in the mounted volume")
        distances = {v.path: np.abs(v.prints.astype(np.float32) - probe).mean(axis=1) for v in videos if len(v.prints)}
        best_path, best = min(((p, float(d.min())) for p, d in distances.items()), key=lambda item: item[1],
                              default=(None, np.inf))
        if best > self.tolerance:
            where = f" (closest: {best_path.name}, difference {best:.1f})" if best_path is not None else ""
            raise FrameNotFoundError(f"this image matches no frame of the {len(videos)} indexed video(s){where}",
                                     "check that the task's source video is in the mounted volume, unedited")
        limit = min(best + self.margin, self.tolerance)
        if after is not None and after[0] in distances:
            ahead = distances[after[0]][after[1] + 1:after[1] + 1 + MAX_SKIP]
            hits = np.flatnonzero(ahead <= limit)
            if hits.size:
                frame = after[1] + 1 + int(hits[0])
                return Match(after[0], frame, float(ahead[hits[0]]))
        close = [p for p, d in distances.items() if float(d.min()) <= limit]
        if len(close) > 1:
            names = ", ".join(sorted(p.name for p in close))
            raise AmbiguousFrameError(f"this image fits frames of several videos equally well ({names})",
                                      "mount only the videos of the task being annotated")
        path = close[0]
        frame = int(np.flatnonzero(distances[path] <= limit)[0])  # a static shot: its first frame
        return Match(path, frame, float(distances[path][frame]))


__all__ = ["fingerprint", "FrameIndex", "Match", "FrameNotFoundError", "AmbiguousFrameError", "video_fingerprints"]
