"""The mask-aware inpainting VAE: a conditional VAE of the missing pixels given the known ones.

    p(x_hole | y, m) = ∫ p(x_hole | z, y, m) p(z | y, m) dz        (y the image with holes, m the mask)

* the holes are first given a cheap smooth fill by **push-pull** (pull: average the known pixels
  down a pyramid; push: fill each level's gaps from the coarser one) refined by 50 Jacobi sweeps
  of Laplace's equation (a membrane through the known pixels), so every network input is a
  complete image and the decoder only predicts the residual over it;
* a **context** U-Net reads the pre-filled image and the mask, pixel-unshuffled by 2, down to
  1/8 resolution, where dilated convolutions (dilation 2, 4, 8) widen its reach to about
  ±100 pixels: enough to see across the holes it is trained on;
* the **prior** p(z | y, m) and the **posterior** q(z | x, y, m) are diagonal Gaussians over an
  8-channel latent at 1/8 resolution; the posterior also sees the complete image (training only);
* the **decoder** p(x | z, y, m) is a Gaussian over the *missing* pixels only (known pixels are
  copied, never predicted) whose scale is per example, at its maximum-likelihood value -- the
  profile likelihood -(n/2) log(mse): each crop counts by its log error, so crops that are nearly
  solved (scattered pixels, thin strokes) are not drowned by the large errors inside big boxes.
  A separate global scale, fitted to the errors without moving the mean, is what the per-pixel
  std at inference adds to the spread of the draws.

Training masks are drawn inside :meth:`forward` from a mixture at absolute pixel sizes matched
to the benchmark's masks on 321-768 px images: random pixels (rate 0.3-0.9), brush strokes
(2-28 px wide), boxes (8-56 px sides), text-like clusters of short strokes.  Holes wider than the model
was trained on are handled coarse-to-fine in :mod:`vaekit.tasks.inpaint`.

An optional full-resolution **detail** path (``detail``) takes over the hole pixels within a few pixels
of known ones -- scattered pixels, thin strokes, hole borders -- from the U-Net, which sees the image only
pixel-unshuffled by 2; deeper in the hole the U-Net's fill, and its latent, decide alone.

Posterior samples at inference give diverse fills, their mean the estimate.  Trained by the plain ELBO
the decoder learns to ignore the latent (the fills are alike); the shipped ``inpaint-color`` was then
fine-tuned with KL balancing, a posterior that starts as the block-mean residual, and the latent
confined to deep blocks (``q_kl_weight``, ``q_skip``, ``latent_gate``), so its fills differ where the
hole is deep.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..degrade import draw_strokes
from .base import LOG2PI
from .denoiser import gaussian_kl, prior_draws
from .layers import conv3

MSE_FLOOR = 1e-4  # (0-1 units)²: 40 dB; bounds the weight of a nearly solved crop


def _block(cin, cout, n=2, stride=1):
    """Conv blocks with SiLU: with ReLU this model's per-crop log-error objective killed whole layers."""
    layers = [conv3(cin, cout, stride), nn.SiLU(inplace=True)]
    for _ in range(n - 1):
        layers += [conv3(cout, cout), nn.SiLU(inplace=True)]
    return nn.Sequential(*layers)


def push_pull(y, m):
    """Smooth fill of the missing pixels (``m`` (B,1,H,W) is 1 where missing) from the known ones.

    Pull: average known pixels down a 2x pyramid (weights = known fraction) until every cell has
    support. Push: back up, each level's weakly supported pixels taking the upsampled coarser
    value in proportion to their missing weight.  Known pixels keep their values."""
    w = 1.0 - m
    levels = []
    num, den = y * w, w
    while True:
        levels.append((num, den))
        if min(num.shape[-2:]) <= 1 or bool((den > 0).all()):
            break
        num = F.avg_pool2d(num, 2, ceil_mode=True)
        den = F.avg_pool2d(den, 2, ceil_mode=True)
    num, den = levels[-1]
    fill = num / den.clamp_min(1e-8)
    if not bool((den > 0).all()):  # nothing known at all in some example: grey
        fill = torch.where(den > 0, fill, torch.full_like(fill, 0.5))
    for num, den in reversed(levels[:-1]):
        up = F.interpolate(fill, size=num.shape[-2:], mode="bilinear", align_corners=False)
        a = den.clamp(0, 1)
        fill = a * (num / den.clamp_min(1e-8)) + (1 - a) * up
    return y * w + fill * m


