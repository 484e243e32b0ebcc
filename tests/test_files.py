"""core/files.py: outputs never overwrite inputs, writability is proven up front, writes are whole."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from napari_auralsam2.core.errors import AuralSAM2Error
from napari_auralsam2.core.files import (atomic_file, check_outputs, check_writable, free_sibling, interrupts_held,
                                         same_file)


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A folder nobody can create files in (chmod; as root, which ignores modes, the immutable flag)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        (folder / "probe").touch()
    except OSError:
        yield folder
    else:
        pytest.skip("cannot make a read-only folder here")
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def test_an_output_that_is_an_input_is_refused(tmp_path):
    song = tmp_path / "song.mp4"
    song.write_bytes(b"the user's audio")
    (tmp_path / "link.mp4").symlink_to(song)
    with pytest.raises(AuralSAM2Error, match=r"--overlay would overwrite --audio \(.*song.mp4\)"):
        check_outputs({"--overlay": tmp_path / "link.mp4"}, {"--audio": song, "--checkpoint": None})
    with pytest.raises(AuralSAM2Error, match="would overwrite the input video"):
        check_outputs({"the masks": tmp_path / "sub" / ".." / "song.mp4"}, {"the input video": str(song)})
    with pytest.raises(AuralSAM2Error, match="would be replaced, and it holds --audio"):
        check_outputs({"the masks": tmp_path}, {"--audio": song})
    check_outputs({"--overlay": tmp_path / "preview.mp4", "unused": None}, {"--audio": song})
    assert same_file(song, tmp_path / "link.mp4") and not same_file(song, tmp_path / "preview.mp4")


def test_writability_is_proven_by_writing(tmp_path, read_only_dir):
    check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == [read_only_dir]  # the probe file is gone
    with pytest.raises(AuralSAM2Error, match="cannot write into .*locked"):
        check_writable(read_only_dir)


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "masks.json"
    target.write_text("earlier run")
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(target) as partial:
            partial.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "earlier run" and [p.name for p in tmp_path.iterdir()] == ["masks.json"]
    with atomic_file(target) as partial:
        assert partial.parent == tmp_path and partial.suffix == ".json"
        partial.write_text("new run")
    assert target.read_text() == "new run" and [p.name for p in tmp_path.iterdir()] == ["masks.json"]


def test_ctrl_c_is_held_back_and_raised_after():
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)  # delivered before kill() returns
            finished.append(True)
    assert finished == [True] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_free_sibling_never_names_an_existing_path(tmp_path):
    assert free_sibling(tmp_path / "masks.npz") == tmp_path / "masks-interrupted.npz"
    (tmp_path / "masks-interrupted").mkdir()
    assert free_sibling(tmp_path / "masks") == tmp_path / "masks-interrupted-2"
