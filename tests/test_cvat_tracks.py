"""``auralsam2 cvat annotate``: masklets uploaded as CVAT tracks, against the loopback CVAT stub."""
from __future__ import annotations

import argparse
import io

import numpy as np
import pytest
from cvat_sdk import Client, Config
from cvat_sdk.core.client import AccessTokenCredentials
from cvat_sdk.masks import decode_mask
from PIL import Image

from napari_auralsam2.core import masks as codec
from napari_auralsam2.core.sample import make_sample_clip
from napari_auralsam2.core.video import open_video
from napari_auralsam2.cvat.cli import add_parser
from napari_auralsam2.cvat.fingerprint import FrameIndex
from napari_auralsam2.cvat.tracks import image_task_frames, polygon_track

from ._cvat_stub import TOKEN, Stub, StubTask
from ._cvat_support import tiny_engine

TINY_ARGS = ["--model", "hiera_t", "--image-size", "128", "--weights", "random", "--device", "cpu"]
N_FRAMES = 6
MANUAL = {"id": 1, "type": "rectangle", "frame": 0, "label_id": 7, "group": 2, "source": "manual", "occluded": False,
          "outside": False, "z_order": 0, "rotation": 0.0, "points": [5.0, 5.0, 20.0, 20.0], "attributes": []}


