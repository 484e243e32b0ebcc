"""Saved work for one video: a versioned sidecar file that any host can write and restore bit-exact.

The sidecar of ``talk.mp4`` is ``talk.mp4.auralsam2.npz`` beside it (`sidecar_path`): **one** zip
file, so a save is atomic (written to a temporary file in the same folder, then renamed over the
old one) and masks and bookkeeping can never disagree; a folder of files could be left half
written. It holds:

* ``manifest.json``: format name and version, the video's identity (name, frames, size, fps and
  the fingerprints of its first, middle and last frame), the objects (id, name, text, committed flag,
  audio guidance, prompts: clicks, boxes, audio-only and mask prompts, with their texts), the
  host's edit-protection state (any JSON value, kept as is) and the engine settings (a JSON object).
* ``layers/<name>.npy``: named integer label stacks ``[T, H, W]`` (e.g. the working masks and the
  committed ones), deflate-compressed, written frame by frame.
* ``prompt_masks.npy``: bool ``[K, H, W]``, the mask prompts the manifest refers to by index.

`save_sidecar` refuses to replace an existing file unless ``overwrite=True``; `load_sidecar`
refuses a sidecar of another video (different frame count, size or picture) with one line.
"""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AuralSAM2Error
from .objects import ObjectRecord
from .session import Prompt
from .video import fingerprint

FORMAT = "napari-auralsam2 sidecar"
VERSION = 1
SUFFIX = ".auralsam2.npz"
MANIFEST = "manifest.json"
LAYERS_FOLDER = "layers"
PROMPT_MASKS = "prompt_masks.npy"
ZIP_LEVEL = 1  # label stacks are long runs: fast deflate already shrinks them ~100x
#: mean |difference| (grey levels) of the frame fingerprints under which the video counts as the same
#: (decoders may differ slightly; another video differs by tens)
FINGERPRINT_TOLERANCE = 8.0


class SidecarError(AuralSAM2Error):
    """A sidecar cannot be written, read, or belongs to another video."""


