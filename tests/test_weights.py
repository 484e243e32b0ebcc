"""Weight files: cache lookup, download with progress and checksum, clear offline errors."""
from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from napari_auralsam2.core import weights
from napari_auralsam2.core.errors import AuralSAM2Error, WeightsMissingError

PAYLOAD = b"\x00weights\x01" * 1000


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.HOME_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A loopback HTTP server serving one weight file."""
    root = tmp_path_factory.mktemp("served")
    (root / "tiny.pt").write_bytes(PAYLOAD)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_pins_a_checksum_and_detects_corruption(home, server):
    wanted = weights.WeightFile("tiny.pt", f"{server}/tiny.pt")
    (path,) = weights.ensure([wanted])
    assert path == home / "tiny.pt" and path.read_bytes() == PAYLOAD
    sidecar = home / "tiny.pt.sha256"
    assert sidecar.read_text().split()[0] == hashlib.sha256(PAYLOAD).hexdigest()
    assert weights.ensure([wanted]) == [path]  # cached: verified, not downloaded again
    path.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(AuralSAM2Error, match="corrupted"):
        weights.ensure([wanted])


def test_a_published_checksum_that_does_not_match_leaves_nothing_behind(home, server):
    wanted = weights.WeightFile("tiny.pt", f"{server}/tiny.pt", sha256="0" * 64)
    with pytest.raises(AuralSAM2Error, match="checksum mismatch"):
        weights.ensure([wanted])
    assert list(home.iterdir()) == []


def test_offline_error_lists_the_files_and_where_to_put_them(home):
    unreachable = weights.WeightFile("model.pt", "http://127.0.0.1:9/model.pt")
    with pytest.raises(WeightsMissingError) as info:
        weights.ensure([unreachable, weights.SAM2_WEIGHTS["hiera_l"]], allow_download=False)
    message = str(info.value)
    assert "model.pt" in message and "sam2_hiera_large.pt" in message and str(home) in message
    assert "--weights random" in message and "\n" not in message
    with pytest.raises(WeightsMissingError):
        weights.ensure([unreachable])  # the download fails (nothing listens): same clear error


def test_released_weights_need_the_released_model_size(home):
    with pytest.raises(AuralSAM2Error, match="hiera_l only"):
        weights.load_engine(model="hiera_t", image_size=128, weights="auto")
    with pytest.raises(WeightsMissingError, match="auralsam2_avs_v2.pth"):
        weights.load_engine(model="hiera_l", weights="auto", allow_download=False)


def test_random_weights_engine_says_so(home):
    engine = weights.load_engine(model="hiera_t", image_size=128, weights="random", device="cpu")
    assert engine.random_weights and engine.image_size == 128 and engine.device.type == "cpu"
    assert not home.exists()  # nothing fetched for random weights
