"""The compression VAE family: factorized prior (Ballé 2017), scale
hyperprior (Ballé 2018) and mean-scale hyperprior (Minnen 2018), with GDN,
and the mean-scale hyperprior with a checkerboard context (He et al. 2021).

One model codes every quality: per-quality *gain* vectors (Cui et al. 2021)
scale the latent before quantization (``y_g = y * gain[q]``) and an inverse
gain rescales it before synthesis; training draws a quality per example and
weighs its distortion by that quality's lambda.

As a VAE: ``g_a`` is the encoder (a uniform posterior of width 1 around
``y_g``), ``g_s`` the decoder, and the rate is the KL term (Ballé 2017).

Decoding never depends on float arithmetic that can differ between machines:
``y_hat`` and ``z_hat`` are integers (plus integer means in 1/256 units), the
hyper-synthesis runs on integers in an exact fixed-point path
(``IntegerHyperSynthesis``), as do the checkerboard context and the entropy
parameters, and the probability tables are integer tables stored with the
weights (``update()``).  Only ``g_s`` and the post-filter -- after the
latents are known -- run in float.

``post`` (a width; 0 = none) adds a post-filter to the decoder: a small
residual CNN at half resolution that reads the synthesis transform's last
features and its image, and the quality, and corrects the image.  It trains
on the transforms' output with that output held fixed (so the transforms keep
their own rate-distortion objective), for the mean PSNR over qualities: with
one synthesis for every rate, the lambda-weighted loss leaves the low
qualities least served.  The latents and their rate do not change.
With ``post_joint`` (training only) the transforms then learn the rate-distortion
cost of the filtered image, the filter held fixed for them, so that the two
share the work; the filter keeps its own objective.

``strip`` (latent units; 0 = the whole latent at once) makes the decoder run the float synthesis in strips
across the latent's longer side, at most that many units each, with ``STRIP_HALO`` units of overlap on either
side (more than the synthesis and the post-filter see), each on one thread: strips decode side by side on
several threads and the pixels still depend on the file alone.  It is part of a model's definition: a model
without it decodes the whole latent in one call, as it always did.

``refine`` is an encoder-side search (the CLI's ``--effort``): it moves one
image's latents and hyper-latents against that image's own rate-distortion cost
before coding; the format and the decoder do not change.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from ..entropy import coder as C
from ..entropy.models import (
    SCALE_FRAC_BITS,
    SCALE_LEVELS,
    SCALE_MAX,
    SCALE_MIN,
    SCALE_STEP,
    SCALE_T0,
    FactorizedDensity,
    gaussian_likelihood,
    gaussian_tables,
    lower_bound,
)
from ..errors import VaekitError

DEFAULT_LAMBDAS = (0.0013, 0.0025, 0.0048, 0.0093, 0.018, 0.035, 0.067, 0.13)
PAD = 64  # g_a (16) x h_a (4): hyperprior inputs are padded to a multiple of this
REFINE_LR = 0.01  # Adam's step on the gained latents (quantizer units), chosen on photos-val
REFINE_TAU = (0.5, 0.05)  # the soft rounding's temperature, from .. to, geometric over the steps
REFINE_CHECK = 10  # steps between real codings of the candidate
STRIP_HALO = 4  # latent units (64 pixels) of overlap on each side of a synthesis strip


def soft_round(v, tau: float, generator=None):
    """Stochastic Gumbel annealing's relaxed rounding (Yang, Bamler & Mandt 2020): a sample of a soft choice
    between floor(v) and ceil(v), weighted by closeness; it becomes hard rounding as ``tau`` goes to 0."""
    fl = torch.floor(v)
    r = (v - fl).clamp(1e-5, 1 - 1e-5)
    u = torch.rand(v.shape, generator=generator, dtype=v.dtype).clamp(1e-6, 1 - 1e-6).to(v.device)
    logistic = torch.log(u) - torch.log1p(-u)  # the difference of the two Gumbel draws
    return fl + torch.sigmoid(((torch.atanh(r) - torch.atanh(1 - r)) / tau + logistic) / tau)


class GDN(nn.Module):
    """Generalized divisive normalization: y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2) (inverse: times)."""

    def __init__(self, ch: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = inverse
        self.pedestal = 2.0**-36
        self.beta_bound = (beta_min + self.pedestal) ** 0.5
        self.gamma_bound = self.pedestal**0.5
        self.beta = nn.Parameter(torch.sqrt(torch.ones(ch) + self.pedestal))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(ch) + self.pedestal))

    def forward(self, x):
        beta = lower_bound(self.beta, self.beta_bound) ** 2 - self.pedestal
        gamma = lower_bound(self.gamma, self.gamma_bound) ** 2 - self.pedestal
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def conv(cin, cout, k=5, s=2):
    return nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)


def deconv(cin, cout, k=5, s=2):
    return nn.ConvTranspose2d(cin, cout, k, stride=s, padding=k // 2, output_padding=s - 1)


class IntegerHyperSynthesis:
    """Exact fixed-point execution of a conv/deconv/ReLU stack on integer inputs.

    Weights are rounded to integers with ``w`` fractional bits per layer (14
    significant bits), activations carry ``A = 8`` fractional bits and are
    clamped to +-2**24.  Each layer is computed in float64 on integer values:
    the bound sum|W| * 2**24 + |b| < 2**53 (checked when built) makes every
    product and partial sum exact, so the result does not depend on the
    summation order, the thread count or the conv algorithm.  Results are
    rounded back to ``A`` fractional bits with floor((acc + half) / 2**shift).
    """

    ACT_BITS = SCALE_FRAC_BITS
    ACT_MAX = 2.0**24

    def __init__(self, layers: list[dict]):
        self.layers = layers

    @classmethod
    def from_float(cls, seq, in_bits: int = 0) -> "IntegerHyperSynthesis":
        """``seq``: conv/deconv/ReLU modules; ``in_bits``: fractional bits of the integer input."""
        layers, a = [], in_bits  # a: fractional bits of the current activation
        for m in seq:
            if isinstance(m, nn.ReLU):
                layers.append({"kind": "relu"})
                continue
            kind = "deconv" if isinstance(m, nn.ConvTranspose2d) else "conv"
            w = m.weight.detach().cpu().double()
            wmax = float(w.abs().max())
            w_bits = 14 - math.frexp(wmax)[1] if wmax > 0 else 14
            w_int = torch.round(w * 2.0**w_bits)
            b_int = torch.round(m.bias.detach().cpu().double() * 2.0 ** (a + w_bits))
            fan = w_int.abs().sum(dim=(0, 2, 3)) if kind == "deconv" else w_int.abs().sum(dim=(1, 2, 3))
            if float(fan.max()) * cls.ACT_MAX + float(b_int.abs().max()) >= 2.0**53:
                raise VaekitError("hyper-synthesis weights are too large for the exact integer path")
            shift = a + w_bits - cls.ACT_BITS
            layers.append(
                {
                    "kind": kind,
                    "weight": w_int.to(torch.int32),
                    "bias": b_int.to(torch.int64),
                    "shift": shift,
                    "stride": m.stride[0],
                    "padding": m.padding[0],
                    "output_padding": getattr(m, "output_padding", (0,))[0],
                }
            )
            a = cls.ACT_BITS
        return cls(layers)

    def __call__(self, z_int: torch.Tensor) -> torch.Tensor:
        """z_int: (B, C, h, w) integers (``in_bits`` fractional bits) -> output in 1/256 units, int64."""
        v = z_int.detach().to("cpu", torch.float64).clamp(-self.ACT_MAX, self.ACT_MAX)
        for L in self.layers:
            if L["kind"] == "relu":
                v = v.clamp_min(0)
                continue
            w, b = L["weight"].double(), L["bias"].double()
            if L["kind"] == "conv":
                v = F.conv2d(v, w, b, stride=L["stride"], padding=L["padding"])
            else:
                v = F.conv_transpose2d(
                    v, w, b, stride=L["stride"], padding=L["padding"], output_padding=L["output_padding"]
                )
            s = L["shift"]
            v = torch.floor((v + 2.0 ** (s - 1)) / 2.0**s) if s > 0 else v * 2.0 ** (-s)
            v = v.clamp(-self.ACT_MAX, self.ACT_MAX)
        return v.to(torch.int64)


def anchors(h: int, w: int) -> torch.Tensor:
    """The checkerboard's first half: latent positions (i, j) with i + j even, as a (1, 1, h, w) bool mask."""
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((i + j) % 2 == 0)[None, None]


