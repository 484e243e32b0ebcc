"""The segmentation session on real PyAV files: clicks on any frame, audio-only, both directions, errors."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_auralsam2.core import AudioTrack, frames_from_array, open_video
from napari_auralsam2.core.errors import AudioError, NoAudioError, PromptError
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.session import KEEP_BEHIND, Engine, FrameWindows

from ._seeded import seeded_state_dict

IMAGE_SIZE = 128


@pytest.fixture(scope="module")
def engine():
    model = build_auralsam2("hiera_t", image_size=IMAGE_SIZE)
    # seeded weights: unlike the zero-initialised fusion of a fresh fuser, every path carries signal
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed=2))
    return Engine(model, "cpu")


@pytest.fixture()
def video(sample_mp4):
    with open_video(sample_mp4) as source:
        yield source


def test_clicks_on_a_middle_frame_propagate_both_ways(engine, video, clip_spec):
    session = engine.open_session(video)
    first = session.add_prompt(7, 3, points=[(20.0, 18.0), (80.0, 50.0)], labels=[1, 0])
    assert set(first) == {3} and first[3].shape == (clip_spec.height, clip_spec.width)
    assert first[3].dtype == bool
    calls = []
    frames = dict(session.propagate(start_frame=7, direction="both", progress=lambda d, t: calls.append((d, t))))
    assert sorted(frames) == list(range(clip_spec.n_frames))
    assert all(set(m) == {3} and m[3].shape == first[3].shape for m in frames.values())
    np.testing.assert_array_equal(frames[7][3], first[3])  # the prompted frame keeps its prompt's mask
    assert calls[-1] == (clip_spec.n_frames, clip_spec.n_frames)
    assert [d for d, _ in calls] == list(range(1, clip_spec.n_frames + 1))


def test_several_objects_points_and_box(engine, video):
    session = engine.open_session(video)
    session.add_prompt(2, 1, points=[(10.0, 10.0)])
    masks = session.add_prompt(5, 2, box=(30.0, 20.0, 70.0, 50.0))
    assert set(masks) == {1, 2}
    frames = dict(session.propagate(direction="forward"))
    assert min(frames) == 2 and all(set(m) == {1, 2} for m in frames.values())


def test_audio_only_prompt_uses_the_audio(engine, clip_spec):
    frames = np.stack([clip_spec.frame(i) for i in range(clip_spec.n_frames)])
    t = np.arange(int(clip_spec.n_frames / clip_spec.fps * 16000)) / 16000
    tones = {hz: AudioTrack(np.repeat(np.sin(2 * np.pi * hz * t)[:, None], 2, 1).astype(np.float32), 16000)
             for hz in (300.0, 2500.0)}
    logits = {}
    for hz, track in tones.items():
        session = engine.open_session(frames_from_array(frames, clip_spec.fps, audio=track))
        session.add_audio_prompt(0, 1)
        out = dict(session.propagate(direction="forward"))
        assert sorted(out) == list(range(clip_spec.n_frames))
        logits[hz] = session.state["output_dict_per_obj"][0]["non_cond_frame_outputs"][5]["pred_masks"]
    assert (logits[300.0] - logits[2500.0]).abs().max() > 0.05


def test_audio_changes_click_results_and_audio_free_does_not_need_it(engine, video, silent_mp4):
    with_audio = engine.open_session(video, use_audio=True)
    without = engine.open_session(video, use_audio=False)
    a = with_audio.add_prompt(4, 1, points=[(40.0, 30.0)])
    b = without.add_prompt(4, 1, points=[(40.0, 30.0)])
    assert a[1].shape == b[1].shape
    key = "cond_frame_outputs"
    la = with_audio.state["temp_output_dict_per_obj"][0][key][4]["pred_masks"]
    lb = without.state["temp_output_dict_per_obj"][0][key][4]["pred_masks"]
    assert (la - lb).abs().max() > 0.05
    with open_video(silent_mp4) as silent:
        session = engine.open_session(silent, use_audio=False)
        session.add_prompt(0, 1, points=[(40.0, 30.0)])
        assert len(dict(session.propagate(direction="forward"))) == len(silent)


def test_reprompt_and_repropagate(engine, video):
    session = engine.open_session(video)
    session.add_prompt(3, 1, points=[(40.0, 30.0)])
    dict(session.propagate(direction="forward"))
    corrected = session.add_prompt(3, 1, points=[(40.0, 30.0), (12.0, 12.0)], labels=[1, 0])
    again = dict(session.propagate(start_frame=3, direction="forward"))
    np.testing.assert_array_equal(again[3][1], corrected[1])
    session.clear_prompts(3)
    session.add_audio_prompt(3, 1)
    assert len(dict(session.propagate(start_frame=3, direction="backward"))) == 4
    session.remove_object(1)
    assert session.object_ids == []


def test_cancel_stops_between_frames_and_session_stays_usable(engine, video):
    session = engine.open_session(video)
    session.add_prompt(0, 1, points=[(40.0, 30.0)])
    stop = threading.Event()
    seen = []
    for t, _ in session.propagate(direction="forward", cancel=stop):
        seen.append(t)
        if len(seen) == 3:
            stop.set()
    assert seen == [0, 1, 2]
    assert len(dict(session.propagate(direction="forward", cancel=lambda: False))) == len(video)


@pytest.mark.parametrize("call, message", [
    (lambda s: s.add_prompt(0, 1, points=[(500.0, 10.0)]), "outside the 96x64 frame"),
    (lambda s: s.add_prompt(20, 1, points=[(5.0, 5.0)]), "frame 20 is outside the video"),
    (lambda s: s.add_prompt(0, 1, box=(50.0, 40.0, 10.0, 10.0)), "empty"),
    (lambda s: s.add_prompt(0, 1, points=[(5.0, 5.0)], labels=[1, 0]), "one label per point"),
    (lambda s: s.add_prompt(0, 1), "at least one point or a box"),
    (lambda s: list(s.propagate()), "add a prompt"),
    (lambda s: list(s.propagate(direction="sideways")), "direction"),
])
def test_bad_prompts_are_rejected_with_one_line(engine, video, call, message):
    session = engine.open_session(video)
    with pytest.raises(PromptError, match=message) as info:
        call(session)
    assert "\n" not in str(info.value)


def test_missing_or_silent_audio_is_explained(engine, silent_mp4, clip_spec):
    with open_video(silent_mp4) as silent:
        with pytest.raises(NoAudioError, match="--no-audio"):
            engine.open_session(silent)
        with pytest.raises(PromptError, match="use_audio=True"):
            engine.open_session(silent, use_audio=False).add_audio_prompt(0, 1)
    quiet = AudioTrack(np.zeros((16000, 2), dtype=np.float32), 16000)
    frames = np.stack([clip_spec.frame(i) for i in range(4)])
    with pytest.raises(AudioError, match="silent"):
        engine.open_session(frames_from_array(frames, clip_spec.fps, audio=quiet))


def test_long_propagation_keeps_a_bounded_memory_bank(engine):
    frames = np.random.default_rng(0).integers(0, 255, (KEEP_BEHIND * 3, 32, 48, 3), dtype=np.uint8)
    session = engine.open_session(frames_from_array(frames, fps=25), use_audio=False)
    session.add_prompt(0, 1, points=[(20.0, 15.0)])
    stored = []
    for _ in session.propagate(direction="forward"):
        stored.append(len(session.state["output_dict_per_obj"][0]["non_cond_frame_outputs"]))
    assert max(stored) <= 2 * KEEP_BEHIND + 1
    assert len(session.state[next(k for k in session.state if k.startswith("auralsam2"))].cache) <= 2


@pytest.mark.parametrize("n, frame, expected", [(11, 10, (5, 11)), (11, 3, (0, 5)), (10, 9, (5, 10)),
                                                 (1, 0, (0, 1)), (6, 5, (0, 6)), (7, 6, (5, 7))])
def test_windows_are_aligned_and_never_leave_a_lone_frame(engine, n, frame, expected):
    windows = FrameWindows(engine, frames_from_array(np.zeros((n, 8, 8, 3), np.uint8), fps=1), None)
    assert windows.bounds(frame) == expected
