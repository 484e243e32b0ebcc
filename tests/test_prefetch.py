"""Frames are decoded and preprocessed ahead on a background thread: bounded, cancel-safe, errors reach the caller."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_auralsam2.core import frames_from_array
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.prefetch import THREAD_NAME, Prefetcher
from napari_auralsam2.core import session as session_module
from napari_auralsam2.core.session import PREFETCH_WINDOWS, Engine, preprocess_frame, preprocess_on_device

WINDOW = 5
pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest
FRAMES = 23


class RecordedFrames:
    """An array-like video (as a napari layer's data) that records which frames were read.

    Frame `fail_at` cannot be read; frames from `arrives_at` on cannot be read until the consumer has
    seen frame `arrives_at - 1` (a stream that grows as it is tracked, like CVAT's tracker feed).
    """

    def __init__(self, frames: np.ndarray, fail_at: int | None = None, arrives_at: int | None = None) -> None:
        self.frames, self.shape, self.fail_at, self.arrives_at = frames, frames.shape, fail_at, arrives_at
        self.reads: list[int] = []
        self.arrived, self.refused = threading.Event(), threading.Event()

    def __getitem__(self, index: int) -> np.ndarray:
        self.reads.append(int(index))
        if index == self.fail_at:
            raise OSError(f"cannot read frame {index} from the network share")
        if self.arrives_at is not None and index >= self.arrives_at and not self.arrived.is_set():
            self.refused.set()
            raise OSError(f"frame {index} has not arrived yet")
        return self.frames[index]


def loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    return Engine(build_auralsam2("hiera_t", image_size=64), "cpu", window=WINDOW)


@pytest.fixture()
def frames():
    return np.random.default_rng(2).integers(0, 255, (FRAMES, 40, 56, 3), dtype=np.uint8)


def test_prefetcher_loads_ahead_in_order_and_raises_in_the_caller():
    started = []
    gate = threading.Event()

    def load(key: int) -> int:
        started.append(key)
        gate.wait()
        if key == 4:
            raise ValueError("frame 4 is corrupt")
        return key * 10

    loader = Prefetcher(load, ahead=2)
    loader.plan([0, 0, 1, 2, 3, 4, 5])
    gate.set()
    assert loader.get(0) == 0 and loader.get(2) == 20  # 1 was skipped: dropped, not waited for
    assert loader.get(3) == 30
    with pytest.raises(ValueError, match="corrupt"):  # failed ahead, failed again when asked for
        loader.get(4)
    assert loader.get(9) == 90  # not planned: loaded inline
    loader.close()
    assert not loader_threads()
    assert max(started[:3]) <= 2  # never more than `ahead` keys beyond the one asked for


def test_propagation_reads_a_bounded_distance_ahead(engine, frames):
    source = RecordedFrames(frames)
    session = engine.open_session(frames_from_array(source, fps=10), use_audio=False)
    session.add_prompt(0, 1, points=[(20.0, 15.0)])
    for t, _ in session.propagate(direction="forward"):
        window_end = (t // WINDOW + 1) * WINDOW
        assert max(source.reads) < window_end + PREFETCH_WINDOWS * WINDOW + 1, f"frame {t}"
    assert sorted(set(source.reads)) == list(range(FRAMES))
    assert not loader_threads()


def test_cancel_and_abandon_stop_the_loader(engine, frames):
    session = engine.open_session(frames_from_array(frames, fps=10), use_audio=False)
    session.add_prompt(0, 1, points=[(20.0, 15.0)])
    stop = threading.Event()
    for t, _ in session.propagate(direction="forward", cancel=stop):
        if t == 6:
            assert loader_threads()  # reading ahead while we look at frame 6
            stop.set()
    assert not loader_threads()
    run = session.propagate(direction="forward")
    next(run)
    next(run)
    run.close()  # a host that drops the run half-way
    assert not loader_threads()
    assert len(dict(session.propagate(direction="both"))) == FRAMES  # still usable


def test_no_reading_ahead_when_torch_uses_every_core(engine, frames, monkeypatch):
    monkeypatch.setattr(session_module, "_usable_cores", lambda: torch.get_num_threads())
    session = engine.open_session(frames_from_array(frames, fps=10), use_audio=False)
    session.add_prompt(0, 1, points=[(20.0, 15.0)])
    for t, _ in session.propagate(direction="forward"):
        assert not loader_threads()


def test_a_read_error_surfaces_in_the_caller_and_loses_nothing(engine, frames):
    source = RecordedFrames(frames, fail_at=12)
    session = engine.open_session(frames_from_array(source, fps=10), use_audio=False)
    session.add_prompt(0, 1, points=[(20.0, 15.0)])
    seen = []
    with pytest.raises(OSError, match="frame 12"):
        for t, _ in session.propagate(direction="forward"):
            seen.append(t)
    assert seen == list(range(10))  # everything before the failing window was delivered
    assert not loader_threads()


def test_frames_not_there_yet_are_read_when_asked_for(engine, frames):
    source = RecordedFrames(frames, arrives_at=10)
    session = engine.open_session(frames_from_array(source, fps=10), use_audio=False)
    session.add_prompt(0, 1, points=[(20.0, 15.0)])
    seen = []
    for t, _ in session.propagate(direction="forward"):
        seen.append(t)
        if t == 9:
            assert source.refused.wait(timeout=120)  # the loader tried frame 10 ahead, too early
            source.arrived.set()
    assert seen == list(range(FRAMES))


@pytest.mark.parametrize("size, image_size", [((720, 1280), 256), ((48, 64), 128)])
def test_device_preprocessing_agrees_with_pil(size, image_size):
    """The CUDA path's resize (run here on the CPU) against PIL's: within one grey level, nearly all equal."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:size[0], 0:size[1]]
    smooth = np.stack([xs * 255 // size[1], ys * 255 // size[0], (xs + ys) % 256], -1)
    frames = np.stack([smooth, rng.integers(0, 255, (*size, 3))]).astype(np.uint8)
    pil = torch.stack([preprocess_frame(f, image_size) for f in frames])
    ours = preprocess_on_device(torch.from_numpy(frames), image_size)
    assert ours.shape == pil.shape == (2, 3, image_size, image_size)
    levels = ((ours - pil) * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255).abs()
    assert levels.max() < 1.01 and (levels < 0.01).float().mean() > 0.99
