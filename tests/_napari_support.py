"""Fixtures and helpers shared by the napari widget tests (real viewer under Xvfb, random-init hiera_t)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image as PILImage

from napari.utils.notifications import notification_manager
from napari_auralsam2._napari import runner
from napari_auralsam2._napari.labels import masks_to_labels
from napari_auralsam2.core import open_video
from napari_auralsam2.core.session import Engine

PLUGIN = "napari-auralsam2"
ENGINE = runner.EngineSpec(model="hiera_t", image_size=128, weights="random", device="cpu")
FRAME = 7  # the prompted frame: the fixture's white bar spans x 28..35, y 10..25 there
RUN_TIMEOUT_MS = 240_000
IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
SCREENSHOT_ENV = "AURALSAM2_UPDATE_SCREENSHOT"
WINDOW_SIZE = (1280, 960)
SCREENSHOT_COLOURS = 128


@pytest.fixture(scope="module")
def engine() -> Engine:
    """Loaded once into the widget's own cache: the widget finds it there and reuses it."""
    torch.manual_seed(0)
    engine, _ = runner.CACHE.get_engine(ENGINE)
    return engine


@pytest.fixture
def cached_engine(engine):
    """Put the module's engine back into the widget's cache after a test that made it drop or reload it."""
    yield engine
    runner.CACHE.engine, runner.CACHE.engine_spec = engine, ENGINE


@pytest.fixture
def notes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # keep the user's settings out of it
    messages: list[str] = []
    callback = lambda n: messages.append(str(n.message))  # noqa: E731
    notification_manager.notification_ready.connect(callback)
    yield messages
    notification_manager.notification_ready.disconnect(callback)


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The widget's yes/no questions are answered "no" (no modal dialog in a test) and recorded."""
    from napari_auralsam2._napari.widget import AuralSAM2Widget

    asked: list[str] = []
    monkeypatch.setattr(AuralSAM2Widget, "ask", staticmethod(lambda _parent, question: asked.append(question)))
    return asked


@pytest.fixture
def docked(make_napari_viewer, qtbot, sample_mp4: Path, tmp_path: Path, engine: Engine, notes: list[str],
           answers: list[str]):
    """A shown viewer with (a copy of) the clip opened by our reader and the widget docked from the manifest.

    The copy is the test's own, so what the widget saves beside it stays with the test.
    """
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    clip = tmp_path / sample_mp4.name
    shutil.copyfile(sample_mp4, clip)
    (video,) = viewer.open(str(clip), plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "AuralSAM2")
    f = widget.form
    f.model.value = ENGINE.model
    f.image_size.setValue(ENGINE.image_size)
    f.weights.value = ENGINE.weights
    f.device.value = ENGINE.device
    viewer.dims.set_current_step(0, FRAME)
    yield viewer, widget, video
    widget.close_down()  # a failed test must not leave a worker writing into a closed viewer


def run(qtbot, widget, kind: str) -> None:
    widget.start(kind)
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_TIMEOUT_MS)


def press(qtbot, viewer, key: str) -> None:
    """A real key press on the canvas (napari routes it to the active layer's, then the viewer's, bindings)."""
    from qtpy.QtCore import Qt

    modifier = Qt.NoModifier
    if key.startswith("Shift-"):
        modifier, key = Qt.ShiftModifier, key[len("Shift-"):]
    qt_key = getattr(Qt, f"Key_{key.upper() if len(key) == 1 else key}")
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, qt_key, modifier)


def reference(engine: Engine, path: Path, kind: str, prompts=(), start: int = FRAME, object_id: int = 1):
    """{frame: uint32 labels} from the core session alone."""
    session = engine.open_session(open_video(path), use_audio=True)
    height, width = session.height, session.width
    if kind == "audio":
        session.add_audio_prompt(start, object_id)
    masks = {}
    for obj, kwargs in prompts:
        masks = session.add_prompt(start, obj, **kwargs)
    if kind == "frame":
        return {start: masks_to_labels(masks, height, width)}
    return {t: masks_to_labels(m, height, width) for t, m in session.propagate(start, "both")}


def save_screenshot(viewer, name: str) -> None:
    """The viewer with the dock, for docs/napari.md (written when missing, or always with $AURALSAM2_UPDATE_SCREENSHOT)."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()  # the pop-ups would cover the canvas
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot.ndim == 3 and shot.shape[1] >= WINDOW_SIZE[0] * 0.9 and shot[..., :3].std() > 10
    path = IMAGES / name
    if path.is_file() and not os.environ.get(SCREENSHOT_ENV):
        return
    image = PILImage.fromarray(shot[..., :3]).quantize(SCREENSHOT_COLOURS, method=PILImage.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
