"""Numerical parity with the official AuralSAM2 code (goldens in tests/data, see its README).

fp32, CPU, TF32 off, seeded random weights loaded strictly into our model with the official keys.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_auralsam2.core.model import build_auralsam2

from ._seeded import seeded_inputs, seeded_state_dict

DATA = Path(__file__).parent / "data"
CLIP = 5
IMAGE_SIZE = 256
LOGIT_ATOL = 1e-3  # the brief's bound for conditioning-frame mask logits


@pytest.fixture(scope="module", autouse=True)
def fp32_only():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _model(seed: int):
    model = build_auralsam2("hiera_t", image_size=IMAGE_SIZE)
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed=seed), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return _model(0)


@pytest.fixture(scope="module")
def inputs():
    frames, audio = seeded_inputs(CLIP, IMAGE_SIZE, seed=0)
    golden = np.load(DATA / "golden_clip_hiera_t_256.npz")
    np.testing.assert_allclose(frames.double().sum().item(), golden["frames_sum"], rtol=1e-9)
    np.testing.assert_allclose(audio.double().abs().sum().item(), golden["audio_abssum"], rtol=1e-9)
    return frames, audio


@pytest.fixture(scope="module")
def golden():
    return np.load(DATA / "golden_clip_hiera_t_256.npz")


@pytest.fixture(scope="module")
def clip(model, inputs):
    with torch.no_grad():
        return model.segment_clip(*inputs, cond_frame=0)


def test_fuser_prompts_match(clip, golden):
    a, b, c = (m.numpy() for m in clip.prompts.dense)
    for name, ours in zip("abc", (a, b, c)):
        np.testing.assert_allclose(ours[0], golden[f"fuser_{name}_frame0"], atol=1e-4)
        np.testing.assert_allclose(ours[:, ::16], golden[f"fuser_{name}_sub16"], atol=1e-4)
        np.testing.assert_allclose(ours.sum(axis=(1, 2)), golden[f"fuser_{name}_sum"], rtol=1e-4, atol=1e-2)
    for i, d in enumerate(clip.prompts.sparse, start=1):
        np.testing.assert_allclose(d.numpy(), golden[f"fuser_d{i}"], atol=1e-4)


def _check_clip(logits: np.ndarray, ious: np.ndarray, golden_logits: np.ndarray, golden_ious: np.ndarray) -> None:
    np.testing.assert_allclose(ious, golden_ious, atol=1e-4)
    # measured: <= 6.2e-6 on every frame, so later frames (hard memory masks) are held to the same bound
    np.testing.assert_allclose(logits, golden_logits, atol=LOGIT_ATOL)


def test_conditioning_frame_0_matches_official(clip, golden):
    _check_clip(clip.masks.numpy(), clip.ious.numpy(), golden["cond0_iou_select_logits"], golden["cond0_ious"])
    np.testing.assert_allclose(clip.multimask_logits[0].numpy(), golden["cond0_multimask_logits"][0], atol=LOGIT_ATOL)
    np.testing.assert_allclose(clip.low_res_multimask_logits[0].numpy(), golden["cond0_lowres_multimask_logits"][0],
                               atol=LOGIT_ATOL)
    np.testing.assert_allclose(clip.object_score_logits.numpy(), golden["cond0_object_score_logits"], atol=1e-3)


def test_conditioning_frame_2_matches_official(model, inputs, golden):
    with torch.no_grad():
        out = model.segment_clip(*inputs, cond_frame=2)
    _check_clip(out.masks.numpy(), out.ious.numpy(), golden["cond2_iou_select_logits"], golden["cond2_ious"])


def test_object_pointer_path_matches_official(inputs):
    """Weight seed 2 gives positive object scores, so object pointers reach later frames."""
    golden = np.load(DATA / "golden_clip_hiera_t_256_wseed2.npz")
    with torch.no_grad():
        out = _model(int(golden["weight_seed"])).segment_clip(*inputs, cond_frame=0)
    np.testing.assert_allclose(out.object_score_logits.numpy(), golden["cond0_object_score_logits"], atol=1e-3)
    np.testing.assert_allclose(out.ious.numpy(), golden["cond0_ious"], atol=1e-4)
    np.testing.assert_allclose(out.masks[0].numpy(), golden["cond0_iou_select_logits_frame0"], atol=LOGIT_ATOL)
    low = out.low_res_multimask_logits.numpy()
    ref = golden["cond0_lowres_multimask_logits"]
    np.testing.assert_allclose(low[0], ref[0], atol=LOGIT_ATOL)
    np.testing.assert_allclose(low, ref, atol=LOGIT_ATOL)
    up = F.interpolate(torch.from_numpy(ref), size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out.multimask_logits.numpy(), up.numpy(), atol=5e-3)
