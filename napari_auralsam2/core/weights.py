"""Where pretrained weights live, how they are fetched, and `load_engine` (the one way hosts load a model).

Weights are looked up in `AURALSAM2_HOME` (default `~/.cache/auralsam2`): a file put there by hand
(`<home>/<name>`) wins; otherwise it comes from the Hugging Face Hub with `huggingface_hub`, into
the Hub cache layout under `<home>/hub` (resumable downloads, pinned revisions). Every weight
file's SHA-256 is pinned in `<home>/<name>.sha256` on first use and checked on every load.
Offline, the error lists which files to put where. Nothing is downloaded at import time.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import AuralSAM2Error, WeightsMissingError
from .model.auralsam2 import SAM2_CONFIGS, build_auralsam2
from .model.checkpoint import (checkpoint_variant, existing_checkpoint, load_checkpoint, read_state_dict,
                               remap_legacy_keys)
from .model.text import TEXT_MODEL_FILES, TEXT_MODEL_REPO, TEXT_MODEL_REVISION
from .session import Engine

HOME_ENV = "AURALSAM2_HOME"
DEFAULT_HOME = Path("~/.cache/auralsam2")
HUB_CACHE = "hub"  # huggingface_hub's cache, inside AURALSAM2_HOME
ENDPOINT_ENV = "HF_ENDPOINT"  # huggingface_hub's own setting, read at call time
PROBE_TIMEOUT_S = 10
RANDOM_WEIGHTS_BANNER = "*** RANDOM WEIGHTS: masks are meaningless; this only exercises the pipeline ***"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightFile:
    """A weight file on the Hugging Face Hub; `sha256=None` means pinned on first use (a `.sha256` sidecar)."""

    name: str  # the file's name in AURALSAM2_HOME
    repo: str
    filename: str  # its path in the repository
    revision: str = "main"
    sha256: str | None = None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}/resolve/{self.revision}/{self.filename}"


def _sam2(size: str, suffix: str) -> WeightFile:
    name = f"sam2_hiera_{suffix}.pt"
    return WeightFile(name, f"facebook/sam2-hiera-{size}", name)


#: SAM 2.0 (AuralSAM2 was trained on 2.0, not 2.1), as Meta publishes them on the Hub
SAM2_WEIGHTS = {"hiera_t": _sam2("tiny", "tiny"), "hiera_s": _sam2("small", "small"),
                "hiera_b+": _sam2("base-plus", "base_plus"), "hiera_l": _sam2("large", "large")}
AURALSAM2_REPO = "yyliu01/AuralSAM2"


def _release(name: str) -> WeightFile:
    return WeightFile(name, AURALSAM2_REPO, f"ckpts/{name}")


#: released AuralSAM2 weights (all on SAM2 Hiera-L); v2 was trained on v1s+v1m+v2, the broadest;
#: refavs reads a text too (Ref-AVS: the sounding object a text refers to)
AURALSAM2_WEIGHTS = {
    "avs_v1s": _release("auralsam2_avs_v1s.pth"),
    "avs_v1m": _release("auralsam2_avs_v1m.pth"),
    "avs_v2": _release("auralsam2_avs_v2.pth"),
    "refavs": _release("auralsam2_refavs_best.pth"),
}
TEXT_RELEASES = ("refavs",)
TEXT_MODEL_DIR = "distilroberta-base"  # a hand-copied text model folder in AURALSAM2_HOME
RELEASED_MODEL = "hiera_l"
DEFAULT_RELEASE = "avs_v2"


def weights_home() -> Path:
    return Path(os.environ.get(HOME_ENV, DEFAULT_HOME)).expanduser()


def release_variant(release: str) -> str:
    """The model variant a release's weights are for."""
    return "refavs" if release in TEXT_RELEASES else "avs"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, weight: WeightFile, home: Path, pin: bool = False) -> None:
    """Check a file against its published checksum or the one pinned at download (`pin`: pin it now if none)."""
    sidecar = home / f"{weight.name}.sha256"
    expected = weight.sha256 or (sidecar.read_text().split()[0] if sidecar.is_file() else None)
    if expected is None and not pin:
        return
    digest = _sha256(path)
    if expected is None:
        sidecar.write_text(f"{digest}  {weight.name}\n")
    elif digest != expected:
        raise AuralSAM2Error(f"{path.resolve()} is corrupted (checksum mismatch)", "delete it and run again to re-download")


