"""Readers for annotations made with this project's hosts: napari Labels stacks and CVAT exports.

Every reader gives an `Annotations`: per video frame, which frames were annotated and the mask of
the *sounding* objects (all annotated objects, or those named with ``objects``).

* napari Labels stack, integer ``[T, H, W]`` (0 = background, k = object id): ``.npz`` (array
  ``labels``, optional bool ``annotated`` [T]; without it every frame counts as annotated),
  ``.npy``, or ``.tif``/``.tiff`` (what napari's "Save Selected Layers" writes for Labels).
  ``objects`` are label ids.
* CVAT for video 1.1 (``annotations.xml``): tracks (and per-image shapes) of polygons, masks
  (``rle``/``left``/``top``/``width``/``height``), boxes and ellipses. Frame ``f`` of the task is
  video frame ``start_frame + f * step``; a track holds its last shape until the next one (an
  ``outside`` shape ends it). Every frame of the task counts as annotated. ``objects`` are label names.
* COCO 1.0 (``instances_default.json``): polygons, uncompressed or compressed RLE. The frame of an
  image is the number ending its file name (CVAT writes ``frame_000012.jpg``); frames with an image
  entry count as annotated. ``objects`` are category names.
"""
from __future__ import annotations

import abc
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .datasets import DataError

STACK_SUFFIXES = (".npz", ".npy", ".tif", ".tiff")
CVAT_SUFFIXES = (".xml",)
COCO_SUFFIXES = (".json",)
ANNOTATION_SUFFIXES = STACK_SUFFIXES + CVAT_SUFFIXES + COCO_SUFFIXES
AREA_SHAPES = ("polygon", "mask", "box", "ellipse")
_STEP = re.compile(r"step\s*=\s*(\d+)")
_TRAILING_NUMBER = re.compile(r"(\d+)$")
_RLE_BITS, _RLE_MORE, _RLE_SIGN, _RLE_OFFSET = 5, 0x20, 0x10, 48


class Annotations(abc.ABC):
    """Sounding-object masks of one video, frame by frame."""

    #: number of video frames covered (frames beyond are unannotated)
    num_frames: int
    #: (height, width) of the masks
    size: tuple[int, int]
    #: bool [num_frames]: frames whose masks are ground truth
    annotated: np.ndarray

    @abc.abstractmethod
    def mask(self, frame: int) -> np.ndarray:
        """Bool [H, W] mask of the selected objects at a video frame."""


class LabelStack(Annotations):
    """A napari Labels stack saved as .npz / .npy / .tif."""

    def __init__(self, path: str | Path, objects: Sequence[str] | None = None) -> None:
        path = Path(path)
        self.labels, annotated = _read_stack(path)
        if self.labels.ndim != 3 or not np.issubdtype(self.labels.dtype, np.integer):
            raise DataError(f"{path.name} holds {self.labels.dtype} {self.labels.shape}, not integer labels [T, H, W]",
                            "save the napari Labels layer of the whole video (frames on the first axis)")
        self.num_frames = int(self.labels.shape[0])
        self.size = (int(self.labels.shape[1]), int(self.labels.shape[2]))
        self.annotated = np.ones(self.num_frames, bool) if annotated is None else np.asarray(annotated, bool)
        if self.annotated.shape != (self.num_frames,):
            raise DataError(f"'annotated' in {path.name} has shape {self.annotated.shape}",
                            f"give one flag per frame ({self.num_frames})")
        try:
            self.ids = None if not objects else np.asarray([int(o) for o in objects])
        except ValueError as err:
            raise DataError(f"object ids for a Labels stack must be integers, got {list(objects)}") from err

    def mask(self, frame: int) -> np.ndarray:
        labels = np.asarray(self.labels[frame])
        return labels > 0 if self.ids is None else np.isin(labels, self.ids)


def _read_stack(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                if "labels" not in archive:
                    raise DataError(f"{path.name} has no 'labels' array", "save it with np.savez(path, labels=...)")
                return archive["labels"], archive["annotated"] if "annotated" in archive else None
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False), None
        import tifffile
        return tifffile.imread(path), None
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read labels from {path.name}: {err}") from err


