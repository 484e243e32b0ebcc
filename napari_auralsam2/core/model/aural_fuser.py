"""AuralFuser: turns a clip's audio and SAM2's raw feature pyramid into prompts for SAM2.

For each pyramid level (stride 4, 8, 16 of the image) the map is patch-embedded to the stride-16
grid, refined per frame (`f_blocks`), the clip's audio tokens are refined across frames
(`a_blocks`), and both are fused (`fusion_modules`). The three fused maps become SAM2's *dense*
prompts (added to the image keys of the mask decoder) and the three audio tokens its *sparse*
prompts (added to the mask tokens).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sam2.modeling.position_encoding import PositionEmbeddingSine
from torch import nn

from .blocks import AudioBlock, PyramidBlock
from .fusion import AudioVisualFusion
from .vggish import VGGish

FUSER_DIM = 256
PATCH_KERNELS = (4, 2, 1)  # stride-4/8/16 FPN levels -> the stride-16 grid
PYRAMID_DEPTHS = (3, 6, 12)
AUDIO_DEPTH = 3
BLOCK_ARGS = dict(dim=FUSER_DIM, num_heads=4, mlp_ratio=4.0, qkv_bias=True, drop=0.1, attn_drop=0.1, sr_ratio=4)
PROJ_DIM = 128


@dataclass
class FuserOutput:
    """Prompts for SAM2, ordered from the finest pyramid level (stride 4) to the coarsest."""

    dense: list[torch.Tensor]   # 3 x [T, H*W, 256]: added to the decoder's image keys
    sparse: list[torch.Tensor]  # 3 x [T, 256]: added to the decoder's 4 mask tokens
    attn: list[torch.Tensor] | None = None  # Ref-AVS training: 3 x [T, 256, 1, H, W] fusion maps

    def frame(self, t: int) -> "FuserOutput":
        """The prompts of one frame of the clip (batch dim of 1 on the dense maps)."""
        return FuserOutput([m[t:t + 1] for m in self.dense], [v[t] for v in self.sparse])

    def to(self, device: torch.device | str) -> "FuserOutput":
        attn = None if self.attn is None else [m.to(device) for m in self.attn]
        return FuserOutput([m.to(device) for m in self.dense], [v.to(device) for v in self.sparse], attn)


class ProjectionHead(nn.Module):
    """1x1 conv -> BN -> 1x1 conv, L2-normalised over channels (contrastive loss only)."""

    def __init__(self, conv: type[nn.Module], norm: type[nn.Module]) -> None:
        super().__init__()
        self.proj = nn.Sequential(conv(FUSER_DIM, PROJ_DIM, kernel_size=1), norm(PROJ_DIM),
                                  conv(PROJ_DIM, PROJ_DIM, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(x), p=2, dim=1)


def audio_position_encoding(dim: int = FUSER_DIM) -> torch.Tensor:
    """The official 1-D sine PE at position 0: the constant vector [0, 1, 0, 1, ...]."""
    pe = torch.zeros(dim)
    pe[1::2] = 1.0
    return pe


class AuralFuser(nn.Module):
    """Audio + SAM2 feature pyramid -> dense and sparse prompts (state_dict = the official keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.vgg = VGGish()
        self.vgg.requires_grad_(False)
        self.position_encoding_func = PositionEmbeddingSine(FUSER_DIM, normalize=True, warmup_cache=False)
        self.patch_embeds = nn.ModuleList(nn.Conv2d(FUSER_DIM, FUSER_DIM, k, stride=k) for k in PATCH_KERNELS)
        self.f_blocks = nn.ModuleList(
            nn.ModuleList(PyramidBlock(**BLOCK_ARGS) for _ in range(n)) for n in PYRAMID_DEPTHS)
        self.a_blocks = nn.ModuleList(
            nn.ModuleList(AudioBlock(**BLOCK_ARGS) for _ in range(AUDIO_DEPTH)) for _ in PYRAMID_DEPTHS)
        self.fusion_modules = nn.ModuleList(AudioVisualFusion(FUSER_DIM) for _ in PYRAMID_DEPTHS)
        self.smooth_convs = nn.ModuleList(nn.Conv2d(FUSER_DIM, FUSER_DIM, 1) for _ in PYRAMID_DEPTHS[1:])
        self.train_proj_v1 = ProjectionHead(nn.Conv2d, nn.BatchNorm2d)
        self.train_proj_a1 = ProjectionHead(nn.Conv1d, nn.BatchNorm1d)
        self.register_buffer("audio_pos", audio_position_encoding(), persistent=False)

    def embed_audio(self, examples: torch.Tensor) -> torch.Tensor:
        """[T, 2, 96, 64] stereo log-mel examples -> [T, 256] (VGGish on L and R, concatenated)."""
        t = examples.shape[0]
        both = self.vgg(torch.cat([examples[:, 0:1], examples[:, 1:2]]))  # one pass over the big weights
        return torch.cat([both[:t], both[t:]], dim=-1)

    def embed_pyramid(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        """SAM2's raw FPN maps [T, 256, *] (before conv_s0/conv_s1), finest first -> patch-embedded
        maps [T, 256, H, W] on the stride-16 grid (what the fusion starts from; independent of audio/text)."""
        return [self.patch_embeds[level](fpn) for level, fpn in enumerate(pyramid[:len(PATCH_KERNELS)])]

    def fuse(self, maps: list[torch.Tensor], d: torch.Tensor) -> tuple[list, list, list]:
        """Fuse patch-embedded maps with the token sequence d [N, 256]; per level: the fused maps
        [T, H*W, 256], the token sequences [N, 256] and the fusion's frame attention maps."""
        dense, tokens, attn = [], [], []
        for level, x in enumerate(maps):
            t, c, h, w = x.shape
            pos = self.position_encoding_func(x).to(x.dtype).flatten(2).transpose(1, 2)
            x = x.flatten(2).transpose(1, 2)
            if level > 0:
                x = x + dense[-1]
                x = self.smooth_convs[level - 1](x.transpose(1, 2).reshape(t, c, h, w)).flatten(2).transpose(1, 2)
            x = x + pos
            # quirk: the constant audio PE is added again at every level and accumulates
            d = d + self.audio_pos
            for block in self.f_blocks[level]:
                x = block(x, (h, w))
            for block in self.a_blocks[level]:
                d = block(d)
            # quirk: both PEs are added a second time right before fusion
            x, d, frame_attn = self.fusion_modules[level](x + pos, d + self.audio_pos, (h, w))
            dense.append(x)
            tokens.append(d)
            attn.append(frame_attn)
        return dense, tokens, attn

    def forward(self, pyramid: list[torch.Tensor], examples: torch.Tensor) -> FuserOutput:
        """pyramid: SAM2's raw FPN maps [T, 256, *] (before conv_s0/conv_s1), finest first."""
        dense, sparse, _ = self.fuse(self.embed_pyramid(pyramid), self.embed_audio(examples.to(pyramid[0].dtype)))
        return FuserOutput(dense, sparse)

    def project(self, out: FuserOutput, size: tuple[int, int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Contrastive embeddings: visual [T, 128, H, W] and audio [T, 128, 1] per level."""
        visual = [self.train_proj_v1(m.transpose(1, 2).reshape(m.shape[0], FUSER_DIM, *size)) for m in out.dense]
        audio = [self.train_proj_a1(v.unsqueeze(-1)) for v in out.sparse]
        return visual, audio
