"""Image and likelihood metrics: the one home of PSNR, SSIM, hole metrics, bits/dim and BD-rate.

Tensor metrics take (B, C, H, W) in [0, 1]; the ``*_u8`` metrics take numpy images in [0, 1] units and score
them as the 8-bit files a user would save (rounded and clipped), which is how the denoising and inpainting
tables are scored.  SSIM is scikit-image's, with the Gaussian window of Wang et al. (sigma 1.5) everywhere.
Likelihoods are in nats per example; bits/dim divides by (number of dimensions x ln 2).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def psnr(x: torch.Tensor, y: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image: (B,)."""
    mse = ((x.float() - y.float()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse.clamp(min=1e-12))


def _ssim_map(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """scikit-image's SSIM map of two (H, W) or (H, W, C) arrays; images under 11 px get a narrower window, down
    to one pixel."""
    from skimage.metrics import structural_similarity

    side = min(a.shape[:2])
    sigma = 1.5 if side >= 11 else max(side - 1, 2) / 7.0
    if 2 * int(3.5 * sigma + 0.5) + 1 > side:  # skimage's window (3.5 sigma each way) must fit: 1-6 px sides
        sigma = ((side - 1) // 2 + 0.25) / 3.5
    _, smap = structural_similarity(
        a,
        b,
        data_range=data_range,
        gaussian_weights=True,
        sigma=sigma,
        use_sample_covariance=False,
        full=True,
        channel_axis=-1 if a.ndim == 3 else None,
    )
    return smap


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM per image of (B, C, H, W) tensors in [0, 1]: (B,)."""
    a = x.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    b = y.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    return torch.tensor([float(_ssim_map(a[i], b[i], 1.0).mean()) for i in range(a.shape[0])])


def to_u8(x) -> np.ndarray:
    """[0, 1] units to uint8 (rounded, clipped): the file a user would save."""
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def psnr_u8(est, clean) -> float:
    """PSNR (dB) of the uint8-rounded estimate against the uint8 clean image, over all values."""
    mse = np.mean((to_u8(est).astype(np.float64) - to_u8(clean).astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def ssim_u8(est, clean) -> float:
    """SSIM of the uint8-rounded estimate against the uint8 clean image."""
    return float(_ssim_map(to_u8(est), to_u8(clean), 255).mean())


def hole_psnr(est_u8, clean_u8, mask) -> float:
    """PSNR (dB) over the missing pixels only (``mask`` True) of uint8 images."""
    d = est_u8[mask].astype(np.float64) - clean_u8[mask].astype(np.float64)
    return float(10 * np.log10(255.0**2 / max(float(np.mean(d * d)), 1e-10)))


def ssim_pair(est_u8, clean_u8, mask) -> tuple[float, float]:
    """(SSIM averaged inside the hole, SSIM of the whole image) from one SSIM map."""
    smap = _ssim_map(est_u8, clean_u8, 255)
    return float(smap[mask].mean()), float(smap.mean())


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


def _log_rate_curve(rate, psnr):
    """(PSNR, log-rate) of a rate-distortion curve, sorted by PSNR with repeated PSNRs dropped (PCHIP needs
    increasing x)."""
    import numpy as np

    r, p = np.asarray(rate, float), np.asarray(psnr, float)
    order = np.argsort(p)
    p, lr = p[order], np.log(r[order])
    keep = np.r_[True, np.diff(p) > 1e-9]
    return p[keep], lr[keep]


def bd_rate(rate_a, psnr_a, rate_b, psnr_b) -> tuple[float, tuple[float, float]] | tuple[None, None]:
    """Bjøntegaard delta rate of curve b against curve a, in percent (negative: b needs fewer bits).

    Log-rate is interpolated as a function of PSNR with PCHIP (monotone) on each
    curve and integrated over the PSNR range both cover.  Returns (bd, (lo, hi))
    or (None, None) when the ranges do not overlap."""
    import numpy as np
    from scipy.interpolate import PchipInterpolator

    pa, la = _log_rate_curve(rate_a, psnr_a)
    pb, lb = _log_rate_curve(rate_b, psnr_b)
    lo, hi = max(pa.min(), pb.min()), min(pa.max(), pb.max())
    if hi - lo < 1e-6 or len(pa) < 2 or len(pb) < 2:
        return None, None
    ia = PchipInterpolator(pa, la).integrate(lo, hi)
    ib = PchipInterpolator(pb, lb).integrate(lo, hi)
    return float((np.exp((ib - ia) / (hi - lo)) - 1) * 100), (float(lo), float(hi))


def rate_at(rate, psnr, target: float) -> float | None:
    """The rate a curve needs at PSNR ``target``, interpolated as :func:`bd_rate` does (log-rate, PCHIP); None
    outside the PSNR range the curve covers.  One point of a BD-rate: where along the curve a codec gains or
    loses."""
    import numpy as np
    from scipy.interpolate import PchipInterpolator

    p, lr = _log_rate_curve(rate, psnr)
    if len(p) < 2 or not p[0] <= target <= p[-1]:
        return None
    return float(np.exp(PchipInterpolator(p, lr)(target)))