class ShapeAnnotations(Annotations):
    """Masks rasterised on demand from per-frame vector/RLE shapes (CVAT, COCO)."""

    def __init__(self, shapes: dict[int, list[tuple[str, dict]]], size: tuple[int, int],
                 annotated: np.ndarray) -> None:
        self.shapes = shapes
        self.size = size
        self.annotated = annotated
        self.num_frames = len(annotated)

    def mask(self, frame: int) -> np.ndarray:
        height, width = self.size
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        out = np.zeros((height, width), dtype=bool)
        for kind, shape in self.shapes.get(frame, []):
            if kind == "polygon" and len(shape["points"]) >= 3:
                draw.polygon(shape["points"], fill=1)
            elif kind == "box":
                draw.rectangle(shape["box"], fill=1)
            elif kind == "ellipse":
                cx, cy, rx, ry = shape["ellipse"]
                draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=1)
            elif kind == "bitmap":
                top, left, bitmap = shape["top"], shape["left"], shape["bitmap"]
                region = out[top:top + bitmap.shape[0], left:left + bitmap.shape[1]]
                region |= bitmap[:region.shape[0], :region.shape[1]]
        return out | (np.asarray(canvas) > 0)


def _points(text: str) -> list[tuple[float, float]]:
    return [tuple(float(v) for v in pair.split(",")) for pair in text.split(";") if pair.strip()]


def _cvat_shape(element: ET.Element) -> tuple[str, dict] | None:
    attrs = element.attrib
    if element.tag == "polygon":
        return "polygon", {"points": _points(attrs["points"])}
    if element.tag == "box":
        return "box", {"box": tuple(float(attrs[k]) for k in ("xtl", "ytl", "xbr", "ybr"))}
    if element.tag == "ellipse":
        return "ellipse", {"ellipse": tuple(float(attrs[k]) for k in ("cx", "cy", "rx", "ry"))}
    if element.tag == "mask":
        width, height = int(attrs["width"]), int(attrs["height"])
        runs = [int(v) for v in attrs["rle"].replace(" ", "").split(",") if v]
        return "bitmap", {"top": int(attrs["top"]), "left": int(attrs["left"]),
                          "bitmap": decode_runs(runs, height * width).reshape(height, width)}
    return None


def decode_runs(runs: Sequence[int], length: int) -> np.ndarray:
    """Alternating background/foreground run lengths (background first) -> flat bool [length]."""
    flat = np.zeros(length, dtype=bool)
    position = 0
    for index, run in enumerate(runs):
        if index % 2:
            flat[position:position + run] = True
        position += run
    if position > length:
        raise DataError(f"a mask's runs cover {position} pixels, its box only {length}", "re-export the annotations")
    return flat


def _meta_int(meta: ET.Element | None, tag: str, default: int) -> int:
    found = meta.find(f".//{tag}") if meta is not None else None
    return int(found.text) if found is not None and found.text and found.text.strip() else default


def read_cvat_xml(path: str | Path, objects: Sequence[str] | None = None,
                  size: tuple[int, int] | None = None, num_frames: int | None = None) -> ShapeAnnotations:
    """A "CVAT for video 1.1" (or "CVAT for images 1.1") export of a video task."""
    path = Path(path)
    try:
        return _read_cvat(ET.parse(path).getroot(), path, objects, size, num_frames)
    except (ET.ParseError, OSError, KeyError, ValueError, TypeError) as err:
        raise DataError(f"cannot read {path.name} as CVAT XML: {err}", "export the task as 'CVAT for video 1.1'") from err


