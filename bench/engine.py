"""Benchmark (not a test): the engine against the stock `sam2` video predictor, memory on long
videos, and the audio front end. Prints markdown tables (docs/benchmarks.md holds the figures).

    .venv/bin/python bench/engine.py                       # everything, CPU (~10 min on 2 idle cores, mostly section 2)
    .venv/bin/python bench/engine.py --skip rss audio      # only engine vs stock

1. Speed: the same model size, image size, random weights (copied into both), frames and first-frame
   click for the engine and for stock `SAM2VideoPredictor`, in one run. Stock gets the frames through
   its `init_state` with `load_video_frames` replaced by our preprocessing (it only reads JPEG folders
   or mp4 via decord); both timings include preprocessing, prompting and propagating every frame.
2. Peak RSS of the CLI pipeline (decode 720p mp4 with audio, per-frame audio examples,
   audio-only prompt, forward propagation, masks collected in a MaskStore) for 300- and 3000-frame
   synthetic videos, each in a fresh subprocess, with a tiny image size so 3000 frames stay quick;
   the high-water mark is reset after the model is built, so the figure is what segmenting adds.
3. Audio front end: a 10-minute 44.1 kHz stereo track to VGGish examples, in x real time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from napari_auralsam2.core import AudioTrack, frames_from_array, open_video
from napari_auralsam2.core.audio import FrameExamples, waveform_to_examples
from napari_auralsam2.core.export import MaskStore
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.model.auralsam2 import SAM2_CONFIGS
from napari_auralsam2.core.sample import render_sample_frames
from napari_auralsam2.core.session import DEFAULT_WINDOW, Engine, preprocess_frame
from napari_auralsam2.core.video import write_video

SPEED_SIZE = (640, 360)
SPEED_FPS = 10.0
WARMUP_FRAMES = 6
RSS_SIZE = (1280, 720)
RSS_FPS = 30.0
AUDIO_RATE = 44_100
AUDIO_VIDEO_FPS = 25.0
# (label, use_audio, audio prompt, click) of the engine rows
MODES = (("audio off, click", False, False, True), ("audio on, audio only", True, True, False),
         ("audio on, audio + click", True, False, True))


# -- shared by bench/gpu.py ---------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_pair(model: str, image_size: int, device: str) -> tuple[Engine, torch.nn.Module]:
    """Our engine and the stock SAM2 video predictor with the same (random) SAM2 weights."""
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    config = SAM2_CONFIGS[model]
    engine = Engine(build_auralsam2(config, image_size=image_size), device=device)
    stock = build_sam2_video_predictor(f"configs/sam2/{config}.yaml", ckpt_path=None, device=device,
                                       hydra_overrides_extra=[f"++model.image_size={image_size}"])
    stock.load_state_dict(engine.model.v_model.state_dict(), strict=True)
    stock.fill_hole_area = 0  # needs sam2's CUDA extension; the engine never fills holes either
    return engine, stock.eval()


def sample(frames: int, size: tuple[int, int], fps: float) -> tuple[np.ndarray, AudioTrack, tuple[float, float]]:
    """Synthetic frames, their audio and a click on the disc in frame 0."""
    images, audio, info = render_sample_frames(frames / fps, fps, size, seed=0)
    ys, xs = np.nonzero(info.masks["disc"][0])
    return images, audio, (float(xs.mean()), float(ys.mean()))


def run_stock(stock, frames: np.ndarray, point: tuple[float, float], device: torch.device) -> float:
    """Seconds per frame of stock SAM2: init_state (with preprocessing), one click, propagate."""
    from sam2 import sam2_video_predictor

    size = stock.image_size

    def load(offload_video_to_cpu: bool = False, compute_device: torch.device = device, **_: object):
        images = torch.stack([preprocess_frame(f, size) for f in frames])  # stock keeps them all, on the GPU
        return images if offload_video_to_cpu else images.to(compute_device), frames.shape[1], frames.shape[2]

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    with mock.patch.object(sam2_video_predictor, "load_video_frames", load), torch.inference_mode(), autocast:
        sync(device)
        start = time.perf_counter()
        state = stock.init_state("in-memory")
        stock.add_new_points_or_box(state, 0, 1, points=np.array([point], np.float32), labels=np.array([1], np.int32))
        count = sum(1 for _ in stock.propagate_in_video(state))
        sync(device)
    return (time.perf_counter() - start) / count


def run_engine(engine: Engine, frames: np.ndarray, audio: AudioTrack, fps: float, point: tuple[float, float],
               use_audio: bool, audio_prompt: bool, click: bool) -> float:
    """Seconds per frame of the engine: session, prompt, forward propagation over every frame."""
    video = frames_from_array(frames, fps, audio=audio)
    sync(engine.device)
    start = time.perf_counter()
    session = engine.open_session(video, use_audio=use_audio)
    if audio_prompt:
        session.add_audio_prompt(0, 1)
    if click:
        session.add_prompt(0, 1, points=[point], labels=[1])
    count = sum(1 for _ in session.propagate(direction="forward"))
    sync(engine.device)
    return (time.perf_counter() - start) / count


def _ms_per_item(step, items: int, repeats: int, device: torch.device) -> float:
    step()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    sync(device)
    return (time.perf_counter() - start) / (repeats * items) * 1000


def encode_ms(engine: Engine, batch: int, repeats: int) -> tuple[float, float]:
    """Milliseconds per frame at a batch (window) size: image encoder + AuralFuser, and VGGish alone."""
    size, device = engine.image_size, engine.device
    frames = torch.randn(batch, 3, size, size, device=device)
    audio = torch.randn(batch, 2, 96, 64, device=device)
    with torch.inference_mode(), engine.autocast():
        both = _ms_per_item(lambda: engine.model.encode_window(frames, audio), batch, repeats, device)
        vggish = _ms_per_item(lambda: engine.model.aural_fuser.embed_audio(audio), batch, repeats, device)
    return both, vggish


def reset_peak(device: torch.device) -> int:
    """Start a GPU peak-memory window; returns the bytes already allocated (the models' weights)."""
    if device.type != "cuda":
        return 0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def peak_gpu_gb(device: torch.device, resident: int) -> float | None:
    """Peak GPU memory of the window above what was resident at its start, in GiB."""
    return (torch.cuda.max_memory_allocated(device) - resident) / 2**30 if device.type == "cuda" else None


def speed_rows(engine: Engine, stock, frames: np.ndarray, audio: AudioTrack, fps: float,
               point: tuple[float, float], windows: list[int], repeats: int = 1) -> list[dict]:
    """One row per pipeline: stock, then the engine in each mode and window; best of `repeats`."""
    device = engine.device
    warm = frames[:WARMUP_FRAMES]
    run_stock(stock, warm, point, device)
    run_engine(engine, warm, audio, fps, point, True, False, True)
    configs = [("stock SAM2 video predictor", "click", None, None)]
    configs += [("engine", label, DEFAULT_WINDOW, mode) for label, *mode in MODES]
    configs += [("engine", MODES[1][0], w, MODES[1][1:]) for w in windows if w != DEFAULT_WINDOW]
    rows = []
    for name, prompt, window, mode in configs:
        times, peaks = [], []
        for _ in range(repeats):
            resident = reset_peak(device)
            if mode is None:
                times.append(run_stock(stock, frames, point, device))
            else:
                engine.window = window
                times.append(run_engine(engine, frames, audio, fps, point, *mode))
            peaks.append(peak_gpu_gb(device, resident))
        rows.append({"pipeline": name, "prompt": prompt, "window": window, "s_per_frame": min(times),
                     "peak_gpu_gb": peaks[int(np.argmin(times))]})
    engine.window = DEFAULT_WINDOW
    stock_time = rows[0]["s_per_frame"]
    for row in rows:
        row["speedup_vs_stock"] = stock_time / row["s_per_frame"]
    return rows


def speed_table(rows: list[dict]) -> str:
    gpu = rows[0]["peak_gpu_gb"] is not None
    head = "| pipeline | prompt | window | ms/frame | FPS | speed vs stock |"
    head += " peak GPU mem above weights |" if gpu else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = (f"| {r['pipeline']} | {r['prompt']} | {r['window'] or '-'} | {r['s_per_frame'] * 1000:.0f} | "
                f"{1 / r['s_per_frame']:.2f} | {r['speedup_vs_stock']:.2f}x |")
        lines.append(line + (f" {r['peak_gpu_gb']:.2f} GiB |" if gpu else ""))
    return "\n".join(lines)


def encode_table(engine: Engine, batches: list[int], repeats: int) -> str:
    lines = ["| batch (window) | image encoder + AuralFuser, ms/frame | of which VGGish (2 channels), ms/frame |",
             "|---|---|---|"]
    for batch in batches:
        both, vggish = encode_ms(engine, batch, repeats)
        lines.append(f"| {batch} | {both:.1f} | {vggish:.1f} |")
    return "\n".join(lines)


# -- memory on long videos ----------------------------------------------------------------------
def make_long_video(path: Path, frames: int) -> Path:
    """A 720p clip (gradient, moving block) with a 440 Hz stereo tone, as h264 + AAC."""
    width, height = RSS_SIZE
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 // width, np.full_like(xs, 60), ys * 255 // height], -1).astype(np.uint8)

    def images():
        for i in range(frames):
            frame = base.copy()
            x = 100 + (7 * i) % (width - 400)
            frame[200:440, x:x + 240] = (230, 40, 40)
            yield frame

    t = np.arange(int(frames / RSS_FPS * AUDIO_RATE)) / AUDIO_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return write_video(path, images(), RSS_FPS, AudioTrack(np.stack([tone, tone], 1), AUDIO_RATE))


def _status_mib(field: str) -> float:
    """A memory figure of /proc/self/status (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def rss_child(video_path: str, model: str, image_size: int) -> None:
    """Run in a fresh process: build the model, reset the RSS high-water mark, then run the CLI's
    segmentation pipeline; print the model's RSS and the peak RSS during segmentation as JSON."""
    engine = Engine(build_auralsam2(SAM2_CONFIGS[model], image_size=image_size), device="cpu")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS
    model_mib = _status_mib("VmRSS")
    start = time.perf_counter()
    video = open_video(video_path)
    store = MaskStore(len(video), video.height, video.width)
    session = engine.open_session(video, use_audio=True)
    session.add_audio_prompt(0, 1)
    for t, masks in session.propagate(direction="forward"):
        store.add(t, masks)
    print(json.dumps({"frames": len(store), "model_rss_mib": model_mib, "peak_rss_mib": _status_mib("VmHWM"),
                      "max_rss_process_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": time.perf_counter() - start}))


def measure_rss(lengths: list[int], model: str, image_size: int, folder: Path) -> list[dict]:
    rows = []
    for frames in lengths:
        path = folder / f"synthetic_{frames}.mp4"
        start = time.perf_counter()
        make_long_video(path, frames)
        encode_s = time.perf_counter() - start
        out = subprocess.run([sys.executable, __file__, "--rss-child", str(path), "--model", model,
                              "--rss-image-size", str(image_size), "--threads", str(torch.get_num_threads())],
                             capture_output=True, text=True, check=True)
        rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "write_video_s": encode_s})
        path.unlink()
    return rows


