"""The AuralSAM2 dock widget end to end: real napari under Xvfb, real PyAV clip, random-init hiera_t.

Every result is checked against the core session run directly with the same prompts, so the
widget's coordinate conversion, object ids, frame indices and directions are what is tested.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ._napari_support import (ENGINE, FRAME, PLUGIN, RUN_TIMEOUT_MS, answers, cached_engine, docked, engine, notes,  # noqa: F401
                             press, reference, run, save_screenshot)
from napari.layers import Labels

from napari_auralsam2._napari import runner
from napari_auralsam2._napari.labels import masks_to_labels
from napari_auralsam2._napari.widget import AuralSAM2Widget
from napari_auralsam2.core import open_video
from napari_auralsam2.core import session as session_module
from napari_auralsam2.core.errors import WeightsMissingError

SCREENSHOT = "napari_widget.png"


def test_clicks_then_propagate_both_ways_fills_every_frame(qtbot, docked, engine, sample_mp4, clip_spec, notes):
    viewer, widget, video = docked
    points, boxes = widget.prompt_layers(video)
    assert points is not None and boxes is not None and viewer.layers.selection.active == points
    points.add([[FRAME, 17, 31]])  # object 1, positive, on the bar
    press(qtbot, viewer, "t")  # -> negative
    assert not widget.form.positive
    points.add([[FRAME, 45, 70]])
    press(qtbot, viewer, "n")  # -> object 2, positive again
    assert widget.form.object_id.value == 2 and widget.form.positive
    boxes.add_rectangles(np.array([[FRAME, 30, 50], [FRAME, 30, 90], [FRAME, 60, 90], [FRAME, 60, 50]]))
    assert points.features["object_id"].tolist() == [1, 1]
    assert points.features["label"].astype(str).tolist() == ["positive", "negative"]
    assert boxes.features["object_id"].tolist() == [2]
    prompts = [(1, {"points": [(31.5, 17.5), (70.5, 45.5)], "labels": [1, 0]}),  # napari pixel centres +0.5
               (2, {"box": (50.5, 30.5, 90.5, 60.5)})]

    run(qtbot, widget, "frame")
    (masks,) = [layer for layer in viewer.layers if layer.name == f"{video.name} masks"]
    expected = reference(engine, sample_mp4, "frame", prompts)
    np.testing.assert_array_equal(masks.data[FRAME], expected[FRAME])
    assert masks.data.dtype == np.uint32 and set(np.unique(masks.data[FRAME])) == {0, 1, 2}
    assert not np.delete(masks.data, FRAME, axis=0).any()  # only this frame

    run(qtbot, widget, "propagate")
    expected = reference(engine, sample_mp4, "propagate", prompts)
    assert sorted(expected) == list(range(clip_spec.n_frames))
    np.testing.assert_array_equal(masks.data, np.stack([expected[t] for t in range(clip_spec.n_frames)]))
    assert set(np.unique(masks.data)) <= {0, 1, 2} and "done: 20 frame(s)" in widget.form.status.text()

    # the user fixes frame 3 with napari's brush; a re-run must keep that edit
    viewer.dims.set_current_step(0, 3)
    masks.brush_size = 9
    masks.paint((3, 32, 48), 5)
    edited = masks.data[3].copy()
    assert (edited == 5).any()
    viewer.dims.set_current_step(0, FRAME)
    run(qtbot, widget, "propagate")
    np.testing.assert_array_equal(masks.data[3], edited)
    for t in set(range(clip_spec.n_frames)) - {3}:
        np.testing.assert_array_equal(masks.data[t], expected[t])
    viewer.dims.set_current_step(0, 3)
    widget.form.clear_frame.clicked.emit()  # the user's explicit way back: frame 3 is empty and writable again
    assert not masks.data[3].any()
    viewer.dims.set_current_step(0, FRAME)
    run(qtbot, widget, "propagate")
    np.testing.assert_array_equal(masks.data[3], expected[3])

    # 'new layer' leaves the edited layer alone entirely
    widget.form.new_layer.value = True
    before = masks.data.copy()
    run(qtbot, widget, "frame")
    np.testing.assert_array_equal(masks.data, before)
    assert viewer.layers[-1].name != masks.name and viewer.layers[-1].data[FRAME].any()
    save_screenshot(viewer, SCREENSHOT)


def test_audio_only_follows_the_sound_through_the_video(qtbot, docked, engine, sample_mp4, clip_spec, notes):
    viewer, widget, video = docked
    # the track's energy is computed off the GUI thread, then drawn ...
    qtbot.waitUntil(lambda: len(widget.plot.curve.get_xdata()) > 0, timeout=10_000)
    assert widget.plot.marked_time == pytest.approx(FRAME / clip_spec.fps, abs=1e-3)  # ... marked at this frame
    widget.form.object_id.value = 3
    run(qtbot, widget, "audio")
    masks = widget.work(video).masks_layer()
    expected = reference(engine, sample_mp4, "audio", start=FRAME, object_id=3)
    np.testing.assert_array_equal(masks.data, np.stack([expected[t] for t in range(clip_spec.n_frames)]))
    assert set(np.unique(masks.data)) <= {0, 3}
    assert not widget.form.random_banner.native.isHidden()  # the model was loaded before: the banner says it


def test_cancel_mid_run_keeps_prior_labels_and_the_viewer_usable(qtbot, docked, clip_spec, notes):
    viewer, widget, video = docked
    points, _ = widget.prompt_layers(video)
    viewer.dims.set_current_step(0, 0)
    points.add([[0, 17, 8]])
    widget.form.direction.value = "forward"
    run(qtbot, widget, "propagate")
    masks = widget.work(video).masks_layer()
    prior = masks.data.copy()
    assert f"done: {clip_spec.n_frames} frame(s) written" in widget.form.status.text()

    points.add([[FRAME, 17, 31]])
    viewer.dims.set_current_step(0, FRAME)
    widget.form.direction.value = "both"
    seen: list[int] = []
    widget.start("propagate")
    widget.run.worker.yielded.connect(lambda u: u.kind == "frame" and (seen.append(u.frame), widget.cancel()))
    assert widget.form.cancel.enabled and not widget.form.propagate.enabled
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)
    assert 1 <= len(seen) <= 2 < clip_spec.n_frames  # stopped after the frame in flight
    for t in set(range(clip_spec.n_frames)) - set(seen):
        np.testing.assert_array_equal(masks.data[t], prior[t])
    assert any("cancelled" in note for note in notes)
    assert masks in viewer.layers and points in viewer.layers and video in viewer.layers

    # the viewer and the widget still work
    assert widget.form.propagate.enabled and not widget.form.cancel.enabled
    viewer.dims.set_current_step(0, 2)
    qtbot.wait(50)
    assert widget.plot.marked_time == pytest.approx(2 / clip_spec.fps, abs=1e-3)
    viewer.add_points([[2, 5, 5]], name="after cancel")
    run(qtbot, widget, "frame")
    assert "no clicks or boxes on frame 2" in notes[-1]


def test_errors_become_notifications_and_leave_everything_intact(qtbot, docked, engine, silent_mp4, sample_wav,
                                                                 notes):
    viewer, widget, video = docked
    f = widget.form
    f.audio_mode.value = runner.AUDIO_FROM_FILE
    f.audio_file.value = str(sample_wav.with_name("missing.wav"))
    layers = list(viewer.layers)
    run(qtbot, widget, "audio")
    assert "file not found" in notes[-1] and "missing.wav" in notes[-1]
    assert list(viewer.layers) == layers and widget.work(video).masks_layer() is None  # a failed run adds no layer
    assert f.status.text().startswith("failed") and f.audio_only.enabled

    f.audio_file.value = str(sample_wav)  # a picked file is what the plot shows
    qtbot.waitUntil(lambda: len(widget.plot.curve.get_xdata()) > 0, timeout=10_000)
    wav_seconds = widget.plot.curve.get_xdata()[-1]
    assert wav_seconds == pytest.approx(1.5, abs=0.01)

    # a video without sound: clicks still work, with a warning instead of an error
    (silent,) = viewer.open(str(silent_mp4), plugin=PLUGIN)
    assert any("no audio track" in note for note in notes)
    f.video.value = silent
    f.audio_mode.value = runner.AUDIO_FROM_VIDEO
    points, _ = widget.prompt_layers(silent)
    points.add([[FRAME, 17, 31]])
    run(qtbot, widget, "frame")
    assert "segmenting from the clicks alone" in " ".join(notes)
    masks = widget.work(silent).masks_layer()
    plain = engine.open_session(open_video(silent_mp4), use_audio=False)
    expected = masks_to_labels(plain.add_prompt(FRAME, 1, points=[(31.5, 17.5)], labels=[1]),
                               plain.height, plain.width)
    np.testing.assert_array_equal(masks.data[FRAME], expected)
    assert not np.delete(masks.data, FRAME, axis=0).any() and f.status.text().startswith("done")

    again = AuralSAM2Widget(viewer)  # what the widget shows in the next napari session
    assert (again.form.model.value, again.form.image_size.value(), again.form.weights.value,
            again.form.device.value) == (ENGINE.model, ENGINE.image_size, ENGINE.weights, ENGINE.device)


def test_error_messages_say_what_to_do() -> None:
    oom = runner.describe_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert "hiera_t" in oom and "cpu" in oom
    assert "smaller model" in runner.describe_error(RuntimeError("MPS backend out of memory"))
    missing = runner.describe_error(WeightsMissingError("put auralsam2_avs_v2.pth into /cache"))
    assert missing.startswith("put auralsam2_avs_v2.pth into /cache") and "'random'" in missing


def test_compile_setting_compiles_the_loaded_model_in_place(qtbot, docked, cached_engine, monkeypatch, notes):
    """The model section's compile box: the loaded engine is compiled without a reload, and gives the
    same masks (torch.compile's "eager" backend here; inductor runs in the cuda tests)."""
    monkeypatch.setitem(session_module.COMPILE_OPTIONS, "backend", "eager")
    viewer, widget, video = docked
    f = widget.form
    f.image_size.setValue(64)  # an engine of this test's own, so the shared one stays uncompiled
    f.new_layer.value = True
    points, _ = widget.prompt_layers(video)
    points.add([[FRAME, 17, 31]])
    run(qtbot, widget, "frame")
    plain = runner.CACHE.engine
    assert not plain.compiled
    f.compile.value = True
    run(qtbot, widget, "frame")
    assert runner.CACHE.engine is plain and plain.compiled and f.status.text().startswith("done")
    first, second = [layer for layer in viewer.layers if isinstance(layer, Labels)][-2:]
    assert first is not second and (first.data[FRAME] > 0).any()
    np.testing.assert_array_equal(second.data, first.data)
    assert AuralSAM2Widget(viewer).form.compile.value  # remembered for the next session
