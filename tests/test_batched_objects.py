"""Objects whose memories line up are tracked as one batch, and give what each gives tracked alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_auralsam2.core import AudioTrack, frames_from_array
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.session import Engine

from ._seeded import seeded_state_dict

IMAGE_SIZE = 64
FRAMES = 8
FPS = 10.0
LOGIT_TOLERANCE = 1e-4
# object id -> (frame, click): three objects on frame 3 share batches; object 9 starts on frame 6
PROMPTS = {1: (3, (20.0, 18.0)), 2: (3, (70.0, 40.0)), 3: (3, (45.0, 55.0)), 9: (6, (80.0, 12.0))}


@pytest.fixture(scope="module")
def engine():
    model = build_auralsam2("hiera_t", image_size=IMAGE_SIZE)
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed=2))
    return Engine(model, "cpu")


@pytest.fixture(scope="module")
def video():
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 255, (FRAMES, 64, 96, 3), dtype=np.uint8)
    t = np.arange(int(FRAMES / FPS * 16000)) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 660 * t) + 0.05 * rng.standard_normal(t.size)
    return frames_from_array(frames, FPS, audio=AudioTrack(np.stack([tone, tone[::-1]], 1).astype(np.float32), 16000))


def run(engine, video, object_ids, batches=None, unguided=()):
    """Prompt the objects, propagate both ways from frame 3; masks and low-res logits per frame and object."""
    session = engine.open_session(video)
    for obj in object_ids:
        frame, point = PROMPTS[obj]
        session.add_prompt(frame, obj, points=[point])
        session.set_audio_guidance(obj, obj not in unguided)
    predictor = engine.model.v_model
    original = predictor._run_single_frame_inference

    def recording(*args, **kwargs):
        if batches is not None:
            batches.append((kwargs["frame_idx"], kwargs["batch_size"]))
        return original(*args, **kwargs)

    predictor._run_single_frame_inference = recording
    try:
        masks = dict(session.propagate(start_frame=3, direction="both"))
    finally:
        del predictor._run_single_frame_inference
    logits = {}
    for obj in object_ids:
        outputs = session.state["output_dict_per_obj"][session.state["obj_id_to_idx"][obj]]
        for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
            logits.update({(t, obj): out["pred_masks"] for t, out in outputs[kind].items()})
    return masks, logits


def test_batched_objects_equal_each_object_alone(engine, video):
    batches = []
    masks, logits = run(engine, video, list(PROMPTS), batches)
    alone = {obj: run(engine, video, [obj]) for obj in PROMPTS}
    for obj, (masks_alone, logits_alone) in alone.items():
        for t, frame_masks in masks_alone.items():
            np.testing.assert_array_equal(masks[t][obj], frame_masks[obj], err_msg=f"object {obj}, frame {t}")
        for key, value in logits_alone.items():
            torch.testing.assert_close(logits[key], value, atol=LOGIT_TOLERANCE, rtol=0, msg=f"object/frame {key}")
    # every tracked frame ran objects 1-3 as one batch, and object 9 (other conditioning frame) alone
    assert {size for _, size in batches} == {3, 1}
    tracked = {t for t, size in batches if size == 3}
    assert tracked == set(range(FRAMES)) - {3}
    assert sorted(t for t, size in batches if size == 1) == sorted(set(range(FRAMES)) - {6})


def test_objects_batch_only_with_the_same_audio_guidance(engine, video):
    """An object whose audio guidance is off runs without the fuser's prompts: it never shares a batch
    with guided objects, and each gives what it gives tracked alone."""
    batches = []
    masks, logits = run(engine, video, [1, 2, 3], batches, unguided={2})
    assert {size for _, size in batches} == {2, 1}
    for obj in (1, 2, 3):
        masks_alone, logits_alone = run(engine, video, [obj], unguided={2} & {obj})
        for t, frame_masks in masks_alone.items():
            np.testing.assert_array_equal(masks[t][obj], frame_masks[obj], err_msg=f"object {obj}, frame {t}")
        for key, value in logits_alone.items():
            torch.testing.assert_close(logits[key], value, atol=LOGIT_TOLERANCE, rtol=0, msg=f"object/frame {key}")
    guided_alone, _ = run(engine, video, [2])
    assert any(not np.array_equal(guided_alone[t][2], masks[t][2]) for t in masks)  # guidance matters here


def test_an_object_added_later_gets_its_own_batch(engine, video):
    session = engine.open_session(video)
    session.add_prompt(0, 1, points=[PROMPTS[1][1]])
    session.add_prompt(0, 2, points=[PROMPTS[2][1]])
    first = dict(session.propagate(direction="forward"))
    session.add_prompt(0, 3, points=[PROMPTS[3][1]])  # same frame, but objects 1-2 already hold memories
    predictor = engine.model.v_model
    layouts = {obj: predictor.memory_layout(session.state["output_dict_per_obj"][idx], 1)
               for obj, idx in session.state["obj_id_to_idx"].items()}
    assert layouts[1] == layouts[2] != layouts[3]
    again = dict(session.propagate(direction="forward"))
    assert all(set(m) == {1, 2, 3} for m in again.values())
    for t in first:
        np.testing.assert_array_equal(again[t][1], first[t][1])
