"""The nuclio functions through nuclio_sdk.test.Platform, with payloads shaped as CVAT's lambda manager builds them.

Payload shapes (cvat/apps/lambda_manager/views.py, LambdaFunction.invoke): detector
``{"threshold"?: t, "image": b64}``; interactor ``{"image", "pos_points", "neg_points", "obj_bbox"}``
(obj_bbox null when no box); tracker start ``{"image", "shapes": [...], "states": []}``, continue
``{"image", "shapes": [null...], "states": [<the function's own JSON>...]}`` (CVAT signs the
states with ``json.dumps(s, separators=(",", ":"))`` and hands back ``json.loads`` of it).
"""
from __future__ import annotations

import json
import logging
import shutil
import threading

import numpy as np
import pytest
import yaml
from cvat_sdk.masks import decode_mask
from nuclio_sdk import Event
from nuclio_sdk.test import Platform

from napari_auralsam2.core import masks as codec
from napari_auralsam2.core.sample import make_sample_clip
from napari_auralsam2.core.video import frames_from_array, open_video
from napari_auralsam2.cvat import fingerprint as fp
from napari_auralsam2.cvat.fingerprint import FrameNotFoundError
from napari_auralsam2.cvat.nuclio_handlers import Detector, Settings, StillIndexingError, TrackerModel
from napari_auralsam2.cvat.payloads import RequestError
from napari_auralsam2.cvat.streams import MaskStream, frame_by_frame
from napari_auralsam2.cvat.tracker import TrackStore

from ._cvat_support import (
    FUNCTIONS,
    KINDS,
    TEST_ENV,
    cvat_upload,
    encode,
    load_main,
    nuclio_event,
    scene,
    tiny_engine,
)

LAMBDA_TYPES = {"detector", "interactor", "reid", "tracker"}  # FunctionKind in CVAT
MAX_STATE_BYTES = 100
#: no timed indexing passes in tests: a request that misses waits for a pass it asks for
INDEX_ON_DEMAND = {"AURALSAM2_INDEX_INTERVAL_S": "3600", "AURALSAM2_INDEX_WAIT_S": "120"}


@pytest.fixture(scope="module")
def engine():
    return tiny_engine()


@pytest.fixture(scope="module")
def cvat_data(tmp_path_factory, sample_mp4):
    """CVAT's data volume with one video task's upload (``data/1/raw/task-source.mp4``)."""
    folder = tmp_path_factory.mktemp("cvat-data")
    cvat_upload(folder, 1, sample_mp4, "task-source.mp4")
    return folder


@pytest.fixture(scope="module")
def functions(engine, cvat_data, tmp_path_factory):
    """The three main.py modules, initialised by the platform with the test environment."""
    env = dict(TEST_ENV, AURALSAM2_CVAT_DATA=str(cvat_data), AURALSAM2_TRACKER_CAPACITY="4",
               AURALSAM2_INDEX_CACHE=str(tmp_path_factory.mktemp("index")), **INDEX_ON_DEMAND)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        platform = Platform()
        mains = {kind: load_main(kind) for kind in KINDS}
        for main in mains.values():  # init_context runs on the first call
            platform.call_handler(main.handler, Event(body={}))
    yield platform, mains
    for main in mains.values():
        platform._get_handler_context(main.handler).user_data.model.close()


def call(functions, kind: str, body) -> tuple[int, object]:
    platform, mains = functions
    response = platform.call_handler(mains[kind].handler, Event(body=body))
    assert response.content_type == "application/json"
    return response.status_code, json.loads(response.body)


def cvat_state_round_trip(states: list) -> list:
    """What comes back after CVAT signed the states and verified them on the next call."""
    return [None if s is None else json.loads(json.dumps(s, separators=(",", ":"))) for s in states]


