"""What the widget runs off the GUI thread: load the engine once, keep a session, segment, propagate.

Everything here is Qt-free: a job is a generator of `Update`s that the widget drives from a
napari worker. A job never raises: whatever fails inside it (CUDA out of memory included) ends it
with an "error" update, after the session's per-run state and cached device memory are released,
so the widget always hears how a run ended. The engine is cached for the process (a model is
loaded once, every dock shares it); each dock owns its session (`SessionSlot`), so no run ever
works on a session that another dock resets.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Hashable, Iterator

import numpy as np
import torch

from ..core import frames_from_array, load_engine, open_video
from ..core.audio import AudioTrack
from ..core.errors import AudioError, AuralSAM2Error, WeightsMissingError
from ..core.session import Engine, SegmentationSession
from ..core.video import VideoSource
from ..core.weights import DEFAULT_RELEASE
from ..core.objects import Prompts
from .labels import Masks

DEFAULT_FPS = 25.0
AUDIO_FROM_VIDEO, AUDIO_FROM_FILE, AUDIO_NONE = "video", "file", "none"
RANDOM_HINT = "to try the plugin without them, set Weights to 'random' (the masks will be meaningless)"
OOM_HINT = ("out of memory: choose a smaller model (hiera_t or hiera_s), a smaller image size, "
            "or device cpu, then run again; the frames written so far are kept")


@dataclass(frozen=True)
class EngineSpec:
    """Everything that decides which model is loaded (a change means a reload)."""

    model: str
    image_size: int
    weights: str
    checkpoint: str = ""
    sam2_checkpoint: str = ""
    device: str = "auto"
    release: str = DEFAULT_RELEASE  # which released weights ("refavs": Ref-AVS, objects named in words)
    compile: bool = False  # torch.compile the encoder and fuser (AURALSAM2_COMPILE=1 compiles regardless)


@dataclass(frozen=True)
class VideoSpec:
    """The frames and sound a session runs on; `key` identifies them for the session cache.

    Videos opened by the reader are reopened from `path` (the session gets a decoder of its own);
    any other layer's `frames` are wrapped as they are.
    """

    layer_id: Hashable
    path: str | None
    frames: Any  # (T, H, W[, C]) array-like, used when there is no path
    fps: float
    audio_mode: str
    audio_file: str = ""
    audio_source: str | None = None  # a sound file recorded in the layer's metadata

    @property
    def key(self) -> tuple:
        return (self.layer_id, self.path, self.audio_mode, self.audio_file if self.audio_mode == AUDIO_FROM_FILE else "")


@dataclass
class Job:
    """One run: which prompts go into a fresh session, from which frame, and which objects it writes.

    kind "frame" segments the prompts on `frame` only; "track" propagates every prompted object from
    `frame` in `direction`.
    """

    kind: str
    frame: int
    engine: EngineSpec
    video: VideoSpec
    prompts: Prompts = field(default_factory=dict)
    direction: str = "both"
    unguided: set[int] = field(default_factory=set)  # objects the audio must not guide
    title: str = "AuralSAM2"

    @property
    def objects(self) -> set[int]:
        """The objects this job segments (what its masks may write)."""
        frames = [self.frame] if self.kind == "frame" else list(self.prompts)
        return {object_id for t in frames for object_id in self.prompts.get(t, {})}

    @property
    def needs_audio(self) -> bool:
        return any(prompt.audio_only for by_object in self.prompts.values() for prompt in by_object.values())


@dataclass
class Update:
    """A message from the worker: a finished frame, a warning, a failure, or that the model is ready."""

    kind: str  # "engine" | "frame" | "warning" | "error"
    frame: int = -1
    masks: Masks | None = None
    done: int = 0
    total: int = 0
    message: str = ""
    random_weights: bool = False
    loaded: bool = False  # "engine": the model was loaded for this run (not found in the cache)
    error: BaseException | None = None


class _Cache:
    """The loaded engine, shared by every widget of the process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.engine_spec: EngineSpec | None = None
        self.engine: Engine | None = None

    def get_engine(self, spec: EngineSpec) -> tuple[Engine, bool]:
        """The engine for `spec` and whether it was loaded now."""
        with self.lock:
            if (self.engine is not None and spec.compile
                    and replace(spec, compile=False) == replace(self.engine_spec, compile=False)):
                self.engine.compile()  # in place: turning compile on needs no reload
                self.engine_spec = spec
            loaded = self.engine is None or spec != self.engine_spec
            if loaded:
                self.drop()
                self.engine = load_engine(
                    model=spec.model, image_size=spec.image_size, weights=spec.weights,
                    checkpoint=spec.checkpoint or None, sam2_checkpoint=spec.sam2_checkpoint or None,
                    release=spec.release, device=None if spec.device == "auto" else spec.device)
                if spec.compile:
                    self.engine.compile()
                self.engine_spec = spec
            return self.engine, loaded

    def drop(self) -> None:
        """Forget the engine (after running out of memory or a model change), freeing device memory."""
        self.engine = self.engine_spec = None
        release_device_memory()


CACHE = _Cache()


