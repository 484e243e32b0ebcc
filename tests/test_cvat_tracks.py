"""``auralsam2 cvat annotate``: masklets uploaded as CVAT tracks, against the loopback CVAT stub.

The command runs through the real entry point (``napari_auralsam2.cli.main``): errors are one
``auralsam2: error: ...`` line and exit code 2.
"""
from __future__ import annotations

import argparse
import io
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from cvat_sdk import Client, Config
from cvat_sdk.core.client import AccessTokenCredentials
from cvat_sdk.masks import decode_mask
from PIL import Image

from napari_auralsam2.cli import main
from napari_auralsam2.core import masks as codec
from napari_auralsam2.core.sample import make_sample_clip
from napari_auralsam2.core.session import Engine
from napari_auralsam2.core.video import open_video
from napari_auralsam2.cvat.cli import add_parser
from napari_auralsam2.cvat.fingerprint import FrameIndex
from napari_auralsam2.cvat.tracks import image_task_frames, polygon_track

from ._cvat_stub import TOKEN, Stub, StubTask
from ._cvat_support import tiny_engine, video_manifest

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


def video_task(frames, upload: Path | None = None, **extra) -> StubTask:
    """A video task of these frames; ``upload``: the file CVAT keeps for it (its backup carries it)."""
    kept = dict(upload=(upload.name, upload.read_bytes()), manifest=video_manifest(upload)) if upload else {}
    return StubTask(id=5, frames=[png(f) for f in frames], width=64, height=48, **kept, **extra)


def run_cli(stub: Stub | str, *arguments: str, monkeypatch, token: str = TOKEN) -> int:
    """``auralsam2 cvat annotate --server-host <stub> ...`` with the tiny model; the exit code."""
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", token)
    url = stub if isinstance(stub, str) else stub.url
    return main(["cvat", "annotate", "--server-host", url, *arguments, *TINY_ARGS])


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


def test_compile_is_an_engine_option_here_too(engine, clip, monkeypatch):
    """--compile, shared with segment and batch, compiles the engine the writer uses."""
    path, frames = clip
    compiled = []
    monkeypatch.setattr(Engine, "compile", lambda used: compiled.append(used))
    with Stub(video_task(frames)) as stub:
        assert run_cli(stub, "--task", "5", "--video", str(path), "--box", "1:0:10,12,40,40", "--no-audio",
                       "--compile", monkeypatch=monkeypatch) == 0
    assert compiled == [engine]


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
        assert run_cli(stub, "--task", "5", "--video", str(other), monkeypatch=monkeypatch) == 2
        assert stub.bodies == []
    with Stub(video_task(frames + frames)) as stub:  # more task frames than the video has
        assert run_cli(stub, "--task", "5", "--video", str(path), monkeypatch=monkeypatch) == 2


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
        assert run_cli(stub, "--task", "5", "--video", str(path), *arguments, monkeypatch=monkeypatch) == 2
        assert stub.bodies == []
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["--image-size", "100"], "image size must be a multiple of 32"),
    (["--model", "hiera_x"], "invalid choice: 'hiera_x'"),
    (["--release", "avs_v9"], "invalid choice: 'avs_v9'"),
    (["--device", "tpu9"], "unknown device 'tpu9'"),
    (["--weights", "auto", "--checkpoint", "/no/such/fuser.pth"], "checkpoint not found: /no/such/fuser.pth"),
    (["--weights", "auto", "--model", "hiera_t"], "released AuralSAM2 weights exist for hiera_l only"),
])
def test_model_options_are_refused_before_the_server_is_reached(clip, monkeypatch, capsys, arguments, message):
    """issue 14, first principle: a value that cannot work is refused before any heavy work (here: a
    backup download from the server)."""
    path, frames = clip
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", TOKEN)
    tiny = dict(zip(TINY_ARGS[::2], TINY_ARGS[1::2]))
    tiny.update(zip(arguments[::2], arguments[1::2]))
    with Stub(video_task(frames)) as stub:
        code = main(["cvat", "annotate", "--server-host", stub.url, "--task", "5",
                     *[item for pair in tiny.items() for item in pair]])
        assert code == 2 and stub.log == []
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["--point", "1:9:5,5"], "prompt frame 9 of object 1 is not a frame of the task"),
    (["--point", "1:0:500,5"], "object 1: (500, 5) is outside the task's 64x48 frames"),
    (["--box", "2:1:1,2,30,49"], "object 2: (30, 49) is outside the task's 64x48 frames"),
])
def test_prompts_outside_the_task_are_refused_before_the_model_loads(clip, monkeypatch, capsys, arguments, message):
    path, frames = clip
    loads = []
    monkeypatch.setattr("napari_auralsam2.cvat.streams.load_engine", lambda **kwargs: loads.append(kwargs))
    with Stub(video_task(frames)) as stub:
        assert run_cli(stub, "--task", "5", "--video", str(path), *arguments, monkeypatch=monkeypatch) == 2
        assert stub.bodies == []
    assert message in capsys.readouterr().err and not loads


