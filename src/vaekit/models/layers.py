"""Shared building blocks of the image models."""

from __future__ import annotations

import torch
from torch import nn

ENSEMBLES = (1, 2, 4, 8)  # self-ensemble sizes: 1 none, 2 a half turn, 4 the quarter turns, 8 every flip and turn


def dihedral(t: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """The ``k``-th (0-7) of the eight flips and quarter turns of the image plane of ``t`` (..., H, W): ``k % 4``
    quarter turns, then a left-right flip if ``k >= 4``; ``inverse`` undoes it."""
    if not inverse:
        t = torch.rot90(t, k % 4, (-2, -1))
        return t.flip(-1) if k >= 4 else t
    t = t.flip(-1) if k >= 4 else t
    return torch.rot90(t, -(k % 4), (-2, -1))


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
