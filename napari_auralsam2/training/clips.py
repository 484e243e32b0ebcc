"""Clips cut from annotated videos, and the ``--data`` specs the CLI accepts.

A long video is tiled into clips of ``clip_len`` frames taken every ``stride`` frames (stride 25
on a 25 fps video mimics AVSBench's one frame per second); offsets 0..stride-1 are interleaved so
every frame lands in exactly one clip. A trailing single frame joins the previous clip (the fuser
needs at least 2 frames). Only clips with at least one annotated frame are kept. Audio gives one
example per frame, centred on the frame's time (the session's default rule).

``--data`` may be:

* an AVSBench root (has ``avss_index/metadata.csv`` or ``metadata.csv``);
* a folder of exports: each video ``<stem>.mp4`` (or .mov/.mkv/.webm/.avi) next to its
  annotations ``<stem>.npz|.npy|.tif|.tiff|.xml|.json`` (and optionally ``<stem>.wav`` as audio);
* a manifest ``.csv`` with columns ``video,annotations`` and optional ``audio,split`` (train/val),
  paths relative to the manifest.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.audio import FrameExamples
from ..core.errors import AuralSAM2Error
from ..core.video import VideoSource, open_video
from .datasets import (REPORTED_PROBLEMS, AVSBenchDataset, ClipDataset, ClipSample, DataError, find_metadata,
                       read_csv_rows)
from .exports import ANNOTATION_SUFFIXES, read_annotations

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
DEFAULT_CLIP_LEN = 5
MIN_CLIP_LEN = 2


@dataclass(frozen=True)
class VideoEntry:
    """One annotated video of a data spec."""

    video: Path
    annotations: Path
    audio: Path | None = None
    split: str = ""


def tile_clips(stop: int, clip_len: int = DEFAULT_CLIP_LEN, stride: int = 1, start: int = 0) -> list[np.ndarray]:
    """Frame indices of the clips covering ``range(start, stop)`` (see the module docstring)."""
    if clip_len < MIN_CLIP_LEN or stride < 1:
        raise DataError(f"clips need clip_len >= {MIN_CLIP_LEN} and stride >= 1 (got {clip_len}, {stride})")
    clips: list[np.ndarray] = []
    for offset in range(start, min(start + stride, stop)):
        frames = np.arange(offset, stop, stride)
        chunks = [frames[i:i + clip_len] for i in range(0, len(frames), clip_len)]
        if len(chunks) > 1 and len(chunks[-1]) < MIN_CLIP_LEN:
            chunks[-2:] = [np.concatenate(chunks[-2:])]
        clips.extend(c for c in chunks if len(c) >= MIN_CLIP_LEN)
    return clips


class AnnotatedVideoClips(ClipDataset):
    """Clips of one annotated video (frames decoded lazily with PyAV)."""

    def __init__(self, entry: VideoEntry, objects: Sequence[str] | None = None, clip_len: int = DEFAULT_CLIP_LEN,
                 stride: int = 1, transform: Callable | None = None, hold_out: float = 0.0, held_out: bool = False
                 ) -> None:
        """``hold_out``: the fraction of annotated frames at the end of the video kept for
        validation; ``held_out`` selects them (True) or the frames before (False)."""
        self.entry = entry
        self.transform = transform
        video = self._open()
        try:
            self.num_frames, height, width = video.shape[:3]
            self.annotations = read_annotations(entry.annotations, objects, num_frames=self.num_frames)
        finally:
            video.close()
        if self.annotations.num_frames > self.num_frames:
            raise DataError(f"{entry.annotations.name} covers {self.annotations.num_frames} frames but "
                            f"{entry.video.name} has {self.num_frames}", "pair each annotation file with its video")
        if self.annotations.size != (height, width):
            raise DataError(f"{entry.annotations.name} masks are {self.annotations.size[1]}x"
                            f"{self.annotations.size[0]} but {entry.video.name} is {width}x{height}",
                            "export the annotations at the video's resolution")
        annotated = np.flatnonzero(self.annotations.annotated)
        if not len(annotated):
            raise DataError(f"{entry.annotations.name} marks no frame as annotated", "annotate at least one frame")
        start, stop = 0, self.annotations.num_frames
        if hold_out > 0:
            cut = int(annotated[min(len(annotated) - 1, int(len(annotated) * (1 - hold_out)))])
            start, stop = (cut, stop) if held_out else (0, cut)
        self.clips = [c for c in tile_clips(stop, clip_len, stride, start) if self.annotations.annotated[c].any()]
        self._video: VideoSource | None = None
        self._examples: FrameExamples | None = None

    def _open(self) -> VideoSource:
        return open_video(self.entry.video, audio=self.entry.audio)

    def __len__(self) -> int:
        return len(self.clips)

    def __getstate__(self) -> dict:  # data-loader workers reopen the video themselves
        return {**self.__dict__, "_video": None, "_examples": None}

    def load(self, index: int) -> ClipSample:
        if self._video is None:
            self._video = self._open()
            self._examples = FrameExamples(self._video.require_audio(), self._video.frame_times)
        frames_idx = self.clips[index]
        frames = [np.asarray(self._video.frame(int(i))) for i in frames_idx]
        labels = np.stack([self.annotations.mask(int(i)) for i in frames_idx]).astype(np.uint8)
        return ClipSample(f"{self.entry.video.stem}@{int(frames_idx[0])}", frames, labels,
                          self.annotations.annotated[frames_idx].copy(), self._examples[frames_idx],
                          frame_indices=frames_idx, video=self.entry.video.stem)

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
            self._video = None


class ConcatClips(ClipDataset):
    """Several clip datasets as one (sharing one transform)."""

    def __init__(self, parts: Sequence[ClipDataset], transform: Callable | None = None) -> None:
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.transform = transform

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def load(self, index: int) -> ClipSample:
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.parts[part].load(index - int(self.offsets[part]))


def discover_exports(folder: Path) -> list[VideoEntry]:
    """Pairs ``<stem>.<video>`` + ``<stem>.<annotations>`` (+ ``<stem>.wav``) in a folder."""
    entries = []
    for video in sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
        found = [video.with_suffix(s) for s in ANNOTATION_SUFFIXES if video.with_suffix(s).is_file()]
        if len(found) > 1:
            raise DataError(f"{video.name} has several annotation files: {', '.join(p.name for p in found)}",
                            "keep one per video")
        if found:
            wav = video.with_suffix(".wav")
            entries.append(VideoEntry(video, found[0], wav if wav.is_file() else None))
    if not entries:
        raise DataError(f"no <name>.<video> + <name>.<annotations> pairs in {folder}",
                        f"videos: {', '.join(VIDEO_SUFFIXES)}; annotations: {', '.join(ANNOTATION_SUFFIXES)}")
    return entries


def read_manifest(path: Path) -> list[VideoEntry]:
    """A CSV of ``video,annotations[,audio][,split]`` rows."""
    rows = read_csv_rows(path, "give a manifest CSV with video,annotations[,audio][,split] columns")
    if not rows or not {"video", "annotations"} <= set(rows[0]):
        raise DataError(f"{path.name} needs 'video' and 'annotations' columns", "see docs/training.md")
    for line, row in enumerate(rows, start=2):
        if not (row["video"] or "").strip() or not (row["annotations"] or "").strip():
            raise DataError(f"{path.name} line {line} lacks a video or annotations path", "fill in both")
    base = path.parent

    def resolve(value: str | None) -> Path | None:
        return (base / value).resolve() if value else None

    return [VideoEntry(resolve(r["video"]), resolve(r["annotations"]), resolve(r.get("audio")),
                       (r.get("split") or "").strip()) for r in rows]


@dataclass(frozen=True)
class DataOptions:
    """How to cut and select clips from a data spec."""

    subsets: Sequence[str] = ("v1s", "v1m", "v2")
    objects: Sequence[str] | None = None
    clip_len: int = DEFAULT_CLIP_LEN
    stride: int = 1
    val_fraction: float = 0.2


def open_split(data: str | Path, split: str, options: DataOptions = DataOptions(),
               transform: Callable | None = None) -> ClipDataset:
    """The ``split`` ("train", "val", "test" or, for exports, "all") of a data spec (module docstring).

    AVSBench splits come from its metadata ("val" is its test split, as in the official training).
    For exports, rows of a manifest may name their split; otherwise the last ``val_fraction`` of each
    video's annotated frames is held out as "val"/"test". "all" takes every annotated clip.
    """
    data = Path(data)
    if data.is_dir() and find_metadata(data) is not None:
        if split == "all":
            raise DataError("AVSBench has no 'all' split", "use --split train, val or test")
        return AVSBenchDataset(data, "test" if split == "val" else split, options.subsets, transform)
    if data.is_dir():
        entries = discover_exports(data)
    elif data.suffix.lower() == ".csv" and data.is_file():
        entries = read_manifest(data)
    else:
        raise DataError(f"cannot use {data} as data", "give an AVSBench root, a folder of exports or a manifest .csv")
    held_out = split in ("val", "test")
    parts: list[ClipDataset] = []
    problems: list[tuple[VideoEntry, AuralSAM2Error]] = []
    for entry in entries:  # every video is opened and checked here, in the main process
        try:
            if split == "all" or entry.split:
                if split == "all" or (entry.split in ("val", "test")) == held_out:
                    parts.append(AnnotatedVideoClips(entry, options.objects, options.clip_len, options.stride))
                continue
            parts.append(AnnotatedVideoClips(entry, options.objects, options.clip_len, options.stride,
                                             hold_out=options.val_fraction, held_out=held_out))
        except AuralSAM2Error as error:
            problems.append((entry, error))
    if len(problems) == 1:
        raise problems[0][1]
    if problems:
        raise DataError(f"{len(problems)} of the {len(entries)} videos of {data} cannot be used",
                        "fix or remove them (the first problems follow)",
                        details=[f"{entry.video.name}: {error}" for entry, error in problems[:REPORTED_PROBLEMS]])
    return ConcatClips(parts, transform)
