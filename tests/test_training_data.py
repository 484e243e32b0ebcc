"""Data readers (AVSBench tree, napari/CVAT/COCO exports), clip tiling and the clip transforms."""
from __future__ import annotations

import csv
import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from napari_auralsam2.core.audio import waveform_to_examples
from napari_auralsam2.core.sample import render_sample_frames
from napari_auralsam2.core.video import write_video
from napari_auralsam2.training.clips import AnnotatedVideoClips, DataOptions, VideoEntry, open_split, tile_clips
from napari_auralsam2.training.datasets import AVSBenchDataset, ClipSample, DataError, cond_frame
from napari_auralsam2.training.exports import decode_coco_counts, read_annotations, read_coco, read_cvat_xml
from napari_auralsam2.training.transforms import EvalTransform, TrainTransform

RATE = 16_000
AVS_SIZE = (48, 40)  # width, height of the fake AVSBench frames


def _write_wav(path: Path, seconds: float, seed: int) -> np.ndarray:
    samples = np.random.default_rng(seed).integers(-20000, 20000, size=(int(seconds * RATE), 2)).astype(np.int16)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(samples.astype("<i2").tobytes())
    return samples


def _fake_clip(folder: Path, frames: int, labelled: list[int], seed: int) -> np.ndarray:
    (folder / "frames").mkdir(parents=True)
    (folder / "labels_rgb").mkdir()
    width, height = AVS_SIZE
    for i in range(frames):
        Image.fromarray(np.full((height, width, 3), 20 * i, np.uint8)).save(folder / "frames" / f"{i}.jpg")
    for i in labelled:
        label = np.zeros((height, width, 3), np.uint8)
        label[5:15, 4 + i:20 + i] = (128, 0, 64)  # an AVSS palette colour: non-black = sounding
        Image.fromarray(label).save(folder / "labels_rgb" / f"{i}.png")
    return _write_wav(folder / "audio.wav", frames + 0.5, seed)


@pytest.fixture(scope="module")
def avsbench(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """The official AVSBench layout: avss_index/metadata.csv + v1s/, v1m/, v2/ clip folders."""
    root = tmp_path_factory.mktemp("AVSBench")
    (root / "avss_index").mkdir()
    rows = [("v2", "vid_c", "train", 10, list(range(10))), ("v1m", "vid_b", "train", 5, list(range(5))),
            ("v1s", "vid_a", "train", 5, [0]), ("v1s", "vid_t", "test", 5, list(range(5)))]
    audio = {}
    with (root / "avss_index" / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["vid", "uid", "s_min", "s_sec", "a_obj", "split", "label"])
        for seed, (label, uid, split, frames, labelled) in enumerate(rows):
            writer.writerow([uid, uid, 0, 0, "guitar", split, label])
            audio[uid] = _fake_clip(root / label / uid, frames, labelled, seed)
    return root, audio


def test_avsbench_reads_the_official_layout(avsbench):
    root, audio = avsbench
    train = AVSBenchDataset(root, "train")
    assert [uid for _, uid in train.entries] == ["vid_a", "vid_b", "vid_c"]  # official order v1s, v1m, v2
    clip = train.load(0)
    assert clip.name == "v1s/vid_a" and len(clip.frames) == 5
    assert clip.supervised.tolist() == [True, False, False, False, False]  # v1s train: frame 0 only
    assert clip.labels[0, 5:15, 4:20].all() and clip.labels[0].sum() == 10 * 16
    examples = waveform_to_examples(audio["vid_a"], RATE)  # one example per frame from t = 0
    assert np.allclose(clip.audio, examples[:5])
    v2 = train.load(2)
    assert len(v2.frames) == 10 and v2.supervised.all() and v2.audio.shape == (10, 2, 96, 64)
    test = AVSBenchDataset(root, "test", subsets=["v1s"])
    assert len(test) == 1 and test.load(0).supervised.all()
    with pytest.raises(DataError, match="no 'val' clips"):
        AVSBenchDataset(root, "val")


def test_open_split_maps_val_to_avsbench_test(avsbench):
    root, _ = avsbench
    assert [uid for _, uid in open_split(root, "val").entries] == ["vid_t"]


def test_cond_frame_rule():
    assert [cond_frame(5, True), cond_frame(10, True), cond_frame(5, False)] == [2, 5, 0]


def test_tile_clips_covers_every_frame_once():
    clips = tile_clips(11, clip_len=5)
    assert [c.tolist() for c in clips] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]]  # a lone last frame joins
    strided = tile_clips(20, clip_len=3, stride=4)
    assert sorted(np.concatenate(strided).tolist()) == list(range(20))
    assert all((np.diff(c) == 4).all() for c in strided)


