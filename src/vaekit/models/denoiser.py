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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import LOG2PI
from .layers import ENSEMBLES, conv3, dihedral


def _block(cin, cout, n=2, stride=1):
    layers = [conv3(cin, cout, stride), nn.ReLU(inplace=True)]
    for _ in range(n - 1):
        layers += [conv3(cout, cout), nn.ReLU(inplace=True)]
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


def correlated(noise: torch.Tensor, width: float, radius: int = 3) -> torch.Tensor:
    """Unit white ``noise`` (B, C, H, W) blurred by a Gaussian of ``width`` px and rescaled to unit variance."""
    t = torch.arange(-radius, radius + 1, dtype=noise.dtype, device=noise.device)
    k = torch.exp(-0.5 * (t / width) ** 2)
    k = k / k.sum()
    c = noise.shape[1]
    h = F.conv2d(
        F.pad(noise, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c
    )
    h = F.conv2d(F.pad(h, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return h / (k.pow(2).sum() ** 2).sqrt()  # the separable kernel's sum of squares is (sum k^2)^2


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
    clip_prob : the fraction of training examples whose noisy input is clipped to [0, 1] and rounded to 8 bits,
        as files hold noise (their level map keeps the level before clipping)
    corr_prob : the fraction of training examples whose noise is spatially correlated, as demosaicking and JPEG
        leave camera noise: white noise blurred by a Gaussian of width ``corr_width`` px (drawn per batch), rescaled
        so that each pixel's standard deviation is still the level
    camera_input : the network is also told which inputs are camera files (Poisson–Gaussian noise through a Bayer
        mosaic and JPEG, :func:`vaekit.degrade.camera`): on those, a residual branch after each of the five mixing
        points (3x3 conv, ReLU, 1x1 conv, the last starting at zero) adds to the features, and on white noise it is
        skipped.  Trained alone (``trainable: [camera]``) it leaves the white-noise estimate exactly as it was.
    camera_prob : the fraction of training examples that are simulated camera files, each given the level the blind
        estimator reads on it (the level map of :func:`vaekit.degrade.blind_level`), as at inference
    decoder_blocks : residual blocks (3x3 conv, ReLU, 3x3 conv, the last starting at zero) added after each of the
        decoder's 1/4 and 1/2 levels: depth where the estimate's detail is formed.  A model grown from one without
        them (``init_from``) starts as exactly that model.
    ensemble : an inference setting, no tensor: how many flipped and turned copies of an image
        :func:`vaekit.tasks.denoise.vae_denoise` averages by default (1, 2, 4 or 8; chosen on validation images
        where the model is fast enough to spare the time).
    """

    STRIDE = 8  # inputs are padded to a multiple of this inside ``denoise``

    def __init__(
        self,
        channels: int = 1,
        widths=(48, 96, 192),
        latent_channels: int = 8,
        sigma_range=(0.0, 55.0),
        scale_ref: float = 0.03,
        free_bits: float = 0.05,
        clip_prob: float = 0.0,
        corr_prob: float = 0.0,
        corr_width=(0.4, 1.2),
        camera_input: bool = False,
        camera_prob: float = 0.0,
        decoder_blocks: int = 0,
        ensemble: int = 1,
    ):
        super().__init__()
        if ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {ENSEMBLES}, not {ensemble}")
        self.ensemble = int(ensemble)
        self.free_bits = float(free_bits)
        for name, p in (("clip_prob", clip_prob), ("corr_prob", corr_prob), ("camera_prob", camera_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {p}")
        self.clip_prob = float(clip_prob)
        self.corr_prob = float(corr_prob)
        self.camera_input = bool(camera_input)
        self.camera_prob = float(camera_prob)
        if self.camera_prob and not self.camera_input:
            raise ValueError("camera_prob needs camera_input: the network must be told which examples are camera files")
        self.corr_width = (float(corr_width[0]), float(corr_width[1]))
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
        self.prior_head = conv3(w2, 2 * L)
        # posterior: the clean image joins the context at 1/8
        self.q_in = nn.Sequential(conv3(c4, 32, 2), nn.ReLU(inplace=True), conv3(32, 64, 2), nn.ReLU(inplace=True))
        self.q_head = nn.Sequential(conv3(64 + w2, w2), nn.ReLU(inplace=True), conv3(w2, 2 * L))
        # decoder
        self.d3 = _block(w2 + L, w2, 2)
        self.up2 = conv3(w2, 4 * w1)
        self.d2 = _block(2 * w1, w1, 2)
        self.up1 = conv3(w1, 4 * w0)
        self.d1 = _block(2 * w0, w0, 2)
        self.out = conv3(w0, c4)
        # log likelihood scale as a function of the noise level
        self.scale_net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.decoder_blocks = int(decoder_blocks)
        self.deep = nn.ModuleList(
            nn.Sequential(conv3(w, w), nn.ReLU(inplace=True), conv3(w, w))
            for w in (w1, w0)
            for _ in range(self.decoder_blocks)
        )
        for block in self.deep:
            nn.init.zeros_(block[-1].weight)
            nn.init.zeros_(block[-1].bias)
        if self.camera_input:  # one branch per mixing point: e1, e2, e3 in the context, d2, d1 in the decoder
            self.camera = nn.ModuleList(
                nn.Sequential(conv3(w, w), nn.ReLU(inplace=True), nn.Conv2d(w, w, 1)) for w in (w0, w1, w2, w1, w0)
            )
            for branch in self.camera:
                nn.init.zeros_(branch[-1].weight)
                nn.init.zeros_(branch[-1].bias)

    # ------------------------------------------------------------------ pieces
    def _check(self, y):
        if y.dim() != 4 or y.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, H, W) images, got {tuple(y.shape)}")
        if y.shape[-1] % self.STRIDE or y.shape[-2] % self.STRIDE:
            raise ValueError(f"height and width must be multiples of {self.STRIDE}, got {tuple(y.shape[-2:])}")

    @staticmethod
    def as_level(sigma, y):
        """``sigma`` for the batch ``y``: one level per example (B,), or a per-pixel map (B, 1, H, W) when it is
        given as one (0–255 scale)."""
        s = torch.as_tensor(sigma, dtype=y.dtype, device=y.device)
        return s.expand(y.shape[0], 1, *y.shape[-2:]) if s.dim() == 4 else s.expand(y.shape[0])

    def log_scale(self, sigma):
        """log of the decoder's scale (0–1 image units) for noise levels ``sigma`` (B,) on the 0–255 scale (a
        map's RMS level)."""
        if sigma.dim() > 1:
            sigma = sigma.flatten(1).pow(2).mean(1).sqrt()
        s = sigma.float().view(-1, 1) / 55.0
        return (self.scale_net(s).view(-1) - 3.5).clamp(-9.0, 0.0)

    def context(self, y, sigma, camera=None):
        """Skips (e1, e2, e3) and the prior's (mu, logvar) for noisy ``y`` at levels ``sigma`` (B,) or a level
        map (B, 1, H, W).  The network reads the level as a map (FFDNet's), so a map that varies is read as such.
        ``camera`` (B,) as :meth:`camera_rows` returns it."""
        self._check(y)
        h = F.pixel_unshuffle(y, 2)
        if sigma.dim() == 4:
            smap = F.avg_pool2d(sigma.float(), 2) / 255.0
        else:
            smap = (sigma.float() / 255.0).view(-1, 1, 1, 1).expand(-1, 1, *h.shape[-2:])
        e1 = self._camera(0, self._mix(0, self.e1(torch.cat([h, smap.to(h.dtype)], 1))), camera)
        e2 = self._camera(1, self._mix(1, self.e2(e1)), camera)
        e3 = self._camera(2, self._mix(2, self.e3(e2)), camera)
        mu, logvar = self.prior_head(e3).chunk(2, 1)
        return (e1, e2, e3), (mu, logvar.clamp(-12.0, 6.0))

    def camera_rows(self, camera, rows: int):
        """The camera flags (B,) of a batch spread over its ``rows`` network rows (None where there is no camera
        file, so the branches are skipped).  A model without ``camera_input`` refuses a camera file."""
        if camera is None or not bool((camera > 0).any()):
            return None
        if not self.camera_input:
            raise ValueError("this denoiser has no camera branch (it was trained without camera_input)")
        return camera.float().repeat_interleave(rows // camera.shape[0])  # opponent rows: 3 per image

    def _camera(self, i: int, h, camera):
        """Features after mixing point ``i`` plus, on camera files (``camera`` rows 1), its camera branch."""
        if camera is None:
            return h
        return h + camera.to(h.dtype).view(-1, 1, 1, 1) * self.camera[i](h)

    def posterior(self, x, e3):
        q = self.q_in(F.pixel_unshuffle(x, 2))
        mu, logvar = self.q_head(torch.cat([q, e3], 1)).chunk(2, 1)
        return mu, logvar.clamp(-12.0, 6.0)

    def decode(self, z, skips, y, camera=None):
        """Decoder mean: ``y`` plus the predicted residual (``camera`` as for :meth:`context`)."""
        e1, e2, e3 = skips
        h = self.d3(torch.cat([e3, z], 1))
        h = self._mix(3, self.d2(torch.cat([F.relu(F.pixel_shuffle(self.up2(h), 2)), e2], 1)))
        h = self._deep(0, self._camera(3, h, camera))
        h = self._mix(4, self.d1(torch.cat([F.relu(F.pixel_shuffle(self.up1(h), 2)), e1], 1)))
        h = self._deep(1, self._camera(4, h, camera))
        return y + F.pixel_shuffle(self.out(h), 2)

    def _deep(self, level: int, h):
        """``h`` through the ``decoder_blocks`` residual blocks of decoder level ``level`` (0: 1/4, 1: 1/2)."""
        n = self.decoder_blocks
        for block in self.deep[level * n : (level + 1) * n]:
            h = h + block(h)
        return h

    def _mix(self, i: int, h):
        """Features after mixing point ``i`` (0-2 in the context, 3-4 in the decoder): unchanged here."""
        return h

    def _rows(self, x, y, sigma):
        """The (clean, noisy, level) rows the network runs on: the images themselves here."""
        return x, y, sigma

    # ------------------------------------------------------------------ training objective
    def simulate(self, x, sigma=None):
        """Noisy copies of clean ``x`` (Gaussian; ``clip_prob`` of them clipped to 8 bits; ``camera_prob`` of
        them camera files), their levels ((B,), or level maps (B, 1, H, W) when a camera file is among them) and
        the camera flags (B,), drawn from torch's RNG."""
        drawn = sigma is None  # camera files only where the levels are drawn here too (training)
        if drawn:
            lo, hi = self.sigma_range
            sigma = lo + (hi - lo) * torch.rand(x.shape[0], device=x.device)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        noise = torch.randn_like(x)
        if self.corr_prob > 0:
            lo, hi = self.corr_width
            corr = (torch.rand(x.shape[0], device=x.device) < self.corr_prob).view(-1, 1, 1, 1)
            noise = torch.where(corr, correlated(noise, lo + (hi - lo) * float(torch.rand(()))), noise)
        y = x + noise * (sigma / 255.0).view(-1, 1, 1, 1)
        if self.clip_prob > 0:
            clip = (torch.rand(x.shape[0], device=x.device) < self.clip_prob).view(-1, 1, 1, 1)
            y = torch.where(clip, (y.clamp(0, 1) * 255).round() / 255, y)
        cam = torch.zeros(x.shape[0], device=x.device)
        if self.camera_prob > 0 and drawn:
            cam = (torch.rand(x.shape[0], device=x.device) < self.camera_prob).to(x.dtype)
            if bool(cam.any()):
                y, sigma = self._camera_files(x, y, sigma, cam.bool())
        return y, sigma, cam

    @staticmethod
    def _camera_files(x, y, sigma, which):
        """``y`` with the examples ``which`` replaced by camera files of their clean images, and the level maps
        (B, 1, H, W) of the batch: the blind estimator's for those, the constant level for the others."""
        from .. import degrade

        smap = sigma.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:]).clone()
        y = y.clone()
        for i in torch.nonzero(which).flatten().tolist():
            a = x[i].detach().float().cpu().permute(1, 2, 0).squeeze(-1).numpy().astype(np.float64)
            f = degrade.camera(a, int(torch.randint(2**31 - 1, ())))
            level, _, shape = degrade.blind_level(f)
            t = torch.from_numpy(f.astype(np.float32))
            y[i] = (t[None] if t.ndim == 2 else t.permute(2, 0, 1)).to(y)
            smap[i, 0] = torch.from_numpy((level * shape).astype(np.float32)).to(smap)
        return y, smap

    def forward(self, x, sigma=None):
        """The conditional ELBO's terms on clean ``x`` (noise simulated here)."""
        y, sigma, cam = self.simulate(x, sigma)
        x, y, sigma = self._rows(x, y, sigma)
        cam = self.camera_rows(cam, y.shape[0])
        skips, (pm, plv) = self.context(y, sigma, cam)
        qm, qlv = self.posterior(x, skips[2])
        z = qm + torch.randn_like(qm) * (0.5 * qlv).exp()
        mean = self.decode(z, skips, y, cam)
        ls = self.log_scale(sigma)
        npix = x[0].numel()
        sq = (x - mean).pow(2).flatten(1).sum(1)
        log_px = -0.5 * sq * torch.exp(-2 * ls) - npix * (ls + 0.5 * LOG2PI)
        kl_c = gaussian_kl(qm, qlv, pm, plv).flatten(2).sum(2)
        kl_train = kl_c.clamp_min(self.free_bits * qm[0, 0].numel()).sum(1) if self.free_bits else kl_c.sum(1)
        return {
            "x_hat": mean,
            "log_px": log_px,
            "kl": kl_c.sum(1),
            "kl_train": kl_train,
            "log_scale": ls,
            "sigma": sigma,
            "noisy": y,
            "mse": sq / npix,
        }

    def loss(self, x, out, kl_weight: float = 1.0):
        w = (out["log_scale"].detach().exp() / self.scale_ref) ** 2
        per = -(out["log_px"] - kl_weight * out.get("kl_train", out["kl"]))
        elbo = out["log_px"] - out["kl"]
        mse = out["mse"]
        return {
            "loss": (w * per).mean(),
            "elbo": elbo.mean().detach(),
            "rec": mse.mean().detach(),
            "kl": out["kl"].mean().detach(),
            "psnr": (-10 * torch.log10(mse.clamp_min(1e-10))).mean().detach(),
        }

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def denoise(self, y, sigma, samples: int = 0, temperature: float = 1.0, generator=None, camera: bool = False):
        """Estimate the clean image from noisy ``y`` (B, C, H, W; sizes multiples of 8) at ``sigma``: a level, one
        per example, or a per-pixel map (B, 1, H, W); ``camera``: the noise is a camera file's (``camera_input``).

        Returns ``(mean, std, draws)``: the estimate, the per-pixel std (spread of the
        draws combined with the decoder scale), and the list of individual draws
        (empty for ``samples=0``, the one-pass estimate with z = prior mean)."""
        sigma = self.as_level(sigma, y)
        cam = self.camera_rows(torch.full((y.shape[0],), float(camera), device=y.device), y.shape[0])
        skips, (pm, plv) = self.context(y, sigma, cam)
        scale2 = torch.exp(2 * self.log_scale(sigma)).view(-1, 1, 1, 1)
        if samples <= 0:
            mean = self.decode(pm, skips, y, cam)
            return mean, scale2.sqrt().expand_as(mean).clone(), []
        mean, var, draws = prior_draws(
            lambda z: self.decode(z, skips, y, cam), pm, plv, samples, temperature, generator
        )
        return mean, (var + scale2).sqrt(), draws

    @torch.no_grad()
    def latent_stats(self, x, sigma):
        """KL per example and per latent channel (B, L) on clean ``x`` at levels ``sigma``: for active units."""
        y, sigma, cam = self.simulate(x, sigma)
        x, y, sigma = self._rows(x, y, sigma)
        skips, (pm, plv) = self.context(y, sigma, self.camera_rows(cam, y.shape[0]))
        qm, qlv = self.posterior(x, skips[2])
        kl = gaussian_kl(qm, qlv, pm, plv)
        return kl.mean((2, 3)), math.prod(kl.shape[2:])


# CBM3D's decorrelating colour transform: orthonormal, so white noise of level s is white noise of level s in
# each opponent channel.  Each channel is scaled and shifted into [0, 1] for a gray network (its level alike).
OPPONENT = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]]) / np.sqrt([[3.0], [2.0], [6.0]])
OPPONENT_SCALE = np.array([1 / np.sqrt(3), 0.5, np.sqrt(6) / 4])
OPPONENT_SHIFT = np.array([0.0, 0.5, 0.5])


