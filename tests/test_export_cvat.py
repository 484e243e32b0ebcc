"""CVAT for video 1.1 export: what CVAT's importer reads, cvat_sdk's models, and the training CVAT reader."""
from __future__ import annotations

import xml.etree.ElementTree as ET
import zipfile

import cvat_sdk.models as models
import numpy as np
import pytest
from cvat_sdk.masks import decode_mask
from PIL import Image

from napari_auralsam2 import cli
from napari_auralsam2.core import frames_from_array
from napari_auralsam2.core.errors import AuralSAM2Error
from napari_auralsam2.core.export import CVAT_NAME, CVAT_XML, MaskStore, write_cvat_video, write_masks
from napari_auralsam2.training.exports import read_cvat_xml

T, H, W = 7, 40, 56
NAMES = {1: "drum", 3: "singer"}


@pytest.fixture()
def labels() -> np.ndarray:
    """Object 1 moves and leaves on frame 4 (back on 6); object 3 has two parts on frames 1-3."""
    stack = np.zeros((T, H, W), np.uint32)
    for t in range(T):
        if t not in (4, 5):
            stack[t, 5 + t:20 + t, 10:25] = 1
    stack[1:4, 25:35, 30:40] = 3
    stack[1:4, 2:4, 50:53] = 3  # a small second part: only in mask mode
    stack[2, 30, 45] = 3  # a lone pixel joined to nothing
    return stack


def parse_like_cvat(root: ET.Element, label_ids: dict[str, int]) -> tuple[list, list]:
    """Read the XML with the keys and rules of CVAT's ``load_anno`` (CVAT for video/images 1.1 importer).

    Track: ``label`` (required), ``group_id``. Shape in a track: ``frame`` and ``keyframe`` (required),
    ``outside``/``occluded``/``z_order`` (optional), polygons ``points`` "x,y;x,y", masks ``rle``
    "r, r, ..." plus ``left``/``top``/``width``/``height``. Only keyframes are kept; a track whose
    first shape is a mask becomes one labeled shape (its first shape). Returns cvat_sdk request models.
    """
    tracks, shapes = [], []
    assert root.tag == "annotations" and root.findtext("version") == "1.1"
    for track in root.iter("track"):
        kept = []
        for el in track:
            assert el.tag in ("polygon", "mask")
            if el.attrib["keyframe"] != "1":
                continue
            if el.tag == "mask":
                points = [int(v) for v in el.attrib["rle"].split(",")]
                left, top = int(el.attrib["left"]), int(el.attrib["top"])
                points += [left, top, left + int(el.attrib["width"]) - 1, top + int(el.attrib["height"]) - 1]
            else:
                points = [float(v) for pair in el.attrib["points"].split(";") for v in pair.split(",")]
            kept.append(dict(type=el.tag, frame=int(el.attrib["frame"]), points=points,
                             outside=el.attrib.get("outside", "0") == "1",
                             occluded=el.attrib.get("occluded", "0") == "1", z_order=int(el.attrib.get("z_order", 0))))
        label_id, group = label_ids[track.attrib["label"]], int(track.attrib.get("group_id", 0))
        if kept[0]["type"] == "mask":
            first = kept[0]
            shapes.append(models.LabeledShapeRequest(type="mask", frame=first["frame"], label_id=label_id,
                                                     points=first["points"], group=group, occluded=first["occluded"],
                                                     z_order=first["z_order"], source="file", attributes=[]))
        else:
            tracks.append(models.LabeledTrackRequest(
                frame=kept[0]["frame"], label_id=label_id, group=group, source="file", attributes=[],
                shapes=[models.TrackedShapeRequest(**shape, attributes=[]) for shape in kept]))
    return tracks, shapes


def export(tmp_path, stack: np.ndarray, shape: str) -> ET.Element:
    path = write_cvat_video(MaskStore.from_labels(stack), tmp_path / f"{shape}.zip", "clip.mp4", NAMES, shape)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == [CVAT_XML]
        (tmp_path / f"{shape}.xml").write_bytes(archive.read(CVAT_XML))
    return ET.parse(tmp_path / f"{shape}.xml").getroot()


