"""A tiny stand-in for ``distilbert/distilroberta-base``, written as a Hugging Face model folder.

Built offline: a byte-level BPE tokenizer made with the ``tokenizers`` library (RoBERTa's special
tokens, pre-tokenizer and post-processor; a small fixed vocabulary whose merges spell the words
below) and a one-layer RoBERTa with distilroberta's hidden size (768, what ``text_proj`` reads).
The folder has the files the real one has (``config.json``, ``model.safetensors``,
``tokenizer.json``), so the engine loads it through the same code path as the real model.
The REF goldens in ``tests/data`` were produced with this folder; changing it invalidates them.
"""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import RobertaConfig, RobertaModel

from ._seeded import seeded_state_dict

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as in RoBERTa's vocabulary
WORDS = ("the", "a", "man", "woman", "dog", "cat", "playing", "guitar", "violin", "piano", "that", "is",
         "barking", "singing", "left", "right", "sounding", "object")
TINY_CONFIG = dict(hidden_size=768, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                   max_position_embeddings=32, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
                   bos_token_id=0, eos_token_id=2)


def tiny_tokenizer() -> Tokenizer:
    """Byte-level BPE: every byte is a token, and merges spell ``WORDS`` (with and without a leading space)."""
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        for piece in ("\u0120" + word, word):  # "\u0120" is the byte-level space
            current = piece[0]
            for char in piece[1:]:
                if (current, char) not in merges:
                    merges.append((current, char))
                current += char
                vocab.setdefault(current, len(vocab))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                            add_prefix_space=False)
    return tokenizer


def write_tiny_text_model(folder: str | Path, seed: int = 0) -> Path:
    """Write the tokenizer and a seeded tiny RoBERTa into ``folder`` (a Hugging Face model folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "RobertaTokenizer", "model_max_length": 512, "bos_token": "<s>", "eos_token": "</s>",
        "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>", "unk_token": "<unk>"}))
    model = RobertaModel(RobertaConfig(vocab_size=tokenizer.get_vocab_size(), **TINY_CONFIG))
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed=seed))
    model.save_pretrained(folder)
    return folder
