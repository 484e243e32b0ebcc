"""The videos of a batch: files, folders, globs, or a CSV manifest with audio and prompts.

A manifest is a ``.csv`` file with a header row; ``video`` is required, the other columns are
optional and their cells may be empty::

    video,audio,points,boxes
    talks/a.mp4,,,
    talks/b.mp4,b_mic.wav,"320,200,0;100,80,0,0",
    talks/c.mp4,,,"10,10,90,120,5,2"

(a.mp4: audio only, object 1 is the sounding object; b.mp4: its own audio file, a positive and a
negative click on frame 0; c.mp4: a box for object 2 on frame 5.)

``points`` and ``boxes`` hold what `segment --point` / `--box` take, several separated by ``;``.
Relative paths are relative to the manifest's folder. A folder gives its video files (not its
subfolders); a glob (quote it so the shell leaves it alone; ``**`` recurses) gives the videos it
matches. Each video's output folder under ``--out`` is named after the video (its stem, plus a
short hash of its path when two videos share a stem).
"""
from __future__ import annotations

import argparse
import csv
import glob
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..cli_checks import UsageError
from ..cli_prompts import group_prompts, parse_box, parse_point
from ..core.errors import AuralSAM2Error
from ..core.session import Prompt

#: the containers a folder or glob contributes (core.video reads anything FFmpeg does)
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
MANIFEST_SUFFIX = ".csv"
MANIFEST_COLUMNS = ("video", "audio", "points", "boxes")
SEPARATOR = ";"
NAME_HASH_CHARS = 8


class BatchError(AuralSAM2Error):
    """The batch as a whole cannot run (bad sources, manifest or cluster): one actionable line."""


@dataclass
class Job:
    """One video of a batch: where it is, its output folder name, its audio and prompts."""

    video: Path
    name: str = ""
    audio: Path | None = None
    prompts: list[Prompt] = field(default_factory=list)
    origin: str = ""  # where it was listed (for error messages)


def _items(cell: str | None) -> list[str]:
    return [item.strip() for item in (cell or "").split(SEPARATOR) if item.strip()]


def _relative(base: Path, cell: str) -> Path:
    path = Path(cell).expanduser()
    return path if path.is_absolute() else base / path


def read_manifest(path: Path) -> list[Job]:
    """The jobs of a manifest; a bad header or row is one error naming the file and line."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise BatchError(f"cannot read manifest {path}: {err.strerror or err}") from None
    jobs = []
    with handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "video" not in columns:
            raise BatchError(f"{path.name}: the first row must name the columns, with 'video' among them",
                             f"optional columns: {', '.join(MANIFEST_COLUMNS[1:])}")
        unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
        if unknown:
            raise BatchError(f"{path.name}: unknown column(s) {', '.join(unknown)}",
                             f"use {', '.join(MANIFEST_COLUMNS)}")
        reader.fieldnames = columns
        for row in reader:
            where = f"{path.name} line {reader.line_num}"
            video = (row.get("video") or "").strip()
            if not video:
                raise BatchError(f"{where}: the video cell is empty")
            try:
                points = [parse_point(item) for item in _items(row.get("points"))]
                boxes = [parse_box(item) for item in _items(row.get("boxes"))]
                prompts = group_prompts(points, boxes)
            except (argparse.ArgumentTypeError, UsageError) as err:
                raise BatchError(f"{where}: {err}") from None
            audio = (row.get("audio") or "").strip()
            jobs.append(Job(_relative(path.parent, video), audio=_relative(path.parent, audio) if audio else None,
                            prompts=prompts, origin=where))
    if not jobs:
        raise BatchError(f"{path.name} lists no videos")
    return jobs


def _videos(paths) -> list[Path]:
    return sorted(p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def expand(source: str) -> list[Job]:
    """The jobs of one command-line source."""
    path = Path(source).expanduser()
    if path.suffix.lower() == MANIFEST_SUFFIX:
        return read_manifest(path)
    if path.is_dir():
        found = _videos(path.iterdir())
        if not found:
            raise BatchError(f"{source} holds no videos", f"looked for {', '.join(VIDEO_SUFFIXES)}")
    elif glob.has_magic(source):
        found = _videos(Path(p) for p in glob.glob(str(path), recursive=True))
        if not found:
            raise BatchError(f"no videos match {source!r}", f"looked for {', '.join(VIDEO_SUFFIXES)}")
    else:
        found = [path]  # a missing or broken file fails as that video, not as the batch
    return [Job(video, origin=source) for video in found]


def name_jobs(jobs: list[Job]) -> list[Job]:
    """Give each job its output folder name: the video's stem, made unique with a path hash."""
    stems: dict[str, int] = {}
    for job in jobs:
        stems[job.video.stem] = stems.get(job.video.stem, 0) + 1
    for job in jobs:
        job.name = job.video.stem
        if stems[job.name] > 1:
            digest = hashlib.sha1(str(job.video.resolve()).encode()).hexdigest()[:NAME_HASH_CHARS]
            job.name = f"{job.name}-{digest}"
    return jobs


def collect_jobs(sources: Sequence[str]) -> list[Job]:
    """All videos of the sources, in order, each once (listing one twice with other prompts is an error)."""
    jobs: dict[Path, Job] = {}
    for source in sources:
        for job in expand(source):
            key = job.video.resolve()
            earlier = jobs.setdefault(key, job)
            if earlier is not job and (earlier.audio, earlier.prompts) != (job.audio, job.prompts):
                raise BatchError(f"{job.video} is listed twice with different audio or prompts "
                                 f"({earlier.origin} and {job.origin})", "list each video once")
    return name_jobs(list(jobs.values()))