def test_mask_export_is_pixel_exact_for_cvat_and_the_training_reader(tmp_path, labels):
    root = export(tmp_path, labels, "mask")
    label_ids = {name: i for i, name in enumerate(sorted({el.findtext("name") for el in root.iter("label")}), 1)}
    assert set(label_ids) == {"drum", "singer"}
    assert root.findtext("meta/task/original_size/width") == str(W)
    tracks, shapes = parse_like_cvat(root, label_ids)
    assert tracks == []
    present = {(obj, t) for obj in NAMES for t in range(T) if (labels[t] == obj).any()}
    assert len(shapes) == len(present)
    for shape in shapes:
        obj = shape.group
        assert shape.label_id == label_ids[NAMES[obj]]
        np.testing.assert_array_equal(decode_mask(shape.points, image_width=W, image_height=H),
                                      labels[shape.frame] == obj)
    for obj, name in NAMES.items():
        read = read_cvat_xml(tmp_path / "mask.xml", objects=[name])
        assert read.size == (H, W) and read.annotated.all() and read.num_frames == T
        for t in range(T):
            np.testing.assert_array_equal(read.mask(t), labels[t] == obj, err_msg=f"{name} frame {t}")


def test_polygon_export_is_one_track_per_object_with_outside(tmp_path, labels):
    root = export(tmp_path, labels, "polygon")
    label_ids = {"drum": 1, "singer": 2}
    tracks, shapes = parse_like_cvat(root, label_ids)
    assert shapes == [] and len(tracks) == 2
    drum = next(t for t in tracks if t.label_id == 1)
    assert [(s.frame, s.outside) for s in drum.shapes] == [(0, False), (1, False), (2, False), (3, False),
                                                           (4, True), (6, False)]
    singer = next(t for t in tracks if t.label_id == 2)
    assert [(s.frame, s.outside) for s in singer.shapes] == [(1, False), (2, False), (3, False), (4, True)]
    for obj, name in NAMES.items():
        read = read_cvat_xml(tmp_path / "polygon.xml", objects=[name])
        for t in range(T):
            truth, got = labels[t] == obj, read.mask(t)
            assert got.any() == truth.any(), f"{name} frame {t}"
            if truth.any():
                largest = truth & (np.arange(H)[:, None] > 20) if obj == 3 else truth
                assert (got & largest).sum() / (got | largest).sum() > 0.75  # outline drawn with its edge pixels


def test_write_masks_and_never_overwriting(tmp_path, labels):
    video = frames_from_array(np.zeros((T, H, W, 3), np.uint8), fps=10)
    path = write_masks(MaskStore.from_labels(labels), tmp_path, "cvat-video", video)
    assert path == tmp_path / CVAT_NAME and zipfile.is_zipfile(path)
    before = path.read_bytes()
    with pytest.raises(AuralSAM2Error, match="already exists"):
        write_cvat_video(MaskStore.from_labels(labels), path, "frames")
    assert path.read_bytes() == before
    with pytest.raises(AuralSAM2Error, match="unknown CVAT shape"):
        write_cvat_video(MaskStore.from_labels(labels), tmp_path / "x.zip", "frames", shape="ellipse")


def test_store_from_labels(labels):
    store = MaskStore.from_labels(labels)
    assert store.frames == [0, 1, 2, 3, 6] and store.object_ids == [1, 3]  # frames holding labels
    for t in range(T):
        np.testing.assert_array_equal(store.labels(t), labels[t])
    assert MaskStore.from_labels(labels, frames=[4]).masks(4) == {}


def test_cli_writes_cvat_video(capsys, sample_mp4, clip_spec, tmp_path):
    mask = np.zeros((clip_spec.height, clip_spec.width), np.uint8)
    mask[10:40, 20:60] = 1
    Image.fromarray(mask).save(tmp_path / "mask.png")
    last = clip_spec.n_frames - 1
    code = cli.main(["segment", str(sample_mp4), "--mask", f"{last - 1},1,{tmp_path / 'mask.png'}", "--no-audio",
                     "--direction", "forward", "--format", "cvat-video", "--out", str(tmp_path / "out"),
                     "--weights", "random", "--model", "hiera_t", "--image-size", "128"])
    assert code == 0, capsys.readouterr().err
    with zipfile.ZipFile(tmp_path / "out" / CVAT_NAME) as archive:
        (tmp_path / CVAT_XML).write_bytes(archive.read(CVAT_XML))
    read = read_cvat_xml(tmp_path / CVAT_XML, objects=["object"])
    assert read.size == (clip_spec.height, clip_spec.width) and read.num_frames == clip_spec.n_frames
    got, truth = read.mask(last - 1), mask.astype(bool)
    assert (got & truth).sum() / (got | truth).sum() > 0.7  # the mask prompt's frame, as a polygon
    assert not any(read.mask(t).any() for t in range(last - 1))
