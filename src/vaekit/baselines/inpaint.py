"""Classical inpainting: ``method(image, mask) -> filled image``.

``image`` is float in [0, 1] units, (H, W) or (H, W, C); ``mask`` bool (H, W), True where missing.  Known pixels
are returned unchanged.
"""

from __future__ import annotations

import numpy as np


def _cv_inpaint(image, mask, flag, radius=3):
    import cv2

    u8 = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    out = cv2.inpaint(u8, mask.astype(np.uint8) * 255, radius, flag).astype(np.float64) / 255.0
    return np.where(mask[..., None] if image.ndim == 3 else mask, out, image)


def telea(image, mask):
    """OpenCV fast marching (Telea 2004), radius 3 (8-bit in, as OpenCV requires)."""
    import cv2

    return _cv_inpaint(image, mask, cv2.INPAINT_TELEA)


def navier_stokes(image, mask):
    """OpenCV Navier-Stokes inpainting (Bertalmio 2001), radius 3."""
    import cv2

    return _cv_inpaint(image, mask, cv2.INPAINT_NS)


def biharmonic(image, mask):
    """scikit-image biharmonic inpainting (smooth interpolation of the known pixels)."""
    from skimage.restoration import inpaint_biharmonic

    out = inpaint_biharmonic(image, mask, channel_axis=-1 if image.ndim == 3 else None)
    return np.where(mask[..., None] if image.ndim == 3 else mask, out, image)


def harmonic(image, mask):
    """Harmonic (Laplace) inpainting, solved exactly (:func:`laplace_solve`); the inpaint-vae's own pre-fill."""
    from ..models.inpainter import laplace_solve  # on use: importing the models loads torch

    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        return laplace_solve(image[None], mask)[0]
    return laplace_solve(image.transpose(2, 0, 1), mask).transpose(1, 2, 0)


def mean_fill(image, mask):
    """Every missing pixel set to the mean of the known pixels (per channel)."""
    out = np.array(image, dtype=np.float64, copy=True)
    out[mask] = image[~mask].mean(0)
    return out


METHODS = {"telea": telea, "ns": navier_stokes, "biharmonic": biharmonic, "harmonic": harmonic, "mean": mean_fill}
