"""Which source video, and which frame of it, is this image? (the audio side channel of CVAT hosts)

CVAT sends a function only pixels: no task, job or frame number, and never audio. The detector
reads CVAT's own data volume (read-only), where a video task made from an uploaded file keeps the
upload byte-identical, sound included (``data/<data id>/raw/<file>``), plus any folder of source
videos. It fingerprints every frame of every video there once (8x8 RGB block means: tiny,
resolution-independent, and stable under CVAT's PNG re-encoding of video frames and under JPEG
compression of image tasks), caches the prints on disk keyed by file identity (device, inode,
size, mtime: a file seen through two paths is one file, a renamed one keeps its prints) and looks
incoming images up in memory.

One bad file never breaks the index: a file that cannot be read (still being copied, corrupt, no
permission) is skipped, logged once, and retried when it changes or after ``retry_s``.

A lookup never guesses: an image farther than ``tolerance`` (mean absolute difference in grey
levels) from every frame raises :class:`FrameNotFoundError`, and one that fits frames of several
different videos equally well raises :class:`AmbiguousFrameError` (byte-identical copies, e.g. two
tasks made from one upload, count as one video). Within one video, near-identical frames (a static
shot) are resolved by continuity: the frames just after the previous match win.
"""
from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import AuralSAM2Error, VideoError
from ..core.video import FINGERPRINT_DIMS as DIMS, fingerprint, open_video

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
#: mean |difference| (grey levels) under which an image counts as a frame; JPEG q75 stays under ~3
DEFAULT_TOLERANCE = 8.0
#: candidates within this much of the best are indistinguishable
DEFAULT_MARGIN = 1.5
#: how far ahead of the previous match continuity looks (CVAT tasks with a frame step skip frames)
MAX_SKIP = 30
#: an unreadable file is tried again after this long even if it did not change
DEFAULT_RETRY_S = 60.0
#: where CVAT keeps a task's uploaded media, relative to its data directory (``/home/django/data``)
CVAT_UPLOADS = ("data", "*", "raw")
CACHE_VERSION = 2

Log = Callable[[str], None]
_logger = logging.getLogger(__name__)


class FrameNotFoundError(AuralSAM2Error):
    """The image matches no frame of the indexed videos."""


class AmbiguousFrameError(AuralSAM2Error):
    """The image matches frames of several videos equally well."""


@dataclass(frozen=True)
class Match:
    """An image located in a video: ``frame`` indexes the video's decoded frames.

    ``version`` changes when the file does (a video still being copied grows).
    """

    path: Path
    frame: int
    distance: float
    version: str = ""


@dataclass
class VideoPrints:
    path: Path
    signature: str
    prints: np.ndarray  # uint8 [T, DIMS]
    size: tuple[int, int]  # (width, height)
    content: str = ""  # equal for byte-identical copies (file size + every frame's print)


