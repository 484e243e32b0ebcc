"""The CVAT tracker protocol over the engine: small JSON states, heavy SAM2 memory kept here.

A state is ``{"id": "<uuid4 hex>", "step": n}`` (well under 100 bytes: CVAT signs it and sends it
through the browser). The session it names lives in a bounded LRU (capacity and idle lifetime
from the deployment); evicted, restarted or foreign ids answer 410, replayed old steps 409.
Shapes come as CVAT sends them: a bare ``[xtl, ytl, xbr, ybr]`` (functions without
``supported_shape_types``) or ``{"type": ..., "points": ...}`` for rectangle, polygon and mask;
results keep the input's form and type. The first frame returns the user's shape as drawn.
A request is all or nothing: every entry is checked before any track moves.
"""
from __future__ import annotations

import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import masks as codec
from ..core.session import Engine
from .payloads import RequestError, parse_list, shown
from .streams import MaskStream, StreamVideo, frame_by_frame

SUPPORTED_SHAPE_TYPES = ("rectangle", "polygon", "mask")
DEFAULT_CAPACITY = 8
DEFAULT_IDLE_S = 3600.0
_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Shape:
    """A tracked shape as CVAT sent it (``legacy`` = a bare points list)."""

    type: str
    points: list[float]
    legacy: bool = False

    def to_json(self) -> list[float] | dict:
        return self.points if self.legacy else {"type": self.type, "points": self.points}


def parse_shape(value: Any, width: int, height: int) -> Shape:
    legacy = isinstance(value, list)
    if legacy:
        shape_type, points = "rectangle", value
    elif isinstance(value, dict):
        shape_type, points = value.get("type"), value.get("points")
    else:
        raise RequestError(f"a shape must be a points list or an object, got {shown(value)}")
    if shape_type not in SUPPORTED_SHAPE_TYPES:
        raise RequestError(f"shape type {shown(shape_type)} is not supported: "
                           f"use one of {', '.join(SUPPORTED_SHAPE_TYPES)}")
    if not isinstance(points, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in points):
        raise RequestError("shape points must be a list of numbers")
    if shape_type == "rectangle" and len(points) != 4:
        raise RequestError(f"a rectangle needs 4 numbers [xtl, ytl, xbr, ybr], got {len(points)}")
    if shape_type == "polygon" and (len(points) < 6 or len(points) % 2):
        raise RequestError("a polygon needs at least 3 [x, y] points")
    if shape_type == "mask":
        try:
            codec.from_rle(points, width, height)
        except ValueError as err:
            raise RequestError(f"bad mask shape: {err}") from None
    return Shape(shape_type, [float(v) if shape_type != "mask" else int(v) for v in points], legacy)


def shape_box(shape: Shape, width: int, height: int) -> tuple[float, float, float, float]:
    """The box prompt for a shape, clipped to the image."""
    if shape.type == "mask":
        x0, y0, x1, y1 = codec.bbox(codec.from_rle(shape.points, width, height)) or (0, 0, 0, 0)
        x1, y1 = x1 + 1, y1 + 1
    else:
        xs, ys = np.asarray(shape.points[0::2]), np.asarray(shape.points[1::2])
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    x0, x1 = float(np.clip(x0, 0, width)), float(np.clip(x1, 0, width))
    y0, y1 = float(np.clip(y0, 0, height)), float(np.clip(y1, 0, height))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise RequestError(f"the {shape.type} to track is empty inside the {width}x{height} image")
    return x0, y0, x1, y1


def mask_to_shape(mask: np.ndarray, like: Shape) -> Shape | None:
    """The mask as a shape of the same type and form (None when the mask is empty)."""
    box = codec.bbox(mask)
    if box is None:
        return None
    if like.type == "rectangle":
        x0, y0, x1, y1 = box
        return Shape("rectangle", [float(x0), float(y0), float(x1 + 1), float(y1 + 1)], like.legacy)
    if like.type == "polygon":
        return Shape("polygon", codec.to_polygons(mask, tolerance=codec.POLYGON_TOLERANCE)[0], like.legacy)
    return Shape("mask", codec.to_rle(mask), like.legacy)


@dataclass
class Track:
    stream: MaskStream
    video: StreamVideo
    last: Shape
    step: int = 0
    used: float = field(default_factory=time.monotonic)