def _sample(frames=4, size=64):
    images, _, info = render_sample_frames(seconds=frames, fps=1, size=(size, size), seed=3)
    return ClipSample("s", list(images), info.sounding_masks.astype(np.uint8), np.ones(frames, bool),
                      np.zeros((frames, 2, 96, 64), np.float32))


def test_test_transform_resizes_and_normalises():
    sample = _sample()
    out = EvalTransform(32)(sample)
    assert out.frames.shape == (4, 3, 32, 32) and out.labels.shape == (4, 32, 32)
    nearest = np.asarray(Image.fromarray(sample.labels[0] * 255).resize((32, 32), Image.Resampling.NEAREST)) > 0
    assert np.array_equal(out.labels[0].numpy() > 0, nearest)
    background = torch.tensor(sample.frames[0][0, 0] / 255.0, dtype=torch.float32)  # a dim background pixel
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(out.frames[0, :, 0, 0], (background - mean) / std, atol=0.05)


def test_train_transform_is_clip_consistent_and_moves_labels_with_pixels():
    sample = _sample()
    sample.frames = [sample.frames[0]] * 4  # identical frames and labels
    sample.labels = np.repeat(sample.labels[:1], 4, axis=0)
    for seed in range(3):
        out = TrainTransform(64, jitter=False, seed=seed)(sample)
        assert all(torch.equal(out.frames[0], f) for f in out.frames)  # one geometric draw per clip
        assert all(torch.equal(out.labels[0], lab) for lab in out.labels)
        # the red disc / blue square stand out from the dim background and the mean-colour fill
        shapes = (out.frames[0, 0] > 1.0) | (out.frames[0, 2] > 1.0)
        label = out.labels[0] > 0
        assert (shapes & label).sum() / label.sum() > 0.8
    jittered = TrainTransform(64, jitter=True, seed=0)(sample)
    plain = TrainTransform(64, jitter=False, seed=0)(sample)
    assert not torch.allclose(jittered.frames, plain.frames)  # colour jitter really changes pixels
    assert torch.equal(jittered.labels, plain.labels)


