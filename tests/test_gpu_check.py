"""bench/gpu_check.sh --smoke: every step of the GPU check, tiny, on the CPU, so the script stays runnable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["tests", "checks", "gpu", "targets"]


def test_gpu_check_smoke_mode_runs_every_step(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(out),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--smoke"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    summary = [line.split() for line in (out / "summary.txt").read_text().splitlines() if line]
    assert [line[0] for line in summary] == STEPS and all(line[1] == "ok" for line in summary)
    for needle in ("sign agreement of cond-frame logits", "peak cpu memory", "| first mask |",
                   "stock SAM2 video predictor", "engine with audio from an mp4",
                   "per-frame time, 2 objects / 1 object", "decoded while propagating", "open -> first mask"):
        assert needle in result.stdout, needle
