"""Locating CVAT frames in source videos (the detector's audio side channel), on real PyAV files."""
from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from napari_auralsam2.core.video import open_video, write_video
from napari_auralsam2.cvat import fingerprint as fp
from napari_auralsam2.cvat.fingerprint import (
    AmbiguousFrameError,
    BackgroundRefresh,
    FrameIndex,
    FrameNotFoundError,
)

from ._cvat_support import cvat_upload

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
        FrameIndex([videos / "missing"]).refresh(strict=True)  # a video the user named


def test_a_missing_folder_is_reported_once_and_looked_for_again(videos, tmp_path):
    said = []
    index = FrameIndex([videos, tmp_path / "later"], log=said.append)
    assert len(index.refresh()) == 2 and index.refresh() == []
    assert len(said) == 1 and "later does not exist" in said[0]
    (tmp_path / "later").mkdir()
    shutil.copy(videos / "nested" / "other.mp4", tmp_path / "later" / "new.mp4")
    assert [p.name for p in index.refresh()] == ["new.mp4"]


def test_the_same_frame_in_two_videos_is_ambiguous(videos, tmp_path):
    with open_video(videos / "talk.mp4") as video:
        frames = list(video)
        write_video(tmp_path / "talk-reencoded.mp4", frames, video.fps)
    index = FrameIndex([videos / "talk.mp4", tmp_path / "talk-reencoded.mp4"])
    index.refresh()
    with pytest.raises(AmbiguousFrameError, match="talk-reencoded.mp4, talk.mp4"):
        index.match(frames[3])
    # once a video is being followed, continuity settles it
    assert index.match(frames[3], after=(videos / "talk.mp4", 2)).path == videos / "talk.mp4"


def test_byte_identical_copies_are_one_video(videos, tmp_path):
    """Two CVAT tasks made from one upload keep two identical files: same frames, same sound."""
    shutil.copy(videos / "talk.mp4", tmp_path / "talk-copy.mp4")
    index = FrameIndex([videos / "talk.mp4", tmp_path / "talk-copy.mp4"])
    index.refresh()
    with open_video(videos / "talk.mp4") as video:
        match = index.match(video.frame(3))
    assert match.frame == 3 and match.path == min(videos / "talk.mp4", tmp_path / "talk-copy.mp4", key=str)


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


# -- CVAT's data volume ------------------------------------------------------------------------
def counting_decoder(monkeypatch) -> list[str]:
    """Record every video decoded for fingerprints (by file name)."""
    decoded, original = [], fp.video_fingerprints

    def decode(path):
        decoded.append(path.name)
        return original(path)

    monkeypatch.setattr(fp, "video_fingerprints", decode)
    return decoded


def test_only_task_uploads_of_a_cvat_data_dir_are_indexed(videos, tmp_path):
    data = tmp_path / "cvat-data"
    talk = cvat_upload(data, 3, videos / "talk.mp4")
    chunks = data / "data" / "3" / "compressed"  # CVAT's re-encoded chunks: the same frames again
    chunks.mkdir()
    with open_video(talk) as video:
        write_video(chunks / "0.mp4", list(video), video.fps)
        frame = video.frame(4)
    (data / "data" / "4" / "raw").mkdir(parents=True)  # an image task
    Image.fromarray(frame).save(data / "data" / "4" / "raw" / "frame_000000.jpg")
    index = FrameIndex(cvat_data=[data])
    assert index.refresh() == [talk]
    assert index.match(frame).path == talk
    other = cvat_upload(data, 5, videos / "nested" / "other.mp4")  # a task created while running
    assert index.refresh() == [other]


def test_a_file_is_read_once_whatever_path_it_is_seen_through(videos, tmp_path, monkeypatch):
    decoded = counting_decoder(monkeypatch)
    data = tmp_path / "cvat-data"
    talk = cvat_upload(data, 3, videos / "talk.mp4")
    share = tmp_path / "share"
    share.mkdir()
    os.link(talk, share / "hard-link.mp4")
    (share / "sym-link.mp4").symlink_to(talk)
    cache = tmp_path / "cache"
    index = FrameIndex([share], cvat_data=[data], cache_dir=cache)
    assert len(index.refresh()) == 1 and len(decoded) == 1 and len(index.videos) == 1
    moved = talk.with_name("renamed.mp4")
    talk.rename(moved)  # same file: its cached prints are found by identity, not by path
    fresh = FrameIndex([moved], cache_dir=cache)
    assert fresh.refresh() == [moved] and len(decoded) == 1


def test_an_unreadable_file_is_skipped_logged_once_and_retried(videos, tmp_path, monkeypatch):
    """issue 14 case 10 (index): a video still being copied does not stop the others."""
    decoded = counting_decoder(monkeypatch)
    folder = tmp_path / "volume"
    folder.mkdir()
    shutil.copy(videos / "talk.mp4", folder / "talk.mp4")
    whole = (videos / "nested" / "other.mp4").read_bytes()
    copying = folder / "being_copied.mp4"
    copying.write_bytes(whole[: len(whole) // 2])
    said = []
    index = FrameIndex([folder], log=said.append)
    assert index.refresh() == [folder / "talk.mp4"]
    assert index.refresh() == [] and decoded.count("being_copied.mp4") == 1  # not retried at once
    assert len(said) == 1 and "being_copied.mp4" in said[0] and set(index.failed) == {copying}
    with open_video(folder / "talk.mp4") as video:
        assert index.match(video.frame(2)).frame == 2
    copying.write_bytes(whole)  # the copy completes: the file changed, so it is read again
    assert index.refresh() == [copying] and index.failed == {} and len(said) == 1
    index.retry_s = 0.0
    copying.write_bytes(whole[:100])
    index.refresh(), index.refresh()
    assert decoded.count("being_copied.mp4") == 4 and len(said) == 2  # retried, but reported once


def test_background_refresh_catches_up_on_demand(videos, tmp_path):
    folder = tmp_path / "volume"
    folder.mkdir()
    index = FrameIndex([folder])
    refresher = BackgroundRefresh(index, interval_s=3600)
    try:
        assert refresher.catch_up(wait_s=60) and index.videos == {}
        shutil.copy(videos / "talk.mp4", folder / "talk.mp4")
        assert refresher.catch_up(wait_s=60) and list(index.videos) == [folder / "talk.mp4"]
    finally:
        refresher.close()