def rss_table(rows: list[dict]) -> str:
    lines = ["| frames (720p, 30 fps, stereo AAC) | RSS after building the model | peak RSS while segmenting | "
             "growth | process max RSS (incl. build) | segmenting time |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['frames']} | {r['model_rss_mib']:.0f} MiB | {r['peak_rss_mib']:.0f} MiB | "
                     f"{r['peak_rss_mib'] - r['model_rss_mib']:.0f} MiB | {r['max_rss_process_mib']:.0f} MiB | "
                     f"{r['seconds']:.0f} s ({r['seconds'] / r['frames'] * 1000:.0f} ms/frame) |")
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        lines.append(f"\npeak RSS while segmenting, {last['frames']} vs {first['frames']} frames: "
                     f"{last['peak_rss_mib'] / first['peak_rss_mib']:.2f}x")
    return "\n".join(lines)


# -- audio front end ----------------------------------------------------------------------------
def audio_rows(minutes: float) -> list[dict]:
    """x real time of waveform_to_examples and of per-frame examples for a 25 fps video."""
    seconds = minutes * 60
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    stereo = np.stack([left, np.roll(left, 1234)], 1).astype(np.float32)
    track = AudioTrack(stereo, AUDIO_RATE)
    waveform_to_examples(stereo[:AUDIO_RATE], AUDIO_RATE)  # resampy's JIT compile, once
    rows = []
    start = time.perf_counter()
    examples = waveform_to_examples(stereo, AUDIO_RATE)
    rows.append({"step": f"waveform_to_examples -> {examples.shape}", "seconds": time.perf_counter() - start})
    times = np.arange(int(seconds * AUDIO_VIDEO_FPS)) / AUDIO_VIDEO_FPS
    start = time.perf_counter()
    per_frame = FrameExamples(track, times)
    rows.append({"step": f"FrameExamples, {len(per_frame)} frames at {AUDIO_VIDEO_FPS:g} fps (lazy)",
                 "seconds": time.perf_counter() - start})
    start = time.perf_counter()
    for i in range(0, len(per_frame), DEFAULT_WINDOW):
        per_frame[i:i + DEFAULT_WINDOW]
    rows.append({"step": "  + slicing every frame's [2, 96, 64] example", "seconds": time.perf_counter() - start})
    for row in rows:
        row["x_real_time"] = seconds / row["seconds"]
    return rows


