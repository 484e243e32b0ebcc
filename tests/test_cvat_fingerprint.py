"""Locating CVAT frames in source videos (the detector's audio side channel), on real PyAV files."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from napari_auralsam2.core.video import open_video, write_video
from napari_auralsam2.cvat import fingerprint as fp
from napari_auralsam2.cvat.fingerprint import AmbiguousFrameError, FrameIndex, FrameNotFoundError

JPEG_QUALITY = 75  # CVAT's default image quality for compressed chunks; image tasks are often JPEG


def reencoded(frame: np.ndarray, fmt: str, **options) -> Image.Image:
    """A frame as CVAT serves it: PNG for video tasks, JPEG (as uploaded) for image tasks."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, fmt, **options)
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.fixture(scope="module")
def videos(tmp_path_factory, sample_mp4):
    folder = tmp_path_factory.mktemp("volume")
    shutil.copy(sample_mp4, folder / "talk.mp4")
    rng = np.random.default_rng(3)
    other = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(6)]
    (folder / "nested").mkdir()
    write_video(folder / "nested" / "other.mp4", other, 5.0)
    return folder


def test_png_and_jpeg_frames_are_found_exactly(videos, clip_spec):
    index = FrameIndex([videos])
    assert sorted(p.name for p in index.refresh()) == ["other.mp4", "talk.mp4"]
    with open_video(videos / "talk.mp4") as video:
        for i in range(clip_spec.n_frames):
            frame = video.frame(i)
            for image in (reencoded(frame, "PNG"), reencoded(frame, "JPEG", quality=JPEG_QUALITY)):
                match = index.match(image)
                assert (match.path.name, match.frame) == ("talk.mp4", i)
                assert match.distance <= fp.DEFAULT_TOLERANCE


def test_resized_frames_are_found(videos):
    index = FrameIndex([videos])
    index.refresh()
    with open_video(videos / "talk.mp4") as video:
        frame = Image.fromarray(video.frame(7)).resize((192, 128), Image.Resampling.BILINEAR)
    assert index.match(frame).frame == 7


def test_unknown_images_are_refused_not_guessed(videos):
    index = FrameIndex([videos])
    index.refresh()
    stranger = np.full((64, 96, 3), (200, 30, 160), np.uint8)
    with pytest.raises(FrameNotFoundError, match="matches no frame"):
        index.match(stranger)
    with pytest.raises(FrameNotFoundError, match="no source video"):
        FrameIndex([]).match(stranger)
    with pytest.raises(FrameNotFoundError, match="does not exist"):
        FrameIndex([videos / "missing"]).refresh()


def test_the_same_frame_in_two_videos_is_ambiguous(videos, tmp_path):
    shutil.copy(videos / "talk.mp4", tmp_path / "talk-copy.mp4")
    index = FrameIndex([videos / "talk.mp4", tmp_path / "talk-copy.mp4"])
    index.refresh()
    with open_video(videos / "talk.mp4") as video:
        frame = video.frame(3)
    with pytest.raises(AmbiguousFrameError, match="talk-copy.mp4, talk.mp4"):
        index.match(frame)
    # once a video is being followed, continuity settles it
    assert index.match(frame, after=(videos / "talk.mp4", 2)).path == videos / "talk.mp4"


def test_static_shots_are_resolved_by_continuity(tmp_path):
    still = np.full((32, 32, 3), 90, np.uint8)
    moving = [np.roll(np.eye(32, dtype=np.uint8)[..., None].repeat(3, 2) * 250, k, axis=1) for k in range(3)]
    path = write_video(tmp_path / "still.mp4", [still] * 5 + moving, 5.0)
    index = FrameIndex([path])
    index.refresh()
    assert index.match(still).frame == 0  # no context: the shot's first frame
    assert index.match(still, after=(path, 1)).frame == 2
    assert index.match(still, after=(path, 4)).frame == 0  # the shot is over: back to the best match


def test_index_is_cached_on_disk_and_refreshed(videos, tmp_path, monkeypatch):
    videos = shutil.copytree(videos, tmp_path / "volume")
    cache = tmp_path / "cache"
    first = FrameIndex([videos], cache_dir=cache)
    first.refresh()
    assert len(list(cache.glob("*.npz"))) == 2

    def no_decoding(path):
        raise AssertionError(f"{path} was decoded again despite the cache")

    monkeypatch.setattr(fp, "video_fingerprints", no_decoding)
    second = FrameIndex([videos], cache_dir=cache)
    second.refresh()
    assert all(np.array_equal(second.videos[p].prints, first.videos[p].prints) for p in first.videos)
    assert second.refresh() == []  # unchanged files are not re-indexed
    monkeypatch.undo()
    (videos / "nested" / "other.mp4").unlink()
    assert second.refresh() == [] and [p.name for p in second.videos] == ["talk.mp4"]


def test_fingerprints_are_small():
    assert fp.fingerprint(np.zeros((1080, 1920, 3), np.uint8)).nbytes == fp.DIMS == 192
