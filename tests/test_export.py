"""Mask writers (label PNGs, npz, COCO RLE), overlay rendering, overlay video and contact sheet."""
from __future__ import annotations

import json

import av
import numpy as np
import pytest
from PIL import Image

from napari_auralsam2.core import AudioTrack, export, frames_from_array
from napari_auralsam2.core.errors import AuralSAM2Error
from napari_auralsam2.core.export import (CONTACT_COLUMNS, ENERGY_BAR_COLOUR, OVERLAY_ALPHA, THUMB_WIDTH, MaskStore,
                                          frame_energies, mask_bbox, object_colour, render_overlay, rle_decode,
                                          rle_encode, write_contact_sheet, write_masks, write_overlay)

T, H, W, FPS = 6, 40, 56, 10.0


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    ys, xs = np.mgrid[0:H, 0:W]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r**2


@pytest.fixture(scope="module")
def masks() -> dict[int, dict[int, np.ndarray]]:
    """Frames 1..4 segmented: object 1 a moving disc, object 300 a box overlapping it on frame 2."""
    out = {}
    for t in range(1, 5):
        box = np.zeros((H, W), bool)
        box[5:20, 30:50] = True
        out[t] = {1: _disc(10 + 5 * t, 20, 8), 300: box if t != 3 else np.zeros((H, W), bool)}
    out[2][300][15:25, 10:30] = True  # overlaps object 1
    return out


@pytest.fixture(scope="module")
def store(masks) -> MaskStore:
    store = MaskStore(T, H, W)
    for t in (4, 1, 3, 2):  # propagate() may yield frames in any order
        store.add(t, masks[t])
    return store


@pytest.fixture(scope="module")
def video():
    frames = np.full((T, H, W, 3), 100, np.uint8)
    t = np.arange(int(T / FPS * 8000)) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    tone[: len(tone) // 2] = 0  # silent first half, loud second half
    return frames_from_array(frames, FPS, audio=AudioTrack(np.stack([tone, tone], 1), 8000))


def expected_labels(masks: dict[int, np.ndarray]) -> np.ndarray:
    labels = np.zeros((H, W), np.uint32)
    for obj in sorted(masks):
        labels[masks[obj]] = obj
    return labels


@pytest.mark.parametrize("mask, counts", [
    (np.array([[0, 1], [1, 1]], bool), [1, 3]),  # column-major: (0,0)=0, (1,0)=1, (0,1)=1, (1,1)=1
    (np.array([[1, 0, 0], [1, 1, 0]], bool), [0, 2, 1, 1, 2]),  # starts with foreground: a leading 0 run
    (np.zeros((2, 3), bool), [6]),
])
def test_rle_is_coco_column_major(mask, counts):
    rle = rle_encode(mask)
    assert rle == {"size": list(mask.shape), "counts": counts}
    assert np.array_equal(rle_decode(rle), mask)


def test_rle_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 5), (33, 64)]:
        mask = rng.random(shape) < 0.4
        assert np.array_equal(rle_decode(rle_encode(mask)), mask)
        assert sum(rle_encode(mask)["counts"]) == mask.size
    with pytest.raises(AuralSAM2Error, match="corrupted"):
        rle_decode({"size": [2, 2], "counts": [1, 2]})


def test_store_labels_order_and_overlap(store, masks):
    assert store.frames == [1, 2, 3, 4] and store.object_ids == [1, 300] and len(store) == 4
    assert 0 not in store and store.masks(0) == {} and not store.labels(0).any()
    labels = store.labels(2)
    assert np.array_equal(labels, expected_labels(masks[2]))
    assert (labels[masks[2][1] & masks[2][300]] == 300).all()  # the higher id wins
    with pytest.raises(AuralSAM2Error, match="outside the video"):
        store.add(T, {1: masks[1][1]})
    with pytest.raises(AuralSAM2Error, match="ids from 1"):
        store.add(0, {0: masks[1][1]})


def test_png_labels_16_bit(tmp_path, store, masks, video):
    folder = write_masks(store, tmp_path, "png", video)
    assert sorted(p.name for p in folder.iterdir()) == [f"{t:06d}.png" for t in (1, 2, 3, 4)]
    for t in (1, 2, 3, 4):
        image = Image.open(folder / f"{t:06d}.png")
        assert np.array(image).dtype == np.uint16  # id 300 needs 16 bits
        assert np.array_equal(np.array(image), expected_labels(masks[t]))


