"""Shared by the examples: arguments, MNIST loading (real or tiny synthetic) and printing."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

DEFAULT_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    ap.add_argument("--data-dir", default=str(DEFAULT_MNIST), help="MNIST folder (idx files)")
    ap.add_argument("-o", "--output", default="example-out", help="folder for pictures and figures")
    ap.add_argument("--tiny", action="store_true", help="a seconds-long run on synthetic digits (tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    return ap


def synthetic_digits(n: int, seed: int = 0):
    """Blurred strokes that look vaguely like digits: (n, 1, 28, 28) in [0, 1] and labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    labels = rng.integers(0, 10, n)
    imgs = np.zeros((n, 1, 28, 28), np.float32)
    for i, c in enumerate(labels):
        angle = c * np.pi / 10 + rng.normal(0, 0.1)
        d = np.abs((yy - 14) * np.cos(angle) - (xx - 14) * np.sin(angle))
        imgs[i, 0] = np.exp(-(d**2) / 3.0) * (np.hypot(yy - 14, xx - 14) < 10)
    return torch.from_numpy(imgs), torch.from_numpy(labels)


def mnist(args, split: str, n: int | None = None):
    """(images, labels) from --data-dir, or synthetic digits with --tiny."""
    if args.tiny:
        return synthetic_digits(n or 256, seed=args.seed + (split == "test"))
    from vaekit.data import mnist_tensors

    x, y = mnist_tensors(args.data_dir, split)
    return (x[:n], y[:n]) if n else (x, y)
