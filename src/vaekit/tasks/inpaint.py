"""Inpainting and repair: fill the missing pixels of an image, with several plausible fills.

Two VAE routes, both real:

* :func:`vae_inpaint` -- the mask-aware :class:`~vaekit.models.inpainter.InpaintingVAE`
  (shipped as ``inpaint-color``; gray images go through it as three equal channels).
  It was trained on holes no deeper than ``fill_radius`` pixels (the distance from a
  missing pixel to the nearest known one); deeper holes are filled **coarse to fine**:
  the image and mask are halved (a coarse pixel is missing if any of its four is) until
  the hole fits, filled there, and each finer level takes the upsampled coarse fill for
  its pixels deeper than the radius and lets the model fill the band between them and the
  known pixels.  Each posterior draw runs the whole pyramid with its own latent draws, so a
  model that uses its latent gives fills that differ in structure as well as in detail (the
  shipped one does not use it yet: its fills are alike).  Large images are cut into
  overlapping tiles (blended linearly); tiles without a hole are not run.
* :func:`latent_inpaint` -- any generative VAE of the package (e.g. ``mnist-vae``) repairs
  images of its own domain by pseudo-Gibbs sampling (Rezende et al. 2014): fill the
  hole, draw z ~ q(z | x), decode, put the decoding back into the hole only, repeat.
  With ``samples=1`` it iterates with the posterior mean instead (a deterministic fixed point).

In every route the known pixels are returned exactly as they came in.

:func:`detect_scratches` finds thin bright or dark lines (old-photo scratches) with a
morphological top-hat; the mask it returns is what gets filled, and can be saved and
inspected (``--save-mask``).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from .. import degrade
from ..errors import VaekitError
from ..io import as_float_image, restore_layout
from ..models.layers import dihedral
from .common import Result, check_ensemble, check_samples, ensemble_transforms, ramp, resolve_model, tile_starts

SHIPPED_INPAINTER = "inpaint-color"


# ----------------------------------------------------------------------------- models
def _is_generative(m) -> bool:
    from ..models.base import VAEBase

    return isinstance(m, VAEBase)


def load_inpainter(model=None, device=None):
    """An inpaint-vae or any generative VAE: a loaded module, a name / run folder, or the shipped one."""
    from ..models.inpainter import InpaintingVAE
    from ..pretrained import SHIPPED

    if model is None and SHIPPED_INPAINTER not in SHIPPED:
        raise VaekitError(
            "no VAE inpainter is shipped in this build: pass --model (a run folder or a "
            "generative VAE such as mnist-vae) or use a classical --method"
        )
    m = resolve_model(model, SHIPPED_INPAINTER, device=device)
    if not isinstance(m, InpaintingVAE) and not _is_generative(m):
        raise VaekitError(
            f"{model or 'the model'} can not inpaint: use an inpaint-vae (vaekit train with "
            "model: inpaint-vae) or a generative VAE of the package (mlp-vae, conv-vae, hvae)"
        )
    return m.eval()


# ----------------------------------------------------------------------------- mask-aware VAE
def _to_tensor(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return t[None, None] if t.dim() == 2 else t.permute(2, 0, 1)[None]


def _depth(m: torch.Tensor) -> np.ndarray:
    """Distance (pixels) from each missing pixel to the nearest known one; 0 on known pixels."""
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(m[0, 0].numpy() > 0.5)


def _mix(a: int, b: int) -> int:
    """A generator seed from two integers (fits torch's 64-bit seeds)."""
    return (int(a) * 1_000_003 + int(b)) % (2**61 - 1)


def _tiled_fill(model, t, m, draw: bool, gen_seed: int, tile: int, overlap: int):
    """One fill of ``t`` (1,C,H,W) where ``m`` (1,1,H,W) is 1: a posterior draw, or the prior-mean pass."""
    H, W = t.shape[-2:]
    out = torch.zeros_like(t)
    wsum = torch.zeros(1, 1, H, W)
    tile = max(int(tile), 64)
    ys, xs = tile_starts(H, tile, tile - overlap), tile_starts(W, tile, tile - overlap)
    n = 0
    for i, top in enumerate(ys):
        for j, left in enumerate(xs):
            h, w = min(tile, H - top), min(tile, W - left)
            patch, mp = t[..., top : top + h, left : left + w], m[..., top : top + h, left : left + w]
            if bool(mp.any()):
                ph, pw = (-h) % model.STRIDE, (-w) % model.STRIDE
                if ph or pw:  # padding is marked missing, so it never counts as context
                    patch = F.pad(patch, (0, pw, 0, ph))
                    mp = F.pad(mp, (0, pw, 0, ph), value=1.0)
                g = torch.Generator().manual_seed(_mix(gen_seed, n))
                mean, _, draws = model.inpaint(patch, mp, samples=1 if draw else 0, generator=g)
                res = (draws[0] if draw else mean)[..., :h, :w]
            else:
                res = patch
            wt = torch.from_numpy(
                np.outer(ramp(h, overlap, i == 0, i == len(ys) - 1), ramp(w, overlap, j == 0, j == len(xs) - 1))
            )[None, None]
            out[..., top : top + h, left : left + w] += res * wt
            wsum[..., top : top + h, left : left + w] += wt
            n += 1
    return out / wsum


def _pyramid_fill(model, t, m, draw: bool, seed: int, tile: int, overlap: int, level: int = 0):
    depth = _depth(m)
    R = float(getattr(model, "fill_radius", 24))
    H, W = t.shape[-2:]
    if depth.max() <= R or min(H, W) < 32 or level >= 8:
        return _tiled_fill(model, t, m, draw, _mix(seed, level), tile, overlap)
    ph, pw = H % 2, W % 2
    tp = F.pad(t * (1 - m), (0, pw, 0, ph))
    kp = F.pad(1 - m, (0, pw, 0, ph))  # padding: not known
    num, den = F.avg_pool2d(tp, 2), F.avg_pool2d(kp, 2)
    mc = (den < 0.999).float()  # a coarse pixel is missing if any of its four is
    tc = torch.where(mc > 0, torch.zeros_like(num), num / den.clamp_min(1e-8))
    coarse = _pyramid_fill(model, tc, mc, draw, seed, tile, overlap, level + 1)
    up = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)[..., :H, :W]
    deep = torch.from_numpy(depth > R)[None, None]
    t2 = torch.where(deep, up, t)
    m2 = m * (~deep).float()
    return _tiled_fill(model, t2, m2, draw, _mix(seed, level), tile, overlap)


