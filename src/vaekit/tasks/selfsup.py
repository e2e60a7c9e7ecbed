"""Self-supervised VAE denoising: learn from noisy images only, with an explicit noise model as the likelihood.

Two methods, both fitted on the noisy images alone (a fit never reads a clean image):

* ``r2r`` (Gaussian noise, the default): the conditional VAE denoiser of
  :class:`~vaekit.models.denoiser.SelfSupervisedDenoisingVAE` trained on
  recorrupted-to-recorrupted pairs (Pang et al. 2021): each noisy patch is split
  by fresh noise into an input and a target whose noises are independent, and the
  likelihood of the target is the known Gaussian noise model convolved with the
  decoder's Gaussian.  The estimate is the mean of the model's output over
  ``test_recorruptions`` freshly recorrupted copies of the image, each
  rotated/flipped (the frozen test rule; ``--samples`` draws a latent per pass).
* ``divnoising`` (Prakash et al. 2021; Gaussian or Poisson): a fully convolutional
  VAE (``conv-vae``) on the noisy patches with the **noise model as its
  likelihood**: ``p(y | z) = N(y; s(z), sigma^2)`` for Gaussian noise, or the
  Gaussian approximation of Poisson noise ``N(y; s, s / peak)``.  The decoder's
  output ``s(z)`` is the clean-signal estimate; it cannot reproduce the pixel-wise
  noise without paying for it in KL, so the latent keeps the structure.  The
  estimate is the mean of ``s(z)`` over posterior draws ``z ~ q(z | y)``.

The settings (:data:`SETTINGS`: method, model size, steps, stopping rule, test
rule) were chosen on noisy train400 images (docs/decisions.md) and are
frozen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import degrade
from ..errors import VaekitError

# frozen on noisy train400 images (docs/decisions.md); see the module docstring
SETTINGS = {
    # the wider of two candidates (docs/decisions.md)
    "model_args": {"channels": [64, 96], "blocks": 1, "latent_channels": 32, "activation": "silu"},
    "patch_size": 48,
    "patches_per_image": 32,
    "batch_size": 16,
    "max_steps": 1500,
    "lr": 1e-3,
    "min_lr": 1e-5,
    "warmup_steps": 100,
    "kl_warmup_steps": 500,
    "eval_every": 500,
    "ckpt_every": 250,
    "samples": 16,  # posterior draws averaged by the estimate
}

SETTINGS_R2R = {
    # the supervised denoiser's architecture; a = 1 learned far faster than a in [0.2, 1]; the test rule (16
    # recorrupted, rotated/flipped passes) beat the noisy image as it is and fewer passes (docs/decisions.md)
    "model_args": {
        "widths": [48, 96, 192],
        "latent_channels": 8,
        "alpha_range": [1.0, 1.0],
        "free_bits": 0.05,
        "test_recorruptions": 16,
        "test_alpha": 1.0,
        "test_flips": True,
    },
    "patch_size": 64,
    "patches_per_image": 64,
    "batch_size": 32,
    "max_steps": 3000,
    "lr": 1e-3,
    "min_lr": 1e-5,
    "warmup_steps": 200,
    "kl_warmup_steps": 1000,
    "eval_every": 500,
    "ckpt_every": 250,
}

METHODS = ("r2r", "divnoising")


class SelfSupervisedDenoiser(torch.nn.Module):
    """Gives a DivNoising ``conv-vae`` the interface of the supervised denoiser (``denoise``)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.channels = vae.in_channels
        self.STRIDE = vae.stride
        self.card = getattr(vae, "card", {})

    @property
    def noise(self) -> dict:
        lk = self.vae.likelihood
        if hasattr(lk, "peak"):
            return {"noise": "poisson", "peak": lk.peak}
        return {"noise": "gaussian", "sigma": lk.sigma * 255.0}

    @torch.no_grad()
    def denoise(self, y, sigma=None, samples: int = 0, temperature: float = 1.0, generator=None):
        """(mean, std, draws) like :meth:`DenoisingVAE.denoise`; ``sigma`` is ignored (the noise model is
        part of the fitted model).  ``samples=0`` uses the default number of draws."""
        k = int(samples) or SETTINGS["samples"]
        mu, logvar = self.vae.posterior(y)
        std_z = (0.5 * logvar).exp()
        s = torch.zeros_like(y)
        s2 = torch.zeros_like(y)
        draws = []
        for _ in range(k):
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
            d = self.vae.likelihood.mean(self.vae.decode(mu + temperature * eps * std_z))
            draws.append(d)
            s += d
            s2 += d * d
        mean = s / k
        return mean, (s2 / k - mean * mean).clamp_min(0).sqrt(), (draws if samples else [])


def is_selfsup(model) -> bool:
    """A DivNoising conv-vae (it needs the :class:`SelfSupervisedDenoiser` wrapper; an r2r model does not)."""
    from ..models.vae import ConvVAE

    return (
        isinstance(model, ConvVAE)
        and type(model.likelihood).__name__ in ("Gaussian", "PoissonNoise")
        and not getattr(model.likelihood, "learned", False)
    )


