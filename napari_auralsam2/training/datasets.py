"""Training/evaluation clips: the sample type, the AVSBench reader and in-memory clip sets.

AVSBench layout (as the official `avs.code` reads it)::

    AVSBench/avss_index/metadata.csv   # columns include uid, split (train/val/test), label (v1s/v1m/v2)
    AVSBench/<label>/<uid>/frames/<n>.jpg | <anything>_<n>.jpg
    AVSBench/<label>/<uid>/labels_rgb/<n>.png   # any non-black pixel is the sounding region
    AVSBench/<label>/<uid>/audio.wav

A frame without a label file (v1s training clips label frame 0 only) is not supervised. Audio
gives one 0.96 s VGGish example per frame (the ``avsbench`` rule of `core.audio`). Every clip the
split uses is checked when the dataset is opened (in the main process, before any model loads):
its folder, frames and audio.wav.
"""
from __future__ import annotations

import abc
import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..core.audio import FrameExamples
from ..core.errors import AuralSAM2Error
from ..core.audio_file import load_audio

METADATA_PATHS = ("avss_index/metadata.csv", "metadata.csv")
SUBSETS = ("v1s", "v1m", "v2")
FRAME_DIR, LABEL_DIR, AUDIO_FILE = "frames", "labels_rgb", "audio.wav"
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
_NUMBER = re.compile(r"(\d+)$")
REPORTED_PROBLEMS = 3  # a dataset error lists this many bad clips


class DataError(AuralSAM2Error):
    """A dataset or annotation export cannot be read."""


@dataclass
class ClipSample:
    """A raw clip: what every reader returns before the transforms."""

    name: str
    frames: list[np.ndarray]  # T x uint8 [H, W, 3]
    labels: np.ndarray  # uint8 [T, H, W], 1 = sounding region
    supervised: np.ndarray  # bool [T]: frames whose labels count
    audio: np.ndarray  # float32 [T, 2, 96, 64] log-mel examples
    frame_indices: np.ndarray = field(default=None)  # int [T] positions in the source video
    video: str = ""  # the source video (groups clips of one long video in evaluation)

    def __post_init__(self) -> None:
        if self.frame_indices is None:
            self.frame_indices = np.arange(len(self.frames))
        self.video = self.video or self.name


def cond_frame(num_frames: int, training: bool) -> int:
    """The official conditioning frame: the middle one while training, frame 0 at evaluation."""
    return num_frames // 2 if training else 0


class ClipDataset(torch.utils.data.Dataset, abc.ABC):
    """A list of clips; ``transform`` (train or test) turns a ClipSample into tensors."""

    transform: Callable | None = None

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of clips."""

    @abc.abstractmethod
    def load(self, index: int) -> ClipSample:
        """The raw clip ``index``."""

    def __getitem__(self, index: int):
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample


class InMemoryClips(ClipDataset):
    """Clips already in memory (synthetic data, tests)."""

    def __init__(self, clips: Sequence[ClipSample], transform: Callable | None = None) -> None:
        self.clips = list(clips)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.clips)

    def load(self, index: int) -> ClipSample:
        return self.clips[index]


def frame_number(path: Path) -> int:
    """The number at the end of a frame/label file stem (``3.jpg``, ``abc_3.png``)."""
    match = _NUMBER.search(path.stem)
    if match is None:
        raise DataError(f"cannot read a frame number from {path.name}", "name frames <n>.jpg or <prefix>_<n>.jpg")
    return int(match.group(1))


def read_csv_rows(path: Path, hint: str) -> list[dict[str, str]]:
    """The rows of a UTF-8 CSV file; DataError (one line) when it is binary or not valid CSV."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return list(csv.DictReader(handle))
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not a text CSV file (byte {err.start} is not UTF-8)", hint) from None
    except csv.Error as err:
        raise DataError(f"{path} is not a valid CSV file: {err}", hint) from None