@dataclass
class VideoIdentity:
    """What a sidecar remembers of its video, enough to refuse another one."""

    name: str
    num_frames: int
    height: int
    width: int
    fps: float
    fingerprints: list[list[int]]  # 8x8 RGB block means of the frames in `fingerprint_frames`

    @staticmethod
    def fingerprint_frames(num_frames: int) -> list[int]:
        return sorted({0, num_frames // 2, max(num_frames - 1, 0)}) if num_frames else []

    @classmethod
    def of(cls, video) -> "VideoIdentity":
        """The identity of a `VideoSource` (decodes three frames)."""
        frames = cls.fingerprint_frames(len(video))
        return cls(name=video.path.name if getattr(video, "path", None) else "", num_frames=len(video),
                   height=int(video.height), width=int(video.width), fps=float(video.fps),
                   fingerprints=[fingerprint(video.frame(i)).tolist() for i in frames])

    def mismatch(self, other: "VideoIdentity") -> str | None:
        """Why `other` is not this video, or None when it is."""
        mine = f"{self.num_frames} frames {self.width}x{self.height}"
        theirs = f"{other.num_frames} frames {other.width}x{other.height}"
        if mine != theirs:
            return f"it was saved for {mine}, this video has {theirs}"
        a, b = np.asarray(self.fingerprints, np.float32), np.asarray(other.fingerprints, np.float32)
        if a.shape != b.shape or (a.size and float(np.abs(a - b).mean()) > FINGERPRINT_TOLERANCE):
            return "its frames show another picture"
        return None


@dataclass
class Sidecar:
    """Everything saved for one video."""

    video: VideoIdentity
    layers: dict[str, np.ndarray]  # name -> integer labels [T, H, W]
    objects: list[ObjectRecord] = field(default_factory=list)
    protection: Any = None  # the host's edit-protection state: any JSON value
    settings: dict = field(default_factory=dict)  # engine settings (model, image size, audio, ...)


def sidecar_path(video_path: str | Path) -> Path:
    """``talk.mp4`` -> ``talk.mp4.auralsam2.npz`` (the extension stays: talk.mov gets its own)."""
    video_path = Path(video_path)
    return video_path.with_name(video_path.name + SUFFIX)


# -- writing ------------------------------------------------------------------------------------
def _json_exact(value: Any, what: str) -> Any:
    """`value` itself when JSON gives it back equal (so a load restores it exactly), else a SidecarError."""
    try:
        if json.loads(json.dumps(value)) == value:
            return value
    except (TypeError, ValueError):
        pass
    raise SidecarError(f"the {what} cannot be saved exactly as JSON",
                       "use str keys, lists, numbers, strings, booleans and None")


def _prompt_entry(prompt: Prompt, masks: list[np.ndarray]) -> dict:
    entry = {}
    for spec in dataclasses.fields(prompt):
        value = getattr(prompt, spec.name)
        if spec.name == "mask":
            if value is not None:
                masks.append(np.asarray(value) != 0)
                entry["mask"] = len(masks) - 1
        elif spec.name == "points":
            entry["points"] = [[float(x), float(y)] for x, y in value]
        elif spec.name == "box":
            entry["box"] = None if value is None else [float(v) for v in value]
        elif spec.name in ("frame", "object_id"):
            entry[spec.name] = int(value)
        elif spec.name == "labels":
            entry["labels"] = [int(v) for v in value]
        else:
            entry[spec.name] = value
    return entry


def _check_layers(sidecar: Sidecar) -> None:
    shape = (sidecar.video.num_frames, sidecar.video.height, sidecar.video.width)
    for name, labels in sidecar.layers.items():
        if not name or "/" in name:
            raise SidecarError(f"layer name {name!r} cannot be saved", "use a plain non-empty name")
        if tuple(labels.shape) != shape or not np.issubdtype(labels.dtype, np.integer):
            raise SidecarError(f"layer {name!r} is {labels.dtype} {tuple(labels.shape)}, the video needs integer "
                               f"labels {shape}")


def _write_npy(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    """One .npy member, streamed frame by frame (never a second [T, H, W] copy in memory)."""
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False, "shape": array.shape}
    with archive.open(name, "w", force_zip64=True) as handle:
        np.lib.format.write_array_header_2_0(handle, header)
        for frame in array:
            handle.write(np.ascontiguousarray(frame).tobytes())


def save_sidecar(path: str | Path, sidecar: Sidecar, overwrite: bool = False) -> Path:
    """Write `sidecar` to `path` atomically; an existing file is replaced only with ``overwrite=True``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise SidecarError(f"{path} already exists", "load it to resume, or save with overwrite=True to replace it")
    if path.is_dir():
        raise SidecarError(f"{path} is a folder", "choose a file name for the saved work")
    _check_layers(sidecar)
    masks: list[np.ndarray] = []
    objects = [{"object_id": int(o.object_id), "name": str(o.name), "text": str(o.text), "committed": bool(o.committed),
                "audio_guidance": bool(o.audio_guidance), "prompts": [_prompt_entry(p, masks) for p in o.prompts]}
               for o in sidecar.objects]
    manifest = {"format": FORMAT, "version": VERSION, "video": dataclasses.asdict(sidecar.video),
                "layers": list(sidecar.layers), "objects": objects,
                "protection": _json_exact(sidecar.protection, "edit-protection state"),
                "settings": _json_exact(sidecar.settings, "engine settings")}
    shape = (sidecar.video.height, sidecar.video.width)
    if any(mask.shape != shape for mask in masks):
        raise SidecarError(f"a mask prompt is not {shape[1]}x{shape[0]}, the video's size")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL,
                             allowZip64=True) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=1))
            for name, labels in sidecar.layers.items():
                _write_npy(archive, f"{LAYERS_FOLDER}/{name}.npy", np.asarray(labels))
            _write_npy(archive, PROMPT_MASKS, np.asarray(masks, dtype=bool).reshape(len(masks), *shape))
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as err:
        raise SidecarError(f"cannot save {path}: {err.strerror or err}", "check the folder is writable") from err
    finally:
        temporary.unlink(missing_ok=True)
    return path


# -- reading ------------------------------------------------------------------------------------
def _prompt(entry: dict, masks: np.ndarray) -> Prompt:
    known = {spec.name for spec in dataclasses.fields(Prompt)}
    values = {key: value for key, value in entry.items() if key in known}
    values["points"] = [tuple(point) for point in entry.get("points", [])]
    values["box"] = None if entry.get("box") is None else tuple(entry["box"])
    values["mask"] = None if entry.get("mask") is None else masks[int(entry["mask"])]
    return Prompt(**values)


def load_sidecar(path: str | Path, video=None) -> Sidecar:
    """Read a sidecar; with `video` (a `VideoSource` or `VideoIdentity`), refuse one saved for another video."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(MANIFEST))
            if manifest.get("format") != FORMAT:
                raise SidecarError(f"{path.name} is not a napari-auralsam2 sidecar")
            if int(manifest.get("version", 0)) > VERSION:
                raise SidecarError(f"{path.name} was saved by a newer napari-auralsam2 (format "
                                   f"{manifest['version']}, this one reads {VERSION})", "upgrade napari-auralsam2")
            identity = VideoIdentity(**manifest["video"])
            if video is not None:
                current = video if isinstance(video, VideoIdentity) else VideoIdentity.of(video)
                why = identity.mismatch(current)
                if why is not None:
                    raise SidecarError(f"{path.name} belongs to another video ({why})",
                                       f"open {identity.name or 'the video it was saved for'}, or start afresh")
            layers = {}
            for name in manifest["layers"]:
                with archive.open(f"{LAYERS_FOLDER}/{name}.npy") as handle:
                    layers[name] = np.lib.format.read_array(handle, allow_pickle=False)
            with archive.open(PROMPT_MASKS) as handle:
                masks = np.lib.format.read_array(handle, allow_pickle=False)
    except SidecarError:
        raise
    except FileNotFoundError as err:
        raise SidecarError(f"no saved work at {path}", "save first, or pick the .auralsam2.npz file") from err
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as err:
        raise SidecarError(f"cannot read {path.name}: {err}", "the file is damaged; pick another or start afresh") \
            from err
    objects = [ObjectRecord(object_id=o["object_id"], name=o["name"], text=o.get("text", ""),
                            committed=o["committed"], audio_guidance=o["audio_guidance"],
                            prompts=[_prompt(p, masks) for p in o["prompts"]])
               for o in manifest["objects"]]
    return Sidecar(video=identity, layers=layers, objects=objects, protection=manifest["protection"],
                   settings=manifest["settings"])


__all__ = ["Sidecar", "ObjectRecord", "VideoIdentity", "SidecarError", "sidecar_path", "save_sidecar",
           "load_sidecar", "VERSION", "SUFFIX"]
