"""Shared building blocks of the image models."""

from __future__ import annotations

from torch import nn


def conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution that keeps the size (or halves it with ``stride=2``)."""
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip (the DRUNet/EDSR block: no normalisation, which hurts restoration)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(conv3(width, width), nn.ReLU(inplace=True), conv3(width, width))

    def forward(self, x):
        return x + self.body(x)
