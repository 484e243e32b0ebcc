"""Known-answer tests of the SAM2 multimask losses and the audio-guided contrastive loss."""
from __future__ import annotations

import math

import pytest
import torch

from napari_auralsam2.training.contrastive import (
    ContrastiveConfig, audio_label, contrastive_loss, info_nce, sample_anchors, truncate_anchors,
)
from napari_auralsam2.training.losses import dice_loss, focal_loss, iou_l1_loss, mask_losses

LN2 = math.log(2.0)


def test_focal_loss_at_zero_logit_is_alpha_weighted_quarter_ce():
    logits = torch.zeros(1, 2, 1, 1)
    targets = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    # p = 0.5: ce = ln 2, (1 - p_t)^2 = 1/4, alpha_t = 0.25 (positive) or 0.75 (negative)
    expected = torch.tensor([[0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2]])
    assert torch.allclose(focal_loss(logits, targets), expected)


def test_dice_and_iou_losses_by_hand():
    logits = torch.tensor([[1.0, -1.0], [1.0, -1.0]]).view(1, 1, 2, 2)
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    p = torch.sigmoid(torch.tensor(1.0))
    q = torch.sigmoid(torch.tensor(-1.0))
    dice = 1 - (2 * p + 1) / (2 * p + 2 * q + 1 + 1)
    assert torch.allclose(dice_loss(logits, target), dice.view(1, 1))
    # predicted {(0,0), (1,0)}, truth {(0,0)}: IoU 1/2; predicted IoU 0.8 -> L1 0.3
    assert torch.allclose(iou_l1_loss(logits, target, torch.tensor([[0.8]])), torch.tensor([[0.3]]))


def test_mask_losses_pick_the_best_mask_zero_empty_frames_and_sum_frames():
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])  # frame 1 is empty
    good = 10 * (2 * target[0] - 1)
    frame0 = torch.stack([-good, good, torch.zeros(2, 2)])  # mask 1 is right
    logits = torch.stack([frame0, frame0])
    ious = torch.tensor([[0.1, 0.9, 0.5], [0.2, 0.2, 0.2]])
    scores = torch.tensor([[3.0], [-1.0]])
    terms = mask_losses(logits, ious, scores, target)
    t0 = target[:1, None].expand(1, 3, 2, 2)
    focal0 = focal_loss(frame0[None], t0)[0]
    dice0 = dice_loss(frame0[None], t0)[0]
    assert int(torch.argmin(20 * focal0 + dice0)) == 1
    assert torch.allclose(terms["loss_mask"], focal0[1])  # frame 1 (empty truth) adds nothing
    assert torch.allclose(terms["loss_dice"], dice0[1])
    actual = torch.tensor([0.0, 1.0, 0.0])  # inverted mask, right mask, logit 0 (predicts nothing)
    assert torch.allclose(terms["loss_iou"], (ious[0] - actual).abs().mean())
    bce = torch.nn.functional.binary_cross_entropy_with_logits(scores[:, 0], torch.tensor([1.0, 0.0]), reduction="sum")
    assert torch.allclose(terms["loss_class"], bce)
    total = 20 * terms["loss_mask"] + terms["loss_dice"] + terms["loss_iou"] + terms["loss_class"]
    assert torch.allclose(terms["total"], total)


