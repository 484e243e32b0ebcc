"""``auralsam2 cvat annotate``: segment a CVAT task's objects with sound, upload masklets as tracks.

The main CLI registers this with ``add_parser(subparsers)``; the parsed namespace's ``func`` is the
handler (``func(args) -> exit code``; errors are raised as one-line :class:`AuralSAM2Error`, which
the main CLI reports). Server options are cvat-cli's own (``--server-host``, ``--server-port``,
``--auth USER[:PASS]`` or ``CVAT_ACCESS_TOKEN``, ``--organization``, ``--profile``). The server is
reached, the task and its video checked, before the model is loaded.
"""
from __future__ import annotations

import argparse
import sys

from ..cli import add_engine_options
from ..cli_checks import check_device
from ..core.errors import AuralSAM2Error
from ..core.weights import check_weight_options

PROMPT_HELP = "OBJ:FRAME:X,Y"
BOX_HELP = "OBJ:FRAME:X0,Y0,X1,Y1"
TEXT_HELP = "[OBJ:]WORDS"


def _prompt_arg(text: str, count: int, what: str) -> tuple[int, int, list[float]]:
    try:
        obj, frame, values = text.split(":")
        numbers = [float(v) for v in values.split(",")]
        if len(numbers) != count:
            raise ValueError
        return int(obj), int(frame), numbers
    except ValueError:
        metavar = BOX_HELP if count == 4 else PROMPT_HELP
        raise argparse.ArgumentTypeError(f"{what} {text!r} is not {metavar}") from None


def point_arg(text: str) -> tuple[int, int, list[float]]:
    return _prompt_arg(text, 2, "point")


def box_arg(text: str) -> tuple[int, int, list[float]]:
    return _prompt_arg(text, 4, "box")


def text_arg(text: str) -> tuple[int, str]:
    """'[OBJ:]words' -> (object id, words); object 1 unless given."""
    head, sep, rest = text.partition(":")
    obj, words = (int(head), rest) if sep and head.strip().isdigit() else (1, text)
    if not words.strip():
        raise argparse.ArgumentTypeError(f"text {text!r} is empty: describe the object in words")
    return obj, words.strip()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``cvat`` (with ``annotate``) to the main CLI's subparsers."""
    parser = subparsers.add_parser("cvat", help="CVAT: write audio-guided masklets back to a task",
                                   description="CVAT integration (see docs/cvat.md for the nuclio functions "
                                               "and the cvat-cli auto-annotate function).")
    commands = parser.add_subparsers(dest="cvat_command", metavar="COMMAND", required=True)
    annotate = commands.add_parser(
        "annotate", help="segment a task's objects on its source video (with sound) and upload them",
        description="Runs AuralSAM2 over the task's source video, with its sound, and uploads one polygon "
                    "track (or, with --as mask, per-frame mask shapes grouped by object) per object. A video "
                    "task's own upload is fetched from CVAT (its backup; cached); image tasks need --video. "
                    "Existing annotations are kept unless --replace. Without prompts the sounding object is "
                    "segmented from the audio alone, starting on the task's first frame. This is the way to "
                    "annotate video tasks: cvat-cli's 'task auto-annotate' (cvat-sdk 2.80) refuses them "
                    "(UnsupportedDatasetError) before any function runs.")
    try:
        from cvat_sdk.core.auth import configure_client_auth_arguments
    except ImportError:
        annotate.set_defaults(func=_missing_sdk)
        return parser
    configure_client_auth_arguments(annotate)
    annotate.add_argument("--task", type=int, required=True, help="CVAT task id")
    annotate.add_argument("--video", help="the video the task was created from, with its sound (default: for a "
                                          "video task, the file CVAT keeps, fetched from its backup; required "
                                          "for image tasks)")
    annotate.add_argument("--audio", help="separate audio file (replaces the video's own track)")
    annotate.add_argument("--point", type=point_arg, action="append", default=[], metavar=PROMPT_HELP,
                          help="positive click for object OBJ on task frame FRAME (task pixels); repeatable")
    annotate.add_argument("--neg-point", type=point_arg, action="append", default=[], metavar=PROMPT_HELP,
                          help="negative click; repeatable")
    annotate.add_argument("--box", type=box_arg, action="append", default=[], metavar=BOX_HELP,
                          help="box for object OBJ on task frame FRAME; one per object and frame")
    annotate.add_argument("--text", type=text_arg, action="append", default=[], metavar=TEXT_HELP,
                          help="name object OBJ (default 1) in words; needs --release refavs; repeatable")
    annotate.add_argument("--from-task-shapes", action="store_true",
                          help="use the task's rectangles, points, polygons and masks as prompts (one object each)")
    annotate.add_argument("--label", help="task label for prompted objects (default: the task's first label)")
    annotate.add_argument("--as", dest="shape_type", choices=("polygon", "mask"), default="polygon",
                          help="polygon tracks (default; editable, interpolated by CVAT) or per-frame mask shapes "
                               "grouped by object (pixel-exact; CVAT cannot load mask tracks)")
    annotate.add_argument("--replace", action="store_true",
                          help="DELETE all existing annotations of the task and write only these")
    annotate.add_argument("--no-audio", action="store_true", help="track without sound (stock SAM2)")
    add_engine_options(annotate)
    annotate.set_defaults(func=run_annotate)
    return parser