# -- function.yaml -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", ["function.yaml", "function-gpu.yaml"])
def test_function_yaml_carries_what_cvat_reads(kind, config):
    folder = FUNCTIONS / kind / "nuclio"
    data = yaml.safe_load((folder / config).read_text())
    meta, spec = data["metadata"], data["spec"]
    anno = meta["annotations"]
    # LambdaFunction.__init__: id, type, spec labels (unique), numeric/boolean interactor fields
    assert meta["name"] == f"pth-auralsam2-{kind}" and meta["namespace"] == "cvat"
    assert anno["type"] == kind and kind in LAMBDA_TYPES
    assert anno["name"] and int(anno["version"]) == 2 and spec["description"]
    labels = json.loads(anno.get("spec") or "[]")
    assert len({label["name"] for label in labels}) == len(labels)
    if kind == "interactor":
        assert int(anno["min_pos_points"]) == 0 and int(anno["min_neg_points"]) == 0
        assert anno["startswith_box_optional"] is True and "startswith_box" not in anno
    if kind == "tracker":
        assert anno["supported_shape_types"].split(",") == ["rectangle", "polygon", "mask"]
    if kind == "detector":
        env = {e["name"]: e["value"] for e in spec["env"]}
        assert labels == [{"id": 0, "name": env["AURALSAM2_LABEL"], "type": "mask"}]
        (volume,) = spec["volumes"]  # CVAT's own data volume (compose project cvat, volume cvat_data)
        mount = volume["volumeMount"]
        assert volume["volume"]["hostPath"]["path"] == "cvat_cvat_data" and volume["volume"]["name"] == mount["name"]
        assert mount["readOnly"] is True and mount["mountPath"] == env["AURALSAM2_CVAT_DATA"]
        assert env["AURALSAM2_VIDEOS"] == ""  # deploy.sh --videos adds a folder of videos
    assert spec["handler"] == "main:handler" and spec["eventTimeout"] == "30s"
    trigger = spec["triggers"]["myHttpTrigger"]
    assert trigger["kind"] == "http" and trigger["attributes"]["maxRequestBodySize"] == 32 * 2**20
    # weights are fetched at build time into AURALSAM2_HOME; the package is installed from a wheel
    home = {e["name"]: e["value"] for e in spec["env"]}["AURALSAM2_HOME"]
    build = " ".join(step["value"] for step in spec["build"]["directives"]["preCopy"])
    assert f"-o {home}/auralsam2_avs_v2.pth" in build and f"-o {home}/sam2_hiera_large.pt" in build
    assert "--no-build-isolation sam2==1.1.0" in build
    assert "pip install --no-cache-dir /opt/nuclio/wheels/" in spec["build"]["directives"]["postCopy"][0]["value"]
    gpu = config == "function-gpu.yaml"
    assert ("resources" in spec and spec["resources"]["limits"]["nvidia.com/gpu"] == 1) == gpu
    assert trigger["maxWorkers"] == (1 if gpu else 2)
    assert ("cu128" in build) == gpu and ("NVIDIA_VISIBLE_DEVICES=all" in build) == gpu


def test_model_handlers_match_the_declared_types(functions):
    _, mains = functions
    for kind, main in mains.items():
        assert main.ModelHandler.kind == kind


# -- interactor --------------------------------------------------------------------------------
def test_interactor_returns_a_full_frame_mask(functions):
    frame = scene()
    body = {"image": encode(frame), "pos_points": [[20.5, 18.0]], "neg_points": [[60.0, 40.0]], "obj_bbox": None}
    status, reply = call(functions, "interactor", body)
    assert status == 200
    mask = np.asarray(reply["mask"])
    assert mask.shape == frame.shape[:2] and set(np.unique(mask)) <= {0, 1} and mask.any()
    boxed = dict(body, pos_points=[], neg_points=[], obj_bbox=[[10, 12], [32, 30]])
    status, reply = call(functions, "interactor", boxed)
    assert status == 200 and np.asarray(reply["mask"]).shape == frame.shape[:2]