def test_png_labels_replace_an_earlier_run(tmp_path, store, video):
    folder = tmp_path / "masks"
    folder.mkdir()
    (folder / "000005.png").write_bytes(b"from an earlier, longer run")
    (folder / "notes.txt").write_text("not ours")
    write_masks(store, tmp_path, "png", video)
    assert sorted(p.name for p in folder.iterdir()) == [f"{t:06d}.png" for t in (1, 2, 3, 4)] + ["notes.txt"]


def test_png_labels_8_bit(tmp_path, masks, video):
    small = MaskStore(T, H, W)
    small.add(1, {1: masks[1][1], 2: masks[1][300]})
    folder = write_masks(small, tmp_path, "png", video)
    image = np.array(Image.open(folder / "000001.png"))
    assert image.dtype == np.uint8 and set(np.unique(image)) == {0, 1, 2}


def test_npz(tmp_path, store, masks, video):
    path = write_masks(store, tmp_path, "npz", video)
    with np.load(path) as data:
        assert data["labels"].dtype == np.uint32 and data["labels"].shape == (T, H, W)
        for t in range(T):
            want = expected_labels(masks[t]) if t in masks else np.zeros((H, W), np.uint32)
            assert np.array_equal(data["labels"][t], want)
        assert data["object_ids"].tolist() == [1, 300]
        assert data["segmented"].tolist() == [False, True, True, True, True, False]
        assert np.allclose(data["frame_times"], np.arange(T) / FPS) and float(data["fps"]) == FPS


def test_coco_rle(tmp_path, store, masks, video):
    path = write_masks(store, tmp_path, "coco-rle", video, info={"model": "hiera_t"})
    doc = json.loads(path.read_text())
    assert doc["info"]["model"] == "hiera_t" and doc["info"]["num_frames"] == T
    assert doc["videos"][0]["length"] == T and len(doc["images"]) == T
    assert [im["frame_index"] for im in doc["images"]] == list(range(T))
    anns = doc["annotations"]
    assert len(anns) == 4 * 2  # one per object per segmented frame, empty masks included
    assert len({a["id"] for a in anns}) == len(anns)
    for ann in anns:
        t = ann["image_id"] - 1
        want = masks[t][ann["object_id"]]
        assert ann["segmentation"]["size"] == [H, W]
        assert np.array_equal(rle_decode(ann["segmentation"]), want)
        assert ann["area"] == want.sum() and ann["bbox"] == mask_bbox(want)
    empty = [a for a in anns if a["area"] == 0]
    assert [(a["image_id"] - 1, a["object_id"]) for a in empty] == [(3, 300)]


def test_unknown_format(tmp_path, store, video):
    with pytest.raises(AuralSAM2Error, match="unknown mask format"):
        write_masks(store, tmp_path, "tiff", video)


def test_mask_bbox():
    mask = np.zeros((H, W), bool)
    mask[3:7, 10:12] = True
    assert mask_bbox(mask) == [10, 3, 2, 4]
    assert mask_bbox(np.zeros((H, W), bool)) == [0, 0, 0, 0]


