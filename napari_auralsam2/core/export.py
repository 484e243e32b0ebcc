"""Writing segmentation results: label PNGs, npz, COCO-RLE JSON, an overlay video and a contact sheet.

`MaskStore` collects the per-frame masks that `SegmentationSession.propagate` yields (in any frame
order), bit-packed and zlib-compressed: a typical object costs a few KB per 720p frame (at most
H*W/8 bytes), so a whole video's results fit in memory. The writers read from it:

* ``png``: ``masks/NNNNNN.png`` per segmented frame, pixel value = object id (0 = background;
  8-bit when every id fits, else 16-bit). Where objects overlap, the higher id wins. Frame PNGs
  of an earlier run in the same folder that this run did not segment are removed, so the folder
  never mixes two runs.
* ``npz``: ``masks.npz`` with ``labels`` uint32 ``[T, H, W]`` (as above, zeros on frames that were
  not segmented), ``object_ids`` uint32 ``[K]``, ``segmented`` bool ``[T]``, ``frame_times`` float64
  ``[T]`` (seconds), ``fps``. Written frame by frame, never holding ``[T, H, W]`` in memory.
* ``coco-rle``: ``masks.json``, COCO with one annotation per object per segmented frame; the
  ``segmentation`` is an uncompressed COCO RLE (column-major run lengths, starting with
  background), ``object_id`` names the tracked object, ``images`` are the video's frames.
* ``cvat-video``: ``annotations_cvat_video.zip`` holding ``annotations.xml`` in "CVAT for video 1.1",
  for CVAT's *Upload annotations* into a task made from the same video (all frames, start 0, step
  1). Object ``k`` is labelled with its name (default ``object``: the task needs those labels).
  ``polygon`` (default): one track per object, a keyframe per frame with its largest outline,
  ``outside`` where it vanishes; editable and interpolated in CVAT. ``mask``: pixel-exact CVAT
  masks; CVAT's importer keeps only the first shape of a mask track, so, as CVAT's own exporter
  writes mask shapes, each (object, frame) is a track of one mask and an ``outside`` on the next
  frame, and the tracks of one object share ``group_id`` = its id.

Every file is written beside its target and moved over it at the end (`core.files`), so Ctrl-C or
a full disk never leaves half a result. The results of an interrupted run (``interrupted=True``)
never replace an earlier run's: they go beside it, as ``masks-interrupted`` (``.npz``, ``.json``).
"""
from __future__ import annotations

import json
import math
import shutil
import xml.etree.ElementTree as ET
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import masks as codec
from .audio import AudioTrack
from .errors import AuralSAM2Error
from .files import atomic_file, free_sibling, interrupts_held, partial_path
from .video import VideoSource, write_video

FORMATS = ("png", "npz", "coco-rle", "cvat-video")
MASKS_FOLDER = "masks"
NPZ_NAME = "masks.npz"
COCO_NAME = "masks.json"
CVAT_NAME = "annotations_cvat_video.zip"
CVAT_XML = "annotations.xml"
CVAT_VERSION = "1.1"
CVAT_SHAPES = ("polygon", "mask")
DEFAULT_LABEL = "object"
TARGETS = {"png": MASKS_FOLDER, "npz": NPZ_NAME, "coco-rle": COCO_NAME, "cvat-video": CVAT_NAME}
FRAME_DIGITS = 6
FRAME_PNG_GLOB = "[0-9]" * FRAME_DIGITS + ".png"
MAX_PNG_ID = 2**16 - 1
MAX_LABEL_ID = 2**32 - 1
MASK_ZLIB_LEVEL = 1  # fast; masks are mostly long runs
#: per-object colours (RGB), cycled by object id
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))
OVERLAY_ALPHA = 0.5
ENERGY_FLOOR_DB = -60.0  # RMS level drawn as an empty bar; 0 dBFS is a full one
ENERGY_BAR_WIDTH = 0.25  # of the frame width
ENERGY_BAR_HEIGHT = 0.04  # of the frame height
ENERGY_BAR_MIN_PX = 3
ENERGY_BAR_COLOUR = (80, 220, 120)
ENERGY_BAR_BACKGROUND = (30, 30, 30)
BANNER_COLOUR = (255, 60, 60)
CAPTION_COLOUR = (230, 230, 230)
MIN_FONT_PX = 8
CONTACT_TILES = 12
CONTACT_COLUMNS = 4
THUMB_WIDTH = 240
CAPTION_PX = 16


