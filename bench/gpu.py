"""GPU benchmark (not a test): engine vs stock SAM2 at AuralSAM2's real size, bf16 on CUDA.

    python bench/gpu.py                      # hiera_l at 1024, 64 frames of 1280x720, about 1-2 min on an H100
    python bench/gpu.py --device cpu --model hiera_t --image-size 128 --frames 8 --size 320x180   # smoke run

Random weights (copied into both, so no downloads; speed does not depend on weight values),
synthetic frames and audio from `core.sample`, bf16 autocast as the official inference. Prints
markdown: per-frame time and FPS of stock `SAM2VideoPredictor` (one click on frame 0) and of the
engine (audio off + click, audio only, audio + click; encoder + fuser batched per window of 5,
and also per frame and per 10), the encoder + fuser alone at each batch, and the peak GPU memory
of each run above the resident weights. Needs only this repository and its dependencies; the
shared helpers live in bench/engine.py next to this file.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import build_pair, encode_table, sample, speed_rows, speed_table  # noqa: E402

from napari_auralsam2.core.model.auralsam2 import SAM2_CONFIGS  # noqa: E402

FPS = 10.0


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
    print(f"\n### encoder + fuser alone ({args.model} at {args.image_size})\n")
    print(encode_table(engine, sorted({1, *args.windows}), repeats=5))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
