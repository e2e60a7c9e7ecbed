"""Observation models p(x | z) for VAE decoders.

Each likelihood says how many decoder output channels it needs per image
channel (``params_per_channel``) and turns decoder outputs into a log-density
per example, a mean image and samples.  Log-densities are in nats, summed
over all pixels: ``log_prob(params, x) -> (B,)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Likelihood(nn.Module):
    params_per_channel = 1
    discrete = False  # True when log_prob is a log-probability mass (nats -> bits/dim make sense)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _sum_per_example(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


class Bernoulli(Likelihood):
    """Binary pixels (binarized MNIST).  ``params`` are logits."""

    discrete = True

    def log_prob(self, params, x):
        return -_sum_per_example(F.binary_cross_entropy_with_logits(params, x, reduction="none"))

    def mean(self, params):
        return torch.sigmoid(params)

    def sample(self, params):
        return torch.bernoulli(torch.sigmoid(params))


class Gaussian(Likelihood):
    """Continuous pixels in [0, 1] with a Gaussian of fixed or learned variance.

    ``sigma`` fixes the standard deviation (in [0, 1] pixel units); with
    ``learned=True`` the decoder also predicts a per-pixel log-variance,
    clamped to keep the density bounded.
    """

    def __init__(self, sigma: float = 0.1, learned: bool = False):
        super().__init__()
        self.sigma = float(sigma)
        self.learned = bool(learned)
        self.params_per_channel = 2 if learned else 1

    def _split(self, params):
        if self.learned:
            mean, logvar = params.chunk(2, dim=1)
            return mean, logvar.clamp(-12.0, 4.0)
        return params, torch.full_like(params, 2.0 * math.log(self.sigma))

    def log_prob(self, params, x):
        mean, logvar = self._split(params)
        lp = -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))
        return _sum_per_example(lp)

    def mean(self, params):
        return self._split(params)[0]

    def sample(self, params):
        mean, logvar = self._split(params)
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)


class PoissonNoise(Likelihood):
    """The Poisson noise model of a self-supervised denoiser, as its Gaussian approximation:
    ``y ~ N(s, s / peak)`` for signal ``s`` in [0, 1] units (``peak`` photons at 1)."""

    params_per_channel = 1

    def __init__(self, peak: float = 30.0):
        super().__init__()
        self.peak = float(peak)

    def log_prob(self, params, x):
        var = params.clamp_min(1e-3) / self.peak
        lp = -0.5 * (math.log(2 * math.pi) + torch.log(var) + (x - params) ** 2 / var)
        return _sum_per_example(lp)

    def mean(self, params):
        return params

    def sample(self, params):
        return params + torch.sqrt(params.clamp_min(1e-3) / self.peak) * torch.randn_like(params)


class DiscretizedLogistic(Likelihood):
    """8-bit pixels as a logistic density integrated over each 1/255 bin
    (PixelCNN++ style, one component).  ``x`` is in [0, 1] on the 256-level
    grid; the result is a log-probability mass, so bits/dim are exact."""

    discrete = True
    params_per_channel = 2

    def __init__(self, bins: int = 256):
        super().__init__()
        self.bins = int(bins)

    def _split(self, params):
        mean, log_scale = params.chunk(2, dim=1)
        return mean, log_scale.clamp(min=-7.0)

    def log_prob(self, params, x):
        mean, log_scale = self._split(params)
        half = 0.5 / (self.bins - 1)
        inv_s = torch.exp(-log_scale)
        centered = x - mean
        cdf_plus = torch.sigmoid(inv_s * (centered + half))
        cdf_min = torch.sigmoid(inv_s * (centered - half))
        # log CDF at the top edge for the lowest bin, log(1-CDF) for the highest
        log_cdf_plus = (inv_s * (centered + half)) - F.softplus(inv_s * (centered + half))
        log_one_minus_cdf_min = -F.softplus(inv_s * (centered - half))
        cdf_delta = cdf_plus - cdf_min
        mid = inv_s * centered
        # density at the bin centre times the bin width, for bins too thin to subtract safely
        log_pdf_mid = mid - log_scale - 2.0 * F.softplus(mid) + math.log(2 * half)
        inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid)
        lp = torch.where(x < half, log_cdf_plus, torch.where(x > 1 - half, log_one_minus_cdf_min, inner))
        return _sum_per_example(lp)

    def mean(self, params):
        return self._split(params)[0].clamp(0, 1)

    def sample(self, params):
        mean, log_scale = self._split(params)
        u = torch.rand_like(mean).clamp(1e-5, 1 - 1e-5)
        x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
        return (x.clamp(0, 1) * (self.bins - 1)).round() / (self.bins - 1)


def make_likelihood(name: str, **kwargs) -> Likelihood:
    table = {"bernoulli": Bernoulli, "gaussian": Gaussian, "logistic": DiscretizedLogistic, "poisson": PoissonNoise}
    if name not in table:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(table)}")
    return table[name](**kwargs)
