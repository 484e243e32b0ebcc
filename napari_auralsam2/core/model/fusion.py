"""Bidirectional audio-visual fusion (the TPAVI-like non-local "dot" attention of AuralSAM2).

Frames attend to the clip's audio tokens and audio tokens attend to the clip's frames, over the
whole clip at once. The numerics are the official ones, quirks included, because the released
weights were trained through them.
"""
from __future__ import annotations

import torch
from torch import nn


class AudioVisualFusion(nn.Module):
    """Fuse frame tokens [T, H*W, C] with audio tokens [T, C]; returns both, updated."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        inner = dim // 2
        self.inner = inner
        self.align_channel = nn.Conv1d(dim, dim, kernel_size=1)
        self.align_channel_back = nn.Conv1d(dim, inner, kernel_size=1)  # unused; in released checkpoints
        self.norm_layer = nn.LayerNorm(dim)
        self.g = nn.Conv3d(dim, inner, kernel_size=1)  # unused; in released checkpoints
        self.W_z = nn.Sequential(nn.Conv3d(inner, dim, kernel_size=1), nn.BatchNorm3d(dim))
        self.W_z2 = nn.Sequential(nn.Conv1d(inner, dim, kernel_size=1), nn.BatchNorm1d(dim))
        for bn in (self.W_z[1], self.W_z2[1]):  # zero-init: fusion starts as the identity
            nn.init.zeros_(bn.weight)
            nn.init.zeros_(bn.bias)
        self.norm_layer2 = nn.LayerNorm(dim)
        self.q_frame = nn.Conv3d(dim, inner, kernel_size=1)
        self.k_frame = nn.Conv3d(dim, inner, kernel_size=1)
        self.v_frame = nn.Conv3d(dim, inner, kernel_size=1)
        self.q_audio = nn.Conv1d(dim, inner, kernel_size=1)
        self.k_audio = nn.Conv1d(dim, inner, kernel_size=1)
        self.v_audio = nn.Conv1d(dim, inner, kernel_size=1)

    def _tokens(self, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # quirk: raw reshape of [T, C', ...] to [1, -1, C'] without a permute, so a "token" is
        # C' consecutive values of one channel, not a pixel (released weights depend on it)
        return conv(x).reshape(1, -1, self.inner)

    def forward(self, frames: torch.Tensor, audio: torch.Tensor,
                size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Also returns the frame attention after `W_z`, before the residual (Ref-AVS projects it)."""
        t, n, c = frames.shape
        tokens = audio.shape[0]  # T audio tokens (AVS), or T audio + 25 text tokens (Ref-AVS)
        frame = frames.transpose(1, 2).reshape(t, c, 1, *size)  # [T, C, 1, H, W]
        audio = self.align_channel(audio.unsqueeze(-1))  # [T, C, 1]

        q_f, k_f, v_f = (self._tokens(m, frame) for m in (self.q_frame, self.k_frame, self.v_frame))
        q_a, k_a, v_a = (self._tokens(m, audio) for m in (self.q_audio, self.k_audio, self.v_audio))

        # quirk: no softmax; scores are divided by the number of frame tokens (T*H*W)
        scores = q_f @ k_a.mT
        frame_attn = (scores / scores.size(1)) @ v_a
        # quirk: raw view back to [T, C', 1, H, W] (not the inverse of the token reshape)
        frame_attn = frame_attn.transpose(1, 2).contiguous().view(t, self.inner, 1, *size)
        frame_attn = self.W_z(frame_attn)
        frame = frame + frame_attn
        frame = self.norm_layer(frame.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        frames_out = frame.reshape(t, c, n).transpose(1, 2)

        scores = q_a @ k_f.mT
        audio_attn = (scores / scores.size(-1)) @ v_f
        # quirk: raw view of [1, C', N] as [N, C'] (mixes tokens and channels for N > 1)
        audio_attn = audio_attn.transpose(1, 2).contiguous().view(tokens, self.inner, 1)
        audio = audio + self.W_z2(audio_attn)
        return frames_out, self.norm_layer2(audio.squeeze(-1)), frame_attn
