"""The Ref-AVS AuralFuser: the AVS fuser plus a text branch, with MLP projection heads.

The referring expression's 25 RoBERTa features go through ``text_proj`` (768 -> 1024 -> 256) and
are appended to the clip's audio tokens, so the fusion attends over T audio + 25 text tokens at
every level. SAM2 reads only the first T rows (row t for frame t). The contrastive projection
heads are MLPs here (``proj.0`` Linear, GELU, ``proj.2`` LayerNorm, ``proj.3`` Linear) and project
the fusion's frame attention maps, not the fused maps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .aural_fuser import FUSER_DIM, PROJ_DIM, AuralFuser, FuserOutput
from .text import TEXT_DIM

TEXT_HIDDEN = 1024


class MlpProjectionHead(nn.Module):
    """Linear -> GELU -> LayerNorm -> Linear, L2-normalised over dim 1 (contrastive loss only)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(FUSER_DIM, PROJ_DIM), nn.GELU(), nn.LayerNorm(PROJ_DIM),
                                  nn.Linear(PROJ_DIM, PROJ_DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # quirk: dim 1 is the channel of [N, C] audio tokens but the H*W axis of [T, H*W, C] maps,
        # so the official visual embeddings are normalised over space, not channels
        return F.normalize(self.proj(x), p=2, dim=1)


class RefAuralFuser(AuralFuser):
    """Audio + text + SAM2 feature pyramid -> prompts (state_dict = the official Ref-AVS fuser keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.train_proj_v1 = MlpProjectionHead()
        self.train_proj_a1 = MlpProjectionHead()
        self.text_proj = nn.Sequential(nn.Linear(TEXT_DIM, TEXT_HIDDEN), nn.GELU(), nn.Linear(TEXT_HIDDEN, FUSER_DIM))

    def fuse_text(self, maps: list[torch.Tensor], audio: torch.Tensor, text: torch.Tensor) -> FuserOutput:
        """Patch-embedded maps [T, 256, H, W], audio tokens [N, 256], text features [1, 25, 768]."""
        # the official sequence: N audio tokens (one per audio example, 10 for a Ref-AVS clip), then 25 text tokens
        tokens = torch.cat([audio, self.text_proj(text.to(audio.dtype)).squeeze(0)])
        dense, sequences, attn = self.fuse(maps, tokens)
        frames = maps[0].shape[0]
        # official: the decoder of frame t reads row t of the sequence (audio rows; text rows only if N < T)
        sparse = [d[:frames] for d in sequences]
        # the frame attention maps feed only the contrastive loss: kept when gradients flow (training)
        return FuserOutput(dense, sparse, attn if torch.is_grad_enabled() else None)

    def forward(self, pyramid: list[torch.Tensor], examples: torch.Tensor, text: torch.Tensor) -> FuserOutput:
        """pyramid: SAM2's raw FPN maps (finest first); examples [N, 2, 96, 64]; text [1, 25, 768]."""
        audio = self.embed_audio(examples.to(pyramid[0].dtype))
        return self.fuse_text(self.embed_pyramid(pyramid), audio, text)

    def project(self, out: FuserOutput, size: tuple[int, int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Contrastive embeddings of a training forward: visual [T, 128, H, W] and audio [T, 128, 1] per level."""
        if out.attn is None:
            raise ValueError("Ref-AVS projections need the fusion maps of a forward with gradients enabled")
        visual = [self.train_proj_v1(m.flatten(2).transpose(1, 2)).reshape(-1, *size, PROJ_DIM).permute(0, 3, 1, 2)
                  for m in out.attn]
        # official: train_proj_a1(d[:10]), the 10 audio rows of a Ref-AVS clip; here the T rows SAM2 reads
        audio = [self.train_proj_a1(v).unsqueeze(-1) for v in out.sparse]
        return visual, audio
