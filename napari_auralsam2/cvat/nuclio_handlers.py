"""nuclio handlers for the three CVAT function types; ``cvat_serverless/**/main.py`` only call these.

Configuration comes from the deployment's environment (function.yaml ``spec.env`` or ``nuctl
deploy --env``): see :class:`Settings`. Weights are read from ``AURALSAM2_HOME``, baked into the
image at build time; nothing is downloaded at start-up or per request. Every request answers
JSON: the result with 200, or ``{"error": "..."}`` with 4xx (bad request) / 5xx (cannot serve);
no input can take the function down. ``model_handler.py`` picks the class, ``main.py`` builds it
in ``init_context`` and forwards every event to :func:`handle`.
"""
from __future__ import annotations

import abc
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..core import masks as codec
from ..core.errors import AuralSAM2Error, PromptError
from ..core.session import Engine
from ..core.video import frames_from_array
from ..core.weights import DEFAULT_RELEASE
from .detector import DEFAULT_LABEL, Prompt, Segment, Segmenter
from .fingerprint import (
    DEFAULT_RETRY_S,
    DEFAULT_TOLERANCE,
    AmbiguousFrameError,
    BackgroundRefresh,
    FrameIndex,
    FrameNotFoundError,
)
from .payloads import (
    RequestError,
    decode_image,
    parse_body,
    parse_box,
    parse_points,
    parse_threshold,
    require,
)
from .streams import OBJECT_ID, model_lock, shared_engine
from .tracker import DEFAULT_CAPACITY, DEFAULT_IDLE_S, Tracker, TrackStore

ENV_PREFIX = "AURALSAM2_"


@dataclass
class Settings:
    """Deployment settings, each read from ``AURALSAM2_<NAME>`` (e.g. ``AURALSAM2_IMAGE_SIZE``)."""

    model: str = "hiera_l"
    image_size: int = 1024
    weights: str = "auto"
    checkpoint: str = ""
    sam2_checkpoint: str = ""
    release: str = DEFAULT_RELEASE
    text_model: str = ""
    device: str = ""
    cvat_data: str = "/cvat-data"
    videos: str = ""
    index_cache: str = "/tmp/auralsam2-index"
    index_interval_s: float = 30.0
    index_wait_s: float = 20.0
    index_retry_s: float = DEFAULT_RETRY_S
    label: str = DEFAULT_LABEL
    text: str = ""  # the detector's object in words (Ref-AVS weights)
    labels: str = ""  # JSON like the function spec's labels, each with a "text": one object per label
    match_tolerance: float = DEFAULT_TOLERANCE
    tracker_capacity: int = DEFAULT_CAPACITY
    tracker_idle_s: float = DEFAULT_IDLE_S

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values = {}
        for item in fields(cls):
            raw = environ.get(ENV_PREFIX + item.name.upper())
            if raw is not None:
                cast = type(item.default)
                try:
                    values[item.name] = cast(raw)
                except ValueError:
                    name = ENV_PREFIX + item.name.upper()
                    raise AuralSAM2Error(f"{name}={raw!r} is not a valid {cast.__name__}") from None
        return cls(**values)

    def engine(self) -> Engine:
        return shared_engine(model=self.model, image_size=self.image_size, weights=self.weights,
                             checkpoint=self.checkpoint or None, sam2_checkpoint=self.sam2_checkpoint or None,
                             device=self.device or None, allow_download=False, release=self.release,
                             text_model=self.text_model or None)

    def label_texts(self) -> list[tuple[str, str | None]]:
        """(label, text) of each object the detector segments: AURALSAM2_LABELS, else AURALSAM2_LABEL/_TEXT."""
        if not self.labels:
            return [(self.label, self.text or None)]
        try:
            spec = json.loads(self.labels)
            pairs = [(str(item["name"]), item.get("text") or None) for item in spec]
        except (ValueError, TypeError, KeyError) as err:
            raise AuralSAM2Error(f"{ENV_PREFIX}LABELS is not a JSON list of {{\"name\": ..., \"text\": ...}} labels",
                                 "copy the labels of the function spec and add a text to each") from err
        if not pairs:
            raise AuralSAM2Error(f"{ENV_PREFIX}LABELS lists no label")
        return pairs


