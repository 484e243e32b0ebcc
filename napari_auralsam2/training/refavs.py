"""Ref-AVS evaluation as the official ``ref-avs.code`` does it: splits test_s, test_u and test_n.

Layout (``REFAVS/``, as the official loaders read it)::

    metadata.csv                      # columns include vid, uid, fid, exp, split
    media/<vid>/frames/<x>_<n>.jpg    # 10 frames per clip
    media/<vid>/audio.wav
    gt_mask/<vid>/fid_<fid>/<x>_<n>.png

A row is one referring expression ``exp`` for object ``fid`` of clip ``vid`` (test_n rows name
the clip in ``uid``: ``<vid>_<a>_<b>``). Audio: VGGish examples of the whole file (mono is
duplicated), the last one repeated up to 5. Each clip runs the official clip forward with the
middle frame as the conditioning frame and its expression as the text; masks are decoded with
``iou_select`` at the model's image size.

Metrics: test_s (seen) and test_u (unseen) score AVSBench IoU and F-score per batch of 4 clips
(the official validation batch: IoU averaged over the batch's 40 frames, F-score curves averaged
over its non-empty frames, then the maximum), averaged over batches. test_n (expressions that
refer to nothing sounding) scores S, the fraction of pixels predicted foreground over the whole
split (lower is better).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..core.audio import waveform_to_examples
from ..core.model.auralsam2 import AuralSAM2
from ..core.audio_file import load_audio
from .datasets import ClipDataset, ClipSample, DataError
from .evaluate import autocast_for, decode_logits
from .metrics import avs_clip_fscore, avs_frame_ious

METADATA = "metadata.csv"
MEDIA, MASKS, FRAMES, AUDIO = "media", "gt_mask", "frames", "audio.wav"
SPLITS = ("test_s", "test_u", "test_n")
NULL_SPLIT = "test_n"
BATCH_CLIPS = 4  # the official validation batch (clips per metric unit)
MIN_EXAMPLES = 5  # official: fewer audio examples are padded by repeating the last
SUMMARY_CSV = "refavs_summary.csv"
PER_CLIP_CSV = "refavs_per_clip.csv"


def is_refavs_root(path: str | Path) -> bool:
    """A Ref-AVS root: metadata.csv with an ``exp`` column next to media/."""
    path = Path(path)
    if not (path / METADATA).is_file() or not (path / MEDIA).is_dir():
        return False
    with (path / METADATA).open(newline="") as handle:
        return "exp" in (csv.DictReader(handle).fieldnames or [])


def _numbered(folder: Path, suffix: str) -> list[Path]:
    """Files ``<x>_<n><suffix>`` in the official loader's order."""
    try:
        # quirk: the official key is tuple(map(int, "<n>")), the digits of n, so 10 sorts before 2
        # (Ref-AVS clips number their frames 0..9, where this is the numeric order)
        return sorted(folder.glob(f"*{suffix}"), key=lambda p: tuple(map(int, p.stem.rsplit("_", 1)[-1])))
    except ValueError:
        raise DataError(f"cannot read frame numbers in {folder}", "name files <anything>_<n>" + suffix) from None


def clip_audio(path: Path) -> np.ndarray:
    """Official Ref-AVS audio: examples of the whole file [N, 2, 96, 64], at least 5."""
    track = load_audio(path)
    examples = waveform_to_examples(track.samples, track.sample_rate)
    if len(examples) == 0:
        raise DataError(f"{path} is shorter than one 0.96 s audio example", "check the Ref-AVS download")
    if len(examples) < MIN_EXAMPLES:
        examples = np.concatenate([examples, np.repeat(examples[-1:], MIN_EXAMPLES - len(examples), axis=0)])
    return examples


@dataclass(frozen=True)
class RefEntry:
    """One metadata row: a clip, one of its objects and the expression that refers to it."""

    vid: str
    fid: str
    text: str


