"""A video task's own source video, sound included, fetched from CVAT (``cvat annotate`` without ``--video``).

CVAT keeps the file a video task was created from byte-identical, audio included, and the task
backup (cvat-sdk ``task.download_backup``) carries it as ``data/<file>`` next to
``data/manifest.jsonl``, ``task.json`` and ``annotations.json``. The manifest's ``properties`` name
the file and give CVAT's frame count and size. The backup is streamed to disk with a progress bar
(its size said first, free space checked), only the manifest and the video are read from it, and
the video is kept in a per-task cache under ``AURALSAM2_HOME/cvat``.

The cache is reused while the task's data is unchanged: it is keyed by the task's data id and the
data's ``chunks_updated_date`` (the task's own ``updated_date`` moves with every annotation saved,
including the ones this command uploads, so it would force a download on every run).
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cvat_sdk.core.exceptions import BackgroundRequestException
from cvat_sdk.core.helpers import DeferredTqdmProgressReporter

from ..core.errors import AuralSAM2Error
from ..core.weights import weights_home
from .fingerprint import VIDEO_SUFFIXES

CACHE_FOLDER = "cvat"
ENTRY_NAME = "source.json"
DATA_DIR = "data"
MANIFEST = "manifest.jsonl"
VIDEO_CHUNKS = "video"
VIDEO_HINT = "pass the task's source video with --video"
#: room needed on disk for a backup of N bytes: the archive, then the video taken out of it
SPACE_FACTOR = 2
Log = Callable[[str], None]


@dataclass(frozen=True)
class SourceVideo:
    """The task's video in the local cache, and what CVAT's manifest says about it."""

    path: Path
    frames: int | None  # CVAT's frame count (None: the backup had no manifest)
    size: tuple[int, int] | None  # CVAT's (width, height)


def is_video_task(task) -> bool:
    """Whether the task's frames come from one video (CVAT's original chunks are video)."""
    return getattr(task.data_original_chunk_type, "value", task.data_original_chunk_type) == VIDEO_CHUNKS


def human_size(count: float) -> str:
    if count < 1024:
        return f"{count:.0f} B"
    for unit in ("KB", "MB"):
        count /= 1024
        if count < 1024:
            return f"{count:.1f} {unit}"
    return f"{count / 1024:.1f} GB"


def cache_folder(server: str, task_id: int, root: str | Path | None = None) -> Path:
    """Where a task's source video is kept: ``<root>/<server>/task-<id>`` (root: ``AURALSAM2_HOME/cvat``)."""
    base = Path(root) if root is not None else weights_home() / CACHE_FOLDER
    server_slug = re.sub(r"[^A-Za-z0-9.-]+", "_", re.sub(r"^\w+://", "", server)).strip("_") or "server"
    return base / server_slug / f"task-{task_id}"


class _DownloadBar(DeferredTqdmProgressReporter):
    """cvat-sdk's progress bar, which first says how big the download is and checks there is room."""

    def __init__(self, task_id: int, folder: Path, log: Log) -> None:
        super().__init__({"file": sys.stderr, "leave": False})
        self.task_id, self.folder, self.log = task_id, folder, log

    def start2(self, total: int, **kwargs) -> None:
        if total:
            free = shutil.disk_usage(self.folder).free
            if free < SPACE_FACTOR * total:
                raise AuralSAM2Error(f"the backup of task {self.task_id} is {human_size(total)}; {self.folder} has "
                                     f"{human_size(free)} free, {human_size(SPACE_FACTOR * total)} are needed",
                                     f"free some space, set AURALSAM2_HOME to a larger disk, or {VIDEO_HINT}")
            self.log(f"downloading the backup of task {self.task_id} ({human_size(total)}) to take its video")
        else:
            self.log(f"downloading the backup of task {self.task_id} (size not given) to take its video")
        super().start2(total, **kwargs)


def _cache_key(task, meta) -> dict:
    return {"task": int(task.id), "data": task.data, "chunks_updated_date": str(meta.chunks_updated_date)}