BAD_INTERACTOR = [
    (b"{not json", 400, "not JSON"),
    (b"", 400, "empty"),
    ([1, 2], 400, "JSON object"),
    ({"pos_points": [[1, 1]], "neg_points": []}, 400, "'image'"),
    ({"image": None, "pos_points": [[1, 1]], "neg_points": []}, 400, "'image'"),
    ({"image": "***", "pos_points": [[1, 1]], "neg_points": []}, 400, "base64"),
    ({"image": "aGVsbG8gd29ybGQ=", "pos_points": [[1, 1]], "neg_points": []}, 400, "not a readable image"),
    ({"image": 42, "pos_points": [[1, 1]], "neg_points": []}, 400, "base64 string"),
    ({"image": "IMG", "neg_points": []}, 400, "pos_points"),
    ({"image": "IMG", "pos_points": [[100, 10]], "neg_points": []}, 400, "outside the 64x48 image"),
    ({"image": "IMG", "pos_points": [[10, -1]], "neg_points": []}, 400, "outside"),
    ({"image": "IMG", "pos_points": [[10, float("nan")]], "neg_points": []}, 400, "finite"),
    ({"image": "IMG", "pos_points": [[10]], "neg_points": []}, 400, "[x, y] pairs"),
    ({"image": "IMG", "pos_points": "10,10", "neg_points": []}, 400, "list"),
    ({"image": "IMG", "pos_points": [], "neg_points": [[5, 5]]}, 400, "at least one positive point or a box"),
    ({"image": "IMG", "pos_points": [], "neg_points": [], "obj_bbox": [[1, 1], [90, 9]]}, 400, "corner"),
    ({"image": "IMG", "pos_points": [], "neg_points": [], "obj_bbox": [[5, 5], [5, 9]]}, 400, "empty"),
    ({"image": "IMG", "pos_points": [], "neg_points": [], "obj_bbox": "box"}, 400, "obj_bbox"),
    (b"x" * (32 * 2**20 + 1), 413, "more than"),
]


@pytest.mark.parametrize("body, status, message", BAD_INTERACTOR)
def test_interactor_refuses_bad_requests_and_stays_up(functions, body, status, message):
    if isinstance(body, dict) and body.get("image") == "IMG":
        body = dict(body, image=encode(scene()))
    code, reply = call(functions, "interactor", body)
    assert code == status and message in reply["error"]


def test_interactor_refuses_oversized_images(functions):
    huge = "A" * (32 * 2**20 + 4)
    code, reply = call(functions, "interactor", {"image": huge, "pos_points": [[1, 1]], "neg_points": []})
    assert code == 413 and "more than" in reply["error"]


DEPTH = 100_000


def test_interactor_answers_400_to_a_deeply_nested_body(functions):
    """issue 14 case 9: nuclio cannot decode a 100k-deep JSON body and passes its bytes on."""
    platform, mains = functions
    event = nuclio_event(b"[" * DEPTH + b"]" * DEPTH)
    assert isinstance(event.body, bytes)  # what nuclio_sdk's own decoding leaves
    response = platform.call_handler(mains["interactor"].handler, event)
    assert response.status_code == 400 and "nests too deeply" in json.loads(response.body)["error"]
    nested: list = [[1, 2]]
    for _ in range(DEPTH):  # a decoded body can hold deep values too: error messages quote them briefly
        nested = [nested]
    code, reply = call(functions, "interactor", {"image": encode(scene()), "pos_points": nested, "neg_points": []})
    assert code == 400 and "[x, y] pairs" in reply["error"] and len(reply["error"]) < 200
    code, reply = call(functions, "tracker", {"image": encode(scene()), "shapes": [None], "states": [nested]})
    assert code == 400 and "malformed tracker state" in reply["error"] and len(reply["error"]) < 200


# -- tracker -----------------------------------------------------------------------------------
TRACK_FRAMES = 8


