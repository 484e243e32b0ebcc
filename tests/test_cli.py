"""The `auralsam2` command: the newcomer path, output formats, the demo, and one clear line for bad input."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from napari_auralsam2 import cli, cli_prompts
from napari_auralsam2.core import AudioTrack
from napari_auralsam2.core.export import CONTACT_COLUMNS, THUMB_WIDTH, rle_decode
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.video import write_video
from napari_auralsam2.core.weights import RANDOM_WEIGHTS_BANNER

TINY = ["--model", "hiera_t", "--image-size", "128"]
RANDOM = ["--weights", "random", *TINY]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit 2, exactly one `auralsam2: error:` line, no traceback; returns that line."""
    assert code == cli.EXIT_ERROR, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("auralsam2: error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


# -- media and checkpoints ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def media(tmp_path_factory, clip_spec):
    """Bad and unusual inputs: silent audio, one frame, garbage, a truncated mp4."""
    folder = tmp_path_factory.mktemp("cli_media")
    frames = [clip_spec.frame(i) for i in range(4)]
    silence = AudioTrack(np.zeros((clip_spec.sample_rate, 2), np.float32), clip_spec.sample_rate)
    write_video(folder / "silent_audio.mp4", frames, clip_spec.fps, silence)
    write_video(folder / "one_frame.mp4", frames[:1], clip_spec.fps, clip_spec.audio())
    (folder / "garbage.mp4").write_bytes(b"this is not a video\n" * 50)
    return folder


@pytest.fixture(scope="module")
def truncated_mp4(tmp_path_factory, sample_mp4):
    path = tmp_path_factory.mktemp("cli_trunc") / "truncated.mp4"
    data = Path(sample_mp4).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


class Pickled:
    """A custom class: loading it needs arbitrary unpickling."""

    def __init__(self) -> None:
        self.weight = torch.zeros(3)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    torch.save({"model": {"image_encoder.trunk.not_a_key": torch.zeros(3)}}, folder / "wrong_keys.pt")
    (folder / "garbage.pt").write_bytes(b"\x00\x01 not a checkpoint " * 64)
    (folder / "text.pth").write_bytes(b"hello, this is a text file")
    (folder / "garbage.safetensors").write_bytes(b"garbage")
    torch.save({"model": {"w": torch.zeros(4096)}}, folder / "whole.pt")
    data = (folder / "whole.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save(Pickled(), folder / "pickled.pt")
    return folder


# -- the newcomer path (a real subprocess of the console script) --------------------------------
def test_console_script_overlay_has_video_and_audio(tmp_path, sample_mp4, clip_spec):
    exe = Path(sys.executable).with_name("auralsam2")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "napari_auralsam2.cli"]
    overlay = tmp_path / "out.mp4"
    result = subprocess.run([*command, "segment", str(sample_mp4), *RANDOM, "--overlay", str(overlay)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert RANDOM_WEIGHTS_BANNER in result.stderr and "Traceback" not in result.stderr
    with av.open(str(overlay)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        assert sum(1 for _ in container.decode(video=0)) == clip_spec.n_frames
    with av.open(str(overlay)) as container:
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert np.abs(audio).max() > 0.1  # the source's tones were copied, not silence
    out = tmp_path / f"{Path(sample_mp4).stem}_auralsam2"  # the default output folder
    assert len(list((out / "masks").glob("*.png"))) == clip_spec.n_frames
    assert RANDOM_WEIGHTS_BANNER in (out / cli.WARNING_FILE).read_text()


# -- formats ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def formats(tmp_path_factory, sample_mp4):
    """The same seeded run in every format: a click + a box for two objects, forward from frame 15."""
    root = tmp_path_factory.mktemp("formats")
    prompts = ["--point", "20,18,15", "--point", "80,50,15,0", "--box", "40,30,90,60,15,2"]
    results = {}
    for fmt in ("png", "npz", "coco-rle"):
        torch.manual_seed(0)  # the same random weights for each run
        code = cli.main(["segment", str(sample_mp4), *RANDOM, *prompts, "--direction", "forward", "--no-audio",
                         "--format", fmt, "--out", str(root / fmt)])
        assert code == 0
        results[fmt] = root / fmt
    return results


def test_formats_decode_to_the_same_masks(formats, clip_spec):
    segmented = list(range(15, clip_spec.n_frames))
    png = {int(p.stem): np.array(Image.open(p)) for p in sorted((formats["png"] / "masks").glob("*.png"))}
    assert sorted(png) == segmented
    assert all(labels.dtype == np.uint8 and labels.shape == (clip_spec.height, clip_spec.width)
               for labels in png.values())
    with np.load(formats["npz"] / "masks.npz") as data:
        labels = data["labels"]
        assert labels.shape == (clip_spec.n_frames, clip_spec.height, clip_spec.width) and labels.dtype == np.uint32
        assert data["object_ids"].tolist() == [1, 2]
        assert np.flatnonzero(data["segmented"]).tolist() == segmented
        assert not labels[:15].any()
    doc = json.loads((formats["coco-rle"] / "masks.json").read_text())
    assert doc["info"]["random_weights"] is True and doc["info"]["audio"] is False
    by_frame: dict[int, np.ndarray] = {}
    for ann in doc["annotations"]:
        t = ann["image_id"] - 1
        frame = by_frame.setdefault(t, np.zeros((clip_spec.height, clip_spec.width), np.uint32))
        frame[rle_decode(ann["segmentation"])] = np.maximum(frame[rle_decode(ann["segmentation"])], ann["object_id"])
    assert sorted(by_frame) == segmented
    assert len(doc["annotations"]) == 2 * len(segmented)
    for t in segmented:
        assert np.array_equal(png[t], labels[t]) and np.array_equal(labels[t], by_frame[t]), f"frame {t}"


# -- demo ---------------------------------------------------------------------------------------
def test_demo_random_end_to_end(tmp_path, capsys):
    code, out, err = run(capsys, "demo", "--weights", "random", "--out", tmp_path / "demo")
    assert code == 0, err
    demo = tmp_path / "demo"
    assert RANDOM_WEIGHTS_BANNER in err and (demo / cli.WARNING_FILE).is_file()
    frames = int(cli.DEMO_SECONDS * cli.DEMO_FPS)
    assert len(list((demo / "masks").glob("*.png"))) == frames
    with av.open(str(demo / cli.OVERLAY_NAME)) as container:
        assert len(container.streams.audio) == 1
        assert sum(1 for _ in container.decode(video=0)) == frames
    assert Image.open(demo / cli.CONTACT_SHEET_NAME).size[0] == CONTACT_COLUMNS * THUMB_WIDTH
    assert "mean IoU" in out


def test_demo_never_writes_into_a_folder_with_other_files(capsys, tmp_path):
    (tmp_path / "holiday.mp4").write_bytes(b"precious")
    assert_one_line_error(*run(capsys, "demo", "--weights", "random", "--out", tmp_path)[::2], "did not write")
    assert [p.name for p in tmp_path.iterdir()] == ["holiday.mp4"]


# -- bad input: one clear line, exit 2 ----------------------------------------------------------
def test_missing_video(capsys, tmp_path):
    assert_one_line_error(*run(capsys, "segment", tmp_path / "nope.mp4", *RANDOM)[::2], "not found")


@pytest.mark.parametrize("name", ["garbage.mp4", "truncated"])
def test_unreadable_video(capsys, media, truncated_mp4, name):
    path = truncated_mp4 if name == "truncated" else media / name
    assert_one_line_error(*run(capsys, "segment", path, *RANDOM)[::2], "cannot read", "corrupted")


def test_no_audio_track_offers_both_ways_out(capsys, silent_mp4, tmp_path):
    line = assert_one_line_error(*run(capsys, "segment", silent_mp4, *RANDOM, "--out", tmp_path)[::2], "no audio")
    assert "--audio" in line and "--no-audio" in line


def test_separate_audio_file_for_a_soundless_video(capsys, silent_mp4, sample_wav, tmp_path):
    code, out, err = run(capsys, "segment", silent_mp4, "--audio", sample_wav, *RANDOM, "--audio-frame", "15",
                         "--direction", "forward", "--out", tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [f"{t:06d}.png" for t in range(15, 20)]


def test_silent_audio(capsys, media, tmp_path):
    line = assert_one_line_error(*run(capsys, "segment", media / "silent_audio.mp4", *RANDOM, "--out", tmp_path)[::2],
                                 "silent")
    assert "--no-audio" in line


def test_one_frame_video_works(capsys, media, tmp_path):
    code, out, err = run(capsys, "segment", media / "one_frame.mp4", *RANDOM, "--out", tmp_path)
    assert code == 0, err
    assert [p.name for p in (tmp_path / "masks").iterdir()] == ["000000.png"]


@pytest.mark.parametrize("prompt, needle", [
    (["--point", "500,10,0"], "outside the 96x64 frame"),
    (["--box", "10,10,200,40,0"], "outside the 96x64 frame"),
    (["--point", "10,10,99"], "frame 99 is outside the video"),
    (["--audio-frame", "20"], "frame 20 is outside the video"),
])
def test_prompt_outside_the_video(capsys, sample_mp4, tmp_path, prompt, needle):
    assert_one_line_error(*run(capsys, "segment", sample_mp4, *RANDOM, *prompt, "--out", tmp_path)[::2], needle)


@pytest.mark.parametrize("argv, needle", [
    (["--point", "1,2"], "not 3 or 4 or 5"),
    (["--point", "1,2,0,7"], "label must be 1"),
    (["--point", "1,2,0.5"], "whole number"),
    (["--box", "1,2,3,4,0", "--box", "5,6,7,8,0"], "two boxes"),
    (["--no-audio"], "at least one --point"),
    (["--point", "1,2,0", "--audio-frame", "3"], "audio-only"),
    (["--image-size", "200"], "multiple of 32"),
    (["--overlay", "preview.txt"], "use a file ending"),
    (["--weights", "random", "--checkpoint", "x.pt"], "--weights auto"),
    (["--device", "tpu"], "unknown device"),
    (["--format", "gif"], "invalid choice"),
])
def test_usage_errors_are_one_line(capsys, sample_mp4, argv, needle):
    assert_one_line_error(*run(capsys, "segment", sample_mp4, *argv)[::2], needle)


def test_overlay_never_overwrites_the_input(capsys, sample_mp4, tmp_path):
    copy = shutil.copy(sample_mp4, tmp_path / "clip.mp4")
    before = Path(copy).read_bytes()
    assert_one_line_error(*run(capsys, "segment", copy, *RANDOM, "--overlay", copy)[::2], "overwrite the input")
    assert Path(copy).read_bytes() == before


def test_output_folder_that_is_a_file(capsys, sample_mp4, tmp_path):
    (tmp_path / "taken").write_text("user data")
    assert_one_line_error(*run(capsys, "segment", sample_mp4, *RANDOM, "--out", tmp_path / "taken")[::2],
                          "cannot create output folder")
    assert (tmp_path / "taken").read_text() == "user data"


@pytest.mark.parametrize("name, needle", [
    ("wrong_keys.pt", "does not fit the model"),
    ("garbage.pt", "corrupted"),
    ("text.pth", "corrupted"),
    ("garbage.safetensors", "corrupted"),
    ("truncated.pt", "corrupted"),
    ("pickled.pt", "arbitrary python objects"),
    ("missing.pt", "not found"),
])
def test_bad_checkpoints(capsys, checkpoints, sample_mp4, tmp_path, name, needle):
    path = checkpoints / name
    code, _, err = run(capsys, "segment", sample_mp4, *TINY, "--checkpoint", path, "--sam2-checkpoint", path,
                       "--out", tmp_path)
    assert_one_line_error(code, err, needle)


def test_debug_shows_the_traceback(capsys, tmp_path):
    from napari_auralsam2.core.errors import VideoError

    with pytest.raises(VideoError):
        cli.main(["segment", str(tmp_path / "nope.mp4"), "--debug"])


def test_gpu_out_of_memory_is_one_line(capsys, sample_mp4, tmp_path, monkeypatch):
    def exhausted(**_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(cli, "load_engine", exhausted)
    assert_one_line_error(*run(capsys, "segment", sample_mp4, *RANDOM, "--out", tmp_path)[::2], "ran out of memory")


def test_no_command_prints_help(capsys):
    code, _, err = run(capsys)
    assert code == cli.EXIT_ERROR and "segment" in err and "demo" in err


class InterruptAfterThree(cli.tqdm):
    """The CLI's progress bar, pressing Ctrl-C once three frames are done."""

    def update(self, n=1):
        super().update(n)
        if self.n >= 3:
            raise KeyboardInterrupt


def test_ctrl_c_keeps_the_frames_done(capsys, sample_mp4, tmp_path, monkeypatch):
    """Ctrl-C during propagation: exit 130, and the masks of the finished frames are written."""
    monkeypatch.setattr(cli, "tqdm", InterruptAfterThree)
    code, out, err = run(capsys, "segment", sample_mp4, *RANDOM, "--out", tmp_path, "--overlay", tmp_path / "o.mp4")
    assert code == cli.EXIT_INTERRUPTED and "auralsam2: interrupted" in err and "Traceback" not in err
    assert len(list((tmp_path / "masks").glob("*.png"))) == 2  # frame 3's masks were not handed over yet
    assert not (tmp_path / "o.mp4").exists()


def test_optional_commands_missing_part_or_extra(tmp_path, monkeypatch):
    """Missing optional parts are skipped; a missing extra gives a stub that names it; bugs surface."""
    (tmp_path / "needs_extra.py").write_text("import cvat_sdk.no_such_module\n")
    (tmp_path / "buggy.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "OPTIONAL_COMMANDS", (("napari_auralsam2.no_such_part.cli", None, None),
                                                   ("needs_extra", "fake", "cvat")))
    parser = cli.build_parser()
    args = parser.parse_args(["fake"])
    with pytest.raises(cli.UsageError, match=r"napari-auralsam2\[cvat\]"):
        args.func(args)
    monkeypatch.setattr(cli, "OPTIONAL_COMMANDS", (("buggy", "bug", None),))
    with pytest.raises(ModuleNotFoundError):
        cli.build_parser()


def test_prompts_group_per_object_and_frame():
    points = [cli_prompts.parse_point("1,2,0"), cli_prompts.parse_point("3,4,0,0"), cli_prompts.parse_point("5,6,2,1,3")]
    prompts = cli_prompts.group_prompts(points, [cli_prompts.parse_box("0,0,9,9,0,3"), cli_prompts.parse_box("1,1,8,8,0")])
    assert [(p.frame, p.object_id, p.points, p.labels, p.box) for p in prompts] == [
        (0, 1, [(1.0, 2.0), (3.0, 4.0)], [1, 0], (1.0, 1.0, 8.0, 8.0)),
        (2, 3, [(5.0, 6.0)], [1], None),
        (0, 3, [], [], (0.0, 0.0, 9.0, 9.0)),
    ]


def test_full_checkpoint_round_trip_through_the_cli(capsys, sample_mp4, tmp_path):
    """A real full-model checkpoint (official key layout) loads strictly and runs."""
    torch.manual_seed(1)
    torch.save(build_auralsam2("hiera_t", image_size=128).state_dict(), tmp_path / "full.pt")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / cli.WARNING_FILE).write_text(RANDOM_WEIGHTS_BANNER + "\n")  # left by a random run
    code, _, err = run(capsys, "segment", sample_mp4, *TINY, "--checkpoint", tmp_path / "full.pt",
                       "--point", "20,18,2", "--direction", "backward", "--out", tmp_path / "out")
    assert code == 0, err
    assert RANDOM_WEIGHTS_BANNER not in err and not (tmp_path / "out" / cli.WARNING_FILE).exists()
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == [f"{t:06d}.png" for t in range(3)]
