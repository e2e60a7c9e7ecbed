"""Seeded degradations and the noise-level estimator.

Images are float arrays in [0, 1], (H, W) or (H, W, C).  Every function takes
a ``seed`` and draws from its own ``numpy.random.default_rng(seed)``, so the
same call gives byte-identical noisy images on any machine.

* :func:`gaussian` -- the DnCNN/FFDNet protocol: ``x + N(0, (sigma/255)^2)``,
  ``sigma`` on the 0–255 scale, **not clipped** (the noisy input keeps values
  outside [0, 1]);
* :func:`poisson` -- ``Poisson(peak * x) / peak`` (``peak`` photons at white);
* :func:`salt_pepper` -- a fraction ``amount`` of pixels set to 0 or 1 (half
  each), the same positions across colour channels;
* :func:`estimate_sigma` -- blind Gaussian level (0–255 scale) from the
  wavelet detail coefficients' median absolute deviation (Donoho), averaged
  over channels (scikit-image's ``estimate_sigma``).
"""
from __future__ import annotations

import numpy as np

from .errors import VaekitError

NOISES = ("gaussian", "poisson", "salt-pepper")


def _check(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (2, 3):
        raise VaekitError(f"expected an (H, W) or (H, W, C) image, got shape {x.shape}")
    return x


def gaussian(x, sigma: float, seed: int = 0) -> np.ndarray:
    """Additive white Gaussian noise, ``sigma`` on the 0–255 scale, not clipped (float64)."""
    if not 0 <= sigma <= 255:
        raise VaekitError(f"sigma must lie in 0..255 (the 0–255 scale), not {sigma}")
    x = _check(x)
    return x + np.random.default_rng(seed).normal(0.0, sigma / 255.0, x.shape)


def poisson(x, peak: float, seed: int = 0) -> np.ndarray:
    """Poisson (shot) noise with ``peak`` expected photons at value 1; result in [0, ∞) (float64)."""
    if not peak > 0:
        raise VaekitError(f"peak must be positive, not {peak}")
    x = _check(x)
    return np.random.default_rng(seed).poisson(np.clip(x, 0, 1) * peak) / float(peak)


def salt_pepper(x, amount: float, seed: int = 0) -> np.ndarray:
    """Impulse noise: ``amount`` of the pixel positions set to 0 or 1 (all channels alike)."""
    if not 0 <= amount <= 1:
        raise VaekitError(f"amount must lie in 0..1, not {amount}")
    x = _check(x).copy()
    rng = np.random.default_rng(seed)
    hit = rng.random(x.shape[:2]) < amount
    salt = rng.random(x.shape[:2]) < 0.5
    x[hit & salt] = 1.0
    x[hit & ~salt] = 0.0
    return x


def add_noise(x, noise: str = "gaussian", *, sigma: float | None = None, peak: float | None = None,
              amount: float | None = None, seed: int = 0) -> np.ndarray:
    """Dispatch on ``noise``; the parameter that kind needs must be given."""
    if noise == "gaussian":
        if sigma is None:
            raise VaekitError("gaussian noise needs sigma")
        return gaussian(x, sigma, seed)
    if noise == "poisson":
        if peak is None:
            raise VaekitError("poisson noise needs peak")
        return poisson(x, peak, seed)
    if noise == "salt-pepper":
        if amount is None:
            raise VaekitError("salt-pepper noise needs amount")
        return salt_pepper(x, amount, seed)
    raise VaekitError(f"unknown noise {noise!r}; choose one of {', '.join(NOISES)}")


def estimate_sigma(y) -> float:
    """Blind estimate of the Gaussian noise level of ``y`` on the 0–255 scale."""
    from skimage.restoration import estimate_sigma as sk_estimate

    y = _check(y)
    s = sk_estimate(y, channel_axis=-1 if y.ndim == 3 else None, average_sigmas=True)
    return float(s) * 255.0


def anscombe(y, peak: float) -> np.ndarray:
    """Variance-stabilise Poisson data: returns values whose noise is ≈ N(0, 1)."""
    return 2.0 * np.sqrt(np.maximum(np.asarray(y, dtype=np.float64) * peak, 0) + 3.0 / 8.0)


def inverse_anscombe(a, peak: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse (Mäkitalo & Foi 2011), back to [0, 1] units."""
    a = np.maximum(np.asarray(a, dtype=np.float64), 1e-6)
    v = 0.25 * a**2 + 0.25 * np.sqrt(1.5) / a - 11.0 / 8.0 / a**2 + 5.0 / 8.0 * np.sqrt(1.5) / a**3 - 1.0 / 8.0
    return np.maximum(v, 0) / peak
