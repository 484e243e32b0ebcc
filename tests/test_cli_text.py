"""`auralsam2 segment --text`: say which sounding object, in words (Ref-AVS weights); bad input is one line."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from napari_auralsam2 import cli, cli_prompts
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.session import Prompt
from napari_auralsam2.core.video import write_video

from ._tiny_text import write_tiny_text_model
from .test_cli import assert_one_line_error, run

TINY = ["--model", "hiera_t", "--image-size", "64"]
GUITAR = "the man playing guitar"


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return write_tiny_text_model(tmp_path_factory.mktemp("text") / "tiny")


@pytest.fixture(scope="module")
def short_mp4(tmp_path_factory, clip_spec):
    """6 frames with the fixture's stereo tones (one Ref-AVS window)."""
    path = tmp_path_factory.mktemp("cli_text") / "short.mp4"
    return write_video(path, [clip_spec.frame(i) for i in range(6)], clip_spec.fps, clip_spec.audio())


def ref_args(text_dir) -> list:
    return ["--weights", "random", *TINY, "--release", "refavs", "--text-model", text_dir]


def test_text_with_and_without_clicks_end_to_end(capsys, short_mp4, text_dir, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "segment", short_mp4, *ref_args(text_dir), "--text", GUITAR,
                            "--point", "40,30,0", "--text", "2:the dog that is barking", "--format", "coco-rle",
                            "--out", out)
    assert code == 0, err
    assert "segmented 6 of 6 frames (objects: 1, 2)" in stdout
    info = json.loads((out / "masks.json").read_text())["info"]
    assert info["variant"] == "refavs" and info["texts"] == {"1": GUITAR, "2": "the dog that is barking"}


def test_a_mask_prompt_with_a_text(capsys, short_mp4, clip_spec, text_dir, tmp_path):
    """--mask (a corrected frame) and --text name the same object: the text goes with the mask prompt."""
    png = tmp_path / "fix.png"
    mask = np.zeros((clip_spec.height, clip_spec.width), np.uint8)
    mask[10:26, 20:30] = 255
    Image.fromarray(mask).save(png)
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "segment", short_mp4, *ref_args(text_dir), "--text", GUITAR,
                            "--mask", f"2,1,{png}", "--format", "coco-rle", "--out", out)
    assert code == 0, err
    assert "segmented 6 of 6 frames (objects: 1)" in stdout
    assert json.loads((out / "masks.json").read_text())["info"]["texts"] == {"1": GUITAR}


def test_texts_attach_to_their_objects():
    assert cli_prompts.parse_text("2:the dog") == (2, "the dog")
    assert cli_prompts.parse_text("the time: five") == (1, "the time: five")  # no object id before the colon
    clicked = cli_prompts.group_prompts(points=[(1.0, 2.0, 3, 1, 1)])
    prompts = cli_prompts.add_texts(clicked, [(1, GUITAR), (4, "the dog")], audio_frame=2)
    assert prompts == [Prompt(3, 1, [(1.0, 2.0)], [1], text=GUITAR), Prompt(2, 4, text="the dog")]
    with pytest.raises(cli.UsageError, match="two texts"):
        cli_prompts.add_texts([], [(1, "a"), (1, "b")])
    with pytest.raises(argparse.ArgumentTypeError, match="empty"):
        cli_prompts.parse_text("3:  ")


@pytest.mark.parametrize("argv, needle", [
    (["--weights", "random", *TINY, "--text", GUITAR], "--text needs the Ref-AVS weights: add --release refavs"),
    (["--weights", "random", *TINY, "--release", "refavs", "--no-audio", "--point", "4,4,0", "--text", GUITAR],
     "--text needs the audio"),
    (["--weights", "random", *TINY, "--release", "refavs"], "add --text"),
    (["--weights", "random", *TINY, "--release", "refavs", "--text", ""], "--text is empty"),
    (["--weights", "random", *TINY, "--release", "refavs", "--text", GUITAR, "--point", "4,4,0,1,2"],
     "object 2 has no text"),
])
def test_text_usage_errors_are_one_line(capsys, short_mp4, argv, needle):
    assert_one_line_error(*run(capsys, "segment", short_mp4, *argv)[::2], needle)


def test_text_over_the_length_limit_is_one_line(capsys, short_mp4, text_dir, tmp_path):
    code, _, err = run(capsys, "segment", short_mp4, *ref_args(text_dir), "--text", "the man " * 15,
                       "--out", tmp_path)
    assert_one_line_error(code, err, "tokens long", "at most 25")


def test_an_avs_checkpoint_refuses_text(capsys, short_mp4, tmp_path):
    path = tmp_path / "avs.pth"
    torch.save(build_auralsam2("hiera_t", image_size=64).state_dict(), path)
    code, _, err = run(capsys, "segment", short_mp4, *TINY, "--checkpoint", path, "--text", GUITAR, "--out", tmp_path)
    assert_one_line_error(code, err, "AVSBench variant", "cannot read text", "--release refavs")


def test_batch_and_the_tracks_writer_refuse_what_they_cannot_do_before_any_work(capsys, short_mp4, tmp_path):
    """batch has no text prompts (Ref-AVS weights need one); the tracks writer checks --text before the server."""
    code, _, err = run(capsys, "batch", short_mp4, "--out", tmp_path / "batch", "--release", "refavs")
    assert_one_line_error(code, err, "batch takes no text prompts", "segment --text")
    for argv, needle in ((["--text", GUITAR], "--text needs the Ref-AVS weights"),
                         (["--text", GUITAR, "--release", "refavs", "--no-audio"], "--text needs the audio")):
        code, _, err = run(capsys, "cvat", "annotate", "--server-host", "http://127.0.0.1:9", "--task", "5", *argv)
        assert_one_line_error(code, err, needle)