@torch.no_grad()
def vae_inpaint(
    model,
    image,
    mask,
    *,
    samples: int = 1,
    seed: int = 0,
    tile: int = 512,
    overlap: int = 32,
    progress=None,
    ensemble: int = 1,
):
    """Fill ``mask`` (bool H x W, True = missing) in ``image`` with an inpaint-vae.

    Returns (estimate, std, fills): ``samples=1`` is one pass with the prior means (std None,
    no fills); ``samples=N>1`` draws N fills, the estimate is their mean, and the std combines their spread
    with the decoder's scale inside the hole (0 on known pixels).

    ``ensemble`` (1, 2, 4 or 8): each fill is the average of that many passes over flipped and quarter-turned
    copies of the image, turned back (the self-ensemble of Lim et al. 2017): a convolutional inpainter's errors
    differ between them, so the average is closer to the truth, at ``ensemble`` times the time (figures:
    docs/models/inpaint-color.md)."""
    turns = ensemble_transforms(check_ensemble(ensemble))
    y = as_float_image(image)[0]
    gray = y.ndim == 2
    if model.channels == 3 and gray:
        y3 = np.repeat(y[..., None], 3, axis=2)
    elif model.channels == 1 and not gray:
        raise VaekitError("this inpainter is for gray images; the image has 3 channels")
    else:
        y3 = y
    t = _to_tensor(y3)
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    t = t * (1 - m)
    k = max(int(samples), 1)
    fills = []
    for j in range(k):
        f = sum(
            dihedral(
                _pyramid_fill(model, dihedral(t, r), dihedral(m, r), k > 1, _mix(int(seed), j), tile, overlap),
                r,
                inverse=True,
            )
            for r in turns
        ) / len(turns)
        a = f[0].numpy()
        a = a[0] if model.channels == 1 else a.transpose(1, 2, 0)
        if gray and a.ndim == 3:
            a = a.mean(2)
        fills.append(_keep_known(a, y, mask))
        if progress is not None:
            progress(j + 1, k)
    # the predictive std inside the hole: the spread of the fills combined with the decoder's own scale
    return _summarize(fills, y, mask, float(model.log_scale.detach().clamp(-9.0, 0.0).exp()))