def fit_config(data_dir, *, sigma=None, noise="gaussian", peak=None, steps=None, threads=0, seed=0, method=None):
    """The frozen training recipe for the noisy images under ``data_dir`` (a TrainConfig) and the Gaussian
    level used (None for Poisson).  ``method``: "r2r" or "divnoising"; None picks r2r for Gaussian noise and
    divnoising for Poisson."""
    from ..data import find_images
    from ..io import read_array
    from ..training.config import TrainConfig

    if method is None:
        method = "r2r" if noise == "gaussian" else "divnoising"
    if method not in METHODS:
        raise VaekitError(f"unknown self-supervised method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "r2r" and noise != "gaussian":
        raise VaekitError("the r2r method learns Gaussian noise only: use --method divnoising for poisson noise")
    files = find_images(data_dir)
    if len(files) < 2:
        raise VaekitError(
            f"denoise-fit needs at least 2 noisy images under {data_dir} (one is held out for "
            f"validation), found {len(files)}"
        )
    looked = [read_array(f) for f in files[:20]]  # read once: mode, blind sigma and the patch size
    mode = "L" if looked[0].ndim == 2 else "RGB"
    if noise == "gaussian":
        if peak is not None:
            raise VaekitError("--peak applies to poisson noise only: add --noise poisson")
        if sigma is None:  # blind: the median estimate over (up to 20) images
            sigma = float(np.median([degrade.estimate_sigma(a) for a in looked]))
        if not 0 < sigma <= 255:
            raise VaekitError(f"sigma must lie in (0, 255] (the 0-255 scale), not {sigma}")
        lik = {"likelihood": "gaussian", "likelihood_args": {"sigma": sigma / 255.0}}
    elif noise == "poisson":
        if peak is None or peak <= 0:
            raise VaekitError("poisson noise needs a positive --peak")
        lik = {"likelihood": "poisson", "likelihood_args": {"peak": float(peak)}}
    else:
        raise VaekitError(
            "denoise-fit learns Gaussian or Poisson noise models (salt-and-pepper: use "
            "vaekit denoise --noise salt-pepper)"
        )
    smallest = min(min(a.shape[:2]) for a in looked)
    S = SETTINGS_R2R if method == "r2r" else SETTINGS
    patch = min(S["patch_size"], smallest - smallest % 8)
    if patch < 16:
        raise VaekitError(f"images must be at least 16 pixels a side, the smallest is {smallest}")
    if method == "r2r":
        model, margs = (
            "denoise-vae-selfsup",
            {**S["model_args"], "channels": 1 if mode == "L" else 3, "noisy_sigma": float(sigma)},
        )
    else:
        model, margs = (
            "conv-vae",
            {**S["model_args"], "in_channels": 1 if mode == "L" else 3, "image_size": patch, **lik},
        )
    cfg = {
        "model": model,
        "model_args": margs,
        "data": "folder",
        "data_dir": str(data_dir),
        "patch_size": patch,
        "image_mode": mode,
        "patches_per_image": S["patches_per_image"],
        "batch_size": S["batch_size"],
        "max_steps": int(steps or S["max_steps"]),
        "lr": S["lr"],
        "min_lr": S["min_lr"],
        "warmup_steps": S["warmup_steps"],
        "kl_warmup_steps": S["kl_warmup_steps"],
        "eval_every": S["eval_every"],
        "ckpt_every": S["ckpt_every"],
        "seed": seed,
        "threads": threads or 0,
    }
    return TrainConfig.from_dict(cfg, source="denoise-fit"), (sigma if noise == "gaussian" else None)


def _fitted_sigma(cfg) -> float | None:
    """The Gaussian level (0-255 scale) a self-supervised run was fitted at, None for other noise."""
    a = cfg.model_args
    if "noisy_sigma" in a:
        return float(a["noisy_sigma"])
    if a.get("likelihood") == "gaussian":
        return float(a["likelihood_args"]["sigma"]) * 255.0
    return None


def _fit_words(cfg) -> str:
    """A run's method and noise model in words, for the message of a resume that does not match."""
    method = "r2r" if cfg.model == "denoise-vae-selfsup" else "divnoising"
    s = _fitted_sigma(cfg)
    if s is not None:
        return f"{method}, Gaussian sigma {s:.2f}"
    return f"{method}, Poisson peak {cfg.model_args.get('likelihood_args', {}).get('peak')}"


def fit(
    data_dir,
    output,
    *,
    sigma=None,
    noise="gaussian",
    peak=None,
    steps=None,
    threads=0,
    seed=0,
    quiet=False,
    command=None,
    method=None,
) -> dict:
    """Fit a self-supervised denoiser on the noisy images under ``data_dir`` into run folder ``output``."""
    from ..training.config import TrainConfig
    from ..training.loop import train

    out = Path(output)
    saved = TrainConfig.load(out / "config.yaml") if (out / "checkpoint.pt").is_file() else None
    if saved is not None and sigma is None and noise == "gaussian":  # a resumed fit keeps the level it was fitted at
        sigma = _fitted_sigma(saved)
    cfg, s = fit_config(
        data_dir, sigma=sigma, noise=noise, peak=peak, steps=steps, threads=threads, seed=seed, method=method
    )
    if saved is not None and (saved.model, saved.model_args) != (cfg.model, cfg.model_args):
        raise VaekitError(
            f"{out} holds a fit with other settings ({_fit_words(saved)}, asked: {_fit_words(cfg)}); "
            "give the same ones to train it on, or another -o folder"
        )
    summary = train(cfg, out, resume=saved is not None, quiet=quiet, command=command)
    return {**summary, "sigma": s, "noise": noise, "peak": peak, "method": cfg.model}