def test_info_nce_by_hand():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0])
    audio, audio_labels = torch.tensor([[1.0, 0.0]]), torch.tensor([1])
    # anchor 0: positive the audio (s=1), negative anchor 1 (s=0); anchor 1 has no positive (adds 0)
    expected = -(1 - math.log(math.e + 1)) / 2
    assert info_nce(anchors, labels, audio, audio_labels, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    # T = 0.1 sharpens it: log(1 + e^-10) / 2
    sharp = info_nce(anchors, labels, audio, audio_labels, temperature=0.1).item()
    assert sharp == pytest.approx(math.log1p(math.exp(-10)) / 2, rel=1e-3)  # float32 rounding


def test_info_nce_positives_are_audio_only_and_negatives_include_audio():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([1, 0, 1])
    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    audio_labels = torch.tensor([1, 0])
    # anchors 0 and 2 (label 1) are not each other's positives: positive u0 (s=1), negatives a1, u1 (s=0)
    # anchor 1 (label 0): positive u1 (s=1), negatives a0, a2, u0 (s=0)
    expected = -(2 * (1 - math.log(math.e + 2)) + (1 - math.log(math.e + 3))) / 3
    got = info_nce(anchors, labels, audio, audio_labels, temperature=1.0).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_sampling_labels_paper_vs_official_subset_indexing_bug():
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    logits = torch.tensor([-5.0, -5.0, 5.0, 5.0])
    features = torch.eye(4)  # each anchor's feature names its pixel
    feats, got = sample_anchors(features, labels, logits, limit=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, labels[feats.argmax(dim=1)])  # paper: the pixel's own label
    assert sorted(feats.argmax(dim=1).tolist()) == [0, 1, 2, 3]
    feats, got = sample_anchors(features, labels, logits, limit=1, official=True,
                                generator=torch.Generator().manual_seed(0))
    assert sorted(feats.argmax(dim=1).tolist()) == [0, 1, 2, 3]
    assert got.tolist() == [0.0, 0.0, 0.0, 0.0]  # official: labels[positions 0/1 of the subset]


def test_sampling_counts_hard_test_and_top_up():
    labels = torch.zeros(8)
    logits = torch.full((8,), -3.0)  # every pixel correctly predicted background
    # paper: all 8 are easy -> limit 2 each kind, topped up to 2 * limit = 4 in total
    feats, _ = sample_anchors(torch.eye(8), labels, logits, limit=2)
    assert len(feats) == 4
    # official: float logits != 0 labels, so all 8 count as hard; the top-up adds 2*limit - 0 -> 6
    feats, _ = sample_anchors(torch.eye(8), labels, logits, limit=2, official=True)
    assert len(feats) == 6


def test_audio_labels_for_full_foreground_frames():
    full, empty, mixed = torch.ones(4), torch.zeros(4), torch.tensor([0.0, 1.0, 0.0, 0.0])
    assert [audio_label(m) for m in (full, empty, mixed)] == [1, 0, 1]
    assert [audio_label(m, official=True) for m in (full, empty, mixed)] == [0, 0, 1]


def _tiny_clip():
    """One frame, 2x2 grid: the sounding pixel (bottom-right) has the audio's embedding."""
    target = torch.zeros(1, 4, 4)
    target[0, 2:, 2:] = 1  # nearest-downsampled to 2x2: only the bottom-right cell
    fg, bg = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    grid = torch.stack([bg, bg, bg, fg], dim=1).view(1, 2, 2, 2)
    visual = [grid.clone() for _ in range(3)]
    audio = [fg.view(1, 2, 1) for _ in range(3)]
    low_res = 10 * (2 * target - 1)  # a perfect prediction: every pixel is "easy"
    return visual, audio, target, low_res


def test_contrastive_loss_known_answer_paper():
    visual, audio, target, low_res = _tiny_clip()
    loss = contrastive_loss(visual, audio, target, low_res, ContrastiveConfig(mode="paper"))
    # 12 anchors (4 pixels x 3 levels); the 3 sounding ones have the 3 audio entries as positives
    # (s = 10) and the 9 background anchors as negatives (s = 0); background anchors have no positive
    expected = 3 * math.log1p(9 * math.exp(-10)) / 12
    assert loss.item() == pytest.approx(expected, rel=1e-3)  # float32 rounding


def test_contrastive_loss_known_answer_official_is_blind_here():
    visual, audio, target, low_res = _tiny_clip()
    loss = contrastive_loss(visual, audio, target, low_res, ContrastiveConfig(mode="official"))
    # the subset-index bug labels the sounding anchor with labels[0] = 0, so no anchor has a positive
    assert loss.item() == 0.0


def test_contrastive_loss_pulls_audio_to_the_sounding_pixels():
    visual, audio, target, low_res = _tiny_clip()
    aligned = contrastive_loss(visual, audio, target, low_res)
    flipped = contrastive_loss(visual, [torch.tensor([0.0, 1.0]).view(1, 2, 1)] * 3, target, low_res)
    # flipped: the sounding anchors' positive has s = 0, like their 9 negatives -> 3 log(10) / 12
    assert flipped.item() == pytest.approx(3 * math.log(10) / 12, rel=1e-5)
    assert aligned.item() < 1e-3


def test_truncation_paper_keeps_exactly_total_official_keeps_a_random_prefix():
    anchors = torch.arange(20.0).view(20, 1)
    labels = torch.zeros(20)
    kept, _ = truncate_anchors(anchors, labels, 5, official=False, generator=torch.Generator().manual_seed(1))
    assert len(kept) == 5 and len(set(kept.flatten().tolist())) == 5
    cut = int(torch.randperm(20, generator=torch.Generator().manual_seed(1))[5])
    kept, _ = truncate_anchors(anchors, labels, 5, official=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(kept, anchors[:max(cut, 1)])