@pytest.fixture(scope="module")
def export_video(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 12-frame synthetic video with sound, and its per-object masks [2, T, H, W]."""
    folder = tmp_path_factory.mktemp("exports")
    frames, audio, info = render_sample_frames(seconds=3, fps=4, size=(64, 48), seed=1)
    path = write_video(folder / "talk.mp4", frames, 4, audio)
    return path, np.stack([info.masks["disc"], info.masks["square"]])


def test_napari_labels_stack_export(export_video, tmp_path):
    video, masks = export_video
    labels = (masks[0] * 1 + masks[1] * 2).astype(np.uint32)
    annotated = np.ones(len(labels), bool)
    annotated[3] = False
    np.savez(tmp_path / "talk.npz", labels=labels, annotated=annotated)
    (tmp_path / "talk.mp4").write_bytes(video.read_bytes())
    clips = AnnotatedVideoClips(VideoEntry(tmp_path / "talk.mp4", tmp_path / "talk.npz"), objects=["2"], clip_len=4)
    assert [c.tolist() for c in clips.clips] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    clip = clips.load(0)
    assert np.array_equal(clip.labels.astype(bool), masks[1, :4])  # only object 2 sounds
    assert clip.supervised.tolist() == [True, True, True, False]
    assert clip.audio.shape == (4, 2, 96, 64) and clip.frames[0].shape == (48, 64, 3)
    train = open_split(tmp_path, "train", DataOptions(clip_len=4, val_fraction=0.25))
    held_out = open_split(tmp_path, "val", DataOptions(clip_len=4, val_fraction=0.25))
    # 11 annotated frames: the last quarter starts at the 9th (video frame 9)
    assert [c.tolist() for c in train.parts[0].clips] == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]
    assert held_out.load(0).frame_indices.tolist() == [9, 10, 11]
    clips.close()


CVAT_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><size>4</size><start_frame>2</start_frame><frame_filter>step=2</frame_filter>
    <original_size><width>10</width><height>8</height></original_size></task></meta>
  <track id="0" label="speaker" source="manual">
    <polygon frame="0" keyframe="1" outside="0" occluded="0" points="1.00,1.00;5.00,1.00;5.00,4.00;1.00,4.00" z_order="0"/>
    <polygon frame="2" keyframe="1" outside="1" occluded="0" points="1.00,1.00;5.00,1.00;5.00,4.00;1.00,4.00" z_order="0"/>
  </track>
  <track id="1" label="speaker" source="manual">
    <mask frame="1" keyframe="1" outside="0" occluded="0" rle="1, 2, 2, 1" left="6" top="5" width="3" height="2" z_order="0"/>
  </track>
  <track id="2" label="door" source="manual">
    <box frame="0" keyframe="1" outside="0" occluded="0" xtl="0" ytl="0" xbr="9" ybr="7" z_order="0"/>
  </track>
</annotations>
"""


def test_cvat_video_xml(tmp_path):
    path = tmp_path / "annotations.xml"
    path.write_text(CVAT_XML)
    ann = read_cvat_xml(path, objects=["speaker"])
    # task frame f is video frame 2 + 2 f; 4 task frames
    assert ann.size == (8, 10) and np.flatnonzero(ann.annotated).tolist() == [2, 4, 6, 8]
    polygon = ann.mask(2)
    assert polygon[1:5, 1:6].all() and polygon.sum() == 20
    assert ann.mask(4)[1:5, 1:6].all()  # the track holds its shape until the next keyframe
    mask = ann.mask(4) & ~polygon
    expected = np.zeros((8, 10), bool)
    expected[5, 7:9] = True  # rle over the 3x2 box at (6, 5): 1 off, 2 on, 2 off, 1 on
    expected[6, 8] = True
    assert np.array_equal(mask, expected)
    assert not ann.mask(6)[1:5, 1:6].any()  # the polygon track went outside at task frame 2
    assert ann.mask(8).sum() == 3  # the mask track persists to the end
    everything = read_cvat_xml(path)
    assert everything.mask(2).all()  # the door box covers the frame


def test_coco_compressed_and_polygon_segmentations(tmp_path):
    # "0X1:F" is pycocotools' text for the runs [0, 40, 10, 30] (hand-encoded: X1 = 8 + 32 * 1, F = delta -10)
    assert decode_coco_counts("0X1:F") == [0, 40, 10, 30]
    coco = {
        "images": [{"id": 5, "file_name": "frame_000003.PNG", "width": 10, "height": 8},
                   {"id": 6, "file_name": "frame_000004.PNG", "width": 10, "height": 8}],
        "categories": [{"id": 1, "name": "speaker"}, {"id": 2, "name": "door"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 1, "iscrowd": 1,
             "segmentation": {"counts": "0X1:F", "size": [8, 10]}},
            {"id": 2, "image_id": 6, "category_id": 1, "iscrowd": 0, "segmentation": [[0, 0, 3, 0, 3, 3, 0, 3]]},
            {"id": 3, "image_id": 6, "category_id": 2, "iscrowd": 1,
             "segmentation": {"counts": [0, 80], "size": [8, 10]}},
        ],
    }
    path = tmp_path / "instances_default.json"
    path.write_text(json.dumps(coco))
    ann = read_coco(path, objects=["speaker"])
    assert np.flatnonzero(ann.annotated).tolist() == [3, 4]
    rle = ann.mask(3)
    expected = np.ones((8, 10), bool)
    expected[:, 5] = False  # column-major: 40 on (columns 0-4), 10 off (column 5, 2 of column 6)
    expected[:2, 6] = False
    assert np.array_equal(rle, expected)
    assert ann.mask(4)[0:4, 0:4].all() and ann.mask(4).sum() == 16
    assert read_annotations(path).mask(4).all()  # with the door


def test_bad_exports_fail_with_clear_errors(tmp_path):
    (tmp_path / "x.xml").write_text("<annotations><track")
    with pytest.raises(DataError, match="CVAT XML"):
        read_annotations(tmp_path / "x.xml")
    np.savez(tmp_path / "y.npz", other=np.zeros(3))
    with pytest.raises(DataError, match="no 'labels' array"):
        read_annotations(tmp_path / "y.npz")
    with pytest.raises(DataError, match="unknown annotation format"):
        (tmp_path / "z.txt").write_text("")
        read_annotations(tmp_path / "z.txt")
    with pytest.raises(DataError, match="pairs"):
        open_split(tmp_path, "train")


def test_manifest_rows_choose_their_split(export_video, tmp_path):
    video, masks = export_video
    np.save(tmp_path / "talk_labels.npy", masks[0].astype(np.uint8))
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "talk.mp4").write_bytes(video.read_bytes())
    manifest = tmp_path / "data.csv"
    manifest.write_text("video,annotations,split\nclips/talk.mp4,talk_labels.npy,train\n"
                        "clips/talk.mp4,talk_labels.npy,val\n")
    options = DataOptions(clip_len=6)
    train, val = open_split(manifest, "train", options), open_split(manifest, "val", options)
    assert len(train) == len(val) == 2  # whole videos go to the split their row names
    assert np.array_equal(val.load(1).labels.astype(bool), masks[0, 6:])
    assert len(open_split(manifest, "all", options)) == 4