def test_tracker_state_round_trip_over_many_frames(functions, engine):
    frames = [scene(shift=k) for k in range(TRACK_FRAMES)]
    start = np.zeros(frames[0].shape[:2], bool)
    start[12:30, 10:32] = True
    shape = {"type": "mask", "points": codec.to_rle(start)}
    status, reply = call(functions, "tracker", {"image": encode(frames[0]), "shapes": [shape], "states": []})
    assert status == 200 and reply["shapes"] == [shape]  # the user's shape stands on the first frame
    served = []
    for k in range(1, TRACK_FRAMES):
        states = cvat_state_round_trip(reply["states"])
        assert len(json.dumps(states[0], separators=(",", ":"))) < MAX_STATE_BYTES
        status, reply = call(functions, "tracker", {"image": encode(frames[k]), "shapes": [None], "states": states})
        assert status == 200, reply
        assert reply["states"] == [{"id": states[0]["id"], "step": k}]
        (mask,) = reply["shapes"]
        assert mask["type"] == "mask"
        served.append(decode_mask(mask["points"], image_width=64, image_height=48))
    # the server-side memory gives exactly what one uninterrupted session over these frames gives
    padded = frames + [frames[-1]] * 2  # keeps the offline windows single-frame, as in the stream
    offline = MaskStream(frame_by_frame(engine), frames_from_array(np.stack(padded), fps=25.0), 0,
                         use_audio=False, box=(10.0, 12.0, 32.0, 30.0))
    offline.advance_to(0)
    for k, mask in enumerate(served, start=1):
        expected, _ = offline.advance_to(k)
        assert expected.any() and np.array_equal(mask, expected)
    offline.close()


def test_tracker_keeps_each_shape_type_and_form(functions):
    box = [10.0, 12.0, 32.0, 30.0]
    polygon = [10.0, 12.0, 32.0, 12.0, 32.0, 30.0, 10.0, 30.0]
    shapes = [{"type": "rectangle", "points": box}, {"type": "polygon", "points": polygon}]
    status, reply = call(functions, "tracker", {"image": encode(scene()), "shapes": shapes, "states": []})
    assert status == 200 and reply["shapes"] == shapes and len({s["id"] for s in reply["states"]}) == 2
    for k in (1, 2):
        states = cvat_state_round_trip(reply["states"])
        body = {"image": encode(scene(shift=k)), "shapes": [None, None], "states": states}
        status, reply = call(functions, "tracker", body)
        assert status == 200, reply
        rect, poly = reply["shapes"]
        assert rect["type"] == "rectangle" and len(rect["points"]) == 4
        assert poly["type"] == "polygon" and len(poly["points"]) >= 6
        x0, y0, x1, y1 = rect["points"]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 48


def test_tracker_speaks_the_legacy_rectangle_protocol(functions):
    status, reply = call(functions, "tracker", {"image": encode(scene()), "shapes": [[10, 12, 32, 30]], "states": []})
    assert status == 200 and reply["shapes"] == [[10.0, 12.0, 32.0, 30.0]]
    for k in (1, 2):
        body = {"image": encode(scene(shift=k)), "shapes": [None], "states": cvat_state_round_trip(reply["states"])}
        status, reply = call(functions, "tracker", body)
        assert status == 200 and isinstance(reply["shapes"][0], list) and len(reply["shapes"][0]) == 4


def test_tracker_errors_are_clear(functions):
    status, reply = call(functions, "tracker", {"image": encode(scene()), "shapes": [[10, 12, 32, 30]], "states": []})
    state = reply["states"][0]
    nxt = {"image": encode(scene(shift=1)), "shapes": [None], "states": [state]}
    assert call(functions, "tracker", nxt)[0] == 200
    code, reply = call(functions, "tracker", nxt)  # the same state again: the track moved on
    assert code == 409 and "step 0" in reply["error"]
    code, reply = call(functions, "tracker", {"image": encode(scene()), "shapes": [None],
                                              "states": [{"id": "f" * 32, "step": 3}]})
    assert code == 410 and "unknown or expired" in reply["error"]
    for bad in ({"id": "x", "step": 1}, {"id": "f" * 32}, "state", {"id": "f" * 32, "step": True}):
        code, reply = call(functions, "tracker", {"image": encode(scene()), "shapes": [None], "states": [bad]})
        assert code == 400 and "malformed tracker state" in reply["error"]
    small = {"image": encode(scene(height=40)), "shapes": [None], "states": [dict(state, step=1)]}
    code, reply = call(functions, "tracker", small)
    assert code == 400 and "64x40" in reply["error"]
    for shapes, message in (([{"type": "ellipse", "points": [1, 2, 3, 4]}], "not supported"),
                            ([[1, 2, 3]], "4 numbers"), ([{"type": "polygon", "points": [1, 2, 3, 4]}], "3 [x, y]"),
                            ([{"type": "mask", "points": [5, 0, 0, 0, 0]}], "bad mask"), ([None], "neither"),
                            ([[70, 50, 90, 60]], "empty inside")):
        code, reply = call(functions, "tracker", {"image": encode(scene()), "shapes": shapes, "states": []})
        assert code == 400 and message in reply["error"], reply
    code, reply = call(functions, "tracker", {"image": encode(scene()), "shapes": [], "states": []})
    assert code == 400 and "nothing to track" in reply["error"]


