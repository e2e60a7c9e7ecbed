"""Denoising: the VAE denoisers and the wrapping that serves every noise kind.

* :func:`vae_denoise` runs a :class:`~vaekit.models.denoiser.DenoisingVAE` on an
  image of any size: reflect-padded to a multiple of 8, and cut into
  overlapping tiles (blended with a linear ramp) above ``tile`` pixels a side,
  so memory stays bounded and no seam shows.
* :func:`for_noise` turns any Gaussian denoiser ``f(noisy, sigma)`` into one
  for Poisson noise (Anscombe transform, exact unbiased inverse) and for
  salt-and-pepper noise (impulses -- pixels at exactly 0 or 1 -- replaced by
  the median of their clean neighbours, then ``f`` at the estimated residual
  level).  Blind, on spatially correlated noise in colour (camera files), a
  denoiser that reads level maps runs on the 2x2 pixel-shuffled sub-images,
  where the noise is closer to white (:func:`shuffle_denoise`).
* :func:`vae_estimate` is :func:`vae_denoise` with the repeated fine structure
  that the network took for noise handed back from its residual
  (:func:`periodic_residual`).
* :func:`denoise` is the API: ``vaekit.denoise(image, sigma=None, ...)``.
"""

from __future__ import annotations

import numbers
import os
import time

import numpy as np
import torch

from .. import degrade
from ..errors import VaekitError
from ..io import as_float_image, restore_layout
from ..models.denoiser import OPPONENT, OPPONENT_SCALE, OPPONENT_SHIFT
from ..models.layers import dihedral
from .common import (
    Result,
    check_ensemble,
    check_samples,
    ensemble_transforms,
    even_tiles,
    ramp,
    resolve_device,
)

# the default model per image channels: the colour model is the gray one grown across the opponent channels
# (docs/models/denoise.md)
SHIPPED_BY_CHANNELS = {1: "denoise-gray", 3: "denoise-color"}
# tile side: a 768 x 512 photo in one tile (tiles of 512 recompute a third of it in the overlap), about 0.8 GB
TILE = 768
# blind and correlated (degrade.noise_correlation ratio at least SHUFFLE_RATIO): denoise the 2x2 pixel-shuffled
# sub-images, then the whole at SHUFFLE_REFINE times the full-resolution level; chosen on simulated camera files
# over photos-val (docs/decisions.md)
SHUFFLE_RATIO, SHUFFLE_REFINE = 1.3, 0.5
# periodic_residual: tile side, gain threshold (times the noise power), lowest frequency kept (cycles per tile);
# chosen on photos-val in gray at sigma 15, 25 and 50 (docs/decisions.md)
PERIODIC_TILE, PERIODIC_TAU, PERIODIC_LOW = 32, 3.0, 2


def load_denoiser(model=None, channels: int = 1, device=None):
    """A denoising VAE: a loaded module, a name / run folder, or (None) the shipped one for ``channels``."""
    from ..models.denoiser import DenoisingVAE
    from ..pretrained import SHIPPED
    from .common import resolve_model
    from .selfsup import SelfSupervisedDenoiser, is_selfsup

    if model is None and SHIPPED_BY_CHANNELS[channels] not in SHIPPED:
        kind = "gray" if channels == 1 else "colour"
        raise VaekitError(
            f"no {kind} VAE denoiser is shipped in this build: pass --model (a run folder), "
            f"fit one with vaekit denoise-fit, or use a classical --method"
        )
    m = resolve_model(model, SHIPPED_BY_CHANNELS[channels], device=device)
    if is_selfsup(m):
        m = SelfSupervisedDenoiser(m)
    if not isinstance(m, (DenoisingVAE, SelfSupervisedDenoiser)):
        raise VaekitError(
            f"{model or 'the model'} is not a denoising VAE (train one with model: denoise-vae or "
            "denoise-vae-opponent, or fit one on noisy images with vaekit denoise-fit)"
        )
    return m.eval()


