"""Classical exposure / colour compensation: ``method(image) -> corrected image`` (float in [0, 1] units in and out;
the task restores the caller's dtype)."""

from __future__ import annotations

import math

import numpy as np


def _unit(img) -> np.ndarray:
    return np.clip(np.asarray(img, dtype=np.float32), 0, 1)


def percentile_stretch(img, *, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map each channel's ``low``..``high`` percentiles to 0..1 (contrast, exposure and a cast)."""
    a = _unit(img)
    lo = np.percentile(a, low, axis=(0, 1))
    hi = np.percentile(a, high, axis=(0, 1))
    return (a - lo) / np.maximum(hi - lo, 1e-6)


def gray_world(img) -> np.ndarray:
    """Gray-world white balance: scale channels to a common mean, then the mean grey to 0.5 by gamma."""
    a = _unit(img)
    if a.ndim == 3:
        means = a.reshape(-1, a.shape[2]).mean(0)
        a = np.clip(a * (means.mean() / np.maximum(means, 1e-6)), 0, 1)
    m = float(np.clip(a.mean(), 1e-3, 1 - 1e-3))
    return a ** (math.log(0.5) / math.log(m))


def clahe(img, *, clip_limit: float = 0.01) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (scikit-image), on the luminance for colour."""
    from skimage import exposure

    a = _unit(img)
    return exposure.equalize_adapthist(a, clip_limit=clip_limit).astype(np.float32)


METHODS = {"percentile": percentile_stretch, "gray-world": gray_world, "clahe": clahe}
