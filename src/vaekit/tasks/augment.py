"""Latent augmentation: new plausible variants of images by moving through a VAE's latent space.

``latent_variants`` encodes an image, perturbs the posterior mean with noise
scaled by the posterior's own standard deviation times ``strength``, and
decodes: strength 0 is the reconstruction, 1 a draw from the posterior, larger
values wander further.  ``interpolate_pair`` mixes two images of the same
class in latent space.  ``latent_neighbours`` goes further afield: it draws a
pool of samples from the VAE's prior and returns, for each image, the samples
whose posterior means lie nearest to its own (cosine similarity of the
centred means) -- other plausible images of the model that sit beside it in
latent space, which an unconditional VAE can offer as same-label variants.
Optionally each variant also gets a seeded classical random affine
(``classical=True``), the two kinds of augmentation combined.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import VaekitError
from .common import check_image_vae


def check_strength(strength: float):
    if not (0.0 <= float(strength) <= 3.0):
        raise VaekitError(f"strength must be between 0 and 3, got {strength}")


@torch.no_grad()
def latent_variants(
    model, x: torch.Tensor, n: int, *, strength: float = 0.5, seed: int = 0, classical: bool = False
) -> torch.Tensor:
    """x: (B, C, H, W) in [0, 1] -> (B, n, C, H, W) variants (likelihood means, in [0, 1])."""
    if n < 1:
        raise VaekitError(f"the number of variants must be at least 1, got {n}")
    check_strength(strength)
    check_image_vae(model, "augment")
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(seed)
    mu, logvar = model.posterior(x)
    std = torch.exp(0.5 * logvar)
    eps = torch.randn((n,) + tuple(mu.shape), generator=g).to(mu.device)
    z = (mu.unsqueeze(0) + strength * std.unsqueeze(0) * eps).reshape((n * mu.shape[0],) + tuple(mu.shape[1:]))
    out = model.likelihood.mean(model.decode(z)).clamp(0, 1)
    out = out.view((n, x.shape[0]) + tuple(out.shape[1:])).transpose(0, 1).contiguous()
    if classical:
        out = _affine_each(out, seed + 1)
    return out


def decoder_tangents(model, z: torch.Tensor, k: int = 10, iters: int = 8, seed: int = 0) -> torch.Tensor:
    """The ``k`` latent directions along which the decoder's image moves most, at each latent of ``z``.

    For the map g(z) = likelihood mean of decode(z), these are the top-k right singular vectors of its
    Jacobian J (image pixels x latent dims), found per example by subspace iteration on JᵀJ over 2k
    vectors (oversampled, then the best k kept by Rayleigh-Ritz), with forward- and reverse-mode products:
    about 4·k·iters decoder passes on the batch; J is never formed.  Returns (B, k, *z.shape[1:]) unit
    vectors, orthonormal per example, strongest first."""
    from torch.func import jvp, vjp

    B = z.shape[0]
    d = z[0].numel()
    k = min(int(k), d)
    width = min(2 * k, d)

    def g(v):
        return model.likelihood.mean(model.decode(v.view_as(z))).flatten(1)

    gen = torch.Generator(device="cpu").manual_seed(seed)
    V = torch.linalg.qr(torch.randn(B, d, width, generator=gen).to(z))[0]  # (B, d, width)
    zf = z.detach().flatten(1)
    _, pullback = vjp(g, zf)
    for _ in range(max(int(iters), 1)):
        W = torch.stack([pullback(jvp(g, (zf,), (V[..., i],))[1])[0] for i in range(width)], 2)  # JᵀJ V
        V = torch.linalg.qr(W)[0]
    JV = torch.stack([jvp(g, (zf,), (V[..., i],))[1] for i in range(width)], 2)  # (B, pixels, width)
    _, R = torch.linalg.eigh(JV.transpose(1, 2) @ JV)  # ascending gains
    V = V @ R.flip(-1)[..., :k]
    return V.transpose(1, 2).reshape((B, k) + tuple(z.shape[1:])).detach()


@torch.no_grad()
def tangent_variants(
    model, x: torch.Tensor, n: int, *, strength: float = 3.0, seed: int = 0, k: int = 10, classical: bool = False
) -> torch.Tensor:
    """x: (B, C, H, W) in [0, 1] -> (B, n, C, H, W): moves of ``strength`` latent units along random mixes
    of the decoder's ``k`` strongest directions at the posterior mean (``decoder_tangents``), decoded.

    Where posterior noise (``latent_variants``) moves the latent in the directions the encoder is unsure
    of -- mostly ones the decoder ignores -- these are the directions in which the image changes most:
    the model's own modes of variation around the image (on MNIST: slant, width, stroke thickness)."""
    if n < 1:
        raise VaekitError(f"the number of variants must be at least 1, got {n}")
    check_strength(strength)
    check_image_vae(model, "augment")
    if getattr(model, "conditional", False):
        raise VaekitError("tangent variants need an unconditional VAE")
    model.eval()
    mu = model.posterior(x)[0]
    with torch.enable_grad():
        V = decoder_tangents(model, mu, k, seed=seed)  # (B, k, ...)
    g = torch.Generator(device="cpu").manual_seed(seed)
    c = torch.randn((n, mu.shape[0], V.shape[1]) + (1,) * (mu.dim() - 1), generator=g).to(mu)
    z = (mu.unsqueeze(0) + strength * (c * V.unsqueeze(0)).sum(2)).reshape((n * mu.shape[0],) + tuple(mu.shape[1:]))
    out = model.likelihood.mean(model.decode(z)).clamp(0, 1)
    out = out.view((n, x.shape[0]) + tuple(out.shape[1:])).transpose(0, 1).contiguous()
    if classical:
        out = _affine_each(out, seed + 1)
    return out