class TrackStore:
    """Bounded LRU of live tracks (closing what it evicts)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, idle_s: float = DEFAULT_IDLE_S) -> None:
        self.capacity, self.idle_s = max(1, int(capacity)), float(idle_s)
        self._tracks: OrderedDict[str, Track] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tracks)

    def add(self, track: Track) -> str:
        key = uuid.uuid4().hex
        with self._lock:
            self._tracks[key] = track
            evicted = self._expire()
            while len(self._tracks) > self.capacity:
                evicted.append(self._tracks.popitem(last=False)[1])
        for old in evicted:
            old.stream.close()
        return key

    def get(self, key: str) -> Track:
        with self._lock:
            evicted = self._expire()
            track = self._tracks.get(key)
            if track is not None:
                self._tracks.move_to_end(key)
                track.used = time.monotonic()
        for old in evicted:
            old.stream.close()
        if track is None:
            raise RequestError(f"tracker state {key} is unknown or expired (this function keeps {self.capacity} "
                               f"tracks for {self.idle_s / 60:g} min of inactivity, and none across restarts): "
                               "start tracking again from this frame", 410)
        return track

    def _expire(self) -> list[Track]:
        now = time.monotonic()
        stale = [key for key, track in self._tracks.items() if now - track.used > self.idle_s]
        return [self._tracks.pop(key) for key in stale]


def parse_state(value: Any) -> tuple[str, int]:
    if not isinstance(value, dict) or not isinstance(value.get("id"), str) or not _ID.match(value["id"]) \
            or isinstance(value.get("step"), bool) or not isinstance(value.get("step"), int):
        raise RequestError(f"malformed tracker state {shown(value)}: expected {{\"id\": <hex>, \"step\": <int>}}")
    return value["id"], value["step"]


class Tracker:
    """Serves CVAT tracker requests (call on the engine thread)."""

    def __init__(self, engine: Engine, store: TrackStore) -> None:
        self.engine = frame_by_frame(engine)
        self.store = store

    def __call__(self, image: np.ndarray, body: dict) -> dict:
        """Every entry is checked before any track moves: a refused request changes nothing, so
        CVAT's retry with the states it still holds is served (not answered 409)."""
        shapes = parse_list(body.get("shapes"), "shapes")
        states = parse_list(body.get("states"), "states")
        count = max(len(shapes), len(states))
        if count == 0:
            raise RequestError("nothing to track: send 'shapes' (to start) or 'states' (to continue)")
        height, width = image.shape[:2]
        starts: dict[int, tuple[Shape, tuple]] = {}
        continues: dict[int, tuple[str, Track]] = {}
        for i in range(count):
            state = states[i] if i < len(states) else None
            shape = shapes[i] if i < len(shapes) else None
            if state is None:
                if shape is None:
                    raise RequestError(f"entry {i} has neither a shape nor a state")
                parsed = parse_shape(shape, width, height)
                starts[i] = parsed, shape_box(parsed, width, height)
            else:
                key, step = parse_state(state)
                if any(key == other for other, _ in continues.values()):
                    raise RequestError(f"tracker state {key} is given twice in one request")
                continues[i] = key, self._checked(image, key, step)
        results = {i: self._continue(image, key, track) for i, (key, track) in continues.items()}
        results.update({i: self._start(image, shape, box) for i, (shape, box) in starts.items()})
        return {"shapes": [results[i][0].to_json() for i in range(count)],
                "states": [results[i][1] for i in range(count)]}

    def _checked(self, image: np.ndarray, key: str, step: int) -> Track:
        """The live track a state names, if this image can be its next frame."""
        track = self.store.get(key)
        if step != track.step:
            raise RequestError(f"tracker state {key} is from step {step}, the track is at step {track.step} "
                               "(a frame was tracked twice): start tracking again from this frame", 409)
        track.video.check(image)
        return track

    def _start(self, image: np.ndarray, shape: Shape, box: tuple) -> tuple[Shape, dict]:
        height, width = image.shape[:2]
        video = StreamVideo(height, width)
        video.push(image)
        stream = MaskStream(self.engine, video, 0, use_audio=False, box=box)
        stream.advance_to(0)
        key = self.store.add(Track(stream, video, shape))
        return shape, {"id": key, "step": 0}

    def _continue(self, image: np.ndarray, key: str, track: Track) -> tuple[Shape, dict]:
        index = track.video.push(image)
        mask, _ = track.stream.advance_to(index)
        track.step = index
        track.last = mask_to_shape(mask, track.last) or track.last  # lost: keep the last shape
        return track.last, {"id": key, "step": index}


__all__ = ["Tracker", "TrackStore", "parse_shape", "mask_to_shape", "SUPPORTED_SHAPE_TYPES"]
