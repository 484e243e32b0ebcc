"""Evaluation of AuralSAM2 on clips, as the official validation does, plus J&F per video.

Each clip runs through the official clip forward with frame 0 as the conditioning frame; the
mask logits are decoded with ``iou_select`` (the highest predicted IoU of the 3 masks; the official
model-selection mode), ``first`` (mask 0) or ``iou_occ_select`` (iou_select, logits zeroed where
the object score is negative). Metrics use the supervised frames only, at the model's image size
against nearest-resized labels (`metrics` has the conventions). A split's mIoU and F-score are
means over clips (AVSBench); J, F and J&F are means over the frames of a video, then over videos.

Under several processes (`distributed`), a `DistributedSampler` (no shuffling) gives each process
its share of the clips; every process then gathers all the clips' scores (per clip: its IoU and
F-score, each frame's J and F) and drops the duplicates the sampler pads with, so the report is
the one process's report exactly, whatever the number of processes: a split's scores are reduced
from the clips' scores, never averaged from per-process averages (which would weigh processes,
not clips, and count the padding). The official code counts the padded duplicates.
"""
from __future__ import annotations

import csv
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from ..core.model.auralsam2 import AuralSAM2, ClipOutput
from . import distributed
from .datasets import ClipDataset, cond_frame
from .metrics import avs_clip_fscore, avs_frame_ious, boundary_fmeasure, region_similarity

DECODES = ("iou_select", "first", "iou_occ_select")
PER_VIDEO_CSV = "per_video.csv"
SUMMARY_CSV = "summary.csv"


def decode_logits(out: ClipOutput, mode: str = "iou_select") -> torch.Tensor:
    """One logit map per frame [T, S, S] from the 3 multimask outputs."""
    if mode == "first":
        return out.multimask_logits[:, 0]
    if mode not in DECODES:
        raise ValueError(f"decode must be one of {DECODES}, got {mode!r}")
    logits = out.masks
    if mode == "iou_occ_select":
        logits = torch.where(out.object_score_logits.view(-1, 1, 1) < 0, torch.zeros_like(logits), logits)
    return logits


def autocast_for(device: torch.device, amp: bool = True):
    """bf16 autocast on CUDA (the official setting), nothing elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class ClipScore:
    """AVSBench scores of one clip, and its per-frame J and F."""

    name: str
    video: str
    miou: float
    fscore: float
    frames: list[int] = field(default_factory=list)
    j: list[float] = field(default_factory=list)
    f: list[float] = field(default_factory=list)


@dataclass
class EvalReport:
    """Scores of every evaluated clip, aggregated per video and over the split."""

    clips: list[ClipScore]
    decode: str = "iou_select"

    def per_video(self) -> list[dict]:
        rows = []
        for video in dict.fromkeys(c.video for c in self.clips):
            clips = [c for c in self.clips if c.video == video]
            j = np.concatenate([c.j for c in clips])
            f = np.concatenate([c.f for c in clips])
            rows.append({"video": video, "clips": len(clips), "frames": len(j),
                         "miou": float(np.mean([c.miou for c in clips])),
                         "fscore": float(np.mean([c.fscore for c in clips])),
                         "J": float(j.mean()), "F": float(f.mean()), "JF": float((j.mean() + f.mean()) / 2)})
        return rows

    def summary(self) -> dict:
        videos = self.per_video()
        if not videos:
            return {"decode": self.decode, "clips": 0, "videos": 0}
        return {"decode": self.decode, "clips": len(self.clips), "videos": len(videos),
                "miou": float(np.mean([c.miou for c in self.clips])),
                "fscore": float(np.mean([c.fscore for c in self.clips])),
                "J": float(np.mean([v["J"] for v in videos])), "F": float(np.mean([v["F"] for v in videos])),
                "JF": float(np.mean([v["JF"] for v in videos]))}

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """per_video.csv and summary.csv in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / PER_VIDEO_CSV, folder / SUMMARY_CSV
        for path, rows in zip(paths, (self.per_video(), [self.summary()])):
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["video"])
                writer.writeheader()
                writer.writerows(rows)
        return paths

    def table(self) -> str:
        """The summary as an aligned text table."""
        summary = self.summary()
        names = [k for k in ("clips", "videos", "miou", "fscore", "J", "F", "JF") if k in summary]
        cells = [f"{summary[k]:.4f}" if isinstance(summary[k], float) else str(summary[k]) for k in names]
        widths = [max(len(n), len(c)) for n, c in zip(names, cells)]
        return "\n".join("  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in (names, cells))


def score_clip(logits: torch.Tensor, labels: torch.Tensor, supervised: torch.Tensor, name: str, video: str,
               frame_indices: np.ndarray) -> ClipScore | None:
    """Scores of one clip's decoded logits [T, S, S] against labels [T, S, S] (None if nothing is supervised)."""
    keep = supervised.to(logits.device)
    if not bool(keep.any()):
        return None
    logits, labels = logits[keep].float(), labels.to(logits.device)[keep]
    pred = logits > 0
    return ClipScore(name, video, float(avs_frame_ious(pred, labels).mean()), avs_clip_fscore(logits, labels),
                     [int(i) for i in np.asarray(frame_indices)[keep.cpu().numpy()]],
                     region_similarity(pred, labels).tolist(), boundary_fmeasure(pred, labels > 0).tolist())


@torch.no_grad()
def evaluate(model: AuralSAM2, dataset: ClipDataset, decode: str = "iou_select", amp: bool = True,
             progress: bool = True, limit: int | None = None,
             callback: Callable[[ClipScore], None] | None = None) -> EvalReport:
    """Run the official evaluation over ``dataset`` (a test-transformed clip dataset); under several
    processes each evaluates its share and all get the whole report."""
    device = model.device
    was_training = model.aural_fuser.training
    model.eval()
    processes = distributed.current()
    count = len(dataset) if limit is None else min(limit, len(dataset))
    indices = list(range(count))
    if processes.distributed:
        indices = list(DistributedSampler(indices, processes.world_size, processes.rank, shuffle=False))
    scores: dict[int, ClipScore] = {}
    try:
        for index in tqdm(indices, desc="eval", disable=not (progress and processes.main), leave=False):
            clip = dataset[index]
            with autocast_for(device, amp):
                out = model.segment_clip(clip.frames.to(device), clip.audio.to(device),
                                         cond_frame(len(clip.frames), training=False))
            score = score_clip(decode_logits(out, decode), clip.labels, clip.supervised, clip.name, clip.video,
                               clip.frame_indices)
            if score is not None:
                scores[index] = score
                if callback is not None:
                    callback(score)
    finally:
        model.aural_fuser.train(was_training)
    if processes.distributed:
        scores = {index: score for part in distributed.gather(scores) for index, score in part.items()}
    return EvalReport([scores[index] for index in sorted(scores)], decode)

