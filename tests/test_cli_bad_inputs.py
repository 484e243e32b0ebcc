"""The `auralsam2` command on the bad inputs of issue 14: refused before the model loads, in one line,
never losing a file; Ctrl-C and unexpected errors at any moment end without a traceback."""
from __future__ import annotations

import importlib.abc
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch._utils import ExceptionWrapper

from napari_auralsam2 import cli, cli_prompts, console
from napari_auralsam2.core.export import MaskStore, write_masks
from napari_auralsam2.core.video import open_video
from napari_auralsam2.training.datasets import DataError

from .test_audio import _float_wav, _tone
from .test_cli import RANDOM, TINY, InterruptAfterThree, assert_one_line_error, run
from .test_files import read_only_dir  # noqa: F401 (a fixture)
from .test_video import _rotated_clip


@pytest.fixture
def model_loads(monkeypatch) -> list[dict]:
    """The load_engine calls of a test (the real function still runs)."""
    calls: list[dict] = []
    real = cli.load_engine

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(cli, "load_engine", spy)
    return calls


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- wrong results given silently ---------------------------------------------------------------
def test_a_rotated_phone_video_is_segmented_as_players_show_it(capsys, tmp_path, clip_spec):
    path = _rotated_clip(tmp_path / "phone.mp4", clip_spec, -90)  # stored 96x64, shown 64 wide and 96 tall
    code, _, err = run(capsys, "segment", path, *RANDOM, "--no-audio", "--point", "30,80,0", "--direction", "forward",
                       "--overlay", tmp_path / "preview.mp4", "--out", tmp_path / "out")
    assert code == 0, err
    masks = sorted((tmp_path / "out" / "masks").glob("*.png"))
    assert len(masks) == 4 and {Image.open(m).size for m in masks} == {(64, 96)}
    with open_video(tmp_path / "preview.mp4") as preview:
        assert preview.shape == (4, 96, 64, 3)


def test_non_finite_audio_is_refused_before_the_model_loads(capsys, tmp_path, sample_mp4, model_loads):
    samples = _tone(440.0, 2.0)
    samples[::100] = np.inf
    wav = _float_wav(tmp_path / "inf.wav", samples)
    assert_one_line_error(*run(capsys, "segment", sample_mp4, "--audio", wav, *RANDOM, "--out", tmp_path / "out")[::2],
                          "inf.wav: the audio has 320 samples that are NaN or infinite")
    assert not model_loads


# -- user files lost ----------------------------------------------------------------------------
def test_no_output_overwrites_an_input(capsys, tmp_path, sample_mp4, model_loads):
    song = Path(shutil.copy(sample_mp4, tmp_path / "song.mp4"))
    before = song.read_bytes()
    assert_one_line_error(*run(capsys, "segment", sample_mp4, "--audio", song, "--overlay", song, *RANDOM)[::2],
                          "--overlay would overwrite --audio")
    weights = Path(shutil.copy(song, tmp_path / "weights.mp4"))
    assert_one_line_error(*run(capsys, "segment", sample_mp4, *TINY, "--checkpoint", weights, "--overlay", weights)[::2],
                          "--overlay would overwrite --checkpoint")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(song, out / "masks.npz")  # an odd name for a sound file, but the user's
    assert_one_line_error(*run(capsys, "segment", sample_mp4, "--audio", out / "masks.npz", *RANDOM, "--format",
                               "npz", "--out", out)[::2], "the masks would overwrite --audio")
    assert song.read_bytes() == before == (out / "masks.npz").read_bytes() == weights.read_bytes()
    assert not model_loads


def test_ctrl_c_on_a_rerun_keeps_the_earlier_run(capsys, tmp_path, sample_mp4, clip_spec, monkeypatch):
    out = tmp_path / "out"
    earlier = MaskStore(clip_spec.n_frames, clip_spec.height, clip_spec.width)
    for t in range(clip_spec.n_frames):
        earlier.add(t, {1: np.ones((clip_spec.height, clip_spec.width), bool)})
    with open_video(sample_mp4) as video:
        masks = write_masks(earlier, out, "png", video)  # a complete earlier run
    before = _snapshot(masks)

    monkeypatch.setattr(cli, "tqdm", InterruptAfterThree)
    code, _, err = run(capsys, "segment", sample_mp4, *RANDOM, "--out", out)
    assert code == cli.EXIT_INTERRUPTED and "Traceback" not in err
    assert f"kept the earlier results in {masks}" in err
    assert _snapshot(masks) == before
    assert len(list((out / "masks-interrupted").glob("*.png"))) == 2


# -- tracebacks or misleading errors ------------------------------------------------------------
def test_a_negative_number_after_an_option_is_its_value(capsys, sample_mp4, tmp_path, model_loads):
    line = assert_one_line_error(*run(capsys, "segment", sample_mp4, *RANDOM, "--point", "-5,10,0", "--out",
                                      tmp_path)[::2], "point (-5, 10) is outside the 96x64 frame")
    assert "expected one argument" not in line and not model_loads
    assert cli.attach_negative_values(["--box", "-1,2,3,4,0", "--no-audio", "a.mp4", "--audio-frame", "-.5"]) == [
        "--box=-1,2,3,4,0", "--no-audio", "a.mp4", "--audio-frame=-.5"]


def test_a_folder_given_as_a_file_is_called_a_folder(capsys, sample_mp4, tmp_path):
    assert_one_line_error(*run(capsys, "segment", tmp_path, *RANDOM)[::2], "is a folder", "video file itself")
    assert_one_line_error(*run(capsys, "segment", sample_mp4, *TINY, "--checkpoint", tmp_path, "--out",
                               tmp_path / "out")[::2], "is a folder, not a checkpoint file")