class FunctionModel(abc.ABC):
    """One deployed function: parses a request, then runs the engine under its lock.

    ``log`` takes warnings meant for the function's log (``context.logger.warn`` under nuclio).
    """

    kind = ""

    def __init__(self, settings: Settings, engine: Engine | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.log = log
        self.engine = engine or settings.engine()
        self.lock = model_lock(self.engine)

    @classmethod
    def from_env(cls, logger=None) -> FunctionModel:
        """Built from ``AURALSAM2_*`` variables; ``logger``: nuclio's ``context.logger``."""
        return cls(Settings.from_env(), log=logger.warn if logger is not None else None)

    def close(self) -> None:
        """Stop what the function runs besides requests (tests build many)."""

    @abc.abstractmethod
    def handle(self, body: dict) -> Any:
        """The reply payload for one request body (raise RequestError for bad input)."""


class Interactor(FunctionModel):
    """Points and/or a box on one frame -> ``{"mask": HxW}`` (stock SAM2 decoding, no audio)."""

    kind = "interactor"

    def handle(self, body: dict) -> dict:
        image = decode_image(require(body, "image"))
        height, width = image.shape[:2]
        positive = parse_points(require(body, "pos_points"), width, height, "pos_points")
        negative = parse_points(body.get("neg_points"), width, height, "neg_points")
        box = parse_box(body.get("obj_bbox"), width, height)
        if not positive and box is None:
            raise RequestError("give at least one positive point or a box (obj_bbox)")
        points = positive + negative
        labels = [1] * len(positive) + [0] * len(negative)
        with self.lock:
            session = self.engine.open_session(frames_from_array(image[None], fps=1.0), use_audio=False)
            try:
                masks = session.add_prompt(0, OBJECT_ID, points=points or None, labels=labels or None, box=box)
            finally:
                session.close()
        return {"mask": masks[OBJECT_ID].astype(np.uint8).tolist()}


class TrackerModel(FunctionModel):
    """CVAT tracker: shapes + states in, shapes + states out (see :mod:`.tracker`)."""

    kind = "tracker"

    def __init__(self, settings: Settings, engine: Engine | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        super().__init__(settings, engine, log)
        self.tracker = Tracker(self.engine, TrackStore(settings.tracker_capacity, settings.tracker_idle_s))

    def handle(self, body: dict) -> dict:
        image = decode_image(require(body, "image"))
        with self.lock:
            return self.tracker(image, body)


class StillIndexingError(FrameNotFoundError):
    """The image was not found while new videos are still being indexed (answered 503)."""


class Detector(FunctionModel):
    """Automatic annotation with sound: locate the frame in a task's upload, segment what sounds
    (with Ref-AVS weights: the sounding object each label's text names, one masklet per label).

    The index of CVAT's data volume (and of ``AURALSAM2_VIDEOS``) is kept by a background thread,
    so a start or a request never waits for a large video it does not need; an image that is not
    found waits up to ``index_wait_s`` for a pass over files added since.
    """

    kind = "detector"

    def __init__(self, settings: Settings, engine: Engine | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        super().__init__(settings, engine, log)
        label_texts = [(label, self.engine.model.validate_text(text, use_audio=True))  # a bad text fails at start-up
                       for label, text in settings.label_texts()]
        self.index = FrameIndex([settings.videos] if settings.videos else [], cache_dir=settings.index_cache or None,
                                tolerance=settings.match_tolerance, retry_s=settings.index_retry_s,
                                cvat_data=[settings.cvat_data] if settings.cvat_data else [], log=log)
        self.refresher = BackgroundRefresh(self.index, settings.index_interval_s)
        self.segmenters = [(label, Segmenter(self.engine, self.index, Prompt(text=text))) for label, text in label_texts]

    @property
    def segmenter(self) -> Segmenter:
        """The first label's segmenter."""
        return self.segmenters[0][1]

    def close(self) -> None:
        self.refresher.close()
        for _, segmenter in self.segmenters:
            segmenter.close()

    def handle(self, body: dict) -> list[dict]:
        threshold = parse_threshold(body.get("threshold"))
        image = decode_image(require(body, "image"))
        with self.lock:
            try:
                found = self._segment(image)
            except FrameNotFoundError:
                if not self.refresher.catch_up(self.settings.index_wait_s):
                    pending = list(self.index.pending)
                    names = ", ".join(path.name for path in pending[:3]) + (", ..." if len(pending) > 3 else "")
                    raise StillIndexingError(f"this image matches no indexed frame yet, and {len(pending)} new "
                                             f"video(s) are still being indexed ({names})",
                                             "try again in a minute") from None
                found = self._segment(image)
        shapes = []
        for label, segment in found:
            if segment is None or not segment.mask.any() or (threshold is not None and segment.score < threshold):
                continue
            outline = codec.to_polygons(segment.mask, tolerance=codec.POLYGON_TOLERANCE)[0]
            shapes.append({"label": label, "type": "mask", "mask": codec.to_detector_mask(segment.mask),
                           "points": outline, "confidence": f"{segment.score:.3f}"})
        return shapes

    def _segment(self, image: np.ndarray) -> list[tuple[str, Segment | None]]:
        return [(label, segmenter.segment(image)) for label, segmenter in self.segmenters]


#: status for errors that are the caller's fault; everything else is a 500
STATUS = ((RequestError, None), (PromptError, 400), (StillIndexingError, 503), (FrameNotFoundError, 500),
          (AmbiguousFrameError, 500), (AuralSAM2Error, 500))


def _reply(context, payload: Any, status: int):
    return context.Response(body=json.dumps(payload), headers={}, content_type="application/json",
                            status_code=status)


def handle(context, event):
    """nuclio handler: JSON in, JSON out; errors become ``{"error": ...}`` with a 4xx/5xx status."""
    try:
        body = parse_body(getattr(event, "body", None))
        return _reply(context, context.user_data.model.handle(body), 200)
    except Exception as err:  # the function must answer every request, whatever went wrong
        for error_type, status in STATUS:
            if isinstance(err, error_type):
                code = status if status is not None else err.status
                if code >= 500:
                    context.logger.error(f"auralsam2: {err}")
                return _reply(context, {"error": str(err)}, code)
        context.logger.error(f"auralsam2 internal error: {traceback.format_exc()}")
        return _reply(context, {"error": f"internal error ({type(err).__name__}: {err})"}, 500)


__all__ = ["Settings", "FunctionModel", "Interactor", "TrackerModel", "Detector", "StillIndexingError", "handle"]