def test_render_overlay_blends_and_draws_energy_bar(masks):
    frame = np.full((H, W, 3), 100, np.uint8)
    mask = masks[1][1]
    out = render_overlay(frame, {1: mask}, energy=None)
    interior = mask.copy()
    interior[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    blended = np.round((1 - OVERLAY_ALPHA) * 100 + OVERLAY_ALPHA * np.array(object_colour(1))).astype(np.uint8)
    assert (out[interior] == blended).all()
    assert (out[mask & ~interior] == object_colour(1)).all()  # outline
    assert (out[~mask] == 100).all()  # untouched outside
    green = np.array(ENERGY_BAR_COLOUR)
    bar = [int((render_overlay(frame, {}, energy=e) == green).all(-1).sum()) for e in (0.0, 0.5, 1.0)]
    assert bar[0] == 0 and 0.4 < bar[1] / bar[2] < 0.6


def test_render_overlay_banner_changes_the_top_only():
    frame = np.full((H * 4, W * 4, 3), 100, np.uint8)
    out = render_overlay(frame, {}, banner="RANDOM WEIGHTS")
    changed = np.nonzero((out != 100).any(-1))[0]
    assert changed.size and changed.max() < out.shape[0] // 4


def test_frame_energies(video):
    energy = frame_energies(video.audio, video.frame_times, video.fps)
    assert energy.shape == (T,)
    assert energy[0] == 0.0  # digital silence
    assert energy[-1] == pytest.approx(1 - 9.03 / 60, abs=0.02)  # 0.5-amplitude sine: -9 dBFS


def test_write_overlay_has_audio_and_all_frames(tmp_path, store, video, masks):
    path = write_overlay(tmp_path / "overlay.mp4", video, store, video.audio)
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == T
    inside = frames[1][masks[1][1] & _disc(15, 20, 5)].mean(0)
    blended = (1 - OVERLAY_ALPHA) * 100 + OVERLAY_ALPHA * np.array(object_colour(1))
    assert np.abs(inside - blended).max() < 12  # h264 is lossy
    assert np.abs(frames[0][10:30, 10:50].mean((0, 1)) - 100).max() < 6  # frame 0 was not segmented


def test_contact_sheet(tmp_path, store, video):
    path = write_contact_sheet(tmp_path / "sheet.png", video, store, video.audio, banner="RANDOM")
    sheet = Image.open(path)
    thumb_h = round(THUMB_WIDTH * H / W)
    assert sheet.size[0] == CONTACT_COLUMNS * THUMB_WIDTH  # 4 segmented frames, one row
    assert sheet.size[1] > thumb_h


# -- issue 14: re-runs and interruptions never leave less than was there ------------------------
def _snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_an_interrupted_run_goes_beside_an_earlier_one(tmp_path, store, video, masks):
    earlier = write_masks(store, tmp_path, "png", video)  # a complete run: frames 1-4
    before = _snapshot(earlier)
    partial = MaskStore(T, H, W)
    partial.add(1, {7: masks[1][1]})
    beside = write_masks(partial, tmp_path, "png", video, interrupted=True)
    assert beside == tmp_path / "masks-interrupted" and list(_snapshot(beside)) == ["000001.png"]
    assert _snapshot(earlier) == before
    npz = write_masks(store, tmp_path, "npz", video).read_bytes()
    first = write_masks(partial, tmp_path, "npz", video, interrupted=True)
    second = write_masks(partial, tmp_path, "npz", video, interrupted=True)
    assert (first.name, second.name) == ("masks-interrupted.npz", "masks-interrupted-2.npz")
    assert (tmp_path / "masks.npz").read_bytes() == npz
    with np.load(first) as data:
        assert data["segmented"].tolist() == [False, True, False, False, False, False]
    assert write_masks(partial, tmp_path / "new", "coco-rle", video, interrupted=True).name == "masks.json"


@pytest.mark.parametrize("fmt", ["png", "npz", "coco-rle"])
def test_ctrl_c_while_writing_keeps_the_earlier_masks(tmp_path, store, video, masks, monkeypatch, fmt):
    write_masks(store, tmp_path, fmt, video)
    before = {p.name: (_snapshot(p) if p.is_dir() else p.read_bytes()) for p in tmp_path.iterdir()}
    other = MaskStore(T, H, W)
    for t in (0, 5):
        other.add(t, {2: masks[1][1]})
    reader = "masks" if fmt == "coco-rle" else "labels"  # what the writer reads frame by frame
    real = getattr(MaskStore, reader)

    def interrupted(self, frame_index, *args):
        if frame_index == 5:  # Ctrl-C half-way through writing
            raise KeyboardInterrupt
        return real(self, frame_index, *args)

    monkeypatch.setattr(MaskStore, reader, interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_masks(other, tmp_path, fmt, video)
    after = {p.name: (_snapshot(p) if p.is_dir() else p.read_bytes()) for p in tmp_path.iterdir()}
    assert after == before  # nothing lost, nothing half-written left behind


def test_an_overlay_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    long = frames_from_array(np.full((60, 32, 32, 3), 100, np.uint8), FPS)  # past the encoder's look-ahead
    path = write_overlay(tmp_path / "overlay.mp4", long, MaskStore(60, 32, 32))
    before = path.read_bytes()
    real, rendered = export.render_overlay, []

    def interrupted(*args, **kwargs):
        rendered.append(True)
        if len(rendered) == 50:  # Ctrl-C with frames already encoded
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "render_overlay", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_overlay(path, long, MaskStore(60, 32, 32))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["overlay.mp4"]