def _missing_sdk(args: argparse.Namespace) -> int:
    print("auralsam2 cvat needs cvat-sdk: pip install 'napari-auralsam2[cvat]'", file=sys.stderr)
    return 2


def collect_prompts(args: argparse.Namespace):
    """--point/--neg-point/--box -> ObjectPrompts (one per object and frame)."""
    from .tracks import ObjectPrompt

    prompts: dict[tuple[int, int], ObjectPrompt] = {}

    def prompt_for(obj: int, frame: int) -> ObjectPrompt:
        if obj < 1:
            raise AuralSAM2Error(f"object ids start at 1, got {obj}")
        return prompts.setdefault((obj, frame), ObjectPrompt(frame=frame, object_id=obj))

    for values, label in ((args.point, 1), (args.neg_point, 0)):
        for obj, frame, (x, y) in values:
            prompt = prompt_for(obj, frame)
            prompt.points.append((x, y))
            prompt.labels.append(label)
    for obj, frame, box in args.box:
        prompt = prompt_for(obj, frame)
        if prompt.box is not None:
            raise AuralSAM2Error(f"object {obj} has two boxes on frame {frame}", "give one box per object and frame")
        prompt.box = tuple(box)
    if len({p.object_id for p in prompts.values()}) != len(prompts):
        raise AuralSAM2Error("each object takes prompts on one frame only", "give all clicks of an object on one frame")
    texts = dict(args.text)
    if len(texts) != len(args.text):
        raise AuralSAM2Error("an object has two texts", "give one --text per object")
    by_object = {p.object_id: p for p in prompts.values()}
    for obj, text in texts.items():
        if obj < 1:
            raise AuralSAM2Error(f"object ids start at 1, got {obj}")
        # an object named only in words starts from the audio on the task's first frame (frame None)
        by_object.setdefault(obj, ObjectPrompt(frame=None, object_id=obj)).text = text
    return sorted(by_object.values(), key=lambda p: p.object_id)


def run_annotate(args: argparse.Namespace) -> int:
    """Handler of ``auralsam2 cvat annotate``: 0, or a one-line AuralSAM2Error raised."""
    from cvat_sdk.core.auth import make_client_from_cli

    from ..core.weights import RANDOM_WEIGHTS_BANNER, release_variant
    from .connection import server_errors, server_name
    from .streams import shared_engine
    from .tracks import open_task, write_masklets

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    prompts = collect_prompts(args)
    if prompts and args.from_task_shapes:
        raise AuralSAM2Error("--from-task-shapes and --point/--box exclude each other", "pick one")
    if args.text and args.no_audio:  # text checks that need no server and no model
        raise AuralSAM2Error("--text needs the audio (the Ref-AVS model reads sound and text together)",
                             "drop --no-audio")
    if args.text and args.checkpoint is None and release_variant(args.release) != "refavs":
        raise AuralSAM2Error("--text needs the Ref-AVS weights", "add --release refavs")
    check_device(args.device)  # the model options, before the server is reached
    check_weight_options(args.model, args.weights, args.checkpoint, args.sam2_checkpoint, args.release)
    with server_errors(server_name(args)):
        client = make_client_from_cli(args)
    with client, server_errors(client.api_map.host), \
            open_task(client, args.task, video=args.video, audio=args.audio, log=log) as source:
        source.label_id(args.label)
        source.frames.check(prompts)
        engine = shared_engine(model=args.model, image_size=args.image_size, weights=args.weights,
                               checkpoint=args.checkpoint, sam2_checkpoint=args.sam2_checkpoint, device=args.device,
                               release=args.release, text_model=args.text_model)
        if args.compile:
            engine.compile()
        if engine.random_weights:
            log(RANDOM_WEIGHTS_BANNER)
        written = write_masklets(source, engine, prompts=prompts, from_task_shapes=args.from_task_shapes,
                                 label=args.label, replace=args.replace, shape_type=args.shape_type,
                                 use_audio=not args.no_audio, log=log)
    if not any(written.values()):
        log("no object was found on any frame: nothing was uploaded")
    return 0


__all__ = ["add_parser", "run_annotate", "collect_prompts"]
