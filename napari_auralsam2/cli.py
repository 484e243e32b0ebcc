"""The `auralsam2` command: segment a video from its sound and/or clicks, or run the bundled demo.

Every host-facing step is a core call (`load_engine`, `open_video`, the session, `core.export`);
this module only parses arguments and reports. Bad input ends with one ``auralsam2: error: ...``
line and exit code 2 (130 on Ctrl-C, after writing the masks of the frames done); ``--debug``
shows the traceback instead. Other parts of the package add subcommands (see OPTIONAL_COMMANDS).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .core import load_engine, open_video
from .core.errors import AuralSAM2Error, WeightsMissingError
from .core.export import MASKS_FOLDER, MaskStore, write_contact_sheet, write_masks, write_overlay
from .core.model.auralsam2 import IMAGE_SIZE_MULTIPLE, SAM2_CONFIGS
from .core.sample import make_sample_clip
from .core.session import Prompt
from .core.video import WRITE_CODECS
from .core.weights import AURALSAM2_WEIGHTS, DEFAULT_RELEASE, HOME_ENV, RANDOM_WEIGHTS_BANNER

PROG = "auralsam2"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
DEBUG_FLAG = "--debug"
DEFAULT_MODEL = "hiera_l"
DEFAULT_IMAGE_SIZE = 1024
MIN_IMAGE_SIZE = 64
DEFAULT_OBJECT = 1
WARNING_FILE = "WARNING.txt"
OVERLAY_NAME = "overlay.mp4"
CONTACT_SHEET_NAME = "contact_sheet.png"
DEMO_CLIP_NAME = "sample.mp4"
DEMO_OUTPUTS = {DEMO_CLIP_NAME, OVERLAY_NAME, CONTACT_SHEET_NAME, MASKS_FOLDER, WARNING_FILE}
DEMO_SECONDS, DEMO_FPS, DEMO_SIZE, DEMO_SEED = 4.0, 8, (320, 240), 0
#: offline fallback of `demo --weights auto`, and the model of `demo --weights random`
DEMO_RANDOM_MODEL, DEMO_RANDOM_IMAGE_SIZE = "hiera_t", 256
#: optional subcommands: (module with add_parser(subparsers), command to stub when its extra is missing, extra)
OPTIONAL_COMMANDS = (("napari_auralsam2.training.cli", None, None), ("napari_auralsam2.cvat.cli", "cvat", "cvat"))
OPTIONAL_DEPS = ("cvat_sdk", "cvat_cli", "nuclio_sdk")


class UsageError(Exception):
    """Wrong command-line usage (reported like an AuralSAM2Error)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (raised, so `main` reports them and tests can call it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


EXAMPLES = """examples:
  auralsam2 segment talk.mp4 --overlay preview.mp4     # audio only: object 1 = the sounding object
  auralsam2 segment talk.mp4 --point 320,200,0 --point 100,80,0,0 --box 10,10,90,120,5,2
  auralsam2 segment clip.mp4 --no-audio --point 50,40,12 --format coco-rle --out masks/

prompts are in video pixels: --point x,y,frame[,label[,object]] (label 1 positive, 0 negative;
object id 1 unless given) and --box x0,y0,x1,y1,frame[,object]; the points and box of one object
on one frame form one prompt. Without prompts, object 1 starts from the audio alone on
--audio-frame (default 0); with prompts and audio, the clicks refine the audio-prompted decoder.
"""


# -- prompts ------------------------------------------------------------------------------------
def _numbers(text: str, what: str, lengths: tuple[int, ...]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in lengths or not all(np.isfinite(values)):
        counts = " or ".join(map(str, lengths))
        raise argparse.ArgumentTypeError(f"{what} {text!r} is not {counts} comma-separated numbers")
    return values


def _whole(value: float, what: str, minimum: int) -> int:
    if value != int(value) or value < minimum:
        raise argparse.ArgumentTypeError(f"{what} must be a whole number >= {minimum}, got {value:g}")
    return int(value)


def parse_point(text: str) -> tuple[float, float, int, int, int]:
    """'x,y,frame[,label[,object]]' -> (x, y, frame, label, object)."""
    x, y, frame, *rest = _numbers(text, "point", (3, 4, 5))
    label = _whole(rest[0], "point label", 0) if rest else 1
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"point label must be 1 (positive) or 0 (negative), got {label}")
    obj = _whole(rest[1], "object id", 1) if len(rest) > 1 else DEFAULT_OBJECT
    return x, y, _whole(frame, "frame", 0), label, obj


def parse_box(text: str) -> tuple[float, float, float, float, int, int]:
    """'x0,y0,x1,y1,frame[,object]' -> (x0, y0, x1, y1, frame, object)."""
    x0, y0, x1, y1, frame, *rest = _numbers(text, "box", (5, 6))
    return x0, y0, x1, y1, _whole(frame, "frame", 0), _whole(rest[0], "object id", 1) if rest else DEFAULT_OBJECT


def group_prompts(points: Sequence[tuple] = (), boxes: Sequence[tuple] = ()) -> list[Prompt]:
    """One Prompt per (frame, object), in the order they first appear (points before boxes)."""
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
    return list(prompts.values())


def parse_image_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size < MIN_IMAGE_SIZE or size % IMAGE_SIZE_MULTIPLE:
        raise argparse.ArgumentTypeError(f"image size must be a multiple of {IMAGE_SIZE_MULTIPLE} "
                                         f"and at least {MIN_IMAGE_SIZE}, got {text!r}")
    return size


# -- shared steps -------------------------------------------------------------------------------
def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _check_device(device: str | None) -> None:
    if device is None:
        return
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}; use cpu or cuda") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but no CUDA GPU is available here; use --device cpu")


