"""Masklets written back to a CVAT task: ``auralsam2 cvat annotate``.

CVAT stores no audio with a task's frames, so this runs outside CVAT on the task's source video:
the file the task was made from, which CVAT keeps (fetched from the task's backup, see
:mod:`.task_video`), or one the user names (``--video``, needed for image tasks). It reads the
task's frame layout (and, with ``--from-task-shapes``, its shapes as prompts) with cvat-sdk, maps
task frames to source-video frames, runs one engine session over the video with its sound, and
uploads one object per masklet, appending (PATCH ``action=create``) unless ``--replace`` (PUT).

CVAT accepts ``mask`` shapes inside tracks at the API, but its interpolation raises on mask
tracks with two or more keyframes and its UI refuses to load them (cvat-ai/cvat#6264). So a
masklet is written either as a **polygon track** (default: one keyframe per frame, the largest
outline; ``outside`` where the object vanishes) or as **per-frame mask shapes** sharing one
``group`` id (``--as mask``: pixel-exact, not a CVAT track).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cvat_sdk.models as models
import numpy as np
from cvat_sdk.api_client.exceptions import NotFoundException
from PIL import Image

from ..core import masks as codec
from ..core.errors import AuralSAM2Error
from ..core.session import Engine, Prompt
from ..core.video import VideoSource, open_video
from .fingerprint import DEFAULT_TOLERANCE, FrameIndex, fingerprint
from .task_video import VIDEO_HINT, SourceVideo, fetch_task_video, is_video_task

SHAPE_TYPES = ("polygon", "mask")
STEP_PREFIX = "step="
#: a --video of another resolution is scaled if its aspect ratio is within this of the task's
ASPECT_TOLERANCE = 0.01
Log = Callable[[str], None]


@dataclass
class ObjectPrompt(Prompt):
    """A core `Prompt` in task pixels on a task frame, with the CVAT label it came from."""

    label_id: int | None = None


@dataclass
class FrameMap:
    """Task frame -> source-video frame, and the task's frame size (width, height)."""

    source: dict[int, int]
    size: tuple[int, int]

    def check(self, prompts: list[ObjectPrompt]) -> None:
        """Every prompt on a frame of the task, its clicks and box inside the frame (before the model loads)."""
        width, height = self.size
        for prompt in prompts:
            if prompt.frame is not None and prompt.frame not in self.source:
                raise AuralSAM2Error(f"prompt frame {prompt.frame} of object {prompt.object_id} is not a frame of "
                                     f"the task", f"use frames {min(self.source)}..{max(self.source)}")
            box = [] if prompt.box is None else [prompt.box[:2], prompt.box[2:]]
            for x, y in [*prompt.points, *box]:
                if not (0 <= x <= width and 0 <= y <= height):
                    raise AuralSAM2Error(f"object {prompt.object_id}: ({x:g}, {y:g}) is outside the task's "
                                         f"{width}x{height} frames", "give task pixels")


def frame_image(task, frame: int) -> Image.Image:
    """One task frame as CVAT stores it (original quality)."""
    return Image.open(io.BytesIO(task.get_frame(frame, quality="original").read())).convert("RGB")


def _frame_step(task_id: int, frame_filter: str | None) -> int:
    """CVAT's ``frame_filter`` (empty, or ``step=N``) as a step."""
    text = str(frame_filter or "")
    if not text:
        return 1
    if text.startswith(STEP_PREFIX) and text[len(STEP_PREFIX):].isdigit() and int(text[len(STEP_PREFIX):]) > 0:
        return int(text[len(STEP_PREFIX):])
    raise AuralSAM2Error(f"task {task_id} has the frame filter {text!r}, which is not step=N")


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(a[0] * b[1] - a[1] * b[0]) <= ASPECT_TOLERANCE * a[1] * b[0]


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(fingerprint(a).astype(np.float32) - fingerprint(b).astype(np.float32)).mean())