def _affine_each(images: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded classical random affine on every image of (..., C, H, W)."""
    from ..enhance import random_affine

    rng = np.random.default_rng(seed)
    arr = images.cpu().numpy().copy()
    flat = arr.reshape((-1,) + arr.shape[-3:])
    for k in range(flat.shape[0]):
        img = flat[k].transpose(1, 2, 0)
        flat[k] = np.atleast_3d(random_affine(img[..., 0] if img.shape[2] == 1 else img, rng)).transpose(2, 0, 1)
    return torch.from_numpy(flat.reshape(arr.shape)).to(images.device)


@torch.no_grad()
def interpolate_pair(model, a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Decode (1 - t) * mean_q(a) + t * mean_q(b) for images a, b: (C, H, W) each."""
    model.eval()
    za = model.posterior(a.unsqueeze(0))[0]
    zb = model.posterior(b.unsqueeze(0))[0]
    return model.likelihood.mean(model.decode((1 - t) * za + t * zb))[0].clamp(0, 1)


class PriorPool:
    """``size`` decoded prior samples of a generative VAE with their posterior means.

    Samples are drawn in chunks under their own seed (the global RNG is left
    alone) and kept as 8-bit images; memory is ``size`` x (pixels + latent
    dims x 4) bytes (50,000 MNIST samples: about 60 MB)."""

    @torch.no_grad()
    def __init__(self, model, size: int = 50000, *, seed: int = 0, chunk: int = 5000):
        if size < 1:
            raise VaekitError(f"the prior pool needs at least one sample, got {size}")
        check_image_vae(model, "augment")
        if getattr(model, "conditional", False):
            raise VaekitError(
                "latent neighbours need an unconditional VAE (a class-conditional one keeps the "
                "label by itself: use it without --method neighbours)"
            )
        model.eval()
        images, latents = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i in range(0, size, chunk):
                x8 = (model.sample(min(chunk, size - i)).clamp(0, 1).float() * 255).round()
                latents.append(model.posterior(x8 / 255)[0].flatten(1))  # the image as stored, as a query sees it
                images.append(x8.to(torch.uint8))
        self.images = torch.cat(images)
        self.latents = torch.cat(latents)
        self.centre = self.latents.mean(0)
        self.unit = torch.nn.functional.normalize(self.latents - self.centre, dim=1)
        self.seed = seed

    def __len__(self):
        return len(self.images)

    @torch.no_grad()
    def nearest(self, model, x: torch.Tensor, n: int):
        """x: (B, C, H, W) -> (images (B, n, C, H, W) in [0, 1], similarity (B, n), pool index (B, n))."""
        if n < 1:
            raise VaekitError(f"the number of variants must be at least 1, got {n}")
        if n > len(self):
            raise VaekitError(f"-n {n} is larger than the prior pool ({len(self)} samples)")
        model.eval()
        q = torch.nn.functional.normalize(model.posterior(x)[0].flatten(1) - self.centre, dim=1)
        sim, idx = (q @ self.unit.T).topk(n, dim=1)
        return self.images[idx].float() / 255, sim, idx


def latent_neighbours(model, x: torch.Tensor, n: int, *, pool: int = 50000, seed: int = 0):
    """For each image of x (B, C, H, W), the ``n`` of ``pool`` prior samples nearest in latent space:
    (B, n, C, H, W) in [0, 1].  See ``PriorPool``."""
    return PriorPool(model, pool, seed=seed).nearest(model, x, n)[0]


def _model_size(model):
    shape = getattr(model, "image_shape", None)
    return tuple(shape) if shape is not None else None


def _load_for_model(path, model):
    """Read an image as the model sees it: its channel count, resized to its input size if it has one."""
    from PIL import Image

    from ..io import read_image

    shape = _model_size(model)
    mode = "L" if shape is None or shape[0] == 1 else "RGB"
    x = read_image(path, mode=mode)
    if shape is not None and tuple(x.shape[-2:]) != tuple(shape[1:]):
        kind = "gray" if shape[0] == 1 else "RGB"
        warnings.warn(  # once per run: a photo through a digit model comes back as a 28x28 digit-like image
            f"images are resized to the model's {shape[2]}x{shape[1]} {kind} input, and so are their variants",
            stacklevel=2,
        )
        arr = (x.permute(1, 2, 0).squeeze(-1).numpy() * 255).round().astype(np.uint8)
        arr = np.asarray(Image.fromarray(arr).resize((shape[2], shape[1]), Image.Resampling.LANCZOS), np.float32) / 255
        x = torch.from_numpy(arr).permute(2, 0, 1) if arr.ndim == 3 else torch.from_numpy(arr)[None]
    return x


METHODS = ("variants", "tangent", "neighbours")
DEFAULT_STRENGTH = {"variants": 0.5, "tangent": 3.0, "neighbours": 0.0}  # neighbours ignores it; tangent: bench_augment


def default_strength(method: str, strength=None) -> float:
    if method not in METHODS:
        raise VaekitError(f"unknown augmentation method {method!r}; choose one of {', '.join(METHODS)}")
    return DEFAULT_STRENGTH[method] if strength is None else float(strength)


def augment_paths(
    src,
    dst,
    *,
    n: int = 10,
    strength: float | None = None,
    model="mnist-vae",
    seed: int = 0,
    keep_label: bool = False,
    classical: bool = False,
    method: str = "variants",
    pool: int = 50000,
    shard=None,
    overwrite=False,
    progress=False,
):
    """Write ``n`` variants of every image under ``src`` into ``dst`` (same relative folders) through
    :func:`vaekit.batch.run`; each input's line in ``dst/manifest.jsonl`` lists its ``variants``: output,
    source, strength, seed, variant, label.  ``method="neighbours"``: the variants are the image's nearest prior samples
    in latent space (``PriorPool`` of ``pool`` samples drawn with ``seed``); ``method="tangent"``:
    moves along the decoder's strongest directions (``tangent_variants``).  With ``keep_label`` these two
    take the class of the source's folder, so an unconditional VAE can keep labels.  ``strength``
    None: the method's default (``DEFAULT_STRENGTH``)."""
    from pathlib import Path

    from .. import batch
    from ..data import find_images
    from ..io import write_image
    from ..pretrained import load_model

    if n < 1:
        raise VaekitError(f"-n must be at least 1, got {n}")
    strength = default_strength(method, strength)
    check_strength(strength)
    src, dst = Path(src), Path(dst)
    files = find_images(src)
    if not files:
        raise VaekitError(f"no images found under {src}")
    m = load_model(model) if isinstance(model, (str, Path)) else model
    check_image_vae(m, "augment")  # before any input is read
    if method == "tangent" and getattr(m, "conditional", False):
        raise VaekitError("tangent variants need an unconditional VAE")
    classes = None
    neighbours = PriorPool(m, pool, seed=seed) if method == "neighbours" else None
    if neighbours is not None and n > len(neighbours):  # a usage error, before any input is read
        raise VaekitError(f"-n {n} is larger than the prior pool ({len(neighbours)} samples)")
    folder_labels = method in ("neighbours", "tangent")  # an unconditional VAE: the folder gives the class
    if keep_label and folder_labels:
        if src.is_file():
            raise VaekitError("--keep-label reads a folder with one subfolder per class")
        classes = sorted({f.relative_to(src).parts[0] for f in files if len(f.relative_to(src).parts) > 1})
        if not classes:
            raise VaekitError(f"{src}: with --keep-label images must sit in one subfolder per class")
    elif getattr(m, "conditional", False) and not keep_label and method == "variants":
        raise VaekitError("a class-conditional model needs each image's class: give --keep-label, a folder per class")
    elif keep_label:
        if not getattr(m, "conditional", False):
            raise VaekitError(
                "--keep-label needs a class-conditional model (arch cvae), e.g. one trained with "
                "configs/cvae-mnist.yaml"
            )
        if src.is_file():
            raise VaekitError("--keep-label reads a folder with one subfolder per class")
        classes = (getattr(m, "card", {}) or {}).get("data", {}).get("classes") or [
            str(i) for i in range(m.num_classes)
        ]
    root = src if src.is_dir() else src.parent
    index = {f: i for i, f in enumerate(files)}  # a variant's seed follows the input's place in the folder
    items = []
    for f in files:
        rel = f.relative_to(root)
        if keep_label and (len(rel.parts) < 2 or rel.parts[0] not in classes):  # the layout, checked up front
            raise VaekitError(
                f"{f}: with --keep-label images must sit in a class folder named one of {', '.join(classes)}"
            )
        items.append(batch.Item(f, rel.as_posix(), dst / rel.with_name(f"{rel.stem}_aug000.png")))

    def work(it, x):
        rel = Path(it.rel)
        label = None
        if keep_label:
            label = classes.index(rel.parts[0])
            if not folder_labels:
                m.condition(torch.tensor([label]))
        img_seed = seed * 1_000_003 + index[it.input]
        if method == "variants":
            variants = latent_variants(m, x, n, strength=strength, seed=img_seed, classical=classical)[0]
            extra = [{"strength": strength}] * n
        elif method == "tangent":
            variants = tangent_variants(m, x, n, strength=strength, seed=img_seed, classical=classical)[0]
            extra = [{"method": "tangent", "strength": strength}] * n
        else:
            found, sim, idx = neighbours.nearest(m, x, n)
            variants = found[0]
            if classical:
                variants = _affine_each(variants, img_seed)
            extra = [
                {
                    "method": "neighbours",
                    "pool": len(neighbours),
                    "pool_seed": seed,
                    "pool_index": int(idx[0, j]),
                    "similarity": round(float(sim[0, j]), 4),
                }
                for j in range(n)
            ]
        outs, rows = [], []
        for j in range(n):
            out = (dst / rel).with_name(f"{rel.stem}_aug{j:03d}.png")
            write_image(out, variants[j])
            outs.append(out)
            rows.append(
                {
                    "output": str(out.relative_to(dst)),
                    "source": str(it.input),
                    **extra[j],
                    "seed": img_seed,
                    "variant": j,
                    "classical": classical,
                    **({"label": classes[label]} if label is not None else {}),
                }
            )
        return outs, {"variants": rows}

    return batch.run(
        items,
        work,
        read=lambda it: _load_for_model(it.input, m).unsqueeze(0),
        out=dst,
        folder=True,
        settings=batch.settings_of(
            n=n,
            strength=strength,
            model=model,
            seed=seed,
            keep_label=keep_label,
            classical=classical,
            method=method,
            pool=pool,
        ),
        shard=shard,
        overwrite=overwrite,
        progress=progress,
    )


def augment(
    images,
    n: int = 10,
    *,
    strength: float | None = None,
    model="mnist-vae",
    seed: int = 0,
    classical: bool = False,
    labels=None,
    output=None,
    keep_label: bool = False,
    method: str = "variants",
    pool: int = 50000,
    device=None,
):
    """Latent variants of images (the API behind ``vaekit augment``).

    ``images``: a (B, C, H, W) tensor or array in [0, 1] -> (B, n, C, H, W) variants; ``labels``
    (B,) conditions a class-conditional model.  ``method="neighbours"``: the n nearest
    of ``pool`` prior samples in latent space instead (``latent_neighbours``);
    ``method="tangent"``: moves along the decoder's strongest directions
    (``tangent_variants``).  ``strength`` None: the method's default.  Or a
    file / folder path with ``output``: writes the variants and ``manifest.jsonl``
    there and returns one row per variant written."""
    from pathlib import Path

    if isinstance(images, (str, Path)):
        if output is None:
            raise VaekitError("augment(path, ...) needs output=FOLDER")
        done = augment_paths(
            images,
            output,
            n=n,
            strength=strength,
            model=model,
            seed=seed,
            keep_label=keep_label,
            classical=classical,
            method=method,
            pool=pool,
        )
        return [v for row in done.rows for v in row["variants"]]
    from .common import model_batch, resolve_model

    strength = default_strength(method, strength)
    m = resolve_model(model, device=device)
    x = model_batch(m, images, "augment").to(next(m.parameters()).device)
    if method == "tangent":
        if labels is not None:
            raise VaekitError("labels are not used by method='tangent' (it moves an unconditional VAE's latent)")
        return tangent_variants(m, x, n, strength=strength, seed=seed, classical=classical)
    if method == "neighbours":
        if labels is not None:
            raise VaekitError("labels are not used by method='neighbours' (it searches an unconditional VAE's samples)")
        out = PriorPool(m, pool, seed=seed).nearest(m, x, n)[0]
        return _affine_each(out, seed + 1) if classical else out
    if labels is not None:
        if not getattr(m, "conditional", False):
            raise VaekitError("labels need a class-conditional model (arch cvae)")
        m.condition(torch.as_tensor(labels).long())
    elif getattr(m, "conditional", False):
        raise VaekitError("a class-conditional model needs the images' labels")
    return latent_variants(m, x, n, strength=strength, seed=seed, classical=classical)
