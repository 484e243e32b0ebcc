"""What the `auralsam2` command checks before any heavy work, and how it words errors.

Everything here is cheap and runs before the model loads (and, where it can, before the video is
decoded): output folders that must take files, prompts against the video's size and length, the
audio that must guide segmentation. `one_line` turns any error, including one a data-loading
worker re-raised with its whole traceback, into the one line the user sees.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Sequence

import torch

from .core.files import check_writable
from .core.model.auralsam2 import IMAGE_SIZE_MULTIPLE
from .core.session import Prompt

MIN_IMAGE_SIZE = 64
MAX_IMAGE_SIZE = 4096  # 16x SAM2's 1024 in pixels; larger needs more memory than any GPU has

#: a value argparse would take for an option because it starts with '-': a negative number (list)
NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d)[\d.,:eE+-]*$")
#: how torch re-raises an error of a DataLoader worker: the worker's whole traceback in the message
WORKER_ERROR = re.compile(r"Caught (\w+) (in [^.]+)\.\s+Original Traceback \(most recent call last\):(.*)", re.S)


class UsageError(Exception):
    """Wrong command-line usage (reported like an AuralSAM2Error)."""


def check_prompts_fit(prompts: Sequence[Prompt], video) -> None:
    """The session's frame and pixel checks, made before the model loads (same messages)."""
    for prompt in prompts:
        prompt.check(len(video), video.width, video.height)


def parse_image_size(text: str) -> int:
    """argparse type of --image-size: a multiple of 32 within sane bounds."""
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE or size % IMAGE_SIZE_MULTIPLE:
        raise argparse.ArgumentTypeError(f"image size must be a multiple of {IMAGE_SIZE_MULTIPLE} "
                                         f"from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, got {text!r}")
    return size


def check_device(device: str | None) -> None:
    """The device exists here (cpu, cuda, cuda:N)."""
    if device is None:
        return
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}; use cpu or cuda") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but no CUDA GPU is available here; use --device cpu")


def check_audio(video) -> None:
    """The audio can guide segmentation: there is a track with sound (a separate audio file is decoded
    now and refused if NaN/inf; the video's own track streams, and is checked as it is read)."""
    name = video.path.name if video.path else "the video"
    if video.audio is None:
        raise UsageError(f"{name} has no audio track; give an audio file (--audio FILE) "
                         "or run without audio (--no-audio)")
    if video.audio.is_silent():
        raise UsageError("the audio track is silent, so it cannot guide segmentation; "
                         "give another audio file (--audio FILE) or run without audio (--no-audio)")


def prepare_out(folder: str | Path, *inner: str) -> Path:
    """Create the output folder now and prove it (and its existing ``inner`` folders) writable, so a
    bad or read-only path fails before any model is loaded."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create output folder {folder}: {err.strerror or err}") from None
    for path in (folder, *(folder / name for name in inner if (folder / name).is_dir())):
        check_writable(path)
    return folder


def one_line(error: BaseException) -> str:
    """The error as one line; an error re-raised from a data-loading worker keeps only its own message."""
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.strerror or error}: {error.filename}"
    else:
        text = str(error) or type(error).__name__
    worker = WORKER_ERROR.search(text)
    if worker:
        name, where, trace = worker.groups()
        text = f"{trace.rsplit(name + ': ', 1)[-1].strip()} ({where})"
    return " ".join(text.split())


def attach_negative_values(argv: Sequence[str]) -> list[str]:
    """``--point -5,10,0`` -> ``--point=-5,10,0``: argparse would take the value for an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and NEGATIVE_VALUE.match(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out