def video_task_frames(task, meta, video: VideoSource, fetched: SourceVideo | None = None,
                      tolerance: float = DEFAULT_TOLERANCE) -> FrameMap:
    """A video task's frame k is frame ``start_frame + k * step`` of its video, up to ``stop_frame``.

    The video must have those frames, the task's frame size (or, for a ``--video`` of another
    resolution, its aspect ratio), and look like the task on its first and last frames; a video
    ``fetched`` from CVAT must also have the frame count CVAT's manifest gives it.
    """
    name = video.path.name if video.path else "the video"
    hint = VIDEO_HINT if fetched is not None else "pass the video the task was created from (--video)"
    step, start, stop = _frame_step(task.id, meta.frame_filter), int(meta.start_frame), int(meta.stop_frame)
    if fetched is not None and fetched.frames is not None and fetched.frames != len(video):
        raise AuralSAM2Error(f"CVAT counts {fetched.frames} frames in {name}, this decoder {len(video)}: task frame "
                             "numbers would not line up", f"{VIDEO_HINT} (e.g. a re-encoded copy)")
    layout = f"frames {start}..{stop}" + (f" step {step}" if step > 1 else "")
    if len(range(start, stop + 1, step)) != meta.size or stop >= len(video):
        raise AuralSAM2Error(f"task {task.id} has {meta.size} frames ({layout}) but {name} has {len(video)}", hint)
    size = (int(meta.frames[0].width), int(meta.frames[0].height))
    shape = (video.width, video.height)
    if shape != size and (fetched is not None or not _same_aspect(shape, size)):
        raise AuralSAM2Error(f"task {task.id} has {size[0]}x{size[1]} frames but {name} is "
                             f"{video.width}x{video.height}", hint)
    deleted = set(meta.deleted_frames)
    mapping = {k: start + k * step for k in range(meta.size) if k not in deleted}
    for k in sorted({min(mapping), max(mapping)} if mapping else ()):
        distance = _distance(np.asarray(frame_image(task, k)), video.frame(mapping[k]))
        if distance > tolerance:
            raise AuralSAM2Error(f"task {task.id} frame {k} does not look like frame {mapping[k]} of {name} "
                                 f"(difference {distance:.1f})", hint)
    return FrameMap(mapping, size)


def image_task_frames(task, meta, index: FrameIndex, log: Log) -> FrameMap:
    """An image task (e.g. frames extracted from the video): every frame located by fingerprint."""
    deleted, mapping, after = set(meta.deleted_frames), {}, None
    sizes = {(int(f.width), int(f.height)) for f in meta.frames}
    if len(sizes) != 1:
        raise AuralSAM2Error(f"task {task.id} mixes frame sizes {sorted(sizes)}", "use a task made from one video")
    for k in range(meta.size):
        if k in deleted:
            continue
        match = index.match(frame_image(task, k), after=after)
        mapping[k], after = match.frame, (match.path, match.frame)
    log(f"located {len(mapping)} task frames in the video")
    return FrameMap(mapping, sizes.pop())


def prompts_from_shapes(annotations, size: tuple[int, int], log: Log) -> list[ObjectPrompt]:
    """Task shapes as prompts: rectangles -> boxes, points -> clicks, polygons/masks -> their boxes."""
    width, height = size
    prompts = []
    for shape in annotations.shapes:
        kind, points = str(shape.type.value), list(shape.points)
        prompt = ObjectPrompt(frame=int(shape.frame), object_id=len(prompts) + 1, label_id=int(shape.label_id))
        if kind == "rectangle":
            prompt.box = tuple(points[:4])
        elif kind == "points":
            prompt.points = list(zip(points[0::2], points[1::2]))
            prompt.labels = [1] * len(prompt.points)
        elif kind in ("polygon", "mask"):
            mask = codec.from_rle(points, width, height) if kind == "mask" else \
                codec.polygons_to_mask([points], width, height)
            box = codec.bbox(mask)
            if box is None:
                continue
            prompt.box = (box[0], box[1], box[2] + 1, box[3] + 1)
        else:
            log(f"skipping a {kind} shape on frame {shape.frame}: not usable as a prompt")
            continue
        prompts.append(prompt)
    return prompts


