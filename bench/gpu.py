"""GPU benchmark (not a test): engine vs stock SAM2 at AuralSAM2's real size, bf16 on CUDA.

    python bench/gpu.py                      # hiera_l at 1024, 64 frames of 1280x720, about 1-2 min on an H100
    python bench/gpu.py --device cpu --model hiera_t --image-size 128 --frames 8 --size 320x180   # smoke run

Random weights (copied into both, so no downloads; speed does not depend on weight values),
synthetic frames and audio from `core.sample`, bf16 autocast as the official inference. Prints
markdown: per-frame time and FPS of stock `SAM2VideoPredictor` (one click on frame 0) and of the
engine (audio off + click, audio only, audio + click; encoder + fuser batched per window of 5,
and also per frame and per 10), the engine end to end from an mp4 (decoded while propagating)
against stock's propagate_in_video alone, the encoder + fuser alone at each batch, and the peak
GPU memory of each run above the resident weights. Needs only this repository and its dependencies; the
shared helpers live in bench/engine.py next to this file.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import build_pair, encode_table, sample, speed_rows, speed_table, sync  # noqa: E402

from napari_auralsam2.core import open_video  # noqa: E402
from napari_auralsam2.core.model.auralsam2 import SAM2_CONFIGS  # noqa: E402
from napari_auralsam2.core.session import preprocess_frame  # noqa: E402
from napari_auralsam2.core.video import write_video  # noqa: E402

FPS = 10.0


def stock_propagate_fps(stock, frames, point, device: torch.device) -> float:
    """Stock SAM2's `propagate_in_video` alone (frames already loaded and prompted), frames per second."""
    from unittest import mock

    from sam2 import sam2_video_predictor

    images = torch.stack([preprocess_frame(f, stock.image_size) for f in frames]).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    with mock.patch.object(sam2_video_predictor, "load_video_frames",
                           lambda **_: (images, frames.shape[1], frames.shape[2])), torch.inference_mode(), autocast:
        state = stock.init_state("in-memory")
        stock.add_new_points_or_box(state, 0, 1, points=np.array([point], np.float32), labels=np.array([1], np.int32))
        sync(device)
        start = time.perf_counter()
        count = sum(1 for _ in stock.propagate_in_video(state))
        sync(device)
    return count / (time.perf_counter() - start)


def engine_mp4_fps(engine, path: Path) -> float:
    """The engine from an mp4, audio on, audio-only prompt: open_video to the last mask, frames per second."""
    sync(engine.device)
    start = time.perf_counter()
    with open_video(path) as video:
        session = engine.open_session(video)
        session.add_audio_prompt(0, 1)
        count = sum(1 for _ in session.propagate(direction="forward"))
    sync(engine.device)
    return count / (time.perf_counter() - start)


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hiera_l", choices=list(SAM2_CONFIGS))
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=parse_size, default=(1280, 720), help="video WIDTHxHEIGHT")
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 5, 10], help="encoder + fuser windows")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each row")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here; for a smoke run pass --device cpu "
              "(with a small --model/--image-size)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, {'bf16 autocast' if device.type == 'cuda' else 'fp32'}")
    engine, stock = build_pair(args.model, args.image_size, args.device)
    frames, audio, point = sample(args.frames, args.size, FPS)
    rows = speed_rows(engine, stock, frames, audio, FPS, point, args.windows, args.repeats)
    print(f"\n### {args.model} at {args.image_size}, {args.frames} frames of {args.size[0]}x{args.size[1]}, "
          f"forward from a prompt on frame 0\n")
    print(speed_table(rows))
    with tempfile.TemporaryDirectory() as folder:
        path = write_video(Path(folder) / "clip.mp4", frames, FPS, audio)
        stock_fps = max(stock_propagate_fps(stock, frames, point, device) for _ in range(args.repeats))
        mp4_fps = max(engine_mp4_fps(engine, path) for _ in range(args.repeats))
    print(f"\nengine with audio from an mp4 (open_video to the last mask): {mp4_fps:.1f} FPS; stock SAM2 "
          f"propagate_in_video alone (frames loaded): {stock_fps:.1f} FPS; ratio {mp4_fps / stock_fps:.2f}x")
    print(f"\n### encoder + fuser alone ({args.model} at {args.image_size})\n")
    print(encode_table(engine, sorted({1, *args.windows}), repeats=5))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