def _hub_errors() -> tuple[type[BaseException], ...]:
    import httpx

    return OSError, httpx.HTTPError  # huggingface_hub's errors are OSErrors; httpx's can escape a transfer


def _on_hub(repo: str, filename: str, revision: str) -> bool:
    """One quick look at the Hub (no retries), so that offline runs fail fast with our message."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision, endpoint=os.environ.get(ENDPOINT_ENV)),
                             timeout=PROBE_TIMEOUT_S)
    except _hub_errors():
        return False
    return True


def _hub_file(weight: WeightFile, home: Path, download: bool) -> Path | None:
    from huggingface_hub import hf_hub_download

    if download and not _on_hub(weight.repo, weight.filename, weight.revision):
        return None
    try:
        return Path(hf_hub_download(weight.repo, weight.filename, revision=weight.revision,
                                    cache_dir=home / HUB_CACHE, local_files_only=not download,
                                    endpoint=os.environ.get(ENDPOINT_ENV)))
    except _hub_errors():
        return None  # not cached / offline, blocked or not published: reported by the caller


def fetch(weight: WeightFile, home: Path, allow_download: bool = True) -> Path | None:
    """The file from the Hub cache under `home` (downloaded first if allowed and missing); None if unavailable."""
    path = _hub_file(weight, home, download=False)  # the cache first: no network when it is there
    if path is not None or not allow_download:
        return path
    path = _hub_file(weight, home, download=True)
    if path is not None and weight.sha256 is not None and _sha256(path) != weight.sha256:
        blob = path.resolve()
        path.unlink()
        blob.unlink()
        raise AuralSAM2Error(f"download of {weight.name} is corrupted (checksum mismatch)", "try again")
    return path


def ensure(weights: list[WeightFile], allow_download: bool = True) -> list[Path]:
    """Paths of the files (hand-placed in the home folder, else from the Hub), checksums verified."""
    home = weights_home()
    paths, missing = [], []
    for weight in weights:
        path = home / weight.name
        if not path.is_file():
            home.mkdir(parents=True, exist_ok=True)
            path = fetch(weight, home, allow_download) or path
        if path.is_file():
            verify(path, weight, home, pin=path.parent != home)
        else:
            missing.append(weight)
        paths.append(path)
    if missing:
        listing = "; ".join(f"{w.name} from {w.url}" for w in missing)
        raise WeightsMissingError(f"pretrained weights are missing and could not be downloaded: put {listing} into {home}",
                                  f"or set {HOME_ENV}, pass --checkpoint/--sam2-checkpoint, or use --weights random")
    return paths


def _text_snapshot(home: Path, download: bool) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(TEXT_MODEL_REPO, revision=TEXT_MODEL_REVISION, allow_patterns=list(TEXT_MODEL_FILES),
                                      cache_dir=home / HUB_CACHE, local_files_only=not download,
                                      endpoint=os.environ.get(ENDPOINT_ENV)))
    except _hub_errors():
        return None


def ensure_text_model(allow_download: bool = True) -> Path:
    """The folder of the Ref-AVS text model: hand-copied into the home folder, else the Hub snapshot at
    its pinned revision (from the cache, downloaded first if allowed and missing)."""
    home = weights_home()
    folder = home / TEXT_MODEL_DIR
    if (folder / "config.json").is_file():
        return folder
    snapshot = _text_snapshot(home, download=False)
    if snapshot is None and allow_download and _on_hub(TEXT_MODEL_REPO, TEXT_MODEL_FILES[0], TEXT_MODEL_REVISION):
        home.mkdir(parents=True, exist_ok=True)
        snapshot = _text_snapshot(home, download=True)
    if snapshot is None:
        raise WeightsMissingError(
            f"the Ref-AVS text model is missing and could not be downloaded: put the files of {TEXT_MODEL_REPO} "
            f"(revision {TEXT_MODEL_REVISION[:7]}, https://huggingface.co/{TEXT_MODEL_REPO}) into {folder}",
            "or pass --text-model DIR, or use --weights random")
    return snapshot


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class WeightPaths:
    """The files a model is loaded from (None: not needed)."""

    checkpoint: Path
    sam2_checkpoint: Path | None


def resolve_weights(model: str, checkpoint: str | Path | None, sam2_checkpoint: str | Path | None,
                    release: str = DEFAULT_RELEASE, allow_download: bool = True) -> WeightPaths:
    """The AuralSAM2 and SAM2 files to load: explicit paths first, else the released files from the cache."""
    if checkpoint is not None:
        return WeightPaths(existing_checkpoint(checkpoint),
                           existing_checkpoint(sam2_checkpoint) if sam2_checkpoint is not None else None)
    if model != RELEASED_MODEL:
        raise AuralSAM2Error(f"released AuralSAM2 weights exist for {RELEASED_MODEL} only",
                             "pass --checkpoint for your own fine-tuned model, or --weights random")
    if release not in AURALSAM2_WEIGHTS:
        raise AuralSAM2Error(f"unknown release {release!r}", f"choose one of {', '.join(AURALSAM2_WEIGHTS)}")
    wanted = [AURALSAM2_WEIGHTS[release]] + ([SAM2_WEIGHTS[model]] if sam2_checkpoint is None else [])
    found = ensure(wanted, allow_download)
    return WeightPaths(found[0], existing_checkpoint(sam2_checkpoint) if sam2_checkpoint is not None else found[1])


def check_weight_options(model: str, weights: str, checkpoint: str | Path | None = None,
                         sam2_checkpoint: str | Path | None = None, release: str = DEFAULT_RELEASE) -> None:
    """What can be checked of the model options without reading or downloading anything, so a host
    can refuse them before heavy work (a CVAT backup download, decoding)."""
    if model not in SAM2_CONFIGS:
        raise AuralSAM2Error(f"unknown model {model!r}", f"choose one of {', '.join(SAM2_CONFIGS)}")
    if weights not in ("auto", "random"):
        raise AuralSAM2Error(f"unknown weights mode {weights!r}", "use 'auto' or 'random'")
    if release not in AURALSAM2_WEIGHTS:
        raise AuralSAM2Error(f"unknown release {release!r}", f"choose one of {', '.join(AURALSAM2_WEIGHTS)}")
    if weights == "random":
        return
    for path in (checkpoint, sam2_checkpoint):
        if path is not None:
            existing_checkpoint(path)
    if checkpoint is None and model != RELEASED_MODEL:
        raise AuralSAM2Error(f"released AuralSAM2 weights exist for {RELEASED_MODEL} only",
                             "pass --checkpoint for your own fine-tuned model, or --weights random")


def load_engine(model: str = RELEASED_MODEL, image_size: int = 1024, weights: str = "auto",
                checkpoint: str | Path | None = None, sam2_checkpoint: str | Path | None = None,
                release: str = DEFAULT_RELEASE, device: str | None = None, window: int | None = None,
                allow_download: bool = True, text_model: str | Path | None = None) -> Engine:
    """Build the model once and load its weights (files are resolved before anything heavy is built).

    weights="random": random init (tests, demos without weights; say so loudly); `release` picks the
    variant ("refavs": Ref-AVS, with text).
    weights="auto": explicit paths if given, else the released files from the cache (downloaded if needed).
    The variant follows the checkpoint's content. Ref-AVS reads its text model from `text_model` (a
    Hugging Face folder of distilroberta-base), else from the cache (downloaded at a pinned revision).
    window: frames encoded and fused together (default: the variant's clip length).
    """
    check_weight_options(model, weights, checkpoint, sam2_checkpoint, release)
    files, state, variant = None, None, release_variant(release)
    if weights == "auto":
        files = resolve_weights(model, checkpoint, sam2_checkpoint, release, allow_download)
        state = remap_legacy_keys(read_state_dict(files.checkpoint))
        variant = checkpoint_variant(state)
        if variant == "refavs" and text_model is None:
            text_model = ensure_text_model(allow_download)
    net = build_auralsam2(SAM2_CONFIGS[model], image_size=image_size, device="cpu", variant=variant,
                          text_model=text_model if variant == "refavs" else None)
    if files is not None:
        load_checkpoint(net, files.checkpoint, files.sam2_checkpoint, state=state)
    return Engine(net, device=device or default_device(), window=window if window is not None else net.clip_frames,
                  random_weights=files is None)
