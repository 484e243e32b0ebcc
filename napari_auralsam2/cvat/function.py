"""The cvat-sdk detection function: ``cvat-cli task auto-annotate --function-module napari_auralsam2.cvat``.

**Image tasks only.** cvat-sdk 2.80 refuses a video task before this function runs
(``UnsupportedDatasetError: Chunk-based media access is only supported for tasks whose original
chunks are image sets``, seen against CVAT 2.73). For a video task use ``auralsam2 cvat annotate``
(the tracks writer: it fetches the task's own video, with its sound, from CVAT and uploads tracks)
or the nuclio detector; this function serves image tasks made from a video's frames.

cvat-sdk gives ``detect`` one frame image at a time (PIL), in task order, plus its file name.
Names do not say which video frame an image is (video tasks repeat the video's name for every
frame; image tasks carry whatever the files were called), so each image is located in the source
video given with ``-p video=str:...`` by fingerprint, with call order breaking ties, and the engine
runs on that video with its sound, keeping SAM2's memory from frame to frame: one masklet.

``-p`` parameters (cvat-cli types ``str``/``int``/``float``/``bool``):

=================  =====  ===========================================================================
video              str    source video of the task (required; its audio is used)
audio              str    separate audio file (replaces the video's own track)
model              str    SAM2 backbone: hiera_t, hiera_s, hiera_b+, hiera_l (default, the released one)
checkpoint         str    AuralSAM2 checkpoint (default: the release's file from the weights cache)
release            str    released weights: avs_v2 (default), avs_v1s, avs_v1m, or refavs (reads ``text``)
text               str    the object in words, e.g. ``the woman playing the violin`` (refavs weights)
text_model         str    folder of distilroberta-base for refavs (default: the pinned Hub copy, cached)
sam2_checkpoint    str    SAM2 checkpoint (default: the matching one from the weights cache)
weights            str    ``auto`` (default) or ``random`` (pipeline checks only: meaningless masks)
device             str    cpu, cuda, cuda:1... (default: cuda when available)
image_size         int    model input size (default 1024)
threshold          float  minimum object score (0..1, default 0.5); ``--conf-threshold`` overrides it
label              str    label name to write (default ``sounding object``; must exist in the task)
mode               str    ``audio`` (default): the sounding object, no clicks; ``prompt``: the object
                          given by ``points``/``neg_points``/``box`` on ``prompt_frame``
points, neg_points str    ``x,y;x,y`` source-video pixels (mode=prompt)
box                str    ``x0,y0,x1,y1`` (mode=prompt)
prompt_frame       int    source-video frame of the prompt (mode=prompt; earlier frames get nothing)
use_audio          bool   let the audio guide tracking (default true; false = stock SAM2)
=================  =====  ===========================================================================
"""
from __future__ import annotations

from pathlib import Path

import cvat_sdk.auto_annotation as cvataa
import cvat_sdk.models as models
import numpy as np
import PIL.Image

from ..core import masks as codec
from ..core.errors import AuralSAM2Error
from .detector import DEFAULT_LABEL, Prompt, Segmenter
from .fingerprint import DEFAULT_TOLERANCE, FrameIndex
from ..core.weights import DEFAULT_RELEASE
from .streams import model_lock, shared_engine

LABEL_ID = 0
DEFAULT_THRESHOLD = 0.5
MODES = ("audio", "prompt")


def parse_xy_list(text: str | None, what: str) -> list[tuple[float, float]]:
    """``"x,y;x,y"`` -> [(x, y), ...]."""
    if not text:
        return []
    points = []
    for item in text.split(";"):
        parts = item.split(",")
        try:
            x, y = (float(v) for v in parts)
        except ValueError:
            raise AuralSAM2Error(f"{what} {item!r} is not 'x,y'", f"write {what} as x,y;x,y") from None
        points.append((x, y))
    return points


