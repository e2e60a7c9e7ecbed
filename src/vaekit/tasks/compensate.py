"""Exposure, contrast and colour-cast compensation: classical methods and a learned posterior.

The degradation model (:func:`vaekit.models.exposure.degrade`) is global and per image:
``y = clip(gain * cast * x, 0, 1) ** gamma`` with a scalar gain, a per-channel cast and a gamma; a correction is
its inverse.  The learned method (``method="vae"``) reads q(parameters | photo) from ``compensate-posterior`` on a
copy downscaled to 256 px, which weighs "no change" against a correction: a photo that looks well exposed to it
comes back untouched, and every correction is reported with the posterior probability behind it.  The chosen
correction is applied at full resolution.  It fixes global gain, gamma and colour cast; it cannot recover clipped
highlights or shadows, local (spatially varying) lighting, or noise.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..errors import VaekitError
from ..io import as_float_image, restore_layout
from ..models import exposure

WORK_SIZE = 256  # the long side of the copy the posterior reads (the scale it was trained at)
# P(no change) for the photos users bring: most need none, unlike the training prior's 30% (chosen on photos-val,
# see docs/decisions.md); the posterior's odds are rescaled from one prior to the other
NO_CHANGE_PRIOR = 0.9


def _torch(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy()


def _exposure(fn, img, gain, gamma, cast) -> np.ndarray:
    """``fn`` (the model module's ``degrade`` or ``correct``) on any image, in its dtype and shape; gray has no cast."""
    a, layout = as_float_image(img)
    a3 = a if a.ndim == 3 else a[..., None]
    theta = torch.tensor([exposure.params_to_theta(gain, gamma, cast if a3.shape[2] == 3 else (1.0,) * 3)])
    return restore_layout(_numpy(fn(_torch(a3), theta)).reshape(a.shape), layout)


def degrade_exposure(img, *, gain: float = 1.0, gamma: float = 1.0, cast=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The synthetic degradation: clip(gain * cast * x, 0, 1) ** gamma (cast per channel; none on gray)."""
    return _exposure(exposure.degrade, img, gain, gamma, cast)


def apply_correction(img, *, gain: float = 1.0, gamma: float = 1.0, cast=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The inverse of ``degrade_exposure`` for the given parameters (clipped to [0, 1])."""
    return _exposure(exposure.correct, img, gain, gamma, cast)


def random_degradation(rng: np.random.Generator, channels: int = 3, strength: str = "strong") -> dict:
    """Seeded parameters from the model's prior ranges (``exposure.PRIOR``): "strong" is gain 0.3-3 and gamma
    0.5-2 (log-uniform) with a per-channel cast within +-30%; "mild" is gain 0.75-1.33, gamma 0.8-1.25, cast
    +-10%; "identity" changes nothing."""
    if strength == "identity":
        return {"gain": 1.0, "gamma": 1.0, "cast": [1.0] * channels}
    if strength not in ("mild", "strong"):
        raise VaekitError(f"strength must be identity, mild or strong, not {strength!r}")
    _, gain, gamma, cast = exposure.PRIOR[strength]

    def u(r):
        return float(math.exp(rng.uniform(math.log(r[0]), math.log(r[1]))))

    return {"gain": u(gain), "gamma": u(gamma), "cast": [float(v) for v in rng.uniform(*cast, channels)]}


def _thumbnail(a: np.ndarray) -> torch.Tensor:
    """The image (H, W, C) area-downscaled so its long side is at most ``WORK_SIZE``, as (1, C, h, w)."""
    t = _torch(a)
    f = WORK_SIZE / max(a.shape[:2])
    if f < 1:
        size = (max(1, round(a.shape[0] * f)), max(1, round(a.shape[1] * f)))
        t = torch.nn.functional.interpolate(t, size=size, mode="area")
    return t


@torch.no_grad()
def posterior_compensate(a: np.ndarray, model, *, samples: int = 1, seed: int = 0):
    """Correct ``a`` (H, W, C float in [0, 1]) with the exposure posterior ``model``.

    One pass applies the more probable hypothesis (under the prior ``NO_CHANGE_PRIOR``): no change, or the
    posterior mean correction.  ``samples`` N > 1
    draws N parameter sets from the posterior (no change among them with its probability) and returns their mean
    and per-pixel std.  Returns (image, draws, std, info)."""
    dev = next(model.parameters()).device
    post = model.posterior(_thumbnail(a).to(dev))
    trained = exposure.PRIOR["identity"]
    shift = math.log(NO_CHANGE_PRIOR / (1 - NO_CHANGE_PRIOR)) - math.log(trained / (1 - trained))
    p_id = float(torch.sigmoid(post["logit_id"][0] + shift))
    mu, sd = post["mu"][0].cpu(), torch.exp(0.5 * post["logvar"][0]).cpu()
    if a.shape[2] == 1:
        mu[2:], sd[2:] = 0.0, 0.0
    changed = p_id < 0.5
    chosen = mu if changed else torch.zeros(4)
    full = _torch(a)
    info = {
        **{k: v for k, v in exposure.theta_to_params(chosen).items() if a.shape[2] == 3 or k != "cast"},
        "changed": changed,
        "p_change": 1.0 - p_id,
        "log_odds_change": math.log(max(1.0 - p_id, 1e-12) / max(p_id, 1e-12)),
        "posterior_mean": exposure.theta_to_params(mu),
        "posterior_std": {
            "log_gain": float(sd[0]),
            "log_gamma": float(sd[1]),
            "log_cast": [float(sd[2]), float(sd[3])],
        },
    }
    if samples == 1:
        out = _numpy(exposure.correct(full, chosen[None]) if changed else full)
        if changed and np.abs(out - a).max() < 0.5 / 255:  # a black frame: no correction moves a pixel
            info = {**info, **{k: v for k, v in exposure.theta_to_params(torch.zeros(4)).items() if k in info}}
            info["changed"] = False
        return out, [], None, info
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(samples, generator=g) < p_id
    thetas = mu + sd * torch.randn(samples, 4, generator=g)
    thetas[keep] = 0.0
    draws = [_numpy(exposure.correct(full, t[None])) for t in thetas]
    stack = np.stack(draws)
    return stack.mean(0), draws, stack.std(0), info


def compensate(
    image,
    *,
    method: str = "vae",
    model="compensate-posterior",
    samples: int = 1,
    seed: int = 0,
    device=None,
    details: bool = False,
    **kwargs,
):
    """Correct exposure, contrast and colour cast of ``image`` (H x W (x C); uint8, uint16 or float).

    ``method``: "vae" (the learned posterior ``model``, :func:`posterior_compensate`), or a classical one from
    ``vaekit.baselines.BASELINES["compensate"]``.  ``samples``: learned method only, posterior draws.  Returns the
    corrected image in the input's dtype and shape; with ``details=True`` a :class:`~vaekit.tasks.common.Result`
    whose info holds the parameters applied, ``changed`` and the posterior probability of a change."""
    from ..baselines import BASELINES
    from .common import Result, check_samples, resolve_model

    a, layout = as_float_image(image, alpha=True)
    n = check_samples(samples)
    t0 = time.perf_counter()
    draws, std = [], None
    if method in BASELINES["compensate"]:
        if n > 1:
            raise VaekitError(f"samples > 1 needs the learned method; {method!r} gives one answer")
        out, info = BASELINES["compensate"][method](a, **kwargs), {}
    elif method == "vae":
        m = resolve_model(model, device=device)
        a3 = a if a.ndim == 3 else a[..., None]
        out, draws, std, info = posterior_compensate(np.clip(a3, 0, 1).astype(np.float32), m, samples=n, seed=seed)
        out = out.reshape(a.shape)
        draws = [restore_layout(d.reshape(a.shape), layout) for d in draws]
        std = None if std is None else std.reshape(a.shape)
    else:
        raise VaekitError(f"unknown method {method!r}; known: vae, {', '.join(BASELINES['compensate'])}")
    info = {"method": method, **info, "seconds": time.perf_counter() - t0}
    r = Result(restore_layout(out, layout), samples=draws, std=std, info=info)
    return r if details else r.image


def compensate_paths(
    inp,
    output,
    *,
    method="vae",
    model="compensate-posterior",
    seed=0,
    device=None,
    shard=None,
    overwrite=False,
    progress=False,
):
    """The CLI's work: one image or a folder (mirrored names, PNG out) through :func:`vaekit.batch.run_images`;
    each manifest line holds the correction applied and the posterior probability of a change."""
    from .. import batch
    from ..io import source_format, write_image
    from .common import resolve_model

    use = resolve_model(model, device=device) if method == "vae" else model

    def work(it, data):
        img, alpha = data
        r = compensate(img, method=method, model=use, seed=seed, device=device, details=True)
        write_image(it.output, r.image, *source_format(it.input).written, alpha=alpha)
        return [it.output], {k: v for k, v in r.info.items() if k != "seconds"}

    settings = batch.settings_of(method=method, model=model, seed=seed)
    opts = {"settings": settings, "shard": shard, "overwrite": overwrite, "progress": progress}
    return batch.run_images(inp, output, work, alpha=True, **opts)
