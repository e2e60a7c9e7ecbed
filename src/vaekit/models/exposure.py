"""The exposure model and an amortized posterior over its parameters.

An observed photo is ``y = clip(gain * cast * x, 0, 1) ** gamma`` of a well-exposed ``x`` (``degrade``), with
theta = (log gain, log gamma, log cast_r, log cast_g) and the casts' logs summing to 0 (a common cast factor is
a gain).  ``ExposurePosterior`` is the inference half of a VAE whose decoder is that known degradation: it maps
``y`` to q(theta | y) = p_id * delta(0) + (1 - p_id) * N(mu, diag sigma^2), an explicit "no change" hypothesis
beside a Gaussian over corrections.  It is fitted by simulation: clean photo crops, parameters drawn from the
prior below (a third untouched, the rest mild or strong), ``-log q(theta_true | y)`` minimised.  Seeing photos
as they come teaches it what a photo that needs no correction looks like.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# the prior drawn in training: (probability, gain range, gamma range, cast range)
PRIOR = {
    "identity": 0.3,
    "mild": (0.35, (0.75, 1.33), (0.8, 1.25), (0.9, 1.1)),
    "strong": (0.35, (0.3, 3.0), (0.5, 2.0), (0.7, 1.3)),
}
GRAY_FRACTION = 0.1  # crops shown in gray (no cast), so gray inputs are in the model's domain


def params_to_theta(gain: float, gamma: float, cast=(1.0, 1.0, 1.0)) -> list[float]:
    """theta for the given parameters; a common factor of the cast moves into the gain."""
    lc = [math.log(c) for c in cast]
    m = sum(lc) / len(lc)
    return [math.log(gain) + m, math.log(gamma), lc[0] - m, lc[1] - m]


def theta_to_params(theta) -> dict:
    """{"gain", "gamma", "cast"} of theta (casts multiply to 1)."""
    lg, lgam, lr, lgr = (float(v) for v in theta)
    return {"gain": math.exp(lg), "gamma": math.exp(lgam), "cast": [math.exp(lr), math.exp(lgr), math.exp(-lr - lgr)]}


def _cast(theta: torch.Tensor, channels: int) -> torch.Tensor:
    """Per-channel log cast (B, C, 1, 1); gray images have none."""
    if channels == 1:
        return torch.zeros(theta.shape[0], 1, 1, 1, dtype=theta.dtype, device=theta.device)
    lc = torch.stack([theta[:, 2], theta[:, 3], -theta[:, 2] - theta[:, 3]], 1)
    return lc.view(-1, 3, 1, 1)


def degrade(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The exposure model on a batch (B, C, H, W) in [0, 1]: clip(gain * cast * x, 0, 1) ** gamma."""
    scale = torch.exp(theta[:, 0].view(-1, 1, 1, 1) + _cast(theta, x.shape[1]))
    return (x.clamp(0, 1) * scale).clamp(0, 1) ** torch.exp(theta[:, 1]).view(-1, 1, 1, 1)


def correct(y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`degrade` (clipped to [0, 1]): y ** (1 / gamma) / (gain * cast)."""
    scale = torch.exp(-theta[:, 0].view(-1, 1, 1, 1) - _cast(theta, y.shape[1]))
    return (y.clamp(0, 1) ** torch.exp(-theta[:, 1]).view(-1, 1, 1, 1) * scale).clamp(0, 1)


def draw_theta(n: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(theta (n, 4), identity flags (n,)) from :data:`PRIOR`."""

    def u(lo_hi, shape=(n,)):
        lo, hi = math.log(lo_hi[0]), math.log(lo_hi[1])
        return lo + (hi - lo) * torch.rand(shape, generator=generator)

    kind = torch.rand(n, generator=generator)
    p_id, (p_mild, *mild), (_, *strong) = PRIOR["identity"], PRIOR["mild"], PRIOR["strong"]
    rows = []
    for spec in (mild, strong):
        lc = u(spec[2], (n, 3))
        lc = lc - lc.mean(1, keepdim=True)
        rows.append(torch.stack([u(spec[0]), u(spec[1]), lc[:, 0], lc[:, 1]], 1))
    identity = kind < p_id
    theta = torch.where((kind < p_id + p_mild)[:, None], rows[0], rows[1])
    theta[identity] = 0.0
    return theta, identity


class ExposurePosterior(nn.Module):
    """q(theta | y) from a downscaled photo: a strided CNN (mean- and max-pooled) beside each channel's intensity
    quantiles, then an MLP to the no-change logit, mu and log sigma^2.  Any size; RGB (gray repeated)."""

    def __init__(self, widths=(24, 48, 64, 96), quantiles: int = 16, hidden: int = 96):
        super().__init__()
        layers, cin = [], 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, stride=2, padding=1), nn.GELU()]
            cin = w
        self.features = nn.Sequential(*layers)
        self.register_buffer("levels", torch.linspace(0.01, 0.99, quantiles), persistent=False)
        self.head = nn.Sequential(
            nn.Linear(2 * cin + 3 * quantiles, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU()
        )
        self.out = nn.Linear(hidden, 1 + 4 + 4)

    def posterior(self, y: torch.Tensor) -> dict:
        """{"logit_id", "mu", "logvar"} for a batch of observed images (B, 1 or 3, H, W) in [0, 1]."""
        if y.shape[1] == 1:
            y = y.expand(-1, 3, -1, -1)
        f = self.features(y * 2 - 1)
        q = torch.quantile(y.flatten(2), self.levels, dim=2).permute(1, 2, 0).flatten(1)  # (B, 3 * quantiles)
        h = self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3)), q * 2 - 1], 1))
        o = self.out(h)
        return {"logit_id": o[:, 0], "mu": o[:, 1:5], "logvar": o[:, 5:].clamp(-12, 4)}

    def forward(self, x: torch.Tensor) -> dict:
        """Training: degrade the clean crops ``x`` with parameters drawn from the prior (8-bit rounded, a tenth
        in gray) and infer them back."""
        n = x.shape[0]
        gray = torch.rand(n) < GRAY_FRACTION
        if x.shape[1] == 3 and gray.any():
            lum = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None].expand(-1, 3, -1, -1)
            x = torch.where(gray.view(-1, 1, 1, 1).to(x.device), lum, x)
        theta, identity = draw_theta(n)
        theta[gray, 2:] = 0.0
        theta, identity = theta.to(x.device), identity.to(x.device)
        y = torch.round(degrade(x, theta) * 255) / 255
        return {"theta": theta, "identity": identity, "gray": gray.to(x.device), **self.posterior(y)}

    def loss(self, x, out, kl_weight: float = 1.0) -> dict:
        """-log q(theta_true | y) per example: the no-change term, plus the Gaussian one for corrected crops (gray
        crops score gain and gamma only).  "elbo" is its negative (higher is better), as the training loop reads."""
        ident = out["identity"].float()
        bce = F.binary_cross_entropy_with_logits(out["logit_id"], ident, reduction="none")
        nll = 0.5 * (
            math.log(2 * math.pi) + out["logvar"] + (out["theta"] - out["mu"]) ** 2 * torch.exp(-out["logvar"])
        )
        used = torch.ones_like(nll)
        used[out["gray"], 2:] = 0.0
        nll = (nll * used).sum(1) * (1 - ident)
        total = bce + nll
        return {
            "loss": total.mean(),
            "elbo": -total.mean(),
            "rec": nll.mean(),
            "kl": torch.zeros((), device=x.device),
            "no_change_bce": bce.mean(),
        }