def prepare_out(folder: str | Path) -> Path:
    """Create the output folder now, so a bad path fails before any model is loaded."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create output folder {folder}: {err.strerror or err}") from None
    return folder


def check_overlay(overlay: str | None, video: str | None) -> Path | None:
    if overlay is None:
        return None
    path = Path(overlay).expanduser()
    if path.suffix.lower() not in WRITE_CODECS:
        raise UsageError(f"--overlay {overlay}: use a file ending in one of {', '.join(WRITE_CODECS)}")
    if video is not None and path.resolve() == Path(video).expanduser().resolve():
        raise UsageError("--overlay would overwrite the input video; give another file name")
    prepare_out(path.parent)
    return path


def announce_weights(engine, out: Path) -> str | None:
    """Say loudly (stderr and WARNING.txt in the output folder) when the weights are random;
    with real weights, remove the WARNING.txt an earlier random run left there."""
    warning = out / WARNING_FILE
    if not engine.random_weights:
        if warning.is_file() and warning.read_text().startswith(RANDOM_WEIGHTS_BANNER):
            warning.unlink()
        return None
    rule = "*" * len(RANDOM_WEIGHTS_BANNER)
    print(f"{rule}\n{RANDOM_WEIGHTS_BANNER}\n{rule}", file=sys.stderr, flush=True)
    warning.write_text(
        f"{RANDOM_WEIGHTS_BANNER}\n\nThese results come from randomly initialised weights. For real masks, put the\n"
        f"released weights into ${HOME_ENV} (default ~/.cache/auralsam2) or pass --checkpoint/--sam2-checkpoint;\n"
        "see README.md, section 'Weights'.\n")
    return RANDOM_WEIGHTS_BANNER


def segment_video(engine, video, prompts: Sequence[Prompt], use_audio: bool, audio_frame: int = 0,
                  direction: str = "both") -> tuple[MaskStore, bool]:
    """Prompt, propagate with a progress bar, and collect the masks; returns (store, interrupted).

    Ctrl-C stops between frames and keeps the frames done so far.
    """
    session = engine.open_session(video, use_audio=use_audio)
    for prompt in prompts or [Prompt(audio_frame, DEFAULT_OBJECT)]:  # none: the audio alone
        session.apply(prompt)
    store = MaskStore(len(video), video.height, video.width)
    with tqdm(desc="segmenting", unit="frame", file=sys.stderr, dynamic_ncols=True) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            for frame_index, masks in session.propagate(direction=direction, progress=progress):
                store.add(frame_index, masks)
        except KeyboardInterrupt:
            return store, True
    return store, False


def overlay_audio(video):
    """The audio to copy into previews (with --no-audio: the file's track if it has a readable one)."""
    try:
        return video.audio
    except AuralSAM2Error as err:
        _say(f"note: the preview will be silent ({err})")
        return None


def write_results(store, video, out: Path, fmt: str, info: dict, overlay: Path | None = None,
                  contact_sheet: Path | None = None, audio=None, banner: str | None = None) -> list[Path]:
    """Masks in `fmt` (always), then the optional overlay video and contact sheet."""
    written = [write_masks(store, out, fmt, video, info)]
    if overlay is not None:
        written.append(write_overlay(overlay, video, store, audio, banner))
    if contact_sheet is not None:
        written.append(write_contact_sheet(contact_sheet, video, store, audio, banner))
    return written


def _report(store, written: list[Path], banner: str | None, interrupted: bool) -> int:
    """Summary on stdout; an interrupted run re-raises Ctrl-C once its partial masks are written."""
    objects = ", ".join(map(str, store.object_ids)) or "none"
    print(f"segmented {len(store)} of {store.num_frames} frames (objects: {objects})")
    for path in written:
        print(f"wrote {path}")
    if banner:
        print(banner, file=sys.stderr)
    if interrupted:
        raise KeyboardInterrupt
    return 0


# -- commands -----------------------------------------------------------------------------------
def cmd_segment(args: argparse.Namespace) -> int:
    prompts = group_prompts(args.point or (), args.box or ())
    use_audio = not args.no_audio
    if not prompts and not use_audio:
        raise UsageError("with --no-audio, give at least one --point or --box")
    if prompts and args.audio_frame is not None:
        raise UsageError("--audio-frame is for audio-only runs; with --point/--box the prompted frames are used")
    if args.weights == "random" and (args.checkpoint or args.sam2_checkpoint):
        raise UsageError("--checkpoint/--sam2-checkpoint need --weights auto (the default), not random")
    _check_device(args.device)
    overlay = check_overlay(args.overlay, args.video)
    video = open_video(args.video, audio=args.audio)
    try:
        out = prepare_out(args.out or f"{Path(args.video).stem}_auralsam2")
        engine = load_engine(model=args.model, image_size=args.image_size, weights=args.weights,
                             checkpoint=args.checkpoint, sam2_checkpoint=args.sam2_checkpoint,
                             release=args.release, device=args.device)
        if args.compile:
            engine.compile()
        banner = announce_weights(engine, out)
        store, interrupted = segment_video(engine, video, prompts, use_audio, args.audio_frame or 0, args.direction)
        info = {"model": args.model, "image_size": engine.image_size, "audio": use_audio,
                "random_weights": engine.random_weights}
        if interrupted:
            overlay = None
        audio = overlay_audio(video) if overlay is not None else None
        written = write_results(store, video, out, args.format, info, overlay, None, audio, banner)
    finally:
        video.close()
    return _report(store, written, banner, interrupted)


def demo_engine(weights: str, device: str | None):
    """Released weights when present (or downloadable), else random weights (said loudly)."""
    if weights == "auto":
        try:
            engine = load_engine(model=DEFAULT_MODEL, image_size=DEFAULT_IMAGE_SIZE, weights="auto", device=device)
        except WeightsMissingError as err:
            _say(f"note: {err}")
            _say(f"falling back to random weights ({DEMO_RANDOM_MODEL} at {DEMO_RANDOM_IMAGE_SIZE}) "
                 "so the demo still runs")
        else:
            if engine.device.type == "cpu":
                _say(f"running {DEFAULT_MODEL} at {DEFAULT_IMAGE_SIZE} on the CPU: expect a few seconds per frame")
            return engine
    return load_engine(model=DEMO_RANDOM_MODEL, image_size=DEMO_RANDOM_IMAGE_SIZE, weights="random", device=device)


def sounding_iou(store, truth: np.ndarray) -> float:
    """Mean IoU of object 1 against the sample's sounding object, over the segmented frames."""
    scores = []
    for t in store.frames:
        mask = store.masks(t).get(DEFAULT_OBJECT, np.zeros_like(truth[t]))
        union = np.logical_or(mask, truth[t]).sum()
        scores.append(np.logical_and(mask, truth[t]).sum() / union if union else 1.0)
    return float(np.mean(scores)) if scores else 0.0


def demo_folder(folder: str | Path) -> Path:
    """The demo's output folder: new, empty, or an earlier demo's (never someone's other files)."""
    folder = Path(folder).expanduser()
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in DEMO_OUTPUTS)
        if foreign:
            raise UsageError(f"{folder} holds files the demo did not write ({', '.join(foreign[:3])}); "
                             "give a new or empty --out folder")
    return prepare_out(folder)