def run_masklets(engine: Engine, video: VideoSource, frames: FrameMap, prompts: list[ObjectPrompt],
                 use_audio: bool, shape_type: str, log: Log) -> dict[int, dict[int, list]]:
    """{object id: {task frame: encoded shape points}} (largest polygon or CVAT RLE; empty -> absent)."""
    scale_x, scale_y = video.width / frames.size[0], video.height / frames.size[1]
    to_task = {source: k for k, source in frames.source.items()}
    frames.check(prompts)
    session = engine.open_session(video, use_audio=use_audio)
    try:
        for prompt in prompts:
            points = [(x * scale_x, y * scale_y) for x, y in prompt.points]
            box = None if prompt.box is None else (prompt.box[0] * scale_x, prompt.box[1] * scale_y,
                                                  prompt.box[2] * scale_x, prompt.box[3] * scale_y)
            session.apply(Prompt(frames.source[prompt.frame], prompt.object_id, points, list(prompt.labels), box,
                                 text=prompt.text))
        results: dict[int, dict[int, list]] = {p.object_id: {} for p in prompts}
        reported = [0]

        def progress(done: int, total: int) -> None:
            if done * 10 // total > reported[0]:
                reported[0] = done * 10 // total
                log(f"tracked {done}/{total} video frames")

        for source, masks in session.propagate(direction="both", progress=progress):
            if source not in to_task:
                continue
            for object_id, mask in masks.items():
                mask = codec.resize_mask(mask, *frames.size)
                if not mask.any():
                    continue
                if shape_type == "mask":
                    results[object_id][to_task[source]] = codec.to_rle(mask)
                else:
                    results[object_id][to_task[source]] = codec.to_polygons(mask, tolerance=codec.POLYGON_TOLERANCE)[0]
        return results
    finally:
        session.close()


def polygon_track(label_id: int, encoded: dict[int, list], task_frames: list[int],
                  source: str) -> models.LabeledTrackRequest | None:
    """One polygon keyframe per frame where the object is, ``outside`` where it vanished."""
    shapes, last = [], None
    for frame in task_frames:
        if frame in encoded:
            last = encoded[frame]
            shapes.append(models.TrackedShapeRequest(type="polygon", frame=frame, points=last, outside=False))
        elif last is not None and not shapes[-1].outside:
            shapes.append(models.TrackedShapeRequest(type="polygon", frame=frame, points=last, outside=True))
    if not shapes:
        return None
    return models.LabeledTrackRequest(label_id=label_id, frame=shapes[0].frame, shapes=shapes, source=source,
                                      group=None, attributes=[])


def mask_shapes(label_id: int, encoded: dict[int, list], group: int, source: str) -> list[models.LabeledShapeRequest]:
    """Per-frame mask shapes of one object, tied together by ``group``."""
    return [models.LabeledShapeRequest(type="mask", frame=frame, label_id=label_id, points=points, group=group,
                                       source=source, occluded=False, z_order=0, attributes=[])
            for frame, points in sorted(encoded.items())]


def _label_id(labels, name: str | None) -> int:
    if not labels:
        raise AuralSAM2Error("the task has no labels", "add a label to the task in CVAT first")
    if name is None:
        return int(labels[0].id)
    for label in labels:
        if label.name == name:
            return int(label.id)
    raise AuralSAM2Error(f"the task has no label {name!r}", f"use one of: {', '.join(item.name for item in labels)}")


@dataclass
class TaskSource:
    """A task, its frame layout and the video (with its sound) the frames come from; close when done."""

    task: object  # cvat-sdk's task proxy
    labels: list
    video: VideoSource
    frames: FrameMap

    def label_id(self, name: str | None) -> int:
        return _label_id(self.labels, name)

    def close(self) -> None:
        self.video.close()

    def __enter__(self) -> TaskSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_task(client, task_id: int, video: str | Path | None = None, audio: str | Path | None = None,
              cache_root: str | Path | None = None, log: Log = print) -> TaskSource:
    """The task and its source video: ``video``, or (none given) the task's own upload, from CVAT."""
    try:
        task = client.tasks.retrieve(task_id)
    except NotFoundException as err:
        raise AuralSAM2Error(f"CVAT at {client.api_map.host} has no task {task_id}",
                             "check --task (and --organization)") from err
    meta = task.get_meta()
    labels = task.get_labels()
    fetched = None
    if video is None:
        fetched = fetch_task_video(client, task, meta, cache_root, log)
        video = fetched.path
    source = open_video(video, audio=audio)
    try:
        if is_video_task(task):
            frames = video_task_frames(task, meta, source, fetched)
        else:
            index = FrameIndex([source.path])
            index.refresh(strict=True)
            frames = image_task_frames(task, meta, index, log)
    except BaseException:
        source.close()
        raise
    return TaskSource(task, labels, source, frames)