class OpponentDenoisingVAE(DenoisingVAE):
    """Colour denoising VAE grown out of the gray one.

    The gray network runs on the three opponent channels of an RGB image (luminance and two colour
    differences, CBM3D's transform, each scaled into [0, 1]) as three rows sharing its weights, and learned
    1x1 convolutions across the three rows' features at five points let each channel read the others: the
    colour differences see the luminance's edges, as CBM3D groups colour by luminance.  The mixing starts at
    zero, so a model initialised from a gray ``denoise-vae`` (``init_from``) starts as exactly the
    opponent-channel path and training on colour photos adds to it; the mixing biases tell the shared network
    which channel a row is.  Noise is simulated in RGB (clipped to 8 bits there, as files hold it).  Training
    weighs each row as the gray model weighs an example; the reported ELBO is per RGB image (the rows' terms
    plus the transform's log-Jacobian).  It takes and returns RGB (``channels`` 3).
    """

    MIX_WIDTH = (0, 1, 2, 1, 0)  # which width (1/2, 1/4, 1/8 resolution) each mixing point carries

    def __init__(self, widths=(48, 96, 192), latent_channels: int = 8, **kw):
        super().__init__(1, widths, latent_channels, **kw)
        self.channels = 3
        self.mix = nn.ModuleList(nn.Conv2d(3 * self.widths[i], 3 * self.widths[i], 1) for i in self.MIX_WIDTH)
        for m in self.mix:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        fwd = OPPONENT * OPPONENT_SCALE[:, None]
        self.register_buffer("fwd", torch.tensor(fwd, dtype=torch.float32), persistent=False)
        self.register_buffer("inv", torch.tensor(np.linalg.inv(fwd), dtype=torch.float32), persistent=False)
        self.register_buffer("shift", torch.tensor(OPPONENT_SHIFT, dtype=torch.float32), persistent=False)
        self.log_det = float(np.log(OPPONENT_SCALE).sum())  # per RGB pixel (OPPONENT itself is orthonormal)

    def _check(self, y):
        if y.dim() != 4 or y.shape[1] != 1 or y.shape[0] % 3:
            raise ValueError(f"expected (3B, 1, H, W) opponent rows, got {tuple(y.shape)}")
        if y.shape[-1] % self.STRIDE or y.shape[-2] % self.STRIDE:
            raise ValueError(f"height and width must be multiples of {self.STRIDE}, got {tuple(y.shape[-2:])}")

    def _mix(self, i, h):
        b, c, hh, ww = h.shape
        h3 = h.reshape(b // 3, 3 * c, hh, ww)
        return (h3 + self.mix[i](h3)).reshape(b, c, hh, ww)

    def to_rows(self, x):
        """RGB (B, 3, H, W) -> scaled opponent rows (3B, 1, H, W); row 3b + k is channel k of image b."""
        o = torch.einsum("kc,bchw->bkhw", self.fwd.to(x.dtype), x) + self.shift.to(x.dtype).view(1, 3, 1, 1)
        return o.reshape(-1, 1, *x.shape[-2:])

    def from_rows(self, o, shift: bool = True):
        """The inverse of :meth:`to_rows` (``shift=False`` for differences, which carry no offset)."""
        o = o.reshape(-1, 3, *o.shape[-2:])
        if shift:
            o = o - self.shift.to(o.dtype).view(1, 3, 1, 1)
        return torch.einsum("ck,bkhw->bchw", self.inv.to(o.dtype), o)

    def row_sigma(self, sigma):
        """Per-row levels (3B,) for RGB levels (B,), or row maps (3B, 1, H, W) for maps (B, 1, H, W) (one level
        in all three channels): the level scaled as each opponent channel is."""
        scale = torch.as_tensor(OPPONENT_SCALE, dtype=sigma.dtype, device=sigma.device)
        if sigma.dim() == 4:
            return (sigma * scale.view(1, 3, 1, 1)).reshape(-1, 1, *sigma.shape[-2:])
        return (sigma.reshape(-1, 1) * scale).reshape(-1)

    def _rows(self, x, y, sigma):
        return self.to_rows(x), self.to_rows(y), self.row_sigma(sigma)

    def loss(self, x, out, kl_weight: float = 1.0):
        res = super().loss(x, out, kl_weight)
        elbo = (out["log_px"] - out["kl"]).view(-1, 3).sum(1) + x[0, 0].numel() * self.log_det
        mse = (self.from_rows(out["x_hat"]) - x).pow(2).flatten(1).mean(1)
        psnr = (-10 * torch.log10(mse.clamp_min(1e-10))).mean()
        return res | {"elbo": elbo.mean().detach(), "rec": mse.mean().detach(), "psnr": psnr.detach()}

    @torch.no_grad()
    def denoise(self, y, sigma, samples: int = 0, temperature: float = 1.0, generator=None, camera: bool = False):
        """As :meth:`DenoisingVAE.denoise`, on RGB ``y`` (B, 3, H, W) at RGB levels ``sigma``."""
        if y.dim() != 4 or y.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) RGB images, got {tuple(y.shape)}")
        sigma = self.as_level(sigma, y)
        rows = self.to_rows(y), self.row_sigma(sigma)
        mean, std, draws = super().denoise(*rows, samples, temperature, generator, camera=camera)
        # rows are independent given the noisy image: variances add through the inverse transform's squares
        var = torch.einsum("ck,bkhw->bchw", self.inv.to(std.dtype) ** 2, std.reshape(-1, 3, *std.shape[-2:]) ** 2)
        return self.from_rows(mean), var.sqrt(), [self.from_rows(d) for d in draws]