def test_a_refused_tracker_batch_advances_no_track(functions):
    """issue 14 case 11: one forged state refuses the batch without moving the valid track, so
    CVAT's retry with the state it still holds is served, not answered 409."""
    status, reply = call(functions, "tracker", {"image": encode(scene()), "shapes": [[10, 12, 32, 30]], "states": []})
    valid = cvat_state_round_trip(reply["states"])[0]
    forged = {"id": "e" * 32, "step": 0}
    for states, code in (([valid, forged], 410), ([valid, dict(valid, step=5)], 400), ([valid, valid], 400)):
        status, reply = call(functions, "tracker", {"image": encode(scene(shift=1)), "shapes": [None, None],
                                                    "states": states})
        assert status == code, reply
    small = encode(scene(height=40))  # a frame of another size for the second track only
    status, reply = call(functions, "tracker", {"image": small, "shapes": [None, [1, 1, 9, 9]], "states": [valid]})
    assert status == 400 and "64x40" in reply["error"]
    status, reply = call(functions, "tracker", {"image": encode(scene(shift=1)), "shapes": [None], "states": [valid]})
    assert status == 200 and reply["states"] == [{"id": valid["id"], "step": 1}]


def test_tracker_memory_is_bounded_and_expires(engine):
    model = TrackerModel(Settings(tracker_capacity=2), engine=engine)
    first = model.handle({"image": encode(scene()), "shapes": [[10, 12, 32, 30]], "states": []})["states"][0]
    for _ in range(2):
        model.handle({"image": encode(scene()), "shapes": [[10, 12, 32, 30]], "states": []})
    assert len(model.tracker.store) == 2
    with pytest.raises(RequestError, match="unknown or expired") as info:
        model.handle({"image": encode(scene(shift=1)), "shapes": [None], "states": [first]})
    assert info.value.status == 410
    store = TrackStore(capacity=4, idle_s=0.0)
    model.tracker.store = store
    state = model.handle({"image": encode(scene()), "shapes": [[10, 12, 32, 30]], "states": []})["states"][0]
    with pytest.raises(RequestError, match="unknown or expired"):
        model.handle({"image": encode(scene(shift=1)), "shapes": [None], "states": [state]})
    assert len(store) == 0


# -- detector ----------------------------------------------------------------------------------
def test_detector_finds_frames_and_keeps_memory_across_calls(functions, cvat_data):
    with open_video(cvat_data / "data" / "1" / "raw" / "task-source.mp4") as video:
        frames = [video.frame(i) for i in range(6)]
        height, width = video.height, video.width
    segmenter = None
    for i, frame in enumerate(frames[:4]):  # a video task: CVAT sends PNG frames, in order
        status, reply = call(functions, "detector", {"image": encode(frame)})
        assert status == 200, reply
        (item,) = reply
        assert item["label"] == "sounding object" and item["type"] == "mask"
        assert 0 <= float(item["confidence"]) <= 1
        stored = codec.detector_mask_to_rle(item["mask"])  # what CVAT's server stores
        decoded = decode_mask(stored, image_width=width, image_height=height)
        assert decoded.any() and np.array_equal(decoded, codec.from_detector_mask(item["mask"], width, height))
        assert len(item["points"]) >= 6
        current = _segmenter(functions)
        segmenter = segmenter or current
        assert current._stream.last_frame == i and current._stream.start_frame == 0
    stream = segmenter._stream
    status, _ = call(functions, "detector", {"threshold": 0.5, "image": encode(frames[5], "JPEG", quality=90)})
    assert status == 200 and segmenter._stream is stream and stream.last_frame == 5  # a skipped frame
    status, _ = call(functions, "detector", {"image": encode(frames[2])})  # backwards: a new masklet
    assert status == 200 and segmenter._stream is not stream and segmenter._stream.start_frame == 2
    status, reply = call(functions, "detector", {"threshold": 1.0, "image": encode(frames[3])})
    assert status == 200 and reply == []  # below the score threshold


