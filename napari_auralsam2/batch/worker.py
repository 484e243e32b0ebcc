"""One batch worker: it loads the engine once, then segments video after video as `segment` does.

Nothing here knows about Ray (`runner` wraps `VideoWorker` in an actor), so a worker is plain
Python: the same `segment_to_folder` as the `segment` command, into a temporary folder that
`outputs.commit` renames when the video is complete. Whatever goes wrong with one video (a broken
file, no audio, a bad prompt, the GPU running out of memory) is that video's failure, with its
one-line error, and the worker goes on with the next one.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..cli import OVERLAY_NAME, _one_line, segment_to_folder
from ..core import load_engine, open_video
from ..core.errors import AuralSAM2Error
from ..core.session import Progress
from ..core.weights import DEFAULT_RELEASE
from . import outputs
from .outputs import DONE, FAILED, Result
from .sources import Job


@dataclass(frozen=True)
class Settings:
    """What every video of a batch shares: the outputs, the prompting defaults and the engine."""

    out: Path
    fmt: str = "png"
    overlay: bool = False
    use_audio: bool = True
    audio_frame: int = 0
    direction: str = "both"
    model: str = "hiera_l"
    image_size: int = 1024
    weights: str = "auto"
    checkpoint: str | None = None
    sam2_checkpoint: str | None = None
    release: str = DEFAULT_RELEASE
    device: str | None = None
    compile: bool = False
    threads: int | None = None

    @property
    def output(self) -> dict:
        """What a video's folder holds (a rerun must ask for the same to skip it)."""
        return {"format": self.fmt, "overlay": self.overlay}


def describe(error: BaseException) -> str:
    """One line; errors we did not anticipate say their type too."""
    if isinstance(error, (AuralSAM2Error, OSError)):
        return _one_line(error)
    return f"{type(error).__name__}: {_one_line(error)}"


class VideoWorker:
    """Holds a loaded engine; `segment(job)` writes one video's results and returns its `Result`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.engine, self.error = None, None
        if settings.threads:
            torch.set_num_threads(settings.threads)
        try:
            self.engine = load_engine(model=settings.model, image_size=settings.image_size, weights=settings.weights,
                                      checkpoint=settings.checkpoint, sam2_checkpoint=settings.sam2_checkpoint,
                                      release=settings.release, device=settings.device)
            if settings.compile:
                self.engine.compile()
        except (AuralSAM2Error, OSError, RuntimeError) as err:
            self.error = describe(err)

    def ready(self) -> str | None:
        """None when the engine is loaded, else why it is not."""
        return self.error

    def segment(self, job: Job, progress: Progress | None = None, attempt: int = 1) -> Result:
        settings, out = self.settings, self.settings.out
        started = time.perf_counter()
        folder = outputs.begin(out, job.name)
        try:
            if self.engine is None:
                raise AuralSAM2Error(f"the model is not loaded ({self.error})")
            video = open_video(job.video, audio=job.audio)
            try:
                overlay = folder / OVERLAY_NAME if settings.overlay else None
                store, _, _, _ = segment_to_folder(self.engine, video, folder, settings.model, job.prompts,
                                                   settings.use_audio, settings.audio_frame, settings.direction,
                                                   settings.fmt, overlay, progress)
            finally:
                video.close()
        except Exception as err:  # noqa: BLE001 - one video's failure must not stop the batch
            shutil.rmtree(folder, ignore_errors=True)
            return Result.of(job, out, FAILED, seconds=time.perf_counter() - started, attempts=attempt,
                             worker=self.worker, error=describe(err))
        seconds = time.perf_counter() - started
        result = Result.of(job, out, DONE, frames=len(store), objects=len(store.object_ids), seconds=seconds,
                           attempts=attempt, worker=self.worker)
        outputs.commit(folder, out, job.name, {"video": str(job.video), **settings.output, "frames": result.frames,
                                               "objects": result.objects, "seconds": seconds, "worker": self.worker})
        return result