def parse_box_text(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise AuralSAM2Error(f"box {text!r} is not 'x0,y0,x1,y1'") from None
    return x0, y0, x1, y1


class AuralSAM2Function:
    """A DetectionFunction that turns a task's frames into one audio-guided masklet."""

    def __init__(self, *, video: str, audio: str | None = None, model: str = "hiera_l",
                 checkpoint: str | None = None, sam2_checkpoint: str | None = None, weights: str = "auto",
                 device: str | None = None, image_size: int = 1024, threshold: float = DEFAULT_THRESHOLD,
                 label: str = DEFAULT_LABEL, mode: str = "audio", points: str | None = None,
                 neg_points: str | None = None, box: str | None = None, prompt_frame: int = 0,
                 use_audio: bool = True, tolerance: float = DEFAULT_TOLERANCE, release: str = DEFAULT_RELEASE,
                 text: str | None = None, text_model: str | None = None) -> None:
        if mode not in MODES:
            raise AuralSAM2Error(f"unknown mode {mode!r}", f"use one of {', '.join(MODES)}")
        if not 0 <= threshold <= 1:
            raise AuralSAM2Error(f"threshold must be between 0 and 1, got {threshold:g}")
        if not Path(video).is_file():
            raise AuralSAM2Error(f"source video {video} does not exist", "pass -p video=str:/path/to/source.mp4")
        prompt = Prompt(text=text)
        if mode == "prompt":
            positive, negative = parse_xy_list(points, "points"), parse_xy_list(neg_points, "neg_points")
            prompt = Prompt(frame=int(prompt_frame), points=positive + negative,
                            labels=[1] * len(positive) + [0] * len(negative), box=parse_box_text(box), text=text)
            if prompt.audio_only:
                raise AuralSAM2Error("mode=prompt needs points or a box", "add -p points=str:x,y or -p box=str:...")
        elif not use_audio:
            raise AuralSAM2Error("mode=audio needs the audio", "drop -p use_audio=bool:false or use mode=prompt")
        self.threshold = float(threshold)
        self._spec = cvataa.DetectionFunctionSpec(labels=[cvataa.label_spec(label, LABEL_ID, type="mask")])
        self.engine = shared_engine(model=model, image_size=image_size, weights=weights, checkpoint=checkpoint,
                                    sam2_checkpoint=sam2_checkpoint, device=device, release=release,
                                    text_model=text_model)
        prompt.text = self.engine.model.validate_text(text, use_audio)  # a bad text fails before any frame
        index = FrameIndex([video], tolerance=tolerance)
        index.refresh(strict=True)
        self.segmenter = Segmenter(self.engine, index, prompt, use_audio=use_audio, audio=audio)

    @property
    def spec(self) -> cvataa.DetectionFunctionSpec:
        return self._spec

    def detect(self, context: cvataa.DetectionFunctionContext,
               image: PIL.Image.Image) -> list[models.LabeledShapeRequest]:
        pixels = np.asarray(image.convert("RGB"))
        try:
            with model_lock(self.engine):
                found = self.segmenter.segment(pixels)
        except AuralSAM2Error as err:
            raise AuralSAM2Error(f"frame {context.frame_name}: {err}") from err
        threshold = context.conf_threshold if context.conf_threshold is not None else self.threshold
        if found is None or not found.mask.any() or found.score < threshold:
            return []
        if context.conv_mask_to_poly:
            return [cvataa.polygon(LABEL_ID, outline)
                    for outline in codec.to_polygons(found.mask, tolerance=codec.POLYGON_TOLERANCE)]
        return [cvataa.mask(LABEL_ID, codec.to_rle(found.mask))]


def create(**parameters) -> AuralSAM2Function:
    """cvat-cli's factory: ``-p NAME=TYPE:VALUE`` become keyword arguments."""
    return AuralSAM2Function(**parameters)


__all__ = ["AuralSAM2Function", "create", "parse_xy_list", "parse_box_text"]