def cmd_demo(args: argparse.Namespace) -> int:
    _check_device(args.device)
    out = demo_folder(args.out)
    engine = demo_engine(args.weights, args.device)
    banner = announce_weights(engine, out)
    info = make_sample_clip(out / DEMO_CLIP_NAME, DEMO_SECONDS, DEMO_FPS, DEMO_SIZE, DEMO_SEED)
    _say(f"sample clip: {info.path} ({info.n_frames} frames, {info.size[0]}x{info.size[1]}, a disc and a square "
         "taking turns to sound); segmenting the sounding object from the audio alone")
    video = open_video(info.path)
    try:
        store, interrupted = segment_video(engine, video, [], use_audio=True, audio_frame=0, direction="forward")
        meta = {"model": DEFAULT_MODEL if not engine.random_weights else DEMO_RANDOM_MODEL,
                "image_size": engine.image_size, "audio": True, "random_weights": engine.random_weights}
        extras = (None, None) if interrupted else (out / OVERLAY_NAME, out / CONTACT_SHEET_NAME)
        written = write_results(store, video, out, "png", meta, *extras, video.audio, banner)
    finally:
        video.close()
    note = " (meaningless with random weights)" if banner else ""
    print(f"mean IoU with the sounding object: {sounding_iou(store, info.sounding_masks):.3f}{note}")
    return _report(store, written, banner, interrupted)


