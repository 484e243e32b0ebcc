"""The Ray side of `batch`: a local or existing cluster, one actor per worker, progress and retries.

Ray does the scheduling and the fault tolerance: each worker is an actor holding a loaded engine
(`VideoWorker`); an actor whose process dies is restarted by Ray (it loads the engine again) and
the video it was on is retried once (``max_task_retries``). A video whose worker dies twice is
recorded as failed, and a fresh actor takes the dead one's place. This module only hands the next
video to whichever worker is free, and draws progress from what the workers report to a small
`Board` actor (frames done per video, attempts per video).

Without ``--address`` (or ``RAY_ADDRESS``) Ray starts in this process and stops with it; with one,
the batch joins that cluster, whose nodes need this package installed and the videos and ``--out``
on a shared path.
"""
from __future__ import annotations

import logging
import os
import sys
import uuid
from collections import deque
from typing import Callable

import ray
from ray.exceptions import RayActorError
from tqdm import tqdm

from .outputs import FAILED, Result, Summary
from .sources import BatchError, Job
from .worker import Settings, VideoWorker

ADDRESS_ENV = "RAY_ADDRESS"
#: a local Ray's shared-memory object store: the batch passes only small objects
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20
POLL_SECONDS = 0.25
#: Ray restarts a dead worker and retries the video it was on once
ACTOR_OPTIONS = {"max_restarts": -1, "max_task_retries": 1}
DIED = "its worker died twice (killed, or out of memory)"
BOARD_PREFIX = "auralsam2-batch-board-"


class Board:
    """A Ray actor the workers report to: frames done per video and attempts per video."""

    def __init__(self) -> None:
        self.frames: dict[str, tuple[int, int, str]] = {}
        self.attempts: dict[str, int] = {}

    def start(self, name: str, worker: str) -> int:
        self.attempts[name] = self.attempts.get(name, 0) + 1
        self.frames[name] = (0, 0, worker)
        return self.attempts[name]

    def advance(self, name: str, done: int, total: int, worker: str) -> None:
        self.frames[name] = (done, total, worker)

    def read(self) -> tuple[dict[str, tuple[int, int, str]], dict[str, int]]:
        return self.frames, self.attempts


class BatchWorker(VideoWorker):
    """The actor: a `VideoWorker` that reports its progress to the `Board` (found by name: a handle
    among the constructor's arguments would keep Ray from restarting the actor reliably)."""

    def __init__(self, settings: Settings, board: str) -> None:
        super().__init__(settings)
        self.board = ray.get_actor(board)

    def run(self, job: Job) -> Result:
        attempt = ray.get(self.board.start.remote(job.name, self.worker))

        def progress(done: int, total: int) -> None:
            self.board.advance.remote(job.name, done, total, self.worker)

        return self.segment(job, progress, attempt)


class Progress:
    """The driver's view: a bar over videos and one over frames (stderr); subclass it to watch a run."""

    def __init__(self, videos: int, enabled: bool = True) -> None:
        options = {"file": sys.stderr, "dynamic_ncols": True, "disable": not enabled}
        self.videos = tqdm(total=videos, desc="videos", unit="video", position=0, **options)
        self.frames = tqdm(total=0, desc="frames", unit="frame", position=1, **options)
        self.failed = 0

    def update(self, frames: dict[str, tuple[int, int, str]]) -> None:
        """`frames`: video name -> (frames done, frames in the video, worker), as reported so far."""
        total = sum(total for _, total, _ in frames.values())
        done = sum(done for done, _, _ in frames.values())
        if (done, total) != (self.frames.n, self.frames.total):
            self.frames.total, self.frames.n = total, done
            self.frames.refresh()

    def finished(self, result: Result) -> None:
        self.failed += result.status == FAILED
        self.videos.update(1)
        if self.failed:
            self.videos.set_postfix(failed=self.failed)

    def close(self) -> None:
        self.frames.close()
        self.videos.close()


