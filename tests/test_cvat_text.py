"""Text prompts in the CVAT paths: the nuclio detector (AURALSAM2_TEXT, or a text per label), the cvat-sdk
function (``-p text=...``) and the tracks writer (``--text``); an AVS model refuses text at start-up."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from nuclio_sdk import Event
from nuclio_sdk.test import Platform

import napari_auralsam2.cvat as cvat_module
from napari_auralsam2.core.errors import AuralSAM2Error, PromptError
from napari_auralsam2.core.sample import make_sample_clip
from napari_auralsam2.core.video import open_video
from napari_auralsam2.cvat.nuclio_handlers import Detector, Settings
from napari_auralsam2.cvat.streams import shared_engine

from ._cvat_stub import Stub
from ._cvat_support import PRESENCE_BIAS, TEST_ENV, encode, load_main, tiny_engine
from ._tiny_text import write_tiny_text_model
from .test_cvat_nuclio import INDEX_ON_DEMAND
from .test_cvat_tracks import methods, run_cli, video_task

GUITAR, DOG = "the man playing guitar", "the dog that is barking"


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return write_tiny_text_model(tmp_path_factory.mktemp("text") / "tiny")


@pytest.fixture(scope="module")
def ref_engine(text_dir):
    """The shared Ref-AVS engine the functions below load (hiera_t at 128, random, object head biased)."""
    engine = shared_engine(model="hiera_t", image_size=128, weights="random", device="cpu", release="refavs",
                           text_model=str(text_dir))
    head = engine.model.v_model.sam_mask_decoder.pred_obj_score_head
    with torch.no_grad():
        [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1].bias.fill_(PRESENCE_BIAS)
    return engine


@pytest.fixture(scope="module")
def volume(tmp_path_factory, sample_mp4):
    folder = tmp_path_factory.mktemp("videos")
    shutil.copy(sample_mp4, folder / "task-source.mp4")
    return folder


def ref_env(volume, text_dir, index) -> dict[str, str]:
    return dict(TEST_ENV, AURALSAM2_RELEASE="refavs", AURALSAM2_TEXT_MODEL=str(text_dir),
                AURALSAM2_VIDEOS=str(volume), AURALSAM2_CVAT_DATA="", AURALSAM2_INDEX_CACHE=str(index),
                **INDEX_ON_DEMAND)


def test_nuclio_detector_reads_its_text_from_the_environment(ref_engine, volume, text_dir, tmp_path, monkeypatch):
    for key, value in dict(ref_env(volume, text_dir, tmp_path), AURALSAM2_TEXT=GUITAR).items():
        monkeypatch.setenv(key, value)
    main = load_main("detector")
    platform = Platform()
    with open_video(volume / "task-source.mp4") as video:
        frames = [video.frame(i) for i in range(2)]
    try:
        for frame in frames:
            response = platform.call_handler(main.handler, Event(body={"image": encode(frame)}))
            reply = json.loads(response.body)
            assert response.status_code == 200, reply
            (item,) = reply
            assert item["label"] == "sounding object" and item["type"] == "mask"
        model = platform._get_handler_context(main.handler).user_data.model
        assert model.engine is ref_engine
        assert model.segmenter._stream.session.state["auralsam2_texts"] == {1: GUITAR}
    finally:
        platform._get_handler_context(main.handler).user_data.model.close()


def test_nuclio_detector_segments_one_object_per_labelled_text(ref_engine, volume, text_dir, tmp_path):
    labels = json.dumps([{"id": 0, "name": "guitarist", "type": "mask", "text": GUITAR},
                         {"id": 1, "name": "dog", "type": "mask", "text": DOG}])
    settings = Settings.from_env(dict(ref_env(volume, text_dir, tmp_path), AURALSAM2_LABELS=labels))
    detector = Detector(settings, ref_engine)
    try:
        with open_video(volume / "task-source.mp4") as video:
            reply = detector.handle({"image": encode(video.frame(0))})
        assert [item["label"] for item in reply] == ["guitarist", "dog"]
        texts = [segmenter._stream.session.state["auralsam2_texts"] for _, segmenter in detector.segmenters]
        assert texts == [{1: GUITAR}, {1: DOG}]
    finally:
        detector.close()


@pytest.mark.parametrize("env, message", [
    ({"AURALSAM2_LABELS": "[{\"text\": \"x\"}]"}, "AURALSAM2_LABELS is not a JSON list"),
    ({"AURALSAM2_TEXT": "the man " * 15}, "tokens long"),
    ({}, "has no text"),  # Ref-AVS weights and no text
])
def test_nuclio_detector_settings_fail_at_start_up(ref_engine, volume, text_dir, tmp_path, env, message):
    settings = Settings.from_env(dict(ref_env(volume, text_dir, tmp_path), **env))
    with pytest.raises(AuralSAM2Error, match=message) as info:
        Detector(settings, ref_engine)
    assert "\n" not in str(info.value)


def test_an_avs_detector_refuses_a_text(volume, tmp_path):
    settings = Settings.from_env(dict(TEST_ENV, AURALSAM2_VIDEOS=str(volume), AURALSAM2_CVAT_DATA="",
                                      AURALSAM2_INDEX_CACHE=str(tmp_path), AURALSAM2_TEXT=GUITAR))
    with pytest.raises(PromptError, match="AVSBench variant.*cannot read text"):
        Detector(settings, tiny_engine())


def test_cvat_sdk_function_takes_a_text(ref_engine, sample_mp4, text_dir):
    function = cvat_module.create(video=str(sample_mp4), model="hiera_t", image_size=128, weights="random",
                                  device="cpu", release="refavs", text_model=str(text_dir), text=GUITAR)
    assert function.engine is ref_engine and function.segmenter.prompt.text == GUITAR
    with pytest.raises(PromptError, match="has no text"):
        cvat_module.create(video=str(sample_mp4), model="hiera_t", image_size=128, weights="random", device="cpu",
                           release="refavs", text_model=str(text_dir))


def test_tracks_writer_names_objects_in_words(ref_engine, text_dir, monkeypatch, tmp_path):
    path = tmp_path / "source.mp4"
    make_sample_clip(path, seconds=0.6, fps=10, size=(64, 48), seed=1)
    with open_video(path) as video:
        frames = [video.frame(i) for i in range(len(video))]
    with Stub(video_task(frames)) as stub:
        code = run_cli(stub, "--task", "5", "--video", str(path), "--release", "refavs", "--text-model",
                       str(text_dir), "--text", GUITAR, "--text", f"2:{DOG}", monkeypatch=monkeypatch)
    assert code == 0 and stub.unexpected == []
    assert set(methods(stub)) == {"GET", "PATCH"}
    tracks = [body["tracks"][0] for method, body in stub.bodies if method == "PATCH"]
    assert len(tracks) == 2 and all(t["source"] == "auto" and t["frame"] == 0 for t in tracks)
