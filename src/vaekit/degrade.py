"""Seeded degradations and the noise-level estimator.

Images follow the task contract (:func:`vaekit.io.as_float_image`): any dtype in, the same dtype and shape out
(uint8 noise is rounded and clipped, as a file would hold it; float noise is not clipped).  Every function takes
a ``seed`` and draws from its own ``numpy.random.default_rng(seed)``, so the
same call gives byte-identical noisy images on any machine.

* :func:`gaussian` -- the DnCNN/FFDNet protocol: ``x + N(0, (sigma/255)^2)``,
  ``sigma`` on the 0–255 scale, **not clipped** (the noisy input keeps values
  outside [0, 1]);
* :func:`poisson` -- ``Poisson(peak * x) / peak`` (``peak`` photons at white);
* :func:`salt_pepper` -- a fraction ``amount`` of pixels set to 0 or 1 (half
  each), the same positions across colour channels;
* :func:`camera` -- a camera file's noise: Poisson–Gaussian on a Bayer mosaic, demosaicked, then 8-bit JPEG;
* :func:`estimate_sigma` -- blind Gaussian level (0–255 scale) from the
  wavelet detail coefficients' median absolute deviation (Donoho), averaged
  over channels, each coefficient corrected for what clipping at black and white leaves of the noise, raised
  for spatially correlated (camera) noise that the flattest 8x8 blocks hold more of than the finest scale shows.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import VaekitError
from .io import as_float_image, restore_layout

NOISES = ("gaussian", "poisson", "salt-pepper")


def _check(x: np.ndarray) -> np.ndarray:
    return as_float_image(x)[0]


def _same_layout(noisy: np.ndarray, like) -> np.ndarray:
    """``noisy`` (float, [0, 1] units) in the dtype and shape of ``like``: integers rounded and clipped (a file's
    noise), floats kept unclipped."""
    return restore_layout(noisy, as_float_image(like)[1], clip=False)


def gaussian(x, sigma: float, seed: int = 0) -> np.ndarray:
    """Additive white Gaussian noise, ``sigma`` on the 0–255 scale (floats not clipped; the input's dtype)."""
    if not 0 <= sigma <= 255:
        raise VaekitError(f"sigma must lie in 0..255 (the 0–255 scale), not {sigma}")
    a = _check(x)
    return _same_layout(a + np.random.default_rng(seed).normal(0.0, sigma / 255.0, a.shape), x)


def check_peak(peak: float) -> float:
    """``peak`` (expected photons at white) if it is positive; else one clear error."""
    if not peak > 0:
        raise VaekitError(f"peak must be positive (expected photons at white), not {peak}")
    return peak


def check_amount(amount: float) -> float:
    """``amount`` (the fraction of pixels hit by impulses) if it lies in 0..1; else one clear error."""
    if not 0 <= amount <= 1:
        raise VaekitError(f"amount must lie in 0..1 (the fraction of hit pixels), not {amount}")
    return amount


def poisson(x, peak: float, seed: int = 0) -> np.ndarray:
    """Poisson (shot) noise with ``peak`` expected photons at value 1 (the input's dtype; floats in [0, ∞))."""
    check_peak(peak)
    a = _check(x)
    return _same_layout(np.random.default_rng(seed).poisson(np.clip(a, 0, 1) * peak) / float(peak), x)


def camera(x, seed: int = 0, *, photons=None, read=None, quality=None) -> np.ndarray:
    """``x`` as a camera file holds it: sensor noise of variance ``x / photons + (read/255)²`` sampled on an RGGB
    Bayer mosaic and demosaicked (spatially and cross-channel correlated), clipped, then an 8-bit JPEG (4:2:0).
    Only the noise goes through the mosaic, so ``x`` stays the reference, as the mean of many shots is for real
    pairs.  Unset parameters are drawn from ``seed``: ``photons`` at white log-uniform in 100–4,000, ``read``
    U(0, 2.5) on the 0–255 scale, ``quality`` 80–97.  Gray images skip the mosaic."""
    a = _check(x)
    rng = np.random.default_rng(seed)
    photons = float(np.exp(rng.uniform(np.log(100), np.log(4000)))) if photons is None else float(photons)
    read = float(rng.uniform(0, 2.5)) if read is None else float(read)
    quality = int(rng.integers(80, 98)) if quality is None else int(quality)
    if not photons > 0 or not 0 <= read <= 255 or not 1 <= quality <= 100:
        raise VaekitError("camera noise needs photons > 0, read in 0..255 and quality in 1..100")
    noise = rng.normal(0.0, 1.0, a.shape) * np.sqrt(np.clip(a, 0, 1) / photons + (read / 255.0) ** 2)
    t = torch.from_numpy(noise.astype(np.float32))
    if a.ndim == 3:
        t = _bayer_roundtrip(t.permute(2, 0, 1)[None])[0]
    else:
        t = t[None]
    clean = torch.from_numpy(a.astype(np.float32))
    y = _jpeg_roundtrip((clean.permute(2, 0, 1) if a.ndim == 3 else clean[None]) + t, quality)
    y = y.permute(1, 2, 0) if a.ndim == 3 else y[0]
    return _same_layout(y.numpy().astype(np.float64), x)


def salt_pepper(x, amount: float, seed: int = 0) -> np.ndarray:
    """Impulse noise: ``amount`` of the pixel positions set to 0 or 1 (all channels alike)."""
    check_amount(amount)
    a = _check(x).copy()
    rng = np.random.default_rng(seed)
    hit = rng.random(a.shape[:2]) < amount
    salt = rng.random(a.shape[:2]) < 0.5
    a[hit & salt] = 1.0
    a[hit & ~salt] = 0.0
    return _same_layout(a, x)


def add_noise(
    x,
    noise: str = "gaussian",
    *,
    sigma: float | None = None,
    peak: float | None = None,
    amount: float | None = None,
    seed: int = 0,
) -> np.ndarray:
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


# the blind level rises as (flat-block level / wavelet-MAD level) ** FLAT_POWER: chosen on simulated camera files
# over photos-val (docs/decisions.md); blocks of FLAT_BLOCK px, read at the FLAT_QUANTILE-th percentile
FLAT_POWER, FLAT_BLOCK, FLAT_QUANTILE = 2.0, 8, 10.0
LEVEL_MAX = 255.0  # the top of the 0–255 scale, where blind levels are held (a 1-bit dither measures above it)
SHOT_RATIO = 1.4  # the least change of level across the brightness range that draws a map (docs/decisions.md)
# a clipped plane's MAD leaves out coefficients where clipping keeps under CLIP_FLOOR of the noise's spread (chosen
# on photos-val, docs/decisions.md)
CLIP_FLOOR = 0.5
CLIP_SAMPLE = 1 << 18  # coefficients read per plane at most (a 1-megapixel plane's; beyond, an even subset)
_GAUSS_MAD = 0.6744897501960817  # the median of |N(0, 1)|


def _mad_sigma(y: np.ndarray) -> float:
    """The wavelet-MAD level (Donoho; scikit-image's ``estimate_sigma``: the finest diagonal db2 band, zeros left
    out), averaged over channels, on the 0–255 scale; 0 for a plane with no detail."""
    chans = y[..., None] if y.ndim == 2 else y
    level = float(np.mean([_mad_plane(chans[..., c]) for c in range(chans.shape[2])])) * 255.0
    return level if np.isfinite(level) else 0.0


def _clipped_moments(mu: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of clip(N(mu, s^2), 0, 1), elementwise in ``mu``: what an 8-bit file keeps of the noise."""
    from scipy.special import ndtr

    a, b = -mu / s, (1 - mu) / s
    pa, pb = np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi), np.exp(-0.5 * b * b) / np.sqrt(2 * np.pi)
    inside, above = ndtr(b) - ndtr(a), 1 - ndtr(b)
    m1 = above + mu * inside + s * (pa - pb)
    m2 = above + mu**2 * inside + 2 * mu * s * (pa - pb) + s**2 * (inside + a * pa - b * pb)
    return m1, np.sqrt(np.maximum(m2 - m1**2, 0.0))


def _mad_plane(p: np.ndarray) -> float:
    """One plane's MAD level ([0, 1] units).  Where the plane was clipped to [0, 1] (8-bit files), noise near black
    and white is cut short and the plain MAD reads low: each coefficient is then scaled up by the share of the
    noise's spread that clipping leaves at its surroundings' brightness (a clipped Gaussian's std, its mean matched
    to the surroundings' observed one), those left under CLIP_FLOOR are set aside, and the level is re-estimated
    until it settles (docs/decisions.md)."""
    import pywt
    from scipy.ndimage import uniform_filter

    bands = pywt.dwtn(np.asarray(p, np.float64), "db2")
    d = bands["dd"]
    live = d != 0
    if not live.any():
        return 0.0
    level = float(np.median(np.abs(d[live]))) / _GAUSS_MAD
    if level <= 0 or p.min() < 0 or p.max() > 1 or not ((p <= 0.5 / 255) | (p >= 254.5 / 255)).any():
        return level  # not clipped: every coefficient sees the whole noise
    local = uniform_filter(bands["aa"] / 2.0, 3, mode="nearest")  # the surroundings' observed brightness
    if d.size > CLIP_SAMPLE:  # a large image: an even subset of its coefficients settles the level as well
        step = int(np.ceil(d.size / CLIP_SAMPLE))
        d, live, local = d.ravel()[::step], live.ravel()[::step], local.ravel()[::step]
    for _ in range(8):
        grid = np.linspace(-4 * level, 1 + 4 * level, 2001)  # unclipped brightness -> its clipped mean and std
        mean, std = _clipped_moments(grid, level)
        share = np.interp(local, mean, std) / level  # at the brightness whose clipped mean is the observed one
        keep = live & (share > CLIP_FLOOR)
        if keep.sum() < 64:
            break
        new = float(np.median(np.abs(d[keep]) / share[keep])) / _GAUSS_MAD
        if abs(new - level) <= 1e-3 * level:
            return new
        level = new
    return level


def _blocks(y: np.ndarray):
    """For the 8x8 blocks of ``y`` (float, [0, 1]): each channel's variance about the block's least-squares plane,
    its mean, and whether it stays inside (0, 255) -- clipping hides noise.  Arrays of (blocks, channels)."""
    b = FLAT_BLOCK
    h, w = y.shape[0] // b * b, y.shape[1] // b * b
    chans = (y[..., None] if y.ndim == 2 else y).astype(np.float32)
    if not h or not w:  # smaller than a block
        none = np.zeros((0, chans.shape[2]), np.float32)
        return none, none, none.astype(bool)
    blocks = chans[:h, :w].reshape(h // b, b, w // b, b, -1).transpose(0, 2, 4, 1, 3).reshape(-1, chans.shape[2], b * b)
    yy, xx = np.mgrid[0:b, 0:b].reshape(2, -1) - (b - 1) / 2.0
    plane = np.stack([np.ones(b * b), yy, xx], 1)
    resid = (np.eye(b * b) - plane @ np.linalg.pinv(plane)).astype(np.float32)  # removes each block's plane
    var = ((blocks @ resid.T) ** 2).sum(2) / (b * b - plane.shape[1])
    inside = ((blocks > 0.5 / 255) & (blocks < 254.5 / 255)).all(2)
    return var, blocks.mean(2), inside


def flat_sigma(y) -> float:
    """Noise level of ``y`` (0–255) where it is flattest: per channel, the std of each 8x8 block about its
    least-squares plane, at the 10th percentile over blocks; averaged over channels.  The wavelet MAD sees only
    the finest scale; a block holds the noise of every scale up to its size, so noise that demosaicking and JPEG
    made spatially correlated shows in full.  Blocks that touch 0 or 255 (clipped) are left out; images with no
    block left give the MAD level."""
    y = _check(y)
    var, _, inside = _blocks(y)
    return _flat_level(y, var, inside)


def _flat_level(y, var, inside) -> float:
    levels = [
        np.sqrt(np.percentile(var[inside[:, c], c], FLAT_QUANTILE)) for c in range(var.shape[1]) if inside[:, c].any()
    ]
    return float(np.mean(levels)) * 255.0 if levels else _mad_sigma(y)


def level_shape(y, bins: int = 8) -> np.ndarray:
    """How the noise level varies with brightness in ``y``: an (H, W) map with RMS 1, from the noise level function
    ``var = a * brightness + b`` (the Poisson–Gaussian sensor model) fitted to the flattest blocks of each
    brightness bin (the 10th percentile of their variances, ``bins`` bins of equal count; Theil–Sen, so one
    textured bin does not tilt the line) and read within the bins' range.  A map is drawn only when the fitted
    level changes by at least ``SHOT_RATIO`` across that range: white noise, and too few blocks, give a flat map."""
    y = _check(y)
    return _shape(y, *_blocks(y), bins)


def _shape(y, var, mean, inside, bins: int = 8) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    flat = np.ones(y.shape[:2])
    keep = inside.all(1)
    var, mean = var[keep].mean(1), mean[keep].mean(1)
    if len(var) < 20 * bins:
        return flat
    edges = np.quantile(mean, np.linspace(0, 1, bins + 1))
    cells = [c for lo, hi in zip(edges[:-1], edges[1:]) if (c := (mean >= lo) & (mean <= hi)).sum() >= 20]
    if len(cells) < 3:
        return flat
    m = np.array([mean[c].mean() for c in cells])
    v = np.array([np.percentile(var[c], FLAT_QUANTILE) for c in cells])
    i, j = np.triu_indices(len(m), 1)
    apart = m[j] > m[i] + 1e-6
    if not apart.any():
        return flat
    a = float(np.median((v[j] - v[i])[apart] / (m[j] - m[i])[apart]))
    b = float(np.median(v - a * m))
    lo, hi = a * m.min() + b, a * m.max() + b
    if a <= 0 or lo <= 0 or hi < SHOT_RATIO**2 * lo:
        return flat
    bright = np.clip(uniform_filter(y.mean(2) if y.ndim == 3 else y, 5), m.min(), m.max())
    level = np.sqrt(a * bright + b)
    return level / np.sqrt(np.mean(level**2))


def noise_correlation(y) -> tuple[float, float]:
    """(white level, r): the wavelet-MAD level of ``y`` (0–255) and the ratio of :func:`flat_sigma` to it.  White
    noise gives r below 1 (the flattest blocks are a low quantile); noise that demosaicking and JPEG made
    spatially correlated hides from the finest scale, and r is 1.3–3 on camera files."""
    y = _check(y)
    var, _, inside = _blocks(y)
    return _correlation(y, var, inside)


def _correlation(y, var, inside) -> tuple[float, float]:
    white = _mad_sigma(y)
    return white, _flat_level(y, var, inside) / max(white, 0.3)


def estimate_sigma(y, *, correlated: bool = True) -> float:
    """Blind noise level of ``y`` on the 0–255 scale: the level to give a Gaussian denoiser.

    The wavelet MAD measures white noise.  With ``correlated``, noise that the flattest blocks hold more of than
    the finest scale shows (``noise_correlation`` ratio r above 1, as on camera JPEGs) raises the level to
    ``white * r ** FLAT_POWER``; white noise (r at most about 1) keeps its MAD level.  An image of pure
    pattern at the finest scale (a 1-bit dither) can measure above the scale: the level is held at 255."""
    if not correlated:
        return min(_mad_sigma(_check(y)), LEVEL_MAX)
    return _level(*noise_correlation(y))


def _level(white: float, r: float) -> float:
    """The blind level from the wavelet level and the flat-block ratio (:func:`estimate_sigma`)."""
    return min(white * max(1.0, r) ** FLAT_POWER, LEVEL_MAX)


def blind_level(y) -> tuple[float, float, np.ndarray]:
    """(:func:`estimate_sigma` level, :func:`noise_correlation` ratio r, :func:`level_shape` map) from one pass
    over the blocks of ``y``."""
    y = _check(y)
    var, mean, inside = _blocks(y)
    white, r = _correlation(y, var, inside)
    return _level(white, r), r, _shape(y, var, mean, inside)


def anscombe(y, peak: float) -> np.ndarray:
    """Variance-stabilise Poisson data: returns values whose noise is ≈ N(0, 1)."""
    return 2.0 * np.sqrt(np.maximum(np.asarray(y, dtype=np.float64) * peak, 0) + 3.0 / 8.0)


def inverse_anscombe(a, peak: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse (Mäkitalo & Foi 2011), back to [0, 1] units."""
    a = np.maximum(np.asarray(a, dtype=np.float64), 1e-6)
    v = 0.25 * a**2 + 0.25 * np.sqrt(1.5) / a - 11.0 / 8.0 / a**2 + 5.0 / 8.0 * np.sqrt(1.5) / a**3 - 1.0 / 8.0
    return np.maximum(v, 0) / peak


# ----------------------------------------------------------------------------- masks (inpainting)
# A mask is a bool (H, W) array, True where pixels are missing; shared across colour channels.
STROKE_WIDTHS = {"thin": 0.01, "medium": 0.025, "thick": 0.05}  # brush width / min(H, W)
STROKE_TARGETS = {"thin": 0.06, "medium": 0.15, "thick": 0.30}  # strokes are drawn until this hole fraction


def mask_box(shape) -> np.ndarray:
    """The centred box: h/2 x w/2 (25% of the area)."""
    h, w = shape[:2]
    m = np.zeros((h, w), bool)
    m[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = True
    return m


def mask_pixels(shape, rate: float, seed: int = 0) -> np.ndarray:
    """Each pixel missing with probability ``rate``."""
    if not 0 < rate < 1:
        raise VaekitError(f"pixel rate must lie strictly between 0 and 1, not {rate}")
    return np.random.default_rng(seed).random(shape[:2]) < rate


def mask_strokes(shape, width: str = "medium", seed: int = 0) -> np.ndarray:
    """Random brush strokes (free-form masks in the style of LaMa's thin/medium/thick): polylines of 4-8
    segments with round joints, brush width ``STROKE_WIDTHS[width]`` x min(H, W) (at least 1 pixel),
    drawn until ``STROKE_TARGETS[width]`` of the image is covered."""
    from PIL import Image

    if width not in STROKE_WIDTHS:
        raise VaekitError(f"stroke width must be one of {', '.join(STROKE_WIDTHS)}, not {width!r}")
    h, w = shape[:2]
    rng = np.random.default_rng(seed)
    bw = max(1, round(STROKE_WIDTHS[width] * min(h, w)))
    im = Image.new("L", (w, h), 0)
    draw_strokes(im, rng, bw, STROKE_TARGETS[width])
    return np.asarray(im) > 127


def draw_strokes(im, rng, width: int, target: float, segments=(4, 9), step=(0.05, 0.2), tries: int = 10_000) -> None:
    """Draw random brush polylines of ``width`` pixels on the "L" image ``im`` until ``target`` of it is
    covered (or ``tries`` strokes): each starts at a uniform point and has ``segments`` (low, high exclusive)
    segments of uniform direction and length ``step`` x the long side, clipped to the image."""
    from PIL import ImageDraw

    w, h = im.size
    draw = ImageDraw.Draw(im)
    for _ in range(tries):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        pts = [(x, y)]
        for _ in range(int(rng.integers(*segments))):
            ang = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(*step) * max(h, w)
            x = float(np.clip(x + length * np.cos(ang), 0, w - 1))
            y = float(np.clip(y + length * np.sin(ang), 0, h - 1))
            pts.append((x, y))
        draw.line(pts, fill=255, width=width, joint="curve")
        if np.asarray(im).mean() / 255 >= target:
            break


def mask_text(shape, seed: int = 0, lines: int = 6) -> np.ndarray:
    """Text overlaid on the image (captions, dates, watermarks): ``lines`` of seeded random words."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = shape[:2]
    rng = np.random.default_rng(seed)
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    size = max(8, round(min(h, w) / 12))
    font = ImageFont.load_default(size=size)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
    for i in range(lines):
        words = " ".join("".join(rng.choice(letters, int(rng.integers(3, 9)))) for _ in range(int(rng.integers(2, 5))))
        draw.text((float(rng.uniform(0, 0.4 * w)), (i + 0.5) * h / (lines + 0.5)), words, fill=255, font=font)
    return np.asarray(im) > 127


def make_mask(kind: str, shape, seed: int = 0) -> np.ndarray:
    """``box``, ``pixels0.5`` (any rate), ``strokes-thin|medium|thick``, ``text``."""
    if kind == "box":
        return mask_box(shape)
    if kind.startswith("pixels"):
        try:
            return mask_pixels(shape, float(kind[6:] or 0.5), seed)
        except ValueError:
            pass
    if kind.startswith("strokes-"):
        return mask_strokes(shape, kind[8:], seed)
    if kind == "text":
        return mask_text(shape, seed)
    raise VaekitError(
        f"unknown mask {kind!r}: use box, pixelsRATE (e.g. pixels0.5), strokes-thin, strokes-medium, "
        "strokes-thick or text"
    )


def read_mask(path, shape=None) -> np.ndarray:
    """A mask file (any mode): pixels > 127 (of the grey conversion) are missing, or the 1s of a mask that holds
    only 0 and 1 (a boolean array saved as 8 bits).  With ``shape`` the size is checked; an empty or full mask is
    refused."""
    from pathlib import Path

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise VaekitError(f"mask {path} does not exist")
    from .io import check_pixels

    try:
        with Image.open(path) as im:  # the header's size is checked before anything is decoded
            w, h = im.size
            if shape is not None and (h, w) != tuple(shape[:2]):
                raise VaekitError(f"mask {path} is {w}x{h} but the image is {shape[1]}x{shape[0]}")
            check_pixels(f"mask {path}", w, h, None)
            g = np.asarray(im.convert("L"))
            m = g == 1 if g.max() == 1 else g > 127
    except (UnidentifiedImageError, OSError, ValueError):
        raise VaekitError(f"mask {path} is not an image Pillow can read") from None
    check_mask(m, str(path))
    return m


def check_mask(m: np.ndarray, what: str = "the mask") -> None:
    if not m.any():
        raise VaekitError(f"{what} marks no pixel as missing (pixels > 127 are missing): nothing to fill")
    if m.all():
        raise VaekitError(f"{what} marks every pixel as missing: there is nothing to fill from")


# ----------------------------------------------------------------------------- training noise (torch, batched)
def _smooth_field(b: int, h: int, w: int, cells: int, device=None) -> torch.Tensor:
    """(B, 1, H, W) random field in [0, 1], bilinear over a ``cells`` x ``cells`` grid: slowly varying levels."""
    import torch.nn.functional as F

    g = torch.rand(b, 1, cells, cells).to(device)
    return F.interpolate(g, size=(h, w), mode="bilinear", align_corners=True)


def _bayer_roundtrip(y: torch.Tensor) -> torch.Tensor:
    """Sample ``y`` (B, 3, H, W) on an RGGB Bayer mosaic and demosaick it bilinearly: the camera's spatially
    and cross-channel correlated noise."""
    import torch.nn.functional as F

    B, C, H, W = y.shape
    m = torch.zeros(1, 3, H, W, dtype=y.dtype, device=y.device)
    m[:, 0, 0::2, 0::2] = 1
    m[:, 1, 0::2, 1::2] = 1
    m[:, 1, 1::2, 0::2] = 1
    m[:, 2, 1::2, 1::2] = 1
    k = torch.tensor([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]], dtype=y.dtype, device=y.device)
    k = k.expand(3, 1, 3, 3)
    num = F.conv2d(F.pad(y * m, (1, 1, 1, 1), mode="reflect"), k, groups=3)
    den = F.conv2d(F.pad(m.expand(B, -1, -1, -1), (1, 1, 1, 1), mode="reflect"), k, groups=3)
    return torch.where(m.bool(), y, num / den)


def _jpeg_roundtrip(y: torch.Tensor, quality: int) -> torch.Tensor:
    """One image (C, H, W) in [0, 1] through an 8-bit JPEG at ``quality`` (4:2:0 for colour, as cameras write)."""
    import io

    from PIL import Image

    a = (y.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    a = a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=int(quality))
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0
    t = torch.from_numpy(out).to(y.device, y.dtype)
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1)


def simulate_noise(x: torch.Tensor, sigma_max: float = 55.0, kinds=(0.35, 0.2, 0.2, 0.25)):
    """Noisy copies of clean ``x`` (B, C, H, W) in [0, 1] and their per-pixel noise levels (B, C, H, W, 0–1 units).

    Each example draws one kind, with probabilities ``kinds``:

    * white Gaussian, one level σ ~ U(0, ``sigma_max``)/255;
    * Poisson–Gaussian, variance ``a·x + b²`` (the sensor model; the level map follows the signal);
    * Gaussian whose level varies slowly across the image (a random smooth field);
    * camera-like: Poisson–Gaussian on a Bayer mosaic, demosaicked, then 8-bit and JPEG (q 60–95) for most.

    The first three are clipped to [0, 1] and quantized to 8 bits for half the examples (what files carry),
    and left as floats otherwise (the DnCNN protocol).  The map is the level *before* clipping, demosaicking
    and JPEG: the σ a user would state.  Draws come from torch's global generator (reproducible with the
    training loop's seed)."""
    import torch

    B, C, H, W = x.shape
    y = torch.empty_like(x)
    smap = torch.empty_like(x)
    p = torch.tensor(kinds, dtype=torch.float64)
    kind = torch.multinomial(p / p.sum(), B, replacement=True)
    smax = sigma_max / 255.0
    for i in range(B):
        xi, k = x[i : i + 1], int(kind[i])
        if k == 0:
            s = torch.rand(()) * smax * torch.ones_like(xi)
        elif k in (1, 3):
            a = 10 ** (-4.0 + 2.5 * torch.rand(()))  # 1/a: 3 to 10,000 photons at white
            b = torch.rand(()) * 0.4 * smax
            s = torch.sqrt(a * xi.clamp(0, 1) + b * b).clamp_max(smax)
        else:
            lo, hi = sorted((torch.rand(2) * smax).tolist())
            field = _smooth_field(1, H, W, int(torch.randint(2, 5, ())), xi.device)
            s = (lo + (hi - lo) * field).expand_as(xi).clone()
        yi = xi + torch.randn_like(xi) * s
        if k == 3:
            if C == 3:  # the noise through the mosaic: the reference keeps its detail, as for real pairs
                yi = xi + _bayer_roundtrip(yi - xi)
            yi = yi.clamp(0, 1)
            yi = (
                _jpeg_roundtrip(yi[0], int(torch.randint(60, 96, ())))[None]
                if torch.rand(()) < 0.75
                else (yi * 255).round() / 255
            )
        elif torch.rand(()) < 0.5:
            yi = (yi.clamp(0, 1) * 255).round() / 255
        y[i : i + 1] = yi
        smap[i : i + 1] = s
    return y, smap