def near_weight(m, reach: int):
    """(B,1,H,W) 1 at pixels at most ``reach`` px (chessboard distance) from a known pixel (``m`` 0), falling
    linearly to 0 at ``2 * reach + 1`` px; known pixels are at distance 0."""
    known = 1 - m
    covered = known.clone()  # how many of the 2*reach dilations (plus the pixel itself) reach each pixel
    k = known
    for _ in range(2 * reach):
        k = F.max_pool2d(k, 3, stride=1, padding=1)
        covered = covered + k
    # a pixel at distance d (1 <= d <= 2*reach) is covered by the dilations d..2*reach: 2*reach - d + 1 of them
    return (covered / (reach + 1)).clamp(0.0, 1.0)


def harmonic_fill(y, m, iters: int = 50):
    """Push-pull, then ``iters`` Jacobi sweeps of Laplace's equation on the missing pixels (each takes the mean
    of its 4 neighbours): a membrane through the known pixels, close to biharmonic inpainting on scattered
    pixels and thin strokes (within 0.1-0.5 dB in a quick check on six bsds400 val images), at a fraction of
    its cost."""
    x = push_pull(y, m)
    if iters <= 0:
        return x
    c = x.shape[1]
    k = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]], dtype=x.dtype, device=x.device)
    k = k.expand(c, 1, 3, 3)
    hole = m.expand_as(x) > 0
    for _ in range(int(iters)):
        avg = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)
        x = torch.where(hole, avg, x)
    return x


