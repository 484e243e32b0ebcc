"""Benchmark (not a test): the three speed targets of the session, each a ratio from one run.

    .venv/bin/python bench/targets.py                 # all three rows on the CPU (~3 min on 2 idle cores)
    .venv/bin/python bench/targets.py --rows objects  # one row
    python bench/targets.py --device cuda --model hiera_l --image-size 1024 --decode-image-size 1024

1. ``objects``: per-frame time of forward propagation with 8 objects against 1 (clicks on frame 0,
   audio on, 16 frames of 640x360): how well objects share a frame's work.
2. ``decode``: an mp4 (1280x720 h264 + AAC) decoded while propagating against the same frames
   preloaded in memory (audio on, audio-only prompt, forward over every frame; open_session to the
   last mask), with 1 torch thread and a tiny image size so that decoding and resizing show.
3. ``first-mask``: from ``open_video`` to the first mask of an audio-only prompt on frame 0, for an
   mp4 whose audio track is 20 minutes long against the same video with a 10-second track; also
   with the tracks given in memory (``frames_from_array``).

Both sides of a ratio run back to back in one process, alternating, best of ``--repeats``; random
weights (speed does not depend on them); synthetic clips from ``core.sample``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import machine, make_long_video, sample, sync  # noqa: E402

from napari_auralsam2.core import AudioTrack, frames_from_array, open_video  # noqa: E402
from napari_auralsam2.core.model import build_auralsam2  # noqa: E402
from napari_auralsam2.core.model.auralsam2 import SAM2_CONFIGS  # noqa: E402
from napari_auralsam2.core.session import Engine  # noqa: E402
from napari_auralsam2.core.video import write_video  # noqa: E402

ROWS = ("objects", "decode", "first-mask")
OBJECTS_SIZE, OBJECTS_FPS = (640, 360), 10.0
FIRST_MASK_SIZE, FIRST_MASK_FPS, FIRST_MASK_SECONDS = (320, 180), 10.0, 10.0
AUDIO_RATE = 44_100


def build_engine(model: str, image_size: int, device: str) -> Engine:
    torch.manual_seed(0)
    return Engine(build_auralsam2(SAM2_CONFIGS[model], image_size=image_size), device=device)


def best(times: list[float]) -> float:
    return float(min(times))


# -- 1. objects ----------------------------------------------------------------------------------
def grid_points(count: int, size: tuple[int, int]) -> list[tuple[float, float]]:
    """`count` clicks spread over a frame of (width, height)."""
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    width, height = size
    return [((c + 0.5) * width / cols, (r + 0.5) * height / rows) for r in range(rows) for c in range(cols)][:count]


def propagate_ms(engine: Engine, video, points: list[tuple[float, float]]) -> float:
    """Milliseconds per frame of forward propagation, one object per click on frame 0."""
    session = engine.open_session(video, use_audio=True)
    for obj, point in enumerate(points, start=1):
        session.add_prompt(0, obj, points=[point], labels=[1])
    sync(engine.device)
    start = time.perf_counter()
    count = sum(1 for _ in session.propagate(direction="forward"))
    sync(engine.device)
    return (time.perf_counter() - start) / count * 1000


def objects_row(engine: Engine, frames: int, objects: int, repeats: int) -> dict:
    images, audio, _ = sample(frames, OBJECTS_SIZE, OBJECTS_FPS)
    video = frames_from_array(images, OBJECTS_FPS, audio=audio)
    points = grid_points(objects, OBJECTS_SIZE)
    propagate_ms(engine, frames_from_array(images[:6], OBJECTS_FPS, audio=audio), points)  # warm-up
    one, many = [], []
    for _ in range(repeats):
        one.append(propagate_ms(engine, video, points[:1]))
        many.append(propagate_ms(engine, video, points))
    return {"row": "objects", "frames": frames, "objects": objects, "one_ms": best(one), "many_ms": best(many),
            "ratio": best(many) / best(one), "runs_one_ms": one, "runs_many_ms": many}


# -- 2. decode while propagating -----------------------------------------------------------------
def run_ms(engine: Engine, video) -> float:
    """Milliseconds per frame from open_session to the last mask (audio-only prompt, forward)."""
    sync(engine.device)
    start = time.perf_counter()
    session = engine.open_session(video, use_audio=True)
    session.add_audio_prompt(0, 1)
    count = sum(1 for _ in session.propagate(direction="forward"))
    sync(engine.device)
    return (time.perf_counter() - start) / count * 1000


def decode_row(engine: Engine, frames: int, repeats: int, folder: Path) -> dict:
    path = make_long_video(folder / "decode_720p.mp4", frames)
    with open_video(path) as video:
        preloaded = frames_from_array(np.stack(list(video)), video.fps, audio=video.audio)
    run_ms(engine, frames_from_array(preloaded[:6], preloaded.fps, audio=preloaded.audio))  # warm-up
    decoded, loaded = [], []
    for _ in range(repeats):
        with open_video(path) as video:  # a fresh decoder (and cold frame cache) every run
            decoded.append(run_ms(engine, video))
        loaded.append(run_ms(engine, preloaded))
    return {"row": "decode", "frames": frames, "decoded_ms": best(decoded), "preloaded_ms": best(loaded),
            "ratio": best(decoded) / best(loaded), "runs_decoded_ms": decoded, "runs_preloaded_ms": loaded}


# -- 3. first mask -------------------------------------------------------------------------------
def stereo_track(seconds: float) -> AudioTrack:
    """A tone with noise on both channels (the right one delayed)."""
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    return AudioTrack(np.stack([left, np.roll(left, 1234)], 1).astype(np.float32), AUDIO_RATE)


def first_mask_s(engine: Engine, open_source) -> float:
    """Seconds from opening the source to the first mask of an audio-only prompt on frame 0."""
    sync(engine.device)
    start = time.perf_counter()
    video = open_source()
    try:
        engine.open_session(video, use_audio=True).add_audio_prompt(0, 1)
        sync(engine.device)
        return time.perf_counter() - start
    finally:
        video.close()


def first_mask_row(engine: Engine, minutes: float, repeats: int, folder: Path) -> dict:
    frames = int(FIRST_MASK_SECONDS * FIRST_MASK_FPS)
    images, _, _ = sample(frames, FIRST_MASK_SIZE, FIRST_MASK_FPS)
    tracks = {"short": stereo_track(FIRST_MASK_SECONDS), "long": stereo_track(minutes * 60)}
    files = {name: write_video(folder / f"first_mask_{name}.mp4", images, FIRST_MASK_FPS, track)
             for name, track in tracks.items()}
    sources = {("file", name): (lambda p=path: open_video(p)) for name, path in files.items()}
    sources.update({("memory", name): (lambda t=track: frames_from_array(images, FIRST_MASK_FPS, audio=t))
                    for name, track in tracks.items()})
    first_mask_s(engine, sources[("memory", "short")])  # warm-up (model, resampler JIT)
    runs: dict[str, list[float]] = {f"{kind}_{name}_s": [] for kind, name in sources}
    for _ in range(repeats):
        for (kind, name), source in sources.items():
            runs[f"{kind}_{name}_s"].append(first_mask_s(engine, source))
    row = {"row": "first-mask", "minutes": minutes, "short_seconds": FIRST_MASK_SECONDS}
    for kind in ("file", "memory"):
        short, long = best(runs[f"{kind}_short_s"]), best(runs[f"{kind}_long_s"])
        row.update({f"{kind}_short_s": short, f"{kind}_long_s": long, f"{kind}_extra_s": long - short})
    row["runs"] = runs
    return row


# -- report --------------------------------------------------------------------------------------
def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = ["| measure (same run) | ms or s | ratio / difference |", "|---|---|---|"]
    for r in rows:
        if r["row"] == "objects":
            lines.append(f"| per-frame time, {r['objects']} objects / 1 object ({args.model} at {args.image_size}, "
                         f"audio on, {r['frames']} frames forward) | {r['many_ms']:.0f} vs {r['one_ms']:.0f} ms/frame "
                         f"| {r['ratio']:.2f}x |")
        elif r["row"] == "decode":
            lines.append(f"| mp4 720p decoded while propagating / preloaded ({args.model} at "
                         f"{args.decode_image_size}, {r['frames']} frames, {args.decode_threads} torch thread) | "
                         f"{r['decoded_ms']:.0f} vs {r['preloaded_ms']:.0f} ms/frame | {r['ratio']:.3f}x |")
        else:
            for kind, what in (("file", "mp4"), ("memory", "in memory")):
                lines.append(f"| open -> first mask, {r['minutes']:g}-min 44.1 kHz stereo track minus a "
                             f"{r['short_seconds']:g}-s one ({what}) | {r[f'{kind}_long_s']:.2f} vs "
                             f"{r[f'{kind}_short_s']:.2f} s | {r[f'{kind}_extra_s']:+.2f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="hiera_t", choices=list(SAM2_CONFIGS))
    parser.add_argument("--image-size", type=int, default=256, help="for the objects and first-mask rows")
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--object-frames", type=int, default=16)
    parser.add_argument("--decode-image-size", type=int, default=64)
    parser.add_argument("--decode-frames", type=int, default=60)
    parser.add_argument("--decode-threads", type=int, default=1, help="torch threads for the decode row")
    parser.add_argument("--minutes", type=float, default=20.0, help="long audio track of the first-mask row")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads for the other rows (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    default_threads = torch.get_num_threads()
    print(f"machine: {machine()}\n", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "objects" in args.rows:
            engine = build_engine(args.model, args.image_size, args.device)
            rows.append(objects_row(engine, args.object_frames, args.objects, args.repeats))
            print(table(rows[-1:], args), flush=True)
        if "decode" in args.rows:
            torch.set_num_threads(args.decode_threads)
            engine = build_engine(args.model, args.decode_image_size, args.device)
            rows.append(decode_row(engine, args.decode_frames, args.repeats, folder))
            torch.set_num_threads(default_threads)
            print(table(rows[-1:], args), flush=True)
        if "first-mask" in args.rows:
            engine = build_engine(args.model, args.image_size, args.device)
            rows.append(first_mask_row(engine, args.minutes, args.repeats, folder))
            print(table(rows[-1:], args), flush=True)
    print("\n" + table(rows, args))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "args": vars(args), "rows": rows}, indent=1,
                                        default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
