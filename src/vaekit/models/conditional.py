"""A class-conditional VAE: q(z | x, y), p(x | z, y), p(z) = N(0, I).

The label enters the encoder and the decoder as a one-hot vector, so a
variant decoded with the image's own label keeps it (``--keep-label``).  Set
the label with :meth:`condition` (the training loop does it through
``forward(x, y)``); every other method is the MLP VAE's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .vae import MLPVAE, mlp


class ConditionalMLPVAE(MLPVAE):
    conditional = True

    def __init__(
        self,
        num_classes: int = 10,
        image_shape=(1, 28, 28),
        hidden=(512, 256),
        latent_dim=32,
        dropout=0.0,
        activation="relu",
        **vae_args,
    ):
        super().__init__(
            image_shape=image_shape,
            hidden=hidden,
            latent_dim=latent_dim,
            dropout=dropout,
            activation=activation,
            **vae_args,
        )
        self.num_classes = int(num_classes)
        d = math.prod(self.image_shape)
        hidden = list(hidden)
        self.encoder = mlp([d + self.num_classes] + hidden, activation, dropout, last_activation=True)
        c, h, w = self.image_shape
        out = c * self.likelihood.params_per_channel * h * w
        self.decoder = mlp([latent_dim + self.num_classes] + hidden[::-1] + [out], activation, dropout)
        self._c: torch.Tensor | None = None

    def condition(self, labels: torch.Tensor):
        """Set the labels (B,) that the next encode/decode calls are conditioned on."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}")
        self._c = F.one_hot(labels, self.num_classes).float().to(next(self.parameters()).device)
        return self

    def _cond(self, n: int) -> torch.Tensor:
        if self._c is None:
            raise ValueError("ConditionalMLPVAE needs labels: call condition(labels) or forward(x, y)")
        if n % self._c.shape[0]:
            raise ValueError(f"{n} inputs for {self._c.shape[0]} labels")
        return self._c.repeat(n // self._c.shape[0], 1)  # k samples of a batch are stacked batch-major

    def forward(self, x, y=None):
        if y is not None:
            self.condition(y)
        return super().forward(x)

    def posterior(self, x):
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"ConditionalMLPVAE expects images of shape {self.image_shape}, got {tuple(x.shape[1:])}")
        h = torch.cat([x.flatten(1), self._cond(x.shape[0])], dim=1)
        mu, logvar = self.to_stats(self.encoder(h)).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z):
        c, h, w = self.image_shape
        out = self.decoder(torch.cat([z, self._cond(z.shape[0])], dim=1))
        return out.view(-1, c * self.likelihood.params_per_channel, h, w)

    @torch.no_grad()
    def sample_class(self, labels, temperature: float = 1.0, mean: bool = True):
        """One prior sample per label: (len(labels), C, H, W)."""
        self.condition(labels)
        return self.sample(len(self._c), temperature, mean)
