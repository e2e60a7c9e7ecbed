"""Exposure, contrast and colour-cast compensation: classical methods and a VAE method.

The degradation model (``degrade_exposure``) is global and per image:
``y = clip(gain * cast_c * x, 0, 1) ** gamma`` with a scalar gain, a per-channel
cast and a gamma.  A correction with parameters theta = (log gain, log gamma,
log cast) is its inverse, ``f_theta(y) = y ** (1 / gamma) / (gain * cast)``.

The VAE method picks theta by maximum likelihood of the *observed* image under
"a well-exposed image x drawn from the VAE, then degraded by theta":

    log p(y | theta) = log p_VAE(f_theta(y)) + sum_pixels log |f_theta'(y)|

(the change-of-variables term keeps it from preferring corrections that merely
squash the image into a small, easy-to-model range).  ``log p_VAE`` is the
ELBO, averaged over patches of a downscaled copy; theta is searched with
Nelder-Mead from several starts; the chosen correction is then applied to the
full-resolution image.  It can fix global gain, gamma and colour cast; it
cannot recover clipped highlights or shadows, local (spatially varying)
lighting, or noise.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..errors import VaekitError
from ..io import as_float_image, restore_layout

EPS = 1.0 / 512


def degrade_exposure(img, *, gain: float = 1.0, gamma: float = 1.0, cast=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The synthetic degradation: clip(gain * cast * x, 0, 1) ** gamma (cast per channel)."""
    a, layout = as_float_image(img)
    c = np.asarray(cast, np.float64) if a.ndim == 3 else 1.0
    return restore_layout(np.clip(np.clip(a, 0, 1) * gain * c, 0, 1) ** gamma, layout)


def random_degradation(rng: np.random.Generator, channels: int = 3) -> dict:
    """Seeded parameters: gain 0.3-3 and gamma 0.5-2 (log-uniform), per-channel cast within +-30%."""
    return {
        "gain": float(math.exp(rng.uniform(math.log(0.3), math.log(3.0)))),
        "gamma": float(math.exp(rng.uniform(math.log(0.5), math.log(2.0)))),
        "cast": [float(v) for v in rng.uniform(0.7, 1.3, channels)],
    }


