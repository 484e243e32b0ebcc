"""The audio-guided contrastive loss of AuralSAM2 (InfoNCE between fused pixels and audio).

For every supervised frame and each of the fuser's 3 pyramid levels, the 128-d L2-normalised
visual map (stride 16) and audio embedding come from the projection heads. The ground truth is
resized (nearest) to the map and the decoder's best low-res logits (bilinear) likewise. Per class
present (background 0, sounding 1), up to ``sample_limits`` *hard* pixels (misclassified by the
current prediction) and ``sample_limits`` *easy* ones become anchors, topping one kind up with the
other. Each (frame, level) adds one audio entry, labelled 1 when the frame's ground truth has a
sounding region, else 0. For an anchor, the positives are the audio entries with its label and
the negatives every entry (pixel or audio) with the other label; the loss averages
``-log(e^pos / (e^pos + sum e^neg))`` over positives, then over anchors (T = 0.1). So audio is
pulled towards the sounding pixels and pushed away from the rest.

``mode="official"`` reproduces the released training code, bugs included, for exact retraining:
labels of the sampled pixels are read at their index *within the hard/easy subset* instead of in
the image; "hard" compares float logits with 0/1 labels (so nearly every pixel is hard); the
top-up adds ``2*limit - other`` to the larger kind (up to 3x the limit per class); a frame whose
ground truth is all foreground gives an audio label of 0; and an oversized anchor set is cut to a
random *length* ``randperm(n)[total_limits]`` (we keep at least one anchor where the official code
could keep none and return NaN).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

TEMPERATURE = 0.10
SAMPLE_LIMITS = 128  # AVS (Ref-AVS used 64)
TOTAL_LIMITS = 15240
MODES = ("paper", "official")
BACKGROUND, SOUNDING = 0, 1


@dataclass(frozen=True)
class ContrastiveConfig:
    """Hyper-parameters of the official `contrastive_learning` config section."""

    temperature: float = TEMPERATURE
    sample_limits: int = SAMPLE_LIMITS
    total_limits: int = TOTAL_LIMITS
    mode: str = "paper"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"contrastive mode must be one of {MODES}, got {self.mode!r}")


def info_nce(anchors: torch.Tensor, anchor_labels: torch.Tensor, audio: torch.Tensor, audio_labels: torch.Tensor,
             temperature: float = TEMPERATURE) -> torch.Tensor:
    """InfoNCE with audio-only positives.

    anchors [N, C] and audio [M, C] are L2-normalised; labels are [N] / [M]. Positives of an
    anchor: audio entries with its label. Negatives: all entries (anchors and audio) with another
    label. Anchors without a positive add 0 but still count in the mean (as officially).
    """
    contrast = torch.cat([anchors, audio])
    contrast_labels = torch.cat([anchor_labels, audio_labels])
    logits = anchors @ contrast.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    same = anchor_labels[:, None] == contrast_labels[None, :]
    is_audio = torch.zeros(len(contrast), dtype=torch.bool, device=anchors.device)
    is_audio[len(anchors):] = True
    positive = (same & is_audio[None, :]).float()
    negative_sum = (logits.exp() * (~same).float()).sum(dim=1, keepdim=True)
    log_prob = logits - torch.log(logits.exp() + negative_sum)
    count = positive.sum(dim=1).clamp(min=1.0)
    return -((positive * log_prob).sum(dim=1) / count).mean()


def _subset(count: int, wanted: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randperm(count, generator=generator)[:wanted].to(device)


def _allocation(n_hard: int, n_easy: int, limit: int, official: bool) -> tuple[int, int]:
    """How many hard and easy pixels to draw (before clipping to what exists)."""
    hard, easy = min(limit, n_hard), min(limit, n_easy)
    if hard + easy < 2 * limit:
        if official:  # quirk: the larger kind grows by 2*limit - other, not to 2*limit in total
            if hard > easy:
                hard += 2 * limit - easy
            else:
                easy += 2 * limit - hard
        elif hard > easy:
            hard = min(n_hard, 2 * limit - easy)
        else:
            easy = min(n_easy, 2 * limit - hard)
    return hard, easy


def sample_anchors(features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, limit: int,
                   official: bool = False, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchors of one map: features [P, C], labels [P] in {0, 1}, logits [P] -> ([n, C], [n])."""
    if official:
        correct = labels == logits  # quirk: float logits against 0/1 labels
    else:
        correct = (logits > 0).to(labels.dtype) == labels
    chosen_feats, chosen_labels = [], []
    for cls in torch.unique(labels):
        in_class = labels == cls
        hard = torch.nonzero(in_class & ~correct).flatten()
        easy = torch.nonzero(in_class & correct).flatten()
        n_hard, n_easy = _allocation(len(hard), len(easy), limit, official)
        for pool, wanted in ((hard, n_hard), (easy, n_easy)):
            picks = _subset(len(pool), wanted, generator, features.device)
            chosen_feats.append(features[pool[picks]])
            # quirk: the official code indexes the image's labels with positions in the subset
            chosen_labels.append(labels[picks] if official else labels[pool[picks]])
    return torch.cat(chosen_feats), torch.cat(chosen_labels)


def audio_label(labels: torch.Tensor, official: bool = False) -> int:
    """1 when the frame has a sounding region (official: only when it has both classes)."""
    if official:
        return SOUNDING if len(torch.unique(labels)) > 1 else BACKGROUND
    return SOUNDING if bool((labels > 0).any()) else BACKGROUND


def truncate_anchors(anchors: torch.Tensor, labels: torch.Tensor, total: int, official: bool = False,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``total`` anchors: a random subset (official: a prefix of random length)."""
    count = len(anchors)
    if count <= total:
        return anchors, labels
    if official:  # quirk: a random-length prefix
        cut = max(1, int(torch.randperm(count, generator=generator)[total]))
        return anchors[:cut], labels[:cut]
    keep = _subset(count, total, generator, anchors.device)
    return anchors[keep], labels[keep]


def contrastive_loss(visual: Sequence[torch.Tensor], audio: Sequence[torch.Tensor], targets: torch.Tensor,
                     low_res_logits: torch.Tensor, config: ContrastiveConfig = ContrastiveConfig(),
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The loss of one clip.

    visual: per level [T, C, h, w]; audio: per level [T, C] or [T, C, 1]; targets [T, H, W] in {0, 1};
    low_res_logits [T, h', w'] (the decoder's best low-res mask per frame).
    """
    official = config.mode == "official"
    grid = visual[0].shape[-2:]
    masks = F.interpolate(targets[:, None].float(), size=grid, mode="nearest").flatten(1)
    preds = F.interpolate(low_res_logits[:, None].float(), size=grid, mode="bilinear",
                          align_corners=False).flatten(1).detach()
    anchors, anchor_labels, entries, entry_labels = [], [], [], []
    for t in range(masks.shape[0]):
        for vis, aud in zip(visual, audio):
            feats, labels = sample_anchors(vis[t].flatten(1).T, masks[t], preds[t], config.sample_limits,
                                           official, generator)
            anchors.append(feats)
            anchor_labels.append(labels)
            entries.append(aud[t].reshape(1, -1))
            entry_labels.append(torch.full((1,), audio_label(masks[t], official), dtype=labels.dtype,
                                           device=labels.device))
    anchor_tensor, anchor_label_tensor = truncate_anchors(torch.cat(anchors).float(), torch.cat(anchor_labels),
                                                   config.total_limits, official, generator)
    return info_nce(anchor_tensor, anchor_label_tensor, torch.cat(entries).float(), torch.cat(entry_labels),
                    config.temperature)
