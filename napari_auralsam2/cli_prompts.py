"""How the `auralsam2` command line gives prompts: --point, --box, --mask and --text become core `Prompt`s.

The argparse types refuse what cannot work while parsing (one line each); `group_prompts` merges the
clicks and box of one object on one frame into one prompt.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from .cli_checks import UsageError
from .core.session import Prompt
from .core.weights import release_variant

DEFAULT_OBJECT = 1
MAX_OBJECTS = 256  # objects of one run (each is tracked separately)
MAX_OBJECT_ID = 2**32 - 1  # what masks.npz's uint32 labels hold


def _numbers(text: str, what: str, lengths: tuple[int, ...]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in lengths or not all(np.isfinite(values)):
        counts = " or ".join(map(str, lengths))
        raise argparse.ArgumentTypeError(f"{what} {text!r} is not {counts} comma-separated numbers")
    return values


def _whole(value: float, what: str, minimum: int, maximum: int | None = None) -> int:
    if value != int(value) or value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise argparse.ArgumentTypeError(f"{what} must be a whole number {bounds}, got {value:g}")
    return int(value)


def whole_number(what: str, minimum: int = 0) -> Callable[[str], int]:
    """An argparse type: a whole number >= minimum (errors name `what`)."""
    return lambda text: _whole(_numbers(text, what, (1,))[0], what, minimum)


parse_frame = whole_number("frame")  # --audio-frame


def parse_point(text: str) -> tuple[float, float, int, int, int]:
    """'x,y,frame[,label[,object]]' -> (x, y, frame, label, object)."""
    x, y, frame, *rest = _numbers(text, "point", (3, 4, 5))
    label = _whole(rest[0], "point label", 0) if rest else 1
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"point label must be 1 (positive) or 0 (negative), got {label}")
    obj = _whole(rest[1], "object id", 1, MAX_OBJECT_ID) if len(rest) > 1 else DEFAULT_OBJECT
    return x, y, _whole(frame, "frame", 0), label, obj


def parse_box(text: str) -> tuple[float, float, float, float, int, int]:
    """'x0,y0,x1,y1,frame[,object]' -> (x0, y0, x1, y1, frame, object)."""
    x0, y0, x1, y1, frame, *rest = _numbers(text, "box", (5, 6))
    obj = _whole(rest[0], "object id", 1, MAX_OBJECT_ID) if rest else DEFAULT_OBJECT
    return x0, y0, x1, y1, _whole(frame, "frame", 0), obj


def read_mask_png(path: str | Path) -> np.ndarray:
    """A mask PNG -> bool [H, W]: nonzero colour (or palette index) = the object, alpha ignored."""
    try:
        with Image.open(path) as image:
            image.load()
            bands, array = image.getbands(), np.asarray(image)
    except (OSError, ValueError) as err:
        raise argparse.ArgumentTypeError(f"cannot read mask {path}: {err}") from err
    if array.ndim == 3:
        array = array[..., [i for i, band in enumerate(bands) if band != "A"]]
        return (array != 0).any(axis=-1)
    return array != 0


def parse_mask(text: str) -> tuple[int, int, Path, np.ndarray]:
    """'frame,object,FILE.png' -> (frame, object, path, bool mask)."""
    parts = text.split(",", 2)
    if len(parts) != 3 or not parts[2]:
        raise argparse.ArgumentTypeError(f"mask {text!r} is not frame,object,FILE.png")
    frame, obj = _numbers(",".join(parts[:2]), "mask frame,object", (2,))
    path = Path(parts[2])
    return _whole(frame, "frame", 0), _whole(obj, "object id", 1), path, read_mask_png(path)


def group_prompts(points: Sequence[tuple] = (), boxes: Sequence[tuple] = (),
                  masks: Sequence[tuple] = ()) -> list[Prompt]:
    """One Prompt per (frame, object), in the order they first appear (points, boxes, then masks)."""
    prompts: dict[tuple[int, int], Prompt] = {}
    for x, y, frame, label, obj in points:
        prompt = prompts.setdefault((frame, obj), Prompt(frame, obj))
        prompt.points.append((x, y))
        prompt.labels.append(label)
    for x0, y0, x1, y1, frame, obj in boxes:
        prompt = prompts.setdefault((frame, obj), Prompt(frame, obj))
        if prompt.box is not None:
            raise UsageError(f"object {obj} has two boxes on frame {frame}; give one box per object and frame")
        prompt.box = (x0, y0, x1, y1)
    for frame, obj, path, mask in masks:
        if (frame, obj) in prompts:
            raise UsageError(f"object {obj} on frame {frame} has clicks/a box or another mask as well as {path}; "
                             "give one mask, or clicks/a box")
        prompts[(frame, obj)] = Prompt(frame, obj, mask=mask)
    objects = {obj for _, obj in prompts}
    if len(objects) > MAX_OBJECTS:
        raise UsageError(f"{len(objects)} objects in one run is more than {MAX_OBJECTS}; split them over several runs")
    return list(prompts.values())


def parse_text(text: str) -> tuple[int, str]:
    """'[object:]words' -> (object, words); the object id defaults to 1."""
    head, sep, rest = text.partition(":")
    if sep and head.strip().isdigit():
        obj, text = _whole(float(head), "object id", 1), rest
    else:
        obj = DEFAULT_OBJECT
    if not text.strip():
        raise argparse.ArgumentTypeError("--text is empty: describe the object, e.g. 'the man playing the guitar'")
    return obj, text.strip()


def add_texts(prompts: list[Prompt], texts: Sequence[tuple[int, str]], audio_frame: int = 0) -> list[Prompt]:
    """Give each object its text; an object with a text and no clicks starts from the audio on `audio_frame`."""
    named: dict[int, str] = {}
    for obj, text in texts:
        if named.setdefault(obj, text) != text:
            raise UsageError(f"object {obj} has two texts; give one --text per object")
    for prompt in prompts:
        prompt.text = named.get(prompt.object_id)
    prompted = {p.object_id for p in prompts}
    return prompts + [Prompt(audio_frame, obj, text=text) for obj, text in named.items() if obj not in prompted]


def check_text_options(args: argparse.Namespace, prompts: Sequence[Prompt]) -> None:
    """Text prompts need the audio and Ref-AVS weights; Ref-AVS weights segment what a text names,
    so with the audio every object needs one (`prompts`: after `add_texts`)."""
    refavs = release_variant(args.release) == "refavs"
    if args.text and args.no_audio:
        raise UsageError("--text needs the audio (the Ref-AVS model reads sound and text together); drop --no-audio")
    if args.checkpoint is None and args.text and not refavs:
        raise UsageError("--text needs the Ref-AVS weights: add --release refavs")
    if args.checkpoint is None and refavs and not args.no_audio:
        if not args.text:
            raise UsageError("the Ref-AVS weights segment the object a text names: "
                             "add --text 'the man playing the guitar'")
        unnamed = sorted({p.object_id for p in prompts if not p.text})
        if unnamed:
            raise UsageError(f"object {unnamed[0]} has no text, and the Ref-AVS weights segment the object a text "
                             f"names: add --text '{unnamed[0]}:the man playing the guitar'")


def check_mask_sizes(masks: Sequence[tuple], video) -> None:
    """Every --mask PNG must have the video's size (masks are in video pixels)."""
    for _, _, path, mask in masks:
        if mask.shape != (video.height, video.width):
            raise UsageError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]}, the video is "
                             f"{video.width}x{video.height}: draw it on a frame of this video")
