"""The segmentation session: the one API that the CLI, napari and CVAT drive.

An `Engine` holds a loaded AuralSAM2 (load it once, reuse it). `Engine.open_session(video)` gives a
`SegmentationSession` over a lazy `VideoSource`: objects are prompted with clicks/boxes on any
frame, or with audio alone, and propagated forward and/or backward. Frames are encoded (and fused
with their audio) in windows of `window` frames, decoded and preprocessed ahead on a background
thread while propagating; the memory/decoder step runs frame by frame on SAM2's own
video-predictor machinery, one batch for all objects whose memories line up, so memory never holds
more than a few windows of features.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .audio import FrameExamples
from .errors import AudioError, NoAudioError, PromptError
from .model.auralsam2 import AuralSAM2
from .model.aural_fuser import FuserOutput
from .model.predictor import TEXTS_KEY, UNGUIDED_KEY, WINDOWS_KEY
from .prefetch import Prefetcher

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: official clip length for AVSBench v1s/v1m (v2 uses 10): one clip = one encoder/fuser window
DEFAULT_WINDOW = 5
#: non-conditioning outputs kept behind the tracked frame: SAM2 reads 6 memories and 15 pointers back
KEEP_BEHIND = 16
CACHED_WINDOWS = 2
#: windows decoded and preprocessed ahead of the one being encoded, on a background thread
PREFETCH_WINDOWS = 2
DIRECTIONS = ("forward", "backward", "both")
#: set to 1 to torch.compile the image encoder and fuser of every engine (napari, CVAT functions)
COMPILE_ENV = "AURALSAM2_COMPILE"
#: torch.compile options: inductor's default mode compiles in well under a minute (max-autotune takes many)
COMPILE_OPTIONS: dict = {}
_COMPILED: weakref.WeakSet = weakref.WeakSet()  # models whose encoder and fuser are compiled

Masks = dict[int, np.ndarray]
Progress = Callable[[int, int], None]
Cancel = threading.Event | Callable[[], bool] | None


@dataclass
class Prompt:
    """What a host asks for one object on one frame: clicks and/or a box, or a mask; none = the audio alone.

    ``text`` names the object in words ("the woman playing the violin"; Ref-AVS weights only), with
    any of these. It belongs to the object: a later prompt without text keeps it.
    """

    frame: int
    object_id: int
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None
    text: str | None = None
    #: bool [H, W] at video resolution (e.g. a hand-corrected mask): SAM2's mask prompt
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def audio_only(self) -> bool:
        return not self.points and self.box is None and self.mask is None

    def check(self, num_frames: int, width: int, height: int) -> None:
        """The frame and pixel checks a session makes, for a host to make before the model loads."""
        check_frame(self.frame, num_frames)
        check_geometry(self.points, self.box, width, height)


def check_frame(frame_index: int, num_frames: int) -> int:
    """``frame_index`` as an int; PromptError when it is not a frame of the video."""
    if not 0 <= int(frame_index) < num_frames:
        raise PromptError(f"frame {frame_index} is outside the video (0..{num_frames - 1})")
    return int(frame_index)


def check_geometry(points: Sequence[Sequence[float]], box: Sequence[float] | None, width: int, height: int) -> None:
    """Clicks and box corners inside the ``width`` x ``height`` frame, the box not empty."""
    corners = [("point", xy) for xy in points or ()]
    if box is not None:
        x0, y0, x1, y1 = map(float, box)
        corners += [("box corner", (x0, y0)), ("box corner", (x1, y1))]
    for what, (x, y) in corners:
        if not (0 <= x <= width and 0 <= y <= height):
            raise PromptError(f"{what} ({x:g}, {y:g}) is outside the {width}x{height} frame")
    if box is not None and (x1 <= x0 or y1 <= y0):
        raise PromptError(f"box {tuple(box)} is empty: give x0 < x1 and y0 < y1")


def preprocess_frame(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 [H, W, 3] -> ImageNet-normalised float [3, S, S] (square bicubic resize, as SAM2's loader)."""
    image = Image.fromarray(np.ascontiguousarray(frame)).convert("RGB").resize((image_size, image_size),
                                                                              Image.Resampling.BICUBIC)
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (tensor - mean) / std


