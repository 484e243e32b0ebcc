"""Ref-AVS checkpoints load strictly in every layout the official code writes or its remap tool reads."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from napari_auralsam2.core.errors import CheckpointError
from napari_auralsam2.core.model import build_auralsam2, load_checkpoint
from napari_auralsam2.core.model.checkpoint import LEGACY_LAYER_INDEX, checkpoint_variant, remap_legacy_keys
from napari_auralsam2.core.model.text import load_text_model
from napari_auralsam2.core.weights import load_engine

from ._tiny_text import write_tiny_text_model

IMAGE_SIZE = 128


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return write_tiny_text_model(tmp_path_factory.mktemp("text") / "tiny")


@pytest.fixture(scope="module")
def source(text_dir):
    model = build_auralsam2("hiera_t", image_size=IMAGE_SIZE, variant="refavs", text_model=text_dir)
    with torch.no_grad():  # every tensor distinguishable from a fresh model's
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(0.5)
    return model


@pytest.fixture(scope="module")
def fresh(text_dir):
    """One target model for every layout: each test loads all it compares (strict loads replace everything)."""
    return build_auralsam2("hiera_t", image_size=IMAGE_SIZE, variant="refavs", text_model=text_dir)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _legacy_layers(key: str) -> str:
    """The old ModuleList name of a current fuser key (what the official remap tool reads)."""
    rest = key[len("aural_fuser."):]
    if rest.startswith("vgg."):
        return "aural_fuser.finetuning_layers.0." + rest[len("vgg."):]
    for index, name in enumerate(LEGACY_LAYER_INDEX):
        if rest.startswith(name + "."):
            return f"aural_fuser.training_layers.{index}.{rest[len(name) + 1:]}"
    raise AssertionError(key)


def test_full_file_with_the_text_model_round_trips(source, fresh, tmp_path):
    fresh.t_model.embeddings.word_embeddings.weight.data.zero_()
    path = tmp_path / "full.pth"
    torch.save(source.state_dict(), path)
    assert load_checkpoint(fresh, path) == "full"
    assert _same(source.state_dict(), fresh.state_dict())


def test_full_file_without_the_text_model_keeps_the_folders(source, fresh, text_dir, tmp_path):
    text = load_text_model(text_dir)[1].state_dict()
    fresh.t_model.load_state_dict(text)
    path = tmp_path / "full_no_text.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items() if not k.startswith("t_model.")}, str(path))
    assert load_checkpoint(fresh, path) == "full"
    assert _same(fresh.t_model.state_dict(), text)
    assert _same(fresh.aural_fuser.state_dict(), source.aural_fuser.state_dict())
    assert _same(fresh.v_model.state_dict(), source.v_model.state_dict())


def test_fuser_only_file_with_stock_sam2(source, fresh, tmp_path):
    fuser, sam2 = tmp_path / "fuser.pth", tmp_path / "sam2.pt"
    torch.save(source.aural_fuser.state_dict(), fuser)
    torch.save({"model": source.v_model.state_dict()}, sam2)
    fresh.aural_fuser.text_proj[0].weight.data.zero_()
    assert load_checkpoint(fresh, fuser, sam2_checkpoint=sam2) == "fuser"
    assert _same(fresh.aural_fuser.state_dict(), source.aural_fuser.state_dict())


def test_legacy_module_list_names_are_remapped(source, fresh, tmp_path):
    """Old runs saved the fuser as `training_layers.N` / `finetuning_layers.0` (VGGish)."""
    fresh.aural_fuser.text_proj[0].weight.data.zero_()
    state = {(_legacy_layers(k) if k.startswith("aural_fuser.") else k): v for k, v in source.state_dict().items()}
    assert any(".training_layers.16." in k for k in state)  # text_proj
    path = tmp_path / "legacy.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert load_checkpoint(fresh, path) == "full"
    assert _same(source.state_dict(), fresh.state_dict())


def test_current_names_win_over_duplicated_legacy_ones(source):
    state = dict(source.aural_fuser.state_dict())
    state = {"aural_fuser." + k: v for k, v in state.items()}
    state["aural_fuser.training_layers.16.0.weight"] = torch.zeros(3)  # a stale duplicate of text_proj.0
    state["aural_fuser.finetuning_layers.0.features.0.weight"] = torch.zeros(3)  # of vgg
    remapped = remap_legacy_keys(state)
    assert torch.equal(remapped["aural_fuser.text_proj.0.weight"], source.aural_fuser.text_proj[0].weight)
    assert torch.equal(remapped["aural_fuser.vgg.features.0.weight"], source.aural_fuser.vgg.features[0].weight)


def test_variant_is_told_by_what_a_file_holds(source, tmp_path):
    assert checkpoint_variant(source.state_dict()) == "refavs"
    assert checkpoint_variant(source.aural_fuser.state_dict()) == "refavs"
    avs = build_auralsam2("hiera_t", image_size=IMAGE_SIZE)
    assert checkpoint_variant(avs.state_dict()) == "avs"
    path = tmp_path / "ref.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(CheckpointError, match="holds refavs weights but the model was built for avs") as info:
        load_checkpoint(avs, path)
    assert "\n" not in str(info.value)


def test_engine_loads_a_ref_avs_file_as_ref_avs(source, text_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("AURALSAM2_HOME", str(tmp_path / "cache"))
    path = tmp_path / "mine.pth"
    torch.save(source.state_dict(), path)
    engine = load_engine(model="hiera_t", image_size=IMAGE_SIZE, checkpoint=path, text_model=text_dir, device="cpu")
    assert engine.model.variant == "refavs" and engine.model.reads_text and engine.window == 10
    assert not engine.random_weights
    assert _same(engine.model.state_dict(), source.state_dict())
    assert not (tmp_path / "cache").exists()  # the text model came from the folder: nothing fetched
