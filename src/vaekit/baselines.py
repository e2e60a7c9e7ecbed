"""Classical denoisers, with the task's signature: ``method(noisy, sigma) -> estimate``.

``noisy`` is a float image in [0, 1] units ((H, W) or (H, W, C), possibly
outside [0, 1] -- Gaussian noise is not clipped), ``sigma`` the Gaussian level
on the 0–255 scale.  Each returns a float64 estimate (not clipped; the
benchmark clips and rounds).  Parameters are functions of sigma, tuned on
Set12 at sigma 15/25/50 by ``scripts/tune_denoise_baselines.py`` and frozen
here; BSD68 is never used to choose them.

Poisson and salt-and-pepper noise go through :func:`vaekit.tasks.denoise.for_noise`,
which wraps any Gaussian denoiser (Anscombe transform; impulse detection).
"""
from __future__ import annotations

import numpy as np

from .errors import VaekitError

# tuned on Set12 (scripts/tune_denoise_baselines.py); see the docstring
NLM_H = 0.7  # h = NLM_H * sigma (scikit-image, fast mode)
NLM_PATCH, NLM_DIST = 5, 6
CV_NLM_H = 0.9  # OpenCV h = CV_NLM_H * sigma on uint8 input
TV_WEIGHT = 0.003  # Chambolle weight = TV_WEIGHT * sigma  (0–1 image units)
GAUSS_PX = 0.035  # Gaussian filter std in pixels = GAUSS_PX * sigma


def _channel_axis(x):
    return -1 if x.ndim == 3 else None


def nlm(noisy, sigma):
    """scikit-image non-local means (fast mode), h proportional to sigma."""
    from skimage.restoration import denoise_nl_means

    s = sigma / 255.0
    return denoise_nl_means(noisy, h=NLM_H * s, sigma=s, patch_size=NLM_PATCH, patch_distance=NLM_DIST,
                            fast_mode=True, channel_axis=_channel_axis(noisy))


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

    return denoise_wavelet(noisy, sigma=sigma / 255.0, method="BayesShrink", mode="soft",
                           rescale_sigma=True, channel_axis=_channel_axis(noisy))


def gaussian_filter(noisy, sigma):
    """Gaussian blur, its width proportional to sigma."""
    from scipy.ndimage import gaussian_filter as gf

    w = max(GAUSS_PX * sigma, 1e-3)
    return gf(noisy, sigma=(w, w, 0) if noisy.ndim == 3 else w)


def median(noisy, sigma=None, size: int = 3):
    """Median filter (3x3, per channel): the classical salt-and-pepper remover."""
    from scipy.ndimage import median_filter

    return median_filter(noisy, size=(size, size, 1) if noisy.ndim == 3 else size)


def bm3d(noisy, sigma):
    """BM3D, profile "np" (CBM3D for colour) -- the optional ``bm3d`` extra (non-commercial licence)."""
    try:
        import bm3d as _bm3d
    except ImportError:
        raise VaekitError("BM3D needs the optional extra: pip install 'vaekit[bm3d]' "
                          "(the bm3d package is licensed for non-commercial use only)") from None
    s = sigma / 255.0
    if noisy.ndim == 3:
        return np.asarray(_bm3d.bm3d_rgb(noisy, s, profile="np"), dtype=np.float64)
    return np.asarray(_bm3d.bm3d(noisy, s, profile="np"), dtype=np.float64)


METHODS = {"nlm": nlm, "opencv-nlm": opencv_nlm, "tv": tv, "wavelet": wavelet, "gaussian": gaussian_filter,
           "median": median, "bm3d": bm3d}


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


def get(name: str):
    if name not in METHODS:
        raise VaekitError(f"unknown denoising method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


# ----------------------------------------------------------------------------- inpainting
# Signature: method(image, mask) -> filled image; ``image`` float [0, 1] (H, W) or (H, W, C), ``mask`` bool (H, W),
# True = missing.  Known pixels are returned unchanged.

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


def laplace_solve(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Harmonic (membrane) inpainting, solved exactly: ``values`` (C, H, W), ``mask`` (H, W) bool, True = missing.

    Each missing pixel becomes the mean of its 4 neighbours (at the image border, of those inside it: the
    membrane's edge is free), with the known pixels as boundary values -- one sparse linear system for all
    channels, solved directly (SuperLU).  The solution is also the expected colour of the known pixel where a
    random walk from the missing pixel first lands, which is why it is a strong fill deep inside large holes.
    Returns float64 (C, H, W); with nothing missing, the input; with nothing known, the image mid-grey."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    out = values.copy()
    if not mask.any():
        return out
    if mask.all():
        out[:] = 0.5
        return out
    C, H, W = values.shape
    ys, xs = np.nonzero(mask)
    n = len(ys)
    index = np.full((H, W), -1, np.int64)
    index[ys, xs] = np.arange(n)
    degree = np.zeros(n)
    rows, cols = [np.arange(n)], [np.arange(n)]
    rhs = np.zeros((C, n))
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        qy, qx = ys + dy, xs + dx
        inside = (qy >= 0) & (qy < H) & (qx >= 0) & (qx < W)
        degree += inside
        r, qy, qx = np.nonzero(inside)[0], qy[inside], qx[inside]
        hole = mask[qy, qx]
        rows.append(r[hole])
        cols.append(index[qy[hole], qx[hole]])
        for c in range(C):
            rhs[c] += np.bincount(r[~hole], weights=values[c, qy[~hole], qx[~hole]], minlength=n)
    data = np.concatenate([degree, -np.ones(sum(len(v) for v in rows[1:]))])
    A = sp.csc_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    sol = spsolve(A, rhs.T)
    out[:, ys, xs] = np.asarray(sol).reshape(n, C).T
    return out


def harmonic(image, mask):
    """Harmonic (Laplace) inpainting, solved exactly (:func:`laplace_solve`); the inpaint-vae's own pre-fill."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        return laplace_solve(image[None], mask)[0]
    return laplace_solve(image.transpose(2, 0, 1), mask).transpose(1, 2, 0)


def mean_fill(image, mask):
    """Every missing pixel set to the mean of the known pixels (per channel)."""
    out = np.array(image, dtype=np.float64, copy=True)
    out[mask] = image[~mask].mean(0)
    return out


INPAINT_METHODS = {"telea": telea, "ns": navier_stokes, "biharmonic": biharmonic, "harmonic": harmonic,
                   "mean": mean_fill}


def get_inpaint(name: str):
    if name not in INPAINT_METHODS:
        raise VaekitError(f"unknown inpainting method {name!r}; choose one of {', '.join(INPAINT_METHODS)}")
    return INPAINT_METHODS[name]
