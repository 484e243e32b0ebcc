"""The saved-work sidecar: bit-exact restore, atomic and never-clobbering saves, refusal of another video."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

from napari_auralsam2.core import frames_from_array, open_video
from napari_auralsam2.core.session import Prompt
from napari_auralsam2.core.sidecar import (SUFFIX, ObjectRecord, Sidecar, SidecarError, VideoIdentity, load_sidecar,
                                           save_sidecar, sidecar_path)


@pytest.fixture()
def video(sample_mp4):
    with open_video(sample_mp4) as source:
        yield source


def make_sidecar(video) -> Sidecar:
    rng = np.random.default_rng(0)
    shape = (len(video), video.height, video.width)
    masks = np.zeros(shape, np.uint32)
    masks[3:9, 10:30, 20:50] = 2
    masks[5, 0:5, 0:5] = 4_000_000_000  # uint32 ids beyond 16 bits survive
    committed = np.zeros(shape, np.uint32)
    committed[:, 40:60, 60:90] = rng.integers(0, 2, (len(video), 20, 30)) * 7
    fixed = np.zeros((video.height, video.width), bool)
    fixed[12:20, 22:40] = True
    objects = [
        ObjectRecord(2, "drum", prompts=[Prompt(3, 2, points=[(21.5, 12.0), (40.0, 5.25)], labels=[1, 0]),
                                         Prompt(6, 2, box=(10.0, 10.0, 40.0, 30.0)),
                                         Prompt(8, 2, mask=fixed, text="the drum on the left")]),
        ObjectRecord(7, "singer", committed=True, audio_guidance=False, prompts=[Prompt(0, 7)]),  # audio-only
    ]
    return Sidecar(VideoIdentity.of(video), {"masks": masks, "committed": committed}, objects,
                   protection={"masks": {"3": 123456789, "4": 42}}, settings={"model": "hiera_t", "image_size": 128,
                                                                               "use_audio": True, "window": 5})


def test_restore_equals_what_was_saved(video, tmp_path):
    saved = make_sidecar(video)
    path = save_sidecar(sidecar_path(video.path), saved)
    assert path.name == video.path.name + SUFFIX
    loaded = load_sidecar(path, video)
    assert loaded.video == saved.video
    assert list(loaded.layers) == ["masks", "committed"]
    for name, labels in saved.layers.items():
        assert loaded.layers[name].dtype == labels.dtype
        np.testing.assert_array_equal(loaded.layers[name], labels)
    assert loaded.objects == saved.objects  # ids, names, flags, clicks/boxes/audio prompts (masks compared below)
    np.testing.assert_array_equal(loaded.objects[0].prompts[2].mask, saved.objects[0].prompts[2].mask)
    assert loaded.objects[0].prompts[2].text == "the drum on the left"  # a Ref-AVS text rides with its prompt
    assert loaded.objects[0].prompts[0].points == [(21.5, 12.0), (40.0, 5.25)]
    assert loaded.objects[1].prompts[0].audio_only
    assert loaded.protection == saved.protection and loaded.settings == saved.settings
    assert zipfile.ZipFile(path).testzip() is None
    assert os.path.getsize(path) < sum(a.nbytes for a in saved.layers.values()) / 20  # compressed


def test_never_overwrites_without_asking(video, tmp_path):
    path = tmp_path / "work.auralsam2.npz"
    first = make_sidecar(video)
    save_sidecar(path, first)
    before = path.read_bytes()
    second = make_sidecar(video)
    second.objects[0].name = "renamed"
    with pytest.raises(SidecarError, match="already exists.*overwrite=True"):
        save_sidecar(path, second)
    assert path.read_bytes() == before
    save_sidecar(path, second, overwrite=True)
    assert load_sidecar(path).objects[0].name == "renamed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work.auralsam2.npz"]  # no temporary file left


def test_a_failed_save_keeps_the_old_file(video, tmp_path, monkeypatch):
    path = tmp_path / "work.auralsam2.npz"
    save_sidecar(path, make_sidecar(video))
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(SidecarError, match="No space left"):
        save_sidecar(path, make_sidecar(video), overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work.auralsam2.npz"]


def test_refuses_the_sidecar_of_another_video(video, clip_spec, tmp_path):
    path = save_sidecar(tmp_path / "work.auralsam2.npz", make_sidecar(video))
    shorter = frames_from_array(np.stack([clip_spec.frame(i) for i in range(5)]), clip_spec.fps)
    with pytest.raises(SidecarError, match=r"another video \(it was saved for 20 frames 96x64, this video has 5 fr"):
        load_sidecar(path, shorter)
    other = frames_from_array(255 - np.stack([clip_spec.frame(i) for i in range(20)]), clip_spec.fps)
    with pytest.raises(SidecarError, match="another picture") as info:
        load_sidecar(path, other)
    assert "\n" not in str(info.value) and "clip.mp4" in str(info.value)
    same_frames = frames_from_array(np.stack([clip_spec.frame(i) for i in range(20)]), clip_spec.fps)
    assert load_sidecar(path, same_frames).objects  # the same pictures decoded elsewhere still match


@pytest.mark.parametrize("change, needle", [
    (lambda s: setattr(s, "protection", {3: 1}), "edit-protection state cannot be saved exactly"),
    (lambda s: setattr(s, "settings", {"size": np.int64(3)}), "engine settings cannot be saved"),
    (lambda s: s.layers.update(masks=np.zeros((2, 3, 4), np.uint32)), r"layer 'masks' is uint32 \(2, 3, 4\)"),
])
def test_bad_content_is_refused_before_writing(video, tmp_path, change, needle):
    sidecar = make_sidecar(video)
    change(sidecar)
    with pytest.raises(SidecarError, match=needle):
        save_sidecar(tmp_path / "x.auralsam2.npz", sidecar)
    assert not any(tmp_path.iterdir())


def test_unreadable_files_are_one_line(tmp_path):
    garbage = tmp_path / "bad.auralsam2.npz"
    garbage.write_bytes(b"not a zip")
    for path, needle in ((garbage, "cannot read bad.auralsam2.npz"), (tmp_path / "none.npz", "no saved work")):
        with pytest.raises(SidecarError, match=needle) as info:
            load_sidecar(path)
        assert "\n" not in str(info.value)