@torch.no_grad()
def vae_denoise(
    model,
    noisy,
    sigma: float | None,
    *,
    samples: int = 0,
    seed: int = 0,
    tile: int | None = None,
    overlap: int = 32,
    temperature: float = 1.0,
    progress=None,
    device=None,
    camera: bool = False,
    ensemble: int | None = None,
):
    """Run ``model`` on ``noisy`` ((H, W) or (H, W, C), [0, 1] units) at level ``sigma`` (0–255: one level, an
    (H, W) map of levels, or None: the self-supervised denoisers' own fitted level), with ``samples`` draws (0: the
    one-pass estimate); ``camera``: the noise is a camera file's (a model with a camera branch); ``ensemble``
    (1, 2, 4 or 8; None: the model's own ``ensemble``): average that many passes over flipped and turned copies
    (:func:`_ensemble_denoise`).

    Returns (mean, std, draws) as float32 arrays of the input's layout.  Tiles of at most ``tile`` (default
    ``TILE``) pixels a side, all of one size, overlap by ``overlap`` and are blended linearly; the latent noise
    of tile ``t`` comes from a generator seeded by (seed, t), so results do not depend on the thread count."""
    y = as_float_image(noisy)[0]
    C = 1 if y.ndim == 2 else 3
    kw = dict(tile=tile, overlap=overlap, temperature=temperature, device=device, camera=camera, ensemble=1)
    n = check_ensemble(getattr(model, "ensemble", 1) if ensemble is None else ensemble)
    if n > 1:
        return _ensemble_denoise(model, y, sigma, n, samples=samples, seed=seed, progress=progress, **kw)
    if C == 3 and model.channels == 1:
        return _opponent_denoise(model, y, sigma, samples=samples, seed=seed, progress=progress, **kw)
    if C != model.channels:
        raise VaekitError("this denoiser is for colour images; the image is gray")
    t = torch.from_numpy(y.astype(np.float32))
    t = t[None, None] if C == 1 else t.permute(2, 0, 1)[None]
    H, W = t.shape[-2:]
    level_map = sigma is not None and np.ndim(sigma) > 0
    if level_map:
        smap = torch.from_numpy(check_level_map(sigma, (H, W)).astype(np.float32))[None, None]
    k = max(int(samples), 0)
    acc = torch.zeros(1 + 1 + k, C, H, W)  # mean, second moment of the std, draws
    wsum = torch.zeros(1, 1, H, W)
    tile = max(int(TILE if tile is None else tile), 64)
    (th, ys), (tw, xs) = (even_tiles(n, tile, overlap, model.STRIDE) for n in (H, W))
    n = 0
    for i, top in enumerate(ys):
        for j, left in enumerate(xs):
            h, w = min(th, H - top), min(tw, W - left)
            patch = t[..., top : top + h, left : left + w]
            level = smap[..., top : top + h, left : left + w] if level_map else sigma
            ph, pw = (-h) % model.STRIDE, (-w) % model.STRIDE
            if ph or pw:  # reflect needs the pad smaller than the side; replicate covers tiny images
                mode = "reflect" if ph < h and pw < w else "replicate"
                patch = torch.nn.functional.pad(patch, (0, pw, 0, ph), mode=mode)
                if level_map:
                    level = torch.nn.functional.pad(level, (0, pw, 0, ph), mode="replicate")
            dev = resolve_device(device)
            g = torch.Generator(device=dev).manual_seed(int(seed) * 1_000_003 + n)
            level = level.to(dev) if level_map else level
            kw = {"camera": True} if camera else {}
            mean, std, draws = model.denoise(
                patch.to(dev), level, samples=k, temperature=temperature, generator=g, **kw
            )
            mean, std, draws = mean.cpu(), std.cpu(), [d.cpu() for d in draws]
            wt = torch.from_numpy(
                np.outer(ramp(h, overlap, i == 0, i == len(ys) - 1), ramp(w, overlap, j == 0, j == len(xs) - 1))
            )[None, None]
            parts = [mean, std**2] + list(draws)
            for c, p in enumerate(parts):
                acc[c : c + 1, :, top : top + h, left : left + w] += p[..., :h, :w] * wt
            wsum[..., top : top + h, left : left + w] += wt
            n += 1
            if progress is not None:
                progress(n, len(ys) * len(xs))
    acc /= wsum

    def back(a):
        a = a.numpy()
        return a[0] if C == 1 else a.transpose(1, 2, 0)

    return back(acc[0]), back(acc[1].sqrt()), [back(acc[2 + i]) for i in range(k)]