@pytest.fixture(scope="module")
def engine():
    return tiny_engine()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 6-frame 64x48 clip with sound and its frames as CVAT serves them (PNG for a video task)."""
    path = tmp_path_factory.mktemp("clip") / "source.mp4"
    make_sample_clip(path, seconds=N_FRAMES / 10, fps=10, size=(64, 48), seed=1)
    with open_video(path) as video:
        frames = [video.frame(i) for i in range(len(video))]
    return path, frames


def png(frame: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, fmt)
    return buffer.getvalue()


def video_task(frames, **extra) -> StubTask:
    return StubTask(id=5, frames=[png(f) for f in frames], width=64, height=48, **extra)


def run_cli(stub: Stub, *arguments: str, monkeypatch) -> int:
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", TOKEN)
    parser = argparse.ArgumentParser(prog="auralsam2")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["cvat", "annotate", "--server-host", stub.url, *arguments, *TINY_ARGS])
    return args.func(args)


def methods(stub: Stub) -> list[str]:
    return [method for method, _, _ in stub.log]


def test_polygon_tracks_are_appended(engine, clip, monkeypatch, tmp_path):
    path, frames = clip
    task = video_task(frames, annotations={"version": 0, "tags": [], "shapes": [dict(MANUAL)], "tracks": []})
    with Stub(task) as stub:
        code = run_cli(stub, "--task", "5", "--video", str(path), "--box", "1:0:10,12,40,40",
                       "--point", "2:2:50,20", "--neg-point", "2:2:5,5", "--no-audio", monkeypatch=monkeypatch)
    assert code == 0 and stub.unexpected == []
    assert set(methods(stub)) == {"GET", "PATCH"}  # nothing deleted, nothing replaced
    patches = [body for method, body in stub.bodies if method == "PATCH"]
    assert len(patches) == 2 and all(not body["shapes"] for body in patches)
    for body in patches:
        (track,) = body["tracks"]
        keyframes = track["shapes"]
        assert track["label_id"] == 7 and track["source"] == "semi-auto"
        assert [s["frame"] for s in keyframes] == sorted(s["frame"] for s in keyframes)
        assert track["frame"] == keyframes[0]["frame"] and not keyframes[0]["outside"]
        assert all(s["type"] == "polygon" and len(s["points"]) >= 6 for s in keyframes)
        assert all(0 <= x <= 64 for s in keyframes for x in s["points"][0::2])
    assert patches[0]["tracks"][0]["frame"] == 0  # object 1 is visible where it was boxed
    assert task.annotations["shapes"][0]["points"] == MANUAL["points"]  # the user's rectangle survives


def test_mask_shapes_grouped_by_object(engine, clip, monkeypatch):
    path, frames = clip
    task = video_task(frames, annotations={"version": 0, "tags": [], "shapes": [dict(MANUAL)], "tracks": []})
    with Stub(task) as stub:
        code = run_cli(stub, "--task", "5", "--video", str(path), "--as", "mask", monkeypatch=monkeypatch)
    assert code == 0 and stub.unexpected == []
    ((method, body),) = stub.bodies
    assert method == "PATCH" and body["tracks"] == []
    shapes = body["shapes"]
    assert {s["group"] for s in shapes} == {MANUAL["group"] + 1}  # a fresh group id, past the existing ones
    assert all(s["type"] == "mask" and s["source"] == "auto" for s in shapes)  # audio only: no clicks
    assert [s["frame"] for s in shapes] == sorted({s["frame"] for s in shapes})
    for shape in shapes:
        assert decode_mask(shape["points"], image_width=64, image_height=48).any()


def test_replace_is_the_only_way_to_drop_annotations(engine, clip, monkeypatch):
    path, frames = clip
    task = video_task(frames, annotations={"version": 0, "tags": [], "shapes": [dict(MANUAL)], "tracks": []})
    with Stub(task) as stub:
        code = run_cli(stub, "--task", "5", "--video", str(path), "--box", "1:1:10,12,40,40", "--replace",
                       "--no-audio", monkeypatch=monkeypatch)
    assert code == 0
    ((method, body),) = stub.bodies
    assert method == "PUT" and body["shapes"] == [] and len(body["tracks"]) == 1
    assert task.annotations["shapes"] == []


def test_task_shapes_become_prompts(engine, clip, monkeypatch):
    path, frames = clip
    box = dict(MANUAL, frame=1, label_id=8)
    dots = dict(MANUAL, id=2, type="points", frame=3, points=[30.0, 30.0], label_id=7)
    task = video_task(frames, labels=[{"id": 7, "name": "sounding object", "type": "any"},
                                      {"id": 8, "name": "drum", "type": "any"}],
                      annotations={"version": 0, "tags": [], "shapes": [box, dots], "tracks": []})
    with Stub(task) as stub:
        code = run_cli(stub, "--task", "5", "--video", str(path), "--from-task-shapes", "--no-audio",
                       monkeypatch=monkeypatch)
    assert code == 0
    tracks = [body["tracks"][0] for _, body in stub.bodies]
    assert [t["label_id"] for t in tracks] == [8, 7]


def test_frame_layout_and_video_are_checked(engine, clip, monkeypatch, tmp_path):
    path, frames = clip
    task = video_task(frames[::2], step=2)  # every other frame of the video
    with Stub(task) as stub:
        code = run_cli(stub, "--task", "5", "--video", str(path), "--box", "1:1:10,12,40,40", "--no-audio",
                       monkeypatch=monkeypatch)
    assert code == 0
    ((_, body),) = stub.bodies
    assert {s["frame"] for s in body["tracks"][0]["shapes"]} <= {0, 1, 2}
    other = tmp_path / "other.mp4"
    make_sample_clip(other, seconds=N_FRAMES / 10, fps=10, size=(64, 48), seed=9)
    with Stub(video_task(frames)) as stub:
        assert run_cli(stub, "--task", "5", "--video", str(other), monkeypatch=monkeypatch) == 1
        assert stub.bodies == []
    with Stub(video_task(frames + frames)) as stub:  # more task frames than the video has
        assert run_cli(stub, "--task", "5", "--video", str(path), monkeypatch=monkeypatch) == 1


def test_image_task_frames_are_located_by_fingerprint(clip, tmp_path):
    path, frames = clip
    task = StubTask(id=6, frames=[png(frames[i], "JPEG") for i in (1, 2, 4, 5)], width=64, height=48,
                    chunk_type="imageset")
    index = FrameIndex([path])
    index.refresh()
    with Stub(task) as stub:
        client = Client(stub.url, config=Config(cache_dir=tmp_path), check_server_version=False)
        client.login(AccessTokenCredentials(TOKEN))
        with client:
            proxy = client.tasks.retrieve(6)
            mapping = image_task_frames(proxy, proxy.get_meta(), index, log=lambda message: None)
    assert mapping.source == {0: 1, 1: 2, 2: 4, 3: 5} and mapping.size == (64, 48)


def test_polygon_tracks_mark_where_the_object_vanishes():
    square = codec.to_polygons(np.pad(np.ones((4, 4), bool), 2))[0]
    track = polygon_track(3, {0: square, 1: square, 3: square}, [0, 1, 2, 3, 4, 5], "auto")
    assert [(s.frame, s.outside) for s in track.shapes] == [(0, False), (1, False), (2, True), (3, False), (4, True)]
    assert polygon_track(3, {}, [0, 1], "auto") is None


@pytest.mark.parametrize("arguments, message", [
    (["--box", "1:0:1,2,3,4", "--box", "1:0:5,6,7,8"], "two boxes"),
    (["--point", "1:0:1,2", "--point", "1:3:4,5"], "one frame only"),
    (["--point", "0:0:1,2"], "start at 1"),
    (["--point", "1:0:1,2", "--from-task-shapes"], "exclude each other"),
    (["--label", "piano"], "no label 'piano'"),
])
def test_bad_prompts_are_explained(engine, clip, monkeypatch, capsys, arguments, message):
    path, frames = clip
    with Stub(video_task(frames)) as stub:
        assert run_cli(stub, "--task", "5", "--video", str(path), *arguments, monkeypatch=monkeypatch) == 1
        assert stub.bodies == []
    assert message in capsys.readouterr().err


def test_malformed_prompt_flags_are_refused_by_the_parser():
    parser = argparse.ArgumentParser(prog="auralsam2")
    add_parser(parser.add_subparsers(dest="command"))
    for flag, value in (("--point", "1:2"), ("--box", "1:0:1,2,3"), ("--point", "a:0:1,2")):
        with pytest.raises(SystemExit):
            parser.parse_args(["cvat", "annotate", "--task", "1", "--video", "v.mp4", flag, value])