def video_fingerprints(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Fingerprints of every frame of a video (decoded in order, once)."""
    with open_video(path) as video:
        prints = np.stack([fingerprint(frame) for frame in video]) if len(video) else np.empty((0, DIMS), np.uint8)
        return prints, (video.width, video.height)


def _signature(info: os.stat_result) -> str:
    """The cache key of a file's current content: its identity, size and modification time."""
    key = f"{CACHE_VERSION}|{info.st_dev}|{info.st_ino}|{info.st_size}|{info.st_mtime_ns}"
    return hashlib.sha1(key.encode()).hexdigest()


def _content(prints: np.ndarray, file_size: int) -> str:
    return hashlib.sha1(prints.tobytes() + str(file_size).encode()).hexdigest()


def _videos_under(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES]


class FrameIndex:
    """Fingerprints of the videos under some roots, refreshed on demand (thread-safe).

    ``roots`` are video files or folders (searched recursively); ``cvat_data`` are CVAT data
    directories, of which only the task uploads (``data/<id>/raw/``) are read: CVAT's chunk and
    cache folders hold re-encoded copies of the same frames.
    """

    def __init__(self, roots: Iterable[str | Path] = (), cache_dir: str | Path | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, margin: float = DEFAULT_MARGIN,
                 cvat_data: Iterable[str | Path] = (), retry_s: float = DEFAULT_RETRY_S,
                 log: Log | None = None) -> None:
        self.roots = [Path(root) for root in roots]
        self.cvat_data = [Path(root) for root in cvat_data]
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.tolerance, self.margin = float(tolerance), float(margin)
        self.retry_s = float(retry_s)
        self.log = log or _logger.warning
        self.videos: dict[Path, VideoPrints] = {}
        #: files that could not be read: path -> (signature, when, reason)
        self.failed: dict[Path, tuple[str, float, str]] = {}
        #: files the running refresh has still to read
        self.pending: list[Path] = []
        self._missing: set[Path] = set()
        self._lock = threading.Lock()  # guards videos/failed; never held while decoding
        self._refreshing = threading.Lock()  # one refresh at a time

    # -- listing -----------------------------------------------------------------------------------
    def _files(self, strict: bool) -> list[Path]:
        found = []
        for root, uploads in [(r, False) for r in self.roots] + [(r, True) for r in self.cvat_data]:
            if root.is_file() and not uploads:
                found.append(root)
            elif root.is_dir():
                self._missing.discard(root)
                if uploads:
                    for folder in sorted(root.glob(os.path.join(*CVAT_UPLOADS))):
                        found += _videos_under(folder)
                else:
                    found += _videos_under(root)
            elif strict:
                raise FrameNotFoundError(f"the video source {root} does not exist", "check the path")
            elif root not in self._missing:
                self._missing.add(root)
                self.log(f"auralsam2: the video source {root} does not exist (yet); "
                         "mount it (see docs/cvat.md) — it is looked for again on every refresh")
        return found

    def _current(self, strict: bool) -> dict[Path, os.stat_result]:
        """Every video file once (the first path of each device/inode), with its stat."""
        seen: dict[tuple[int, int], tuple[Path, os.stat_result]] = {}
        for path in self._files(strict):
            try:
                info = path.stat()
            except OSError:
                continue  # vanished (or a dangling link) since it was listed
            if stat.S_ISREG(info.st_mode):
                seen.setdefault((info.st_dev, info.st_ino), (path, info))
        return dict(seen.values())

    # -- indexing ----------------------------------------------------------------------------------
    def refresh(self, strict: bool = False) -> list[Path]:
        """Index new or changed videos and forget removed ones; returns the videos (re)indexed.

        Each file is read at most once per call. An unreadable file is skipped and logged once
        (``strict``, for videos the user named: a missing or unreadable file raises instead).
        """
        with self._refreshing:
            current = self._current(strict)
            with self._lock:
                for gone in set(self.videos) - set(current):
                    del self.videos[gone]
                for gone in set(self.failed) - set(current):
                    del self.failed[gone]
                todo = [(path, _signature(info), info) for path, info in current.items()
                        if path not in self.videos or self.videos[path].signature != _signature(info)]
            # newest first: a file just uploaded is the likeliest to be asked for next
            todo = [item for item in sorted(todo, key=lambda item: item[2].st_mtime_ns, reverse=True)
                    if strict or not self._waiting(*item[:2])]
            with self._lock:
                self.pending = [path for path, _, _ in todo]
            indexed = []
            for path, signature, info in todo:
                try:
                    prints = self._load(path, signature, info.st_size)
                except AuralSAM2Error as err:
                    if strict:
                        raise
                    self._failure(path, signature, err)
                    continue
                except Exception as err:  # one unreadable file must not stop the others
                    if strict:
                        raise VideoError(f"cannot read {path}: {type(err).__name__}: {err}") from err
                    self._failure(path, signature, err)
                    continue
                finally:
                    with self._lock:
                        self.pending.remove(path)
                with self._lock:
                    self.videos[path] = prints
                    self.failed.pop(path, None)
                indexed.append(path)
            return indexed

    def _waiting(self, path: Path, signature: str) -> bool:
        """Whether a file that failed before should be left alone for now (unchanged, retried later)."""
        with self._lock:
            failure = self.failed.get(path)
            if failure is not None and failure[0] == signature and time.monotonic() - failure[1] < self.retry_s:
                return True
        return False

    def _failure(self, path: Path, signature: str, err: Exception) -> None:
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        with self._lock:
            known = self.failed.get(path)
            self.failed[path] = (signature, time.monotonic(), reason)
            self.videos.pop(path, None)  # a changed file that no longer reads: its old prints are stale
        if known is None or known[2] != reason or known[0] != signature:
            self.log(f"auralsam2: skipping {path}: cannot read it ({reason}); "
                     f"tried again when it changes or in {self.retry_s:g} s")

    def _load(self, path: Path, signature: str, file_size: int) -> VideoPrints:
        cached = self.cache_dir / f"{signature}.npz" if self.cache_dir else None
        if cached is not None and cached.is_file():
            try:
                with np.load(cached) as data:
                    prints = data["prints"]
                    return VideoPrints(path, signature, prints, tuple(int(v) for v in data["size"]),
                                       _content(prints, file_size))
            except (OSError, KeyError, ValueError):
                pass  # unreadable cache entry: rebuild it below
        prints, size = video_fingerprints(path)
        if cached is not None:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                partial = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part.npz")
                np.savez(partial, prints=prints, size=np.asarray(size))
                partial.replace(cached)
            except OSError:
                pass  # a read-only cache only costs re-indexing on restart
        return VideoPrints(path, signature, prints, size, _content(prints, file_size))

    # -- lookup ------------------------------------------------------------------------------------
    def match(self, image: np.ndarray | Image.Image, after: tuple[Path, int] | None = None) -> Match:
        """Locate an image; ``after`` = the previous match (continuity for static or stepped frames)."""
        probe = fingerprint(image).astype(np.float32)
        with self._lock:
            videos = sorted(self.videos.values(), key=lambda v: str(v.path))
        if not videos:
            raise FrameNotFoundError("no source video is indexed",
                                     "mount CVAT's data volume or the task's source videos (see docs/cvat.md)")
        by_path = {v.path: v for v in videos}
        distances = {v.path: np.abs(v.prints.astype(np.float32) - probe).mean(axis=1) for v in videos if len(v.prints)}
        best_path, best = min(((p, float(d.min())) for p, d in distances.items()), key=lambda item: item[1],
                              default=(None, np.inf))
        if best > self.tolerance:
            where = f" (closest: {best_path.name}, difference {best:.1f})" if best_path is not None else ""
            raise FrameNotFoundError(f"this image matches no frame of the {len(videos)} indexed video(s){where}",
                                     "check that the task's video was uploaded to CVAT (or is in the mounted "
                                     "videos folder), unedited")
        limit = min(best + self.margin, self.tolerance)
        if after is not None and after[0] in distances:
            ahead = distances[after[0]][after[1] + 1:after[1] + 1 + MAX_SKIP]
            hits = np.flatnonzero(ahead <= limit)
            if hits.size:
                frame = after[1] + 1 + int(hits[0])
                return Match(after[0], frame, float(ahead[hits[0]]), by_path[after[0]].signature)
        close = [p for p, d in distances.items() if float(d.min()) <= limit]
        if len({by_path[p].content for p in close}) > 1:
            names = ", ".join(sorted(p.name for p in close))
            raise AmbiguousFrameError(f"this image fits frames of several videos equally well ({names})",
                                      "mount only the videos of the task being annotated")
        path = close[0]  # copies of one file: any of them (the first path, for stable answers)
        frame = int(np.flatnonzero(distances[path] <= limit)[0])  # a static shot: its first frame
        return Match(path, frame, float(distances[path][frame]), by_path[path].signature)


class BackgroundRefresh:
    """Keeps a :class:`FrameIndex` current from a daemon thread, so that indexing a large new video
    never holds up requests (or a function's start): a pass at once, then every ``interval_s``,
    and one on demand (:meth:`catch_up`) when an image is not found.
    """

    def __init__(self, index: FrameIndex, interval_s: float) -> None:
        self.index, self.interval_s = index, float(interval_s)
        self._changed = threading.Condition()
        self._requested, self._done, self._closed = 1, 0, False
        self._thread = threading.Thread(target=self._run, name="auralsam2-index", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._requested <= self._done:
                    self._changed.wait(timeout=self.interval_s)
                    self._requested = max(self._requested, self._done + 1)
                if self._closed:
                    return
                target = self._requested
            try:
                self.index.refresh()
            except Exception as err:  # e.g. a folder that cannot be listed: the next pass tries again
                self.index.log(f"auralsam2: indexing pass failed ({type(err).__name__}: {err})")
            with self._changed:
                self._done = target
                self._changed.notify_all()

    def catch_up(self, wait_s: float) -> bool:
        """Ask for a pass that starts now and wait up to ``wait_s`` for it; False if it is still running."""
        with self._changed:
            self._requested += 1
            target = self._requested
            self._changed.notify_all()
            return self._changed.wait_for(lambda: self._done >= target or self._closed, timeout=wait_s)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()


__all__ = ["fingerprint", "FrameIndex", "BackgroundRefresh", "Match", "FrameNotFoundError", "AmbiguousFrameError",
           "video_fingerprints", "CVAT_UPLOADS"]