def periodic_residual(residual: np.ndarray, sigma) -> np.ndarray:
    """The part of a denoiser's ``residual`` (noisy minus estimate, (H, W)) that stands above the noise: repeated
    fine structure (stripes, weaves, grilles) that a network of bounded context takes for noise where block
    matching (BM3D) finds it repeated.  Overlapping tiles (half overlap, sine windows that sum to one) are shrunk
    in frequency by the gain max(0, 1 - tau N / P), P a coefficient's power pooled over the 3x3 neighbouring tiles
    and N the noise's: the larger of the white floor of ``sigma`` (0-1 units: a level or an (H, W) map, by which
    the residual is divided first) and the noise power that the tiles' lower quartile implies, which holds for
    noise that is not white and for structure that fills most of the image.  The lowest frequencies, where clipping
    leaves an offset, stay out."""
    from numpy.lib.stride_tricks import sliding_window_view

    T, hop = PERIODIC_TILE, PERIODIC_TILE // 2
    r = residual / np.maximum(sigma, 1e-4)
    H, W = r.shape
    r = np.pad(r.astype(np.float32), ((hop, hop + (-H) % hop), (hop, hop + (-W) % hop)), mode="reflect")
    w1 = np.sin(np.pi * (np.arange(T) + 0.5) / T).astype(np.float32)
    win = np.outer(w1, w1)
    tiles = np.ascontiguousarray(sliding_window_view(r, (T, T))[::hop, ::hop] * win)
    R = torch.fft.rfft2(torch.from_numpy(tiles)).numpy()  # (rows, cols, T, T/2 + 1); torch's FFT: ten times numpy's
    P = R.real**2 + R.imag**2
    ny, nx = P.shape[:2]
    Pe = np.pad(P, ((1, 1), (1, 1), (0, 0), (0, 0)), mode="edge")
    pooled = sum(Pe[a : a + ny, b : b + nx] for a in range(3) for b in range(3)) / 9
    low = np.quantile(P[::2, ::2].reshape(-1, *P.shape[2:]), 0.25, axis=0)  # over tiles that do not overlap
    noise = np.maximum((win**2).sum(), low / np.float32(-np.log(0.75)))  # the power's lower quartile, as exponential
    fy, fx = np.fft.fftfreq(T)[:, None] * T, np.fft.rfftfreq(T)[None] * T
    gain = np.maximum(0, 1 - PERIODIC_TAU * noise / np.maximum(pooled, 1e-30)) * (np.hypot(fy, fx) > PERIODIC_LOW)
    back = torch.fft.irfft2(torch.from_numpy(R * gain.astype(np.float32)), s=(T, T)).numpy() * win
    out = np.zeros_like(r)
    for a in (0, 1):  # tiles of one parity do not overlap: add each of the four sets as one mosaic
        for b in (0, 1):
            blk = back[a::2, b::2]
            mosaic = blk.transpose(0, 2, 1, 3).reshape(blk.shape[0] * T, blk.shape[1] * T)
            out[a * hop : a * hop + mosaic.shape[0], b * hop : b * hop + mosaic.shape[1]] += mosaic
    return out[hop : hop + H, hop : hop + W] * sigma


def vae_estimate(model, noisy, sigma, *, camera: bool = False, **kw):
    """:func:`vae_denoise`, with :func:`periodic_residual` of the residual's luminance added to the mean and the
    draws (Gaussian levels only: a camera file's noise is the camera branch's).  Same arguments and returns."""
    mean, std, draws = vae_denoise(model, noisy, sigma, camera=camera, **kw)
    if sigma is None or camera:
        return mean, std, draws
    y = as_float_image(noisy)[0]
    s = np.asarray(sigma, np.float32) / 255
    if y.ndim == 2:
        fix = periodic_residual(y - mean, s)
    else:  # the luminance, the opponent transform's first channel; its noise level is the channels'
        fix = periodic_residual((y - mean) @ OPPONENT[0], s)[..., None] * OPPONENT[0]
    fix = fix.astype(np.float32)
    return mean + fix, std, [d + fix for d in draws]


