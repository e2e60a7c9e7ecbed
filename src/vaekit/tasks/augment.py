"""Latent augmentation: new plausible variants of images by moving through a VAE's latent space.

``latent_variants`` encodes an image, perturbs the posterior mean with noise
scaled by the posterior's own standard deviation times ``strength``, and
decodes: strength 0 is the reconstruction, 1 a draw from the posterior, larger
values wander further.  ``interpolate_pair`` mixes two images of the same
class in latent space.  Optionally each variant also gets a seeded classical
random affine (``classical=True``), the two kinds of augmentation combined.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import VaekitError


def _check_strength(strength: float):
    if not (0.0 <= float(strength) <= 3.0):
        raise VaekitError(f"strength must be between 0 and 3, got {strength}")


@torch.no_grad()
def latent_variants(model, x: torch.Tensor, n: int, *, strength: float = 0.5, seed: int = 0,
                    classical: bool = False) -> torch.Tensor:
    """x: (B, C, H, W) in [0, 1] -> (B, n, C, H, W) variants (likelihood means, in [0, 1])."""
    if n < 1:
        raise VaekitError(f"the number of variants must be at least 1, got {n}")
    _check_strength(strength)
    if not hasattr(model, "posterior"):
        raise VaekitError(f"model {getattr(model, 'arch', type(model).__name__)!r} has no posterior to perturb")
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(seed)
    mu, logvar = model.posterior(x)
    std = torch.exp(0.5 * logvar)
    eps = torch.randn((n,) + tuple(mu.shape), generator=g).to(mu.device)
    z = (mu.unsqueeze(0) + strength * std.unsqueeze(0) * eps).reshape((n * mu.shape[0],) + tuple(mu.shape[1:]))
    out = model.likelihood.mean(model.decode(z)).clamp(0, 1)
    out = out.view((n, x.shape[0]) + tuple(out.shape[1:])).transpose(0, 1).contiguous()
    if classical:
        from ..enhance import random_affine

        rng = np.random.default_rng(seed + 1)
        arr = out.cpu().numpy()
        for b in range(arr.shape[0]):
            for i in range(arr.shape[1]):
                img = arr[b, i].transpose(1, 2, 0)
                arr[b, i] = np.atleast_3d(random_affine(img[..., 0] if img.shape[2] == 1 else img, rng)).transpose(2, 0, 1)
        out = torch.from_numpy(arr).to(x.device)
    return out


@torch.no_grad()
def interpolate_pair(model, a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Decode (1 - t) * mean_q(a) + t * mean_q(b) for images a, b: (C, H, W) each."""
    model.eval()
    za = model.posterior(a.unsqueeze(0))[0]
    zb = model.posterior(b.unsqueeze(0))[0]
    return model.likelihood.mean(model.decode((1 - t) * za + t * zb))[0].clamp(0, 1)