def test_napari_tif_labels(tmp_path):
    import tifffile
    labels = np.zeros((3, 8, 10), np.uint16)
    labels[1, 2:4, 3:6] = 7
    tifffile.imwrite(tmp_path / "talk.tif", labels)
    ann = read_annotations(tmp_path / "talk.tif")
    assert ann.num_frames == 3 and ann.size == (8, 10) and ann.annotated.all()
    assert ann.mask(1).sum() == 6 and not ann.mask(0).any()
    with pytest.raises(DataError, match="integers"):
        read_annotations(tmp_path / "talk.tif", objects=["dog"])


def test_annotations_must_match_the_video(export_video, tmp_path):
    video, masks = export_video
    np.save(tmp_path / "small.npy", masks[0, :, :20].astype(np.uint8))
    with pytest.raises(DataError, match="resolution"):
        AnnotatedVideoClips(VideoEntry(video, tmp_path / "small.npy"))
    np.save(tmp_path / "long.npy", np.zeros((40, 48, 64), np.uint8))
    with pytest.raises(DataError, match="pair each annotation"):
        AnnotatedVideoClips(VideoEntry(video, tmp_path / "long.npy"))


# -- issue 14: data problems are found up front, in the main process, in a few short lines ------
def test_avsbench_clips_are_checked_when_the_split_opens(avsbench, tmp_path):
    root = Path(shutil.copytree(avsbench[0], tmp_path / "AVSBench"))
    shutil.rmtree(root / "v1m" / "vid_b")  # missing
    for frame in (root / "v2" / "vid_c" / "frames").iterdir():  # empty
        frame.unlink()
    with pytest.raises(DataError) as error:
        AVSBenchDataset(root, "train")
    assert str(error.value).startswith("2 of the 3 'train' clips listed in metadata.csv cannot be used")
    assert len(str(error.value)) < 160
    assert error.value.details == ["v1m/vid_b: the folder is missing", "v2/vid_c: no frames in frames/"]
    assert len(AVSBenchDataset(root, "test")) == 1  # the intact split still opens


def test_a_binary_metadata_csv_is_one_clear_error(tmp_path):
    (tmp_path / "metadata.csv").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match=r"metadata.csv is not a text CSV file \(byte 128 is not UTF-8\)"):
        open_split(tmp_path, "train")


def test_every_video_of_a_manifest_is_checked(export_video, tmp_path):
    video, masks = export_video
    np.save(tmp_path / "talk.npy", masks[0].astype(np.uint8))
    (tmp_path / "talk.mp4").write_bytes(video.read_bytes())
    manifest = tmp_path / "data.csv"
    manifest.write_text("video,annotations\ntalk.mp4,talk.npy\ngone.mp4,talk.npy\nlost.mp4,talk.npy\n")
    with pytest.raises(DataError) as error:
        open_split(manifest, "train")
    assert str(error.value).startswith("2 of the 3 videos of")
    assert [d.split(":")[0] for d in error.value.details] == ["gone.mp4", "lost.mp4"]
    assert all("not found" in d for d in error.value.details)
    manifest.write_text("video,annotations\ntalk.mp4,\n")
    with pytest.raises(DataError, match="data.csv line 2 lacks a video or annotations path"):
        open_split(manifest, "train")
