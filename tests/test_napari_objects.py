"""A day's annotation: the objects panel, re-running one object, delete/commit/reset, corrections as prompts.

Real napari under Xvfb, the real widget, random-init hiera_t and the real PyAV clip.
"""
from __future__ import annotations

import numpy as np

from ._napari_support import (FRAME, answers, cached_engine, docked, engine, notes, reference, run,  # noqa: F401
                              save_screenshot)
from napari_auralsam2._napari.labels import LABELS_SUFFIX
from napari_auralsam2._napari.objects_panel import COMMITTED, FRAMES, ID, NAME, PROMPTS, TEXT
from napari_auralsam2._napari.work import COMMITTED_SUFFIX
from napari_auralsam2.core import open_video
from napari_auralsam2.core.session import Prompt

BOX = np.array([[FRAME, 30, 50], [FRAME, 30, 90], [FRAME, 60, 90], [FRAME, 60, 50]])


def two_objects(widget, video):
    """Object 1 from a click, object 2 from a box, both on FRAME."""
    points, boxes = widget.prompt_layers(video)
    points.add([[FRAME, 17, 31]])
    widget.next_object()
    boxes.add_rectangles(BOX)
    return points, boxes


def row_of(widget, object_id: int) -> int:
    table = widget.objects.table
    return next(i for i in range(table.rowCount()) if table.item(i, ID).text() == str(object_id))


def test_objects_panel_lists_objects_and_reruns_one_alone(qtbot, docked, engine, sample_mp4, clip_spec):
    viewer, widget, video = docked
    points, boxes = two_objects(widget, video)
    run(qtbot, widget, "propagate")
    masks = viewer.layers[video.name + LABELS_SUFFIX]
    table = widget.objects.table
    assert table.rowCount() == 2
    assert table.item(row_of(widget, 1), FRAMES).text().endswith(f"({len(np.flatnonzero((masks.data == 1).any((1, 2))))})")
    assert "1 click" in table.item(row_of(widget, 1), PROMPTS).text() and "1 box" in table.item(row_of(widget, 2), PROMPTS).text()

    table.item(row_of(widget, 2), NAME).setText("the violin")  # names are edited in place
    assert widget.work(video).book.get(2).name == "the violin"
    save_screenshot(viewer, "napari_objects.png")
    table.selectRow(row_of(widget, 1))  # selecting a row makes it the current object
    assert widget.form.object_id.value == 1
    viewer.dims.set_current_step(0, 0)
    widget.objects.jump.clicked.emit()
    assert viewer.dims.current_step[0] == FRAME

    # re-run object 2 alone with a moved box: object 1's masks stay bit-identical
    one = masks.data == 1
    before_1 = masks.data.copy()
    boxes.data = [BOX + np.array([0, -10, -10])]
    widget.form.object_id.value = 2
    run(qtbot, widget, "object")
    np.testing.assert_array_equal(masks.data == 1, one)
    np.testing.assert_array_equal(masks.data[one], before_1[one])
    alone = reference(engine, sample_mp4, "propagate", [(2, {"box": (40.5, 20.5, 80.5, 50.5)})])
    for t in range(clip_spec.n_frames):
        np.testing.assert_array_equal(masks.data[t] == 2, (alone[t] == 2) & ~one[t])


def test_delete_commit_and_reset(qtbot, docked, engine):
    viewer, widget, video = docked
    points, boxes = two_objects(widget, video)
    run(qtbot, widget, "propagate")
    masks = viewer.layers[video.name + LABELS_SUFFIX]
    had_2 = masks.data == 2
    assert had_2.any()

    widget.form.object_id.value = 2
    widget.objects.delete.clicked.emit()  # gone from every frame and from the prompts ...
    assert not (masks.data == 2).any() and boxes.data == [] and widget.objects.table.rowCount() == 1
    masks.undo()  # ... and back with one Ctrl-Z
    np.testing.assert_array_equal(masks.data == 2, had_2)

    had_1 = masks.data == 1
    widget.form.object_id.value = 1
    widget.objects.commit.clicked.emit()
    committed = viewer.layers[video.name + COMMITTED_SUFFIX]
    np.testing.assert_array_equal(committed.data == 1, had_1)
    assert not (masks.data == 1).any() and widget.objects.table.item(row_of(widget, 1), COMMITTED).text() == "yes"
    frozen = committed.data.copy()
    run(qtbot, widget, "propagate")  # the committed object is not run, and its layer is not written
    np.testing.assert_array_equal(committed.data, frozen)
    assert not (masks.data == 1).any()

    widget.objects.reset.clicked.emit()
    assert len(points.data) == 0 and widget.slot.session is None and widget.form.object_id.value == 1
    assert (masks.data == 2).any()  # the masks stay


def test_a_corrected_mask_is_sent_as_a_prompt_and_changes_the_result(qtbot, docked, engine, sample_mp4, clip_spec):
    viewer, widget, video = docked
    points, _ = widget.prompt_layers(video)
    points.add([[FRAME, 17, 31]])
    run(qtbot, widget, "propagate")
    masks = viewer.layers[video.name + LABELS_SUFFIX]
    clicked = masks.data.copy()

    # the user fixes object 1 on FRAME with the brush (a square where the bar is), then sends it back
    corrected = np.zeros(masks.data.shape[1:], bool)
    corrected[10:26, 28:36] = True
    viewer.dims.set_current_step(0, FRAME)
    target = corrected.astype(masks.data.dtype)
    yx = np.nonzero(masks.data[FRAME] != target)
    masks.data_setitem((np.full(len(yx[0]), FRAME), *yx), target[yx])  # an edit in napari's history
    widget.form.object_id.value = 1
    run(qtbot, widget, "correct")
    record = widget.work(video).book.get(1)
    assert [p.frame for p in record.prompts if p.mask is not None] == [FRAME]
    np.testing.assert_array_equal(masks.data[FRAME] == 1, corrected)  # the user's frame stays as fixed

    session = engine.open_session(open_video(sample_mp4))
    session.apply(Prompt(FRAME, 1, mask=corrected))
    expected = {t: m[1] for t, m in session.propagate(FRAME, "both")}
    changed = [t for t in range(clip_spec.n_frames) if t != FRAME and not np.array_equal(clicked[t] == 1, expected[t])]
    assert changed  # the mask prompt changes the propagated result ...
    for t in set(range(clip_spec.n_frames)) - {FRAME}:
        np.testing.assert_array_equal(masks.data[t] == 1, expected[t])  # ... to what the engine gives for it


def test_objects_named_in_words_with_the_ref_avs_release(qtbot, docked, cached_engine):
    viewer, widget, video = docked
    f = widget.form
    f.release.value = "refavs"  # random Ref-AVS weights: a random text encoder, nothing downloaded
    points, _ = widget.prompt_layers(video)
    points.add([[FRAME, 17, 31]])
    widget.refresh_objects()
    table = widget.objects.table
    table.item(row_of(widget, 1), TEXT).setText("the white bar")
    assert widget.work(video).book.get(1).text == "the white bar"
    masks = []
    for text in ("the white bar", "a barking dog"):
        table.item(row_of(widget, 1), TEXT).setText(text)
        run(qtbot, widget, "frame")
        assert f.status.text().startswith("done"), f.status.text()
        masks.append(viewer.layers[video.name + LABELS_SUFFIX].data[FRAME].copy())
        f.clear_frame.clicked.emit()
    assert not np.array_equal(*masks)  # the words change what is segmented

    f.release.value = "avs_v2"  # AVS weights cannot read words: one clear line
    run(qtbot, widget, "frame")
    assert "cannot read text" in f.status.text() and f.segment.enabled
