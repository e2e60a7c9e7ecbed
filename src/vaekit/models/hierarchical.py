"""Two-level hierarchical VAE (Burda et al. 2016, "2 stochastic layers").

Generative model:  p(z2) = N(0, I),  p(z1 | z2) Gaussian,  p(x | z1).
Inference model:   q(z1 | x),  q(z2 | z1)   (bottom-up, both Gaussian).

All four conditionals are MLPs.  ``decode`` maps z1 to the likelihood
parameters, so reconstructions and interpolations live in z1-space; prior
samples go z2 -> z1 -> x.
"""

from __future__ import annotations

import math

import torch

from .base import VAEBase, gaussian_log_prob, kl_to_std_normal, std_normal_log_prob
from .vae import mlp, reparameterize


class HierarchicalVAE(VAEBase):
    """Parameters
    ----------
    image_shape : (C, H, W)
    hidden1 : hidden sizes between x and z1 (decoder mirrors them)
    hidden2 : hidden sizes between z1 and z2
    latent_dims : (d1, d2), sizes of z1 and z2
    """

    def __init__(
        self,
        image_shape=(1, 28, 28),
        hidden1=(300, 300),
        hidden2=(150, 150),
        latent_dims=(100, 50),
        activation="tanh",
        dropout=0.0,
        **vae_args,
    ):
        super().__init__(**vae_args)
        self.image_shape = tuple(image_shape)
        d = math.prod(self.image_shape)
        d1, d2 = (int(v) for v in latent_dims)
        self.latent_shape = (d1,)
        self.latent_dims = (d1, d2)
        h1, h2 = list(hidden1), list(hidden2)
        self.q_z1 = mlp([d] + h1 + [2 * d1], activation, dropout)
        self.q_z2 = mlp([d1] + h2 + [2 * d2], activation, dropout)
        self.p_z1 = mlp([d2] + h2[::-1] + [2 * d1], activation, dropout)
        c, h, w = self.image_shape
        self.p_x = mlp([d1] + h1[::-1] + [c * self.likelihood.params_per_channel * h * w], activation, dropout)

    @staticmethod
    def _stats(t):
        mu, logvar = t.chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)

    def posterior(self, x):
        """q(z1 | x): (mu, logvar), each (B, d1)."""
        return self._stats(self.q_z1(x.flatten(1)))

    def encode(self, x):
        return self.posterior(x)[0]

    def decode(self, z1):
        c, h, w = self.image_shape
        return self.p_x(z1).view(-1, c * self.likelihood.params_per_channel, h, w)

    def prior_sample(self, n, temperature=1.0):
        p = next(self.parameters())
        z2 = torch.randn(n, self.latent_dims[1], device=p.device, dtype=p.dtype) * temperature
        mu1, logvar1 = self._stats(self.p_z1(z2))
        return mu1 + temperature * torch.exp(0.5 * logvar1) * torch.randn_like(mu1)

    def _log_weights(self, x, k):
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"HierarchicalVAE expects images of shape {self.image_shape}, got {tuple(x.shape[1:])}")
        B = x.shape[0]
        mu1, logvar1 = self._stats(self.q_z1(x.flatten(1)))
        z1 = reparameterize(mu1, logvar1, k)  # (k, B, d1)
        mu2, logvar2 = self._stats(self.q_z2(z1))  # (k, B, d2)
        z2 = mu2 + torch.exp(0.5 * logvar2) * torch.randn_like(mu2)
        pmu1, plogvar1 = self._stats(self.p_z1(z2))
        params = self.decode(z1.reshape(k * B, -1))
        xk = x.unsqueeze(0).expand((k,) + tuple(x.shape)).reshape((k * B,) + tuple(x.shape[1:]))
        log_px = self.likelihood.log_prob(params, xk).view(k, B)
        log_pz = std_normal_log_prob(z2) + gaussian_log_prob(z1, pmu1, plogvar1)
        log_qz = gaussian_log_prob(z1, mu1, logvar1) + gaussian_log_prob(z2, mu2, logvar2)
        # lower-variance KL for the ELBO: MC for z1, analytic for z2 given z1
        kl = (
            gaussian_log_prob(z1[0], mu1, logvar1)
            - gaussian_log_prob(z1[0], pmu1[0], plogvar1[0])
            + kl_to_std_normal(mu2[0], logvar2[0])
        )
        return {
            "log_px": log_px,
            "log_pz": log_pz,
            "log_qz": log_qz,
            "kl_analytic": kl,
            "params": params[:B],
            "mu": mu1,
            "logvar": logvar1,
            "z": z1[0],
            "mu2": mu2[0],
            "logvar2": logvar2[0],
        }
