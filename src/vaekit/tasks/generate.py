"""Generation and likelihood evaluation with any VAE of the package."""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.nn.functional as F

from .. import metrics
from ..errors import VaekitError


@contextlib.contextmanager
def seeded(seed: int | None):
    """Seed torch's RNG inside the block and restore the caller's state after it."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def _labels(m, label, n: int):
    """The labels a class-conditional model is sampled with: ``label`` for all, else classes in turn."""
    if not getattr(m, "conditional", False):
        if label is not None:
            raise VaekitError("a label is only for class-conditional models, such as cvae-mnist")
        return None
    if label is None:
        return torch.arange(n) % m.num_classes
    if not 0 <= int(label) < m.num_classes:
        raise VaekitError(f"label must lie in 0..{m.num_classes - 1}, got {label}")
    return torch.full((n,), int(label))


@torch.no_grad()
def generate(
    model, n: int = 64, *, temperature: float = 1.0, seed: int | None = 0, device=None, label: int | None = None
) -> torch.Tensor:
    """``n`` prior samples (B, C, H, W) in [0, 1] (the likelihood's mean) of ``model`` (a name, path or module),
    drawn on ``device`` and returned on the CPU.  A class-conditional model draws class ``label``, or the
    classes in turn (0, 1, ..., 9, 0, ...) without one."""
    from .common import check_image_vae, resolve_model

    if n < 1:
        raise VaekitError("the number of samples must be at least 1")
    if not (math.isfinite(temperature) and temperature > 0):
        raise VaekitError(f"temperature must be a positive number, got {temperature}")
    m = resolve_model(model, device=device)
    check_image_vae(m, "generate")
    labels = _labels(m, label, n)
    with seeded(seed):
        if labels is not None:
            return m.sample_class(labels, temperature).clamp(0, 1).cpu()
        return m.sample(n, temperature).clamp(0, 1).cpu()


def fit_image(model, img: torch.Tensor) -> torch.Tensor:
    """Bring a (C, H, W) image to the model's input shape (channels and size)."""
    shape = getattr(model, "image_shape", None)
    c = shape[0] if shape else getattr(model, "in_channels", img.shape[0])
    from ..io import convert_channels

    img = convert_channels(img, "L" if c == 1 else "RGB")
    if shape and tuple(img.shape[-2:]) != tuple(shape[-2:]):
        img = F.interpolate(img[None], size=tuple(shape[-2:]), mode="bilinear", antialias=True, align_corners=False)[0]
    return img.clamp(0, 1)


@torch.no_grad()
def interpolate(model, a, b, steps: int = 10, *, device=None, label: int | None = None) -> torch.Tensor:
    """Decode ``steps`` points on the line between the posterior means of images ``a`` and ``b`` ((C, H, W)
    tensors, or numpy images of the task contract), both ends included: (steps, C, H, W) on the CPU.  A
    class-conditional model needs the images' class, ``label``."""
    from ..io import as_float_image
    from .common import check_image_vae, resolve_model

    if steps < 2:
        raise VaekitError("--steps must be at least 2 (both ends are included)")
    model = resolve_model(model, device=device)
    check_image_vae(model, "interpolate")
    if getattr(model, "conditional", False) and label is None:
        raise VaekitError("a class-conditional model interpolates within one class: give its label")
    labels = _labels(model, label, 1)
    if labels is not None:
        model.condition(labels)
    dev = next(model.parameters()).device

    def chw(img):
        if isinstance(img, torch.Tensor) and img.dim() == 3:
            return img.float()
        arr = as_float_image(img)[0]
        t = torch.from_numpy(arr).float()
        return t[None] if t.dim() == 2 else t.permute(2, 0, 1)

    za, zb = model.encode(torch.stack([fit_image(model, chw(a)), fit_image(model, chw(b))]).to(dev)).unbind(0)
    t = torch.linspace(0, 1, steps).view(-1, *([1] * za.ndim))
    z = (1 - t.to(dev)) * za + t.to(dev) * zb
    return model.likelihood.mean(model.decode(z)).clamp(0, 1).cpu()


@torch.no_grad()
def evaluate(
    model,
    images: torch.Tensor,
    *,
    labels=None,
    k: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
    progress=None,
) -> dict:
    """Likelihood and reconstruction figures of ``model`` (a name, path or module) on ``images`` (N, C, H, W);
    a class-conditional model is evaluated given the images' ``labels`` (N,), so its likelihoods are log p(x | y).

    Returns per-example means: ``elbo``, ``kl``, ``rec`` (nats), ``nll``
    (IWAE bound with ``k`` samples, nats; skipped when k=0),
    ``bits_per_dim`` (when the likelihood is discrete), ``active_units``,
    reconstruction ``mse``/``psnr``/``ssim`` of the posterior-mean decoding
    against the model's input, and posterior spreads.
    """
    from .common import model_batch, resolve_model

    model = resolve_model(model, device=images.device if torch.is_tensor(images) else None)
    images = model_batch(model, images, "eval").to(next(model.parameters()).device)
    conditional = getattr(model, "conditional", False)
    if conditional and labels is None:
        raise VaekitError("a class-conditional model is evaluated given the images' labels")
    model.eval()
    with seeded(seed):
        sums = {
            "elbo": 0.0,
            "kl": 0.0,
            "rec": 0.0,
            "nll": 0.0,
            "mse": 0.0,
            "psnr": 0.0,
            "ssim": 0.0,
            "posterior_std": 0.0,
            "sample_spread": 0.0,
        }
        means, means2, per_nll = [], [], []
        n = images.shape[0]
        t0 = time.perf_counter()
        for i in range(0, n, batch_size):
            x = images[i : i + batch_size]
            if conditional:
                model.condition(labels[i : i + batch_size])
            out = model.terms(x, 1)
            m = model.loss(x, out)
            bsz = x.shape[0]
            for key in ("elbo", "kl", "rec"):
                sums[key] += float(m[key]) * bsz
            means.append(out["mu"].flatten(1))
            if out.get("mu2") is not None:
                means2.append(out["mu2"].flatten(1))
            sums["posterior_std"] += float(torch.exp(0.5 * out["logvar"]).mean()) * bsz
            rec = model.reconstruct(x)
            sums["mse"] += float(((rec - x) ** 2).mean()) * bsz
            sums["psnr"] += float(metrics.psnr(rec, x).sum())
            sums["ssim"] += float(metrics.ssim(rec, x).sum())
            # spread of decodings of 8 posterior samples, per pixel (a VAE's uncertainty)
            z = out["mu"] + torch.exp(0.5 * out["logvar"]) * torch.randn((8,) + tuple(out["mu"].shape))
            dec = model.likelihood.mean(model.decode(z.flatten(0, 1))).view(8, *x.shape)
            sums["sample_spread"] += float(dec.std(0).mean()) * bsz
            if k > 0:
                ll = metrics.iwae_log_likelihood(model, x, k)
                per_nll.append(-ll)
                sums["nll"] += float(-ll.sum())
            if progress is not None:
                progress(min(i + batch_size, n), n)
        res = {key: v / n for key, v in sums.items()}
        if k <= 0:
            res.pop("nll")
        dims = math.prod(images.shape[1:])
        if model.likelihood.discrete:
            res["bits_per_dim"] = metrics.bits_per_dim(res.get("nll", -res["elbo"]), dims)
            res["elbo_bits_per_dim"] = metrics.bits_per_dim(-res["elbo"], dims)
        mu = torch.cat(means)
        res["active_units"] = metrics.active_units(mu)
        res["latent_dims"] = mu.shape[1]
        if means2:
            mu2 = torch.cat(means2)
            res["active_units_top"] = metrics.active_units(mu2)
            res["latent_dims_top"] = mu2.shape[1]
        res.update(n=n, k=k, seconds=time.perf_counter() - t0)
        if conditional:
            res["given_labels"] = True  # log p(x | label), not log p(x)
        if per_nll:
            res["nll_per_example"] = torch.cat(per_nll).tolist()
        return res