class CheckerboardContext(nn.Module):
    """A 5x5 convolution that keeps only the taps a second-half position can see: the 12 offsets with an odd
    sum, which land on anchors (the other 13 would read zeros).  Storing only those halves its weights."""

    TAPS = [(i, j) for i in range(5) for j in range(5) if (i + j) % 2]

    def __init__(self, cin: int, cout: int):
        super().__init__()
        bound = 1 / math.sqrt(cin * len(self.TAPS))
        self.weight = nn.Parameter(torch.empty(cout, cin, len(self.TAPS)).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(cout).uniform_(-bound, bound))

    def kernel(self):
        k = self.weight.new_zeros(*self.weight.shape[:2], 25)
        k[:, :, [5 * i + j for i, j in self.TAPS]] = self.weight
        return k.view(*self.weight.shape[:2], 5, 5)

    def forward(self, x):
        return F.conv2d(x, self.kernel(), self.bias, padding=2)

    def as_conv(self) -> nn.Conv2d:
        """The same map as a plain convolution (what the exact integer path is built from)."""
        c = nn.Conv2d(self.weight.shape[1], self.weight.shape[0], 5, padding=2)
        with torch.no_grad():
            c.weight.copy_(self.kernel())
            c.bias.copy_(self.bias)
        return c


class PostFilter(nn.Module):
    """A residual CNN over the synthesis transform's last features (``N`` channels at half resolution) and its
    image (pixel-unshuffled to the same grid), with a learned bias per quality; its last layer starts at zero, so
    a model that gains one starts as the model without it."""

    SQUEEZE = 16  # the features pass through a 1x1 convolution to this many channels: the decode time is the budget

    def __init__(self, N: int, qualities: int, width: int, channels: int = 3, blocks: int = 4):
        super().__init__()
        self.squeeze = nn.Conv2d(N, self.SQUEEZE, 1)
        self.inp = nn.Conv2d(self.SQUEEZE + 4 * channels, width, 3, padding=1)
        self.quality_bias = nn.Embedding(qualities, width)
        nn.init.zeros_(self.quality_bias.weight)
        self.body = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(blocks))
        self.out = nn.Conv2d(width, 4 * channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h, x, q):
        g = self.inp(torch.cat([self.squeeze(h), F.pixel_unshuffle(x, 2)], 1)) + self.quality_bias(q)[:, :, None, None]
        g = F.relu(g)
        for conv3 in self.body:
            g = F.relu(conv3(g)) + g
        return x + F.pixel_shuffle(self.out(g), 2)


