"""Ref-AVS numerics against the official ``ref-avs.code`` (goldens in tests/data, see its README).

fp32, CPU, TF32 off, seeded random weights with the official keys; the text model is the tiny
RoBERTa folder of ``_tiny_text`` loaded through the same path as distilroberta-base.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.model.text import TEXT_TOKENS, tokenize

from ._seeded import seeded_inputs, seeded_state_dict
from ._tiny_text import write_tiny_text_model

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden_refavs_fuser_hiera_t_256.npz"
IMAGE_SIZE = 256
TEXTS = ("the man playing guitar", "the dog that is barking")  # the generator's texts 0 and 1
ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def fp32_only():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    net = build_auralsam2("hiera_t", image_size=IMAGE_SIZE, variant="refavs",
                          text_model=write_tiny_text_model(tmp_path_factory.mktemp("text") / "tiny"))
    net.load_state_dict(seeded_state_dict(net.state_dict(), seed=0), strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def window(model, golden):
    frames, audio = seeded_inputs(int(golden["clip_frames"]), IMAGE_SIZE, seed=0)
    np.testing.assert_allclose(frames.double().sum().item(), golden["frames_sum"], rtol=1e-9)
    np.testing.assert_allclose(audio.double().abs().sum().item(), golden["audio_abssum"], rtol=1e-9)
    with torch.no_grad():
        _, prompts = model.encode_window(frames, audio)
    return prompts


def test_state_dict_has_the_official_key_layout():
    """v_model.* (SAM2), aural_fuser.* (text_proj, MLP heads) and t_model.* (distilroberta-base, with pooler)."""
    official = dict(json.loads((DATA / "official_keys_refavs_hiera_t.json").read_text()))
    ours = {key: list(value.shape) for key, value in build_auralsam2("hiera_t", image_size=IMAGE_SIZE,
                                                                     variant="refavs").state_dict().items()}
    assert sorted(ours) == sorted(official)
    assert ours == official
    assert ours["aural_fuser.text_proj.0.weight"] == [1024, 768] and ours["aural_fuser.text_proj.2.weight"] == [256, 1024]
    assert ours["aural_fuser.train_proj_v1.proj.3.weight"] == [128, 128]


@pytest.mark.parametrize("k", [0, 1])
def test_text_tokens_are_padded_to_25_like_the_official_tokenizer_call(model, golden, k):
    enc = tokenize(model.text_tokenizer, [TEXTS[k]])
    assert enc["input_ids"].shape == (1, TEXT_TOKENS)
    np.testing.assert_array_equal(enc["input_ids"][0].numpy(), golden[f"text{k}_input_ids"])
    np.testing.assert_array_equal(enc["attention_mask"][0].numpy(), golden[f"text{k}_attention_mask"])
    ids = enc["input_ids"][0].tolist()
    assert ids[0] == 0 and ids[-1] == 1 and 2 in ids  # <s> ... </s> then <pad> up to 25


def test_text_features_are_the_last_hidden_state_of_all_25_positions(model, golden):
    features = model.encode_text([TEXTS[0]])
    assert features.shape == (1, TEXT_TOKENS, 768)
    np.testing.assert_allclose(features[0].numpy(), golden["text0_features"], atol=ATOL)
    np.testing.assert_allclose(features.double().sum(-1)[0].numpy(), golden["text0_features_sum"], atol=1e-3)


@pytest.mark.parametrize("k", [0, 1])
def test_fused_prompts_match_official(window, golden, k):
    with torch.no_grad():
        out = window.for_text(TEXTS[k])
    for name, dense in zip("abc", out.dense):
        np.testing.assert_allclose(dense[:, ::16].numpy(), golden[f"text{k}_fuser_{name}_sub16"], atol=ATOL)
        np.testing.assert_allclose(dense.double().sum(dim=(1, 2)).numpy(), golden[f"text{k}_fuser_{name}_sum"],
                                   rtol=1e-4, atol=1e-2)
    for i, sparse in enumerate(out.sparse, start=1):  # SAM2 reads the audio rows: row t for frame t
        np.testing.assert_allclose(sparse.numpy(), golden[f"text{k}_fuser_d{i}"][:len(sparse)], atol=ATOL)


def test_token_sequence_is_10_audio_then_25_text_tokens(model, window, golden):
    fuser = model.aural_fuser
    with torch.no_grad():
        tokens = torch.cat([window.audio, fuser.text_proj(model.encode_text([TEXTS[0]])).squeeze(0)])
        _, sequences, _ = fuser.fuse(window.maps, tokens)
    assert tokens.shape == (10 + TEXT_TOKENS, 256)
    for i, sequence in enumerate(sequences, start=1):
        np.testing.assert_allclose(sequence.numpy(), golden[f"text0_fuser_d{i}"], atol=ATOL)


def test_text_changes_the_prompts_and_the_same_text_gives_the_same(window):
    with torch.no_grad():
        first, again, other = window.for_text(TEXTS[0]), window.for_text(TEXTS[0]), window.for_text(TEXTS[1])
    assert again is first  # one fusion per (window, text)
    assert not torch.allclose(first.sparse[0], other.sparse[0], atol=1e-5)
    assert not torch.allclose(first.dense[0], other.dense[0], atol=1e-5)


def test_projection_heads_match_official_with_the_spatial_l2_quirk(model, window, golden):
    fuser = model.aural_fuser
    with torch.enable_grad():  # the fusion maps the projections read are kept only with gradients
        out = fuser.fuse_text(window.maps, window.audio, model.encode_text([TEXTS[0]]))
        visual, audio = fuser.project(out, size=(IMAGE_SIZE // 16, IMAGE_SIZE // 16))
    for i, (v, a) in enumerate(zip(visual, audio), start=1):
        v, a = v.detach(), a.detach()
        np.testing.assert_allclose(v[0].numpy(), golden[f"text0_proj_visual{i}_frame0"], atol=ATOL)
        np.testing.assert_allclose(v.double().sum(dim=(1, 2, 3)).numpy(), golden[f"text0_proj_visual{i}_sum"],
                                   rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(a.numpy(), golden[f"text0_proj_audio{i}"], atol=ATOL)
        # quirk: unit norm over the H*W positions of each channel (not over channels)
        np.testing.assert_allclose(v.pow(2).sum(dim=(2, 3)).numpy(), 1.0, atol=1e-4)
        assert not np.allclose(v.pow(2).sum(dim=1).numpy(), 1.0, atol=1e-2)