def connect(address: str | None, cpus: int) -> bool:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start Ray here; False when Ray was
    already initialised in this process (then it is left running)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get(ADDRESS_ENV)
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise BatchError(f"cannot join the Ray cluster at {address}: {' '.join(str(err).split())[:200]}",
                             "check --address / $RAY_ADDRESS, or leave both out to run on this machine") from None
        return True
    ray.init(num_cpus=max(cpus, os.cpu_count() or 1), object_store_memory=LOCAL_OBJECT_STORE_BYTES,
             include_dashboard=False, **quiet)
    return True


def worker_resources(settings: Settings, workers: int, cpus_per_worker: int) -> dict:
    """Ray resources of one worker: CPUs, and one GPU each when the batch runs on GPUs."""
    available = ray.cluster_resources()
    gpu = settings.device == "cuda"
    if gpu and available.get("GPU", 0) < workers:
        raise BatchError(f"{workers} GPU worker(s) need {workers} GPU(s), the cluster has {available.get('GPU', 0):g}",
                         "use fewer --workers, or --device cpu")
    if available.get("CPU", 0) < workers * cpus_per_worker:
        raise BatchError(f"{workers} worker(s) x {cpus_per_worker} CPU(s) need {workers * cpus_per_worker} CPUs, "
                         f"the cluster has {available.get('CPU', 0):g}", "use fewer --workers or --cpus-per-worker")
    return {"num_cpus": cpus_per_worker, "num_gpus": 1 if gpu else 0}


def resolve_device(settings: Settings) -> Settings:
    """No --device: one GPU per worker when the cluster has GPUs, else the CPU."""
    if settings.device is not None:
        return settings
    device = "cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"
    return Settings(**{**settings.__dict__, "device": device})


def run_batch(jobs: list[Job], settings: Settings, summary: Summary, workers: int = 1, address: str | None = None,
              cpus_per_worker: int | None = None,
              progress: Callable[[int], Progress] | None = None) -> list[Result]:
    """Segment `jobs` on `workers` Ray actors; every result is recorded in `summary` as it arrives.

    `progress(number of videos)` makes the `Progress` that draws the run (default: the bars)."""
    workers = max(1, min(workers, len(jobs)))
    local = not (address or os.environ.get(ADDRESS_ENV)) and not ray.is_initialized()
    if cpus_per_worker is None:
        cpus_per_worker = max(1, (os.cpu_count() or 1) // workers) if local else 1
    stop = connect(address, workers * cpus_per_worker)
    progress = (progress or Progress)(len(jobs))
    try:
        settings = resolve_device(settings)
        if settings.device == "cpu" and settings.threads is None:
            settings = Settings(**{**settings.__dict__, "threads": cpus_per_worker})
        resources = worker_resources(settings, workers, cpus_per_worker)
        board_name = f"{BOARD_PREFIX}{uuid.uuid4().hex}"
        board = ray.remote(Board).options(num_cpus=0, name=board_name).remote()
        actor_class = ray.remote(BatchWorker).options(**resources, **ACTOR_OPTIONS)
        actors = [actor_class.remote(settings, board_name) for _ in range(workers)]
        try:
            errors = [e for e in ray.get([actor.ready.remote() for actor in actors]) if e]
        except RayActorError:
            errors = ["a worker process died while loading the model (out of memory?)"]
        if errors:
            raise BatchError(f"a worker could not load the model: {errors[0]}")
        return _dispatch(jobs, settings, summary, actors, lambda: actor_class.remote(settings, board_name), board,
                         progress)
    finally:
        progress.close()
        if stop:
            ray.shutdown()


def _dispatch(jobs, settings, summary, actors, new_actor, board, progress) -> list[Result]:
    """Give each free worker the next video until all are done."""
    queue, idle, running, results = deque(jobs), list(actors), {}, []
    while queue or running:
        while idle and queue:
            actor, job = idle.pop(), queue.popleft()
            running[actor.run.remote(job)] = (actor, job)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
        frames, attempts = ray.get(board.read.remote())
        progress.update(frames)
        for ref in ready:
            actor, job = running.pop(ref)
            try:
                result = ray.get(ref)
            except RayActorError:
                result = Result.of(job, settings.out, FAILED, attempts=attempts.get(job.name, 0), error=DIED)
                ray.kill(actor, no_restart=True)
                actor = new_actor()
            summary.record(job.name, result)
            progress.finished(result)
            results.append(result)
            idle.append(actor)
    return results
