"""Single-level VAEs: an MLP VAE and a fully convolutional (ResNet) VAE.

Both have a Gaussian posterior q(z|x) = N(mu, diag exp(logvar)) and a
standard normal prior.  Images are (B, C, H, W) in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import VAEBase, gaussian_log_prob, kl_to_std_normal, std_normal_log_prob

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def mlp(sizes, activation="relu", dropout=0.0, last_activation=False):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def reparameterize(mu, logvar, k):
    """k samples per example: (k, B, ...) from N(mu, exp(logvar))."""
    eps = torch.randn((k,) + tuple(mu.shape), dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


class GaussianVAE(VAEBase):
    """Shared forward pass of the single-level VAEs (subclasses give the nets)."""

    def posterior(self, x):  # -> mu, logvar with the latent's shape (B, *latent_shape)
        raise NotImplementedError

    def encode(self, x):
        return self.posterior(x)[0]

    def _log_weights(self, x, k):
        mu, logvar = self.posterior(x)
        z = reparameterize(mu, logvar, k)  # (k, B, *latent)
        B = x.shape[0]
        params = self.decode(z.reshape((k * B,) + tuple(mu.shape[1:])))
        xk = x.unsqueeze(0).expand((k,) + tuple(x.shape)).reshape((k * B,) + tuple(x.shape[1:]))
        log_px = self.likelihood.log_prob(params, xk).view(k, B)
        zf = z.flatten(2)
        log_pz = std_normal_log_prob(zf)
        log_qz = gaussian_log_prob(zf, mu.flatten(1), logvar.flatten(1))
        return {
            "log_px": log_px,
            "log_pz": log_pz,
            "log_qz": log_qz,
            "kl_analytic": kl_to_std_normal(mu, logvar),
            "params": params[:B],
            "mu": mu,
            "logvar": logvar,
            "z": z[0],
        }

    def prior_sample(self, n, temperature=1.0):
        p = next(self.parameters())
        return torch.randn((n,) + tuple(self.latent_shape), device=p.device, dtype=p.dtype) * temperature


class MLPVAE(GaussianVAE):
    """Fully connected VAE (the seed design), optional dropout.

    Parameters
    ----------
    image_shape : (C, H, W)
    hidden : sizes of the hidden layers of the encoder (the decoder mirrors them)
    latent_dim : size of z
    dropout : dropout probability after each hidden layer (0 disables)
    """

    def __init__(
        self, image_shape=(1, 28, 28), hidden=(512, 256), latent_dim=32, dropout=0.0, activation="relu", **vae_args
    ):
        super().__init__(**vae_args)
        self.image_shape = tuple(image_shape)
        self.latent_shape = (int(latent_dim),)
        d = math.prod(self.image_shape)
        hidden = list(hidden)
        self.encoder = mlp([d] + hidden, activation, dropout, last_activation=True)
        self.to_stats = nn.Linear(hidden[-1], 2 * latent_dim)
        c, h, w = self.image_shape
        out = c * self.likelihood.params_per_channel * h * w
        self.decoder = mlp([latent_dim] + hidden[::-1] + [out], activation, dropout)

    def posterior(self, x):
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"MLPVAE expects images of shape {self.image_shape}, got {tuple(x.shape[1:])}")
        mu, logvar = self.to_stats(self.encoder(x.flatten(1))).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z):
        c, h, w = self.image_shape
        return self.decoder(z).view(-1, c * self.likelihood.params_per_channel, h, w)


class ResBlock(nn.Module):
    def __init__(self, ch, activation="silu"):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.body = nn.Sequential(act(), nn.Conv2d(ch, ch, 3, padding=1), act(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class ConvVAE(GaussianVAE):
    """Fully convolutional VAE with a spatial latent (works on any H, W
    divisible by ``2 ** len(channels)``).

    The encoder halves the resolution ``len(channels)`` times (stride-2
    convolutions, each followed by ``blocks`` residual blocks); the latent is a
    ``latent_channels`` x H/s x W/s map; the decoder mirrors the encoder with
    nearest-neighbour upsampling.  ``image_size`` is only used to draw prior
    samples when no size is given.
    """

    def __init__(
        self,
        in_channels=1,
        channels=(32, 64),
        blocks=1,
        latent_channels=8,
        image_size=28,
        activation="silu",
        **vae_args,
    ):
        super().__init__(**vae_args)
        self.in_channels = int(in_channels)
        self.stride = 2 ** len(channels)
        self.latent_channels = int(latent_channels)
        self.image_size = int(image_size)
        act = ACTIVATIONS[activation]
        enc, prev = [], in_channels
        for ch in channels:
            enc += [nn.Conv2d(prev, ch, 4, stride=2, padding=1)] + [ResBlock(ch, activation) for _ in range(blocks)]
            prev = ch
        enc += [act(), nn.Conv2d(prev, 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec, prev = [nn.Conv2d(latent_channels, channels[-1], 3, padding=1)], channels[-1]
        for ch in list(channels[::-1][1:]) + [channels[0]]:
            dec += [ResBlock(prev, activation) for _ in range(blocks)]
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(prev, ch, 3, padding=1)]
            prev = ch
        dec += [act(), nn.Conv2d(prev, in_channels * self.likelihood.params_per_channel, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_shape(self):
        s = self.image_size // self.stride
        return (self.latent_channels, s, s)

    def posterior(self, x):
        h, w = x.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"ConvVAE needs height and width divisible by {self.stride}, got {h}x{w}")
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z):
        return self.decoder(z)