def _summarize(fills, y, mask, scale: float = 0.0):
    """(estimate, std, fills) from the fills: one fill is the estimate; several give their mean and a std
    inside the hole (their spread combined with ``scale``; 0 on known pixels)."""
    if len(fills) == 1:
        return fills[0], None, []
    st = np.stack(fills)
    mm = mask if st.ndim == 3 else mask[..., None]
    std = np.where(mm, np.sqrt(st.var(0) + scale**2), 0.0).astype(np.float32)
    return _keep_known(st.mean(0), y, mask), std, fills


def _keep_known(fill: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Known pixels exactly as given (float64, as :func:`as_float` reads them); filled pixels clipped to [0, 1]."""
    mm = mask if y.ndim == 2 else mask[..., None]
    return np.where(mm, np.clip(fill, 0.0, 1.0), y)


# ----------------------------------------------------------------------------- any generative VAE
@torch.no_grad()
def latent_inpaint(model, image, mask, *, samples: int = 1, seed: int = 0, iters: int = 100):
    """Fill ``mask`` with a generative VAE of the image's own domain and size (e.g. mnist-vae, 28x28).

    Pseudo-Gibbs: x_hole <- mean of p(x | z), z ~ q(z | x), repeated ``iters`` times from a
    push-pull start; ``samples=1`` uses z = the posterior mean (deterministic).  Returns
    (estimate, std, fills) as :func:`vae_inpaint`."""
    from ..models.inpainter import push_pull

    y = as_float_image(image)[0]
    shape = tuple(getattr(model, "image_shape", ()) or ())
    want = (1 if y.ndim == 2 else 3, *y.shape[:2])
    if shape and tuple(shape) != want:
        raise VaekitError(
            f"this model makes {shape[0]}-channel {shape[2]}x{shape[1]} images; the image is "
            f"{want[0]}-channel {want[2]}x{want[1]}"
        )
    t = _to_tensor(y)
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    k = max(int(samples), 1)
    x = push_pull(t * (1 - m), m).repeat(k, 1, 1, 1)
    known = t.expand_as(x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for _ in range(int(iters)):
            try:
                if k == 1:
                    dec = model.likelihood.mean(model.decode(model.encode(x)))
                else:
                    dec = model.likelihood.mean(model.terms(x, 1)["params"])
                x = torch.where(m > 0, dec.view_as(x), known)
            except (RuntimeError, ValueError) as e:
                raise VaekitError(
                    f"this model cannot take a {want[2]}x{want[1]} {want[0]}-channel image ({str(e).splitlines()[0]})"
                ) from None
    fills = []
    for i in range(k):
        a = x[i].numpy()
        a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
        fills.append(_keep_known(a, y, mask))
    return _summarize(fills, y, mask)


# ----------------------------------------------------------------------------- scratch detection
def _line_footprint(length: int, angle: float) -> np.ndarray:
    from skimage.draw import line

    c = length // 2
    dx, dy = c * np.cos(angle), c * np.sin(angle)
    fp = np.zeros((2 * c + 1, 2 * c + 1), bool)
    rr, cc = line(int(round(c - dy)), int(round(c - dx)), int(round(c + dy)), int(round(c + dx)))
    fp[rr, cc] = True
    return fp


def detect_scratches(
    image,
    *,
    width: int | None = None,
    k: float = 6.0,
    contrast: float = 0.12,
    length: float = 0.08,
    polarity: str = "both",
) -> np.ndarray:
    """A mask of thin, long, bright and/or dark lines (scratches, hairs, cracks on scanned photos).

    1. luminance; white top-hat (bright lines) and black top-hat (dark lines) with a disk of
       radius ``width`` (default: 0.6% of the short side, at least 2 px): lines thinner than the
       disk survive, smooth content and wide structures do not;
    2. the larger response is opened with straight line segments ``length`` x the short side long
       at 24 orientations (the maximum over orientations): a pixel survives only if it lies on a
       straight run that long, which removes texture (fur, foliage) and dots;
    3. threshold at median + ``k`` x 1.4826 x MAD of the top-hat response (a robust, noise-scaled threshold),
       and at least ``contrast`` (image units): a scratch stands out from what it crosses;
    4. dilate by one pixel so the fill covers the line's soft edges.
    """
    from scipy import ndimage
    from skimage import morphology

    if polarity not in ("both", "bright", "dark"):
        raise VaekitError(f"polarity must be both, bright or dark, not {polarity!r}")
    y = as_float_image(image)[0]
    lum = y if y.ndim == 2 else y @ np.array([0.299, 0.587, 0.114])
    short = min(lum.shape)
    r = int(width) if width else max(2, round(0.006 * short))
    fp = morphology.disk(r)
    resp = np.zeros_like(lum)
    if polarity in ("both", "bright"):
        resp = np.maximum(resp, morphology.white_tophat(lum, fp))
    if polarity in ("both", "dark"):
        resp = np.maximum(resp, morphology.black_tophat(lum, fp))
    L = max(5, int(round(length * short)) | 1)
    lines = np.zeros_like(resp)
    for ang in np.arange(24) * np.pi / 24:
        lines = np.maximum(lines, ndimage.grey_opening(resp, footprint=_line_footprint(L, ang)))
    med = np.median(resp)
    bar = max(med + k * 1.4826 * np.median(np.abs(resp - med)), contrast)
    hit = lines > bar
    return ndimage.binary_dilation(hit, morphology.disk(1)) if hit.any() else hit


# ----------------------------------------------------------------------------- the API
def inpaint(
    image,
    mask,
    samples: int = 1,
    *,
    method: str = "vae",
    model=None,
    seed: int = 0,
    device=None,
    tile: int = 512,
    iters: int = 100,
    details: bool = False,
    progress=None,
    ensemble: int = 1,
):
    """Fill the pixels of ``image`` (H x W or H x W x 3; uint8, uint16 or float in [0, 1]) where
    ``mask`` (H x W, True/nonzero = missing) is set.

    ``method``: "vae" (the shipped inpainter, or ``model``: an inpaint-vae run or any generative
    VAE of the image's domain, e.g. "mnist-vae") or a classical one ("telea", "ns", "biharmonic", "harmonic",
    "mean").  ``samples``: 1 gives one estimate (the VAE's prior-mean pass); N > 1 draws N fills
    and returns their mean (the fills and their per-pixel std with ``details=True``).  ``ensemble`` (2, 4 or 8;
    the inpaint-vae only): each fill averages that many passes over flipped and turned copies
    (:func:`vae_inpaint`).

    Known pixels are returned exactly as given; filled ones are clipped to [0, 1].  The result has the input's
    dtype and shape; with ``details=True`` a :class:`~vaekit.tasks.common.Result` (info: mask, method, seconds)."""
    y, layout = as_float_image(image, alpha=True)
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        hint = ": give one of its channels, or mask.any(axis=2)" if mask.ndim == 3 else ""
        raise VaekitError(f"the mask must be H x W (True or nonzero = missing), not of shape {mask.shape}{hint}")
    if mask.shape != y.shape[:2]:
        raise VaekitError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image is {y.shape[1]}x{y.shape[0]}")
    mask = mask.astype(bool)
    degrade.check_mask(mask)
    samples = check_samples(samples)
    check_ensemble(ensemble)
    t0 = time.perf_counter()
    std, fills = None, []
    if method == "vae":
        m = load_inpainter(model, device=device)
        if _is_generative(m):
            if int(ensemble) > 1:
                raise VaekitError("ensemble is for the mask-aware inpainter (inpaint-vae), not a generative VAE")
            est, std, fills = latent_inpaint(m, y, mask, samples=samples, seed=seed, iters=iters)
            name = "vae-latent"
        else:
            est, std, fills = vae_inpaint(
                m, y, mask, samples=samples, seed=seed, tile=tile, progress=progress, ensemble=ensemble
            )
            name = "vae"
    else:
        from .. import baselines

        if int(ensemble) > 1:
            raise VaekitError(f"ensemble is for the VAE inpainter, not the classical method {method!r}")
        est = _keep_known(baselines.get("inpaint", method, learned=("vae",))(y, mask), y, mask)
        name = method
    keep_float = np.issubdtype(layout.dtype, np.floating)  # known pixels exactly as given, even outside [0, 1]
    out = restore_layout(est, layout, clip=not keep_float)
    if not details:
        return out
    info = {"mask": mask, "method": name, "seconds": time.perf_counter() - t0}
    return Result(out, [restore_layout(f, layout, clip=not keep_float) for f in fills], std, info)


# ----------------------------------------------------------------------------- the CLI's work
def parse_box(text: str, shape) -> np.ndarray:
    """``x0,y0,x1,y1`` (end exclusive, pixels) -> a mask of that box, checked against the image size."""
    try:
        x0, y0, x1, y1 = (int(v) for v in str(text).split(","))
    except ValueError:
        raise VaekitError(f"--box must be x0,y0,x1,y1 in whole pixels, not {text!r}") from None
    h, w = shape[:2]
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise VaekitError(
            f"--box {text} does not fit the {w}x{h} image (need 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h})"
        )
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# what --detect finds: scratches (thin bright or dark lines) or the file's transparent pixels (alpha under half,
# where an editor's eraser leaves a hole)
DETECT = ("scratches", "transparent")


def transparent_holes(alpha: np.ndarray) -> np.ndarray:
    """The holes an alpha plane in [0, 1] marks: its pixels under half opacity."""
    return alpha < 0.5


def read_transparent(path, max_pixels=None) -> tuple[np.ndarray, np.ndarray]:
    """An image file with an alpha channel as (its colour or gray channels, the mask of its transparent pixels)."""
    from ..io import read_with_alpha

    img, alpha = read_with_alpha(path, max_pixels)
    if alpha is None:
        raise VaekitError(f"{path} has no alpha channel: --detect transparent finds holes in transparent pixels")
    return img, transparent_holes(alpha)


def _mask_for(f, img, inp, *, mask=None, mask_dir=None, box=None, detect=None):
    from pathlib import Path

    given = [a is not None for a in (mask, mask_dir, box, detect)]
    if sum(given) != 1:
        raise VaekitError("say what is missing with exactly one of --mask, --mask-dir, --box or --detect")
    if mask is not None:
        return degrade.read_mask(mask, img.shape)
    if box is not None:
        return parse_box(box, img.shape)
    if detect is not None:
        if detect not in DETECT:
            raise VaekitError(f"--detect knows {' and '.join(DETECT)}, not {detect!r}")
        return detect_scratches(img)
    found = _mask_file(f, inp, mask_dir)
    if found is None:
        rel = Path(f).relative_to(inp) if Path(inp).is_dir() else Path(Path(f).name)
        raise VaekitError(f"no mask for {f} in {mask_dir} (looked for {rel.with_suffix('.*')})")
    return degrade.read_mask(found, img.shape)


def _mask_file(f, inp, mask_dir):
    """The mask in ``mask_dir`` for input ``f`` (the same relative name, any image suffix), or None."""
    from pathlib import Path

    from ..data import IMAGE_SUFFIXES

    rel = Path(f).relative_to(inp) if Path(inp).is_dir() else Path(Path(f).name)
    for cand in [Path(mask_dir) / rel] + [Path(mask_dir) / rel.with_suffix(s) for s in sorted(IMAGE_SUFFIXES)]:
        if cand.is_file():
            return cand
    return None


def inpaint_paths(
    inp,
    output,
    *,
    mask=None,
    mask_dir=None,
    box=None,
    detect=None,
    save_mask=None,
    samples=1,
    method="vae",
    model=None,
    seed=0,
    tile=512,
    iters=100,
    max_pixels=None,
    ensemble=1,
    device=None,
    shard=None,
    overwrite=False,
    progress=False,
):
    """The CLI's work: one image or a folder (mirrored names, PNG out; masks matched by name) through
    :func:`vaekit.batch.run`; with ``samples`` > 1 each image gets a folder of fills (``output`` itself
    for a single image)."""
    from pathlib import Path

    from .. import batch
    from ..io import check_output_name, read_with_alpha, source_format, write_image
    from .denoise import write_sample_set

    inp, output = Path(inp), Path(output)
    if mask_dir is not None and not Path(mask_dir).is_dir():
        raise VaekitError(f"--mask-dir {mask_dir} is not a folder")
    if save_mask is not None and not inp.is_dir():
        check_output_name(save_mask, "--save-mask")
    items = batch.plan_images(inp, output, folders=samples > 1, into=False)
    m_loaded = load_inpainter(model, device=device) if method == "vae" else None

    def read(it):  # the image, its holes, and the transparency handed back (none where it marked the holes)
        if detect == "transparent" and mask is mask_dir is box is None:
            return *read_transparent(it.input, max_pixels), None
        img, alpha = read_with_alpha(it.input, max_pixels=max_pixels)
        return img, _mask_for(it.input, img, inp, mask=mask, mask_dir=mask_dir, box=box, detect=detect), alpha

    def work(it, data):
        img, mk, alpha = data
        if save_mask is not None:
            where = Path(save_mask) / Path(it.rel).with_suffix(".png") if inp.is_dir() else Path(save_mask)
            write_image(where, mk.astype(np.float32))
        if not mk.any():  # the detector found no hole: nothing to repair, so the image passes as it came
            found = "no scratch found" if detect == "scratches" else "nothing transparent"
            r = Result(img, [img] * samples if samples > 1 else [], info={"method": f"unchanged ({found})"})
        else:
            r = inpaint(
                img,
                mk,
                samples,
                method=method,
                model=m_loaded,
                seed=seed,
                tile=tile,
                iters=iters,
                details=True,
                ensemble=ensemble,
            )
        if samples > 1:
            extra = {"hole_fraction": float(mk.mean()), "pairwise_hole_rmse": pairwise_distance(r.samples, mk)}
            name = str(model or SHIPPED_INPAINTER)
            src = source_format(it.input)
            write_sample_set(it.output, r, model_name=name, seed=seed, extra=extra, source=src, alpha=alpha)
        else:
            write_image(it.output, r.image, *source_format(it.input).written, alpha=alpha)
        return [it.output], {"hole_fraction": float(mk.mean()), "method": r.method}

    def sources(it):  # the mask files an input reads, so that a rerun sees them change
        found = mask if mask is not None else None if mask_dir is None else _mask_file(it.input, inp, mask_dir)
        return [] if found is None else [found]

    return batch.run(
        items,
        work,
        read=read,
        out=output,
        folder=inp.is_dir(),
        sources=sources,
        settings=batch.settings_of(
            mask=mask,
            mask_dir=mask_dir,
            box=box,
            detect=detect,
            samples=samples,
            method=method,
            model=model,
            seed=seed,
            tile=tile,
            iters=iters,
            ensemble=ensemble,
        ),
        shard=shard,
        overwrite=overwrite,
        progress=progress,
    )


def pairwise_distance(fills, mask) -> float | None:
    """Mean RMSE (image units) between every pair of fills, inside the hole: how different the samples are."""
    if len(fills) < 2 or not np.any(mask):
        return None
    vals = [f[mask] for f in fills]
    d = [float(np.sqrt(np.mean((vals[i] - vals[j]) ** 2))) for i in range(len(vals)) for j in range(i + 1, len(vals))]
    return float(np.mean(d))