class RefAVSDataset(ClipDataset):
    """The clips of one Ref-AVS split; ``text(i)`` is clip i's referring expression."""

    def __init__(self, root: str | Path, split: str, transform: Callable | None = None) -> None:
        if split not in SPLITS:
            raise DataError(f"unknown Ref-AVS split {split!r}", f"use one of {', '.join(SPLITS)}")
        self.root, self.split, self.transform = Path(root), split, transform
        with (self.root / METADATA).open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("split") == split]
        if not rows:
            raise DataError(f"no {split!r} rows in {self.root / METADATA}", "check --split and the metadata")
        # official: test_n rows name their clip in uid (<vid>_<a>_<b>), the others in vid
        self.entries = [RefEntry(r["uid"].rsplit("_", 2)[0] if split == NULL_SPLIT else r["vid"], r["fid"], r["exp"])
                        for r in rows]

    def __len__(self) -> int:
        return len(self.entries)

    def text(self, index: int) -> str:
        return self.entries[index].text

    def load(self, index: int) -> ClipSample:
        entry = self.entries[index]
        media = self.root / MEDIA / entry.vid
        frame_paths = _numbered(media / FRAMES, ".jpg")
        if not frame_paths:
            raise DataError(f"no frames in {media / FRAMES}", "check the Ref-AVS download")
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in frame_paths]
        height, width = frames[0].shape[:2]
        labels = np.zeros((len(frames), height, width), dtype=np.uint8)
        mask_dir = self.root / MASKS / entry.vid / f"fid_{entry.fid}"
        for t, path in enumerate(_numbered(mask_dir, ".png")[:len(frames)] if mask_dir.is_dir() else []):
            gray = Image.open(path).convert("L").resize((width, height), Image.Resampling.NEAREST)
            labels[t] = np.asarray(gray) > 0
        return ClipSample(f"{entry.vid}/fid_{entry.fid}", frames, labels, np.ones(len(frames), dtype=bool),
                          clip_audio(media / AUDIO), video=entry.vid)


@dataclass
class RefAVSReport:
    """One split's scores: mIoU and F-score (test_s, test_u) or S (test_n), and per-clip rows."""

    split: str
    clips: int = 0
    miou: float | None = None
    fscore: float | None = None
    s: float | None = None
    rows: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        values = {"split": self.split, "clips": self.clips}
        if self.s is not None:
            values["S"] = self.s
        else:
            values.update(miou=self.miou, fscore=self.fscore)
        return values

    def table(self) -> str:
        summary = self.summary()
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in summary.values()]
        widths = [max(len(k), len(c)) for k, c in zip(summary, cells)]
        return "\n".join("  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in (list(summary), cells))


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for row in rows for k in row)) or ["split"])
        writer.writeheader()
        writer.writerows(rows)


def write_reports(reports: list[RefAVSReport], folder: str | Path) -> tuple[Path, Path]:
    """``refavs_per_clip.csv`` (one row per clip) and ``refavs_summary.csv`` (one per split) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / PER_CLIP_CSV, folder / SUMMARY_CSV
    _write_csv(paths[0], [{"split": r.split, **row} for r in reports for row in r.rows])
    _write_csv(paths[1], [r.summary() for r in reports])
    return paths


def batch_scores(logits: list[torch.Tensor], labels: list[torch.Tensor]) -> tuple[float, float]:
    """IoU and F-score of one official batch: clips' logits / labels [T, S, S] pooled over the batch's frames."""
    logits_b, labels_b = torch.cat(logits).float(), torch.cat(labels).to(logits[0].device)
    return float(avs_frame_ious(logits_b > 0, labels_b).mean()), avs_clip_fscore(logits_b, labels_b)


@torch.no_grad()
def evaluate_refavs(model: AuralSAM2, dataset: RefAVSDataset, amp: bool = True, progress: bool = True,
                    limit: int | None = None, decode: str = "iou_select") -> RefAVSReport:
    """The official Ref-AVS validation of one split (a test-transformed `RefAVSDataset`)."""
    device = model.device
    model.eval()
    report = RefAVSReport(dataset.split)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    positive, pixels = 0, 0
    scores, batch = [], ([], [])
    for index in tqdm(range(count), desc=f"eval {dataset.split}", disable=not progress, leave=False):
        clip, text = dataset[index], dataset.text(index)
        with autocast_for(device, amp):
            out = model.segment_clip(clip.frames.to(device), clip.audio.to(device), text=text)
        logits = decode_logits(out, decode).float()
        report.clips += 1
        if dataset.split == NULL_SPLIT:
            positive += int((logits > 0).sum())  # official: sigmoid > 0.5
            pixels += logits.numel()
            report.rows.append({"clip": clip.name, "text": text, "foreground": float((logits > 0).float().mean())})
            continue
        batch[0].append(logits)
        batch[1].append(clip.labels)
        report.rows.append({"clip": clip.name, "text": text,
                            "miou": float(avs_frame_ious(logits > 0, clip.labels.to(logits.device)).mean())})
        if len(batch[0]) == BATCH_CLIPS or index == count - 1:
            scores.append(batch_scores(*batch))
            batch = ([], [])
    if dataset.split == NULL_SPLIT:
        report.s = positive / pixels if pixels else 0.0
    else:
        report.miou = float(np.mean([iou for iou, _ in scores])) if scores else 0.0
        report.fscore = float(np.mean([f for _, f in scores])) if scores else 0.0
    return report
