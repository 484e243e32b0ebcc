"""--compile / AURALSAM2_COMPILE: torch.compile on the image encoder and the fuser, same results.

Here torch.compile runs with its "eager" backend (graph capture, no code generation: seconds, not
minutes, on a CPU); inductor itself is exercised by the `cuda` tests and bench/gpu_check.sh.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_auralsam2 import cli
from napari_auralsam2.core import session as session_module
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.session import COMPILE_ENV, Engine


@pytest.fixture()
def eager_compile(monkeypatch):
    monkeypatch.setitem(session_module.COMPILE_OPTIONS, "backend", "eager")


def test_env_compiles_every_engine_of_a_model_once(eager_compile, monkeypatch):
    model = build_auralsam2("hiera_t", image_size=64)
    assert not Engine(model, "cpu").compiled
    monkeypatch.setenv(COMPILE_ENV, "1")
    engine = Engine(model, "cpu")
    assert engine.compiled and Engine(model, "cpu", window=1).compiled
    compiled = model.v_model.image_encoder._compiled_call_impl
    Engine(model, "cpu").compile()
    assert model.v_model.image_encoder._compiled_call_impl is compiled  # not compiled twice
    assert set(model.state_dict()) == set(build_auralsam2("hiera_t", image_size=64).state_dict())
    monkeypatch.setenv(COMPILE_ENV, "0")
    assert not Engine(build_auralsam2("hiera_t", image_size=64), "cpu").compiled


def test_cli_compile_gives_the_same_masks(eager_compile, capsys, sample_mp4, tmp_path, monkeypatch):
    compiled = []
    original = Engine.compile

    def recording(self):
        compiled.append(self)
        original(self)

    monkeypatch.setattr(Engine, "compile", recording)
    common = ["segment", str(sample_mp4), "--weights", "random", "--model", "hiera_t", "--image-size", "64",
              "--direction", "forward", "--format", "npz"]
    torch.manual_seed(0)
    assert cli.main([*common, "--out", str(tmp_path / "plain")]) == 0 and not compiled
    torch.manual_seed(0)
    assert cli.main([*common, "--compile", "--out", str(tmp_path / "compiled")]) == 0, capsys.readouterr().err
    assert len(compiled) == 1 and compiled[0].compiled
    with np.load(tmp_path / "plain" / "masks.npz") as plain, np.load(tmp_path / "compiled" / "masks.npz") as ours:
        assert set(plain.files) == set(ours.files)
        for name in plain.files:
            np.testing.assert_array_equal(plain[name], ours[name])
