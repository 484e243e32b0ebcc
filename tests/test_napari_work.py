"""A day's annotation, continued: save, autosave, resume, export, and hearing the video, from the widget.

Real napari under Xvfb, the real widget, random-init hiera_t, the real PyAV clip (a copy per test,
so what is saved beside it stays with the test).
"""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from napari_auralsam2._napari.files import sidecar_of
from napari_auralsam2._napari.labels import LABELS_SUFFIX
from napari_auralsam2._napari.ledger import EditLedger
from napari_auralsam2._napari.widget import AuralSAM2Widget
from napari_auralsam2._napari.work import COMMITTED_SUFFIX
from napari_auralsam2.training.exports import read_cvat_xml

from ._napari_support import FRAME, PLUGIN, answers, docked, engine, notes, run  # noqa: F401
from ._sound_stub import Backend
from .test_napari_objects import two_objects


def annotate(qtbot, widget, video):
    """Two objects, propagated; object 1 renamed, painted on, committed; object 2 with an audio start."""
    points, boxes = two_objects(widget, video)
    run(qtbot, widget, "propagate")
    viewer = widget.viewer
    masks = viewer.layers[video.name + LABELS_SUFFIX]
    masks.paint((FRAME, 40, 10), 2)  # a user edit, protected
    widget.work(video).book.get(1).name = "the bar"
    widget.form.object_id.value = 1
    widget.objects.commit.clicked.emit()
    widget.form.object_id.value = 2
    viewer.dims.set_current_step(0, 3)
    run(qtbot, widget, "audio")
    return masks, viewer.layers[video.name + COMMITTED_SUFFIX]


def test_work_is_saved_after_runs_and_restored_bit_exact(qtbot, docked, engine, make_napari_viewer, monkeypatch):
    viewer, widget, video = docked
    masks, committed = annotate(qtbot, widget, video)
    path = sidecar_of(video)
    assert path.is_file()  # autosaved after the runs and the commit, with nothing to replace
    saved_masks, saved_committed = masks.data.copy(), committed.data.copy()
    ledger = EditLedger.of(masks).to_json()
    points = viewer.layers[f"{video.name} clicks"]
    saved_points = (points.data.copy(), points.features.copy())
    book = widget.work(video).book

    monkeypatch.setattr(AuralSAM2Widget, "ask", staticmethod(lambda _parent, question: "Restore" in question))
    again = make_napari_viewer(show=True)
    (reopened,) = again.open(video.metadata["video_path"], plugin=PLUGIN)
    _, dock = again.window.add_plugin_dock_widget(PLUGIN, "AuralSAM2")  # opening the video offers its work back
    restored = dock.work(reopened)
    np.testing.assert_array_equal(again.layers[reopened.name + LABELS_SUFFIX].data, saved_masks)
    np.testing.assert_array_equal(again.layers[reopened.name + COMMITTED_SUFFIX].data, saved_committed)
    assert EditLedger.of(restored.masks).to_json() == ledger  # the edit protection comes back too
    clicks = again.layers[f"{reopened.name} clicks"]
    np.testing.assert_allclose(clicks.data, saved_points[0])
    assert clicks.features["object_id"].tolist() == saved_points[1]["object_id"].tolist()
    assert again.layers[f"{reopened.name} boxes"].features["object_id"].tolist() == [2]
    assert restored.book.get(1).name == "the bar" and restored.book.get(1).committed
    assert [(p.frame, p.audio_only) for p in restored.book.get(2).prompts] == [(p.frame, p.audio_only)
                                                                             for p in book.get(2).prompts]
    assert "restored" in dock.form.status.text() and dock.objects.table.rowCount() == 2
    dock.close_down()


def test_saving_never_replaces_work_it_did_not_write_without_asking(qtbot, docked, engine, answers):
    viewer, widget, video = docked
    path = sidecar_of(video)
    path.write_bytes(b"an earlier session's work")
    points, _ = widget.prompt_layers(video)
    points.add([[FRAME, 17, 31]])
    run(qtbot, widget, "frame")
    assert path.read_bytes() == b"an earlier session's work"  # autosave leaves it alone
    widget.save_button.clicked.emit()  # Save asks first; the answer here is no
    assert path.read_bytes() == b"an earlier session's work" and any("Replace" in q for q in answers)
    widget.ask = lambda _parent, _question: True
    widget.save_button.clicked.emit()
    assert zipfile.is_zipfile(path)


@pytest.mark.parametrize("fmt", ["png", "npz", "coco-rle", "cvat-video"])
def test_export_writes_every_format_and_asks_before_replacing(qtbot, docked, engine, tmp_path, answers, fmt):
    viewer, widget, video = docked
    two_objects(widget, video)
    widget.work(video).book.get(1).name = "the bar"
    run(qtbot, widget, "propagate")
    masks = viewer.layers[video.name + LABELS_SUFFIX]
    widget.pick_folder = lambda _parent, _caption: str(tmp_path / "out")
    widget.export_format.value = fmt
    widget.export_button.clicked.emit()
    written = next((tmp_path / "out").iterdir())
    if fmt == "cvat-video":  # one track per object, labelled with its name, read back by the training reader
        with zipfile.ZipFile(written) as archive:
            archive.extract("annotations.xml", tmp_path)
        for object_id, name in ((1, "the bar"), (2, "object")):
            read = read_cvat_xml(tmp_path / "annotations.xml", objects=[name])
            truth = masks.data == object_id
            drawn = np.stack([read.mask(t) for t in range(len(truth))])
            # a polygon per frame, of the object's largest part (random weights make ragged masks)
            assert drawn.any((1, 2)).tolist() == truth.any((1, 2)).tolist(), name
            near = binary_dilation(truth, structure=np.ones((1, 5, 5), bool))  # outlines are traced between pixels
            assert not (drawn & ~near).any(), name
    if fmt == "npz":
        with np.load(written) as saved:
            np.testing.assert_array_equal(saved["labels"], masks.data)
    stamp = written.stat().st_mtime_ns
    widget.export_button.clicked.emit()  # exists: asked, answered no, left alone
    assert written.stat().st_mtime_ns == stamp and any("Replace" in q for q in answers)


def test_sound_controls_play_the_moment_the_model_hears(qtbot, make_napari_viewer, sample_mp4, answers, clip_spec):
    viewer = make_napari_viewer(show=True)
    (video,) = viewer.open(str(sample_mp4), plugin=PLUGIN)
    Backend.streams, Backend.rates = [], (clip_spec.sample_rate,)  # the clip's rate: samples play as they are
    widget = AuralSAM2Widget(viewer, sound_backend=Backend)
    viewer.window.add_dock_widget(widget)
    qtbot.waitUntil(lambda: widget.sound.player is not None, timeout=10_000)  # the sound is read off the GUI thread
    assert widget.sound.moment.enabled and widget.sound.follow.enabled
    viewer.dims.set_current_step(0, FRAME)
    widget.sound.moment.clicked.emit()
    stream, player = Backend.streams[-1], widget.sound.player
    start, stop = player.moment(FRAME)
    assert (stop - start) / clip_spec.sample_rate == pytest.approx(0.975, abs=1e-3) and start > 0
    played = stream.pump(stop - start)
    np.testing.assert_allclose(played, player.track.samples[start:stop], atol=1e-6)
    assert not stream.pump(64).any()  # and then silence
    widget.close_down()

    plain = AuralSAM2Widget(viewer)  # no sound device here: the controls say why they are off
    assert not plain.sound.moment.enabled and plain.sound.moment.tooltip
    plain.close_down()
