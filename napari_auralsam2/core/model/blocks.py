"""Transformer blocks of the AuralFuser.

`PyramidBlock` is the PVTv2-style block run on each frame's 2-D token map (spatial-reduction
attention, depth-wise conv MLP). `AudioBlock` is its 1-D twin run over the clip's sequence of
audio tokens; it owns the same submodule names as `PyramidBlock` (including `attn.sr`,
`attn.norm` and `mlp.dwconv`, which it never uses) so released checkpoints load strictly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def init_fuser_weights(module: nn.Module) -> None:
    """The official initialisation: truncated-normal linears, unit norms, He-style 2-D convs."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys/values come from a strided-conv downsampled map."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float,
                 sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def attend(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Softmax attention of `x` over `context` ([B, N, C] each)."""
        q = self._heads(self.q(x))
        k, v = self._kv(context)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        out = out.transpose(1, 2).reshape(x.shape)
        return self.proj_drop(self.proj(out))

    def _kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = context.shape
        kv = self.kv(context).reshape(b, n, 2, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        context = x
        if self.sr_ratio > 1:
            b, n, c = x.shape
            reduced = self.sr(x.transpose(1, 2).reshape(b, c, *size))
            context = self.norm(reduced.flatten(2).transpose(1, 2))
        return self.attend(x, context)


class DepthwiseConv(nn.Module):
    """3x3 depth-wise conv over a token map (gives the MLP its locality)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, *size)).flatten(2).transpose(1, 2)


class ConvMlp(nn.Module):
    """fc1 -> (depth-wise conv) -> GELU -> fc2; the 1-D variant skips the conv."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        x = self.fc1(x)
        if size is not None:
            x = self.dwconv(x, size)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))


class PyramidBlock(nn.Module):
    """Pre-norm block on one frame's token map [T, H*W, C] (frames are independent here)."""

    def __init__(self, dim: int = 256, num_heads: int = 4, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.1, attn_drop: float = 0.1, sr_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SpatialReductionAttention(dim, num_heads, qkv_bias, attn_drop, drop, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        self.apply(init_fuser_weights)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), size)
        return x + self.mlp(self.norm2(x), size)


class AudioBlock(PyramidBlock):
    """The same block over the clip's audio tokens [T, C]: attention runs across the T frames."""

    def forward(self, d: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        seq = self.norm1(d).unsqueeze(0)  # one sequence of T tokens
        d = d + self.attn.attend(seq, seq).squeeze(0)
        return d + self.mlp(self.norm2(d), None)