def write_masklets(source: TaskSource, engine: Engine, prompts: list[ObjectPrompt] | None = None,
                   from_task_shapes: bool = False, label: str | None = None, replace: bool = False,
                   shape_type: str = "polygon", use_audio: bool = True, log: Log = print) -> dict[int, int]:
    """Run the engine over the task's video and upload masklets; returns {object id: frames written}."""
    if shape_type not in SHAPE_TYPES:
        raise AuralSAM2Error(f"unknown shape type {shape_type!r}", f"use one of {', '.join(SHAPE_TYPES)}")
    task, frames = source.task, source.frames
    default_label = source.label_id(label)
    needs_existing = from_task_shapes or (shape_type == "mask" and not replace)  # prompts, free group ids
    existing = task.get_annotations() if needs_existing else None
    if from_task_shapes:
        prompts = prompts_from_shapes(existing, frames.size, log)
        if not prompts:
            raise AuralSAM2Error(f"task {task.id} has no rectangle, points, polygon or mask shapes to start from",
                                 "draw some, or pass --point/--box")
    elif not prompts:
        prompts = [ObjectPrompt(frame=min(frames.source), object_id=1)]  # the sounding object, from the first task frame
    for prompt in prompts:
        if prompt.frame is None:  # named in words only: from the audio on the first task frame
            prompt.frame = min(frames.source)
    kind = "auto" if all(not p.points and p.box is None for p in prompts) else "semi-auto"
    encoded = run_masklets(engine, source.video, frames, prompts, use_audio, shape_type, log)
    task_frames = sorted(frames.source)
    group_base = max([s.group or 0 for s in existing.shapes] + [t.group or 0 for t in existing.tracks], default=0) \
        if existing is not None else 0
    uploads = []
    for prompt in prompts:
        label_id = prompt.label_id if prompt.label_id is not None else default_label
        per_frame = encoded[prompt.object_id]
        if shape_type == "polygon":
            track = polygon_track(label_id, per_frame, task_frames, kind)
            uploads.append((prompt.object_id, [track] if track else [], []))
        else:
            uploads.append((prompt.object_id, [], mask_shapes(label_id, per_frame, group_base + prompt.object_id,
                                                              kind)))
    if replace:
        task.api.update_annotations(task.id, labeled_data_request=models.LabeledDataRequest(
            version=0, tags=[], shapes=[s for _, _, shapes in uploads for s in shapes],
            tracks=[t for _, tracks, _ in uploads for t in tracks]))
    else:
        for _, tracks, shapes in uploads:
            if tracks or shapes:
                task.api.partial_update_annotations("create", task.id, patched_labeled_data_request=(
                    models.PatchedLabeledDataRequest(tags=[], shapes=shapes, tracks=tracks)))
    written = {object_id: len(encoded[object_id]) for object_id, _, _ in uploads}
    for object_id, count in written.items():
        log(f"object {object_id}: {count} frame(s) {'written' if count else 'empty: nothing written'}")
    return written


def annotate_task(client, task_id: int, engine: Engine, video: str | Path | None = None,
                  prompts: list[ObjectPrompt] | None = None, from_task_shapes: bool = False, label: str | None = None,
                  replace: bool = False, shape_type: str = "polygon", use_audio: bool = True,
                  audio: str | Path | None = None, cache_root: str | Path | None = None,
                  log: Log = print) -> dict[int, int]:
    """Segment a task's objects on its source video (``video``, or the task's own from CVAT) and upload them."""
    with open_task(client, task_id, video, audio, cache_root, log) as source:
        return write_masklets(source, engine, prompts, from_task_shapes, label, replace, shape_type, use_audio, log)


__all__ = ["ObjectPrompt", "FrameMap", "TaskSource", "open_task", "write_masklets", "annotate_task", "polygon_track",
           "mask_shapes", "prompts_from_shapes",
           "run_masklets", "SHAPE_TYPES"]
