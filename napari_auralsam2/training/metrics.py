"""Evaluation metrics: the AVSBench conventions of the official code, and J&F for long videos.

AVSBench (``utils/foreground_iou.py``, ``utils/foreground_fscore.py``), computed at the model's
image size against nearest-resized labels:

* IoU per frame = |P & G| / (|P | G| + 1e-7); for an empty ground truth it is the fraction of
  pixels predicted background. A clip scores the mean over its frames; a split the mean over clips.
* F-score per clip: sigmoid of the logits against 255 thresholds ``linspace(0, 1 - 1e-10)``;
  per frame with a non-empty ground truth, precision/recall give an F curve with beta^2 = 0.3
  (NaN -> 0); the curves are averaged over those frames and the clip scores the maximum. A clip
  whose frames are all empty scores 0. A split is the mean over clips.

J&F (DAVIS-style region similarity J and boundary F-measure F) for videos annotated in napari or
CVAT: J is the IoU (1 when both masks are empty); F matches the boundary pixels of prediction and
ground truth within ``ceil(0.008 * image diagonal)`` pixels (1 when both have no boundary).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IOU_EPS = 1e-7
FSCORE_THRESHOLDS = 255
FSCORE_BETA2 = 0.3
PR_EPS = 1e-20
BOUNDARY_TOLERANCE = 0.008  # fraction of the image diagonal (DAVIS)


def avs_frame_ious(pred: torch.Tensor, target: torch.Tensor, eps: float = IOU_EPS) -> torch.Tensor:
    """Per-frame AVSBench IoU of binary masks [N, H, W] -> [N] (empty-GT rule included)."""
    pred, target = pred.long(), target.long()
    inter = (pred * target).sum((1, 2))
    union = torch.maximum(pred, target).sum((1, 2))
    empty = target.sum((1, 2)) == 0
    inter = torch.where(empty, ((1 - pred) * (1 - target)).sum((1, 2)), inter)
    union = torch.where(empty, torch.full_like(union, pred.shape[-1] * pred.shape[-2]), union)
    return inter / (union + eps)


def _thresholds(device: torch.device) -> torch.Tensor:
    return torch.linspace(0, 1 - 1e-10, FSCORE_THRESHOLDS, device=device)


def precision_recall(prob: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision and recall of ``prob >= th`` for the 255 thresholds, for one frame."""
    thresholds = _thresholds(prob.device)
    # number of thresholds each pixel passes: prob >= th_i  <=>  i < passed
    passed = torch.searchsorted(thresholds, prob.float().flatten(), right=True)
    fg = target.flatten() > 0
    count = torch.bincount(passed, minlength=FSCORE_THRESHOLDS + 1).flip(0).cumsum(0).flip(0)[1:]
    hits = torch.bincount(passed[fg], minlength=FSCORE_THRESHOLDS + 1).flip(0).cumsum(0).flip(0)[1:]
    tp = hits.float()
    return tp / (count.float() + PR_EPS), tp / (fg.sum().float() + PR_EPS)


def avs_clip_fscore(logits: torch.Tensor, target: torch.Tensor, beta2: float = FSCORE_BETA2) -> float:
    """The official per-clip F-score of logits [N, H, W] against binary labels [N, H, W]."""
    prob = torch.sigmoid(logits.float())
    total, frames = torch.zeros(FSCORE_THRESHOLDS, device=prob.device), 0
    for frame_prob, frame_target in zip(prob, target):
        if frame_target.float().mean() == 0:
            continue
        precision, recall = precision_recall(frame_prob, frame_target)
        curve = (1 + beta2) * precision * recall / (beta2 * precision + recall)
        total += torch.nan_to_num(curve, nan=0.0)
        frames += 1
    return float((total / frames).max()) if frames else 0.0


def region_similarity(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """J per frame of binary masks [N, H, W] -> [N] (1 when both are empty)."""
    pred, target = pred.bool(), target.bool()
    inter = (pred & target).sum((1, 2)).float()
    union = (pred | target).sum((1, 2)).float()
    return torch.where(union == 0, torch.ones_like(union), inter / union.clamp(min=1))


def boundary_map(mask: torch.Tensor) -> torch.Tensor:
    """Foreground pixels with a 4-neighbour in the background, for masks [N, H, W]."""
    fg = mask.bool()
    padded = F.pad(fg[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0] > 0
    interior = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return fg & ~interior


def _dilate(boundary: torch.Tensor, radius: int) -> torch.Tensor:
    offsets = torch.arange(-radius, radius + 1, device=boundary.device, dtype=torch.float32)
    disk = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).float()
    out = F.conv2d(boundary[:, None].float(), disk[None, None], padding=radius)
    return out[:, 0] > 0


def boundary_fmeasure(pred: torch.Tensor, target: torch.Tensor,
                      tolerance: float = BOUNDARY_TOLERANCE) -> torch.Tensor:
    """F per frame of binary masks [N, H, W] -> [N]."""
    height, width = pred.shape[-2:]
    radius = max(1, math.ceil(tolerance * math.hypot(height, width)))
    pred_b, gt_b = boundary_map(pred), boundary_map(target)
    n_pred, n_gt = pred_b.sum((1, 2)).float(), gt_b.sum((1, 2)).float()
    precision = (pred_b & _dilate(gt_b, radius)).sum((1, 2)).float() / n_pred.clamp(min=1)
    recall = (gt_b & _dilate(pred_b, radius)).sum((1, 2)).float() / n_gt.clamp(min=1)
    f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                    torch.zeros_like(precision))
    both_empty = (n_pred == 0) & (n_gt == 0)
    return torch.where(both_empty, torch.ones_like(f), f)
