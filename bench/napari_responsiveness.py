"""Widget propagate on a synthetic 720p clip (hiera_t @ 1024, CPU) with event-loop latency probes.

Run: xvfb-run -a .venv/bin/python napari_responsiveness.py FRAMES [IMAGE_SIZE]
Stops (Cancel) after FRAMES frames; reports time to the first frame, steady per-frame time (and the
extrapolation to 100 frames), QTimer lateness while idle vs during the run, and dims-step latency.
"""
import os
import statistics
import sys
import tempfile
import time

import napari
import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from napari_auralsam2.core.sample import make_sample_clip

FRAMES = int(sys.argv[1]) if len(sys.argv) > 1 else 10
SIZE = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
PATH = os.path.join(tempfile.gettempdir(), "auralsam2_bench_clip720.mp4")
TICK_MS = 20
if not os.path.exists(PATH):
    make_sample_clip(PATH, seconds=10.0, fps=10, size=(1280, 720), seed=0)

gaps: list[float] = []
last = [time.perf_counter()]


def tick():
    now = time.perf_counter()
    gaps.append((now - last[0]) * 1000 - TICK_MS)
    last[0] = now


def pump(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.002)


def stats(values):
    v = np.asarray(values)
    return f"median {np.median(v):.1f} ms, p95 {np.percentile(v, 95):.1f} ms, p99 {np.percentile(v, 99):.1f} ms, max {v.max():.0f} ms (n={v.size})"


viewer = napari.Viewer(show=True)
viewer.window._qt_window.resize(1400, 900)
(video,) = viewer.open(PATH, plugin="napari-auralsam2")
_, widget = viewer.window.add_plugin_dock_widget("napari-auralsam2", "AuralSAM2")
f = widget.form
f.model.setCurrentText("hiera_t")
f.image_size.setValue(SIZE)
f.weights.setCurrentIndex(f.weights.findData("random"))
f.device.setCurrentIndex(f.device.findData("cpu"))
f.direction.setCurrentText("forward")
viewer.dims.set_current_step(0, 0)
points, _ = widget.prompt_layers(video)
points.add([[0, 360, 320]])
pump(2)

timer = QTimer()
timer.setInterval(TICK_MS)
timer.timeout.connect(tick)
last[0] = time.perf_counter()
timer.start()
pump(5)
idle = gaps[:]
gaps.clear()

frames: list[tuple[int, float]] = []
steps: list[float] = []
cpu0, t0 = time.process_time(), time.perf_counter()
widget.start("propagate")


def on_frame(update):
    if update.kind == "frame":
        frames.append((update.frame, time.perf_counter()))
        if len(frames) >= FRAMES:
            widget.cancel()


widget.worker.yielded.connect(on_frame)
next_step = time.perf_counter() + 3
while widget.running:
    QApplication.processEvents()
    time.sleep(0.002)
    if time.perf_counter() > next_step and frames:  # look at the newest result, as a user would
        s = time.perf_counter()
        viewer.dims.set_current_step(0, frames[-1][0])
        QApplication.processEvents()
        steps.append((time.perf_counter() - s) * 1000)
        next_step = time.perf_counter() + 3
wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
timer.stop()
busy = gaps[:]
first = frames[0][1] - t0
per = [b[1] - a[1] for a, b in zip(frames, frames[1:])]
print(f"hiera_t @ {SIZE}, CPU, 720p, {len(frames)} frames written, wall {wall:.0f} s, process CPU {cpu:.0f} s")
print(f"first frame after {first:.1f} s (model load + first window); per frame after: mean {statistics.mean(per):.1f} s, "
      f"median {statistics.median(per):.1f} s, last {per[-1]:.1f} s")
print(f"extrapolated 100 frames: {first + 99 * statistics.mean(per):.0f} s (mean of frames 1..{len(frames)-1})")
print("QTimer lateness idle:   ", stats(idle))
print("QTimer lateness running:", stats(busy))
print("dims step to newest frame during run:", stats(steps) if steps else "none")
labels = widget.outputs[video.unique_id]
print("frames in labels:", sorted(labels.metadata["auralsam2_written"]))
print(f"load avg {os.getloadavg()}")
viewer.close()
