"""Weight files: hand-placed files, Hub downloads (huggingface_hub) with pinned checksums, clear offline errors.

The Hub is a loopback server speaking the Hub's file protocol (`_fake_hub`); nothing leaves the machine.
"""
from __future__ import annotations

import hashlib

import pytest

from napari_auralsam2.core import weights
from napari_auralsam2.core.errors import AuralSAM2Error, WeightsMissingError
from napari_auralsam2.core.model.text import TEXT_MODEL_REPO, TEXT_MODEL_REVISION

from ._fake_hub import FakeHub

PAYLOAD = b"\x00weights\x01" * 1000
TINY = weights.WeightFile("tiny.pt", "someone/tiny", "ckpts/tiny.pt")
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens there


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.HOME_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def hub(monkeypatch):
    fake = FakeHub({"someone/tiny": {"ckpts/tiny.pt": PAYLOAD},
                    TEXT_MODEL_REPO: {"config.json": b"{}", "tokenizer.json": b"{}", "model.safetensors": b"w",
                                      "tf_model.h5": b"not wanted"}})
    with fake.serve():
        monkeypatch.setenv(weights.ENDPOINT_ENV, fake.url)
        yield fake


def test_hub_download_pins_a_checksum_and_detects_corruption(home, hub):
    (path,) = weights.ensure([TINY])
    assert path.read_bytes() == PAYLOAD and path.is_relative_to(home / weights.HUB_CACHE)
    assert (home / "tiny.pt.sha256").read_text().split()[0] == hashlib.sha256(PAYLOAD).hexdigest()
    served = len(hub.requests)
    assert weights.ensure([TINY]) == [path]  # cached: verified, not asked for again
    assert len(hub.requests) == served
    path.resolve().write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(AuralSAM2Error, match="corrupted"):
        weights.ensure([TINY])


def test_a_published_checksum_that_does_not_match_leaves_nothing_behind(home, hub):
    wanted = weights.WeightFile("tiny.pt", "someone/tiny", "ckpts/tiny.pt", sha256="0" * 64)
    with pytest.raises(AuralSAM2Error, match="checksum mismatch"):
        weights.ensure([wanted])
    assert not [p for p in home.rglob("*") if p.is_file() and p.read_bytes() == PAYLOAD]


def test_a_hand_placed_file_wins_and_nothing_is_fetched(home, hub):
    home.mkdir(parents=True)
    (home / "tiny.pt").write_bytes(b"my own copy")
    assert weights.ensure([TINY]) == [home / "tiny.pt"]
    assert not hub.requests


def test_offline_error_lists_the_files_and_where_to_put_them(home, monkeypatch):
    with pytest.raises(WeightsMissingError) as info:
        weights.ensure([TINY, weights.SAM2_WEIGHTS["hiera_l"]], allow_download=False)
    message = str(info.value)
    assert "tiny.pt" in message and "sam2_hiera_large.pt" in message and str(home) in message
    assert "https://huggingface.co/facebook/sam2-hiera-large/resolve/main/sam2_hiera_large.pt" in message
    assert "--weights random" in message and "\n" not in message
    monkeypatch.setenv(weights.ENDPOINT_ENV, UNREACHABLE)
    with pytest.raises(WeightsMissingError):
        weights.ensure([TINY])  # the download fails (nothing listens): the same clear error


def test_text_model_snapshot_at_its_pinned_revision(home, hub):
    folder = weights.ensure_text_model()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert folder.name == TEXT_MODEL_REVISION
    assert any(TEXT_MODEL_REVISION in path for _, path in hub.requests)
    served = len(hub.requests)
    assert weights.ensure_text_model() == folder  # from the cache afterwards, without asking the Hub
    assert weights.ensure_text_model(allow_download=False) == folder and len(hub.requests) == served


def test_text_model_offline_says_what_to_do(home, monkeypatch):
    monkeypatch.setenv(weights.ENDPOINT_ENV, UNREACHABLE)
    with pytest.raises(WeightsMissingError) as info:
        weights.ensure_text_model()
    message = str(info.value)
    assert TEXT_MODEL_REPO in message and str(home / weights.TEXT_MODEL_DIR) in message
    assert "--text-model" in message and "\n" not in message
    (home / weights.TEXT_MODEL_DIR).mkdir(parents=True)
    (home / weights.TEXT_MODEL_DIR / "config.json").write_text("{}")
    assert weights.ensure_text_model() == home / weights.TEXT_MODEL_DIR  # a hand-copied folder


def test_released_weights_need_the_released_model_size(home):
    with pytest.raises(AuralSAM2Error, match="hiera_l only"):
        weights.load_engine(model="hiera_t", image_size=128, weights="auto")
    with pytest.raises(WeightsMissingError, match="auralsam2_avs_v2.pth"):
        weights.load_engine(model="hiera_l", weights="auto", allow_download=False)
    with pytest.raises(WeightsMissingError, match="auralsam2_refavs_best.pth"):
        weights.load_engine(model="hiera_l", weights="auto", release="refavs", allow_download=False)
    with pytest.raises(AuralSAM2Error, match="unknown release"):
        weights.load_engine(model="hiera_l", weights="auto", release="nope")


def test_random_weights_engine_says_so(home):
    engine = weights.load_engine(model="hiera_t", image_size=128, weights="random", device="cpu")
    assert engine.random_weights and engine.image_size == 128 and engine.device.type == "cpu"
    assert engine.model.variant == "avs" and not engine.model.reads_text and engine.window == 5
    assert not home.exists()  # nothing fetched for random weights