def preprocess_on_device(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> ImageNet-normalised float [T, 3, S, S] on the frames' device (the CUDA path).

    Resizes as PIL does in `preprocess_frame`: antialiased bicubic, width first, rounded to uint8
    levels after each pass; the two agree to one grey level (over 99% of values equal).
    """
    images = frames.permute(0, 3, 1, 2).float()
    for size in ((images.shape[-2], image_size), (image_size, image_size)):
        images = F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)
        images = images.round_().clamp_(0, 255)
    images = images / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(1, 3, 1, 1)
    return (images - mean) / std


class Engine:
    """A loaded model on a device, shared by every session of a host."""

    def __init__(self, model: AuralSAM2, device: torch.device | str | None = None, window: int = DEFAULT_WINDOW,
                 random_weights: bool = False, compile: bool | None = None) -> None:
        self.device = torch.device(device or model.device)
        self.model = model.to(self.device).eval()
        self.model.v_model.fill_hole_area = 0  # needs sam2's CUDA extension; stock default would warn
        # a prompt on an already tracked frame must survive re-propagation (stock SAM2 would
        # store it as an ordinary tracked frame and recompute it): make it a conditioning frame
        self.model.v_model.add_all_frames_to_correct_as_cond = True
        self.window = window
        self.random_weights = random_weights
        if compile if compile is not None else os.environ.get(COMPILE_ENV, "").lower() in ("1", "true", "yes", "on"):
            self.compile()

    @property
    def compiled(self) -> bool:
        return self.model in _COMPILED

    def compile(self) -> None:
        """torch.compile the image encoder and the AuralFuser (the batched per-window work), in place.

        Compiling happens on the first window (and once more for a window of another length), so
        that window takes longer; weights and state_dict keys are unchanged. Engines sharing the
        model share the compiled modules.
        """
        if not self.compiled:
            self.model.v_model.image_encoder.compile(**COMPILE_OPTIONS)
            self.model.aural_fuser.compile(**COMPILE_OPTIONS)
            _COMPILED.add(self.model)

    @property
    def image_size(self) -> int:
        return self.model.image_size

    def autocast(self):
        """bf16 autocast on CUDA (as the official inference), plain fp32 elsewhere."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    @contextmanager
    def computing(self) -> Iterator[None]:
        """inference_mode + autocast for one unit of work (never held across a generator's yield)."""
        with torch.inference_mode(), self.autocast():
            yield

    def open_session(self, video, use_audio: bool = True, audio_rule: str = "centred",
                     offload_state_to_cpu: bool = False) -> "SegmentationSession":
        return SegmentationSession(self, video, use_audio=use_audio, audio_rule=audio_rule,
                                   offload_state_to_cpu=offload_state_to_cpu)


class FrameWindows:
    """Encoder + fuser outputs for aligned windows of frames, computed on demand, a few kept.

    While a session propagates (`stream`), the next windows' frames are decoded and preprocessed,
    and their audio examples computed, on a background thread (`Prefetcher`).
    """

    def __init__(self, engine: Engine, video, examples: FrameExamples | None) -> None:
        self.engine = engine
        self.video = video
        self.examples = examples
        self.num_frames = len(video)
        self.cache: OrderedDict[int, tuple] = OrderedDict()
        self.loader: Prefetcher[int, tuple] = Prefetcher(self._load, ahead=PREFETCH_WINDOWS)

    def stream(self, frames: Iterable[int]) -> None:
        """Prepare the windows of these frames ahead, in this order, until `stop`.

        On the CPU only when torch leaves a core free: otherwise the loader competes with torch's
        threads (which spin-wait on each other) and costs more than it hides (docs/benchmarks.md).
        """
        if self.engine.device.type == "cuda" or torch.get_num_threads() < _usable_cores():
            self.loader.plan(self.bounds(t)[0] for t in frames)

    def stop(self) -> None:
        """Stop preparing ahead (waits for the window being prepared)."""
        self.loader.close()

    def _load(self, start: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A window's frames (CPU: preprocessed; CUDA: uint8 in pinned memory) and audio examples."""
        start, stop = self.bounds(start)
        if self.engine.device.type == "cuda":
            frames = torch.from_numpy(np.stack([self.video.frame(i) for i in range(start, stop)])).pin_memory()
        else:
            frames = torch.stack([preprocess_frame(self.video.frame(i), self.engine.image_size)
                                  for i in range(start, stop)])
        audio = None if self.examples is None else torch.from_numpy(self.examples[start:stop])
        return frames, audio

    def bounds(self, frame_idx: int) -> tuple[int, int]:
        """[start, stop) of the window holding frame_idx; a lone last frame joins the previous window."""
        size, n = self.engine.window, self.num_frames
        start = (frame_idx // size) * size
        if n - start == 1 and start > 0:  # the fuser needs T > 1 to mix frames and audio
            start -= size
        stop = min(start + size, n)
        if n - stop == 1:
            stop = n
        return start, stop

    def _window(self, frame_idx: int) -> tuple[int, torch.Tensor, dict, FuserOutput | None]:
        start, stop = self.bounds(frame_idx)
        if start in self.cache:
            self.cache.move_to_end(start)
            return self.cache[start]
        device = self.engine.device
        frames, audio = self.loader.get(start)
        frames = frames.to(device, non_blocking=True)
        if device.type == "cuda":
            frames = preprocess_on_device(frames, self.engine.image_size)
        if audio is not None:
            audio = audio.to(device, non_blocking=True)
        with self.engine.computing():
            backbone, prompts = self.engine.model.encode_window(frames, audio)
        self.cache[start] = (start, frames, backbone, prompts)
        while len(self.cache) > CACHED_WINDOWS:
            self.cache.popitem(last=False)
        return self.cache[start]

    def image_and_features(self, frame_idx: int) -> tuple[torch.Tensor, dict]:
        start, frames, backbone, _ = self._window(frame_idx)
        i = frame_idx - start
        features = {key: [level[i:i + 1] for level in levels] for key, levels in backbone.items()}
        return frames[i:i + 1], features

    def prompts(self, frame_idx: int) -> FuserOutput | None:
        start, _, _, prompts = self._window(frame_idx)
        return None if prompts is None else prompts.frame(frame_idx - start)


class _LazyImages:
    """`inference_state["images"]` without holding the video: preprocessed on access."""

    def __init__(self, video, image_size: int) -> None:
        self.video, self.image_size = video, image_size

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, i: int) -> torch.Tensor:
        return preprocess_frame(self.video.frame(i), self.image_size)


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cancelled(cancel: Cancel) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


class SegmentationSession:
    """Interactive, audio-aware video segmentation over one video (see docs/architecture.md)."""

    def __init__(self, engine: Engine, video, use_audio: bool = True, audio_rule: str = "centred",
                 offload_state_to_cpu: bool = False) -> None:
        self.engine = engine
        self.video = video
        self.predictor = engine.model.v_model
        self.use_audio = use_audio
        examples = None
        if use_audio:
            if video.audio is None:
                raise NoAudioError("this video has no audio track",
                                   "give an audio file (--audio FILE) or run without audio (--no-audio)")
            if video.audio.is_silent():
                raise AudioError("the audio track is silent, so it cannot guide segmentation",
                                 "give another audio file (--audio FILE) or run without audio (--no-audio)")
            examples = FrameExamples(video.audio, video.frame_times, rule=audio_rule)
        self.num_frames = len(video)
        self.height, self.width = int(video.shape[1]), int(video.shape[2])
        self.state = self._new_state(examples, offload_state_to_cpu)

    def _new_state(self, examples: FrameExamples | None, offload: bool) -> dict:
        device = self.engine.device
        return {
            "images": _LazyImages(self.video, self.engine.image_size),
            "num_frames": self.num_frames,
            "offload_video_to_cpu": True,
            "offload_state_to_cpu": offload,
            "video_height": self.height,
            "video_width": self.width,
            "device": device,
            "storage_device": torch.device("cpu") if offload else device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
            WINDOWS_KEY: FrameWindows(self.engine, self.video, examples),
            TEXTS_KEY: {},
        }

    @property
    def object_ids(self) -> list[int]:
        return list(self.state["obj_ids"])

    # -- prompts ---------------------------------------------------------------------------
    def _check_frame(self, frame_index: int) -> int:
        return check_frame(frame_index, self.num_frames)

    def _masks(self, obj_ids: Sequence[int], video_res_logits: torch.Tensor) -> Masks:
        binary = (video_res_logits > 0).squeeze(1).cpu().numpy()
        return {int(obj_id): binary[i] for i, obj_id in enumerate(obj_ids)}

    def _set_text(self, object_id: int, text: str | None) -> None:
        """Check and keep an object's text prompt (None keeps the text it has; see `Prompt`)."""
        texts = self.state[TEXTS_KEY]
        checked = self.engine.model.validate_text(texts.get(int(object_id)) if text is None else text,
                                                  self.audio_guidance(object_id))
        if checked is not None:
            texts[int(object_id)] = checked

    def add_prompt(self, frame_index: int, object_id: int, points: Sequence[Sequence[float]] | None = None,
                   labels: Sequence[int] | None = None,
                   box: Sequence[float] | None = None, text: str | None = None) -> Masks:
        """Clicks (label 1 positive, 0 negative) and/or a box (x0, y0, x1, y1) for one object on one frame."""
        frame_index = self._check_frame(frame_index)
        if not points and box is None:
            raise PromptError("a prompt needs at least one point or a box")
        if points:
            labels = [1] * len(points) if labels is None else list(labels)
            if len(labels) != len(points) or any(label not in (0, 1) for label in labels):
                raise PromptError("give one label per point: 1 (positive) or 0 (negative)")
        check_geometry(points, box, self.width, self.height)
        self._set_text(object_id, text)
        with self.engine.computing():
            _, obj_ids, logits = self.predictor.add_new_points_or_box(
                self.state, frame_index, int(object_id),
                points=np.asarray(points, dtype=np.float32) if points else None,
                labels=np.asarray(labels, dtype=np.int32) if points else None,
                box=np.asarray(box, dtype=np.float32) if box is not None else None)
        return self._masks(obj_ids, logits)

    def add_audio_prompt(self, frame_index: int, object_id: int, text: str | None = None) -> Masks:
        """Start (or restart) an object on a frame from the audio alone: the sounding object
        (with Ref-AVS weights: the sounding object that `text` refers to)."""
        if not self.audio_guidance(object_id):
            raise PromptError(f"an audio-only prompt needs the audio: open the session with use_audio=True "
                              f"and keep audio guidance on for object {object_id}")
        frame_index = self._check_frame(frame_index)
        self._set_text(object_id, text)
        p, state = self.predictor, self.state
        with self.engine.computing():
            obj_idx = p._obj_id_to_idx(state, int(object_id))
            state["point_inputs_per_obj"][obj_idx].pop(frame_index, None)
            state["mask_inputs_per_obj"][obj_idx].pop(frame_index, None)
            tracked = state["frames_tracked_per_obj"][obj_idx]
            is_init = frame_index not in tracked
            reverse = False if is_init else tracked[frame_index]["reverse"]
            is_cond = is_init or p.add_all_frames_to_correct_as_cond
            key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
            out, _ = p._run_single_frame_inference(
                inference_state=state, output_dict=state["output_dict_per_obj"][obj_idx], frame_idx=frame_index,
                batch_size=1, is_init_cond_frame=is_init, point_inputs=None, mask_inputs=None, reverse=reverse,
                run_mem_encoder=False)
            state["temp_output_dict_per_obj"][obj_idx][key][frame_index] = out
            merged = p._consolidate_temp_output_across_obj(state, frame_index, is_cond=is_cond,
                                                            consolidate_at_video_res=True)
            _, logits = p._get_orig_video_res_output(state, merged["pred_masks_video_res"])
        return self._masks(state["obj_ids"], logits)

    def add_mask(self, frame_index: int, object_id: int, mask: np.ndarray, text: str | None = None) -> Masks:
        """A mask prompt (SAM2's `add_new_mask`): bool/nonzero [H, W] at video resolution, e.g. a corrected mask.

        It replaces the object's clicks on that frame and becomes a conditioning frame; the audio
        keeps guiding the object (its pointer here and every tracked frame) unless turned off with
        `set_audio_guidance` (with Ref-AVS weights, the audio and the object's `text`). An empty
        mask says the object is absent on that frame.
        """
        frame_index = self._check_frame(frame_index)
        mask = np.asarray(mask)
        if mask.shape != (self.height, self.width):
            raise PromptError(f"the mask of object {object_id} on frame {frame_index} is "
                              f"{'x'.join(map(str, mask.shape[::-1]))}, the video is {self.width}x{self.height}")
        self._set_text(object_id, text)
        with self.engine.computing():
            _, obj_ids, logits = self.predictor.add_new_mask(self.state, frame_index, int(object_id),
                                                             torch.from_numpy(mask != 0))
        return self._masks(obj_ids, logits)

    def set_audio_guidance(self, object_id: int, enabled: bool) -> None:
        """Audio prompts on (default) or off for one object; off tracks it as stock SAM2 from its prompts."""
        unguided = self.state.setdefault(UNGUIDED_KEY, set())
        if enabled:
            unguided.discard(int(object_id))
        else:
            unguided.add(int(object_id))

    def audio_guidance(self, object_id: int) -> bool:
        """Whether the audio guides this object (session audio on and not turned off for it)."""
        return self.use_audio and int(object_id) not in self.state.get(UNGUIDED_KEY, ())

    def apply(self, prompt: Prompt) -> Masks:
        """Add a host's `Prompt`: a mask via `add_mask`, clicks/box via `add_prompt`, none via `add_audio_prompt`."""
        if prompt.mask is not None:
            if prompt.points or prompt.box is not None:
                raise PromptError(f"object {prompt.object_id} on frame {prompt.frame}: give a mask or "
                                  "clicks/a box, not both (a mask prompt replaces the clicks)")
            return self.add_mask(prompt.frame, prompt.object_id, prompt.mask, text=prompt.text)
        if prompt.audio_only:
            return self.add_audio_prompt(prompt.frame, prompt.object_id, text=prompt.text)
        return self.add_prompt(prompt.frame, prompt.object_id, points=prompt.points or None,
                               labels=prompt.labels or None, box=prompt.box, text=prompt.text)

    def clear_prompts(self, frame_index: int, object_id: int | None = None) -> None:
        """Forget the prompts on a frame (for one object, or all)."""
        frame_index = self._check_frame(frame_index)
        ids = self.object_ids if object_id is None else [int(object_id)]
        with torch.inference_mode():
            for obj_id in ids:
                if obj_id in self.state["obj_id_to_idx"]:
                    self.predictor.clear_all_prompts_in_frame(self.state, frame_index, obj_id, need_output=False)

    def remove_object(self, object_id: int) -> None:
        with torch.inference_mode():
            self.predictor.remove_object(self.state, int(object_id), strict=False, need_output=False)
        self.state[TEXTS_KEY].pop(int(object_id), None)
        self.state.get(UNGUIDED_KEY, set()).discard(int(object_id))

    def reset(self) -> None:
        """Drop every object and prompt (cached features are kept)."""
        with torch.inference_mode():
            self.predictor.reset_state(self.state)
        self.state[TEXTS_KEY].clear()
        self.state.pop(UNGUIDED_KEY, None)

    # -- propagation -----------------------------------------------------------------------
    def _cond_frames(self) -> list[int]:
        return sorted({t for out in self.state["output_dict_per_obj"].values() for t in out["cond_frame_outputs"]}
                      | {t for out in self.state["temp_output_dict_per_obj"].values()
                         for t in out["cond_frame_outputs"]})

    def propagate(self, start_frame: int | None = None, direction: str = "both", progress: Progress | None = None,
                  cancel: Cancel = None) -> Iterator[tuple[int, Masks]]:
        """Track every prompted object; yields (frame_index, {object_id: mask}) as frames are done."""
        if direction not in DIRECTIONS:
            raise PromptError(f"direction must be one of {', '.join(DIRECTIONS)}")
        if not self.state["obj_ids"]:
            raise PromptError("nothing to propagate: add a prompt (clicks, box or audio) first")
        cond = self._cond_frames()
        start = self._check_frame(start_frame) if start_frame is not None else cond[0]
        passes = []
        if direction in ("forward", "both"):
            passes.append((False, range(start, self.num_frames)))
        if direction in ("backward", "both"):
            first = start - 1 if direction == "both" else start
            passes.append((True, range(first, -1, -1)))
        total = sum(len(frames) for _, frames in passes)
        done = 0
        with self.engine.computing():
            self.predictor.propagate_in_video_preflight(self.state)
        windows = self.state[WINDOWS_KEY]
        windows.stream(t for _, frames in passes for t in frames)
        try:
            for reverse, frames in passes:
                for t in frames:
                    if _cancelled(cancel):
                        return
                    with self.engine.computing():  # per frame: the caller may resume us from another thread
                        masks = self._track_frame(t, reverse)
                    self._evict(t, reverse, start)
                    done += 1
                    if progress is not None:
                        progress(done, total)
                    yield t, masks
        finally:  # done, cancelled, failed or abandoned: stop reading ahead
            windows.stop()

    def _track_frame(self, frame_idx: int, reverse: bool) -> Masks:
        """One frame for every object; objects whose memories and fuser prompts line up run as one batch."""
        p, state = self.predictor, self.state
        count = p._get_obj_num(state)
        logits: list[torch.Tensor | None] = [None] * count
        batches: dict[tuple, list[int]] = {}
        for obj_idx in range(count):
            outputs = state["output_dict_per_obj"][obj_idx]
            if frame_idx in outputs["cond_frame_outputs"]:
                logits[obj_idx] = outputs["cond_frame_outputs"][frame_idx]["pred_masks"].to(state["device"])
            else:
                batches.setdefault(p.batch_key(state, obj_idx, frame_idx), []).append(obj_idx)
        for obj_idxs in batches.values():
            for obj_idx, (out, pred) in zip(obj_idxs, p.track_objects(state, obj_idxs, frame_idx, reverse)):
                state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"][frame_idx] = out
                logits[obj_idx] = pred
        for obj_idx in range(count):
            state["frames_tracked_per_obj"][obj_idx][frame_idx] = {"reverse": reverse}
        _, video_res = p._get_orig_video_res_output(state, torch.cat(logits, dim=0))
        return self._masks(state["obj_ids"], video_res)

    def _evict(self, frame_idx: int, reverse: bool, start: int) -> None:
        """Drop outputs that no later frame of this pass can read (memory stays flat on long videos)."""
        old = frame_idx + KEEP_BEHIND if reverse else frame_idx - KEEP_BEHIND
        if abs(old - start) <= KEEP_BEHIND:
            return  # the opposite pass starts here and reads these, as stock SAM2 does
        for outputs in self.state["output_dict_per_obj"].values():
            outputs["non_cond_frame_outputs"].pop(old, None)

    def close(self) -> None:
        self.state = None


__all__ = ["Engine", "SegmentationSession", "Prompt", "FrameWindows", "preprocess_frame", "preprocess_on_device",
           "DEFAULT_WINDOW"]
