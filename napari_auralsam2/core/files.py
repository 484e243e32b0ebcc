"""Output files that never destroy inputs or earlier results.

* `check_outputs` refuses, before any heavy work, an output that is an input or would land inside
  an output folder that gets replaced.
* `check_writable` proves a folder takes files by creating and removing one (permissions, a
  read-only mount or a full quota show up here, not after the model has loaded).
* `atomic_file` writes beside the target and moves the result over it at the end, holding Ctrl-C
  back during the move; an interrupted or failed write leaves the target as it was.
* `free_sibling` names a place beside earlier results for the partial results of an interrupted run.
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Mapping

from .errors import AuralSAM2Error

PARTIAL_PREFIX = ".partial-"
INTERRUPTED_SUFFIX = "-interrupted"
MAX_SIBLINGS = 1000


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (through links and `..` too)."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return _resolved(a) == _resolved(b)


def check_outputs(outputs: Mapping[str, str | Path | None], inputs: Mapping[str, str | Path | None]) -> None:
    """Refuse when an output (a file, or a folder whose content gets replaced) is or holds an input.

    Keys are what the user calls them (``"--overlay"``, ``"the masks folder"``); None values are skipped.
    """
    for out_name, output in outputs.items():
        if output is None:
            continue
        for in_name, source in inputs.items():
            if source is None:
                continue
            if same_file(output, source):
                raise AuralSAM2Error(f"{out_name} would overwrite {in_name} ({source})",
                                     "give the output another name or folder")
            if _resolved(output) in _resolved(source).parents:
                raise AuralSAM2Error(f"{out_name} ({output}) would be replaced, and it holds {in_name} ({source})",
                                     "give the output another name or folder")


def check_writable(folder: str | Path) -> None:
    """Raise AuralSAM2Error unless a file can be created (and removed) in ``folder``."""
    folder = Path(folder).expanduser()
    try:
        handle, probe = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise AuralSAM2Error(f"cannot write into {folder}: {error.strerror or error}",
                             "choose a folder you can write to") from None


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C back for the duration (main thread only); it is raised right after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def partial_path(target: Path) -> Path:
    """A hidden sibling of ``target`` to write first (same suffix, so writers pick the same format)."""
    return target.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{target.name}")


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a sibling path to write; on success it replaces ``target`` in one move, else it is removed."""
    target = Path(target)
    partial = partial_path(target)
    try:
        yield partial
        with interrupts_held():
            os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def free_sibling(target: Path) -> Path:
    """``<stem>-interrupted<suffix>`` beside ``target`` (numbered when taken): never an existing path."""
    for number in range(1, MAX_SIBLINGS + 1):
        tag = INTERRUPTED_SUFFIX if number == 1 else f"{INTERRUPTED_SUFFIX}-{number}"
        candidate = target.with_name(f"{target.stem}{tag}{target.suffix}")
        if not candidate.exists():
            return candidate
    raise AuralSAM2Error(f"{target.parent} holds {MAX_SIBLINGS} interrupted runs", "clean up the folder")


__all__ = ["same_file", "check_outputs", "check_writable", "interrupts_held", "partial_path", "atomic_file",
           "free_sibling"]
