"""What every VAE in the package shares: the objectives and the sampling API.

A subclass supplies:

* ``_log_weights(x, k)``: draw ``k`` latent samples per example and return
  ``log p(x|z)``, ``log p(z)`` and ``log q(z|x)`` for each (k, B), plus an
  analytic KL where it has one (lower-variance ELBO gradients);
* ``encode(x) -> z`` (posterior mean), ``decode(z) -> likelihood parameters``;
* ``prior_sample(n, temperature) -> z``.

Everything else -- ELBO, beta-ELBO, IWAE(k), reconstructions, samples -- is
here, so the training loop only ever calls ``model(x)`` and ``model.loss``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .likelihoods import make_likelihood

LOG2PI = math.log(2 * math.pi)


def gaussian_log_prob(z, mu, logvar):
    """log N(z; mu, diag exp(logvar)), summed over the last dim (shapes broadcast)."""
    return -0.5 * (LOG2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)


def std_normal_log_prob(z):
    return -0.5 * (LOG2PI + z**2).sum(-1)


def kl_to_std_normal(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, summed over latent dims: (B,)."""
    return 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


class VAEBase(nn.Module):
    """Objectives shared by the VAE family.

    Parameters
    ----------
    likelihood : "bernoulli" | "gaussian" | "logistic"
    likelihood_args : dict passed to the likelihood (e.g. ``{"sigma": 0.1}``
        or ``{"learned": True}`` for the Gaussian)
    objective : "elbo" (beta applies) or "iwae"
    beta : weight of the KL term in the ELBO (beta-VAE); 1 is the true ELBO
    k : importance samples for the IWAE objective during training
    """

    def __init__(self, likelihood="bernoulli", likelihood_args=None, objective="elbo", beta=1.0, k=1):
        super().__init__()
        if objective not in ("elbo", "iwae"):
            raise ValueError(f"objective must be 'elbo' or 'iwae', not {objective!r}")
        self.likelihood = make_likelihood(likelihood, **(likelihood_args or {}))
        self.objective = objective
        self.beta = float(beta)
        self.k = int(k)

    # --- to be provided by subclasses -------------------------------------------------
    def decode(self, z):  # -> likelihood parameters (B, C*params_per_channel, H, W)
        raise NotImplementedError

    def prior_sample(self, n, temperature=1.0):  # -> z
        raise NotImplementedError

    def encode(self, x):  # -> posterior mean latent (B, ...) used for interpolation
        raise NotImplementedError

    def _log_weights(self, x, k):
        """Return dict with tensors of shape (k, B): ``log_px`` = log p(x|z),
        ``log_pz`` = log p(z), ``log_qz`` = log q(z|x); and ``kl_analytic`` (B,)
        or None; and ``params`` of the first sample (B, ...) and ``post`` (dict
        of posterior statistics for reporting)."""
        raise NotImplementedError

    # --- shared API ---------------------------------------------------------------------
    def forward(self, x):
        k = self.k if (self.training and self.objective == "iwae") else 1
        out = self._log_weights(x, k)
        out["x_hat"] = self.likelihood.mean(out["params"])
        return out

    def loss(self, x, out, kl_weight: float = 1.0):
        """Per-example averages in nats. ``kl_weight`` is the warm-up factor in [0, 1]."""
        log_px, log_pz, log_qz = out["log_px"], out["log_pz"], out["log_qz"]
        kl_mc = log_qz - log_pz  # (k, B)
        kl = out["kl_analytic"] if out.get("kl_analytic") is not None else kl_mc[0]
        rec = log_px[0]
        elbo = rec - kl
        if self.objective == "iwae" and log_px.shape[0] > 1:
            logw = log_px + kl_weight * (log_pz - log_qz)
            bound = torch.logsumexp(logw, 0) - math.log(logw.shape[0])
            loss = -bound.mean()
        else:
            loss = -(rec - self.beta * kl_weight * kl).mean()
        return {"loss": loss, "elbo": elbo.mean().detach(), "rec": rec.mean().detach(), "kl": kl.mean().detach()}

    def terms(self, x, k: int = 1) -> dict:
        """The per-sample terms of the bound (what ``_log_weights`` returns): log p(x|z), log p(z), log q(z|x),
        the first sample's likelihood ``params``, the posterior statistics ``mu``/``logvar``."""
        return self._log_weights(x, k)

    @torch.no_grad()
    def log_weights(self, x, k):
        """Importance log-weights log p(x,z) - log q(z|x), shape (k, B)."""
        out = self._log_weights(x, k)
        return out["log_px"] + out["log_pz"] - out["log_qz"]

    @torch.no_grad()
    def sample(self, n, temperature=1.0, mean=True):
        """``n`` images from the prior (temperature scales its std). ``mean=True``
        returns the likelihood mean (e.g. Bernoulli probabilities), else a draw."""
        params = self.decode(self.prior_sample(n, temperature))
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params)

    @torch.no_grad()
    def reconstruct(self, x):
        """Decode the posterior mean: the deterministic reconstruction."""
        return self.likelihood.mean(self.decode(self.encode(x)))