def laplace_solve(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Harmonic (membrane) inpainting, solved exactly: ``values`` (C, H, W), ``mask`` (H, W) bool, True = missing.

    Each missing pixel becomes the mean of its 4 neighbours (at the image border, of those inside it: the
    membrane's edge is free), with the known pixels as boundary values -- one sparse linear system for all
    channels, solved directly (SuperLU).  The solution is also the expected colour of the known pixel where a
    random walk from the missing pixel first lands, which is why it is a strong fill deep inside large holes.
    Returns float64 (C, H, W); with nothing missing, the input; with nothing known, the image mid-grey."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    out = values.copy()
    if not mask.any():
        return out
    if mask.all():
        out[:] = 0.5
        return out
    C, H, W = values.shape
    ys, xs = np.nonzero(mask)
    n = len(ys)
    index = np.full((H, W), -1, np.int64)
    index[ys, xs] = np.arange(n)
    degree = np.zeros(n)
    rows, cols = [np.arange(n)], [np.arange(n)]
    rhs = np.zeros((C, n))
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        qy, qx = ys + dy, xs + dx
        inside = (qy >= 0) & (qy < H) & (qx >= 0) & (qx < W)
        degree += inside
        r, qy, qx = np.nonzero(inside)[0], qy[inside], qx[inside]
        hole = mask[qy, qx]
        rows.append(r[hole])
        cols.append(index[qy[hole], qx[hole]])
        for c in range(C):
            rhs[c] += np.bincount(r[~hole], weights=values[c, qy[~hole], qx[~hole]], minlength=n)
    data = np.concatenate([degree, -np.ones(sum(len(v) for v in rows[1:]))])
    A = sp.csc_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    sol = spsolve(A, rhs.T)
    out[:, ys, xs] = np.asarray(sol).reshape(n, C).T
    return out


def laplace_fill(y, m):
    """The membrane of :func:`harmonic_fill` solved exactly (a sparse direct solve per example, on the CPU in
    float64; :func:`laplace_solve`).  50 Jacobi sweeps after push-pull leave a box of 160 x 240
    px tens of grey levels short of the membrane; this is exact at any size, and about as fast."""
    out = torch.empty_like(y)
    for i in range(y.shape[0]):
        sol = laplace_solve(y[i].detach().cpu().double().numpy(), m[i, 0].detach().cpu().numpy() > 0.5)
        out[i] = torch.from_numpy(sol).to(y.dtype)
    return out


class InpaintingVAE(nn.Module):
    """Conditional VAE inpainter for ``channels``-channel images (1 gray, 3 RGB).

    The defaults are the shipped ``inpaint-color`` recipe; how each option came about, with its figures, is in
    docs/models/inpaint-color.md and docs/decisions.md.

    Parameters
    ----------
    channels : image channels
    widths : feature channels at 1/2, 1/4 and 1/8 resolution
    latent_channels : channels of the spatial latent (at 1/8 resolution)
    free_bits : KL floor in nats per latent unit, per example and channel (as in the denoiser)
    fill_radius : the largest distance (pixels) from a hole pixel to a known one that the training
        masks produce; inference goes coarse-to-fine beyond it
    harmonic_iters : Jacobi sweeps of the pre-fill after push-pull (:func:`harmonic_fill`)
    prefill : the harmonic pre-fill: ``"jacobi"`` (push-pull + ``harmonic_iters`` sweeps: cheap, what training
        used) or ``"exact"`` (:func:`laplace_fill`: one sparse solve; the sweeps stop short inside large holes)
    q_init_logvar : initial log-variance of the posterior (its head's bias), training only: a small one lets
        the decoder see the latent from the first step instead of learning to ignore unit noise
    q_view : what of the complete image the posterior reads: ``"full"`` (every pixel) or ``"coarse"`` (its
        8x8-block means: the layout of colours, which is what is really uncertain in a large hole)
    min_logvar : floor of the prior's and the posterior's log-variance (a prior too sure of a latent charges
        huge KLs for a small mismatch)
    q_skip : coarse view only: a learned 1x1 map, started at ``q_skip`` x identity, from the block means of the
        residual (image minus pre-fill) to the first latent means, so the posterior carries the hole's colours
        before the KL can close the latent; 0: no such path
    latent_gate : the latent lives only in 8x8 blocks at least this fraction missing; elsewhere z = 0 and the
        context decides (a latent near known pixels teaches the decoder to lean on what the prior cannot give)
    detail : ``(width, depth, reach)`` of a full-resolution path for hole pixels near known ones: ``depth`` 3x3
        convolutions over the pre-fill, the U-Net's fill and the mask give the fill within ``reach`` px of a
        known pixel, blended into the U-Net's fill up to ``2 * reach``; None: no path
    detail_blocks : zero-started residual blocks in the middle of the detail path (deepens a trained path
        without changing what it computes; ``init_from`` leaves them fresh)
    mask_probs : the training masks' mixture: chances of random pixels, brush strokes, boxes and text-like marks
    q_kl_weight : KL balancing (Hafner et al. 2021): the posterior is pulled towards the prior with this weight,
        the prior towards the posterior with weight 1; the reported KL and ELBO are the true ones
    """

    STRIDE = 8

    def __init__(
        self,
        channels: int = 3,
        widths=(32, 64, 128),
        latent_channels: int = 8,
        free_bits: float = 0.0,
        fill_radius: int = 24,
        harmonic_iters: int = 50,
        q_init_logvar: float = -4.0,
        q_view: str = "coarse",
        min_logvar: float = -8.0,
        q_kl_weight: float = 0.1,
        q_skip: float = 10.0,
        latent_gate: float = 0.9,
        mask_probs=(0.8, 0.2, 0.0, 0.0),
        detail=(48, 8, 6),
        prefill: str = "exact",
        detail_blocks: int = 4,
    ):
        super().__init__()
        if prefill not in ("jacobi", "exact"):
            raise ValueError(f"prefill must be 'jacobi' or 'exact', not {prefill!r}")
        self.prefill = prefill
        probs = tuple(float(p) for p in mask_probs)
        if len(probs) != 4 or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6:
            raise ValueError(f"mask_probs must be 4 non-negative chances that sum to 1, not {mask_probs}")
        self.mask_probs = probs
        if not 0.0 <= float(latent_gate) <= 1.0:
            raise ValueError(f"latent_gate must be in [0, 1], not {latent_gate}")
        self.latent_gate = float(latent_gate)
        if not 0.0 < float(q_kl_weight) <= 1.0:
            raise ValueError(f"q_kl_weight must be in (0, 1], not {q_kl_weight}")
        self.q_kl_weight = float(q_kl_weight)
        self.harmonic_iters = int(harmonic_iters)
        self.channels = int(channels)
        self.widths = tuple(int(w) for w in widths)
        self.latent_channels = int(latent_channels)
        self.free_bits = float(free_bits)
        self.fill_radius = int(fill_radius)
        c4, (w0, w1, w2), L = 4 * self.channels, self.widths, self.latent_channels
        self.e1 = _block(c4 + 4, w0, 2)
        self.e2 = _block(w0, w1, 3, stride=2)
        self.e3 = _block(w1, w2, 2, stride=2)
        self.dil = nn.ModuleList([nn.Conv2d(w2, w2, 3, padding=d, dilation=d) for d in (2, 4, 8)])
        self.prior_head = conv3(w2, 2 * L)
        if q_view not in ("full", "coarse"):
            raise ValueError(f"q_view must be 'full' or 'coarse', not {q_view!r}")
        self.q_view = q_view
        self.min_logvar = float(min_logvar)
        if q_view == "full":
            self.q_in = nn.Sequential(conv3(c4, 32, 2), nn.SiLU(inplace=True), conv3(32, 64, 2), nn.SiLU(inplace=True))
        else:  # block means of the image and of its pre-fill residual at 1/8 resolution
            self.q_in = nn.Sequential(conv3(2 * self.channels, 64), nn.SiLU(inplace=True))
        self.q_head = nn.Sequential(conv3(64 + w2, w2), nn.SiLU(inplace=True), conv3(w2, 2 * L))
        self.q_skip = None
        if q_skip:
            if q_view != "coarse" or L < self.channels:
                raise ValueError("q_skip needs q_view='coarse' and at least as many latent as image channels")
            self.q_skip = nn.Conv2d(self.channels, L, 1, bias=False)
            with torch.no_grad():
                self.q_skip.weight.zero_()
                self.q_skip.weight[:, :, 0, 0][: self.channels].copy_(float(q_skip) * torch.eye(self.channels))
        self.d3 = _block(w2 + L, w2, 2)
        self.up2 = conv3(w2, 4 * w1)
        self.d2 = _block(2 * w1, w1, 2)
        self.up1 = conv3(w1, 4 * w0)
        self.d1 = _block(2 * w0, w0, 2)
        self.out = conv3(w0, c4)
        self.log_scale = nn.Parameter(torch.tensor(-3.0))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.detail, self.detail_reach = None, 0
        if detail:
            dw, dd, reach = (int(v) for v in detail)
            if dw < 1 or dd < 2 or reach < 1:
                raise ValueError(f"detail must be (width >= 1, depth >= 2, reach >= 1), not {detail}")
            layers = [conv3(2 * self.channels + 1, dw), nn.SiLU(inplace=True)]
            for _ in range(dd - 2):
                layers += [conv3(dw, dw), nn.SiLU(inplace=True)]
            layers.append(conv3(dw, self.channels))
            self.detail, self.detail_reach = nn.Sequential(*layers), reach
            nn.init.normal_(self.detail[-1].weight, 0.0, 1e-3)  # not zero: the first layers get a gradient at once
            nn.init.zeros_(self.detail[-1].bias)
        self.detail_res = None
        if int(detail_blocks) < 0 or (detail_blocks and self.detail is None):
            raise ValueError(f"detail_blocks must be >= 0 and needs detail, not {detail_blocks}")
        if detail_blocks:
            self.detail_res = nn.ModuleList()
            for _ in range(int(detail_blocks)):
                blk = nn.Sequential(conv3(dw, dw), nn.SiLU(inplace=True), conv3(dw, dw))
                nn.init.zeros_(blk[-1].weight)  # each block starts as the identity: a deepened path computes
                nn.init.zeros_(blk[-1].bias)  # what the path it was loaded from did
                self.detail_res.append(blk)
        self.q_init_logvar = float(q_init_logvar)
        with torch.no_grad():
            self.q_head[-1].bias[L:].fill_(self.q_init_logvar)

    # ------------------------------------------------------------------ pieces
    def _check(self, y, m):
        if y.dim() != 4 or y.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, H, W) images, got {tuple(y.shape)}")
        if y.shape[-1] % self.STRIDE or y.shape[-2] % self.STRIDE:
            raise ValueError(f"height and width must be multiples of {self.STRIDE}, got {tuple(y.shape[-2:])}")
        if m.shape != (y.shape[0], 1, *y.shape[-2:]):
            raise ValueError(f"mask must be (B, 1, H, W) = {(y.shape[0], 1, *y.shape[-2:])}, got {tuple(m.shape)}")

    def context(self, y, m):
        """The pre-filled image, the skips (e1, e2, e3) and the prior's (mu, logvar)."""
        self._check(y, m)
        m = m.to(y.dtype)
        base = laplace_fill(y, m) if self.prefill == "exact" else harmonic_fill(y, m, self.harmonic_iters)
        h = torch.cat([F.pixel_unshuffle(base, 2), F.pixel_unshuffle(m, 2)], 1)
        e1 = self.e1(h)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        for conv in self.dil:
            e3 = e3 + F.silu(conv(e3))
        mu, logvar = self.prior_head(e3).chunk(2, 1)
        return base, (e1, e2, e3), (mu, logvar.clamp(self.min_logvar, 6.0))

    def posterior(self, x, e3, base):
        """q(z | x, y, m) from the complete ``x``, the context's deepest skip ``e3`` and the pre-fill ``base``."""
        if self.q_view == "full":
            q = self.q_in(F.pixel_unshuffle(x, 2))
        else:
            xs = F.avg_pool2d(x, self.STRIDE)
            res = xs - F.avg_pool2d(base, self.STRIDE)
            q = self.q_in(torch.cat([xs, res], 1))
        mu, logvar = self.q_head(torch.cat([q, e3], 1)).chunk(2, 1)
        if self.q_skip is not None:
            mu = mu + self.q_skip(res)
        return mu, logvar.clamp(self.min_logvar, 6.0)

    def gate(self, m):
        """(B,1,h,w) 1 at the latent positions where the latent lives (see ``latent_gate``), else 0."""
        if self.latent_gate <= 0:
            return torch.ones_like(m[:, :, :: self.STRIDE, :: self.STRIDE])
        return (F.avg_pool2d(m, self.STRIDE) >= self.latent_gate - 1e-6).to(m.dtype)

    def decode(self, z, skips, base, m):
        """The decoder mean: known pixels of ``base`` kept, missing ones = base + predicted residual."""
        e1, e2, e3 = skips
        if self.latent_gate > 0:
            z = z * self.gate(m)
        h = self.d3(torch.cat([e3, z], 1))
        h = self.d2(torch.cat([F.silu(F.pixel_shuffle(self.up2(h), 2)), e2], 1))
        h = self.d1(torch.cat([F.silu(F.pixel_shuffle(self.up1(h), 2)), e1], 1))
        x = base + m * F.pixel_shuffle(self.out(h), 2)
        if self.detail is not None:
            w = m * near_weight(m, self.detail_reach)
            x = x + w * (base + self.detail_residual(torch.cat([base, x, m], 1)) - x)
        return x

    def detail_residual(self, h):
        """The detail path on its input ``h``: its first half, the residual blocks (``detail_blocks``), the rest."""
        if self.detail_res is None:
            return self.detail(h)
        k = 2 * ((len(self.detail) + 1) // 4)  # after the activation of convolution depth // 2
        h = self.detail[:k](h)
        for blk in self.detail_res:
            h = h + blk(h)
        return self.detail[k:](h)

    # ------------------------------------------------------------------ training masks
    MASK_PROBS = (0.25, 0.35, 0.25, 0.15)  # random pixels, brush strokes, boxes, text-like marks

    @staticmethod
    def random_masks(n: int, h: int, w: int, generator=None, probs=MASK_PROBS) -> torch.Tensor:
        """(n, 1, h, w) training masks (1 = missing), seeded from ``generator`` (torch's RNG if None); ``probs``:
        the chances of random pixels, brush strokes, boxes and text-like marks."""
        from PIL import Image, ImageDraw

        seeds = torch.randint(0, 2**31 - 1, (n,), generator=generator).tolist()
        out = np.zeros((n, 1, h, w), np.float32)
        for i, s in enumerate(seeds):
            rng = np.random.default_rng(s)
            kind = rng.choice(4, p=probs)
            if kind == 0:  # random pixels
                out[i, 0] = rng.random((h, w)) < rng.uniform(0.3, 0.9)
                continue
            im = Image.new("L", (w, h), 0)
            draw = ImageDraw.Draw(im)
            if kind == 1:  # brush strokes
                bw = int(rng.integers(2, 29))
                draw_strokes(im, rng, bw, rng.uniform(0.05, 0.4), segments=(2, 6), step=(0.1, 0.5), tries=50)
            elif kind == 2:  # one or two boxes
                for _ in range(int(rng.integers(1, 3))):
                    bh, bwid = min(int(rng.integers(8, 57)), int(0.6 * h)), min(int(rng.integers(8, 57)), int(0.6 * w))
                    x0, y0 = int(rng.integers(0, max(1, w - bwid))), int(rng.integers(0, max(1, h - bh)))
                    draw.rectangle([x0, y0, x0 + bwid - 1, y0 + bh - 1], fill=255)
            else:  # text-like clusters of short thin strokes
                for _ in range(int(rng.integers(10, 40))):
                    x, yy = rng.uniform(0, w), rng.uniform(0, h)
                    L = rng.uniform(3, 12)
                    ang = rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4])
                    draw.line(
                        [(x, yy), (x + L * np.cos(ang), yy + L * np.sin(ang))], fill=255, width=int(rng.integers(1, 4))
                    )
            out[i, 0] = np.asarray(im) > 127
            if not out[i, 0].any():
                out[i, 0, h // 2, w // 2] = 1
            if out[i, 0].all():  # never a mask with nothing known
                out[i, 0, 0, 0] = 0
        return torch.from_numpy(out)

    # ------------------------------------------------------------------ training objective
    def forward(self, x, m=None):
        """The conditional ELBO's terms on complete ``x``; masks drawn here unless given."""
        if m is None:
            m = self.random_masks(x.shape[0], *x.shape[-2:], probs=self.mask_probs).to(x.device)
        m = m.to(x.dtype)
        y = x * (1 - m)
        base, skips, (pm, plv) = self.context(y, m)
        qm, qlv = self.posterior(x, skips[2], base)
        z = qm + torch.randn_like(qm) * (0.5 * qlv).exp()
        mean = self.decode(z, skips, base, m)
        nmiss = (m.flatten(1).sum(1) * self.channels).clamp_min(1)

        def log_lik(est):
            # the likelihood's scale is per example, at its maximum-likelihood value sqrt(mse) (the profile
            # likelihood): every crop counts by its log error, so near-solved crops (scattered pixels, thin
            # strokes) are not drowned by the large errors inside big boxes
            sq = ((x - est) * m).pow(2).flatten(1).sum(1)
            return -0.5 * nmiss * (torch.log(sq / nmiss + MSE_FLOOR) + 1.0 + LOG2PI), sq

        log_px, sq = log_lik(mean)
        mse = sq / nmiss
        rec_train = log_px
        # the global scale (for the reported std) is fitted to the errors without moving the mean
        ls = self.log_scale.clamp(-9.0, 0.0)
        scale_nll = 0.5 * sq.detach() * torch.exp(-2 * ls) + nmiss * ls
        gate = self.gate(m)  # where the latent is gated off, the posterior is the prior: no KL
        kl_c = (gaussian_kl(qm, qlv, pm, plv) * gate).flatten(2).sum(2)
        kl_t = kl_c
        if self.q_kl_weight < 1.0:  # gradient: weight w on the posterior, 1 on the prior; value: the true KL
            w = self.q_kl_weight
            kl_t = (
                (
                    (
                        w * gaussian_kl(qm, qlv, pm.detach(), plv.detach())
                        + gaussian_kl(qm.detach(), qlv.detach(), pm, plv)
                    )
                    * gate
                )
                .flatten(2)
                .sum(2)
            )
            kl_t = kl_t - (kl_t.detach() - kl_c.detach())
        kl_train = kl_t.clamp_min(self.free_bits * qm[0, 0].numel()).sum(1) if self.free_bits else kl_t.sum(1)
        return {
            "x_hat": mean,
            "log_px": log_px,
            "kl": kl_c.sum(1),
            "kl_train": kl_train,
            "mask": m,
            "mse_hole": mse,
            "scale_nll": scale_nll,
            "rec_train": rec_train,
        }

    def loss(self, x, out, kl_weight: float = 1.0):
        per = -(out.get("rec_train", out["log_px"]) - kl_weight * out.get("kl_train", out["kl"])) + out["scale_nll"]
        elbo = out["log_px"] - out["kl"]
        mse = out["mse_hole"]
        return {
            "loss": per.mean() / (x[0].numel()),
            "elbo": elbo.mean().detach(),
            "rec": mse.mean().detach(),
            "kl": out["kl"].mean().detach(),
            "psnr": (-10 * torch.log10(mse.clamp_min(1e-10))).mean().detach(),
        }

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def inpaint(self, y, m, samples: int = 0, temperature: float = 1.0, generator=None):
        """Fill the pixels where ``m`` (B,1,H,W) is 1 in ``y`` (B,C,H,W; sizes multiples of 8).

        Returns ``(mean, std, draws)`` as :meth:`DenoisingVAE.denoise`: ``samples=0`` is the one-pass
        estimate (z = prior mean).  Known pixels are returned exactly as given."""
        m = m.to(y.dtype)
        y = y * (1 - m)
        base, skips, (pm, plv) = self.context(y, m)
        scale = self.log_scale.clamp(-9.0, 0.0).exp()
        if samples <= 0:
            mean = self.decode(pm, skips, base, m)
            return mean, scale * m.expand_as(mean), []
        mean, var, draws = prior_draws(
            lambda z: self.decode(z, skips, base, m), pm, plv, samples, temperature, generator
        )
        return mean, (var + scale**2).sqrt() * m, draws

    @torch.no_grad()
    def latent_stats(self, x, m):
        """KL per example and latent channel (B, L) on complete ``x`` with masks ``m``: for active units."""
        m = m.to(x.dtype)
        base, skips, (pm, plv) = self.context(x * (1 - m), m)
        qm, qlv = self.posterior(x, skips[2], base)
        kl = gaussian_kl(qm, qlv, pm, plv) * self.gate(m)
        return kl.mean((2, 3)), math.prod(kl.shape[2:])
