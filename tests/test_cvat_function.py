"""The cvat-sdk detection function (``cvat-cli task auto-annotate --function-module napari_auralsam2.cvat``).

Driven by cvat-sdk itself: cvat-cli's ``task auto-annotate`` (in process) against the loopback stub
(an image task made of JPEG frames of a real PyAV video), and frame by frame through the driver's
own validation (``_AnnotationMapper``) with its own context objects.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from cvat_cli.__main__ import main as cvat_cli_main
from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl
from cvat_sdk.masks import decode_mask
from PIL import Image

import napari_auralsam2.cvat as cvat_module
from napari_auralsam2.core.errors import AuralSAM2Error
from napari_auralsam2.core.video import open_video
from napari_auralsam2.cvat.fingerprint import FrameNotFoundError

from ._cvat_stub import TOKEN, Stub, StubTask
from ._cvat_support import tiny_engine

TINY = {"model": "hiera_t", "image_size": 128, "weights": "random", "device": "cpu"}
N_FRAMES = 5
JPEG_QUALITY = 75


@pytest.fixture(scope="module")
def engine():
    return tiny_engine()


@pytest.fixture(scope="module")
def task_frames(sample_mp4):
    """The first frames of the video as an image task holds them (JPEG files)."""
    with open_video(sample_mp4) as video:
        frames = [video.frame(i) for i in range(N_FRAMES)]
    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, "JPEG", quality=JPEG_QUALITY)
        encoded.append(buffer.getvalue())
    return frames, encoded


def mapper_for(function, conv_mask_to_poly=False):
    """cvat-sdk's own checker of detect() results (the one annotate_task applies)."""
    import logging

    task_labels = [type("L", (), {"id": 41, "name": "sounding object", "type": "any", "attributes": [],
                                   "sublabels": []})()]
    return _AnnotationMapper(logging.getLogger("test"), function.spec.labels, task_labels,
                             allow_unmatched_labels=False, conv_mask_to_poly=conv_mask_to_poly)


def test_cvat_cli_auto_annotate_runs_the_function_on_an_image_task(engine, sample_mp4, task_frames, tmp_path,
                                                                   monkeypatch):
    frames, encoded = task_frames
    height, width = frames[0].shape[:2]
    task = StubTask(id=3, frames=encoded, width=width, height=height, chunk_type="imageset")
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with Stub(task) as stub:
        code = cvat_cli_main(["--server-host", stub.url, "task", "auto-annotate", str(task.id),
                              "--function-module", "napari_auralsam2.cvat", "-p", f"video=str:{sample_mp4}",
                              "-p", "model=str:hiera_t", "-p", "image_size=int:128", "-p", "weights=str:random",
                              "-p", "device=str:cpu", "-p", "threshold=float:0.5"])
    assert code == 0 and stub.unexpected == []
    ((method, body),) = stub.bodies
    assert method == "PATCH"  # appended: existing annotations are kept
    shapes = body["shapes"]
    assert [s["frame"] for s in shapes] == list(range(N_FRAMES))
    assert all(s["type"] == "mask" and s["label_id"] == 7 and s["source"] == "auto" for s in shapes)
    for shape in shapes:
        assert decode_mask(shape["points"], image_width=width, image_height=height).any()


def test_frames_are_located_and_tracked_in_order(engine, sample_mp4, task_frames):
    frames, encoded = task_frames
    function = cvat_module.create(video=str(sample_mp4), threshold=0.0, **TINY)
    mapper = mapper_for(function)
    order = [0, 1, 2, 4]  # a frame step / deleted frame: the stream skips ahead
    for task_frame, index in enumerate(order):
        image = Image.open(io.BytesIO(encoded[index]))
        context = _DetectionFunctionContextImpl(frame_name=f"frame_{index:06d}.jpg")
        shapes = function.detect(context, image)
        _, remapped = mapper.validate_and_remap(shapes, task_frame)
        assert len(remapped) == 1 and remapped[0].frame == task_frame
        assert function.segmenter._stream.last_frame == index
    first = function.segmenter._stream
    function.detect(_DetectionFunctionContextImpl(frame_name="again.jpg"), Image.open(io.BytesIO(encoded[1])))
    assert function.segmenter._stream is not first and function.segmenter._stream.start_frame == 1


def test_polygons_when_cvat_asks_for_them(engine, sample_mp4, task_frames):
    frames, encoded = task_frames
    function = cvat_module.create(video=str(sample_mp4), **TINY)
    mapper = mapper_for(function, conv_mask_to_poly=True)
    context = _DetectionFunctionContextImpl(frame_name="f.jpg", conv_mask_to_poly=True, conf_threshold=0.2)
    shapes = function.detect(context, Image.open(io.BytesIO(encoded[0])))
    _, remapped = mapper.validate_and_remap(shapes, 0)
    assert remapped and all(s.type.value == "polygon" and len(s.points) >= 6 for s in remapped)
    strict = _DetectionFunctionContextImpl(frame_name="f.jpg", conf_threshold=1.0)
    assert function.detect(strict, Image.open(io.BytesIO(encoded[1]))) == []


def test_prompt_mode_starts_on_the_prompt_frame(engine, sample_mp4, task_frames):
    frames, encoded = task_frames
    function = cvat_module.create(video=str(sample_mp4), mode="prompt", points="40,20;10,50", box="30,5,60,40",
                                  prompt_frame=2, use_audio=False, threshold=0.0, **TINY)
    context = _DetectionFunctionContextImpl(frame_name="f.jpg")
    assert function.detect(context, Image.open(io.BytesIO(encoded[1]))) == []  # before the prompt
    shapes = function.detect(context, Image.open(io.BytesIO(encoded[3])))
    assert len(shapes) == 1 and function.segmenter._stream.start_frame == 2
    assert function.segmenter._stream.session.use_audio is False


def test_foreign_frames_fail_clearly(engine, sample_mp4):
    function = cvat_module.create(video=str(sample_mp4), **TINY)
    stranger = Image.fromarray(np.full((64, 96, 3), 255, np.uint8))
    with pytest.raises(AuralSAM2Error, match="frame x.jpg: .*matches no frame") as info:
        function.detect(_DetectionFunctionContextImpl(frame_name="x.jpg"), stranger)
    assert isinstance(info.value.__cause__, FrameNotFoundError)


@pytest.mark.parametrize("parameters, message", [
    ({"mode": "clicks"}, "unknown mode"),
    ({"threshold": 1.5}, "between 0 and 1"),
    ({"mode": "prompt"}, "needs points or a box"),
    ({"mode": "prompt", "points": "1;2"}, "is not 'x,y'"),
    ({"mode": "prompt", "box": "1,2,3"}, "x0,y0,x1,y1"),
    ({"use_audio": False}, "needs the audio"),
    ({"video": "/no/such.mp4"}, "does not exist"),
])
def test_bad_parameters_are_explained(sample_mp4, parameters, message):
    arguments = dict(TINY, video=str(sample_mp4))
    arguments.update(parameters)
    with pytest.raises(AuralSAM2Error, match=message):
        cvat_module.create(**arguments)


def test_the_spec_is_a_valid_cvat_sdk_spec(engine, sample_mp4):
    function = cvat_module.create(video=str(sample_mp4), label="speaker", **TINY)
    (label,) = function.spec.labels
    assert (label.name, label.id, label.type) == ("speaker", 0, "mask")
