"""AVSBench IoU / F-score conventions and the J&F measures, on hand-checkable masks."""
from __future__ import annotations

import pytest
import torch

from napari_auralsam2.training.metrics import (
    avs_clip_fscore, avs_frame_ious, boundary_fmeasure, boundary_map, region_similarity,
)


def test_avs_iou_with_the_empty_ground_truth_rule():
    pred = torch.tensor([[[1, 1], [0, 0]], [[0, 1], [0, 0]], [[0, 0], [0, 0]]])
    target = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]], [[0, 0], [0, 0]]])
    ious = avs_frame_ious(pred, target)
    # 1/2; empty truth: 3 of 4 pixels correctly background; empty truth and prediction: 4/4
    assert torch.allclose(ious, torch.tensor([0.5, 0.75, 1.0]), atol=1e-6)


def _official_fscore(logits, gt, num=255, beta2=0.3):
    """The official ForegroundFScore.calculate_f_score loop, written out plainly."""
    pred = torch.sigmoid(logits)
    avg_f, img_num, score = 0.0, 0, torch.zeros(num)
    for i in range(pred.size(0)):
        if torch.mean(gt[i].float()) == 0.0:
            continue
        thresholds = torch.linspace(0, 1 - 1e-10, num)
        prec, recall = torch.zeros(num), torch.zeros(num)
        for k in range(num):
            y_temp = (pred[i] >= thresholds[k]).float()
            tp = (y_temp * gt[i]).sum()
            prec[k], recall[k] = tp / (y_temp.sum() + 1e-20), tp / (gt[i].sum() + 1e-20)
        f_score = (1 + beta2) * prec * recall / (beta2 * prec + recall)
        f_score[f_score != f_score] = 0
        avg_f += f_score
        img_num += 1
        score = avg_f / img_num
    return score.max().item()


def test_fscore_matches_the_official_loop():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 16, 16, generator=gen) * 3
    gt = (torch.rand(4, 16, 16, generator=gen) > 0.6).float()
    gt[2] = 0  # an empty frame is skipped
    assert avs_clip_fscore(logits, gt) == pytest.approx(_official_fscore(logits, gt), abs=1e-6)


def test_fscore_known_answers():
    gt = torch.zeros(2, 4, 4)
    gt[:, :2] = 1
    perfect = 8 * (2 * gt - 1)
    assert avs_clip_fscore(perfect, gt) == pytest.approx(1.0, abs=1e-6)
    assert avs_clip_fscore(perfect, torch.zeros(2, 4, 4)) == 0.0  # all-empty clip scores 0
    # everything predicted foreground at every threshold: P = 1/2, R = 1 -> 1.3 * 0.5 / (0.15 + 1)
    assert avs_clip_fscore(torch.full((1, 4, 4), 30.0), gt[:1]) == pytest.approx(0.65 / 1.15, rel=1e-5)


def test_region_similarity_and_boundary_measure():
    empty = torch.zeros(1, 32, 32, dtype=torch.bool)
    square = empty.clone()
    square[0, 8:24, 8:24] = True
    far = empty.clone()
    far[0, 0:4, 28:32] = True
    assert region_similarity(empty, empty).item() == 1.0
    assert region_similarity(square, square).item() == 1.0
    assert boundary_fmeasure(square, square).item() == 1.0
    assert boundary_fmeasure(empty, empty).item() == 1.0
    assert boundary_fmeasure(square, empty).item() == 0.0
    assert boundary_fmeasure(far, square).item() == 0.0
    shifted = torch.roll(square, 1, dims=2)  # within the 1-pixel tolerance of a 32x32 image
    assert boundary_fmeasure(shifted, square).item() == 1.0
    assert region_similarity(shifted, square).item() == pytest.approx(240 / 272)


def test_boundary_map_is_the_inner_contour():
    square = torch.zeros(1, 6, 6, dtype=torch.bool)
    square[0, 1:5, 1:5] = True
    boundary = boundary_map(square)[0]
    assert boundary.sum().item() == 12  # the 4x4 square's ring
    assert not boundary[2:4, 2:4].any()
