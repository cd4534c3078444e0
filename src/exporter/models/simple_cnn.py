"""A small convolutional image classifier."""

from __future__ import annotations

import torch
from torch import nn


class SimpleCNN(nn.Module):
    """Two conv blocks, global average pooling and a linear head; any image size works.

    Example:
        >>> import torch
        >>> model = SimpleCNN(num_classes=10).eval()
        >>> tuple(model(torch.rand(2, 3, 64, 64)).shape)
        (2, 10)
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width, 4 * width),
            nn.ReLU(),
            nn.Linear(4 * width, num_classes),
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(pixel_values))
