#!/usr/bin/env bash
# The GPU check (issue 10): on a fresh GPU machine, in at most 8 minutes (every step has its own limit).
#
#   bench/gpu_check.sh [--wheels DIR]   install from wheels built beforehand, then run every check
#   bench/gpu_check.sh --smoke          the same checks, tiny, on the CPU, installing nothing (CI runs this)
#
# The wheels come from `python bench/gpu_wheels.py DIR` on a machine with a package index: every
# dependency the GPU machine lacks (it has torch, torchvision, numpy, pillow, tqdm, pyyaml, pytest),
# plus this project. Steps: install (a venv that sees the system's torch), the `cuda` tests, bf16 vs
# fp32 and GPU-resize agreement, bench/gpu.py's table, the rows of items 1-3 (bench/targets.py), peak
# GPU memory 3000 vs 300 frames, torch.compile. Logs and summary.txt go to $OUT (default gpu_check_out).
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
WHEELS=wheels
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --wheels) WHEELS=${2:?--wheels needs a folder}; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
: > "$OUT/summary.txt"
PY=${PYTHON:-python3}
FAILED=0

# step NAME LIMIT_S COMMAND...: run with a time limit, log to $OUT/NAME.log, one summary line
step() {
  local name=$1 limit=$2 start=$SECONDS rc status
  shift 2
  echo
  echo "=== $name (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) status=ok ;;
    124|137) status="timed out after ${limit} s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  [ "$rc" = 0 ] || FAILED=1
  printf '%-10s %-28s %4d s\n' "$name" "$status" $((SECONDS - start)) | tee -a "$OUT/summary.txt"
  return "$rc"
}

install() {
  if [ ! -f "$WHEELS/requirements.txt" ]; then
    echo "no wheels in '$WHEELS': build them with 'python bench/gpu_wheels.py $WHEELS' where pip can reach an index"
    return 1
  fi
  if [ ! -x .gpu-venv/bin/python ] && ! "$PY" -m venv --system-site-packages .gpu-venv; then
    echo "no venv module: installing into the user site instead"
    "$PY" -m pip install --user --break-system-packages --no-index --find-links "$WHEELS" -r "$WHEELS/requirements.txt"
    return
  fi
  .gpu-venv/bin/python -m pip install --no-index --find-links "$WHEELS" -r "$WHEELS/requirements.txt" &&
    .gpu-venv/bin/python -c "import torch, napari_auralsam2; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
}

if [ "$SMOKE" = 1 ]; then
  export OMP_NUM_THREADS=1  # CI shares its cores: one torch thread each is fastest
  step tests 300 "$PY" -m pytest -q -m cuda tests -p no:cacheprovider
  step checks 600 "$PY" bench/gpu_check.py all --smoke
  step gpu 600 "$PY" bench/gpu.py --device cpu --model hiera_t --image-size 64 --frames 3 --size 96x64 \
    --windows 5 --repeats 1
  step targets 600 "$PY" bench/targets.py --device cpu --image-size 64 --objects 2 --object-frames 3 \
    --decode-frames 3 --minutes 0.1 --repeats 1
else
  step install 40 install || { echo "install failed: see $OUT/install.log"; exit 1; }
  [ -x .gpu-venv/bin/python ] && PY=.gpu-venv/bin/python
  step tests 110 "$PY" -m pytest -q -rs -s -m cuda tests -p no:cacheprovider
  step agreement 35 "$PY" bench/gpu_check.py agreement
  step gpu 70 "$PY" bench/gpu.py --frames 64 --repeats 1
  step targets 70 "$PY" bench/targets.py --device cuda --model hiera_l --image-size 1024 \
    --decode-image-size 1024 --repeats 1
  step memory 90 "$PY" bench/gpu_check.py memory --model hiera_t --lengths 300 3000
  step compile 55 "$PY" bench/gpu_check.py compile
fi

echo
echo "=== summary ($OUT/summary.txt)"
cat "$OUT/summary.txt"
exit "$FAILED"