def find_metadata(root: Path) -> Path | None:
    """AVSBench's metadata.csv under ``root`` (official or flat location), if any."""
    for rel in METADATA_PATHS:
        if (root / rel).is_file():
            return root / rel
    return None


class AVSBenchDataset(ClipDataset):
    """AVSBench v1s / v1m / v2 clips of one split, in the official order (v1s, v1m, v2)."""

    def __init__(self, root: str | Path, split: str = "train", subsets: Sequence[str] = SUBSETS,
                 transform: Callable | None = None) -> None:
        self.root = Path(root)
        unknown = sorted(set(subsets) - set(SUBSETS))
        if unknown:
            raise DataError(f"unknown AVSBench subsets {unknown}", f"use some of {', '.join(SUBSETS)}")
        metadata = find_metadata(self.root)
        if metadata is None:
            raise DataError(f"no AVSBench metadata.csv under {self.root}",
                            "pass the AVSBench root (with avss_index/metadata.csv and v1s/, v1m/, v2/)")
        rows = read_csv_rows(metadata, "use the AVSBench (AVSS) metadata.csv")
        if rows and not {"uid", "split", "label"} <= set(rows[0]):
            raise DataError(f"{metadata} lacks the uid/split/label columns", "use the AVSBench (AVSS) metadata.csv")
        self.entries = [(subset, row["uid"]) for subset in SUBSETS if subset in subsets
                        for row in rows if row["split"] == split and row["label"] == subset]
        if not self.entries:
            raise DataError(f"no {split!r} clips of {', '.join(subsets)} in {metadata}",
                            "check --split and --subsets")
        problems = [problem for problem in map(self._problem, self.entries) if problem]
        if problems:
            raise DataError(f"{len(problems)} of the {len(self.entries)} {split!r} clips listed in {metadata.name} "
                            f"cannot be used", "check the AVSBench download (the first problems follow)",
                            details=problems[:REPORTED_PROBLEMS])
        self.transform = transform

    def _problem(self, entry: tuple[str, str]) -> str | None:
        """What keeps one clip from loading (folder, frames, audio), or None."""
        subset, uid = entry
        folder = self.root / subset / uid
        if not folder.is_dir():
            return f"{subset}/{uid}: the folder is missing"
        frames = [p for p in (folder / FRAME_DIR).glob("*") if p.suffix.lower() in FRAME_SUFFIXES]
        if not frames:
            return f"{subset}/{uid}: no frames in {FRAME_DIR}/"
        unnumbered = next((p.name for p in frames if _NUMBER.search(p.stem) is None), None)
        if unnumbered:
            return f"{subset}/{uid}: cannot read a frame number from {FRAME_DIR}/{unnumbered}"
        if not (folder / AUDIO_FILE).is_file():
            return f"{subset}/{uid}: no {AUDIO_FILE}"
        return None

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> ClipSample:
        subset, uid = self.entries[index]
        folder = self.root / subset / uid
        frame_paths = sorted((p for p in (folder / FRAME_DIR).glob("*") if p.suffix.lower() in FRAME_SUFFIXES),
                             key=frame_number)
        if not frame_paths:
            raise DataError(f"no frames in {folder / FRAME_DIR}", "check the AVSBench download")
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in frame_paths]
        height, width = frames[0].shape[:2]
        label_paths = {frame_number(p): p for p in (folder / LABEL_DIR).glob("*.png")}
        labels = np.zeros((len(frames), height, width), dtype=np.uint8)
        supervised = np.zeros(len(frames), dtype=bool)
        for t, path in enumerate(frame_paths):
            label_path = label_paths.get(frame_number(path))
            if label_path is not None:
                gray = Image.open(label_path).convert("L").resize((width, height), Image.Resampling.NEAREST)
                labels[t] = np.asarray(gray) > 0
                supervised[t] = True
        track = load_audio(folder / AUDIO_FILE)
        audio = FrameExamples(track, np.arange(len(frames), dtype=np.float64), rule="avsbench")[:]
        return ClipSample(f"{subset}/{uid}", frames, labels, supervised, audio)
