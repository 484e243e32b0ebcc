"""Requests a real CVAT 2.73 server sent to these functions, replayed through nuclio_sdk.test.Platform.

The recordings (tests/data/cvat-2.73-requests, see its README) are replayed with their headers
and bodies as nuclio's Python wrapper hands them over (the JSON body decoded by nuclio_sdk
itself), and the replies are checked against what CVAT's lambda manager parses
(cvat/apps/lambda_manager/views.py): the detector's mask items and label, the interactor's
full-frame mask, the tracker's declared-type shapes and its states through CVAT's signing and
verification. The recorded frames are ffmpeg ``testsrc`` frames of a 30-frame video task; the
detector finds them in a ``testsrc`` video placed where CVAT keeps a task's upload.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from cvat_sdk.masks import decode_mask
from PIL import Image

from napari_auralsam2.core import masks as codec
from napari_auralsam2.core.audio import AudioTrack
from napari_auralsam2.core.video import write_video

from ._cvat_support import FUNCTIONS, TEST_ENV, cvat_upload, nuclio_event, start_functions, tiny_engine

RECORDED = Path(__file__).parent / "data" / "cvat-2.73-requests"
TESTSRC = "testsrc=size=320x240:rate=10"
TESTSRC_FRAMES = 30
TONE_HZ, AUDIO_RATE = 1000.0, 16_000
#: the server's TimestampSigner output is "<value>:<timestamp>:<signature>"
SIGNED_PARTS = 3


def recorded(kind: str) -> dict:
    return json.loads((RECORDED / f"{kind}.json").read_text())


def recorded_image(kind: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(recorded(kind)["body"]["image"]))).convert("RGB"))


def pattern_frames(count: int) -> list[np.ndarray]:
    """ffmpeg's test pattern, the source of the recorded task (through PyAV's libavfilter)."""
    graph = av.filter.Graph()
    source, sink = graph.add("testsrc", TESTSRC.split("=", 1)[1]), graph.add("buffersink")
    source.link_to(sink)
    graph.configure()
    return [sink.pull().to_ndarray(format="rgb24") for _ in range(count)]


@pytest.fixture(scope="module")
def functions(tmp_path_factory):
    """The three functions, the detector with a CVAT data volume holding the task's upload."""
    tiny_engine()
    data = tmp_path_factory.mktemp("cvat-data")
    t = np.arange(TESTSRC_FRAMES * AUDIO_RATE // 10) / AUDIO_RATE
    tone = AudioTrack((0.5 * np.sin(2 * np.pi * TONE_HZ * t))[:, None].astype(np.float32), AUDIO_RATE)
    video = write_video(tmp_path_factory.mktemp("upload") / "testsrc.mp4", pattern_frames(TESTSRC_FRAMES), 10.0, tone)
    cvat_upload(data, 1, video)
    env = dict(TEST_ENV, AURALSAM2_CVAT_DATA=str(data), AURALSAM2_INDEX_CACHE="", AURALSAM2_INDEX_INTERVAL_S="3600",
               AURALSAM2_INDEX_WAIT_S="120")
    platform, mains = start_functions(env)
    yield platform, mains
    for main in mains.values():
        platform._get_handler_context(main.handler).user_data.model.close()


def replay(functions, kind: str, body: dict | None = None) -> tuple[int, object]:
    """POST the recorded request (or the same request with another body) to the function."""
    platform, mains = functions
    request = recorded(kind)
    raw = json.dumps(request["body"] if body is None else body).encode()
    headers = dict(request["headers"], **{"Content-Length": str(len(raw))})
    event = nuclio_event(raw, headers, request["method"], request["path"])
    assert isinstance(event.body, dict)  # nuclio decoded the JSON, as for CVAT's requests
    response = platform.call_handler(mains[kind].handler, event)
    assert response.content_type == "application/json"  # CVAT calls reply.json()
    return response.status_code, json.loads(response.body)


def cvat_signed_round_trip(state) -> object:
    """A state out through CVAT (JSON with compact separators, signed) and back (verified, decoded)."""
    signed = f"{json.dumps(state, separators=(',', ':'))}:1kQ2xy:c2lnbmF0dXJl"
    value = signed.rsplit(":", SIGNED_PARTS - 1)[0]
    return json.loads(value)


def spec_labels(kind: str) -> set[str]:
    config = yaml.safe_load((FUNCTIONS / kind / "nuclio" / "function.yaml").read_text())
    return {label["name"] for label in json.loads(config["metadata"]["annotations"].get("spec") or "[]")}


def test_recorded_frames_are_testsrc():
    frames = pattern_frames(4)
    assert np.abs(recorded_image("detector").astype(int) - frames[0]).mean() < 3
    assert np.abs(recorded_image("interactor").astype(int) - frames[3]).mean() < 3


def test_recorded_detector_request(functions):
    status, reply = replay(functions, "detector")
    assert status == 200 and isinstance(reply, list) and len(reply) == 1
    (item,) = reply
    height, width = recorded_image("detector").shape[:2]
    # DetectionResultConverter: a model label of the function's spec, a ShapeType, the mask layout
    assert item["label"] in spec_labels("detector") and item["type"] == "mask"
    *bitmap, xtl, ytl, xbr, ybr = item["mask"]
    assert all(isinstance(v, int) for v in item["mask"]) and set(bitmap) <= {0, 1}
    assert 0 <= xtl <= xbr < width and 0 <= ytl <= ybr < height
    assert len(bitmap) == (xbr - xtl + 1) * (ybr - ytl + 1)
    stored = codec.detector_mask_to_rle(item["mask"])  # what the server stores (mask_to_rle of the crop)
    assert np.array_equal(decode_mask(stored, image_width=width, image_height=height),
                          codec.from_detector_mask(item["mask"], width, height))
    points = item["points"]  # used with "convert masks to polygons"
    assert len(points) >= 6 and len(points) % 2 == 0
    assert isinstance(item["confidence"], str) and 0 <= float(item["confidence"]) <= 1
    threshold = recorded("detector")["body"]["threshold"]
    assert float(item["confidence"]) >= threshold
    platform, mains = functions
    segmenter = platform._get_handler_context(mains["detector"].handler).user_data.model.segmenter
    path, _ = segmenter._stream_key  # located in the task's upload, on its first frame
    assert path.parts[-4:] == ("data", "1", "raw", "testsrc.mp4") and segmenter._stream.last_frame == 0


def test_recorded_interactor_request(functions):
    status, reply = replay(functions, "interactor")
    assert status == 200 and set(reply) == {"mask"}
    mask = np.asarray(reply["mask"])
    assert mask.shape == recorded_image("interactor").shape[:2]  # full frame: no "bounds"
    assert set(np.unique(mask)) <= {0, 1} and mask.any()


def test_recorded_tracker_request_and_signed_states(functions):
    request = recorded("tracker")["body"]
    status, reply = replay(functions, "tracker")
    assert status == 200 and len(reply["states"]) == len(request["shapes"]) == len(reply["shapes"])
    assert reply["shapes"] == request["shapes"]  # declared shape types: passed through as given
    states = [cvat_signed_round_trip(state) for state in reply["states"]]
    assert states == reply["states"] and len(json.dumps(states[0], separators=(",", ":"))) < 100
    for step in (1, 2):  # CVAT continues: no shapes, the states it verified
        body = {"image": request["image"], "shapes": [None] * len(states), "states": states}
        status, reply = replay(functions, "tracker", body)
        assert status == 200, reply
        (shape,) = reply["shapes"]
        assert shape["type"] == "rectangle" and len(shape["points"]) == 4
        x0, y0, x1, y1 = shape["points"]
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
        states = [cvat_signed_round_trip(state) for state in reply["states"]]
        assert states[0]["step"] == step
