"""`auralsam2 eval` on Ref-AVS: the official layout, splits test_s / test_u / test_n and their metrics."""
from __future__ import annotations

import csv
import wave

import numpy as np
import pytest
import torch
from PIL import Image

from napari_auralsam2 import cli
from napari_auralsam2.training.refavs import MIN_EXAMPLES, RefAVSDataset, batch_scores, is_refavs_root

from ._tiny_text import write_tiny_text_model

SIZE = (64, 48)  # width, height
CLIPS = {"v1": 4, "v2": 4}
ROWS = [  # vid, uid, fid, exp, split (test_n rows name their clip in uid)
    ("v1", "v1_1_0", "1", "the man playing guitar", "test_s"),
    ("v2", "v2_1_0", "1", "the dog that is barking", "test_s"),
    ("v2", "v2_2_0", "2", "the woman singing", "test_u"),
    ("", "v1_3_0", "3", "the cat playing piano", "test_n"),
    ("v1", "v1_9_0", "1", "the man playing guitar", "train"),
]


@pytest.fixture(scope="module")
def refavs_root(tmp_path_factory):
    """A tiny REFAVS folder: 4-frame clips (frames numbered 1, 10, 11, 2: the official order), 4.2 s audio."""
    root = tmp_path_factory.mktemp("REFAVS")
    rng = np.random.default_rng(0)
    for vid, count in CLIPS.items():
        frames = root / "media" / vid / "frames"
        frames.mkdir(parents=True)
        for t, number in enumerate((1, 10, 11, 2)[:count]):
            image = np.full((SIZE[1], SIZE[0], 3), 40 * t, np.uint8)
            Image.fromarray(image).save(frames / f"{vid}_{number}.jpg")
            for fid in ("1", "2", "3"):
                masks = root / "gt_mask" / vid / f"fid_{fid}"
                masks.mkdir(parents=True, exist_ok=True)
                mask = np.zeros((SIZE[1], SIZE[0]), np.uint8)
                mask[10:20, 5 + 10 * t:25 + 10 * t] = 255
                Image.fromarray(mask).save(masks / f"{vid}_{number}.png")
        with wave.open(str(root / "media" / vid / "audio.wav"), "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(16000)
            handle.writeframes(rng.integers(-8000, 8000, int(4.2 * 16000)).astype("<i2").tobytes())
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["vid", "uid", "fid", "exp", "split"])
        writer.writerows(ROWS)
    return root


def test_splits_read_the_official_layout(refavs_root):
    assert is_refavs_root(refavs_root) and not is_refavs_root(refavs_root / "media")
    seen = RefAVSDataset(refavs_root, "test_s")
    assert len(seen) == 2 and [seen.text(i) for i in range(2)] == ["the man playing guitar", "the dog that is barking"]
    clip = seen.load(0)
    assert [int(f.mean()) for f in clip.frames] == [0, 40, 80, 120]  # the official order: digits compared
    assert clip.labels.shape == (4, SIZE[1], SIZE[0]) and clip.labels[3, 15, 40] == 1
    assert clip.audio.shape == (MIN_EXAMPLES, 2, 96, 64)  # 4 examples of mono audio, the last repeated
    np.testing.assert_array_equal(clip.audio[3], clip.audio[4])
    np.testing.assert_array_equal(clip.audio[:, 0], clip.audio[:, 1])
    null = RefAVSDataset(refavs_root, "test_n")
    assert null.entries[0].vid == "v1" and null.text(0) == "the cat playing piano"


def test_batch_scores_pool_the_frames_of_four_clips():
    truth = torch.zeros(2, 8, 8)
    truth[:, 2:6, 2:6] = 1
    perfect = torch.where(truth > 0, 5.0, -5.0)
    empty_truth = torch.zeros(2, 8, 8)
    iou, fscore = batch_scores([perfect, perfect], [truth, empty_truth])
    assert iou == pytest.approx((1 + 1 + 0.75 + 0.75) / 4)  # empty truth: the background pixels' share (48/64)
    # the F-score averages over the batch's non-empty frames: the empty clip does not pull it down
    assert fscore == pytest.approx(1.0, abs=1e-3)


def test_eval_command_scores_every_split(capsys, refavs_root, tmp_path):
    text = write_tiny_text_model(tmp_path / "tiny")
    out = tmp_path / "eval"
    code = cli.main(["eval", "--data", str(refavs_root), "--split", "test", "--random-weights", "--model", "hiera_t",
                     "--image-size", "64", "--text-model", str(text), "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    with (out / "refavs_summary.csv").open(newline="") as handle:
        rows = {row["split"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == ["test_n", "test_s", "test_u"]
    assert rows["test_s"]["clips"] == "2" and rows["test_u"]["clips"] == "1" and rows["test_n"]["clips"] == "1"
    assert 0 <= float(rows["test_s"]["miou"]) <= 1 and 0 <= float(rows["test_u"]["fscore"]) <= 1
    assert 0 <= float(rows["test_n"]["S"]) <= 1 and rows["test_n"]["miou"] == ""
    with (out / "refavs_per_clip.csv").open(newline="") as handle:
        clips = list(csv.DictReader(handle))
    assert [c["text"] for c in clips][:2] == ["the man playing guitar", "the dog that is barking"]


def test_eval_refuses_an_unknown_ref_avs_split(capsys, refavs_root, tmp_path):
    code = cli.main(["eval", "--data", str(refavs_root), "--split", "val", "--random-weights", "--model", "hiera_t",
                     "--image-size", "64", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR and "unknown Ref-AVS split 'val'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, needle", [
    (["train", "--data", "x", "--variant", "refavs"], "training the Ref-AVS variant is not supported yet"),
    (["eval", "--data", "x", "--variant", "refavs", "--random-weights"], "evaluate it on Ref-AVS data"),
])
def test_what_ref_avs_cannot_do_yet_is_one_line(capsys, argv, needle):
    assert cli.main(argv) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