def test_malformed_prompt_flags_are_refused_by_the_parser():
    parser = argparse.ArgumentParser(prog="auralsam2")
    add_parser(parser.add_subparsers(dest="command"))
    for flag, value in (("--point", "1:2"), ("--box", "1:0:1,2,3"), ("--point", "a:0:1,2")):
        with pytest.raises(SystemExit):
            parser.parse_args(["cvat", "annotate", "--task", "1", "--video", "v.mp4", flag, value])


# -- the task's own video, from CVAT --------------------------------------------------------------
@pytest.fixture
def home(tmp_path, monkeypatch):
    """AURALSAM2_HOME for the run: the task-video cache lives under it."""
    monkeypatch.setenv("AURALSAM2_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_the_task_video_comes_from_cvat_and_is_cached(engine, clip, home, monkeypatch, capsys):
    path, frames = clip
    task = video_task(frames, upload=path)
    size = len(task.backup())
    with Stub(task) as stub:
        assert run_cli(stub, "--task", "5", "--box", "1:0:10,12,40,40", "--no-audio", monkeypatch=monkeypatch) == 0
        assert stub.backups == [5] and stub.unexpected == []
        said = capsys.readouterr().err
        assert f"downloading the backup of task 5 ({size / 1024:.1f} KB)" in said  # said before the download
        (cached,) = home.glob("cvat/*/task-5/source.mp4")
        assert cached.read_bytes() == path.read_bytes()  # the upload, sound included
        assert {p.name for p in cached.parent.iterdir()} == {"source.mp4", "source.json"}  # the backup is gone
        assert run_cli(stub, "--task", "5", "--box", "1:0:10,12,40,40", "--no-audio", monkeypatch=monkeypatch) == 0
        assert stub.backups == [5] and "cached" in capsys.readouterr().err  # annotations saved: still cached
        task.data_date = "2026-02-01T00:00:00.000000Z"  # the task's data changed
        assert run_cli(stub, "--task", "5", "--box", "1:0:10,12,40,40", "--no-audio", monkeypatch=monkeypatch) == 0
        assert stub.backups == [5, 5]
    patches = [body for method, body in stub.bodies if method == "PATCH"]
    assert len(patches) == 3 and all(body["tracks"][0]["frame"] == 0 for body in patches)


def test_task_frame_ranges_are_honoured(engine, clip, home, monkeypatch, capsys):
    path, frames = clip
    task = video_task(frames[1::2], upload=path, start_frame=1, step=2)  # source frames 1, 3, 5
    with Stub(task) as stub:
        assert run_cli(stub, "--task", "5", "--box", "1:1:10,12,40,40", "--no-audio", monkeypatch=monkeypatch) == 0
    ((_, body),) = stub.bodies
    assert {s["frame"] for s in body["tracks"][0]["shapes"]} <= {0, 1, 2}
    shifted = video_task(frames, upload=path, start_frame=2)  # source frames 2..7: the video has 6
    with Stub(shifted) as stub:
        assert run_cli(stub, "--task", "5", monkeypatch=monkeypatch) == 2
        assert stub.bodies == []
    assert "task 5 has 6 frames (frames 2..7) but source.mp4 has 6" in one_error_line(capsys)


def one_error_line(capsys) -> str:
    """The run's stderr: exactly one ``auralsam2: error:`` line and no traceback."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "Traceback" not in "\n".join(lines)
    errors = [line for line in lines if line.startswith("auralsam2: error:")]
    assert len(errors) == 1, lines
    return errors[0]


def test_a_task_video_that_does_not_match_is_refused(engine, clip, home, monkeypatch, capsys, tmp_path):
    path, frames = clip
    shorter = make_sample_clip(tmp_path / "short.mp4", seconds=0.4, fps=10, size=(64, 48), seed=1).path
    smaller = make_sample_clip(tmp_path / "small.mp4", seconds=0.6, fps=10, size=(48, 32), seed=1).path
    for upload, message in ((shorter, "has 4"), (smaller, "48x32")):
        with Stub(video_task(frames, upload=upload)) as stub:
            assert run_cli(stub, "--task", "5", monkeypatch=monkeypatch) == 2
            assert stub.bodies == []
        line = one_error_line(capsys)
        assert message in line and "--video" in line
    with Stub(video_task(frames, upload=smaller)) as stub:  # --video still overrides
        assert run_cli(stub, "--task", "5", "--video", str(path), "--no-audio", "--box", "1:0:10,12,40,40",
                       monkeypatch=monkeypatch) == 0


def test_tasks_without_their_video_in_cvat_ask_for_one(engine, clip, home, monkeypatch, capsys):
    path, frames = clip
    images = StubTask(id=5, frames=[png(f, "JPEG") for f in frames], width=64, height=48, chunk_type="imageset")
    share = video_task(frames, backup_error="The task cannot be exported because it does not contain any raw data")
    bare = video_task(frames)  # a backup without the media (e.g. cloud storage)
    for task, message in ((images, "made from images"), (share, "could not back up task 5"),
                          (bare, "holds no copy of its video")):
        with Stub(task) as stub:
            assert run_cli(stub, "--task", "5", monkeypatch=monkeypatch) == 2
            assert stub.bodies == [] and (stub.backups == [] if task is images else stub.backups == [5])
        line = one_error_line(capsys)
        assert message in line and "--video" in line
    assert not list(home.glob("cvat/*/task-5/*.mp4"))


def test_a_backup_too_big_for_the_disk_is_not_downloaded(engine, clip, home, monkeypatch, capsys):
    path, frames = clip
    from napari_auralsam2.cvat import task_video

    real = shutil.disk_usage
    monkeypatch.setattr(task_video.shutil, "disk_usage", lambda folder: real(folder)._replace(free=1000))
    with Stub(video_task(frames, upload=path)) as stub:
        assert run_cli(stub, "--task", "5", monkeypatch=monkeypatch) == 2
    line = one_error_line(capsys)
    assert "free" in line and "AURALSAM2_HOME" in line
    assert not [p for p in home.rglob("*") if p.is_file()]


# -- reaching the server (issue 14 case 6) -------------------------------------------------------------
class NotCvat(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        page = b"<html>a web page</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)


@pytest.fixture
def web_page():
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotCvat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_server_failures_are_one_line_naming_the_server(clip, monkeypatch, capsys, web_page):
    """issue 14 case 6: unreachable, unknown, not TLS, not CVAT, wrong token, no such task."""
    path, frames = clip
    port = closed_port()
    cases = [(f"http://127.0.0.1:{port}", {}, f"cannot reach CVAT at http://127.0.0.1:{port} (connection refused)"),
             ("http://no-such-host.invalid", {},
              "cannot reach CVAT at http://no-such-host.invalid:80 (host name not found)"),
             (web_page.replace("http:", "https:"), {}, "TLS connection to CVAT"),
             (web_page, {}, f"{web_page} did not answer like a CVAT server"),
             ("STUB", {"token": "wrong"}, "did not accept the credentials (401"),
             ("STUB", {"task": "9"}, "has no task 9")]
    with Stub(video_task(frames)) as stub:
        for url, options, message in cases:
            url = stub.url if url == "STUB" else url
            code = run_cli(url, "--task", options.get("task", "5"), "--video", str(path), monkeypatch=monkeypatch,
                           token=options.get("token", TOKEN))
            line = one_error_line(capsys)
            assert code == 2 and message in line, line
            assert ("--server-host" in line or "--auth" in line or "--insecure" in line or "--task" in line), line
        assert stub.bodies == []
