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


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per image (5 scales, pytorch-msssim), images in [0, 1]; needs min side > 160: (B,)."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    return _ms_ssim(x.float(), y.float(), data_range=1.0, size_average=False)


def bd_rate(rate_a, psnr_a, rate_b, psnr_b) -> tuple[float, tuple[float, float]] | tuple[None, None]:
    """Bjøntegaard delta rate of curve b against curve a, in percent (negative: b needs fewer bits).

    Log-rate is interpolated as a function of PSNR with PCHIP (monotone) on each
    curve and integrated over the PSNR range both cover.  Returns (bd, (lo, hi))
    or (None, None) when the ranges do not overlap."""
    import numpy as np
    from scipy.interpolate import PchipInterpolator

    def curve(r, p):
        r, p = np.asarray(r, float), np.asarray(p, float)
        order = np.argsort(p)
        p, lr = p[order], np.log(r[order])
        keep = np.r_[True, np.diff(p) > 1e-9]  # PCHIP needs increasing x
        return p[keep], lr[keep]

    pa, la = curve(rate_a, psnr_a)
    pb, lb = curve(rate_b, psnr_b)
    lo, hi = max(pa.min(), pb.min()), min(pa.max(), pb.max())
    if hi - lo < 1e-6 or len(pa) < 2 or len(pb) < 2:
        return None, None
    ia = PchipInterpolator(pa, la).integrate(lo, hi)
    ib = PchipInterpolator(pb, lb).integrate(lo, hi)
    return float((np.exp((ib - ia) / (hi - lo)) - 1) * 100), (float(lo), float(hi))