def _segmenter(functions):
    platform, mains = functions
    return platform._get_handler_context(mains["detector"].handler).user_data.model.segmenter


def test_detector_says_when_a_frame_is_not_in_the_volume(functions):
    code, reply = call(functions, "detector", {"image": encode(np.full((64, 96, 3), (250, 0, 250), np.uint8))})
    assert code == 500 and "matches no frame" in reply["error"]
    code, reply = call(functions, "detector", {"threshold": 2, "image": encode(scene())})
    assert code == 400 and "threshold" in reply["error"]
    code, reply = call(functions, "detector", {"threshold": 0.5})
    assert code == 400 and "'image'" in reply["error"]


def test_detector_picks_up_tasks_created_while_it_runs(functions, cvat_data, tmp_path):
    """A video task created after the function started: its upload is found without a restart."""
    clip = make_sample_clip(tmp_path / "concert.mp4", seconds=0.5, fps=10, size=(64, 48), seed=4)
    cvat_upload(cvat_data, 2, clip.path)
    with open_video(clip.path) as video:
        frame = video.frame(2)
    status, reply = call(functions, "detector", {"image": encode(frame)})
    assert status == 200 and len(reply) == 1
    match = _segmenter(functions)._stream_key
    assert match[0] == cvat_data / "data" / "2" / "raw" / "concert.mp4"


def test_detector_serves_good_files_while_one_is_unreadable(engine, sample_mp4, tmp_path, caplog):
    """issue 14 case 10: a video still being copied into the volume neither stops the function
    from starting nor fails requests for frames of good files; it is logged once, read when complete."""
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(sample_mp4, folder / "good.mp4")
    other = make_sample_clip(tmp_path / "other.mp4", seconds=0.5, fps=10, size=(64, 48), seed=5).path
    whole = other.read_bytes()
    copying = folder / "being_copied.mp4"
    copying.write_bytes(whole[: len(whole) // 2])
    caplog.set_level(logging.WARNING)
    model = Detector(Settings(videos=str(folder), index_cache="", index_interval_s=3600, index_wait_s=120),
                     engine=engine)
    try:
        with open_video(sample_mp4) as video:
            for k in range(3):
                assert len(model.handle({"image": encode(video.frame(k))})) == 1
        with pytest.raises(FrameNotFoundError):  # a frame of the partial file: not guessed
            with open_video(other) as video:
                model.handle({"image": encode(video.frame(1))})
        assert sum("being_copied.mp4" in record.getMessage() for record in caplog.records) == 1
        copying.write_bytes(whole)  # the copy completes
        with open_video(other) as video:
            assert len(model.handle({"image": encode(video.frame(1))})) == 1
    finally:
        model.close()


def test_detector_answers_503_while_a_new_video_is_still_being_indexed(engine, sample_mp4, tmp_path, monkeypatch):
    """A long new video is indexed in the background: the request that needs it is told to retry."""
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(sample_mp4, folder / "long.mp4")
    release, original = threading.Event(), fp.video_fingerprints

    def slow(path):  # stands for a video that takes minutes to read
        assert release.wait(timeout=300)
        return original(path)

    monkeypatch.setattr(fp, "video_fingerprints", slow)
    model = Detector(Settings(videos=str(folder), cvat_data="", index_cache="", index_interval_s=3600,
                              index_wait_s=0.2), engine=engine)
    try:
        with open_video(sample_mp4) as video:
            frame = encode(video.frame(1))
        with pytest.raises(StillIndexingError, match=r"1 new video\(s\) are still being indexed \(long.mp4\)"):
            model.handle({"image": frame})
        release.set()
        model.settings.index_wait_s = 120
        assert len(model.handle({"image": frame})) == 1
    finally:
        release.set()
        model.close()
