"""AuralSAM2 for Ref-AVS: segment the sounding object a text refers to ("the dog that is barking").

`RefAVSAuralSAM2` is `AuralSAM2` plus the frozen text model `t_model` (state_dict keys
`t_model.*`, as the official `AVmodel`) and its tokenizer. Each object of a session carries its
own text, so a window's prompts are `TextPrompts`: the image encoder, the patch embeddings and
VGGish run once per window, and the text-dependent fusion runs once per (window, text) on first
use. The official evaluation conditions on the middle frame of a 10-frame clip.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import PromptError
from .aural_fuser import FuserOutput
from .auralsam2 import AuralSAM2
from .ref_fuser import RefAuralFuser
from .text import check_text, encode_text, load_text_model, random_text_model

REF_CLIP_FRAMES = 10  # Ref-AVS clips: 10 frames, one window


class TextPrompts:
    """A window's fuser prompts for any text: the shared part computed once, each text's fusion on first use."""

    def __init__(self, model: "RefAVSAuralSAM2", maps: list[torch.Tensor], audio: torch.Tensor) -> None:
        self.model, self.maps, self.audio = model, maps, audio
        self._by_text: dict[str, FuserOutput] = {}

    def for_text(self, text: str | None) -> FuserOutput:
        if text is None:
            raise PromptError("the Ref-AVS model segments the object a text refers to, and this object has no text",
                              "give the object a text prompt")
        if text not in self._by_text:
            features = self.model.encode_text([text])
            self._by_text[text] = self.model.aural_fuser.fuse_text(self.maps, self.audio, features)
        return self._by_text[text]

    def frame(self, t: int) -> "FrameTextPrompts":
        return FrameTextPrompts(self, t)


class FrameTextPrompts:
    """One frame's view of a window's `TextPrompts` (what the predictor resolves per object)."""

    def __init__(self, window: TextPrompts, t: int) -> None:
        self.window, self.t = window, t

    def for_text(self, text: str | None) -> FuserOutput:
        return self.window.for_text(text).frame(self.t)


class RefAVSAuralSAM2(AuralSAM2):
    """SAM2 (`v_model`) + Ref-AVS AuralFuser (`aural_fuser`) + frozen RoBERTa (`t_model`)."""

    variant = "refavs"
    clip_frames = REF_CLIP_FRAMES
    reads_text = True

    def __init__(self, v_model: nn.Module, aural_fuser: RefAuralFuser, t_model: nn.Module, text_tokenizer: Any) -> None:
        super().__init__(v_model, aural_fuser)
        self.t_model = t_model
        self.text_tokenizer = text_tokenizer

    def train(self, mode: bool = True) -> "RefAVSAuralSAM2":
        super().train(mode)
        self.t_model.eval()  # official: the text model is frozen and always in eval mode
        return self

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """RoBERTa features [B, 25, 768] of referring expressions (official `_encode_text`)."""
        return encode_text(self.text_tokenizer, self.t_model, texts)

    def validate_text(self, text: str | None, use_audio: bool) -> str | None:
        if text is None:
            if use_audio:
                raise PromptError("the Ref-AVS model segments the object a text refers to: this object has no text",
                                  "give it a text prompt, e.g. 'the man playing the guitar'")
            return None
        if not use_audio:
            raise PromptError("a text prompt needs the audio: the Ref-AVS fuser reads sound and text together",
                              "turn the audio on, or drop the text for plain SAM2 clicks")
        return check_text(self.text_tokenizer, text)

    def eval_cond_frame(self, num_frames: int) -> int:
        return num_frames // 2  # official Ref-AVS: the middle frame, also at evaluation

    def clip_prompts(self, prompts: TextPrompts, text: str | None) -> FuserOutput:
        return prompts.for_text(text)

    def window_prompts(self, pyramid: list[torch.Tensor], examples: torch.Tensor) -> TextPrompts:
        fuser = self.aural_fuser
        return TextPrompts(self, fuser.embed_pyramid(pyramid), fuser.embed_audio(examples.to(pyramid[0].dtype)))


def build_refavs(v_model: nn.Module, text_model: str | Path | None = None) -> RefAVSAuralSAM2:
    """The Ref-AVS model around a built SAM2; the text model from a Hugging Face folder, or random."""
    tokenizer, t_model = load_text_model(text_model) if text_model is not None else random_text_model()
    return RefAVSAuralSAM2(v_model, RefAuralFuser(), t_model, tokenizer)
