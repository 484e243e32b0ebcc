"""Official checkpoint layouts round-trip strictly; bad checkpoints fail with one clear line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from napari_auralsam2.core.errors import CheckpointError
from napari_auralsam2.core.model import build_auralsam2, load_checkpoint, remap_legacy_keys
from napari_auralsam2.core.model.checkpoint import LEGACY_RENAMES

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(1)
    model = build_auralsam2("hiera_t", image_size=256)
    with torch.no_grad():  # make every tensor distinguishable from a fresh random init
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(0.5)
    return model


@pytest.fixture()
def fresh():
    return build_auralsam2("hiera_t", image_size=256)


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _legacy_name(key: str) -> str:
    key = "audio_prompter." + key[len("aural_fuser."):]
    for old, new in LEGACY_RENAMES:
        key = key.replace(new + ".", old + ".")
    return key


def test_state_dict_matches_the_official_key_set(source):
    official = {key: shape for key, shape in json.loads((DATA / "official_keys_hiera_t.json").read_text())}
    ours = {key: list(value.shape) for key, value in source.state_dict().items()}
    assert sorted(ours) == sorted(official)
    assert ours == official


def test_full_model_file_round_trips(source, fresh, tmp_path):
    path = tmp_path / "full.pth"
    torch.save(source.state_dict(), path)
    assert load_checkpoint(fresh, path) == "full"
    _assert_same(source, fresh)


def test_fuser_only_file_with_stock_sam2_checkpoint(source, fresh, tmp_path):
    fuser, sam2 = tmp_path / "fuser.pth", tmp_path / "sam2_hiera_tiny.pt"
    torch.save(source.aural_fuser.state_dict(), fuser)
    torch.save({"model": source.v_model.state_dict()}, sam2)
    assert load_checkpoint(fresh, fuser, sam2_checkpoint=sam2) == "fuser"
    _assert_same(source, fresh)


def test_legacy_names_are_remapped_and_duplicates_dropped(source, fresh, tmp_path):
    state = {(_legacy_name(k) if k.startswith("aural_fuser.") else k): v for k, v in source.state_dict().items()}
    assert any("train_f_block3" in k for k in state) and not any("f_blocks" in k for k in state)
    state["audio_prompter.training_layers.0.weight"] = torch.zeros(3)  # duplicate weights of old runs
    path = tmp_path / "legacy.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert load_checkpoint(fresh, path) == "full"
    _assert_same(source, fresh)
    assert set(remap_legacy_keys(state)) == set(source.state_dict())


def test_missing_and_unexpected_keys_are_named(source, fresh, tmp_path):
    state = dict(source.aural_fuser.state_dict())
    state.pop("patch_embeds.0.weight")
    state["extra.weight"] = torch.zeros(1)
    path, sam2 = tmp_path / "bad.pth", tmp_path / "sam2.pt"
    torch.save(state, path)
    torch.save({"model": source.v_model.state_dict()}, sam2)
    with pytest.raises(CheckpointError, match=r"missing 1 keys \(e\.g\. patch_embeds\.0\.weight\).*unexpected"):
        load_checkpoint(fresh, path, sam2_checkpoint=sam2)


def test_fuser_only_file_without_sam2_weights_says_what_to_add(source, fresh, tmp_path):
    path = tmp_path / "fuser.pth"
    torch.save(source.aural_fuser.state_dict(), path)
    with pytest.raises(CheckpointError, match="also pass the SAM2 checkpoint"):
        load_checkpoint(fresh, path)


class _Payload:
    """Anything that is not a tensor dict needs full unpickling."""


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint at all", "corrupted"),
    (None, "arbitrary Python objects"),
])
def test_unreadable_and_unsafe_files_are_refused(fresh, tmp_path, content, message):
    path = tmp_path / "weights.pth"
    if content is None:
        torch.save({"model": _Payload()}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(fresh, path)


def test_missing_file_is_named(fresh, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(fresh, tmp_path / "nope.pth")


def test_a_checkpoint_is_classified_by_what_it_holds(source, fresh, tmp_path):
    """Issue 14: a file of unrelated weights is named as such, not taken for a fuser-only file."""
    unrelated = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": torch.zeros(2), "fc.bias": torch.zeros(1)}, str(unrelated))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(fresh, unrelated)
    assert str(error.value).startswith("resnet.safetensors holds none of the weights AuralSAM2 uses "
                                       "(its names start with conv1, fc): it is not an AuralSAM2 checkpoint")
    assert "AuralFuser" not in str(error.value)
    full, vggish = tmp_path / "full.pth", tmp_path / "vggish.pth"
    torch.save(source.state_dict(), full)
    torch.save(source.aural_fuser.vgg.state_dict(), vggish)
    with pytest.raises(CheckpointError, match="full.pth is an AuralSAM2 checkpoint, not a SAM2 checkpoint"):
        load_checkpoint(fresh, sam2_checkpoint=full)
    with pytest.raises(CheckpointError, match="vggish.pth is a VGGish checkpoint, not an AuralSAM2 checkpoint"):
        load_checkpoint(fresh, vggish)
    with pytest.raises(CheckpointError, match="resnet.safetensors holds none .* it is not a VGGish checkpoint"):
        load_checkpoint(fresh, vggish_checkpoint=unrelated)
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        load_checkpoint(fresh, tmp_path)