def apply_correction(img, *, gain: float = 1.0, gamma: float = 1.0, cast=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The inverse of ``degrade_exposure`` for the given parameters (clipped to [0, 1])."""
    a, layout = as_float_image(img)
    c = np.asarray(cast, np.float64) if a.ndim == 3 else 1.0
    return restore_layout(np.clip(a, 0, 1) ** (1.0 / gamma) / (gain * c), layout)


# ----------------------------------------------------------------------- VAE


def _theta_to_params(theta, channels):
    lg, lgam = float(theta[0]), float(theta[1])
    lc = np.zeros(channels) if channels == 1 else np.r_[theta[2:4], -theta[2] - theta[3]]  # casts multiply to 1
    return {"gain": math.exp(lg), "gamma": math.exp(lgam), "cast": [float(math.exp(v)) for v in lc]}


def _patches(a: np.ndarray, size: int, max_patches: int, rng) -> torch.Tensor:
    t = torch.from_numpy(a if a.ndim == 3 else a[..., None]).permute(2, 0, 1).float()
    C, H, W = t.shape
    if min(H, W) < size:
        raise VaekitError(f"image is smaller than the model's patch size {size}")
    ys = np.arange(0, H - size + 1, size)
    xs = np.arange(0, W - size + 1, size)
    grid = [(y, x) for y in ys for x in xs]
    if len(grid) > max_patches:
        grid = [grid[i] for i in rng.choice(len(grid), max_patches, replace=False)]
    return torch.stack([t[:, y : y + size, x : x + size] for y, x in grid])


@torch.no_grad()
def _objective(model, y_patches: torch.Tensor, theta, seed: int) -> float:
    """-(ELBO of the corrected patches + log-Jacobian), per pixel, in nats (lower is better)."""
    C = y_patches.shape[1]
    p = _theta_to_params(theta, 3 if len(theta) > 2 else 1)  # 2 parameters: gray, no cast
    c = torch.tensor(p["cast"], dtype=torch.float32).view(1, -1, 1, 1).expand(1, C, 1, 1)
    y = y_patches.clamp(EPS, 1 - EPS)
    x = y ** (1 / p["gamma"]) / (p["gain"] * c)
    inside = (x > EPS) & (x < 1 - EPS)
    x = x.clamp(0, 1)
    torch.manual_seed(seed)
    out = model(x)
    elbo = model.loss(x, out)["elbo"]  # nats per patch
    # log |f'(y)| = -log(gamma gain cast) + (1/gamma - 1) log y, counted where the correction is not clipped
    logjac = (-math.log(p["gamma"] * p["gain"]) - torch.log(c) + (1 / p["gamma"] - 1) * torch.log(y)) * inside
    # clipped values carry no density: they are charged as if they fell in one 8-bit bin at the edge
    clipped = (~inside).float() * math.log(1 / 255)
    per_patch = elbo + (logjac + clipped).flatten(1).sum(1)
    return float(-per_patch.mean() / y_patches[0].numel())


def vae_compensate(
    img,
    model,
    *,
    work_size: int = 256,
    max_patches: int = 64,
    seed: int = 0,
    starts=((0.0, 0.0), (0.7, 0.0), (-0.7, 0.0), (0.0, 0.5), (0.0, -0.5)),
    iters: int = 80,
    step: float = 0.25,
):
    """Find (gain, gamma, cast) by maximum likelihood under ``model`` and apply them to ``img``.

    ``model``: a VAE trained on well-exposed patches (``model.card['data']['patch_size']``
    or 32 px).  Returns (corrected image, parameters)."""
    from scipy.optimize import minimize

    a = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    C = 1 if a.ndim == 2 else a.shape[2]
    size = int((getattr(model, "card", {}) or {}).get("data", {}).get("patch_size", 32))
    h, w = a.shape[:2]
    f = min(1.0, work_size / max(h, w))
    small = a
    if f < 1.0:
        from PIL import Image

        im = Image.fromarray((a * 255).round().astype(np.uint8).squeeze())
        small = (
            np.asarray(im.resize((max(size, round(w * f)), max(size, round(h * f))), Image.BILINEAR), dtype=np.float32)
            / 255
        )
        small = small.reshape(small.shape[0], small.shape[1], -1) if C > 1 else small
    rng = np.random.default_rng(seed)
    in_ch = getattr(model, "in_channels", C)
    if C == 1 and in_ch == 3:  # a colour model judges a gray image as its gray RGB version (no cast to find)
        small = np.repeat(small[..., None], 3, axis=2)
    patches = _patches(small, size, max_patches, rng)
    model.eval()
    best = None
    for s in starts:
        theta0 = np.r_[s, np.zeros(2)] if C > 1 else np.asarray(s, float)
        # an explicit first simplex: scipy's default steps off a zero coordinate by only 0.00025
        simplex = np.vstack([theta0, theta0 + step * np.eye(len(theta0))])
        r = minimize(
            lambda t: _objective(model, patches, t, seed),
            theta0,
            method="Nelder-Mead",
            options={"maxiter": iters, "xatol": 1e-3, "fatol": 1e-5, "initial_simplex": simplex},
        )
        if best is None or r.fun < best.fun:
            best = r
    params = _theta_to_params(best.x, C)
    params["nats_per_dim"] = float(best.fun)
    return apply_correction(
        a, gain=params["gain"], gamma=params["gamma"], cast=params["cast"] if C > 1 else (1.0,)
    ), params


def compensate(
    image, *, method: str = "vae", model="compensate-vae", seed: int = 0, device=None, details: bool = False, **kwargs
):
    """Correct exposure, contrast and colour cast of ``image`` (H x W (x C); uint8, uint16 or float).

    ``method``: "vae" (maximum likelihood under ``model``), or a classical one from
    ``vaekit.baselines.BASELINES["compensate"]``.  Returns the corrected image in the input's dtype and shape;
    with ``details=True`` a :class:`~vaekit.tasks.common.Result` whose info holds the parameters found."""
    from ..baselines import BASELINES
    from .common import Result, resolve_model

    a, layout = as_float_image(image)
    t0 = time.perf_counter()
    if method in BASELINES["compensate"]:
        out, info = BASELINES["compensate"][method](a, **kwargs), {}
    elif method == "vae":
        m = resolve_model(model, device=device)
        out, info = vae_compensate(a.astype(np.float32), m, seed=seed, **kwargs)
    else:
        raise VaekitError(f"unknown method {method!r}; known: vae, {', '.join(BASELINES['compensate'])}")
    r = Result(restore_layout(out, layout), info={"method": method, **info, "seconds": time.perf_counter() - t0})
    return r if details else r.image


def compensate_paths(
    inp,
    output,
    *,
    method="vae",
    model="compensate-vae",
    seed=0,
    device=None,
    shard=None,
    overwrite=False,
    progress=False,
):
    """The CLI's work: one image or a folder (mirrored names, PNG out) through :func:`vaekit.batch.run`;
    each manifest line holds the gain, gamma and cast found."""
    from pathlib import Path

    from .. import batch
    from ..data import find_images
    from ..io import read_array, write_image
    from .common import resolve_model

    inp, output = Path(inp), Path(output)
    files = find_images(inp)
    if not files:
        raise VaekitError(f"no images found under {inp}")
    items = batch.plan(inp, output, files, lambda rel: rel.with_suffix(".png"))
    use = resolve_model(model, device=device) if method == "vae" else model

    def work(it, img):
        r = compensate(img, method=method, model=use, seed=seed, device=device, details=True)
        write_image(it.output, r.image)
        return [it.output], {k: v for k, v in r.info.items() if k != "seconds"}

    return batch.run(
        items,
        work,
        read=lambda it: read_array(it.input),
        out=output,
        folder=inp.is_dir(),
        shard=shard,
        overwrite=overwrite,
        progress=progress,
    )