# -- parser -------------------------------------------------------------------------------------
def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and weights")
    group.add_argument("--model", choices=list(SAM2_CONFIGS), default=DEFAULT_MODEL,
                       help="SAM2 size (released AuralSAM2 weights are hiera_l)")
    group.add_argument("--image-size", type=parse_image_size, default=DEFAULT_IMAGE_SIZE, metavar="N",
                       help=f"model input size, a multiple of {IMAGE_SIZE_MULTIPLE} (default {DEFAULT_IMAGE_SIZE})")
    group.add_argument("--weights", choices=("auto", "random"), default="auto",
                       help="auto: --checkpoint or the released files (cache, else download); random: no weights")
    group.add_argument("--checkpoint", metavar="P", help="AuralSAM2 checkpoint (full model, or fuser-only)")
    group.add_argument("--sam2-checkpoint", metavar="P", help="stock SAM2 checkpoint (with a fuser-only file)")
    group.add_argument("--release", choices=list(AURALSAM2_WEIGHTS), default=DEFAULT_RELEASE,
                       help="which released AuralSAM2 weights --weights auto uses")
    group.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the image encoder and fuser: faster on a GPU once the first window "
                            "has compiled (also: AURALSAM2_COMPILE=1)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="AuralSAM2: segment the sounding object of a video (and more).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show tracebacks (allowed anywhere on the line)")
    parser.set_defaults(func=None)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")

    seg = subparsers.add_parser("segment", help="segment a video from its audio and/or clicks",
                                description="Segment objects through a video; see 'auralsam2 --help'.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    seg.add_argument("video", help="video file (mp4, mov, mkv, webm, avi)")
    sound = seg.add_mutually_exclusive_group()
    sound.add_argument("--audio", metavar="FILE", help="audio file to use instead of the video's own track")
    sound.add_argument("--no-audio", action="store_true", help="ignore audio: plain SAM2 from clicks/boxes")
    seg.add_argument("--point", action="append", type=parse_point, metavar="x,y,frame[,label[,obj]]",
                     help="a click (label 1 positive, 0 negative; object id default 1); repeatable")
    seg.add_argument("--box", action="append", type=parse_box, metavar="x0,y0,x1,y1,frame[,obj]",
                     help="a box around an object; repeatable (one per object and frame)")
    seg.add_argument("--audio-frame", type=lambda t: _whole(_numbers(t, "frame", (1,))[0], "frame", 0),
                     metavar="N", help="without prompts: the frame the audio-only object starts on (default 0)")
    seg.add_argument("--direction", choices=("both", "forward", "backward"), default="both",
                     help="propagate from the first prompted frame (default both ways)")
    seg.add_argument("--out", metavar="DIR", help="output folder (default: <video name>_auralsam2)")
    seg.add_argument("--format", choices=("png", "npz", "coco-rle"), default="png",
                     help="png: masks/NNNNNN.png object-id images; npz: masks.npz; coco-rle: masks.json")
    seg.add_argument("--overlay", metavar="OUT.mp4", help="also write a preview video with the audio")
    _add_engine_options(seg)
    seg.set_defaults(func=cmd_segment)

    demo = subparsers.add_parser("demo", help="run on the bundled sample clip (the README's main job)")
    demo.add_argument("--out", metavar="DIR", default="demo_out", help="output folder (default demo_out)")
    demo.add_argument("--weights", choices=("auto", "random"), default="auto",
                      help="auto: released weights if present or downloadable, else random (said loudly)")
    demo.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    demo.set_defaults(func=cmd_demo)

    _add_optional_commands(subparsers)
    return parser


def _version() -> str:
    try:
        return version("napari-auralsam2")
    except PackageNotFoundError:
        return "unknown"


def _missing_extra(extra: str):
    def run(args: argparse.Namespace) -> int:
        raise UsageError(f"this command needs the '{extra}' extra: pip install 'napari-auralsam2[{extra}]'")
    return run


def _add_optional_commands(subparsers) -> None:
    """Subcommands of other parts of the package (training, CVAT), when they are installed."""
    for module_name, command, extra in OPTIONAL_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            missing = err.name or ""
            if module_name == missing or module_name.startswith(missing + "."):
                continue  # that part of the package is not there
            if missing.split(".")[0] in OPTIONAL_DEPS and command is not None:
                stub = subparsers.add_parser(command, help=f"(needs: pip install 'napari-auralsam2[{extra}]')")
                stub.set_defaults(func=_missing_extra(extra))
                continue
            raise
        module.add_parser(subparsers)


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.strerror or error}: {error.filename}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.func is None:
            parser.print_help(sys.stderr)
            return EXIT_ERROR
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        _say("interrupted")
        return EXIT_INTERRUPTED
    except (UsageError, AuralSAM2Error, OSError) as err:
        if debug:
            raise
        _say(f"error: {_one_line(err)}")
        return EXIT_ERROR
    except torch.OutOfMemoryError:
        if debug:
            raise
        _say("error: the GPU ran out of memory; try a smaller --image-size or --model, or --device cpu")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
