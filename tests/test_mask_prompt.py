"""Mask prompts (SAM2's add_new_mask) through the core session, `Prompt.mask` and `segment --mask`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sam2 import sam2_video_predictor
from sam2.build_sam import build_sam2_video_predictor

from napari_auralsam2 import cli_prompts
from napari_auralsam2.core import AudioTrack, frames_from_array
from napari_auralsam2.core.errors import PromptError
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.session import Engine, Prompt, preprocess_frame

from ._seeded import seeded_state_dict
from .test_cli import RANDOM, assert_one_line_error, run

IMAGE_SIZE = 128
FRAMES = 8


@pytest.fixture(scope="module")
def pair():
    """Our engine and a stock SAM2VideoPredictor with the same seeded SAM2 weights."""
    model = build_auralsam2("hiera_t", image_size=IMAGE_SIZE)
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed=2))
    stock = build_sam2_video_predictor("configs/sam2/sam2_hiera_t.yaml", ckpt_path=None, device="cpu",
                                       hydra_overrides_extra=[f"++model.image_size={IMAGE_SIZE}"])
    stock.load_state_dict(model.v_model.state_dict(), strict=True)
    stock.fill_hole_area = 0
    return Engine(model, "cpu"), stock


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(5)
    video = rng.integers(0, 255, (FRAMES, 48, 64, 3), dtype=np.uint8)
    video[:, 12:36, 16:44] = (220, 40, 40)
    return video


@pytest.fixture(scope="module")
def with_audio(frames):
    """The frames with a tone-and-noise soundtrack."""
    rate = 16_000
    t = np.arange(int(FRAMES / 10 * rate)) / rate
    noise = np.random.default_rng(6).normal(0, 0.1, t.size)
    track = AudioTrack(np.stack([np.sin(2 * np.pi * 440 * t), noise], 1).astype(np.float32), rate)
    return frames_from_array(frames, fps=10, audio=track)


def blob(height: int = 48, width: int = 64) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[10:30, 20:40] = True
    mask[22:28, 8:20] = True
    return mask


def _stock_state(stock, frames, monkeypatch):
    images = torch.stack([preprocess_frame(f, IMAGE_SIZE) for f in frames])
    monkeypatch.setattr(sam2_video_predictor, "load_video_frames",
                        lambda **kw: (images, frames.shape[1], frames.shape[2]))
    return stock.init_state("in-memory")


def test_mask_prompt_equals_stock_add_new_mask(pair, frames, monkeypatch):
    engine, stock = pair
    state = _stock_state(stock, frames, monkeypatch)
    with torch.inference_mode():
        _, _, stock_logits = stock.add_new_mask(state, 2, 1, torch.from_numpy(blob()))
        stock_cond = state["temp_output_dict_per_obj"][0]["cond_frame_outputs"][2]
        expected = {t: logits[0, 0].numpy() for t, _, logits in stock.propagate_in_video(state)}

    session = engine.open_session(frames_from_array(frames, fps=10), use_audio=False)
    masks = session.add_mask(2, 1, blob().astype(np.uint8) * 255)  # nonzero = object
    ours = session.state["temp_output_dict_per_obj"][0]["cond_frame_outputs"][2]
    torch.testing.assert_close(ours["pred_masks"], stock_cond["pred_masks"], atol=1e-3, rtol=0)
    torch.testing.assert_close(ours["obj_ptr"], stock_cond["obj_ptr"], atol=1e-3, rtol=0)
    np.testing.assert_array_equal(masks[1], stock_logits[0, 0].numpy() > 0)
    got = dict(session.propagate(direction="forward"))
    assert sorted(got) == sorted(expected)
    for t, logits in expected.items():
        confident = np.abs(logits) > 1e-2
        assert np.array_equal(got[t][1][confident], logits[confident] > 0), f"frame {t}"


def test_audio_keeps_guiding_a_mask_prompted_object(pair, with_audio):
    engine, _ = pair
    outputs = {}
    for name, use_audio, guided in (("audio", True, True), ("off", True, False), ("none", False, True)):
        session = engine.open_session(with_audio, use_audio=use_audio)
        if not guided:
            session.set_audio_guidance(1, False)
        assert session.audio_guidance(1) is (use_audio and guided)
        session.add_mask(3, 1, blob())
        outputs[name] = session.state["temp_output_dict_per_obj"][0]["cond_frame_outputs"][3]
        tracked = dict(session.propagate(start_frame=3, direction="forward"))
        outputs[name + "_next"] = session.state["output_dict_per_obj"][0]["non_cond_frame_outputs"][5]
        assert sorted(tracked) == list(range(3, FRAMES))
    # the mask itself is the conditioning output whatever the audio (SAM2 uses a mask input as output) ...
    torch.testing.assert_close(outputs["audio"]["pred_masks"], outputs["none"]["pred_masks"])
    # ... but the audio shapes its object pointer and every tracked frame, unless turned off
    assert (outputs["audio"]["obj_ptr"] - outputs["none"]["obj_ptr"]).abs().max() > 1e-3
    assert (outputs["audio_next"]["pred_masks"] - outputs["none_next"]["pred_masks"]).abs().max() > 0.05
    torch.testing.assert_close(outputs["off"]["obj_ptr"], outputs["none"]["obj_ptr"], atol=1e-5, rtol=0)
    torch.testing.assert_close(outputs["off_next"]["pred_masks"], outputs["none_next"]["pred_masks"],
                               atol=1e-4, rtol=0)


def test_a_mask_prompt_changes_the_propagated_result(pair, with_audio):
    engine, _ = pair
    session = engine.open_session(with_audio)
    session.apply(Prompt(1, 1, points=[(30.0, 20.0)], labels=[1]))
    before = dict(session.propagate(direction="forward"))
    corrected = np.zeros((48, 64), dtype=bool)
    corrected[26:46, 36:62] = True
    session.apply(Prompt(4, 1, mask=corrected))  # a hand-fixed frame 4, sent back as a mask prompt
    after = dict(session.propagate(start_frame=4, direction="forward"))
    iou = (after[4][1] & corrected).sum() / (after[4][1] | corrected).sum()
    assert iou > 0.8  # the corrected frame shows the given mask (through SAM2's low-res output)
    assert not np.array_equal(before[4][1], after[4][1])
    assert any(not np.array_equal(before[t][1], after[t][1]) for t in range(5, FRAMES))


@pytest.mark.parametrize("prompt, needle", [
    (Prompt(0, 1, mask=np.ones((10, 10), bool)), "10x10, the video is 64x48"),
    (Prompt(0, 1, points=[(5.0, 5.0)], mask=np.ones((48, 64), bool)), "not both"),
    (Prompt(99, 1, mask=np.ones((48, 64), bool)), "outside the video"),
])
def test_bad_mask_prompts_are_one_line(pair, frames, prompt, needle):
    session = pair[0].open_session(frames_from_array(frames, fps=10), use_audio=False)
    with pytest.raises(PromptError, match=needle) as info:
        session.apply(prompt)
    assert "\n" not in str(info.value)


def test_audio_only_prompt_needs_guidance_on(pair, with_audio):
    session = pair[0].open_session(with_audio)
    session.set_audio_guidance(2, False)
    with pytest.raises(PromptError, match="audio guidance on for object 2"):
        session.add_audio_prompt(0, 2)
    session.set_audio_guidance(2, True)
    assert set(session.add_audio_prompt(0, 2)) == {2}


def test_cli_mask_prompt(capsys, sample_mp4, clip_spec, tmp_path):
    mask = np.zeros((clip_spec.height, clip_spec.width, 4), np.uint8)
    mask[10:26, 20:30, 0] = 200
    mask[..., 3] = 255  # opaque everywhere: alpha is not the mask
    png = tmp_path / "fix, frame 2.png"  # commas in the file name are fine
    Image.fromarray(mask).save(png)
    last = clip_spec.n_frames - 1
    code, out, err = run(capsys, "segment", sample_mp4, "--mask", f"{last - 1},1,{png}", "--direction", "forward",
                         "--format", "npz", "--out", tmp_path / "out", *RANDOM)
    assert code == 0, err
    with np.load(tmp_path / "out" / "masks.npz") as archive:
        assert np.flatnonzero(archive["segmented"]).tolist() == [last - 1, last]
        assert list(archive["object_ids"]) == [1]
    assert cli_prompts.read_mask_png(png).sum() == 16 * 10


@pytest.mark.parametrize("make, argv_mask, needle", [
    (lambda p: Image.new("L", (10, 10), 255).save(p), "0,1,{png}", "is 10x10, the video is 96x64"),
    (lambda p: p.write_bytes(b"not a png"), "0,1,{png}", "cannot read mask"),
    (lambda p: None, "0,{png}", "frame,object,FILE.png"),
    (lambda p: Image.new("L", (96, 64), 255).save(p), "0,0,{png}", "object id must be"),
])
def test_cli_bad_masks_are_one_line(capsys, sample_mp4, tmp_path, make, argv_mask, needle):
    png = tmp_path / "mask.png"
    make(png)
    code, _, err = run(capsys, "segment", sample_mp4, "--mask", argv_mask.format(png=png),
                       "--out", tmp_path / "out", *RANDOM)
    assert_one_line_error(code, err, needle)


def test_cli_mask_and_clicks_on_one_object_frame(capsys, sample_mp4, tmp_path):
    png = tmp_path / "mask.png"
    Image.new("L", (96, 64), 255).save(png)
    code, _, err = run(capsys, "segment", sample_mp4, "--mask", f"0,1,{png}", "--point", "5,5,0",
                       "--out", tmp_path / "out", *RANDOM)
    assert_one_line_error(code, err, "give one mask, or clicks/a box")
