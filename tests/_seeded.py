"""Deterministic weights, inputs and waveforms for the official-parity golden tests.

The golden files in ``tests/data`` (see ``tests/data/README.md``) were produced by running the
official AuralSAM2 code with exactly these helpers, so any change here invalidates them.

* :func:`seeded_state_dict` - seeded random weights for any state_dict template.
* :func:`seeded_inputs` - a seeded "video clip" (ImageNet-normalised frames + log-mel-like audio).
* :func:`seeded_waveform` - a seeded tones+noise waveform, int16-quantised like the official reader.

Everything is generated with explicit ``torch.Generator`` objects (never the global RNG) or
pure integer hashing, so results do not depend on test order.
"""

from __future__ import annotations

import math

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def seeded_state_dict(template: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Return seeded random tensors with the keys/shapes/dtypes of ``template``.

    Keys are visited in ``sorted(template)`` order with ONE ``torch.Generator().manual_seed(seed)``;
    every floating tensor consumes draws from it (float32 draws, cast to the template dtype):

    * non-floating tensors (e.g. ``num_batches_tracked``): copied unchanged (no draws);
    * key ends with ``running_var``: ``1 + 0.1 * rand``;
    * key ends with ``running_mean``: ``0.1 * randn``;
    * ``dim >= 2``: ``randn / sqrt(fan_in)``, ``fan_in = numel // shape[0]``;
    * 1-D, key ends with ``weight`` and contains ``"norm"`` or ``"ln"``: ``1 + 0.1 * randn``;
    * any other 1-D / 0-D tensor: ``0.02 * randn``.
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(template):
        t = template[key]
        if not torch.is_floating_point(t):
            out[key] = t.detach().clone()
            continue
        shape = tuple(t.shape)
        if key.endswith("running_var"):
            v = 1.0 + 0.1 * torch.rand(shape, generator=gen, dtype=torch.float32)
        elif key.endswith("running_mean"):
            v = 0.1 * torch.randn(shape, generator=gen, dtype=torch.float32)
        elif t.dim() >= 2:
            fan_in = max(1, t.numel() // max(1, shape[0]))
            v = torch.randn(shape, generator=gen, dtype=torch.float32) / math.sqrt(fan_in)
        elif t.dim() == 1 and key.endswith("weight") and ("norm" in key or "ln" in key):
            v = 1.0 + 0.1 * torch.randn(shape, generator=gen, dtype=torch.float32)
        else:
            v = 0.02 * torch.randn(shape, generator=gen, dtype=torch.float32)
        out[key] = v.to(dtype=t.dtype)
    return out


def seeded_inputs(T: int, image_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(frames, audio)`` for a seeded clip of ``T`` frames.

    One ``torch.Generator().manual_seed(seed)`` draws, in this order:

    * ``frames``: ``[T, 3, S, S]`` float32 = ``(rand - mean) / std`` with ImageNet mean/std
      (i.e. an ImageNet-normalised uniform-random RGB image in [0, 1]);
    * ``audio``: ``[T, 2, 96, 64]`` float32 = ``randn * 2 - 3`` (log-mel-like values, 2 channels).
    """
    gen = torch.Generator().manual_seed(seed)
    rgb = torch.rand((T, 3, image_size, image_size), generator=gen, dtype=torch.float32)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    frames = (rgb - mean) / std
    audio = torch.randn((T, 2, 96, 64), generator=gen, dtype=torch.float32) * 2.0 - 3.0
    return frames, audio


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64_uniform(n: int, seed: int) -> np.ndarray:
    """``n`` float64 uniforms in [0, 1) from a counter-based splitmix64 hash (version-stable)."""
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64(seed * 0x1000003 + 1) * np.uint64(0x9E3779B97F4A7C15)
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def seeded_waveform(seconds: float, sample_rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A deterministic tones + noise test signal, quantised like the official reader.

    Returns float64 ``[N]`` (``channels == 1``) or ``[N, channels]`` (soundfile layout), with
    ``N = round(seconds * sample_rate)``; values are ``int16 / 32768`` (``int16`` obtained by
    rounding ``x * 32768`` and clipping to [-32768, 32767]), so they lie in [-1, 1).

    Channel ``c`` is ``0.25 sin(2 pi f1 t) + 0.15 sin(2 pi f2 t + 0.3 c) + 0.1 sin(2 pi f3 t)`` with an
    amplitude-modulating envelope, plus ``0.15 * (2u - 1)`` uniform noise (splitmix64 hash, so it
    is reproducible across numpy versions). ``f3`` is above 8 kHz when the rate allows, to exercise
    the anti-aliasing filter of the 16 kHz resampler.
    """
    n = int(round(seconds * sample_rate))
    t = np.arange(n, dtype=np.float64) / float(sample_rate)
    nyq = sample_rate / 2.0
    cols = []
    for c in range(channels):
        f1 = 220.0 * (1 + (seed + c) % 4)
        f2 = 1234.5 + 311.0 * ((seed + 2 * c) % 7)
        f3 = min(9500.0 + 250.0 * c, 0.45 * sample_rate) if nyq > 8000.0 else 0.4 * nyq
        env = 0.6 + 0.4 * np.sin(2 * np.pi * (0.7 + 0.2 * c) * t) ** 2
        x = env * (
            0.25 * np.sin(2 * np.pi * f1 * t)
            + 0.15 * np.sin(2 * np.pi * f2 * t + 0.3 * c)
            + 0.1 * np.sin(2 * np.pi * f3 * t)
        )
        x = x + 0.15 * (2.0 * _splitmix64_uniform(n, seed * 131 + c) - 1.0)
        q = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
        cols.append(q.astype(np.float64) / 32768.0)
    if channels == 1:
        return cols[0]
    return np.stack(cols, axis=1)