def scale_index(t_int: torch.Tensor) -> torch.Tensor:
    """ln-scale in 1/256 units (int64) -> index into the scale table (pure integer arithmetic)."""
    return torch.div(t_int - SCALE_T0 + SCALE_STEP // 2, SCALE_STEP, rounding_mode="floor").clamp(0, SCALE_LEVELS - 1)


class CompressionVAE(nn.Module):
    """``prior``: "factorized" (Ballé 2017), "scale" (Ballé 2018) or "mean-scale" (Minnen 2018).

    ``context="checkerboard"`` (mean-scale only; He et al. 2021) codes the latent in two halves: the
    anchors (``anchors``) with parameters from the hyperprior alone, then the rest with parameters that
    also read the decoded anchors through a 5x5 convolution (``CheckerboardContext``).  The
    entropy-parameter network adds a correction to the hyperprior's (ln sigma, mean); its last layer
    starts at zero, so a model initialised from a mean-scale hyperprior starts as exactly that model."""

    TABLES = ("z_table", "z_offsets", "z_lengths", "y_table", "y_offsets", "y_lengths")

    def __init__(
        self,
        prior: str = "mean-scale",
        N: int = 96,
        M: int = 128,
        lambdas=DEFAULT_LAMBDAS,
        channels: int = 3,
        distortion: str = "mse",
        context: str = "none",
        post: int = 0,
        strip: int = 0,
        post_joint: bool = False,
    ):
        super().__init__()
        if prior not in ("factorized", "scale", "mean-scale"):
            raise VaekitError(f"unknown prior {prior!r}: factorized, scale or mean-scale")
        if distortion not in ("mse", "ms-ssim"):
            raise VaekitError(f"unknown distortion {distortion!r}: mse or ms-ssim")
        if context not in ("none", "checkerboard") or (context != "none" and prior != "mean-scale"):
            raise VaekitError(f"context {context!r}: 'none', or 'checkerboard' with the mean-scale prior")
        self.distortion, self.context = distortion, context
        self.prior, self.N, self.M, self.channels = prior, N, M, channels
        # total stride: g_a (16), times h_a (4) for the hyperprior models; inputs are padded to it
        self.pad_unit = 16 if prior == "factorized" else PAD
        self.lambdas = tuple(float(v) for v in lambdas)
        Q = self.qualities = len(self.lambdas)
        self.g_a = nn.Sequential(conv(channels, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, True), deconv(N, N), GDN(N, True), deconv(N, N), GDN(N, True), deconv(N, channels)
        )
        # gains: a larger gain is a finer quantizer; init so that step^2 ~ 1/lambda
        ref = math.log(self.lambdas[Q // 2])
        init = torch.tensor([0.5 * (math.log(v) - ref) for v in self.lambdas]).view(Q, 1).repeat(1, M)
        self.log_gain = nn.Parameter(init.clone())
        self.log_inv_gain = nn.Parameter(-init.clone())
        if prior == "factorized":
            self.y_density = FactorizedDensity(Q * M)
        else:
            act = nn.LeakyReLU if prior == "mean-scale" else nn.ReLU
            self.h_a = nn.Sequential(conv(M, N, 3, 1), act(), conv(N, N), act(), conv(N, N))
            out = 2 * M if prior == "mean-scale" else M
            mid = M * 3 // 2 if prior == "mean-scale" else N
            self.h_s = nn.Sequential(
                deconv(N, M if prior == "mean-scale" else N),
                nn.ReLU(),
                deconv(M if prior == "mean-scale" else N, mid),
                nn.ReLU(),
                conv(mid, out, 3, 1),
            )
            self.z_density = FactorizedDensity(N)
        if context == "checkerboard":
            self.ctx = CheckerboardContext(M, M)
            self.ep = nn.Sequential(nn.Conv2d(3 * M, M, 1), nn.ReLU(), nn.Conv2d(M, 2 * M, 1))
            nn.init.zeros_(self.ep[-1].weight)
            nn.init.zeros_(self.ep[-1].bias)
        self.post = PostFilter(N, Q, int(post), channels) if post else None
        self.post_joint = bool(post_joint) and self.post is not None
        if strip and int(strip) < 2 * STRIP_HALO:
            raise VaekitError(f"strip must be 0 or at least {2 * STRIP_HALO} latent units, not {strip}")
        self.strip = int(strip)
        for name in self.TABLES:
            self.register_buffer(name, torch.zeros(0, dtype=torch.int32))
        self._reset_caches()

    def _reset_caches(self):
        """Forget what is derived from the weights: the integer paths, the coders and the weights id."""
        self._int_hs = self._int_ctx = self._int_ep = None
        self._coders, self._weights_id = {}, None

    def weights_id(self) -> bytes:
        """First 8 bytes of the sha256 of the tensors (names, dtypes, shapes, values; float32 on CPU): the exact
        weights, whatever file they came from; a ``.vkc`` header carries it.  Kept until ``update``."""
        if self._weights_id is None:
            h = hashlib.sha256()
            for k, v in sorted(self.state_dict().items()):
                v = v.detach().cpu()
                v = v.float() if v.is_floating_point() else v
                h.update(k.encode() + str(v.dtype).encode() + str(tuple(v.shape)).encode())
                h.update(v.contiguous().numpy().tobytes())
            self._weights_id = h.digest()[:8]
        return self._weights_id

    # ----------------------------------------------------------------- training
    def _split(self, h):
        """h_s output -> (ln sigma, mean); the scale hyperprior has no mean."""
        return h.chunk(2, dim=1) if self.prior == "mean-scale" else (h, torch.zeros_like(h))

    def _analyse_hyper(self, y_g):
        """z = h_a(y_g) (the scale hyperprior sees |y_g|, as in Ballé 2018)."""
        return self.h_a(y_g if self.prior == "mean-scale" else y_g.abs())

    def _params(self, y_g, z_hat):
        """(ln sigma, mean) of the gained latents ``y_g`` given ``z_hat``, in float (training); with the
        checkerboard context, the second half's parameters read the rounded anchors."""
        h = self.h_s(z_hat)
        if self.context == "checkerboard":
            a = anchors(*y_g.shape[-2:]).to(y_g.device)
            first = h + self.ep(torch.cat([h, torch.zeros_like(h[:, : self.M])], 1))
            mu = first[:, self.M :]
            v = y_g - mu
            y_hat = (v + (torch.round(v) - v).detach() + mu) * a  # straight-through, as the decoder sees it
            h = torch.where(a, first, h + self.ep(torch.cat([h, self.ctx(y_hat)], 1)))
        t, mu = self._split(h)
        return t.clamp(math.log(SCALE_MIN), math.log(SCALE_MAX)), mu

    def hyper_mean(self, y_g):
        """The predicted latent mean for gained latents ``y_g`` (float, as in training)."""
        return self._params(y_g, torch.round(self._analyse_hyper(y_g)))[1]

    def forward(self, x, quality=None):
        """x: (B, C, H, W) in [0, 1], H and W multiples of ``pad_unit`` -> x_hat, likelihoods, bpp, quality."""
        B = x.shape[0]
        if quality is None:  # training: one random quality per example; eval: cycle through them
            q = torch.randint(0, self.qualities, (B,)) if self.training else torch.arange(B) % self.qualities
        else:
            q = torch.full((B,), int(quality), dtype=torch.long)
        q = q.to(x.device)
        y = self.g_a(x)
        y_g = y * self.log_gain[q].exp()[:, :, None, None]
        likelihoods = {}
        if self.prior == "factorized":
            mu = torch.zeros_like(y_g)
            rows = q[:, None] * self.M + torch.arange(self.M, device=x.device)[None]
            y_noisy = y_g + torch.empty_like(y_g).uniform_(-0.5, 0.5) if self.training else torch.round(y_g)
            likelihoods["y"] = self.y_density.likelihood(y_noisy, rows)
        else:
            z = self._analyse_hyper(y_g)
            z_hat = z + torch.empty_like(z).uniform_(-0.5, 0.5) if self.training else torch.round(z)
            rows = torch.arange(self.N, device=x.device)[None].expand(B, -1)
            likelihoods["z"] = self.z_density.likelihood(z_hat, rows)
            t, mu = self._params(y_g, z_hat)
            v = y_g - mu
            v_noisy = v + torch.empty_like(v).uniform_(-0.5, 0.5) if self.training else torch.round(v)
            likelihoods["y"] = gaussian_likelihood(v_noisy, t.exp())
        # distortion path: straight-through rounding (the decoder sees what it will see at test time)
        v = y_g - mu
        y_hat = v + (torch.round(v) - v).detach() + mu
        h = self.g_s[:-1](y_hat * self.log_inv_gain[q].exp()[:, :, None, None])
        x_synth = self.g_s[-1](h)
        # the post-filter learns on the transforms' output as it is, not the transforms on the filter's
        x_hat = x_synth if self.post is None else self.post(h.detach(), x_synth.detach(), q)
        if self.post_joint:  # the transforms learn on the filtered image, the filter held fixed for them
            fixed = {k: v.detach() for k, v in self.post.named_parameters()}
            x_synth = torch.func.functional_call(self.post, fixed, (h, x_synth, q))
        pixels = x.shape[-2] * x.shape[-1]
        bits = sum(-torch.log2(p).flatten(1).sum(1) for p in likelihoods.values())
        return {"x_hat": x_hat, "x_synth": x_synth, "likelihoods": likelihoods, "bpp": bits / pixels, "quality": q}

    def synthesize(self, y_hat, q: torch.Tensor, g_s=None, post=None):
        """The decoded image from ungained latents ``y_hat`` at qualities ``q`` (B,): the synthesis transform,
        then the post-filter (``g_s`` / ``post``: copies of them in another precision)."""
        g_s = self.g_s if g_s is None else g_s
        post = self.post if post is None else post
        h = g_s[:-1](y_hat)
        x = g_s[-1](h)
        return x if post is None else post(h, x, q)

    def loss(self, x, out, kl_weight: float = 1.0):
        """Rate-distortion loss, averaged over the batch: lambda_q * 255^2 * MSE + bpp, or with
        ``distortion="ms-ssim"`` lambda_q * (1 - MS-SSIM) + bpp (crops of at least 161 px), on the synthesis
        transform's image (with ``post_joint``, on the filtered image); with a post-filter, minus the mean PSNR (dB)
        of the filtered images, which only the filter learns from.  ``elbo`` (what validation keeps) is minus the
        loss, or with ``post_joint`` minus the filtered image's rate-distortion cost alone.

        Reported as a VAE: ``kl`` is the rate (bits per pixel), ``rec`` the MSE of the decoded (filtered) image."""
        x_synth = out.get("x_synth", out["x_hat"])
        mse = (out["x_hat"] - x).pow(2).flatten(1).mean(1)
        lam = torch.tensor(self.lambdas, device=x.device)[out["quality"]]
        if self.distortion == "ms-ssim":
            from pytorch_msssim import ms_ssim

            d = 1 - ms_ssim(x_synth.clamp(0, 1), x, data_range=1.0, size_average=False)
            per = lam * d + kl_weight * out["bpp"]
        else:
            per = lam * 255**2 * (x_synth - x).pow(2).flatten(1).mean(1) + kl_weight * out["bpp"]
        loss = rd = per.mean()
        if self.post is not None:  # the filter's own objective: the mean PSNR over the batch's qualities
            loss = loss + 10 * torch.log10(mse.clamp_min(1e-10)).mean()
        return {
            "loss": loss,
            "elbo": -(rd if self.post_joint else loss).detach(),
            "rec": mse.mean().detach(),
            "kl": out["bpp"].mean().detach(),
            "psnr": (-10 * torch.log10(mse.clamp_min(1e-10))).mean().detach(),
        }

    # ------------------------------------------------------------ coding tables
    @torch.no_grad()
    def coding_tables(self) -> dict:
        """The integer probability tables of the current densities (what ``update`` installs)."""
        out = {}
        if self.prior != "factorized":
            out.update(zip(self.TABLES[:3], self.z_density.tables()))
        tabs = self.y_density.tables() if self.prior == "factorized" else gaussian_tables()
        out.update(zip(self.TABLES[3:], tabs))
        return out

    def update(self):
        """Freeze the coding state after training: install the integer tables (buffers saved
        with the weights) and rebuild the integer hyper-synthesis from the current weights."""
        for name, v in self.coding_tables().items():
            setattr(self, name, v)
        self._reset_caches()

    @torch.no_grad()
    def grown_state(self, state: dict) -> dict:
        """``state`` of a narrower model of this family (fewer latent channels, or fewer qualities at the top)
        made to fit this one so that it starts as that model: old units keep their weights, new units start
        fresh, and weights from new units into old ones start at zero, so the old latents, their rates and the
        pixels are the narrower model's.  New top qualities continue the last step of the gains.  Capacity
        where the transforms cap the curve can so be added without training from scratch."""
        if "log_gain" not in state:
            return state
        old_q, old_m = state["log_gain"].shape
        if (old_q, old_m) == (self.qualities, self.M) or old_q > self.qualities or old_m > self.M:
            return state
        fresh, modules = dict(self.named_parameters()), dict(self.named_modules())

        def index(old: int, new: int) -> torch.Tensor:
            k = old // old_m
            if old != new and old == k * old_m and new == k * self.M:  # k latent-sized chunks side by side
                return torch.cat([torch.arange(old_m) + j * self.M for j in range(k)])
            return torch.arange(old)

        out = dict(state)
        for name, v in state.items():
            if name not in fresh or fresh[name].shape == v.shape or fresh[name].dim() != v.dim():
                continue
            new = fresh[name].detach().clone()
            idx = [index(o, n) for o, n in zip(v.shape, new.shape, strict=True)]
            if name.startswith("log_"):  # (quality, channel): new qualities extrapolate the last step
                idx[0] = torch.arange(old_q)
            elif v.dim() > 1:  # weights: outputs / inputs are dims 0 / 1, swapped in transposed convolutions
                o, i = (1, 0) if isinstance(modules[name.rsplit(".", 1)[0]], nn.ConvTranspose2d) else (0, 1)
                new_in = torch.ones(new.shape[i], dtype=torch.bool)
                new_in[idx[i]] = False
                sel = [slice(None)] * new.dim()
                sel[i] = new_in
                old_out = new.index_select(o, idx[o])
                old_out[tuple(sel)] = 0  # new inputs into old outputs
                new.index_copy_(o, idx[o], old_out)
            new[torch.meshgrid(*idx, indexing="ij")] = v.to(new.dtype)
            if name.startswith("log_"):
                for q in range(old_q, self.qualities):
                    new[q] = 2 * new[q - 1] - new[q - 2]
            out[name] = new
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the tables' sizes depend on the trained densities: take them from the file
        for name in self.TABLES:
            if prefix + name in state_dict:
                setattr(self, name, torch.zeros_like(state_dict[prefix + name]))
        self._reset_caches()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _coder(self, which: str) -> C.TableCoder:
        if self.y_table.numel() == 0:
            self.update()
        if which not in self._coders:
            t, o, n = (getattr(self, f"{which}_{k}") for k in ("table", "offsets", "lengths"))
            self._coders[which] = C.TableCoder(t.cpu().numpy(), o.cpu().numpy(), n.cpu().numpy())
        return self._coders[which]

    def integer_hyper(self) -> IntegerHyperSynthesis:
        if self._int_hs is None:
            self._int_hs = IntegerHyperSynthesis.from_float(self.h_s)
        return self._int_hs

    def _hyper_int(self, z_hat):
        """Exact h_s(z_hat) in 1/256 units from integer z_hat."""
        return self.integer_hyper()(z_hat)

    def _params_int(self, h, y_hat=None):
        """Exact (ln-sigma index, mean in 1/256 units) from the integer hyper-synthesis output ``h``: the
        hyperprior's own, the anchors' (``y_hat`` None) or the second half's (``y_hat``: the decoded anchors
        in 1/256 units, zero elsewhere) under the checkerboard context."""
        if self.context == "checkerboard":
            if self._int_ep is None:
                bits = IntegerHyperSynthesis.ACT_BITS  # the inputs' units: 1/256
                self._int_ctx = IntegerHyperSynthesis.from_float([self.ctx.as_conv()], in_bits=bits)
                self._int_ep = IntegerHyperSynthesis.from_float(self.ep, in_bits=bits)
            c = torch.zeros_like(h[:, : self.M]) if y_hat is None else self._int_ctx(y_hat)
            h = h + self._int_ep(torch.cat([h, c], 1))
        t, mu = self._split(h)
        return scale_index(t), mu

    # ------------------------------------------------------------- encode effort
    def _rd_cost(self, quality: int, mse, bits, pixels: int):
        """The training objective for one image: lambda * 255^2 * MSE + bits per pixel."""
        return self.lambdas[quality] * 255**2 * mse + bits / pixels

    def _relaxed_cost(self, x, y_g, quality: int, tau: float, valid, generator, z=None):
        """The rate-distortion cost of gained latents ``y_g`` with soft rounding (``soft_round``); ``z``: the
        hyper-latent searched beside them (rounded straight through), else ``h_a(y_g)``."""
        if self.prior == "factorized":
            rows = (quality * self.M + torch.arange(self.M, device=x.device))[None]
            y_soft = soft_round(y_g, tau, generator)
            bits = -torch.log2(self.y_density.likelihood(y_soft, rows)).sum()
        else:
            z = self._analyse_hyper(y_g) if z is None else z
            z_hat = z + (torch.round(z) - z).detach()
            rows = torch.arange(self.N, device=x.device)[None]
            t, mu = self._params(y_g, z_hat)
            v_soft = soft_round(y_g - mu, tau, generator)
            bits = -torch.log2(self.z_density.likelihood(z_hat, rows)).sum()
            bits = bits - torch.log2(gaussian_likelihood(v_soft, t.exp())).sum()
            y_soft = v_soft + mu
        y_hat = y_soft * self.log_inv_gain[quality].exp()[None, :, None, None]
        x_hat = self.synthesize(y_hat, self._q(quality, x.device))
        h, w = valid
        return self._rd_cost(quality, (x_hat - x)[..., :h, :w].pow(2).mean(), bits, h * w)

    @torch.no_grad()
    def _true_cost(self, x, y, quality: int, valid, z=None) -> float:
        """The cost of coding ``y`` (and ``z``) for real: payload bits and the decoded 8-bit pixels."""
        r = self.compress(x, quality, y=y, z=z)
        workers = torch.get_num_threads()
        x_hat = self.decompress(r["strings"], r["shape"], quality, device=x.device, workers=workers)["x_hat"]
        h, w = valid
        x_hat = torch.round(x_hat[..., :h, :w].clamp(0, 1) * 255) / 255
        return self._rd_cost(quality, float((x_hat - x[..., :h, :w]).pow(2).mean()), 8 * len(r["strings"][0]), h * w)

    def refine(self, x, quality: int, steps: int, y=None, valid=None, seed: int = 0):
        """Latents for ``compress(x, quality, y=..., z=...)`` searched for this one image: ``steps`` Adam steps on
        its rate-distortion cost under stochastic Gumbel annealing (``soft_round``), starting from ``g_a(x)``;
        the hyper-latent ``z`` is searched beside ``y`` (from ``h_a``, rounded straight through), since the
        amortized ``h_a`` prices the rounded residual only on average.  Every ``REFINE_CHECK`` steps the candidate
        is coded for real; the best is returned, so the result is never worse than ``g_a(x)`` on that cost.
        ``valid``: (h, w) of the real pixels inside the padded ``x`` (the padding costs no distortion).
        -> ((ungained latents, z or None: the factorized prior has none), (cost before, cost after))."""
        if not 0 <= quality < self.qualities:
            raise VaekitError(f"quality index {quality} out of range 0..{self.qualities - 1}")
        valid = valid or tuple(x.shape[-2:])
        gen = torch.Generator().manual_seed(seed)
        gain = self.log_gain[quality].detach().exp()[None, :, None, None]
        with torch.no_grad():
            y = self.g_a(x) if y is None else y
            z = None if self.prior == "factorized" else self._analyse_hyper(y * gain)
        best_y, first = y, self._true_cost(x, y, quality, valid)
        best, best_z = first, None
        frozen = [(p, p.requires_grad) for p in self.parameters()]
        y_g = (y * gain).detach().requires_grad_(True)
        if z is not None:
            z = z.detach().requires_grad_(True)
        opt = torch.optim.Adam([y_g] + ([z] if z is not None else []), lr=REFINE_LR)
        try:
            for p, _ in frozen:
                p.requires_grad_(False)
            with torch.enable_grad():
                for i in range(steps):
                    tau = REFINE_TAU[0] * (REFINE_TAU[1] / REFINE_TAU[0]) ** (i / max(steps - 1, 1))
                    opt.zero_grad()
                    self._relaxed_cost(x, y_g, quality, tau, valid, gen, z=z).backward()
                    opt.step()
                    if (i + 1) % REFINE_CHECK == 0 or i + 1 == steps:
                        cand, cand_z = y_g.detach() / gain, None if z is None else z.detach().clone()
                        cost = self._true_cost(x, cand, quality, valid, z=cand_z)
                        if cost < best:
                            best_y, best_z, best = cand, cand_z, cost
        finally:
            for p, flag in frozen:
                p.requires_grad_(flag)
        return (best_y, best_z), (first, best)

    # ------------------------------------------------------------------ coding
    @torch.no_grad()
    def compress(self, x, quality: int, y=None, z=None):
        """x: (1, C, H, W) in [0, 1], H, W multiples of ``pad_unit`` -> {"strings", "shape", "bits", "latents"}.

        ``y``: ``g_a(x)`` when the caller already has it (coding one image at several qualities); ``z``: a
        hyper-latent searched for this image (``refine``; rounded here), else ``h_a`` of the gained ``y``."""
        if not 0 <= quality < self.qualities:
            raise VaekitError(f"quality index {quality} out of range 0..{self.qualities - 1}")
        y = self.g_a(x) if y is None else y
        y_g = (y * self.log_gain[quality].exp()[None, :, None, None]).cpu().double()
        enc = C.new_encoder()
        bits = {}
        if self.prior == "factorized":
            y_sym = torch.round(y_g).to(torch.int64)
            rows = (quality * self.M + torch.arange(self.M)).view(1, -1, 1, 1).expand_as(y_sym)
            bits["y"] = self._coder("y").encode(enc, y_sym.numpy(), rows.numpy())
            z_shape = tuple(y_sym.shape[-2:])
            latents = {"y_sym": y_sym}
        else:
            z = self._analyse_hyper(y_g.float().to(x.device)) if z is None else z
            z_hat = torch.round(z).cpu().to(torch.int64)
            zrows = torch.arange(self.N).view(1, -1, 1, 1).expand_as(z_hat)
            bits["z"] = self._coder("z").encode(enc, z_hat.numpy(), zrows.numpy())
            hs = self._hyper_int(z_hat)
            idx, mu = self._params_int(hs)
            y_sym = torch.round(y_g - mu.double() / 256).to(torch.int64)
            if self.context == "none":
                bits["y"] = self._coder("y").encode(enc, y_sym.numpy(), idx.numpy())
            else:
                a = anchors(*y_sym.shape[-2:]).expand_as(y_sym)
                bits["y"] = self._coder("y").encode(enc, y_sym[a].numpy(), idx[a].numpy())
                idx2, mu2 = self._params_int(hs, torch.where(a, y_sym * 256 + mu, 0))
                y_sym = torch.where(a, y_sym, torch.round(y_g - mu2.double() / 256).to(torch.int64))
                bits["y"] += self._coder("y").encode(enc, y_sym[~a].numpy(), idx2[~a].numpy())
            z_shape = tuple(z_hat.shape[-2:])
            latents = {"z_hat": z_hat, "y_sym": y_sym}
        return {"strings": [C.finish(enc)], "shape": z_shape, "bits": bits, "latents": latents}

    @torch.no_grad()
    def decompress(self, strings, shape, quality: int, dtype=torch.float32, device="cpu", workers: int = 1):
        """Inverse of ``compress``: -> {"x_hat": (1, C, H, W) float (not clamped), "latents"}.

        ``workers``: threads for the synthesis strips (``strip``); the pixels do not depend on it."""
        if not 0 <= quality < self.qualities:
            raise VaekitError(f"quality index {quality} out of range 0..{self.qualities - 1}")
        dec = C.new_decoder(strings[0])
        h, w = shape
        try:
            if self.prior == "factorized":
                rows = (quality * self.M + torch.arange(self.M)).view(1, -1, 1, 1).expand(1, self.M, h, w)
                y_sym = torch.from_numpy(self._coder("y").decode(dec, rows.numpy())).view(1, self.M, h, w)
                y_hat_g = y_sym.double()
                latents = {"y_sym": y_sym}
            else:
                zrows = torch.arange(self.N).view(1, -1, 1, 1).expand(1, self.N, h, w)
                z_hat = torch.from_numpy(self._coder("z").decode(dec, zrows.numpy())).view(1, self.N, h, w)
                hs = self._hyper_int(z_hat)
                idx, mu = self._params_int(hs)
                if self.context == "none":
                    y_sym = torch.from_numpy(self._coder("y").decode(dec, idx.numpy())).view(idx.shape)
                else:
                    a = anchors(*idx.shape[-2:]).expand_as(idx)
                    y_sym = torch.zeros(idx.shape, dtype=torch.int64)
                    y_sym[a] = torch.from_numpy(self._coder("y").decode(dec, idx[a].numpy()))
                    idx2, mu2 = self._params_int(hs, torch.where(a, y_sym * 256 + mu, 0))
                    y_sym[~a] = torch.from_numpy(self._coder("y").decode(dec, idx2[~a].numpy()))
                    mu = torch.where(a, mu, mu2)
                y_hat_g = y_sym.double() + mu.double() / 256
                latents = {"z_hat": z_hat, "y_sym": y_sym}
        except VaekitError:
            raise
        except Exception as e:  # noqa: BLE001 - constriction reports damaged data with several types
            raise VaekitError(f"corrupted stream: {e}") from None
        y_hat = y_hat_g.to(device, dtype) * self.log_inv_gain[quality].to(device, dtype).exp()[None, :, None, None]
        g_s, post = self.g_s, self.post
        if dtype != torch.float32:
            g_s, post = _cast(g_s, dtype), None if post is None else _cast(post, dtype)
        x_hat = self._synthesize_strips(y_hat, self._q(quality, device), g_s, post, workers)
        return {"x_hat": x_hat, "latents": latents}

    def _synthesize_strips(self, y_hat, q, g_s, post, workers: int):
        """``synthesize`` over strips across the latent's longer side (columns of a landscape image, rows of a
        portrait one), ``strip`` latent units each at most (the whole latent when ``strip`` is 0), each computed on
        one thread and cut to its own part; ``workers`` strips run at once."""
        dim = -1 if y_hat.shape[-1] >= y_hat.shape[-2] else -2
        n_lat = y_hat.shape[dim]
        n = -(-n_lat // self.strip) if self.strip else 1  # one strip: the whole latent
        cuts = [round(i * n_lat / n) for i in range(n + 1)]
        s = 16  # g_s's stride: pixels per latent unit

        def run(i):
            lo, hi = max(cuts[i] - STRIP_HALO, 0), min(cuts[i + 1] + STRIP_HALO, n_lat)
            with one_thread():
                x = self.synthesize(y_hat.narrow(dim, lo, hi - lo), q, g_s, post)
            return x.narrow(dim, (cuts[i] - lo) * s, (cuts[i + 1] - cuts[i]) * s)

        if workers <= 1 or n == 1:
            parts = [run(i) for i in range(n)]
        else:
            # torch's thread count is process-wide: held at 1 here, so no worker's exit restores it mid-strip
            with one_thread(), ThreadPoolExecutor(max_workers=min(workers, n)) as pool:
                parts = list(pool.map(run, range(n)))
        return parts[0] if n == 1 else torch.cat(parts, dim)

    @staticmethod
    def _q(quality: int, device=None) -> torch.Tensor:
        return torch.tensor([quality], device=device)


@contextlib.contextmanager
def one_thread():
    """Run torch's CPU kernels on one thread inside (in the calling thread): oneDNN splits a convolution's sums
    by thread count, so the float synthesis's pixels could move by a grey level between --threads 1 and 2."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _cast(module, dtype):
    import copy

    return copy.deepcopy(module).to(dtype)
