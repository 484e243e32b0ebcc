"""napari host without the model: manifest, reader, sample data, remembered settings."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from npe2 import PluginManifest

from napari.utils.notifications import notification_manager
from napari_auralsam2._napari import reader as reader_mod
from napari_auralsam2._napari import sample_data, settings
from napari_auralsam2.core.sample import render_sample_frames
from napari_auralsam2.core.video import VideoSource

PLUGIN = "napari-auralsam2"


@pytest.fixture
def notes() -> list[str]:
    """Messages of the napari notifications raised during the test."""
    messages: list[str] = []
    callback = lambda n: messages.append(str(n.message))  # noqa: E731
    notification_manager.notification_ready.connect(callback)
    yield messages
    notification_manager.notification_ready.disconnect(callback)


def test_manifest_is_valid_and_importable() -> None:
    manifest = PluginManifest.from_distribution(PLUGIN)
    manifest.validate_imports()  # every python_name resolves
    contributions = manifest.contributions
    assert [r.command for r in contributions.readers] == [f"{PLUGIN}.get_reader"]
    assert {"*.mp4", "*.mov", "*.mkv", "*.webm", "*.avi"} <= set(contributions.readers[0].filename_patterns)
    assert [s.display_name for s in contributions.sample_data] == ["AuralSAM2 sample clip"]
    assert [w.display_name for w in contributions.widgets] == ["AuralSAM2"]


def test_napari_opens_a_video_lazily_with_its_sound(make_napari_viewer, sample_mp4: Path, clip_spec) -> None:
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(str(sample_mp4), plugin=PLUGIN)
    source = layer.data
    assert isinstance(source, VideoSource) and layer.rgb
    assert source.shape == (clip_spec.n_frames, clip_spec.height, clip_spec.width, 3)
    # decoded so far: the shown frame's group of pictures (plus napari's probe of frame 0), not the video
    assert len(source._cache) <= clip_spec.keyframe_interval + 1 < clip_spec.n_frames
    assert layer.metadata[reader_mod.AUDIO_SOURCE_KEY] == str(sample_mp4)
    assert layer.metadata[reader_mod.FPS_KEY] == pytest.approx(clip_spec.fps)
    viewer.dims.set_current_step(0, 7)
    shown = np.asarray(layer._slice.image.view)
    assert shown.shape == (clip_spec.height, clip_spec.width, 3)
    assert abs(float(shown[40, 80].mean()) - float(clip_spec.frame(7)[40, 80].mean())) < 6


def test_videos_open_with_this_reader_without_a_dialog_once_the_plugin_was_used(make_napari_viewer, sample_mp4,
                                                                               tmp_path, notes) -> None:
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    with pytest.raises(MultipleReaderError):  # napari's builtin reader claims *.mp4 too: the dialog
        viewer.open(str(sample_mp4), plugin=None)
    claimed = reader_mod.claim_video_extensions()  # what the widget, the sample and the reader do
    assert "*.mp4" in claimed and "*.MOV" in claimed
    assert any("AuralSAM2 now opens *.mp4" in note and "Preferences" in note for note in notes)
    (layer,) = viewer.open(str(sample_mp4), plugin=None)  # what File > Open, drag and drop, `napari clip.mp4` do
    assert layer.metadata[reader_mod.AUDIO_SOURCE_KEY] == str(sample_mp4)
    assert reader_mod.claim_video_extensions() == []  # said once

    plugins = get_settings().plugins
    plugins.extension2reader = {"*.mov": "napari"}  # a choice the user made stays theirs
    assert "*.mov" not in reader_mod.claim_video_extensions()
    assert plugins.extension2reader["*.mov"] == "napari" and plugins.extension2reader["*.mp4"] == PLUGIN


def test_opening_a_video_loads_neither_torch_nor_sam2(sample_mp4: Path) -> None:
    code = ("import sys; from napari_auralsam2._napari import reader; reader.video_layer_data(reader.open_video("
            f"{str(sample_mp4)!r})); print(sorted(m for m in ('torch', 'sam2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_video_without_sound_opens_with_a_notification(silent_mp4: Path, notes: list[str]) -> None:
    read = reader_mod.get_reader(str(silent_mp4))
    ((data, kwargs, kind),) = read(str(silent_mp4))
    assert kind == "image" and kwargs["metadata"][reader_mod.AUDIO_SOURCE_KEY] is None
    assert any("no audio track" in note for note in notes)


def test_reader_declines_what_it_cannot_read(tmp_path: Path, sample_mp4: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"definitely not a video" * 100)
    assert reader_mod.get_reader(str(broken)) is None
    assert reader_mod.get_reader(str(tmp_path / "missing.mov")) is None
    assert reader_mod.get_reader(str(tmp_path / "notes.txt")) is None
    assert reader_mod.get_reader([str(sample_mp4), str(sample_mp4)]) is None
    assert reader_mod.get_reader([str(sample_mp4)]) is not None


def test_sample_clip_is_rendered_once_and_has_sound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ((source, kwargs, kind),) = sample_data.sample_clip()
    path = sample_data.sample_path()
    assert path.is_relative_to(tmp_path) and source.path == path
    assert kwargs["name"] == "AuralSAM2 sample clip" and kwargs["metadata"][reader_mod.AUDIO_SOURCE_KEY] == str(path)
    frames, _, info = render_sample_frames(sample_data.SAMPLE_SECONDS, sample_data.SAMPLE_FPS,
                                           sample_data.SAMPLE_SIZE, sample_data.SAMPLE_SEED)
    assert source.shape == frames.shape
    assert np.abs(source.frame(5).astype(int) - frames[5]).mean() < 6
    assert not source.audio.is_silent()
    stamp = path.stat().st_mtime_ns
    sample_data.sample_clip()
    assert path.stat().st_mtime_ns == stamp and list(path.parent.iterdir()) == [path]


def test_settings_survive_a_restart_and_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert settings.load_settings() == settings.WidgetSettings()
    chosen = settings.WidgetSettings(model="hiera_s", image_size=512, checkpoint="/w/a.pth", device="cpu")
    settings.save_settings(chosen)
    assert settings.settings_path().is_relative_to(tmp_path)
    assert settings.load_settings() == chosen
    settings.settings_path().write_text('{"model": 3, "image_size": "big", "device": "cuda"')  # truncated
    assert settings.load_settings() == settings.WidgetSettings()
    settings.settings_path().write_text('{"model": 3, "image_size": 256}')
    assert settings.load_settings() == settings.WidgetSettings(image_size=256)


def test_a_video_cut_short_opens_with_only_its_readable_frames(truncated_faststart_mp4: Path,
                                                               notes: list[str]) -> None:
    """Issue 14: the layer offers only frames that decode, says so, and slicing any of them never raises."""
    read = reader_mod.get_reader(str(truncated_faststart_mp4))
    ((data, _, kind),) = read(str(truncated_faststart_mp4))
    for index in range(data.shape[0]):  # as napari slices: a tuple key per displayed frame
        assert data[index, :, :].shape == data.shape[1:]
    assert kind == "image" and any("cut short" in note for note in notes)
