"""Benchmark (not a test): what text prompts cost. One 10-frame window encoded and fused by the AVS
model and by the Ref-AVS model with one and with two texts (two objects named differently), same
SAM2 size, image size, frames and audio, random weights, in one run; the fastest of `--repeats`
interleaved rounds.

    .venv/bin/python bench/refavs_text.py                          # hiera_t at 256, CPU
    .venv/bin/python bench/refavs_text.py --model hiera_l --image-size 1024 --device cuda

The Ref-AVS text encoder is distilroberta-base's architecture (random weights: the timing is the same).
"""
from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.model.auralsam2 import SAM2_CONFIGS

CLIP = 10
TEXTS = ("the man playing the guitar", "the dog that is barking")


def best_of(repeats: int, runs: dict, device: torch.device) -> dict[str, float]:
    """Fastest time of each run over `repeats` rounds, the runs interleaved (robust to a busy machine)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hiera_t", choices=list(SAM2_CONFIGS))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(CLIP, 3, args.image_size, args.image_size, generator=generator).to(device)
    audio = torch.randn(CLIP, 2, 96, 64, generator=generator).to(device)
    avs = build_auralsam2(SAM2_CONFIGS[args.model], image_size=args.image_size, device=device)
    ref = build_auralsam2(SAM2_CONFIGS[args.model], image_size=args.image_size, device=device, variant="refavs")
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def fused(texts):
        def run():
            _, prompts = ref.encode_window(frames, audio)
            for text in texts:
                prompts.for_text(text)
        return run

    runs = {"base": lambda: avs.encode_window(frames, audio), "one": fused(TEXTS[:1]), "two": fused(TEXTS),
            "text": lambda: ref.encode_text([TEXTS[0]])}
    with torch.inference_mode(), amp:
        best = best_of(args.repeats, runs, device)
    base, one, two, text = best["base"], best["one"], best["two"], best["text"]
    print(f"| {args.model} @ {args.image_size}, {device.type}, window of {CLIP} | time | vs AVS |")
    print("|---|---|---|")
    print(f"| AVS: encode + fuse | {base:.3f} s | 1.00 |")
    print(f"| Ref-AVS, one text | {one:.3f} s | {one / base:.2f} |")
    print(f"| Ref-AVS, two texts | {two:.3f} s | {two / base:.2f} |")
    print(f"| text encoder alone (25 tokens) | {text * 1000:.0f} ms | {text / base:.3f} |")


if __name__ == "__main__":
    main()
