"""The `auralsam2` command: segment a video from its sound and/or clicks, or run the bundled demo.

Every host-facing step is a core call (`load_engine`, `open_video`, the session, `core.export`);
this module only parses arguments and reports. Bad input ends with one ``auralsam2: error: ...``
line and exit code 2, and everything that can be checked without the model (paths, outputs that
would overwrite inputs, a read-only output folder, prompts against the video, the audio) is
checked before it loads. Ctrl-C exits with 130, after writing the masks of the frames done (beside
an earlier run's, never over them); an unexpected error is one line too, exit code 1. ``--debug``
shows the traceback instead. Other parts of the package add subcommands (see OPTIONAL_COMMANDS).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .cli_checks import (IMAGE_SIZE_MULTIPLE, UsageError, attach_negative_values, check_audio, check_device,
                         check_prompts_fit, parse_image_size, prepare_out)
from .cli_checks import one_line as _one_line
from .cli_prompts import (DEFAULT_OBJECT, add_texts, check_mask_sizes, check_text_options, group_prompts, parse_box,
                          parse_frame, parse_mask, parse_point, parse_text)
from .core import load_engine, open_video
from .core.errors import AuralSAM2Error, WeightsMissingError
from .core.export import (FORMATS, MASKS_FOLDER, MAX_PNG_ID, TARGETS, MaskStore, write_contact_sheet, write_masks,
                          write_overlay)
from .core.files import INTERRUPTED_SUFFIX, PARTIAL_PREFIX, check_outputs
from .core.model.auralsam2 import SAM2_CONFIGS
from .core.sample import make_sample_clip
from .core.session import Progress, Prompt
from .core.video import WRITE_CODECS, truncation_note
from .core.weights import AURALSAM2_WEIGHTS, DEFAULT_RELEASE, HOME_ENV, RANDOM_WEIGHTS_BANNER

PROG = "auralsam2"
EXIT_BUG = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
DEBUG_FLAG = "--debug"
DEFAULT_MODEL = "hiera_l"
DEFAULT_IMAGE_SIZE = 1024
WARNING_FILE = "WARNING.txt"
OVERLAY_NAME = "overlay.mp4"
CONTACT_SHEET_NAME = "contact_sheet.png"
DEMO_CLIP_NAME = "sample.mp4"
DEMO_OUTPUTS = {DEMO_CLIP_NAME, OVERLAY_NAME, CONTACT_SHEET_NAME, MASKS_FOLDER, WARNING_FILE}
DEMO_LEFTOVERS = (MASKS_FOLDER + INTERRUPTED_SUFFIX, PARTIAL_PREFIX)  # of an interrupted or killed demo
DEMO_SECONDS, DEMO_FPS, DEMO_SIZE, DEMO_SEED = 4.0, 8, (320, 240), 0
#: offline fallback of `demo --weights auto`, and the model of `demo --weights random`
DEMO_RANDOM_MODEL, DEMO_RANDOM_IMAGE_SIZE = "hiera_t", 256
#: optional subcommands: (module with add_parser(subparsers), command to stub when its extra is missing, extra)
OPTIONAL_COMMANDS = (("napari_auralsam2.training.cli", None, None), ("napari_auralsam2.cvat.cli", "cvat", "cvat"),
                     ("napari_auralsam2.batch.cli", None, None))
OPTIONAL_DEPS = ("cvat_sdk", "cvat_cli", "nuclio_sdk")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (raised, so `main` reports them and tests can call it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


EXAMPLES = """examples:
  auralsam2 segment talk.mp4 --overlay preview.mp4     # audio only: object 1 = the sounding object
  auralsam2 segment talk.mp4 --point 320,200,0 --point 100,80,0,0 --box 10,10,90,120,5,2
  auralsam2 segment clip.mp4 --no-audio --point 50,40,12 --format coco-rle --out masks/
  auralsam2 segment talk.mp4 --mask 30,1,fixed_frame30.png   # a corrected mask of object 1 on frame 30
  auralsam2 segment band.mp4 --release refavs --text "the man playing the guitar"   # say which sound