def audio_table(rows: list[dict], minutes: float) -> str:
    lines = [f"| step ({minutes:g} min, {AUDIO_RATE / 1000:g} kHz stereo) | seconds | x real time |", "|---|---|---|"]
    lines += [f"| {r['step']} | {r['seconds']:.2f} | {r['x_real_time']:.0f}x |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hiera_t", choices=list(SAM2_CONFIGS))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=30, help="frames for engine vs stock")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each speed row")
    parser.add_argument("--windows", type=int, nargs="+", default=[1, DEFAULT_WINDOW])
    parser.add_argument("--rss-frames", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--rss-image-size", type=int, default=64)
    parser.add_argument("--audio-minutes", type=float, default=10.0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["speed", "rss", "audio"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child is not None:
        rss_child(args.rss_child, args.model, args.rss_image_size)
        return 0
    print(f"machine: {machine()}\n")
    results: dict = {"machine": machine()}
    if "speed" not in args.skip:
        engine, stock = build_pair(args.model, args.image_size, "cpu")
        frames, audio, point = sample(args.frames, SPEED_SIZE, SPEED_FPS)
        rows = speed_rows(engine, stock, frames, audio, SPEED_FPS, point, args.windows, args.repeats)
        results["speed"] = rows
        print(f"### {args.model} at {args.image_size}, {args.frames} frames of {SPEED_SIZE[0]}x{SPEED_SIZE[1]}, CPU\n")
        print(speed_table(rows) + "\n")
        print(encode_table(engine, sorted({1, *args.windows}), repeats=3) + "\n")
        del engine, stock
    if "rss" not in args.skip:
        with tempfile.TemporaryDirectory() as folder:
            rows = measure_rss(args.rss_frames, args.model, args.rss_image_size, Path(folder))
        results["rss"] = rows
        print(f"### peak RSS, {args.model} at {args.rss_image_size}, full pipeline, fresh process each\n")
        print(rss_table(rows) + "\n")
    if "audio" not in args.skip:
        rows = audio_rows(args.audio_minutes)
        results["audio"] = rows
        print("### audio front end\n")
        print(audio_table(rows, args.audio_minutes) + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
