"""The audio-free path must be stock SAM2: same weights + same prompts -> same masks as SAM2VideoPredictor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2 import sam2_video_predictor
from sam2.build_sam import build_sam2_video_predictor

from napari_auralsam2.core import frames_from_array
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.session import Engine, preprocess_frame

IMAGE_SIZE = 256
FRAMES = 9


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    ours = build_auralsam2("hiera_t", image_size=IMAGE_SIZE)
    stock = build_sam2_video_predictor("configs/sam2/sam2_hiera_t.yaml", ckpt_path=None, device="cpu",
                                       hydra_overrides_extra=[f"++model.image_size={IMAGE_SIZE}"])
    stock.load_state_dict(ours.v_model.state_dict(), strict=True)
    stock.fill_hole_area = 0  # its CUDA op is not built here; ours never fills holes
    return Engine(ours, "cpu"), stock


@pytest.fixture(scope="module")
def video():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, (FRAMES, 72, 96, 3), dtype=np.uint8)
    frames[:, 20:50, 30:70] = (220, 40, 40)  # an object that stays put
    return frames


def _stock_state(stock, frames, monkeypatch):
    images = torch.stack([preprocess_frame(f, IMAGE_SIZE) for f in frames])
    monkeypatch.setattr(sam2_video_predictor, "load_video_frames",
                        lambda **kw: (images, frames.shape[1], frames.shape[2]))
    return stock.init_state("in-memory")


@pytest.mark.parametrize("prompt_frame, reverse", [(0, False), (FRAMES - 1, True)])
def test_audio_free_session_equals_stock_predictor(pair, video, monkeypatch, prompt_frame, reverse):
    engine, stock = pair
    state = _stock_state(stock, video, monkeypatch)
    point = dict(points=np.array([[50.0, 35.0]], dtype=np.float32), labels=np.array([1], dtype=np.int32))
    with torch.inference_mode():
        stock.add_new_points_or_box(state, prompt_frame, 1, **point)
        expected = {t: logits[0, 0].numpy() for t, _, logits in stock.propagate_in_video(state, reverse=reverse)}

    session = engine.open_session(frames_from_array(video, fps=10), use_audio=False)
    session.add_prompt(prompt_frame, 1, points=[(50.0, 35.0)], labels=[1])
    got = dict(session.propagate(direction="backward" if reverse else "forward"))
    assert sorted(got) == sorted(expected)
    for t, logits in expected.items():
        confident = np.abs(logits) > 1e-2  # batched vs per-frame encoding differs by ~1e-6
        assert np.array_equal(got[t][1][confident], logits[confident] > 0), f"frame {t}"
    low_res_ours = session.state["output_dict_per_obj"][0]["non_cond_frame_outputs"]
    low_res_stock = state["output_dict_per_obj"][0]["non_cond_frame_outputs"]
    for t in low_res_stock:
        torch.testing.assert_close(low_res_ours[t]["pred_masks"], low_res_stock[t]["pred_masks"], atol=2e-3, rtol=0)
