"""Helpers for the CVAT tests: the shared tiny engine, CVAT-style images and data folders, the nuclio main.py files."""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from nuclio_sdk import Event
from nuclio_sdk.test import Platform
from nuclio_sdk.event import EventDeserializerKinds
from PIL import Image

from napari_auralsam2.core.video import open_video
from napari_auralsam2.cvat.streams import shared_engine

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "cvat_serverless" / "pytorch" / "auralsam2"
KINDS = ("interactor", "tracker", "detector")
#: what the nuclio functions read from their environment in these tests (tiny random model)
TEST_ENV = {"AURALSAM2_MODEL": "hiera_t", "AURALSAM2_IMAGE_SIZE": "128", "AURALSAM2_WEIGHTS": "random",
            "AURALSAM2_DEVICE": "cpu"}
#: object-score bias: random weights mostly say "no object"; this makes masks non-empty so that
#: the mask paths (encoding, polygons, uploads) are exercised with real, if meaningless, content
PRESENCE_BIAS = 10.0


def tiny_engine():
    """hiera_t at 128 px, random weights, object head biased to 'present' (shared by all CVAT tests)."""
    engine = shared_engine(model="hiera_t", image_size=128, weights="random", device="cpu")
    head = engine.model.v_model.sam_mask_decoder.pred_obj_score_head
    last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias.fill_(PRESENCE_BIAS)
    return engine


def encode(frame: np.ndarray, fmt: str = "PNG", **options) -> str:
    """base64 of a frame as CVAT's lambda manager sends it (standard, padded, no data: prefix)."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, fmt, **options)
    return base64.b64encode(buffer.getvalue()).decode("utf-8")


def scene(height: int = 48, width: int = 64, shift: int = 0) -> np.ndarray:
    """A bright rectangle on a dark textured background, moved right by ``shift`` pixels."""
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    frame[12:30, 10 + shift:32 + shift] = (230, 200, 40)
    return frame


def load_main(kind: str):
    """Import cvat_serverless/.../<kind>/nuclio/main.py the way nuclio does (its folder on sys.path)."""
    folder = FUNCTIONS / kind / "nuclio"
    name = f"auralsam2_nuclio_{kind}_main"
    if name in sys.modules:
        return sys.modules[name]
    sys.modules.pop("model_handler", None)
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(name, folder / "main.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("model_handler", None)
    return module


def start_functions(env: dict[str, str]) -> tuple[Platform, dict]:
    """The three nuclio functions started on `nuclio_sdk.test.Platform` with `env` set while they start."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        platform = Platform()
        mains = {kind: load_main(kind) for kind in KINDS}
        for main in mains.values():
            platform.call_handler(main.handler, Event(body={}))
    return platform, mains


def video_manifest(path: Path) -> str:
    """The ``manifest.jsonl`` CVAT writes next to an uploaded video (utils/dataset_manifest)."""
    with open_video(path) as video:
        properties = {"name": path.name, "resolution": [video.width, video.height], "length": len(video)}
    lines = [{"version": "1.0"}, {"type": "video"}, {"properties": properties}, {"number": 0, "pts": 0,
                                                                                  "checksum": "0" * 32}]
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)


def cvat_upload(data_dir: Path, data_id: int, video: Path, name: str | None = None) -> Path:
    """Put a video where CVAT keeps a task's upload: ``<data dir>/data/<id>/raw/<file>`` + manifest."""
    raw = data_dir / "data" / str(data_id) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    target = raw / (name or video.name)
    shutil.copy(video, target)
    (raw / "manifest.jsonl").write_text(video_manifest(target))
    return target


def nuclio_event(body: bytes, headers: dict[str, str] | None = None, method: str = "POST", path: str = "/") -> Event:
    """An HTTP request as nuclio's Python wrapper hands it to a handler: the event message
    deserialized by nuclio_sdk itself (a JSON body is decoded there, or left as bytes if it cannot be)."""
    headers = {"Content-Type": "application/json"} if headers is None else headers
    content_type = next((value for key, value in headers.items() if key.lower() == "content-type"), "")
    message = {"body": body, "content_type": content_type, "trigger": {"kind": "http", "name": "myHttpTrigger"},
               "fields": {}, "headers": headers, "id": "0", "method": method, "path": path, "size": len(body),
               "timestamp": 0, "url": path, "shard_id": 0, "num_shards": 0, "type": "", "type_version": "",
               "version": ""}
    return Event.deserialize(message, kind=EventDeserializerKinds.msgpack)
