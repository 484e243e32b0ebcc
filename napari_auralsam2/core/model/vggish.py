"""VGGish audio encoder (the TF-VGGish architecture, PyTorch layout of the released weights).

AuralSAM2 runs it on each stereo channel's 0.96 s log-mel example and concatenates the two
128-d embeddings into one 256-d audio token per frame. It is frozen in the official recipe.
"""
from __future__ import annotations

import torch
from torch import nn

#: conv widths with "M" for 2x2 max-pooling; indices of the convs are the state_dict keys
#: `features.{0,3,6,8,11,13}` of the released `vggish-10086976.pth`.
VGGISH_LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
EXAMPLE_FRAMES = 96
MEL_BINS = 64
EMBEDDING_DIM = 128
_FLAT_DIM = 512 * (EXAMPLE_FRAMES // 16) * (MEL_BINS // 16)


def _feature_layers() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 1
    for width in VGGISH_LAYOUT:
        if width == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = width
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """Log-mel example [N, 1, 96, 64] -> ReLU'd embedding [N, 128] (no PCA, no quantisation)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _feature_layers()
        self.embeddings = nn.Sequential(
            nn.Linear(_FLAT_DIM, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_DIM), nn.ReLU(inplace=True),
        )

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = self.features(examples)
        # channels-last before flattening: the weights were converted from TF (NHWC)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return self.embeddings(x)
