"""Saving, restoring and exporting one video's work: translation between the viewer and the core's files.

The sidecar (`core.sidecar`, ``<video>.auralsam2.npz`` beside the video) holds the masks and
committed layers, every object (name, committed, audio guidance, all its prompts: the clicks and
boxes of the prompt layers and the book's audio starts and mask corrections), the masks layer's
edit ledger and the widget's settings. Exports go through the core writers the CLI uses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from napari.layers import Image, Points, Shapes

from ..core.errors import AuralSAM2Error
from ..core.export import TARGETS, MaskStore, write_cvat_video, write_masks
from ..core.objects import ObjectBook, ObjectRecord, Prompts
from ..core.sidecar import Sidecar, VideoIdentity, load_sidecar, save_sidecar, sidecar_path
from ..core.video import VideoSource, frames_from_array
from .ledger import EditLedger
from .prompts import NEGATIVE, PIXEL_CENTRE, POSITIVE, clear_all
from .reader import FPS_KEY, VIDEO_PATH_KEY
from .work import VideoWork

MASKS, COMMITTED = "masks", "committed"


def sidecar_of(video: Image) -> Path | None:
    """Where a video layer's work is saved (None for a layer without a video file)."""
    path = video.metadata.get(VIDEO_PATH_KEY)
    return sidecar_path(path) if path else None


def _source(video: Image) -> VideoSource:
    if isinstance(video.data, VideoSource):
        return video.data
    return frames_from_array(video.data, fps=float(video.metadata.get(FPS_KEY) or 25.0))


def save_work(work: VideoWork, host: Prompts, settings: dict, overwrite: bool) -> Path:
    """Write the video's work to its sidecar (refusing to replace one unless `overwrite`)."""
    path = sidecar_of(work.video)
    if path is None:
        raise AuralSAM2Error(f"'{work.video.name}' has no video file to save beside",
                             "open the video from a file (File > Open) to save its work")
    masks, committed = work.masks_layer(), work.committed_layer()
    layers = {name: np.asarray(layer.data) for name, layer in ((MASKS, masks), (COMMITTED, committed)) if layer}
    ids = set(work.book.records) | {k for by_object in host.values() for k in by_object}
    objects = []
    for k in sorted(ids):
        record = work.book.records.get(k) or ObjectRecord(k)
        clicked = [by_object[k] for _, by_object in sorted(host.items()) if k in by_object]
        objects.append(ObjectRecord(k, record.name, record.text, record.committed, record.audio_guidance,
                                    clicked + list(record.prompts)))
    protection = {MASKS: EditLedger.of(masks).to_json()} if masks is not None else {}
    sidecar = Sidecar(VideoIdentity.of(_source(work.video)), layers, objects, protection, settings)
    return save_sidecar(path, sidecar, overwrite=overwrite)


def read_work(video: Image) -> Sidecar:
    """The video's saved work, checked to belong to this video."""
    return load_sidecar(sidecar_of(video), _source(video))


def restore_work(work: VideoWork, saved: Sidecar, points: Points | None, boxes: Shapes | None) -> None:
    """Put saved work back: layers bit-exact, the ledger, the book, and the clicks and boxes."""
    if MASKS in saved.layers:
        masks = work.masks_layer(create=True)
        masks.data = saved.layers[MASKS].copy()
        EditLedger.of(masks).load_json(saved.protection.get(MASKS, {}) if saved.protection else {})
    if COMMITTED in saved.layers:
        work.committed_layer(create=True).data = saved.layers[COMMITTED].copy()
    clear_all(points, boxes)
    book = ObjectBook()
    clicks, labels, click_ids, rectangles, box_ids = [], [], [], [], []
    for record in saved.objects:
        held = [p for p in record.prompts if not (p.points or p.box is not None)]
        book.records[record.object_id] = ObjectRecord(record.object_id, record.name, record.text, record.committed,
                                                      record.audio_guidance, held)
        for prompt in record.prompts:
            for (x, y), label in zip(prompt.points, prompt.labels):
                clicks.append([prompt.frame, y - PIXEL_CENTRE, x - PIXEL_CENTRE])
                labels.append(POSITIVE if label else NEGATIVE)
                click_ids.append(record.object_id)
            if prompt.box is not None:
                x0, y0, x1, y1 = (v - PIXEL_CENTRE for v in prompt.box)
                rectangles.append(np.array([[prompt.frame, y0, x0], [prompt.frame, y0, x1],
                                            [prompt.frame, y1, x1], [prompt.frame, y1, x0]]))
                box_ids.append(record.object_id)
    if points is not None and clicks:
        points.data = np.array(clicks, dtype=float)
        points.features = pd.DataFrame({"label": pd.Categorical(labels, categories=[POSITIVE, NEGATIVE]),
                                        "object_id": np.array(click_ids, dtype=np.int64)})
    if boxes is not None and rectangles:
        boxes.add_rectangles(rectangles)
        boxes.features = pd.DataFrame({"object_id": np.array(box_ids, dtype=np.int64)})
    work.book = book


def export_target(folder: str | Path, fmt: str) -> Path:
    """The file or folder an export in `fmt` writes inside `folder`."""
    return Path(folder) / TARGETS[fmt]


def export_work(work: VideoWork, folder: str | Path, fmt: str) -> Path:
    """Write the committed and working masks (committed first where both have a pixel) in `fmt`; in
    CVAT for video each object's track is labelled with its name (default "object")."""
    masks, committed = work.masks_layer(), work.committed_layer()
    if masks is None and committed is None:
        raise AuralSAM2Error("there are no masks to export yet", "run AuralSAM2 first")
    labels = np.asarray(masks.data) if masks is not None else np.zeros_like(committed.data)
    if committed is not None:
        labels = np.where(np.asarray(committed.data) != 0, committed.data, labels)
    store, source = MaskStore.from_labels(labels), _source(work.video)
    if fmt == "cvat-video":
        Path(folder).mkdir(parents=True, exist_ok=True)
        names = {k: record.name for k, record in work.book.records.items() if record.name}
        return write_cvat_video(store, export_target(folder, fmt), source.path.name if source.path else "frames",
                                names=names, overwrite=True)  # the widget asked before replacing
    return write_masks(store, folder, fmt, source)