def test_a_read_only_out_is_refused_before_the_model_loads(capsys, sample_mp4, read_only_dir, model_loads):
    assert_one_line_error(*run(capsys, "segment", sample_mp4, *RANDOM, "--out", read_only_dir)[::2],
                          "cannot write into", "locked")
    assert not model_loads


@pytest.mark.parametrize("argv, needle", [
    (["segment", "a.mp4", "--image-size", "8192"], "from 64 to 4096"),
    (["segment", "a.mp4", "--point", "1,2,0,1,5e9"], "object id must be a whole number from 1 to 4294967295"),
    (["segment", "a.mp4", "--point", "1,2,0,1,70000"], "does not fit a 16-bit PNG"),
    (["train", "--data", "d", "--workers", "-1"], "--workers: expected a whole number from 0 to 64, got -1"),
    (["train", "--data", "d", "--lr", "nan"], "--lr: expected a number in [0, 1]"),
    (["train", "--data", "d", "--seed", "-1"], "--seed: expected a whole number from 0"),
    (["train", "--data", "d", "--clip-len", "1000"], "--clip-len: expected a whole number from 2 to 100"),
    (["train", "--data", "d", "--val-fraction", "1"], "--val-fraction: expected a number in [0, 1)"),
    (["eval", "--data", "d", "--image-size", "100000"], "from 64 to 4096"),
])
def test_values_that_cannot_work_are_refused_while_parsing(capsys, argv, needle):
    assert_one_line_error(*run(capsys, *argv)[::2], needle)


def test_the_number_of_objects_is_bounded():
    points = [(1.0, 2.0, 0, 1, obj) for obj in range(1, cli_prompts.MAX_OBJECTS + 2)]
    with pytest.raises(cli.UsageError, match=f"{cli_prompts.MAX_OBJECTS + 1} objects in one run is more than"):
        cli_prompts.group_prompts(points)
    assert len(cli_prompts.group_prompts(points[:-1])) == cli_prompts.MAX_OBJECTS


def test_an_unexpected_error_is_one_line_too(capsys, sample_mp4, tmp_path, monkeypatch):
    def broken(**_):
        worker = threading.Thread(target=lambda: 1 / 0)
        worker.start()
        worker.join()
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(cli, "load_engine", broken)
    code, _, err = run(capsys, "segment", sample_mp4, *RANDOM, "--out", tmp_path)
    assert code == cli.EXIT_BUG and "Traceback" not in err
    assert "auralsam2: error in a background thread: division by zero" in err
    assert "auralsam2: error: unexpected RuntimeError: something inside broke (this is a bug" in err
    monkeypatch.setattr(cli, "load_engine", lambda **_: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["segment", str(sample_mp4), *RANDOM, "--out", str(tmp_path), "--debug"])


def test_an_error_from_a_data_loading_worker_keeps_only_its_message():
    try:
        raise DataError("no frames in v1s/a/frames", "check the AVSBench download")
    except DataError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(DataError) as error:
        wrapper.reraise()
    assert "Original Traceback" in str(error.value)  # what torch hands over
    assert cli._one_line(error.value) == ("no frames in v1s/a/frames; check the AVSBench download "
                                          "(in DataLoader worker process 0)")


def test_ctrl_c_while_the_command_is_still_importing(capsys, monkeypatch):
    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "napari_auralsam2.cli":
                raise KeyboardInterrupt  # as if Ctrl-C came while torch was being imported
            return None

    monkeypatch.delitem(sys.modules, "napari_auralsam2.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    monkeypatch.setattr(sys, "argv", ["auralsam2", "demo"])
    assert console.main() == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "auralsam2: interrupted\n"


# -- training -----------------------------------------------------------------------------------
def _avsbench(root: Path, metadata: bytes) -> Path:
    (root / "avss_index").mkdir(parents=True)
    (root / "avss_index" / "metadata.csv").write_bytes(metadata)
    return root


def test_training_data_problems_are_a_few_short_lines(capsys, tmp_path):
    root = _avsbench(tmp_path / "AVSBench", b"uid,split,label\na,train,v1s\nb,train,v1s\nc,test,v1s\n")
    (root / "v1s" / "a" / "frames").mkdir(parents=True)  # empty; b and c are missing
    code, _, err = run(capsys, "train", "--data", root, "--random-weights", "--model", "hiera_t", "--image-size",
                       "64", "--workers", "1", "--out", tmp_path / "run", "--no-progress")
    assert_one_line_error(code, err, "2 of the 2 'train' clips listed in metadata.csv cannot be used")
    lines = err.strip().splitlines()
    assert lines[1:] == ["auralsam2:   v1s/a: no frames in frames/", "auralsam2:   v1s/b: the folder is missing"]
    assert max(map(len, lines)) < 160
    binary = _avsbench(tmp_path / "Binary", b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert_one_line_error(*run(capsys, "train", "--data", binary, "--random-weights", "--out", tmp_path / "run2")[::2],
                          "metadata.csv is not a text CSV file")


def test_train_never_overwrites_an_earlier_run_or_an_input(capsys, tmp_path, read_only_dir):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.pth").write_bytes(b"an earlier run's best")
    common = ["train", "--data", tmp_path / "nowhere.csv", "--random-weights", "--out"]
    assert_one_line_error(*run(capsys, *common, run_dir)[::2], "holds an earlier training run (best.pth)", "--resume")
    assert_one_line_error(*run(capsys, *common, run_dir, "--resume", "--init", run_dir / "best.pth")[::2],
                          "the run's best.pth would overwrite --init")
    assert (run_dir / "best.pth").read_bytes() == b"an earlier run's best"
    assert_one_line_error(*run(capsys, *common, read_only_dir)[::2], "cannot write into")