def _ensemble_denoise(model, y, sigma, n, *, samples, seed, progress, **kw):
    """:func:`vae_denoise` averaged over ``n`` flipped and turned copies of ``y`` (and of a level map), each
    turned back (the self-ensemble of Lim et al. 2017): a convolutional denoiser's errors differ between them.
    The ``samples`` draws are shared out among the passes (no more passes than draws), so the cost is ``n``
    one-pass estimates, or the draws; the std is the spread of the mixture of the passes."""
    turns = ensemble_transforms(n)[: samples or None]
    counts = [samples // len(turns) + (i < samples % len(turns)) for i in range(len(turns))]

    def turn(a, r, inverse=False):
        t = torch.from_numpy(np.ascontiguousarray(a))
        t = dihedral(t.movedim(-1, 0), r, inverse).movedim(0, -1) if a.ndim == 3 else dihedral(t, r, inverse)
        return np.ascontiguousarray(t.numpy())

    level_map = sigma is not None and np.ndim(sigma) > 0
    mean, second, draws = 0.0, 0.0, []
    for i, r in enumerate(turns):
        tick = None if progress is None else (lambda a, b, i=i: progress(i * b + a, len(turns) * b))
        m, s, d = vae_denoise(
            model,
            turn(y, r),
            turn(sigma, r) if level_map else sigma,
            samples=counts[i],
            seed=seed * 8 + i,
            progress=tick,
            **kw,
        )
        w = counts[i] / samples if samples else 1 / len(turns)
        m, s = turn(m, r, True), turn(s, r, True)
        mean, second = mean + w * m, second + w * (s.astype(np.float64) ** 2 + m.astype(np.float64) ** 2)
        draws += [turn(a, r, True) for a in d]
    std = np.sqrt(np.maximum(second - mean.astype(np.float64) ** 2, 0)).astype(np.float32)
    return mean.astype(np.float32), std, draws


def _opponent_denoise(model, y, sigma, *, samples, seed, **kw):
    """A gray denoiser on a colour image: each opponent channel denoised on its own, then back to RGB (the
    draws channel by channel, the std combined as for independent channels)."""
    if sigma is None:
        raise VaekitError("a gray denoiser on a colour image needs the noise level (sigma)")
    o = y @ OPPONENT.T * OPPONENT_SCALE + OPPONENT_SHIFT
    means, var, draws = [], [], []
    for k in range(3):
        level = None if sigma is None else sigma * OPPONENT_SCALE[k]
        m, s, d = vae_denoise(model, o[..., k], level, samples=samples, seed=seed * 3 + k, **kw)
        means.append((m - OPPONENT_SHIFT[k]) / OPPONENT_SCALE[k])
        var.append((s / OPPONENT_SCALE[k]) ** 2)
        draws.append([(a - OPPONENT_SHIFT[k]) / OPPONENT_SCALE[k] for a in d])

    def rgb(chans):
        return (np.stack(chans, -1) @ OPPONENT).astype(np.float32)

    std = np.sqrt(np.stack(var, -1) @ (OPPONENT**2)).astype(np.float32)
    return rgb(means), std, [rgb([draws[k][i] for k in range(3)]) for i in range(len(draws[0]))]


def impulse_fill(y: np.ndarray, size: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Replace salt-and-pepper impulses (pixels at exactly 0 or 1 in every channel) by the median
    of the non-impulse pixels in a ``size`` x ``size`` window (growing where none is left).
    Returns (filled image, impulse mask)."""
    y = as_float_image(y)[0]
    hit = np.all((y <= 0.0) | (y >= 1.0), axis=-1) if y.ndim == 3 else (y <= 0.0) | (y >= 1.0)
    out = y.copy()
    chans = [out] if y.ndim == 2 else [out[..., c] for c in range(y.shape[2])]
    for ch in chans:
        src = np.where(hit, np.nan, ch)
        s, todo = size, hit.copy()
        while todo.any() and s <= 31:
            med = _sparse_median(src, todo, s)
            fill = todo & ~np.isnan(med)
            ch[fill] = med[fill]
            todo &= ~fill
            s += 4
    return out, hit


def _sparse_median(src: np.ndarray, todo: np.ndarray, s: int) -> np.ndarray:
    """nanmedian over an s x s window, computed only at the ``todo`` pixels."""
    r = s // 2
    pad = np.pad(src, r, mode="reflect")
    med = np.full(src.shape, np.nan)
    for yy, xx in zip(*np.nonzero(todo)):
        win = pad[yy : yy + s, xx : xx + s]
        if not np.all(np.isnan(win)):
            med[yy, xx] = np.nanmedian(win)
    return med


def _top(peak: float) -> float:
    """The Anscombe transform of value 1: dividing by it maps the transformed image to [0, ~1]."""
    return 2.0 * np.sqrt(peak + 3.0 / 8.0)


def _from_anscombe(a, peak: float) -> np.ndarray:
    return degrade.inverse_anscombe(np.asarray(a, dtype=np.float64) * _top(peak), peak)


# what ``for_noise`` did, as ``denoise`` reports it (info["path"])
PATHS = {
    "given": "the level given",
    "map": "the level map given",
    "blind": "one pass at the estimated level",
    "shuffled": "correlated noise: 2x2 pixel-shuffled passes, then a light full-size pass",
    "camera": "correlated noise in colour: the model's camera branch",
    "anscombe": "Poisson noise through the Anscombe transform",
    "impulse-fill": "impulses filled from their neighbours, then a Gaussian pass",
}


CLASSICAL_MIN_SIDE = 16  # BM3D's blocks and NL-means' patches need room: smaller images are mirrored up to it


def _mirrored_to(side: int, fn):
    """``fn(y, sigma)`` for images of any size: one with a side under ``side`` pixels is mirrored out to it, denoised,
    and cut back (BM3D fails or crashes on images smaller than its blocks)."""

    def run(y, sigma, **kw):
        pad = [(0, max(0, side - n)) for n in y.shape[:2]] + [(0, 0)] * (y.ndim - 2)
        if pad[0] == pad[1] == (0, 0):
            return fn(y, sigma, **kw)
        return np.asarray(fn(np.pad(y, pad, mode="symmetric"), sigma, **kw))[: y.shape[0], : y.shape[1]]

    return run


def for_noise(
    gauss_fn, noisy, noise: str = "gaussian", *, sigma=None, peak=None, amount=None, level_map=False, camera=False
):
    """Apply the Gaussian denoiser ``gauss_fn(y, sigma) -> estimate`` to any supported noise.  With ``level_map``
    (a denoiser that reads per-pixel levels) a blind Gaussian level is spread over the image by brightness
    (:func:`vaekit.degrade.level_shape`: shot noise is stronger where the image is bright), and spatially
    correlated noise in a colour image goes through :func:`shuffle_denoise`, or with ``camera`` (a denoiser trained
    on camera files, which takes ``camera=True``) to one ``gauss_fn(y, level map, camera=True)``.

    Returns (estimate, sigma used by gauss_fn: the level, or the RMS of the map, the path taken: one of
    ``PATHS``)."""
    y = as_float_image(noisy)[0]
    if noise == "gaussian":
        if sigma is not None and np.ndim(sigma) > 0:  # a given map: its RMS is the level reported
            return gauss_fn(y, sigma), float(np.sqrt(np.mean(np.square(sigma)))), "map"
        if sigma is not None:
            return gauss_fn(y, float(sigma)), float(sigma), "given"
        if not level_map:
            s = degrade.estimate_sigma(y)
            return gauss_fn(y, s), s, "blind"
        s, r, shape = degrade.blind_level(y)
        if y.ndim == 3 and r >= SHUFFLE_RATIO:  # colour: the noise went through a Bayer mosaic
            if camera:
                return gauss_fn(y, _spread(s, shape), camera=True), s, "camera"
            return shuffle_denoise(gauss_fn, y, s), s, "shuffled"
        return gauss_fn(y, _spread(s, shape)), s, "blind"
    if noise == "poisson":
        if peak is None:
            raise VaekitError("poisson noise needs --peak (expected photons at white)")
        a = degrade.anscombe(y, peak) / _top(peak)
        s = 255.0 / _top(peak)  # unit noise in the transformed domain, on the 0–255 scale
        return _from_anscombe(gauss_fn(a, s), peak), s, "anscombe"
    if noise == "salt-pepper":
        filled, _ = impulse_fill(y)
        s = max(degrade.estimate_sigma(filled, correlated=False), 1.0) if sigma is None else float(sigma)
        return gauss_fn(filled, s), s, "impulse-fill"
    raise VaekitError(f"unknown noise {noise!r}; choose one of {', '.join(degrade.NOISES)}")


def shuffle_denoise(gauss_fn, y: np.ndarray, level: float) -> np.ndarray:
    """Blind denoising of spatially correlated noise (Zhou et al. 2019, pixel-shuffle down-sampling): the four
    2x2 sub-images hold the noise of pixels two apart, which demosaicking and JPEG left nearly independent, so a
    denoiser trained on white noise sees what it knows.  Each sub-image is denoised at its own blind level map;
    one pass over the reassembled image at ``SHUFFLE_REFINE * level`` (the full-resolution blind level) removes
    the seams of the 2x2 grid.  ``gauss_fn`` reads (H, W) level maps; the std and draws of its last call are
    those of the refinement only."""
    out = np.zeros(y.shape, np.float32)
    for i in (0, 1):
        for j in (0, 1):
            level_sub, _, shape = degrade.blind_level(y[i::2, j::2])
            out[i::2, j::2] = gauss_fn(y[i::2, j::2], _spread(level_sub, shape))
    return gauss_fn(out.astype(y.dtype), SHUFFLE_REFINE * level)


def _spread(level: float, shape: np.ndarray) -> np.ndarray:
    """A blind level spread over the image by ``shape``, kept on the 0–255 scale (``degrade.LEVEL_MAX``)."""
    return np.minimum(level * shape, degrade.LEVEL_MAX)


def check_level_map(levels, shape) -> np.ndarray:
    """A per-pixel Gaussian level map (0–255 scale) for an image of ``shape`` (H, W), or one clear error."""
    a = np.asarray(levels, dtype=np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.shape != tuple(shape):
        got = "x".join(map(str, a.shape))
        raise VaekitError(f"the noise-level map is {got} but the image is {shape[0]}x{shape[1]}: they must match")
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 255:
        raise VaekitError("noise-level map values must lie in 0..255 (the 0–255 scale)")
    return a


def read_level_map(path) -> np.ndarray:
    """A level map file: a ``.npy`` array or a gray image whose values are the levels (0–255 scale)."""
    from pathlib import Path

    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise VaekitError(f"no noise-level map at {p}")
    try:
        return np.load(p) if p.suffix == ".npy" else np.asarray(Image.open(p))
    except (OSError, ValueError, UnidentifiedImageError) as e:
        raise VaekitError(f"cannot read the noise-level map {p}: {e}") from None


def check_strength(strength) -> tuple[float, float]:
    """``strength`` (one number, or a (luminance, colour) pair, each in [0, 1]) as the pair; one clear error else."""
    pair = tuple(strength) if isinstance(strength, (tuple, list)) else (strength, strength)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= v <= 1 for v in pair):
        raise VaekitError(
            f"strength must be a number from 0 (the input) to 1 (all the noise out), or a (luminance, colour) pair "
            f"of them, not {strength!r}"
        )
    return float(pair[0]), float(pair[1])


def std_share(luma: float, chroma: float, ndim: int) -> float:
    """The factor ``strength`` puts on the per-pixel std: exact for one number (and for gray images); for a pair,
    the root mean square over the three opponent axes, as if the spread were the same on each."""
    return luma if ndim == 2 or luma == chroma else float(np.sqrt((luma**2 + 2 * chroma**2) / 3))


def denoise(
    image,
    sigma: float | None = None,
    *,
    noise: str = "gaussian",
    peak: float | None = None,
    amount: float | None = None,
    method: str = "vae",
    model=None,
    samples: int = 1,
    seed: int = 0,
    device=None,
    tile: int | None = None,
    details: bool = False,
    progress=None,
    ensemble: int | None = None,
    strength: float | tuple[float, float] = 1.0,
):
    """Denoise ``image`` (H x W or H x W x 3; uint8, uint16 or float in [0, 1] units).

    ``sigma``: the Gaussian level on the 0–255 scale, or (VAE) an (H, W) map of levels; None: blind (one level
    from the wavelet MAD, raised for spatially correlated noise: ``vaekit.degrade.estimate_sigma``; the VAE reads
    it as a per-pixel map that follows the brightness where the noise does, ``vaekit.degrade.level_shape``).
    ``noise``: "gaussian", "poisson" (give ``peak``) or "salt-pepper".
    ``method``: "vae" (the shipped denoiser for the image's channels, or ``model``) or a
    classical one from ``vaekit.baselines.BASELINES["denoise"]`` ("bm3d", "nlm", "tv", ...).
    ``samples``: VAE only -- 1 is one pass (z at the prior mean); N > 1 averages N posterior draws.
    ``ensemble``: VAE only -- 1, 2, 4 or 8 flipped and turned copies averaged (None: the model's own setting;
    :func:`vae_denoise`).
    ``strength``: in [0, 1], how much of the noise found is taken out (the result is ``image + strength * (estimate -
    image)``): 1 all of it, less leaves some grain, as photographers' noise-reduction sliders do; a pair
    (luminance, colour) sets the two apart in an orthonormal opponent space, e.g. (0.6, 1) keeps some grain and
    no colour blotches.

    Returns the estimate in the input's dtype and shape (clipped to [0, 1]); with ``details=True`` a
    :class:`~vaekit.tasks.common.Result` whose info has the level used (``sigma``, ``sigma_estimated``) and the
    path taken (``path``, a key of ``PATHS``)."""
    level_map = sigma is not None and np.ndim(sigma) > 0
    if level_map and (method != "vae" or noise != "gaussian"):
        raise VaekitError("a noise-level map works with the VAE denoiser and Gaussian noise only")
    if not level_map and sigma is not None and not 0 <= float(sigma) <= 255:
        raise VaekitError(f"sigma must lie in 0..255 (the 0–255 scale), not {sigma}")
    if peak is not None and noise != "poisson":
        raise VaekitError("--peak applies to poisson noise only: add --noise poisson")
    if amount is not None and noise != "salt-pepper":
        raise VaekitError("--amount applies to salt-pepper noise only: add --noise salt-pepper")
    if peak is not None:
        degrade.check_peak(peak)
    if amount is not None:
        degrade.check_amount(amount)
    n = check_samples(samples)
    k = 0 if n == 1 else n
    luma, chroma = check_strength(strength)
    if ensemble is not None:
        check_ensemble(ensemble)
        if method != "vae":
            raise VaekitError(f"ensemble is for the VAE denoiser, not the classical method {method!r}")
    y, layout = as_float_image(image, alpha=True)
    if level_map:
        sigma = check_level_map(sigma, y.shape[:2])

    def partly(a):  # the share of the noise ``strength`` takes out, in luminance and colour
        a = np.asarray(a, dtype=np.float64)
        if luma == chroma == 1:
            return np.clip(a, 0, 1)
        if a.ndim == 2 or luma == chroma:
            return np.clip(y + luma * (a - y), 0, 1)
        d = (a - y) @ OPPONENT.T * np.array([luma, chroma, chroma])  # orthonormal: luminance, two colour axes
        return np.clip(y + d @ OPPONENT, 0, 1)

    t0 = time.perf_counter()
    extra: dict = {}
    if method == "vae":
        m = load_denoiser(model, 1 if y.ndim == 2 else 3, device=device)
        if hasattr(m, "noise"):  # self-supervised: the fitted noise model replaces the noise options
            mean, std, draws = vae_denoise(
                m, y, None, samples=k, seed=seed, tile=tile, progress=progress, device=device, ensemble=ensemble
            )
            info = {
                "sigma": m.noise.get("sigma"),
                "sigma_estimated": False,
                "method": "vae-selfsup",
                "seconds": time.perf_counter() - t0,
            }
            std = None if std is None else (std_share(luma, chroma, np.ndim(y)) * np.asarray(std)).astype(np.float32)
            r = Result(
                restore_layout(partly(mean), layout), [restore_layout(partly(d), layout) for d in draws], std, info
            )
            return r if details else r.image

        extra["ensemble"] = check_ensemble(getattr(m, "ensemble", 1) if ensemble is None else ensemble)

        def fn(a, s, camera=False):
            if not np.any(s):  # no noise to remove (the network is not exactly the identity at level 0)
                a = np.asarray(a, np.float32)
                extra.update(std=np.zeros_like(a), draws=[a.copy() for _ in range(k)])
                return a
            mean, std, draws = vae_estimate(
                m,
                a,
                s,
                samples=k,
                seed=seed,
                tile=tile,
                progress=progress,
                device=device,
                camera=camera,
                ensemble=extra["ensemble"],
            )
            extra.update(std=std, draws=draws)
            return mean

        cam = getattr(m, "camera_input", False)
        est, s, path = for_noise(fn, y, noise, sigma=sigma, peak=peak, amount=amount, level_map=True, camera=cam)
    else:
        from .. import baselines

        est, s, path = for_noise(
            _mirrored_to(CLASSICAL_MIN_SIDE, baselines.get("denoise", method, learned=("vae",))),
            y,
            noise,
            sigma=sigma,
            peak=peak,
            amount=amount,
        )

    est = partly(est)
    if not details:
        return restore_layout(est, layout)
    std, draws = extra.get("std"), extra.get("draws", [])
    if noise == "poisson" and std is not None:  # back from the transformed domain; std: the draws' spread
        draws = [_from_anscombe(d, peak) for d in draws]
        std = np.std(np.stack(draws), 0).astype(np.float32) if draws else None
    draws = [partly(d) for d in draws]
    if std is not None and (luma, chroma) != (1, 1):  # the input's share does not vary between draws
        std = (std_share(luma, chroma, np.ndim(y)) * np.asarray(std)).astype(np.float32)
    info = {
        "sigma": s,
        "sigma_estimated": sigma is None and noise != "poisson",
        "path": path,
        "method": method,
        **({"ensemble": extra["ensemble"]} if "ensemble" in extra else {}),
        **({"strength": luma if luma == chroma else (luma, chroma)} if (luma, chroma) != (1, 1) else {}),
        "seconds": time.perf_counter() - t0,
    }
    return Result(restore_layout(est, layout), [restore_layout(d, layout) for d in draws], std, info)


def write_sample_set(
    out_dir, result, *, model_name: str, seed: int, extra: dict | None = None, source=None, alpha=None
) -> None:
    """``--samples N -o DIR``: mean.png, sample_000.png ... (keeping ``source``'s bits and colour profile, a
    :class:`~vaekit.io.SourceFormat`, and the input's transparency ``alpha``), std.png (scaled to 8 bits) and
    samples.json.

    ``result``: a :class:`~vaekit.tasks.common.Result`; ``extra``: more fields for samples.json (default: the
    denoiser's noise level)."""
    import json
    import shutil
    from pathlib import Path

    from ..io import SourceFormat, atomic_write_text, temp_path, write_image

    written = (source or SourceFormat()).written
    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    out_dir = temp_path(final)  # filled, then renamed: a set is complete or absent
    out_dir.mkdir()
    try:
        write_image(out_dir / "mean.png", result.image, *written, alpha=alpha)
        for i, d in enumerate(result.samples):
            write_image(out_dir / f"sample_{i:03d}.png", d, *written, alpha=alpha)
        scale = None
        if result.std is not None:
            top = float(np.max(result.std)) or 1.0
            scale = top  # std.png value v (0..255) means std = v / 255 * scale (image units)
            write_image(out_dir / "std.png", result.std / top)
        meta = {
            "method": result.info.get("method"),
            "model": model_name,
            "seed": seed,
            "N": len(result.samples),
            "estimate": "mean.png = mean of the N posterior draws (never a draw chosen against a reference)",
            "std_scale": scale,
            "std_units": "std.png / 255 * std_scale, image units (1 = white)",
        }
        keys = ("sigma", "sigma_estimated", "path", "strength")
        meta.update(extra if extra is not None else {k: result.info[k] for k in keys if k in result.info})
        atomic_write_text(out_dir / "samples.json", json.dumps(meta, indent=1) + "\n")
        if final.is_dir():
            shutil.rmtree(final)
        os.replace(out_dir, final)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def denoise_paths(
    inp,
    output,
    *,
    sigma=None,
    noise="gaussian",
    peak=None,
    amount=None,
    method="vae",
    model=None,
    samples=1,
    seed=0,
    tile=None,
    max_pixels=None,
    device=None,
    shard=None,
    overwrite=False,
    progress=False,
    ensemble=None,
    strength=1.0,
):
    """The CLI's work: one image or a folder (mirrored names, PNG out) through :func:`vaekit.batch.run`; with
    ``samples`` > 1 each image gets a folder of draws (``output`` itself for a single image)."""
    from pathlib import Path

    from .. import batch
    from ..io import read_with_alpha, source_format, write_image

    inp, output = Path(inp), Path(output)
    items = batch.plan_images(inp, output, folders=samples > 1, into=samples == 1)
    loaded: dict = {}

    def work(it, data):
        img, alpha = data  # the transparency is handed back as it came
        use = model
        ch = 1 if img.ndim == 2 or img.shape[2] == 1 else 3  # a one-channel .npy is H x W x 1
        if method == "vae":
            if ch not in loaded:
                loaded[ch] = load_denoiser(model, ch, device=device)
            use = loaded[ch]
        r = denoise(
            img,
            sigma,
            noise=noise,
            peak=peak,
            amount=amount,
            method=method,
            model=use,
            samples=samples,
            seed=seed,
            tile=tile,
            details=True,
            device=device,
            ensemble=ensemble,
            strength=strength,
        )
        if samples > 1:
            name = str(model or SHIPPED_BY_CHANNELS[ch])
            write_sample_set(it.output, r, model_name=name, seed=seed, source=source_format(it.input), alpha=alpha)
        else:
            write_image(it.output, r.image, *source_format(it.input).written, alpha=alpha)
        row = {"sigma": r.sigma, "sigma_estimated": r.sigma_estimated, "path": r.info.get("path")}
        return [it.output], row | ({"strength": r.info["strength"]} if "strength" in r.info else {})

    return batch.run(
        items,
        work,
        read=lambda it: read_with_alpha(it.input, max_pixels=max_pixels),
        out=output,
        folder=inp.is_dir(),
        settings=batch.settings_of(
            method=method,
            model=model,
            sigma=sigma,
            noise=noise,
            peak=peak,
            amount=amount,
            samples=samples,
            seed=seed,
            tile=tile,
            ensemble=ensemble,
            strength=strength,
        ),
        shard=shard,
        overwrite=overwrite,
        progress=progress,
    )
