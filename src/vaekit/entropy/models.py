"""Entropy models of the compression VAEs and their integer probability tables.

Two densities, in the notation of Ballé et al. (2018):

* ``FactorizedDensity`` -- the non-parametric, per-channel density of the
  hyper-latent ``z`` (Ballé 2018, appendix 6.1): a monotone scalar function
  per channel gives the CDF; the likelihood of a quantization bin is the CDF
  difference over it.
* ``gaussian_likelihood`` -- the conditional Gaussian of the latent ``y``,
  with mean and scale predicted by the hyper-synthesis.

Training uses the float densities.  Coding never does: ``pmf_table`` turns a
density into integer probability tables (``PRECISION`` bits, an escape symbol
for values outside the table) once, when weights are finalised; the tables
are stored in the weights file, so every machine codes with the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PRECISION = 24  # bits of the integer probability tables (constriction's range coder precision)
LIKELIHOOD_MIN = 1e-9

# Gaussian scale table: sigma_k = exp((SCALE_T0 + k * SCALE_STEP) / 256).  The hyper-synthesis
# outputs ln(sigma) in fixed point (1/256 units), so the table index is pure integer arithmetic.
SCALE_FRAC_BITS = 8
SCALE_T0 = -565  # round(ln(0.11) * 256): sigma_0 = 0.110
SCALE_STEP = 16  # ln-scale step 1/16: adjacent scales differ by 6.4%
SCALE_LEVELS = 125  # sigma_124 = 256.6
SCALE_MIN = math.exp(SCALE_T0 / 256)
SCALE_MAX = math.exp((SCALE_T0 + SCALE_STEP * (SCALE_LEVELS - 1)) / 256)
TAIL_SIGMAS = 6.0  # table support is +-ceil(6 sigma); beyond it values are escaped


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient still pushes x up from below the bound."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        pass_through = (x >= ctx.bound) | (g < 0)
        return g * pass_through, None


def lower_bound(x, bound: float):
    return _LowerBound.apply(x, bound)


def std_normal_cdf(x):
    return 0.5 * torch.erfc(-x * (2**-0.5))


def gaussian_likelihood(v, scale):
    """P(bin of width 1 around v) under N(0, scale); v = value - mean.  Uses |v| for accuracy in the tails."""
    scale = lower_bound(scale, SCALE_MIN)
    v = v.abs()
    p = std_normal_cdf((0.5 - v) / scale) - std_normal_cdf((-0.5 - v) / scale)
    return lower_bound(p, LIKELIHOOD_MIN)


class FactorizedDensity(nn.Module):
    """Per-row learned CDF ``c(v) = sigmoid(f(v))`` with ``f`` monotone (Ballé 2018).

    ``rows`` densities are held; ``likelihood(v, rows)`` evaluates row
    ``rows[b, c]`` at ``v[b, c, ...]``, so one module serves the per-channel
    prior of ``z`` and the per-(quality, channel) prior of a factorized ``y``.
    """

    def __init__(self, rows: int, filters=(3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((rows, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(rows, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(rows, dims[i + 1], 1)))
        self.rows = rows

    def logits_cdf(self, v, rows):
        """v: (B, C, L) values; rows: (B, C) long row ids -> (B, C, L) logits of the CDF."""
        v = v.unsqueeze(2)  # (B, C, 1, L)
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            v = F.softplus(m[rows]) @ v + b[rows]
            if i < len(self.factors):
                v = v + torch.tanh(self.factors[i][rows]) * torch.tanh(v)
        return v.squeeze(2)

    def likelihood(self, v, rows):
        """P(bin of width 1 around v), v: (B, C, H, W), rows: (B, C)."""
        B, C = v.shape[:2]
        flat = v.reshape(B, C, -1)
        lo = self.logits_cdf(flat - 0.5, rows)
        hi = self.logits_cdf(flat + 0.5, rows)
        # evaluate in the tail where the sigmoid is accurate (1 - s(a) = s(-a))
        sign = -torch.sign(lo + hi).detach()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        p = (torch.sigmoid(sign * hi) - torch.sigmoid(sign * lo)).abs()
        return lower_bound(p, LIKELIHOOD_MIN).reshape(v.shape)

    @torch.no_grad()
    def tables(self, tail: float = 1e-9, search: int = 4096):
        """Integer tables for every row: (pmf (rows, n_max) int32, offset (rows,), length (rows,)).

        Row r codes the integers ``offset[r] .. offset[r] + length[r] - 2``; the
        last symbol ``length[r] - 1`` is the escape."""
        grid = torch.arange(-search, search + 1, dtype=torch.float32)
        out = []
        for r in range(self.rows):
            rid = torch.full((1, 1), r, dtype=torch.long)
            cdf = torch.sigmoid(self.logits_cdf((grid + 0.5).view(1, 1, -1), rid)).view(-1).double()
            lo = int(torch.nonzero(cdf > tail / 2)[0]) if bool((cdf > tail / 2).any()) else search
            hi = int(torch.nonzero(cdf < 1 - tail / 2)[-1]) + 1 if bool((cdf < 1 - tail / 2).any()) else search
            hi = max(hi, lo)
            upper = cdf[lo : hi + 1]
            lower = torch.cat([cdf[lo - 1 : lo] if lo > 0 else torch.zeros(1, dtype=torch.float64), cdf[lo:hi]])
            pmf = (upper - lower).clamp_min(0).numpy()
            out.append((int(grid[lo]), pmf))
        return pack_tables(out)


def gaussian_tables():
    """Integer tables of the zero-mean discretized Gaussian at every scale of the scale table."""
    out = []
    for k in range(SCALE_LEVELS):
        sigma = math.exp((SCALE_T0 + k * SCALE_STEP) / 256)
        r = max(1, math.ceil(TAIL_SIGMAS * sigma))
        s = torch.arange(-r, r + 1, dtype=torch.float64)
        pmf = (std_normal_cdf((s + 0.5) / sigma) - std_normal_cdf((s - 0.5) / sigma)).numpy()
        out.append((-r, pmf))
    return pack_tables(out)


def quantize_pmf(pmf: np.ndarray) -> np.ndarray:
    """Float pmf (without escape) -> int64 counts summing to 2**PRECISION, escape appended, all >= 1."""
    pmf = np.asarray(pmf, dtype=np.float64)
    n = pmf.size + 1
    total = 1 << PRECISION
    tail = max(0.0, 1.0 - float(pmf.sum()))
    p = np.append(pmf, tail)
    counts = np.maximum(1, np.floor(p / p.sum() * (total - n)).astype(np.int64) + 1)
    diff = total - int(counts.sum())
    # hand the rounding remainder to (or take it from) the most probable symbol
    i = int(np.argmax(counts))
    counts[i] += diff
    if counts[i] < 1:
        raise ValueError("probability table cannot be normalised")
    return counts


def pack_tables(rows):
    n_max = max(len(pmf) + 1 for _, pmf in rows)
    table = np.zeros((len(rows), n_max), dtype=np.int32)
    offsets = np.zeros(len(rows), dtype=np.int32)
    lengths = np.zeros(len(rows), dtype=np.int32)
    for r, (off, pmf) in enumerate(rows):
        c = quantize_pmf(pmf)
        table[r, : c.size] = c
        offsets[r], lengths[r] = off, c.size
    return torch.from_numpy(table), torch.from_numpy(offsets), torch.from_numpy(lengths)