def _read_cvat(root: ET.Element, path: Path, objects: Sequence[str] | None, size: tuple[int, int] | None,
               num_frames: int | None) -> ShapeAnnotations:
    meta = root.find("meta")
    start = _meta_int(meta, "start_frame", 0)
    step_text = meta.findtext(".//frame_filter", "") if meta is not None else ""
    step = int(_STEP.search(step_text).group(1)) if _STEP.search(step_text or "") else 1
    original = meta.find(".//original_size") if meta is not None else None
    if original is not None:
        size = (int(original.findtext("height")), int(original.findtext("width")))
    task_frames = _meta_int(meta, "size", 0)
    wanted = set(objects) if objects else None
    per_task_frame: dict[int, list[tuple[str, dict]]] = {}
    last_task_frame = -1
    for track in root.iter("track"):
        if wanted is not None and track.get("label") not in wanted:
            continue
        states = sorted(((int(el.get("frame")), el) for el in track if el.tag in AREA_SHAPES), key=lambda s: s[0])
        for (frame, element), following in zip(states, states[1:] + [(None, None)]):
            last_task_frame = max(last_task_frame, frame)
            if element.get("outside", "0") == "1":
                continue
            shape = _cvat_shape(element)
            end = following[0] if following[0] is not None else max(task_frames, frame + 1)
            for f in range(frame, end):
                per_task_frame.setdefault(f, []).append(shape)
    for image in root.iter("image"):
        frame = int(image.get("id"))
        last_task_frame = max(last_task_frame, frame)
        if size is None and image.get("height"):
            size = (int(image.get("height")), int(image.get("width")))
        for element in image:
            if element.tag in AREA_SHAPES and (wanted is None or element.get("label") in wanted):
                per_task_frame.setdefault(frame, []).append(_cvat_shape(element))
    if size is None:
        raise DataError(f"{path.name} does not give the frame size", "export with the task meta (original_size)")
    count = task_frames or last_task_frame + 1
    video_frames = num_frames or start + (count - 1) * step + 1
    annotated = np.zeros(video_frames, dtype=bool)
    annotated[start:start + count * step:step] = True
    shapes = {start + f * step: v for f, v in per_task_frame.items() if start + f * step < video_frames}
    return ShapeAnnotations(shapes, size, annotated)


def decode_coco_counts(counts: str) -> list[int]:
    """COCO's compressed RLE string (pycocotools' LEB128-like text) -> run lengths."""
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            chunk = ord(counts[pos]) - _RLE_OFFSET
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & _RLE_MORE)
            pos += 1
            shift += _RLE_BITS
            if not more and chunk & _RLE_SIGN:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _coco_bitmap(segmentation: dict, size: tuple[int, int]) -> np.ndarray:
    height, width = segmentation.get("size", size)
    counts = segmentation["counts"]
    runs = decode_coco_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    return decode_runs(runs, height * width).reshape(width, height).T  # column-major


def read_coco(path: str | Path, objects: Sequence[str] | None = None,
              num_frames: int | None = None) -> ShapeAnnotations:
    """A COCO 1.0 export (CVAT writes one image per video frame, ``frame_<n>``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        images = {im["id"]: im for im in data["images"]}
        categories = {c["id"]: c["name"] for c in data.get("categories", [])}
        annotations = data.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"cannot read {path.name} as COCO JSON: {err}", "export the task as 'COCO 1.0'") from err
    if not images:
        raise DataError(f"{path.name} lists no images")
    frames = {}
    for order, (image_id, image) in enumerate(sorted(images.items())):
        match = _TRAILING_NUMBER.search(Path(str(image.get("file_name", ""))).stem)
        frames[image_id] = int(match.group(1)) if match else order
    first = next(iter(images.values()))
    size = (int(first["height"]), int(first["width"]))
    wanted = set(objects) if objects else None
    shapes: dict[int, list[tuple[str, dict]]] = {}
    for ann in annotations:
        if wanted is not None and categories.get(ann.get("category_id")) not in wanted:
            continue
        frame = frames.get(ann.get("image_id"))
        segmentation = ann.get("segmentation")
        if frame is None or not segmentation:
            continue
        if isinstance(segmentation, dict):
            entry = ("bitmap", {"top": 0, "left": 0, "bitmap": _coco_bitmap(segmentation, size)})
            shapes.setdefault(frame, []).append(entry)
        else:
            for polygon in segmentation:
                points = list(zip(polygon[0::2], polygon[1::2]))
                shapes.setdefault(frame, []).append(("polygon", {"points": points}))
    annotated = np.zeros(num_frames or max(frames.values()) + 1, dtype=bool)
    annotated[[f for f in frames.values() if f < len(annotated)]] = True
    return ShapeAnnotations(shapes, size, annotated)


def read_annotations(path: str | Path, objects: Sequence[str] | None = None,
                     num_frames: int | None = None) -> Annotations:
    """Pick the reader from the file suffix."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}", "check the path")
    suffix = path.suffix.lower()
    if suffix in STACK_SUFFIXES:
        return LabelStack(path, objects)
    if suffix in CVAT_SUFFIXES:
        return read_cvat_xml(path, objects, num_frames=num_frames)
    if suffix in COCO_SUFFIXES:
        return read_coco(path, objects, num_frames=num_frames)
    raise DataError(f"unknown annotation format {path.name}", f"use one of {', '.join(ANNOTATION_SUFFIXES)}")
