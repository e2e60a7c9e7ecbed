"""The supervised denoising VAE: a conditional VAE of the clean image given the noisy one.

    p(x | y, s) = ∫ p(x | z, y, s) p(z | y, s) dz          (y noisy, s the noise level)

* a context U-Net reads the noisy image and a noise-level map (FFDNet-style
  pixel-unshuffle by 2, then levels at 1/2, 1/4 and 1/8 of the resolution);
* the **prior** p(z | y, s) and the **posterior** q(z | x, y, s) are diagonal
  Gaussians over a spatial latent at 1/8 resolution; the posterior also sees
  the clean image (training only);
* the **decoder** p(x | z, y, s) is a Gaussian whose mean is ``y`` plus a
  residual predicted from ``z`` and the U-Net's skips, and whose scale is a
  learned function of the noise level.

Training maximises the conditional ELBO ``E_q[log p(x|z,y,s)] - KL(q || p)``
on clean patches with Gaussian noise drawn inside :meth:`forward` (σ uniform
in ``sigma_range``, 0–255 scale, added and not clipped: the DnCNN protocol).
Each example's ELBO is weighted by ``(scale(σ)/scale_ref)²`` (a constant in
the gradient): the ELBO under a noise-level-reweighted data distribution, so
high-σ examples are not drowned by the near-noiseless ones whose likelihood
scale is tiny.  The reported ``elbo`` is the unweighted one.

At inference the estimate is the mean of the decoder means over ``samples``
draws from the prior; ``samples=0`` is the one-pass special case (z = prior
mean).  The per-pixel std combines the spread of those draws with the
decoder's own scale, and is what ``--samples`` reports.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import LOG2PI


def _conv(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def _block(cin, cout, n=2, stride=1):
    layers = [_conv(cin, cout, stride), nn.ReLU(inplace=True)]
    for _ in range(n - 1):
        layers += [_conv(cout, cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def gaussian_kl(qm, qlv, pm, plv):
    """Elementwise KL(N(qm, e^qlv) || N(pm, e^plv)) of two diagonal Gaussians (the conditional VAEs' KL)."""
    return 0.5 * (plv - qlv + ((qlv.exp() + (qm - pm) ** 2) * torch.exp(-plv)) - 1.0)


def prior_draws(decode, pm, plv, samples: int, temperature: float = 1.0, generator=None):
    """Decode ``samples`` draws z ~ N(pm, temperature² e^plv): returns (mean, variance, draws) of the decodings."""
    draws = []
    s = s2 = 0.0
    for _ in range(int(samples)):
        eps = torch.randn(pm.shape, generator=generator, dtype=pm.dtype, device=pm.device)
        d = decode(pm + temperature * eps * (0.5 * plv).exp())
        draws.append(d)
        s = s + d
        s2 = s2 + d * d
    mean = s / samples
    return mean, (s2 / samples - mean * mean).clamp_min(0), draws


class DenoisingVAE(nn.Module):
    """Conditional VAE denoiser for ``channels``-channel images (1 gray, 3 RGB).

    Parameters
    ----------
    channels : image channels
    widths : feature channels at 1/2, 1/4 and 1/8 resolution
    latent_channels : channels of the spatial latent (at 1/8 resolution)
    sigma_range : training noise levels (0–255 scale), drawn uniformly per example
    scale_ref : reference likelihood scale of the per-example weighting (0–1 scale)
    free_bits : KL floor in nats per latent unit (Kingma et al. 2016), per example and channel: the
        training loss charges max(free_bits x positions, KL of the channel).  Without it the posterior
        collapses onto the prior (the decoder already sees the noisy image), and the model is a VAE in
        name only.  The reported ELBO uses the true KL.
    """

    STRIDE = 8  # inputs are padded to a multiple of this inside ``denoise``

    def __init__(self, channels: int = 1, widths=(32, 64, 128), latent_channels: int = 8,
                 sigma_range=(0.0, 55.0), scale_ref: float = 0.03, free_bits: float = 0.0):
        super().__init__()
        self.free_bits = float(free_bits)
        self.channels = int(channels)
        self.widths = tuple(int(w) for w in widths)
        self.latent_channels = int(latent_channels)
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))
        self.scale_ref = float(scale_ref)
        c4, (w0, w1, w2), L = 4 * self.channels, self.widths, self.latent_channels
        # context U-Net on (noisy, noise map)
        self.e1 = _block(c4 + 1, w0, 2)
        self.e2 = _block(w0, w1, 3, stride=2)
        self.e3 = _block(w1, w2, 3, stride=2)
        self.prior_head = _conv(w2, 2 * L)
        # posterior: the clean image joins the context at 1/8
        self.q_in = nn.Sequential(_conv(c4, 32, 2), nn.ReLU(inplace=True), _conv(32, 64, 2), nn.ReLU(inplace=True))
        self.q_head = nn.Sequential(_conv(64 + w2, w2), nn.ReLU(inplace=True), _conv(w2, 2 * L))
        # decoder
        self.d3 = _block(w2 + L, w2, 2)
        self.up2 = _conv(w2, 4 * w1)
        self.d2 = _block(2 * w1, w1, 2)
        self.up1 = _conv(w1, 4 * w0)
        self.d1 = _block(2 * w0, w0, 2)
        self.out = _conv(w0, c4)
        # log likelihood scale as a function of the noise level
        self.scale_net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    # ------------------------------------------------------------------ pieces
    def _check(self, y):
        if y.dim() != 4 or y.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, H, W) images, got {tuple(y.shape)}")
        if y.shape[-1] % self.STRIDE or y.shape[-2] % self.STRIDE:
            raise ValueError(f"height and width must be multiples of {self.STRIDE}, got {tuple(y.shape[-2:])}")

    def log_scale(self, sigma):
        """log of the decoder's scale (0–1 image units) for noise levels ``sigma`` (B,) on the 0–255 scale."""
        s = sigma.float().view(-1, 1) / 55.0
        return (self.scale_net(s).view(-1) - 3.5).clamp(-9.0, 0.0)

    def context(self, y, sigma):
        """Skips (e1, e2, e3) and the prior's (mu, logvar) for noisy ``y`` at levels ``sigma`` (B,)."""
        self._check(y)
        h = F.pixel_unshuffle(y, 2)
        smap = (sigma.float() / 255.0).view(-1, 1, 1, 1).expand(-1, 1, *h.shape[-2:])
        e1 = self.e1(torch.cat([h, smap], 1))
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        mu, logvar = self.prior_head(e3).chunk(2, 1)
        return (e1, e2, e3), (mu, logvar.clamp(-12.0, 6.0))

    def posterior(self, x, e3):
        q = self.q_in(F.pixel_unshuffle(x, 2))
        mu, logvar = self.q_head(torch.cat([q, e3], 1)).chunk(2, 1)
        return mu, logvar.clamp(-12.0, 6.0)

    def decode(self, z, skips, y):
        """Decoder mean: ``y`` plus the predicted residual."""
        e1, e2, e3 = skips
        h = self.d3(torch.cat([e3, z], 1))
        h = self.d2(torch.cat([F.relu(F.pixel_shuffle(self.up2(h), 2)), e2], 1))
        h = self.d1(torch.cat([F.relu(F.pixel_shuffle(self.up1(h), 2)), e1], 1))
        return y + F.pixel_shuffle(self.out(h), 2)

    # ------------------------------------------------------------------ training objective
    def simulate(self, x, sigma=None):
        """Noisy copies of clean ``x`` (Gaussian, not clipped) and their levels (B,), drawn from torch's RNG."""
        if sigma is None:
            lo, hi = self.sigma_range
            sigma = lo + (hi - lo) * torch.rand(x.shape[0], device=x.device)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return x + torch.randn_like(x) * (sigma / 255.0).view(-1, 1, 1, 1), sigma

    def forward(self, x, sigma=None):
        """The conditional ELBO's terms on clean ``x`` (noise simulated here)."""
        y, sigma = self.simulate(x, sigma)
        skips, (pm, plv) = self.context(y, sigma)
        qm, qlv = self.posterior(x, skips[2])
        z = qm + torch.randn_like(qm) * (0.5 * qlv).exp()
        mean = self.decode(z, skips, y)
        ls = self.log_scale(sigma)
        npix = x[0].numel()
        sq = (x - mean).pow(2).flatten(1).sum(1)
        log_px = -0.5 * sq * torch.exp(-2 * ls) - npix * (ls + 0.5 * LOG2PI)
        kl_c = gaussian_kl(qm, qlv, pm, plv).flatten(2).sum(2)
        kl_train = kl_c.clamp_min(self.free_bits * qm[0, 0].numel()).sum(1) if self.free_bits else kl_c.sum(1)
        return {"x_hat": mean, "log_px": log_px, "kl": kl_c.sum(1), "kl_train": kl_train, "log_scale": ls,
                "sigma": sigma, "noisy": y, "mse": sq / npix}

    def loss(self, x, out, kl_weight: float = 1.0):
        w = (out["log_scale"].detach().exp() / self.scale_ref) ** 2
        per = -(out["log_px"] - kl_weight * out.get("kl_train", out["kl"]))
        elbo = out["log_px"] - out["kl"]
        mse = out["mse"]
        return {"loss": (w * per).mean(), "elbo": elbo.mean().detach(), "rec": mse.mean().detach(),
                "kl": out["kl"].mean().detach(),
                "psnr": (-10 * torch.log10(mse.clamp_min(1e-10))).mean().detach()}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def denoise(self, y, sigma, samples: int = 0, temperature: float = 1.0, generator=None):
        """Estimate the clean image from noisy ``y`` (B, C, H, W; sizes multiples of 8).

        Returns ``(mean, std, draws)``: the estimate, the per-pixel std (spread of the
        draws combined with the decoder scale), and the list of individual draws
        (empty for ``samples=0``, the one-pass estimate with z = prior mean)."""
        sigma = torch.as_tensor(sigma, dtype=y.dtype, device=y.device).expand(y.shape[0])
        skips, (pm, plv) = self.context(y, sigma)
        scale2 = torch.exp(2 * self.log_scale(sigma)).view(-1, 1, 1, 1)
        if samples <= 0:
            mean = self.decode(pm, skips, y)
            return mean, scale2.sqrt().expand_as(mean).clone(), []
        mean, var, draws = prior_draws(lambda z: self.decode(z, skips, y), pm, plv, samples, temperature, generator)
        return mean, (var + scale2).sqrt(), draws

    @torch.no_grad()
    def latent_stats(self, x, sigma):
        """KL per example and per latent channel (B, L) on clean ``x`` at levels ``sigma``: for active units."""
        y, sigma = self.simulate(x, sigma)
        skips, (pm, plv) = self.context(y, sigma)
        qm, qlv = self.posterior(x, skips[2])
        kl = gaussian_kl(qm, qlv, pm, plv)
        return kl.mean((2, 3)), math.prod(kl.shape[2:])