def release_device_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class SessionSlot:
    """One dock's session: reused between its runs (cached features survive), never shared."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.session: SegmentationSession | None = None

    def get(self, engine: Engine, spec: VideoSpec, use_audio: bool) -> SegmentationSession:
        key = (id(engine), spec.key, use_audio)
        if self.session is None or key != self.key:
            self.close()
            self.session = engine.open_session(open_spec(spec, use_audio), use_audio=use_audio)
            self.key = key
        return self.session

    def close(self) -> None:
        """Drop the session: its memory bank, cached features and its own decoder."""
        if self.session is not None:
            self.session.video.close()
            self.session.close()
        self.session = self.key = None


def open_spec(spec: VideoSpec, use_audio: bool = True) -> VideoSource:
    """A lazy source for the spec with the chosen sound attached (decoded only when first used)."""
    audio = None
    if use_audio and spec.audio_mode == AUDIO_FROM_FILE:
        if not spec.audio_file:
            raise AudioError("no audio file picked", "choose one next to 'Audio file', or set Audio to the video's own")
        audio = spec.audio_file
    if spec.path and Path(spec.path).is_file():
        return open_video(spec.path, audio=audio)  # audio None: the file's own track
    if use_audio and spec.audio_mode == AUDIO_FROM_VIDEO:
        audio = spec.audio_source
    return frames_from_array(spec.frames, fps=spec.fps, audio=audio)


def audio_and_times(spec: VideoSpec) -> tuple[AudioTrack | None, np.ndarray]:
    """The sound the spec points at (None for none) and the video's frame times, in seconds."""
    with open_spec(spec, use_audio=spec.audio_mode != AUDIO_NONE) as source:
        track = source.audio if spec.audio_mode != AUDIO_NONE else None
        return track, source.frame_times


def run_job(job: Job, cancel: threading.Event, slot: SessionSlot, stopped: threading.Event) -> Iterator[Update]:
    """Run one job, yielding the model state, warnings and every finished frame's masks.

    Never raises: a failure ends the job with one "error" update, after dropping the session's
    per-run state (and the engine too when memory ran out). `stopped` is set once the job is over.
    """
    try:
        yield from _run(job, cancel, slot)
    except Exception as error:  # noqa: BLE001 - every failure must reach the GUI (see module docstring)
        slot.close()
        if is_out_of_memory(error):
            CACHE.drop()
        release_device_memory()
        yield Update("error", message=describe_error(error), error=error)
    finally:
        stopped.set()


def _run(job: Job, cancel: threading.Event, slot: SessionSlot) -> Iterator[Update]:
    if job.needs_audio and job.video.audio_mode == AUDIO_NONE:
        raise AudioError("'Audio only' follows the sound, but Audio is set to none",
                         "set Audio to the video's own sound or pick an audio file")
    engine, loaded = CACHE.get_engine(job.engine)
    yield Update("engine", random_weights=engine.random_weights, loaded=loaded)
    if cancel.is_set():
        return
    use_audio = job.video.audio_mode != AUDIO_NONE
    try:
        session = slot.get(engine, job.video, use_audio)
    except AudioError as error:
        if job.needs_audio:
            raise
        yield Update("warning", message=f"{error} — segmenting from the clicks alone")
        session = slot.get(engine, job.video, use_audio=False)
    session.reset()
    for object_id in job.unguided:
        session.set_audio_guidance(object_id, False)
    if job.kind == "frame":
        masks = _add_prompts(session, {job.frame: job.prompts.get(job.frame, {})}, job.frame)
        yield Update("frame", job.frame, masks, 1, 1)
        return
    _add_prompts(session, job.prompts, job.frame)
    counts = [0, 0]

    def progress(done: int, total: int) -> None:
        counts[:] = done, total

    for t, masks in session.propagate(job.frame, job.direction, progress=progress, cancel=cancel):
        yield Update("frame", t, masks, *counts)


def _add_prompts(session: SegmentationSession, prompts: Prompts, frame: int) -> dict[int, np.ndarray]:
    """Add every prompt to the session; returns the masks of `frame` (its objects only)."""
    if not any(prompts.values()):
        where = f"on frame {frame}" if list(prompts) == [frame] else "in the prompt layers"
        raise AuralSAM2Error(f"no clicks or boxes {where}", "click on the object (or draw a box) first, or use 'Audio only'")
    masks: dict[int, np.ndarray] = {}
    for t in sorted(prompts):
        for object_id, prompt in sorted(prompts[t].items()):
            result = session.apply(prompt)
            if t == frame:
                masks.update({k: v for k, v in result.items() if k in prompts[t]})
    return masks


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def describe_error(error: BaseException) -> str:
    """One actionable line for a notification."""
    if is_out_of_memory(error):
        return f"AuralSAM2 ran {OOM_HINT}"
    if isinstance(error, WeightsMissingError):
        return f"{error}; {RANDOM_HINT}"
    if isinstance(error, AuralSAM2Error):
        return str(error)
    return (f"AuralSAM2 failed ({type(error).__name__}: {error}); the frames already written are kept "
            "(the traceback is in napari's log)")
