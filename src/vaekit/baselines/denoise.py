"""Classical denoisers: ``method(noisy, sigma) -> estimate``.

``noisy`` is a float image in [0, 1] units ((H, W) or (H, W, C), possibly
outside [0, 1] -- Gaussian noise is not clipped), ``sigma`` the Gaussian level
on the 0–255 scale.  Each returns a float64 estimate (not clipped; the
benchmark clips and rounds).  Parameters are functions of sigma, chosen on
the 32 validation images of bsds400 in gray at sigma 15/25/50
(docs/decisions.md) and frozen here; no test set is used to choose them.

Poisson and salt-and-pepper noise go through :func:`vaekit.tasks.denoise.for_noise`,
which wraps any Gaussian denoiser (Anscombe transform; impulse detection).
"""

from __future__ import annotations

import numpy as np

from ..errors import VaekitError

# chosen on bsds400 val (docs/decisions.md); see the docstring
NLM_H = 0.6  # h = NLM_H * sigma (scikit-image, fast mode)
NLM_PATCH, NLM_DIST = 5, 6
CV_NLM_H = 0.9  # OpenCV h = CV_NLM_H * sigma on uint8 input
TV_WEIGHT = 0.003  # Chambolle weight = TV_WEIGHT * sigma  (0–1 image units)
GAUSS_PX = 0.04  # Gaussian filter std in pixels = GAUSS_PX * sigma


def _channel_axis(x):
    return -1 if x.ndim == 3 else None


def nlm(noisy, sigma):
    """scikit-image non-local means (fast mode), h proportional to sigma."""
    from skimage.restoration import denoise_nl_means

    s = sigma / 255.0
    return denoise_nl_means(
        noisy,
        h=NLM_H * s,
        sigma=s,
        patch_size=NLM_PATCH,
        patch_distance=NLM_DIST,
        fast_mode=True,
        channel_axis=_channel_axis(noisy),
    )


def opencv_nlm(noisy, sigma):
    """OpenCV fastNlMeansDenoising(Colored) -- needs uint8, so the input is clipped and rounded first."""
    import cv2

    u8 = np.clip(np.round(noisy * 255.0), 0, 255).astype(np.uint8)
    h = float(CV_NLM_H * sigma)
    if noisy.ndim == 2:
        out = cv2.fastNlMeansDenoising(u8, None, h=h, templateWindowSize=7, searchWindowSize=21)
    else:
        out = cv2.fastNlMeansDenoisingColored(u8, None, h, h, 7, 21)
    return out.astype(np.float64) / 255.0


def tv(noisy, sigma):
    """Total-variation denoising (Chambolle), weight proportional to sigma."""
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(noisy, weight=TV_WEIGHT * sigma, channel_axis=_channel_axis(noisy))


def wavelet(noisy, sigma):
    """BayesShrink soft wavelet thresholding (scikit-image), sigma given."""
    from skimage.restoration import denoise_wavelet

    return denoise_wavelet(
        noisy,
        sigma=sigma / 255.0,
        method="BayesShrink",
        mode="soft",
        rescale_sigma=True,
        channel_axis=_channel_axis(noisy),
    )


def gaussian_filter(noisy, sigma):
    """Gaussian blur, its width proportional to sigma."""
    from scipy.ndimage import gaussian_filter as gf

    w = max(GAUSS_PX * sigma, 1e-3)
    return gf(noisy, sigma=(w, w, 0) if noisy.ndim == 3 else w)


def median(noisy, sigma=None, size: int = 3):
    """Median filter (3x3, per channel): the classical salt-and-pepper remover."""
    from scipy.ndimage import median_filter

    return median_filter(noisy, size=(size, size, 1) if noisy.ndim == 3 else size)


def bm3d(noisy, sigma, threads: int | None = None):
    """BM3D, profile "np" (CBM3D for colour) -- the optional ``bm3d`` extra (non-commercial licence).  It runs on
    ``threads`` threads (default: torch's, which ``--threads`` sets), not on every core as the package would."""
    try:
        import bm3d as _bm3d
    except ImportError:
        raise VaekitError(
            "BM3D needs the optional extra: pip install 'vaekit[bm3d]' "
            "(the bm3d package is licensed for non-commercial use only)"
        ) from None
    import torch

    profile = _bm3d.BM3DProfile()  # the "np" profile
    profile.num_threads = int(threads or torch.get_num_threads())
    s = sigma / 255.0
    if noisy.ndim == 3:
        return np.asarray(_bm3d.bm3d_rgb(noisy, s, profile=profile), dtype=np.float64)
    return np.asarray(_bm3d.bm3d(noisy, s, profile=profile), dtype=np.float64)


METHODS = {
    "bm3d": bm3d,
    "nlm": nlm,
    "tv": tv,
    "opencv-nlm": opencv_nlm,
    "wavelet": wavelet,
    "gaussian": gaussian_filter,
    "median": median,
}


def available() -> list[str]:
    """Method names usable here (bm3d only with its extra installed)."""
    names = list(METHODS)
    try:
        import bm3d as _  # noqa: F401
    except ImportError:
        names.remove("bm3d")
    return names


def best_classical() -> str:
    """The strongest classical method available: BM3D with the extra, else NL-means."""
    return "bm3d" if "bm3d" in available() else "nlm"
