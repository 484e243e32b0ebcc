"""Build the wheel folder that bench/gpu_check.sh installs on a GPU machine without a package index.

    .venv/bin/python bench/gpu_wheels.py wheels            # here, where pip reaches PyPI
    scp -r wheels <gpu machine>:<repo>/ && bench/gpu_check.sh --wheels wheels

The GPU machine has Python 3.12 with torch, torchvision, torchaudio, numpy, pillow, tqdm, pyyaml
and pytest (../shared/docs/stack.md); everything else this project and its `cvat` extra need is
taken at the versions installed in *this* environment: binary wheels for CPython 3.12 manylinux
x86_64 are downloaded, packages published only as sources (sam2, antlr4, iopath) are built here
as pure-Python wheels, and so is this project. `requirements.txt` in the folder pins them all.
Never ships torch, numpy or pillow (they must stay the GPU machine's own).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "napari-auralsam2"
EXTRAS = ("cvat",)
EXTRA_PACKAGES = ("pytest-timeout",)  # setup.cfg sets a pytest timeout
#: installed on the GPU machine already (and their own dependencies with them)
PREINSTALLED = {canonicalize_name(n) for n in (
    "torch", "torchvision", "torchaudio", "numpy", "pillow", "tqdm", "pyyaml", "pytest", "triton", "setuptools",
    "typing-extensions", "packaging", "filelock", "sympy", "networkx", "jinja2", "fsspec")}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def closure(python: str) -> dict[str, str]:
    """name -> installed version of everything the project needs beyond the GPU machine's own packages."""
    environment = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
                   "platform_python_implementation": "CPython", "os_name": "posix"}
    wanted = [Requirement(f"{PROJECT}[{','.join(EXTRAS)}]"), *map(Requirement, EXTRA_PACKAGES)]
    found: dict[str, str] = {}
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name in PREINSTALLED or name in found:
            continue
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            sys.exit(f"gpu_wheels.py: {requirement.name} is not installed here; run from the project's venv")
        found[name] = dist.version
        for text in dist.requires or []:
            needed = Requirement(text)
            extras = requirement.extras or {""}
            if needed.marker is None or any(needed.marker.evaluate({**environment, "extra": e}) for e in extras):
                wanted.append(needed)
    found.pop(canonicalize_name(PROJECT))
    return found


def pip(*args: str, env: dict | None = None) -> bool:
    return subprocess.run([sys.executable, "-m", "pip", *args], env=env).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", default=ROOT / "wheels")
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python version")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    packages = closure(args.python)
    platforms = [f"--platform={p}" for p in PLATFORMS]
    built = []
    for name, version in sorted(packages.items()):
        pinned = f"{name}=={version}"
        if not pip("download", "--quiet", "--no-deps", "--only-binary=:all:", f"--python-version={args.python}",
                   "--implementation=cp", *platforms, "--dest", str(folder), pinned):
            print(f"{pinned}: no wheel for Python {args.python}, building one from its sources", flush=True)
            if not pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(folder), pinned,
                       env=dict(os.environ, SAM2_BUILD_CUDA="0")):
                sys.exit(f"gpu_wheels.py: could not get a wheel of {pinned}")
            built.append(pinned)
    if not pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(folder), str(ROOT)):
        sys.exit("gpu_wheels.py: could not build this project's wheel")
    requirements = [f"{PROJECT}[{','.join(EXTRAS)}]", *(f"{n}=={v}" for n, v in sorted(packages.items()))]
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    size = sum(f.stat().st_size for f in folder.glob("*.whl")) / 2**20
    print(f"{len(list(folder.glob('*.whl')))} wheels ({size:.0f} MiB) in {folder}; built from sources: "
          f"{', '.join(built) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
