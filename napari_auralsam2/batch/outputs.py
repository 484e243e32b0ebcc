"""Per-video output folders, written atomically; the rerun rule; ``summary.csv``.

A video is written into ``--out/.<name>.partial`` and, once complete, renamed to ``--out/<name>``
with a ``batch.json`` marker inside (written last). So a folder ``<name>`` is always complete: a
rerun of the same command skips it, and redoes the videos whose folder is missing (never started,
failed, or interrupted: a leftover ``.partial`` folder is removed first). A ``<name>`` folder
without the marker is not ours and is never touched (that video fails with a message), nor is one
written with another ``--format``/``--overlay``.

``summary.csv`` has one row per video of the run, in source order: ``pending`` until the video is
done, ``skipped`` (done earlier) or ``failed`` with its one-line error. It is rewritten (again via a
temporary name) after every video, so an interrupted batch leaves an accurate one.
"""
from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from .sources import Job

PARTIAL_SUFFIX = ".partial"
MARKER_NAME = "batch.json"
SUMMARY_NAME = "summary.csv"
PENDING, DONE, SKIPPED, FAILED = "pending", "done", "skipped", "failed"
#: the settings that change what a video's folder holds: a rerun must ask for the same
OUTPUT_KEYS = ("format", "overlay")


@dataclass
class Result:
    """What became of one video (a row of summary.csv)."""

    video: str
    output: str
    status: str = PENDING
    frames: int = 0
    objects: int = 0
    seconds: float = 0.0
    attempts: int = 0
    worker: str = ""
    error: str = ""

    @classmethod
    def of(cls, job: Job, out: Path, status: str = PENDING, **values) -> "Result":
        return cls(str(job.video), str(out / job.name), status, **values)


SUMMARY_COLUMNS = tuple(Result.__dataclass_fields__)


def partial_folder(out: Path, name: str) -> Path:
    return out / f".{name}{PARTIAL_SUFFIX}"


def begin(out: Path, name: str) -> Path:
    """An empty temporary folder for one video (what an interrupted run left there is removed)."""
    folder = partial_folder(out, name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def commit(folder: Path, out: Path, name: str, marker: dict) -> Path:
    """Write the marker, then rename the finished temporary folder to its final name."""
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=1))
    final = out / name
    folder.rename(final)
    return final


def earlier_result(job: Job, out: Path, wanted: dict) -> Result | None:
    """The result of a video a previous run finished (skipped), a refusal to touch a folder that is
    not ours or was written differently (failed), or None when the video is to be done."""
    final = out / job.name
    if not final.exists():
        return None
    try:
        marker = json.loads((final / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return Result.of(job, out, FAILED, error=f"{final} exists and was not written by auralsam2 batch; "
                                                 "move it away or use another --out")
    old = {k: marker.get(k) for k in OUTPUT_KEYS}
    new = {k: wanted.get(k) for k in OUTPUT_KEYS}
    if old != new:
        return Result.of(job, out, FAILED, error=f"{final} was written with {old}, this run asks for {new}; "
                                                 "use another --out, or delete that folder to redo it")
    return Result.of(job, out, SKIPPED, frames=int(marker.get("frames", 0)), objects=int(marker.get("objects", 0)),
                     seconds=float(marker.get("seconds", 0.0)), worker=str(marker.get("worker", "")))


class Summary:
    """``summary.csv``: one row per video of this run, rewritten whenever a result arrives."""

    def __init__(self, out: Path, jobs: list[Job]) -> None:
        self.path = out / SUMMARY_NAME
        self.rows = {job.name: Result.of(job, out) for job in jobs}
        self.write()

    def record(self, name: str, result: Result) -> None:
        self.rows[name] = result
        self.write()

    def results(self) -> list[Result]:
        return list(self.rows.values())

    def write(self) -> Path:
        tmp = self.path.with_name(f".{self.path.name}{PARTIAL_SUFFIX}")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
            writer.writeheader()
            for result in self.rows.values():
                writer.writerow({**asdict(result), "seconds": f"{result.seconds:.2f}"})
        tmp.replace(self.path)
        return self.path