# -- run-length encoding ------------------------------------------------------------------------
def rle_encode(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a bool ``[H, W]`` mask: column-major runs, background first."""
    mask = np.asarray(mask, dtype=bool)
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], changes, [flat.size])))
    if flat.size and flat[0]:
        counts = np.concatenate(([0], counts))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts.astype(np.int64).tolist()}


def rle_decode(rle: dict) -> np.ndarray:
    """Bool ``[H, W]`` mask of a COCO uncompressed RLE (inverse of :func:`rle_encode`)."""
    height, width = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != height * width or (counts < 0).any():
        raise AuralSAM2Error(f"RLE counts sum to {counts.sum()}, not {height}x{width}", "the RLE is corrupted")
    values = np.arange(counts.size) % 2 == 1
    return np.repeat(values, counts).reshape((height, width), order="F")


def mask_bbox(mask: np.ndarray) -> list[int]:
    """COCO ``[x, y, width, height]`` of a mask's pixels (all zeros when empty)."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


class MaskStore:
    """Masks per frame and object, compressed in memory, added in any frame order."""

    def __init__(self, num_frames: int, height: int, width: int) -> None:
        self.num_frames, self.height, self.width = int(num_frames), int(height), int(width)
        self._frames: dict[int, dict[int, bytes]] = {}

    def _pack(self, mask: np.ndarray) -> bytes:
        return zlib.compress(np.packbits(mask, axis=None).tobytes(), MASK_ZLIB_LEVEL)

    def _unpack(self, blob: bytes) -> np.ndarray:
        bits = np.unpackbits(np.frombuffer(zlib.decompress(blob), np.uint8), count=self.height * self.width)
        return bits.reshape(self.height, self.width).view(bool)

    def add(self, frame_index: int, masks: dict[int, np.ndarray]) -> None:
        """Record (or replace) the masks of one frame."""
        if not 0 <= frame_index < self.num_frames:
            raise AuralSAM2Error(f"frame {frame_index} is outside the video (0..{self.num_frames - 1})")
        encoded = {}
        for obj_id, mask in masks.items():
            if not 1 <= int(obj_id) <= MAX_LABEL_ID:
                raise AuralSAM2Error(f"object id {obj_id} cannot be written as a label", "use ids from 1 upwards")
            if mask.shape != (self.height, self.width):
                raise AuralSAM2Error(f"mask of object {obj_id} is {mask.shape}, "
                                     f"the video is {self.height}x{self.width}")
            encoded[int(obj_id)] = self._pack(np.asarray(mask, dtype=bool))
        self._frames[int(frame_index)] = encoded

    @property
    def frames(self) -> list[int]:
        """Indices of the frames that have masks, ascending."""
        return sorted(self._frames)

    @property
    def object_ids(self) -> list[int]:
        return sorted({obj for masks in self._frames.values() for obj in masks})

    def __len__(self) -> int:
        return len(self._frames)

    def __contains__(self, frame_index: int) -> bool:
        return frame_index in self._frames

    def masks(self, frame_index: int) -> dict[int, np.ndarray]:
        """Bool masks of a frame (empty dict when the frame was not segmented)."""
        return {obj: self._unpack(blob) for obj, blob in self._frames.get(frame_index, {}).items()}

    @classmethod
    def from_labels(cls, labels: np.ndarray, frames: Iterable[int] | None = None) -> "MaskStore":
        """A store from an integer label stack [T, H, W] (e.g. a napari Labels layer).

        ``frames`` are the segmented ones (default: every frame holding a label).
        """
        labels = np.asarray(labels) if not hasattr(labels, "shape") else labels
        num_frames, height, width = (int(n) for n in labels.shape)
        store = cls(num_frames, height, width)
        for t in range(num_frames) if frames is None else frames:
            frame = np.asarray(labels[t])
            ids = np.unique(frame[frame != 0])
            if frames is not None or ids.size:
                store.add(int(t), {int(obj): frame == obj for obj in ids})
        return store

    def labels(self, frame_index: int, dtype: np.dtype | type = np.uint32) -> np.ndarray:
        """Object-id image ``[H, W]``: 0 background, the higher id wins where objects overlap."""
        labels = np.zeros((self.height, self.width), dtype=dtype)
        for obj, mask in sorted(self.masks(frame_index).items()):
            labels[mask] = obj
        return labels


# -- mask files ---------------------------------------------------------------------------------
def frame_name(frame_index: int, suffix: str = ".png") -> str:
    return f"{frame_index:0{FRAME_DIGITS}d}{suffix}"


def write_png_labels(store: MaskStore, folder: str | Path) -> Path:
    """One object-id PNG per segmented frame (8-bit, or 16-bit for ids above 255).

    The PNGs are written into a hidden sibling folder first, then moved in (and an earlier run's
    frame PNGs that this run lacks removed) with Ctrl-C held back; other files are left alone.
    """
    top = max(store.object_ids, default=0)
    if top > MAX_PNG_ID:
        raise AuralSAM2Error(f"object id {top} does not fit a 16-bit PNG", "use --format npz or coco-rle")
    dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16
    folder = Path(folder)
    staging = partial_path(folder)
    try:
        staging.mkdir(parents=True)
        for t in store.frames:
            Image.fromarray(store.labels(t, dtype)).save(staging / frame_name(t))
        with interrupts_held():
            folder.mkdir(parents=True, exist_ok=True)
            current = {frame_name(t) for t in store.frames}
            for stale in folder.glob(FRAME_PNG_GLOB):
                if stale.name not in current:
                    stale.unlink()
            for name in sorted(current):
                (staging / name).replace(folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _npy_member(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
        np.lib.format.write_array(handle, np.asarray(array), allow_pickle=False)


def write_npz(store: MaskStore, path: str | Path, frame_times: np.ndarray, fps: float) -> Path:
    """``labels`` uint32 [T, H, W] (streamed frame by frame), ``object_ids``, ``segmented``, timing."""
    path = Path(path)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<u4")), "fortran_order": False,
              "shape": (store.num_frames, store.height, store.width)}
    with atomic_file(path) as partial, \
            zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        with archive.open("labels.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array_header_2_0(handle, header)
            for t in range(store.num_frames):
                handle.write(store.labels(t, np.dtype("<u4")).tobytes())
        _npy_member(archive, "object_ids", np.asarray(store.object_ids, dtype=np.uint32))
        _npy_member(archive, "segmented", np.isin(np.arange(store.num_frames), store.frames))
        _npy_member(archive, "frame_times", np.asarray(frame_times, dtype=np.float64))
        _npy_member(archive, "fps", np.float64(fps))
    return path


def coco_document(store: MaskStore, video_name: str, frame_times: np.ndarray, fps: float,
                  info: dict | None = None) -> dict:
    """The COCO-RLE JSON document (see the module docstring)."""
    size = {"width": store.width, "height": store.height}
    images = [{"id": t + 1, "video_id": 1, "frame_index": t, "time": float(frame_times[t]),
               "file_name": video_name, **size} for t in range(store.num_frames)]
    annotations = []
    for t in store.frames:
        for obj, mask in sorted(store.masks(t).items()):
            annotations.append({"id": len(annotations) + 1, "image_id": t + 1, "video_id": 1, "category_id": 1,
                                "object_id": obj, "segmentation": rle_encode(mask), "area": int(mask.sum()),
                                "bbox": mask_bbox(mask), "iscrowd": 0})
    return {
        "info": {"description": "napari-auralsam2 masks", "video": video_name, "fps": float(fps),
                 "num_frames": store.num_frames, **size, **(info or {})},
        "videos": [{"id": 1, "file_name": video_name, "length": store.num_frames, "fps": float(fps), **size}],
        "images": images,
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
        "annotations": annotations,
    }


def write_coco_rle(store: MaskStore, path: str | Path, video_name: str, frame_times: np.ndarray, fps: float,
                   info: dict | None = None) -> Path:
    path = Path(path)
    with atomic_file(path) as partial:
        partial.write_text(json.dumps(coco_document(store, video_name, frame_times, fps, info)))
    return path


# -- CVAT for video 1.1 ---------------------------------------------------------------------------
def _cvat_meta(store: MaskStore, video_name: str, names: list[str]) -> ET.Element:
    meta = ET.Element("meta")
    task = ET.SubElement(meta, "task")
    fields = {"name": video_name, "size": store.num_frames, "mode": "interpolation", "overlap": 0,
              "start_frame": 0, "stop_frame": store.num_frames - 1, "frame_filter": ""}
    for key, value in fields.items():
        ET.SubElement(task, key).text = str(value)
    labels = ET.SubElement(task, "labels")
    for name in names:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "any"
        ET.SubElement(label, "attributes")
    size = ET.SubElement(task, "original_size")
    ET.SubElement(size, "width").text = str(store.width)
    ET.SubElement(size, "height").text = str(store.height)
    ET.SubElement(meta, "source").text = video_name
    return meta


def _cvat_shape(track: ET.Element, tag: str, frame: int, outside: bool, geometry: dict[str, str]) -> None:
    ET.SubElement(track, tag, {"frame": str(frame), "keyframe": "1", "outside": str(int(outside)), "occluded": "0",
                               **geometry, "z_order": "0"})


def _mask_geometry(mask: np.ndarray) -> dict[str, str]:
    """CVAT XML mask attributes: ``rle`` over the inclusive box (as the core codec encodes it) and the box."""
    *runs, x0, y0, x1, y1 = codec.to_rle(mask)
    return {"rle": ", ".join(map(str, runs)), "left": str(x0), "top": str(y0),
            "width": str(x1 - x0 + 1), "height": str(y1 - y0 + 1)}


def _polygon_geometry(mask: np.ndarray) -> dict[str, str] | None:
    outlines = codec.to_polygons(mask, tolerance=codec.POLYGON_TOLERANCE)
    if not outlines:
        return None
    flat = outlines[0]
    return {"points": ";".join(f"{x:.2f},{y:.2f}" for x, y in zip(flat[0::2], flat[1::2]))}


def cvat_document(store: MaskStore, video_name: str, names: dict[int, str] | None = None,
                  shape: str = "polygon") -> ET.Element:
    """The ``<annotations>`` element of a CVAT for video 1.1 export (see the module docstring)."""
    if shape not in CVAT_SHAPES:
        raise AuralSAM2Error(f"unknown CVAT shape {shape!r}", f"use one of {', '.join(CVAT_SHAPES)}")
    names = {obj: (names or {}).get(obj) or DEFAULT_LABEL for obj in store.object_ids}
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = CVAT_VERSION
    root.append(_cvat_meta(store, video_name, sorted(set(names.values()))))
    per_object: dict[int, dict[int, np.ndarray]] = {obj: {} for obj in store.object_ids}
    for t in store.frames:
        for obj, mask in store.masks(t).items():
            if mask.any():
                per_object[obj][t] = mask

    def new_track(obj: int, group: bool) -> ET.Element:
        attributes = {"id": str(len(root.findall("track"))), "label": names[obj], "source": "auto"}
        if group:
            attributes["group_id"] = str(obj)
        return ET.SubElement(root, "track", attributes)

    for obj, frames in per_object.items():
        if shape == "mask":
            for t, mask in sorted(frames.items()):
                track, geometry = new_track(obj, group=True), _mask_geometry(mask)
                _cvat_shape(track, "mask", t, False, geometry)
                if t + 1 < store.num_frames:
                    _cvat_shape(track, "mask", t + 1, True, geometry)
            continue
        track, last = None, None
        for t in range(store.num_frames):
            geometry = _polygon_geometry(frames[t]) if t in frames else None
            if geometry is not None:
                track = track if track is not None else new_track(obj, group=False)
                _cvat_shape(track, "polygon", t, False, geometry)
            elif last is not None:
                _cvat_shape(track, "polygon", t, True, last)
            last = geometry
    return root


def write_cvat_video(store: MaskStore, path: str | Path, video_name: str, names: dict[int, str] | None = None,
                     shape: str = "polygon", overwrite: bool = False) -> Path:
    """A zip with ``annotations.xml`` (CVAT for video 1.1), written atomically; never replaces without overwrite."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise AuralSAM2Error(f"{path} already exists", "choose another name, or allow replacing it")
    root = cvat_document(store, video_name, names, shape)
    ET.indent(root)
    with atomic_file(path) as partial, zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(CVAT_XML, ET.tostring(root, encoding="utf-8", xml_declaration=True))
    return path


def has_results(target: Path) -> bool:
    """Whether a mask file, or a masks folder with frame PNGs, is there."""
    return target.is_file() or (target.is_dir() and any(target.glob(FRAME_PNG_GLOB)))


def masks_target(out_dir: str | Path, fmt: str, interrupted: bool = False) -> Path:
    """Where `write_masks` puts masks of format ``fmt``: ``masks``, ``masks.npz`` or ``masks.json`` in
    out_dir, or, for an interrupted run when an earlier run's results are there, a free sibling."""
    if fmt not in TARGETS:
        raise AuralSAM2Error(f"unknown mask format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    target = Path(out_dir) / TARGETS[fmt]
    return free_sibling(target) if interrupted and has_results(target) else target


def write_masks(store: MaskStore, out_dir: str | Path, fmt: str, video: VideoSource,
                info: dict | None = None, interrupted: bool = False) -> Path:
    """Write the masks in one of FORMATS into out_dir; returns the folder or file written.

    ``interrupted``: the run stopped early, so an earlier run's results there are kept and these
    go beside them (see `masks_target`).
    """
    target = masks_target(out_dir, fmt, interrupted)
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "png":
        return write_png_labels(store, target)
    if fmt == "npz":
        return write_npz(store, target, video.frame_times, video.fps)
    name = video.path.name if video.path else "frames"
    if fmt == "cvat-video":
        return write_cvat_video(store, target, name, overwrite=True)
    return write_coco_rle(store, target, name, video.frame_times, video.fps, info)


# -- overlays -----------------------------------------------------------------------------------
def object_colour(object_id: int) -> tuple[int, int, int]:
    return PALETTE[(int(object_id) - 1) % len(PALETTE)]


def frame_energies(audio: AudioTrack, frame_times: np.ndarray, fps: float) -> np.ndarray:
    """Loudness per frame in [0, 1]: RMS over one frame period centred on the frame, in dBFS from
    ENERGY_FLOOR_DB (0) to 0 dBFS (1)."""
    half = 0.5 / fps
    energies = np.zeros(len(frame_times))
    for i, time in enumerate(frame_times):
        start = max(0, int(round((time - half) * audio.sample_rate)))
        stop = min(audio.num_samples, int(round((time + half) * audio.sample_rate)))
        if stop > start:
            rms = math.sqrt(float(np.mean(np.square(audio.samples[start:stop], dtype=np.float64))))
            energies[i] = (20.0 * math.log10(max(rms, 1e-12)) - ENERGY_FLOOR_DB) / -ENERGY_FLOOR_DB
    return np.clip(energies, 0.0, 1.0)


def _font(height: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(MIN_FONT_PX, height))


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of a mask with a 4-neighbour outside it."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def render_overlay(frame: np.ndarray, masks: dict[int, np.ndarray], energy: float | None = None,
                   banner: str | None = None) -> np.ndarray:
    """Masks blended over a uint8 ``[H, W, 3]`` frame in per-object colours (outlined), an
    audio-energy bar at the bottom left, and an optional warning banner at the top."""
    out = np.asarray(frame, dtype=np.float32).copy()
    height, width = out.shape[:2]
    for obj, mask in sorted(masks.items()):
        colour = np.asarray(object_colour(obj), dtype=np.float32)
        out[mask] = (1.0 - OVERLAY_ALPHA) * out[mask] + OVERLAY_ALPHA * colour
        out[_outline(mask)] = colour
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if energy is not None:
        bar_h = max(ENERGY_BAR_MIN_PX, round(height * ENERGY_BAR_HEIGHT))
        bar_w = max(ENERGY_BAR_MIN_PX, round(width * ENERGY_BAR_WIDTH))
        top, left = height - 2 * bar_h, bar_h
        out[top:top + bar_h, left:left + bar_w] = ENERGY_BAR_BACKGROUND
        out[top:top + bar_h, left:left + round(bar_w * float(energy))] = ENERGY_BAR_COLOUR
    if banner:
        image = Image.fromarray(out)
        draw = ImageDraw.Draw(image)
        font = _font(height // 16)
        draw.rectangle(draw.textbbox((2, 2), banner, font=font), fill=(0, 0, 0))
        draw.text((2, 2), banner, fill=BANNER_COLOUR, font=font)
        out = np.asarray(image)
    return out


def overlay_frames(video: VideoSource, store: MaskStore, audio: AudioTrack | None = None,
                   banner: str | None = None, frames: Iterable[int] | None = None) -> Iterator[np.ndarray]:
    """Overlay images of the given frames (default: all), decoded one at a time."""
    energies = None if audio is None else frame_energies(audio, video.frame_times, video.fps)
    for t in range(len(video)) if frames is None else frames:
        energy = None if energies is None else float(energies[t])
        yield render_overlay(video.frame(t), store.masks(t), energy, banner)


def write_overlay(path: str | Path, video: VideoSource, store: MaskStore, audio: AudioTrack | None = None,
                  banner: str | None = None) -> Path:
    """Preview video: every frame with its masks, the audio track copied alongside."""
    path = Path(path)
    with atomic_file(path) as partial:
        write_video(partial, overlay_frames(video, store, audio, banner), video.fps, audio=audio)
    return path


def contact_frames(store: MaskStore, num_frames: int, tiles: int = CONTACT_TILES) -> list[int]:
    """Up to `tiles` evenly spaced frame indices, from the segmented frames when there are any."""
    pool = store.frames or list(range(num_frames))
    picks = np.linspace(0, len(pool) - 1, min(tiles, len(pool))).round().astype(int)
    return [pool[i] for i in sorted(set(picks.tolist()))]


def write_contact_sheet(path: str | Path, video: VideoSource, store: MaskStore, audio: AudioTrack | None = None,
                        banner: str | None = None, tiles: int = CONTACT_TILES, columns: int = CONTACT_COLUMNS) -> Path:
    """A PNG grid of overlay thumbnails of evenly spaced frames, each captioned with its index."""
    picks = contact_frames(store, len(video), tiles)
    thumb_h = max(1, round(THUMB_WIDTH * video.height / video.width))
    columns = min(columns, len(picks))
    rows = math.ceil(len(picks) / columns)
    top = CAPTION_PX if banner else 0
    sheet = Image.new("RGB", (columns * THUMB_WIDTH, top + rows * (thumb_h + CAPTION_PX)), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    font = _font(CAPTION_PX - 4)
    if banner:
        draw.text((2, 1), banner, fill=BANNER_COLOUR, font=font)
    for k, (t, image) in enumerate(zip(picks, overlay_frames(video, store, audio, frames=picks))):
        x, y = (k % columns) * THUMB_WIDTH, top + (k // columns) * (thumb_h + CAPTION_PX)
        sheet.paste(Image.fromarray(image).resize((THUMB_WIDTH, thumb_h), Image.Resampling.BILINEAR), (x, y))
        caption = f"frame {t}  t={video.frame_times[t]:.2f}s"
        draw.text((x + 2, y + thumb_h + 1), caption, fill=CAPTION_COLOUR, font=font)
    path = Path(path)
    with atomic_file(path) as partial:
        sheet.save(partial)
    return path


__all__ = ["FORMATS", "MaskStore", "masks_target", "has_results", "rle_encode", "rle_decode", "mask_bbox", "write_masks", "write_png_labels",
           "write_npz", "write_coco_rle", "coco_document", "render_overlay", "overlay_frames", "write_overlay",
           "write_contact_sheet", "frame_energies", "object_colour"]