prompts are in video pixels: --point x,y,frame[,label[,object]] (label 1 positive, 0 negative;
object id 1 unless given) and --box x0,y0,x1,y1,frame[,object]; the points and box of one object
on one frame form one prompt. --mask frame,object,FILE.png is a mask prompt (nonzero pixels =
the object, the PNG the video's size) and replaces clicks of that object on that frame. Without prompts, object 1 starts from the audio alone on
--audio-frame (default 0); with prompts and audio, the clicks refine the audio-prompted decoder.
--text [object:]words names an object (object 1 unless given) in words; it needs the Ref-AVS
weights (--release refavs) and the audio, and works with or without clicks or a --mask.
"""


# -- shared steps -------------------------------------------------------------------------------
def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def check_overlay(overlay: str | None) -> Path | None:
    if overlay is None:
        return None
    path = Path(overlay).expanduser()
    if path.suffix.lower() not in WRITE_CODECS:
        raise UsageError(f"--overlay {overlay}: use a file ending in one of {', '.join(WRITE_CODECS)}")
    if path.is_dir():
        raise UsageError(f"--overlay {overlay} is a folder; give a file name such as {path / OVERLAY_NAME}")
    return path


def announce_weights(engine) -> str | None:
    """Say loudly on stderr when the weights are random; returns the banner (None with real weights)."""
    if not engine.random_weights:
        return None
    rule = "*" * len(RANDOM_WEIGHTS_BANNER)
    print(f"{rule}\n{RANDOM_WEIGHTS_BANNER}\n{rule}", file=sys.stderr, flush=True)
    return RANDOM_WEIGHTS_BANNER


def record_weights(out: Path, banner: str | None) -> None:
    """With random weights, leave WARNING.txt beside the results; with real ones, remove the one an
    earlier random run left (called once the results are in place)."""
    warning = out / WARNING_FILE
    if banner is None:
        if warning.is_file() and warning.read_text().startswith(RANDOM_WEIGHTS_BANNER):
            warning.unlink()
        return
    warning.write_text(
        f"{RANDOM_WEIGHTS_BANNER}\n\nThese results come from randomly initialised weights. For real masks, put the\n"
        f"released weights into ${HOME_ENV} (default ~/.cache/auralsam2) or pass --checkpoint/--sam2-checkpoint;\n"
        "see README.md, section 'Weights'.\n")


def segment_video(engine, video, prompts: Sequence[Prompt], use_audio: bool, audio_frame: int = 0,
                  direction: str = "both", progress: Progress | None = None) -> tuple[MaskStore, bool]:
    """Prompt, propagate with a progress bar (or the given `progress(done, total)`), and collect the
    masks; returns (store, interrupted).

    Ctrl-C stops between frames and keeps the frames done so far.
    """
    session = engine.open_session(video, use_audio=use_audio)
    for prompt in prompts or [Prompt(audio_frame, DEFAULT_OBJECT)]:  # none: the audio alone
        session.apply(prompt)
    store = MaskStore(len(video), video.height, video.width)
    quiet = progress is not None
    with tqdm(desc="segmenting", unit="frame", file=sys.stderr, dynamic_ncols=True, disable=quiet) as bar:
        def show(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            for frame_index, masks in session.propagate(direction=direction, progress=progress or show):
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
                  contact_sheet: Path | None = None, audio=None, banner: str | None = None,
                  interrupted: bool = False) -> list[Path]:
    """Masks in `fmt` (always), then the optional overlay video and contact sheet.

    An interrupted run's masks go beside an earlier run's (see `core.export.masks_target`).
    """
    written = [write_masks(store, out, fmt, video, info, interrupted)]
    if written[0] == out / TARGETS[fmt]:
        record_weights(out, banner)
    else:
        _say(f"note: kept the earlier results in {out / TARGETS[fmt]}; this interrupted run's are in {written[0]}")
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
def check_segment_args(args: argparse.Namespace) -> tuple[list[Prompt], Path, Path | None]:
    """Everything about `segment`'s arguments that needs no video read: (prompts, output folder, overlay)."""
    prompts = group_prompts(args.point or (), args.box or (), args.mask or ())
    if not prompts and args.no_audio:
        raise UsageError("with --no-audio, give at least one --point, --box or --mask")
    if prompts and args.audio_frame is not None:
        raise UsageError("--audio-frame is for audio-only runs; with --point/--box/--mask the prompted frames are used")
    if args.weights == "random" and (args.checkpoint or args.sam2_checkpoint):
        raise UsageError("--checkpoint/--sam2-checkpoint need --weights auto (the default), not random")
    prompts = add_texts(prompts, args.text or (), args.audio_frame or 0)
    check_text_options(args, prompts)
    top = max((p.object_id for p in prompts), default=DEFAULT_OBJECT)
    if args.format == "png" and top > MAX_PNG_ID:
        raise UsageError(f"object id {top} does not fit a 16-bit PNG; use --format npz or coco-rle")
    check_device(args.device)
    overlay = check_overlay(args.overlay)
    out = Path(args.out or f"{Path(args.video).stem}_auralsam2").expanduser()
    check_outputs({"--overlay": overlay, "the masks": out / TARGETS[args.format], WARNING_FILE: out / WARNING_FILE},
                  {"the input video": args.video, "--audio": args.audio, "--checkpoint": args.checkpoint,
                   "--sam2-checkpoint": args.sam2_checkpoint, **{f"--mask {m[2]}": m[2] for m in args.mask or ()}})
    return prompts, out, overlay


def cmd_segment(args: argparse.Namespace) -> int:
    prompts, out, overlay = check_segment_args(args)
    use_audio = not args.no_audio
    video = open_video(args.video, audio=args.audio)
    try:  # what needs the video, before the model loads
        check_mask_sizes(args.mask or (), video)
        prepare_out(out, MASKS_FOLDER)
        if overlay is not None:
            prepare_out(overlay.parent)
        note = truncation_note(video)
        if note:
            _say(f"note: {note}")
        check_prompts_fit(prompts or [Prompt(args.audio_frame or 0, DEFAULT_OBJECT)], video)
        if use_audio:
            check_audio(video)
        engine = load_engine(model=args.model, image_size=args.image_size, weights=args.weights,
                             checkpoint=args.checkpoint, sam2_checkpoint=args.sam2_checkpoint,
                             release=args.release, device=args.device, text_model=args.text_model)
        if args.compile:
            engine.compile()
        store, written, banner, interrupted = segment_to_folder(
            engine, video, out, args.model, prompts, use_audio, args.audio_frame or 0, args.direction, args.format,
            overlay)
    finally:
        video.close()
    return _report(store, written, banner, interrupted)


def segment_to_folder(engine, video, out: Path, model: str, prompts: Sequence[Prompt], use_audio: bool,
                      audio_frame: int = 0, direction: str = "both", fmt: str = "png", overlay: Path | None = None,
                      progress: Progress | None = None) -> tuple[MaskStore, list[Path], str | None, bool]:
    """What `segment` does once the video is open and the engine loaded (`batch` runs it per video):
    segment, then write the masks (and overlay) into `out`; returns (store, written, banner, interrupted)."""
    banner = announce_weights(engine)
    store, interrupted = segment_video(engine, video, prompts, use_audio, audio_frame, direction, progress)
    texts = {str(p.object_id): p.text for p in prompts if p.text}
    info = {"model": model, "image_size": engine.image_size, "audio": use_audio,
            "random_weights": engine.random_weights, "variant": engine.model.variant,
            **({"texts": texts} if texts else {})}
    if interrupted:
        overlay = None
    audio = overlay_audio(video) if overlay is not None else None
    written = write_results(store, video, out, fmt, info, overlay, None, audio, banner, interrupted)
    return store, written, banner, interrupted


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
        foreign = sorted(p.name for p in folder.iterdir()
                         if p.name not in DEMO_OUTPUTS and not p.name.startswith(DEMO_LEFTOVERS))
        if foreign:
            raise UsageError(f"{folder} holds files the demo did not write ({', '.join(foreign[:3])}); "
                             "give a new or empty --out folder")
    return prepare_out(folder, MASKS_FOLDER)


def cmd_demo(args: argparse.Namespace) -> int:
    check_device(args.device)
    out = demo_folder(args.out)
    engine = demo_engine(args.weights, args.device)
    banner = announce_weights(engine)
    info = make_sample_clip(out / DEMO_CLIP_NAME, DEMO_SECONDS, DEMO_FPS, DEMO_SIZE, DEMO_SEED)
    _say(f"sample clip: {info.path} ({info.n_frames} frames, {info.size[0]}x{info.size[1]}, a disc and a square "
         "taking turns to sound); segmenting the sounding object from the audio alone")
    video = open_video(info.path)
    try:
        store, interrupted = segment_video(engine, video, [], use_audio=True, audio_frame=0, direction="forward")
        meta = {"model": DEFAULT_MODEL if not engine.random_weights else DEMO_RANDOM_MODEL,
                "image_size": engine.image_size, "audio": True, "random_weights": engine.random_weights}
        extras = (None, None) if interrupted else (out / OVERLAY_NAME, out / CONTACT_SHEET_NAME)
        written = write_results(store, video, out, "png", meta, *extras, video.audio, banner, interrupted)
    finally:
        video.close()
    note = " (meaningless with random weights)" if banner else ""
    print(f"mean IoU with the sounding object: {sounding_iou(store, info.sounding_masks):.3f}{note}")
    return _report(store, written, banner, interrupted)


# -- parser -------------------------------------------------------------------------------------
def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """The model and weights options every command that loads a model takes (segment, batch, cvat annotate)."""
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
                       help="which released AuralSAM2 weights --weights auto uses (refavs: text + audio)")
    group.add_argument("--text-model", metavar="DIR",
                       help="folder of distilroberta-base for --release refavs (default: the pinned Hub copy)")
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
    seg.add_argument("--mask", action="append", type=parse_mask, metavar="frame,obj,FILE.png",
                     help="a mask prompt: nonzero pixels of the PNG (video size) are the object; repeatable")
    seg.add_argument("--text", action="append", type=parse_text, metavar="[obj:]words",
                     help="name an object in words (Ref-AVS weights, audio on); object id default 1; repeatable")
    seg.add_argument("--audio-frame", type=parse_frame,
                     metavar="N", help="without clicks: the frame the audio(+text) object starts on (default 0)")
    seg.add_argument("--direction", choices=("both", "forward", "backward"), default="both",
                     help="propagate from the first prompted frame (default both ways)")
    seg.add_argument("--out", metavar="DIR", help="output folder (default: <video name>_auralsam2)")
    seg.add_argument("--format", choices=FORMATS, default="png",
                     help="png: masks/NNNNNN.png object-id images; npz: masks.npz; coco-rle: masks.json; "
                          "cvat-video: annotations_cvat_video.zip (CVAT for video 1.1, polygon tracks)")
    seg.add_argument("--overlay", metavar="OUT.mp4", help="also write a preview video with the audio")
    add_engine_options(seg)
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


def _thread_error(hook: threading.ExceptHookArgs) -> None:
    if hook.exc_type is not SystemExit:
        _say(f"error in a background thread: {_one_line(hook.exc_value)} (run with --debug for the traceback)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = attach_negative_values([a for a in argv if a != DEBUG_FLAG])
    thread_hook = threading.excepthook
    if not debug:
        threading.excepthook = _thread_error
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
        for detail in getattr(err, "details", ()):
            _say(f"  {detail}")
        return EXIT_ERROR
    except (torch.OutOfMemoryError, MemoryError) as err:
        if debug:
            raise
        where = "GPU" if isinstance(err, torch.OutOfMemoryError) else "computer"
        _say(f"error: the {where} ran out of memory; try a smaller --image-size or --model"
             + (", or --device cpu" if where == "GPU" else ""))
        return EXIT_ERROR
    except Exception as err:  # a bug: still one line, the traceback with --debug
        if debug:
            raise
        _say(f"error: unexpected {type(err).__name__}: {_one_line(err)} (this is a bug: rerun with --debug "
             "and report the traceback)")
        return EXIT_BUG
    finally:
        threading.excepthook = thread_hook


if __name__ == "__main__":
    sys.exit(main())