def _cached(folder: Path, key: dict) -> SourceVideo | None:
    try:
        entry = json.loads((folder / ENTRY_NAME).read_text())
        path = folder / entry["file"]
        if entry["key"] != key or path.stat().st_size != entry["bytes"]:
            return None
        size = tuple(entry["size"]) if entry["size"] else None
        return SourceVideo(path, entry["frames"], size)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _video_member(archive: zipfile.ZipFile, task_id: int) -> tuple[str, int | None, tuple[int, int] | None]:
    """The backup member holding the video, with CVAT's frame count and size from the manifest."""
    names = set(archive.namelist())
    manifest = f"{DATA_DIR}/{MANIFEST}"
    if manifest in names:
        lines = [json.loads(line) for line in archive.read(manifest).decode().splitlines() if line.strip()]
        kinds = [line["type"] for line in lines if "type" in line]
        properties = next((line["properties"] for line in lines if "properties" in line), None)
        if kinds != [VIDEO_CHUNKS] or properties is None:
            raise AuralSAM2Error(f"the backup of task {task_id} holds images, not a video", VIDEO_HINT)
        member = f"{DATA_DIR}/{properties['name']}"
        if member in names:
            width, height = properties["resolution"]
            return member, int(properties["length"]), (int(width), int(height))
    videos = [n for n in names if n.startswith(f"{DATA_DIR}/") and PurePosixPath(n).suffix.lower() in VIDEO_SUFFIXES]
    if len(videos) != 1:
        raise AuralSAM2Error(f"the backup of task {task_id} holds no copy of its video (tasks made from a server "
                             "share or cloud storage keep their files there)", VIDEO_HINT)
    return videos[0], None, None


def _take_video(backup: Path, folder: Path, task_id: int) -> SourceVideo:
    """Copy the video (only) out of a backup archive into ``folder`` (through the archive's folder)."""
    try:
        with zipfile.ZipFile(backup) as archive:
            member, frames, size = _video_member(archive, task_id)
            target = folder / PurePosixPath(member).name
            partial = backup.with_name(target.name)
            with archive.open(member) as source, open(partial, "wb") as out:
                shutil.copyfileobj(source, out, 2**20)  # the CRC is checked at the end of the member
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise AuralSAM2Error(f"the backup of task {task_id} is not a readable CVAT backup ({err})", VIDEO_HINT) from err
    partial.replace(target)
    return SourceVideo(target, frames, size)


def fetch_task_video(client, task, meta, cache_root: str | Path | None = None, log: Log = print) -> SourceVideo:
    """The task's source video with its sound, from the local cache or the task's backup."""
    if not is_video_task(task):
        raise AuralSAM2Error(f"task {task.id} was made from images: CVAT keeps no video (and no sound) for it",
                             VIDEO_HINT)
    folder = cache_folder(client.api_map.host, task.id, cache_root)
    key = _cache_key(task, meta)
    found = _cached(folder, key)
    if found is not None:
        log(f"using the video of task {task.id} cached at {found.path}")
        return found
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix="backup-") as scratch:
        backup = Path(scratch) / "backup.zip"
        try:
            task.download_backup(backup, pbar=_DownloadBar(task.id, folder, log))
        except BackgroundRequestException as err:
            raise AuralSAM2Error(f"CVAT could not back up task {task.id} ({' '.join(str(err).split())})",
                                 VIDEO_HINT) from err
        video = _take_video(backup, folder, task.id)
    for old in folder.iterdir():  # an earlier version of the task's data
        if old.is_file() and old not in (video.path, folder / ENTRY_NAME):
            old.unlink()
    entry = {"key": key, "file": video.path.name, "bytes": video.path.stat().st_size, "frames": video.frames,
             "size": list(video.size) if video.size else None}
    (folder / ENTRY_NAME).write_text(json.dumps(entry))
    log(f"took {video.path.name} ({human_size(entry['bytes'])}) from the backup of task {task.id}")
    return video


__all__ = ["SourceVideo", "fetch_task_video", "is_video_task", "cache_folder", "human_size"]
