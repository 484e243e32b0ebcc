"""The figures of bench/gpu_check.sh that no other script prints (not a test; prints markdown).

    python bench/gpu_check.py agreement     # CUDA bf16 vs CPU fp32 (seeded weights); GPU resize vs PIL
    python bench/gpu_check.py memory        # peak GPU memory, 3000 vs 300 frames of an mp4
    python bench/gpu_check.py compile       # torch.compile: compile time and speed-up
    python bench/gpu_check.py all --smoke   # every check, tiny, on the CPU (what CI runs)

`agreement` exits 1 when the sign agreement of the conditioning-frame logits is below 0.99.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]
from engine import make_long_video, sample, sync  # noqa: E402
from tests._seeded import seeded_inputs, seeded_state_dict  # noqa: E402

from napari_auralsam2.core import frames_from_array, open_video  # noqa: E402
from napari_auralsam2.core import session as session_module  # noqa: E402
from napari_auralsam2.core.model import build_auralsam2  # noqa: E402
from napari_auralsam2.core.model.auralsam2 import SAM2_CONFIGS  # noqa: E402
from napari_auralsam2.core.session import Engine, preprocess_frame  # noqa: E402

SIGN_AGREEMENT = 0.99
FPS = 10.0


def agreement(args: argparse.Namespace) -> int:
    """Sign agreement of cond-frame logits (device vs CPU fp32, seeded hiera_t at 256), mask agreement of
    the device resize vs PIL's (random weights at the real size)."""
    model = build_auralsam2("hiera_t", image_size=args.seeded_size)
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed=2))
    cpu, device = Engine(model.eval(), "cpu"), Engine(copy.deepcopy(model), args.device)
    frames, audio = seeded_inputs(5, args.seeded_size, seed=0)
    with torch.inference_mode():
        reference = cpu.model.segment_clip(frames, audio).masks[0]
        with device.autocast():
            ours = device.model.segment_clip(frames.to(device.device), audio.to(device.device)).masks[0]
    signs = float(((reference > 0) == (ours.float().cpu() > 0)).float().mean())
    torch.manual_seed(0)
    engine = Engine(build_auralsam2(SAM2_CONFIGS[args.model], image_size=args.image_size), device=args.device)
    images, track, point = sample(args.frames, args.size, FPS)

    def masks() -> np.ndarray:
        session = engine.open_session(frames_from_array(images, FPS, audio=track))
        session.add_prompt(0, 1, points=[point])
        return np.stack([m[1] for _, m in session.propagate(direction="forward")])

    on_device = masks()
    original = session_module.preprocess_on_device
    session_module.preprocess_on_device = lambda f, s: torch.stack(
        [preprocess_frame(x, s) for x in f.cpu().numpy()]).to(f.device)
    try:
        with_pil = masks()
    finally:
        session_module.preprocess_on_device = original
    resize = float((on_device == with_pil).mean())
    print("| check | figure |\n|---|---|")
    print(f"| sign agreement of cond-frame logits, {args.device} {'bf16' if args.device != 'cpu' else 'fp32'} vs CPU "
          f"fp32 (seeded hiera_t at {args.seeded_size}) | {signs:.4f} (need >= {SIGN_AGREEMENT}) |")
    print(f"| mask agreement, frames resized on the device vs PIL ({args.model} at {args.image_size}, "
          f"{args.frames} frames of {args.size[0]}x{args.size[1]}) | {resize:.5f} |")
    return 0 if signs >= SIGN_AGREEMENT else 1


def memory(args: argparse.Namespace) -> int:
    """Peak device memory above the resident model while segmenting mp4s of each length (audio on,
    audio-only prompt, forward over every frame, decoded while propagating)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    engine = Engine(build_auralsam2(SAM2_CONFIGS[args.model], image_size=args.image_size), device=device)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for frames in args.lengths:
            path = make_long_video(Path(folder) / f"memory_{frames}.mp4", frames)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                resident = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            with open_video(path) as video:
                session = engine.open_session(video)
                session.add_audio_prompt(0, 1)
                count = sum(1 for _ in session.propagate(direction="forward"))
            sync(device)
            seconds = time.perf_counter() - start
            peak = (torch.cuda.max_memory_allocated(device) - resident) / 2**30 if device.type == "cuda" else None
            rows.append((count, peak, seconds))
            path.unlink()
    print(f"| frames (720p mp4, {args.model} at {args.image_size}) | peak {args.device} memory above the model | "
          "time |\n|---|---|---|")
    for count, peak, seconds in rows:
        shown = "n/a (CPU)" if peak is None else f"{peak:.2f} GiB"
        print(f"| {count} | {shown} | {seconds:.0f} s ({count / seconds:.1f} FPS) |")
    if rows[0][1]:
        print(f"\npeak memory, {rows[-1][0]} vs {rows[0][0]} frames: {rows[-1][1] / rows[0][1]:.2f}x")
    return 0


def compile_check(args: argparse.Namespace) -> int:
    """Compile time (first window, compiled minus plain) and steady speed with and without torch.compile."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    engine = Engine(build_auralsam2(SAM2_CONFIGS[args.model], image_size=args.image_size), device=device)
    images, track, _ = sample(args.frames, args.size, FPS)

    def run() -> tuple[float, float]:
        """Seconds to the first mask, then seconds per frame for the rest."""
        sync(device)
        start = time.perf_counter()
        session = engine.open_session(frames_from_array(images, FPS, audio=track))
        session.add_audio_prompt(0, 1)
        sync(device)
        first = time.perf_counter() - start
        start = time.perf_counter()
        count = sum(1 for _ in session.propagate(direction="forward"))
        sync(device)
        return first, (time.perf_counter() - start) / count

    run()  # warm-up
    plain_first, plain = run()
    if args.backend:
        session_module.COMPILE_OPTIONS["backend"] = args.backend
    engine.compile()
    compiled_first, _ = run()  # compiles (a window of the other length compiles during this run too)
    _, compiled = run()
    print(f"| {args.model} at {args.image_size}, {args.frames} frames | plain | compiled |\n|---|---|---|")
    print(f"| first mask | {plain_first:.2f} s | {compiled_first:.2f} s (compile ~{compiled_first - plain_first:.0f} s) |")
    print(f"| per frame after it | {plain * 1000:.1f} ms | {compiled * 1000:.1f} ms ({plain / compiled:.2f}x) |")
    return 0


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=("agreement", "memory", "compile", "all"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (CI)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="hiera_l", choices=list(SAM2_CONFIGS))
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--seeded-size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=parse_size, default=(1280, 720), help="video WIDTHxHEIGHT")
    parser.add_argument("--lengths", type=int, nargs="+", default=[300, 3000], help="memory: frames per video")
    parser.add_argument("--backend", help="compile: torch.compile backend (default inductor)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.model, args.image_size, args.seeded_size = "cpu", "hiera_t", 64, 64
        args.frames, args.size, args.lengths, args.backend = 3, (96, 64), [3, 6], args.backend or "eager"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench/gpu_check.py: no CUDA device here (use --smoke for a CPU run)", file=sys.stderr)
        return 2
    checks = {"agreement": agreement, "memory": memory, "compile": compile_check}
    status = 0
    for name in checks if args.check == "all" else [args.check]:
        print(f"\n### {name}\n", flush=True)
        status |= checks[name](args)
    return status


if __name__ == "__main__":
    sys.exit(main())
