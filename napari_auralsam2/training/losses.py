"""SAM2's multi-step multimask mask losses, configured as AuralSAM2 trains with them.

Per frame the decoder gives 3 mask logit maps, 3 predicted IoUs and an object-score logit. The
focal (x20, alpha 0.25, gamma 2) and dice (x1) terms use only the mask with the lowest
``20 * focal + dice``; the L1 IoU term (x1) is averaged over all 3 masks (``supervise_all_iou``);
these three are zero on frames whose ground truth is empty. The object score gets a plain BCE
(x1: focal with alpha -1, gamma 0). Terms are summed over frames (``num_objects`` is 1).

The dice is the classic ``1 - (2*sum(p*t) + 1) / (sum(p) + sum(t) + 1)`` that AuralSAM2's copy of
the loss uses (SAM2's own repository later switched to an L1-based variant).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
DICE_SMOOTH = 1.0
LOSS_KEYS = ("loss_mask", "loss_dice", "loss_iou", "loss_class")


@dataclass(frozen=True)
class MaskLossWeights:
    """Weights of the official `sam2_training_config.yaml`."""

    mask: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = FOCAL_ALPHA,
               gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Sigmoid focal loss averaged over the spatial dims: [N, M, H, W] -> [N, M].

    ``alpha < 0`` disables the class weighting (as SAM2 does for the object score).
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Smoothed dice loss per mask: [N, M, H, W] -> [N, M]."""
    prob = logits.sigmoid().flatten(2)
    targets = targets.flatten(2)
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return 1 - (numerator + DICE_SMOOTH) / (denominator + DICE_SMOOTH)


def iou_l1_loss(logits: torch.Tensor, targets: torch.Tensor, pred_ious: torch.Tensor) -> torch.Tensor:
    """|predicted IoU - actual IoU of the binarised mask| per mask: [N, M]."""
    pred = logits.flatten(2) > 0
    gt = targets.flatten(2) > 0
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    actual = inter / union.clamp(min=1.0)
    return F.l1_loss(pred_ious.float(), actual, reduction="none")


def mask_losses(multimask_logits: torch.Tensor, ious: torch.Tensor, object_score_logits: torch.Tensor,
                targets: torch.Tensor, weights: MaskLossWeights = MaskLossWeights()) -> dict[str, torch.Tensor]:
    """The four loss terms summed over frames, and their weighted sum under ``"total"``.

    multimask_logits [T, M, H, W], ious [T, M], object_score_logits [T, 1], targets [T, H, W] in {0, 1}
    (same H, W as the logits: the official code supervises the image-size logits).
    """
    logits = multimask_logits.float()
    target = targets.float().unsqueeze(1).expand_as(logits)
    focal = focal_loss(logits, target)
    dice = dice_loss(logits, target)
    iou = iou_l1_loss(logits, target, ious)
    present = (targets.flatten(1) > 0).any(dim=1, keepdim=True).float()  # [T, 1]
    obj = focal_loss(object_score_logits.float().unsqueeze(-1).unsqueeze(-1), present.unsqueeze(-1).unsqueeze(-1),
                     alpha=-1.0, gamma=0.0)  # [T, 1]
    best = torch.argmin(focal * weights.mask + dice * weights.dice, dim=-1)
    rows = torch.arange(len(best), device=best.device)
    terms = {
        "loss_mask": (focal[rows, best].unsqueeze(1) * present).sum(),
        "loss_dice": (dice[rows, best].unsqueeze(1) * present).sum(),
        "loss_iou": (iou.mean(dim=-1, keepdim=True) * present).sum(),
        "loss_class": obj.sum(),
    }
    terms["total"] = (weights.mask * terms["loss_mask"] + weights.dice * terms["loss_dice"]
                      + weights.iou * terms["loss_iou"] + weights.object_score * terms["loss_class"])
    return terms
