"""Where pretrained weights live, how they are fetched, and `load_engine` (the one way hosts load a model).

Weights are looked up in `AURALSAM2_HOME` (default `~/.cache/auralsam2`). Missing files are
downloaded when the machine is online (progress bar, checksum); offline, the error lists which
files to put where. Nothing is downloaded at import time.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import AuralSAM2Error, WeightsMissingError
from .model.auralsam2 import SAM2_CONFIGS, build_auralsam2
from .model.checkpoint import existing_checkpoint, load_checkpoint
from .session import DEFAULT_WINDOW, Engine

HOME_ENV = "AURALSAM2_HOME"
DEFAULT_HOME = Path("~/.cache/auralsam2")
RANDOM_WEIGHTS_BANNER = "*** RANDOM WEIGHTS: masks are meaningless; this only exercises the pipeline ***"
DOWNLOAD_TIMEOUT_S = 30
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightFile:
    """A published weight file; `sha256=None` means pinned on first download (a `.sha256` sidecar)."""

    name: str
    url: str
    sha256: str | None = None


SAM2_WEIGHTS = {
    "hiera_t": WeightFile("sam2_hiera_tiny.pt", "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_tiny.pt"),
    "hiera_s": WeightFile("sam2_hiera_small.pt", "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_small.pt"),
    "hiera_b+": WeightFile("sam2_hiera_base_plus.pt", "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_base_plus.pt"),
    "hiera_l": WeightFile("sam2_hiera_large.pt", "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt"),
}
_HF = "https://huggingface.co/yyliu01/AuralSAM2/resolve/main/ckpts/"
#: released AuralSAM2 weights (all on SAM2 Hiera-L); v2 was trained on v1s+v1m+v2, the broadest
AURALSAM2_WEIGHTS = {
    "avs_v1s": WeightFile("auralsam2_avs_v1s.pth", _HF + "auralsam2_avs_v1s.pth"),
    "avs_v1m": WeightFile("auralsam2_avs_v1m.pth", _HF + "auralsam2_avs_v1m.pth"),
    "avs_v2": WeightFile("auralsam2_avs_v2.pth", _HF + "auralsam2_avs_v2.pth"),
}
VGGISH_WEIGHTS = WeightFile("vggish-10086976.pth",
                            "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth")
RELEASED_MODEL = "hiera_l"
DEFAULT_RELEASE = "avs_v2"


def weights_home() -> Path:
    return Path(os.environ.get(HOME_ENV, DEFAULT_HOME)).expanduser()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected: str | None) -> None:
    """Check a file against its published or first-download checksum."""
    sidecar = path.with_name(path.name + ".sha256")
    expected = expected or (sidecar.read_text().split()[0] if sidecar.is_file() else None)
    if expected is not None and _sha256(path) != expected:
        raise AuralSAM2Error(f"{path} is corrupted (checksum mismatch)", "delete it and run again to re-download")


def download(weight: WeightFile, dest: Path) -> Path:
    """Fetch one file with a progress bar into dest (atomic rename), then pin/verify its checksum."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(weight.url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=weight.name, file=sys.stderr) as bar:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                bar.update(len(block))
    digest = _sha256(partial)
    if weight.sha256 is not None and digest != weight.sha256:
        partial.unlink()
        raise AuralSAM2Error(f"download of {weight.name} is corrupted (checksum mismatch)", "try again")
    shutil.move(partial, dest)
    dest.with_name(dest.name + ".sha256").write_text(f"{digest}  {dest.name}\n")
    return dest


def ensure(weights: list[WeightFile], allow_download: bool = True) -> list[Path]:
    """Paths of the files in the cache, downloading the missing ones when possible."""
    home = weights_home()
    paths, missing = [], []
    for weight in weights:
        path = home / weight.name
        if not path.is_file() and allow_download:
            try:
                download(weight, path)
            except OSError:
                pass  # offline or blocked: reported below with instructions
        if path.is_file():
            verify(path, weight.sha256)
        else:
            missing.append(weight)
        paths.append(path)
    if missing:
        listing = "; ".join(f"{w.name} from {w.url}" for w in missing)
        raise WeightsMissingError(f"pretrained weights are missing and could not be downloaded: put {listing} into {home}",
                                  f"or set {HOME_ENV}, pass --checkpoint/--sam2-checkpoint, or use --weights random")
    return paths


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_weights(model: str, checkpoint: str | Path | None, sam2_checkpoint: str | Path | None,
                    release: str = DEFAULT_RELEASE, allow_download: bool = True) -> tuple[Path, Path | None]:
    """The (AuralSAM2, SAM2) files to load: explicit paths first, else the released files from the cache."""
    if checkpoint is not None:
        return existing_checkpoint(checkpoint), existing_checkpoint(sam2_checkpoint) if sam2_checkpoint else None
    if model != RELEASED_MODEL:
        raise AuralSAM2Error(f"released AuralSAM2 weights exist for {RELEASED_MODEL} only",
                             "pass --checkpoint for your own fine-tuned model, or --weights random")
    if release not in AURALSAM2_WEIGHTS:
        raise AuralSAM2Error(f"unknown release {release!r}", f"choose one of {', '.join(AURALSAM2_WEIGHTS)}")
    wanted = [AURALSAM2_WEIGHTS[release]] + ([SAM2_WEIGHTS[model]] if sam2_checkpoint is None else [])
    found = ensure(wanted, allow_download)
    return found[0], existing_checkpoint(sam2_checkpoint) if sam2_checkpoint is not None else found[1]


def load_engine(model: str = RELEASED_MODEL, image_size: int = 1024, weights: str = "auto",
                checkpoint: str | Path | None = None, sam2_checkpoint: str | Path | None = None,
                release: str = DEFAULT_RELEASE, device: str | None = None, window: int = DEFAULT_WINDOW,
                allow_download: bool = True) -> Engine:
    """Build the model once and load its weights (files are resolved before anything heavy is built).

    weights="random": random init (tests, demos without weights; say so loudly).
    weights="auto": explicit paths if given, else the released files from the cache (downloaded if needed).
    """
    if model not in SAM2_CONFIGS:
        raise AuralSAM2Error(f"unknown model {model!r}", f"choose one of {', '.join(SAM2_CONFIGS)}")
    if weights not in ("auto", "random"):
        raise AuralSAM2Error(f"unknown weights mode {weights!r}", "use 'auto' or 'random'")
    files = resolve_weights(model, checkpoint, sam2_checkpoint, release, allow_download) if weights == "auto" else None
    net = build_auralsam2(SAM2_CONFIGS[model], image_size=image_size, device="cpu")
    if files is not None:
        load_checkpoint(net, *files)
    return Engine(net, device=device or default_device(), window=window, random_weights=files is None)