class SelfSupervisedDenoisingVAE(DenoisingVAE):
    """The conditional VAE denoiser fitted on **noisy images only** (recorrupted-to-recorrupted, Pang et al. 2021).

    A noisy training patch ``y = x + e`` (e ~ N(0, s0²), ``s0 = noisy_sigma``, known or estimated) is split,
    with fresh noise ``n ~ N(0, 1)`` and ``a ~ U(alpha_range)`` per example, into an input and a target::

        y_in  = y + a·s0·n        = x + (e + a·s0·n)      noise level s0·sqrt(1 + a²)
        y_out = y - (s0 / a)·n    = x + (e - (s0/a)·n)    noise level s0·sqrt(1 + 1/a²)

    The two noises are jointly Gaussian with covariance s0² - s0² = 0: independent.  So the target is the
    clean image seen through an **explicit Gaussian noise model** of known variance, independent of the
    input, and the likelihood of the conditional VAE is that noise model convolved with the decoder's own
    Gaussian: ``p(y_out | z, y_in) = N(decoder mean, scale² + s0²(1 + 1/a²))``.  Its maximiser over the
    decoder mean is E[x | y_in]: the model learns to denoise although it never sees a clean pixel.  The
    prior p(z | y_in), the posterior q(z | y_out, y_in) and the decoder are those of :class:`DenoisingVAE`,
    which is also given the input's level ``s0·sqrt(1 + a²)`` as its noise map.

    At inference (``test_recorruptions=0``) the noisy image itself goes in, with the noise map at the
    nearest level the network was trained on (``s0·sqrt(1 + a²)`` for a in ``alpha_range``; the default
    a = 1 gives one level, sqrt(2)·s0): the input is *less* noisy than the training inputs, so the model
    errs on the side of smoothing.  With ``test_recorruptions=K`` the estimate instead averages K inputs
    recorrupted at ``test_alpha`` (the R2R paper's test rule); ``test_flips`` gives pass i the i-th of the
    8 rotations/flips of the image (undone on the output: a self-ensemble at no extra cost).  The rule in
    use was chosen on noisy train400 images (docs/decisions.md).

    A small ``a`` makes the input close to the noisy image but the target very noisy (its variance grows
    as 1/a²): in a small trial on rendered images, a = 1 learned far faster than a drawn from [0.2, 1],
    which barely moved in a few hundred steps.
    """

    def __init__(
        self,
        channels: int = 1,
        widths=(48, 96, 192),
        latent_channels: int = 8,
        noisy_sigma: float = 25.0,
        alpha_range=(1.0, 1.0),
        free_bits: float = 0.05,
        test_recorruptions: int = 0,
        test_alpha: float = 1.0,
        test_flips: bool = False,
        scale_ref: float = 0.03,
    ):
        s0 = float(noisy_sigma)
        if not 0 < s0 <= 255:
            raise ValueError(f"noisy_sigma must lie in (0, 255], not {s0}")
        lo, hi = float(alpha_range[0]), float(alpha_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"alpha_range must satisfy 0 < lo <= hi, not {alpha_range}")
        super().__init__(
            channels,
            widths,
            latent_channels,
            sigma_range=(s0, s0 * math.sqrt(1 + hi * hi)),
            scale_ref=scale_ref,
            free_bits=free_bits,
        )
        self.noisy_sigma = s0
        self.alpha_range = (lo, hi)
        self.test_recorruptions = int(test_recorruptions)
        self.test_alpha = float(test_alpha)
        self.test_flips = bool(test_flips)

    @property
    def noise(self) -> dict:
        """The fitted noise model (what ``vaekit denoise --model RUN`` uses instead of the noise options)."""
        return {"noise": "gaussian", "sigma": self.noisy_sigma}

    def recorrupt(self, y, alpha=None, generator=None):
        """(input, target, input level (B,), target noise variance (B,)) for noisy ``y`` at ``noisy_sigma``."""
        B = y.shape[0]
        if alpha is None:
            lo, hi = self.alpha_range
            alpha = lo + (hi - lo) * torch.rand(B, generator=generator, dtype=y.dtype, device=y.device)
        alpha = torch.as_tensor(alpha, dtype=y.dtype, device=y.device).expand(B)
        s0 = self.noisy_sigma / 255.0
        n = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
        a = alpha.view(-1, 1, 1, 1)
        y_in = y + a * s0 * n
        y_out = y - (s0 / a) * n
        return y_in, y_out, self.noisy_sigma * torch.sqrt(1 + alpha * alpha), (s0 / alpha) ** 2 * (1 + alpha * alpha)

    def forward(self, y, sigma=None):
        """The ELBO's terms for a batch of *noisy* patches ``y`` (``sigma`` is ignored: the level is fixed)."""
        y_in, y_out, lev, var_noise = self.recorrupt(y)
        skips, (pm, plv) = self.context(y_in, lev)
        qm, qlv = self.posterior(y_out, skips[2])
        z = qm + torch.randn_like(qm) * (0.5 * qlv).exp()
        mean = self.decode(z, skips, y_in)
        ls = self.log_scale(lev)
        var = torch.exp(2 * ls) + var_noise  # decoder scale² + the target's noise (s0²(1 + 1/a²))
        npix = y[0].numel()
        sq = (y_out - mean).pow(2).flatten(1).sum(1)
        log_py = -0.5 * sq / var - 0.5 * npix * (torch.log(var) + LOG2PI)
        kl_c = gaussian_kl(qm, qlv, pm, plv).flatten(2).sum(2)
        kl_train = kl_c.clamp_min(self.free_bits * qm[0, 0].numel()).sum(1) if self.free_bits else kl_c.sum(1)
        out = {
            "x_hat": mean,
            "log_px": log_py,
            "kl": kl_c.sum(1),
            "kl_train": kl_train,
            "log_scale": ls,
            "sigma": lev,
            "noisy": y_in,
            "mse": sq / npix,
        }
        return out

    def loss(self, x, out, kl_weight: float = 1.0):
        # the plain ELBO: the target's noise variance already weighs each example (no reweighting by level)
        per = -(out["log_px"] - kl_weight * out["kl_train"])
        elbo = out["log_px"] - out["kl"]
        res = {
            "loss": per.mean(),
            "elbo": elbo.mean().detach(),
            "rec": out["mse"].mean().detach(),
            "kl": out["kl"].mean().detach(),
            "psnr": (-10 * torch.log10(out["mse"].clamp_min(1e-10))).mean().detach(),
        }
        return res

    @torch.no_grad()
    def denoise(self, y, sigma=None, samples: int = 0, temperature: float = 1.0, generator=None):
        """As :meth:`DenoisingVAE.denoise`, at the fitted level when ``sigma`` is None.  With
        ``test_recorruptions`` K > 0 every pass (K for one-pass, ``samples`` otherwise, at least K) takes a
        freshly recorrupted input at ``test_alpha``."""
        s = self.noisy_sigma if sigma is None else float(sigma)
        K = self.test_recorruptions
        if K <= 0:
            lo, hi = (s * math.sqrt(1 + a * a) for a in self.alpha_range)
            return super().denoise(
                y, min(max(s, lo), hi), samples=samples, temperature=temperature, generator=generator
            )
        a = self.test_alpha
        lev = s * math.sqrt(1 + a * a)
        n_pass = max(int(samples), K)
        draws, acc, acc2 = [], 0.0, 0.0
        for i in range(n_pass):
            y_in = y + a * (s / 255.0) * torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
            # pass i: i % 4 quarter turns of the image, left-right flipped first in passes 4-7 of every 8
            r = (i % 4 if i % 8 < 4 else 4 + (-i) % 4) if self.test_flips else 0
            mean, std, d = super().denoise(
                dihedral(y_in, r), lev, samples=1 if samples else 0, temperature=temperature, generator=generator
            )
            mean, d = dihedral(mean, r, inverse=True), [dihedral(t, r, inverse=True) for t in d]
            acc = acc + mean
            acc2 = acc2 + mean * mean
            draws += d
        mean = acc / n_pass
        spread = (acc2 / n_pass - mean * mean).clamp_min(0)
        scale2 = torch.exp(2 * self.log_scale(torch.full((y.shape[0],), lev))).view(-1, 1, 1, 1)
        return mean, (spread + scale2).sqrt(), (draws if samples else [])
