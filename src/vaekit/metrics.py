"""Image and likelihood metrics.

Images are tensors (B, C, H, W) in [0, 1].  Likelihoods are in nats per
example; bits/dim divides by (number of dimensions x ln 2).
"""
from __future__ import annotations

import math

import torch
from pytorch_msssim import ssim as _ssim


def psnr(x: torch.Tensor, y: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image: (B,)."""
    mse = ((x.float() - y.float()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse.clamp(min=1e-12))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM per image (Gaussian window 11, sigma 1.5; pytorch-msssim): (B,).

    Images smaller than the window get a window that fits (odd, >= 3)."""
    win = min(11, min(x.shape[-2:]) - (1 - min(x.shape[-2:]) % 2))
    return _ssim(x.float(), y.float(), data_range=1.0, size_average=False, win_size=max(3, win))


def bits_per_dim(nll_nats: float, dims: int) -> float:
    return nll_nats / (dims * math.log(2))


@torch.no_grad()
def iwae_log_likelihood(model, x: torch.Tensor, k: int = 1000, chunk: int = 250) -> torch.Tensor:
    """IWAE estimate of log p(x) per example with ``k`` importance samples: (B,).

    The k samples are drawn in chunks and combined with a running logsumexp,
    so memory is O(B * chunk)."""
    acc = None
    done = 0
    while done < k:
        kk = min(chunk, k - done)
        lw = torch.logsumexp(model.log_weights(x, kk), 0)  # (B,)
        acc = lw if acc is None else torch.logaddexp(acc, lw)
        done += kk
    return acc - math.log(k)


def active_units(means: torch.Tensor, threshold: float = 0.01) -> int:
    """Burda et al.'s activity: Cov_x(E_q[u|x]) > threshold, over (N, D) posterior means."""
    return int((means.flatten(1).var(0) > threshold).sum())
