"""Text prompts in the session: each object's text steers its audio prompt; bad text gets one clear line."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_auralsam2.core import open_video
from napari_auralsam2.core.errors import PromptError
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.session import Engine, Prompt

from ._seeded import seeded_inputs, seeded_state_dict
from ._tiny_text import write_tiny_text_model

IMAGE_SIZE = 64
GUITAR, DOG = "the man playing guitar", "the dog that is barking"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    model = build_auralsam2("hiera_t", image_size=IMAGE_SIZE, variant="refavs",
                            text_model=write_tiny_text_model(tmp_path_factory.mktemp("text") / "tiny"))
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed=2))
    return Engine(model, "cpu", window=model.clip_frames)


@pytest.fixture()
def video(sample_mp4):
    with open_video(sample_mp4) as source:
        yield source


def _logits(session, object_id: int, frame: int = 0) -> torch.Tensor:
    obj_idx = session.state["obj_id_to_idx"][object_id]
    return session.state["temp_output_dict_per_obj"][obj_idx]["cond_frame_outputs"][frame]["pred_masks"]


def test_text_steers_the_audio_prompt_and_the_same_text_repeats(engine, video):
    runs = {}
    for name, text in (("guitar", GUITAR), ("again", GUITAR), ("dog", DOG)):
        session = engine.open_session(video)
        session.apply(Prompt(0, 1, text=text))
        runs[name] = _logits(session, 1)
    assert torch.equal(runs["guitar"], runs["again"])
    assert (runs["guitar"] - runs["dog"]).abs().max() > 1e-4


def test_each_object_keeps_its_own_text(engine, video):
    alone = engine.open_session(video)
    alone.apply(Prompt(0, 1, text=DOG))
    session = engine.open_session(video)
    session.apply(Prompt(0, 1, text=GUITAR))
    session.apply(Prompt(0, 2, text=DOG))
    assert torch.equal(_logits(session, 2), _logits(alone, 1))
    session.apply(Prompt(1, 1, points=[(40.0, 30.0)]))  # a click without text keeps the object's text
    assert session.state["auralsam2_texts"] == {1: GUITAR, 2: DOG}
    frames = session.propagate(start_frame=0, direction="forward")
    first = [next(frames) for _ in range(3)]
    frames.close()
    assert [t for t, _ in first] == [0, 1, 2] and all(set(m) == {1, 2} for _, m in first)
    session.remove_object(1)
    assert session.state["auralsam2_texts"] == {2: DOG}


@pytest.mark.parametrize("prompt, use_audio, message", [
    (Prompt(0, 1, text=""), True, "the text prompt is empty"),
    (Prompt(0, 1, text="   "), True, "the text prompt is empty"),
    (Prompt(0, 1, text="the man " * 15), True, r"the text prompt is \d+ tokens long; the Ref-AVS text encoder reads "
                                               "at most 25"),
    (Prompt(0, 1), True, "segments the object a text refers to: this object has no text"),
    (Prompt(0, 1, points=[(10.0, 10.0)], text=GUITAR), False, "a text prompt needs the audio"),
])
def test_bad_text_gives_one_clear_line(engine, video, prompt, use_audio, message):
    session = engine.open_session(video, use_audio=use_audio)
    with pytest.raises(PromptError, match=message) as info:
        session.apply(prompt)
    assert "\n" not in str(info.value) and not session.object_ids


def test_clicks_without_audio_need_no_text(engine, video):
    session = engine.open_session(video, use_audio=False)
    masks = session.apply(Prompt(3, 1, points=[(40.0, 30.0)]))
    assert set(masks) == {1}


def test_an_avs_checkpoint_refuses_text(video):
    session = Engine(build_auralsam2("hiera_t", image_size=IMAGE_SIZE), "cpu").open_session(video)
    with pytest.raises(PromptError, match="AVSBench variant.*cannot read text") as info:
        session.apply(Prompt(0, 1, text=GUITAR))
    assert "\n" not in str(info.value) and not session.object_ids


def test_clip_forward_conditions_on_the_middle_frame(engine):
    model = engine.model
    frames, audio = seeded_inputs(4, IMAGE_SIZE, seed=1)
    with torch.no_grad():
        default = model.segment_clip(frames, audio, text=GUITAR)
        middle = model.segment_clip(frames, audio, cond_frame=2, text=GUITAR)
        first = model.segment_clip(frames, audio, cond_frame=0, text=GUITAR)
    np.testing.assert_array_equal(default.masks.numpy(), middle.masks.numpy())
    assert not np.allclose(default.masks.numpy(), first.masks.numpy())
    with pytest.raises(PromptError, match="has no text"):
        model.segment_clip(frames, audio)


def _blob(video) -> np.ndarray:
    mask = np.zeros((video.height, video.width), bool)
    mask[10:30, 20:50] = True
    return mask


def test_a_mask_prompt_carries_the_objects_text(engine, video):
    """A corrected mask of a Ref-AVS object: its text steers the audio on that frame and keeps it for later."""
    pointers = {}
    for text in (GUITAR, DOG):
        session = engine.open_session(video)
        session.apply(Prompt(2, 1, mask=_blob(video), text=text))
        assert session.state["auralsam2_texts"] == {1: text}
        pointers[text] = session.state["temp_output_dict_per_obj"][0]["cond_frame_outputs"][2]["obj_ptr"]
    assert (pointers[GUITAR] - pointers[DOG]).abs().max() > 1e-5
    session.apply(Prompt(4, 1, mask=_blob(video)))  # a later mask without text keeps the object's text
    assert session.state["auralsam2_texts"] == {1: DOG}


def test_a_mask_prompt_without_text_is_refused_unless_the_audio_is_off(engine, video):
    session = engine.open_session(video)
    with pytest.raises(PromptError, match="this object has no text") as info:
        session.apply(Prompt(2, 1, mask=_blob(video)))
    assert "\n" not in str(info.value) and not session.object_ids
    session.set_audio_guidance(1, False)  # stock SAM2 for this object: no audio, so no text
    assert set(session.apply(Prompt(2, 1, mask=_blob(video)))) == {1}
    with pytest.raises(PromptError, match="a text prompt needs the audio"):
        session.apply(Prompt(2, 1, mask=_blob(video), text=GUITAR))
