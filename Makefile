# Two entry points, both self-installing: `make demo` (main job) and `make test` (whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
SYSSTAMP := $(VENV)/.sysdeps

TORCH_PINS := torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0
XVFB_PKGS := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0

.PHONY: install sysdeps demo test bench gpu-wheels gpu-check clean

$(PY):
	python3 -m venv $(VENV)

# sam2 1.1.0 is an sdist whose build env would pull another torch: build it against ours.
$(STAMP): pyproject.toml Makefile | $(PY)
	$(PIP) install -q -U pip "setuptools>=70.1" wheel
	$(PIP) install -q $(TORCH_PINS)
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-build-isolation sam2==1.1.0
	$(PIP) install -q -e ".[napari,cvat,batch,refavs,dev]"
	touch $(STAMP)

install: $(STAMP)

# napari's canvas needs a real X server (Qt offscreen has no OpenGL); pytest-xvfb starts it.
$(SYSSTAMP): | $(PY)
	@if ! command -v Xvfb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends $(XVFB_PKGS); \
	  else echo "Xvfb missing: sudo apt-get install $(XVFB_PKGS)"; exit 1; fi; fi
	touch $(SYSSTAMP)

sysdeps: $(SYSSTAMP)

demo: install
	$(VENV)/bin/auralsam2 demo --out demo_out

test: install sysdeps
	$(PY) -m pytest -q tests

bench: install
	$(PY) bench/engine.py

# The GPU check (bench/gpu_check.sh): build its wheels here, copy the repo with wheels/ to the GPU machine,
# run `bench/gpu_check.sh` there. `make test` runs its CPU smoke mode (tests/test_gpu_check.py).
gpu-wheels: install
	$(PY) bench/gpu_wheels.py wheels

gpu-check:
	bench/gpu_check.sh --wheels wheels

clean:
	rm -rf $(VENV) demo_out .pytest_cache wheels gpu_check_out .gpu-venv
