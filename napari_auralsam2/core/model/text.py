"""The Ref-AVS text encoder: a frozen ``distilbert/distilroberta-base`` and its tokenizer.

The official Ref-AVS model tokenizes a referring expression ("the woman playing the violin") to
exactly 25 tokens (truncated, padded to the maximum length; ``<s>`` and ``</s>`` included) and
feeds RoBERTa's ``last_hidden_state`` [1, 25, 768] to the AuralFuser. Both parts are read from a
Hugging Face model folder (``config.json``, tokenizer files, weights): the pinned Hub snapshot on a
user's machine (`core.weights`), or any local folder with the same files. ``transformers`` is the
optional ``refavs`` extra, so it is imported only when a text model is built.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import AuralSAM2Error, PromptError

TEXT_MODEL_REPO = "distilbert/distilroberta-base"
TEXT_MODEL_REVISION = "fb53ab8802853c8e4fbdbcd0529f21fc6f459b2b"
#: what a text model folder must hold (tokenizer files beyond tokenizer.json are optional)
TEXT_MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                    "special_tokens_map.json", "model.safetensors")
TEXT_TOKENS = 25  # official max_length, padded to it
TEXT_DIM = 768  # RoBERTa-base hidden size, the input of the fuser's text_proj
#: distilroberta-base's architecture, for building it without its files (random weights)
DISTILROBERTA_CONFIG = dict(vocab_size=50265, hidden_size=TEXT_DIM, num_hidden_layers=6, num_attention_heads=12,
                            intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                            layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # RoBERTa's ids 0..3
EXTRA = "refavs"


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise AuralSAM2Error("the Ref-AVS variant needs the 'transformers' package",
                             f"pip install 'napari-auralsam2[{EXTRA}]'") from err
    return transformers


@contextlib.contextmanager
def _quiet(transformers) -> Iterator[None]:
    """No progress bars or 'newly initialized weights' notes (the pooler is unused and not in the file)."""
    logging = transformers.utils.logging
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()


def _frozen(model: nn.Module) -> nn.Module:
    if model.config.hidden_size != TEXT_DIM:
        raise AuralSAM2Error(f"the text model has hidden size {model.config.hidden_size}, the fuser reads {TEXT_DIM}",
                             f"use {TEXT_MODEL_REPO} (or a model with the same size)")
    return model.requires_grad_(False).eval()


def load_text_model(folder: str | Path) -> tuple[Any, nn.Module]:
    """Tokenizer and frozen RoBERTa from a Hugging Face model folder (as `AutoModel` builds it: with a pooler)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise AuralSAM2Error(f"{folder} is not a text model folder (no config.json)",
                             f"give the folder of {TEXT_MODEL_REPO} (config.json, tokenizer files, weights)")
    transformers = _transformers()
    with _quiet(transformers):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as err:
            raise AuralSAM2Error(f"cannot load the text model in {folder}: {err}",
                                 f"give a complete copy of {TEXT_MODEL_REPO}") from err
    return tokenizer, _frozen(model)


def byte_tokenizer():
    """A RoBERTa-style tokenizer whose vocabulary is the 256 bytes (no merges): for random weights only.

    Every character is a token, so it reads texts of at most 23 characters (distilroberta's reads
    about 20 words)."""
    transformers = _transformers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(_SPECIALS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>", unk_token="<unk>")


def random_text_model() -> tuple[Any, nn.Module]:
    """distilroberta-base's architecture with random weights and a byte tokenizer (no files needed)."""
    transformers = _transformers()
    model = transformers.RobertaModel(transformers.RobertaConfig(**DISTILROBERTA_CONFIG))
    return byte_tokenizer(), _frozen(model)


def check_text(tokenizer, text: str) -> str:
    """A referring expression the encoder can read in full (one clear line otherwise)."""
    if not isinstance(text, str) or not text.strip():
        raise PromptError("the text prompt is empty", "describe the object, e.g. 'the man playing the guitar'")
    text = text.strip()
    count = len(tokenizer(text)["input_ids"])
    if count > TEXT_TOKENS:
        raise PromptError(f"the text prompt is {count} tokens long; the Ref-AVS text encoder reads at most "
                          f"{TEXT_TOKENS} (with its 2 markers)", "shorten it to a few words")
    return text


def tokenize(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask [B, 25] as the official `_encode_text` makes them."""
    # official: max_length 25, padded to max_length, truncated (check_text keeps texts within it)
    enc = tokenizer(texts, max_length=TEXT_TOKENS, padding="max_length", truncation=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def encode_text(tokenizer, model: nn.Module, texts: list[str]) -> torch.Tensor:
    """RoBERTa's last_hidden_state [B, 25, 768] of the texts (padding positions included, as official)."""
    device = next(model.parameters()).device
    enc = {k: v.to(device) for k, v in tokenize(tokenizer, texts).items()}
    with torch.no_grad():
        return model(**enc).last_hidden_state
