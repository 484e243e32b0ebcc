"""Clip transforms of the official training (SAM2-style, clip-consistent) and testing.

Train, in the official order: horizontal flip (p 0.5), random affine (rotation +-25 deg, x-shear
+-20 deg, bilinear; the image is filled with the mean colour (123, 116, 103), the labels with 0 by
nearest), square resize to the image size (bilinear, labels too, then > 0), colour jitter
(brightness 0.1, contrast 0.03, saturation 0.03, clip-consistent), random grayscale (p 0.05), colour
jitter per frame (0.1, 0.05, 0.05), ImageNet normalisation. The official jitter computes its result
and throws it away; ``jitter=False`` reproduces that no-op.

Test: bicubic square resize of the image, nearest for the labels, ImageNet normalisation.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from ..core.session import IMAGENET_MEAN, IMAGENET_STD
from .datasets import ClipSample

FLIP_P = 0.5
AFFINE_DEGREES = 25.0
AFFINE_SHEAR = 20.0
AFFINE_FILL = (123, 116, 103)
GRAYSCALE_P = 0.05
CLIP_JITTER = (0.1, 0.03, 0.03)  # brightness, contrast, saturation (hue off)
FRAME_JITTER = (0.1, 0.05, 0.05)
LABEL_ON = 255


@dataclass
class ClipTensors:
    """A transformed clip, ready for `AuralSAM2.segment_clip`."""

    name: str
    frames: torch.Tensor  # [T, 3, S, S] ImageNet-normalised
    labels: torch.Tensor  # [T, S, S] float in {0, 1}
    supervised: torch.Tensor  # [T] bool
    audio: torch.Tensor  # [T, 2, 96, 64]
    frame_indices: np.ndarray  # [T] frame numbers in the source video
    video: str  # the source video's name


_ADJUST = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)


def _jitter_params(rng: random.Random, strengths: tuple[float, float, float]) -> list[tuple[int, float]]:
    """torchvision ColorJitter's draw: a random order of the three adjustments, uniform factors."""
    order = rng.sample(range(len(_ADJUST)), len(_ADJUST))
    return [(i, rng.uniform(max(0.0, 1 - strengths[i]), 1 + strengths[i])) for i in order]


def _apply_jitter(image: Image.Image, params: list[tuple[int, float]]) -> Image.Image:
    for index, factor in params:
        image = _ADJUST[index](image, factor)
    return image


def _normalise(images: list[Image.Image]) -> torch.Tensor:
    stack = torch.stack([TF.to_tensor(im) for im in images])
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (stack - mean) / std


def _label_images(sample: ClipSample) -> list[Image.Image]:
    return [Image.fromarray((np.asarray(lab) > 0).astype(np.uint8) * LABEL_ON) for lab in sample.labels]


def _label_tensor(labels: list[Image.Image]) -> torch.Tensor:
    return torch.from_numpy((np.stack([np.asarray(lab) for lab in labels]) > 0).astype(np.float32))


class TrainTransform:
    """The official train augmentation, the same random draw for every frame of a clip."""

    def __init__(self, image_size: int, jitter: bool = True, seed: int | None = None) -> None:
        self.image_size = int(image_size)
        self.jitter = jitter
        self.rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        """Give a data-loader worker its own random stream."""
        self.rng.seed(seed)

    def __call__(self, sample: ClipSample) -> ClipTensors:
        frames = [Image.fromarray(np.ascontiguousarray(f)).convert("RGB") for f in sample.frames]
        labels = _label_images(sample)
        if self.rng.random() < FLIP_P:
            frames, labels = [TF.hflip(f) for f in frames], [TF.hflip(lab) for lab in labels]
        angle = self.rng.uniform(-AFFINE_DEGREES, AFFINE_DEGREES)
        shear = [self.rng.uniform(-AFFINE_SHEAR, AFFINE_SHEAR), 0.0]
        frames = [TF.affine(f, angle, [0, 0], 1.0, shear, InterpolationMode.BILINEAR, fill=list(AFFINE_FILL))
                  for f in frames]
        labels = [TF.affine(lab, angle, [0, 0], 1.0, shear, InterpolationMode.NEAREST, fill=0) for lab in labels]
        size = [self.image_size, self.image_size]
        frames = [TF.resize(f, size, InterpolationMode.BILINEAR) for f in frames]
        labels = [TF.resize(lab, size, InterpolationMode.BILINEAR) for lab in labels]
        frames = self._colour(frames)
        return ClipTensors(sample.name, _normalise(frames), _label_tensor(labels),
                           torch.from_numpy(np.asarray(sample.supervised, dtype=bool)),
                           torch.from_numpy(np.asarray(sample.audio, dtype=np.float32)),
                           np.asarray(sample.frame_indices), sample.video)

    def _colour(self, frames: list[Image.Image]) -> list[Image.Image]:
        """Jitter (clip-wide), grayscale (clip-wide), jitter (per frame); jitter off = official no-op."""
        if self.jitter:
            params = _jitter_params(self.rng, CLIP_JITTER)
            frames = [_apply_jitter(f, params) for f in frames]
        if self.rng.random() < GRAYSCALE_P:
            frames = [TF.rgb_to_grayscale(f, num_output_channels=3) for f in frames]
        if self.jitter:
            frames = [_apply_jitter(f, _jitter_params(self.rng, FRAME_JITTER)) for f in frames]
        return frames


class EvalTransform:
    """The official test preprocessing: bicubic image / nearest label resize, normalisation."""

    def __init__(self, image_size: int) -> None:
        self.image_size = int(image_size)

    def __call__(self, sample: ClipSample) -> ClipTensors:
        size = [self.image_size, self.image_size]
        frames = [TF.resize(Image.fromarray(np.ascontiguousarray(f)).convert("RGB"), size, InterpolationMode.BICUBIC)
                  for f in sample.frames]
        labels = [TF.resize(lab, size, InterpolationMode.NEAREST) for lab in _label_images(sample)]
        return ClipTensors(sample.name, _normalise(frames), _label_tensor(labels),
                           torch.from_numpy(np.asarray(sample.supervised, dtype=bool)),
                           torch.from_numpy(np.asarray(sample.audio, dtype=np.float32)),
                           np.asarray(sample.frame_indices), sample.video)
