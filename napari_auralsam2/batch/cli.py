"""`auralsam2 batch`: segment a collection of videos on Ray, as `segment` would one by one.

`napari_auralsam2.cli` calls `add_parser(subparsers)`. Ray is imported only when the command runs,
so the rest of the CLI works without it, and without it this command says how to install it.
Exit codes: 0 when every video is done or skipped, 1 when some failed (see summary.csv), 2 for bad
usage (one line, as everywhere in the CLI), 130 on Ctrl-C (rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from ..cli import UsageError, add_engine_options, prepare_out
from ..cli_prompts import whole_number
from ..core.export import FORMATS
from ..core.weights import RANDOM_WEIGHTS_BANNER, release_variant
from .outputs import DONE, FAILED, SKIPPED, Result, Summary, earlier_result
from .sources import collect_jobs
from .worker import Settings

EXIT_FAILED_VIDEOS = 1
INSTALL_HINT = "pip install 'napari-auralsam2[batch]'"
EXAMPLES = """examples:
  auralsam2 batch videos/ --out masks/ --workers 4                  # a local Ray, 4 workers
  auralsam2 batch "data/**/*.mp4" --out masks/ --device cuda --workers 2   # one GPU per worker
  auralsam2 batch manifest.csv --out masks/ --address ray://head:10001    # an existing Ray cluster

a manifest is a .csv with a header row: video (required), audio, points, boxes (points/boxes as
segment's --point/--box, several separated by ';'); rows without prompts use the audio alone.
Each video's masks go to --out/<video name>/ as segment writes them; summary.csv lists every
video with its status. Run the same command again to resume: finished videos are skipped.
"""


def add_parser(subparsers) -> None:
    """Register `batch` on the `auralsam2` command's subparsers."""
    batch = subparsers.add_parser("batch", help="segment many videos on Ray (this machine or a cluster)",
                                  description="Segment a collection of videos with Ray workers.",
                                  epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="video files, folders, quoted globs, or a manifest .csv")
    batch.add_argument("--out", required=True, metavar="DIR", help="output folder (one subfolder per video)")
    batch.add_argument("--no-audio", action="store_true", help="ignore audio: every video needs manifest prompts")
    batch.add_argument("--audio-frame", type=whole_number("frame", 0), default=0, metavar="N",
                       help="for videos without prompts: the frame the audio-only object starts on (0)")
    batch.add_argument("--direction", choices=("both", "forward", "backward"), default="both",
                       help="propagate from the first prompted frame (default both ways)")
    batch.add_argument("--format", choices=FORMATS, default="png", help="mask format, as segment's (png)")
    batch.add_argument("--overlay", action="store_true", help="also write <video name>/overlay.mp4 previews")
    ray_group = batch.add_argument_group("Ray")
    ray_group.add_argument("--workers", type=whole_number("--workers", 1), default=1, metavar="N",
                           help="workers, each loading the model once (1); with --device cuda, one GPU each")
    ray_group.add_argument("--address", metavar="ADDR",
                           help="an existing Ray cluster (default: $RAY_ADDRESS, else Ray starts here)")
    ray_group.add_argument("--cpus-per-worker", type=whole_number("--cpus-per-worker", 1), metavar="N",
                           help="CPU threads per worker (default: this machine's cores / workers; 1 on a cluster)")
    add_engine_options(batch)
    batch.set_defaults(func=run)


def _settings(args: argparse.Namespace, out: Path, local: bool) -> Settings:
    if args.weights == "random" and (args.checkpoint or args.sam2_checkpoint):
        raise UsageError("--checkpoint/--sam2-checkpoint need --weights auto (the default), not random")
    if release_variant(args.release) == "refavs" and not args.no_audio:
        raise UsageError("batch takes no text prompts, and the Ref-AVS weights segment the object a text names: "
                         "use an AVSBench --release here, or auralsam2 segment --text per video")
    device = args.device
    if device is not None and device not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: batch takes cpu or cuda (each GPU worker gets a GPU of its own)")
    if device == "cuda" and local and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but no CUDA GPU is available here; use --device cpu")
    return Settings(out=out, fmt=args.format, overlay=args.overlay, use_audio=not args.no_audio,
                    audio_frame=args.audio_frame, direction=args.direction, model=args.model,
                    image_size=args.image_size, weights=args.weights, checkpoint=args.checkpoint,
                    sam2_checkpoint=args.sam2_checkpoint, release=args.release, device=device,
                    compile=args.compile)


def table(results: list[Result], seconds: float) -> str:
    """The end-of-batch summary: videos done / skipped / failed, frames segmented, time."""
    count = {status: sum(r.status == status for r in results) for status in (DONE, SKIPPED, FAILED)}
    frames = sum(r.frames for r in results if r.status == DONE)
    names = ["videos", "done", "skipped", "failed", "frames", "seconds"]
    cells = [str(len(results)), *(str(count[s]) for s in (DONE, SKIPPED, FAILED)), str(frames), f"{seconds:.1f}"]
    widths = [max(len(n), len(c)) for n, c in zip(names, cells)]
    lines = ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in (names, cells)]
    lines += [f"failed: {r.video}: {r.error}" for r in results if r.status == FAILED]
    return "\n".join(lines)


def run(args: argparse.Namespace, progress=None) -> int:
    """The command; `progress` (a `runner.Progress` class, given the number of videos) draws the run."""
    try:
        from . import runner
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != "ray":
            raise
        raise UsageError(f"batch runs on Ray, which is not installed: {INSTALL_HINT}") from None
    started = time.perf_counter()
    out = prepare_out(args.out)
    settings = _settings(args, out, local=not (args.address or os.environ.get(runner.ADDRESS_ENV)))
    jobs = collect_jobs(args.sources)
    if args.no_audio:
        silent = [job for job in jobs if not job.prompts]
        if silent:
            raise UsageError(f"with --no-audio every video needs points or boxes (from a manifest); "
                             f"{silent[0].video} has none")
    summary = Summary(out, jobs)
    todo = []
    for job in jobs:
        earlier = earlier_result(job, out, settings.output)
        if earlier is None:
            todo.append(job)
        else:
            summary.record(job.name, earlier)
    if todo:
        if settings.weights == "random":
            print(RANDOM_WEIGHTS_BANNER, file=sys.stderr)
        runner.run_batch(todo, settings, summary, args.workers, args.address, args.cpus_per_worker,
                         progress or runner.Progress)
    results = summary.results()
    print(table(results, time.perf_counter() - started))
    print(f"wrote {summary.path}")
    return EXIT_FAILED_VIDEOS if any(r.status == FAILED for r in results) else 0
