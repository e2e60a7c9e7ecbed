"""``vaekit demo``: the main job on shipped weights, with an HTML page.

At this stage: samples, reconstructions and a latent interpolation from the
shipped ``mnist-vae``, on digits rendered by the package itself (the MNIST
images are not ours to ship).  Later tasks add their own sections.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import torch

from .io import atomic_write_text, grid, upscale, write_image
from .pretrained import load_pretrained
from .samples import rendered_digits
from .tasks.generate import generate, interpolate


def run_demo(out_dir: str | Path = "demo", *, seed: int = 0, device=None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_pretrained("mnist-vae")
    if device is not None:
        model = model.to(device)
    card = model.card
    sections = []

    imgs = generate(model, 64, seed=seed).cpu()
    write_image(out / "samples.png", upscale(grid(imgs, nrow=8)))
    cold = generate(model, 32, temperature=0.7, seed=seed).cpu()
    write_image(out / "samples_t0.7.png", upscale(grid(cold, nrow=8)))
    sections.append(("Prior samples", "64 samples from the prior (Bernoulli means), seed %d." % seed, "samples.png"))
    sections.append(("Colder samples", "Temperature 0.7: the prior's spread scaled by 0.7.", "samples_t0.7.png"))

    digits = rendered_digits(seed=seed).to(next(model.parameters()).device)
    with torch.no_grad():
        rec = model.reconstruct(digits)
    write_image(out / "digits.png", upscale(grid(digits.cpu(), nrow=10)))
    write_image(out / "reconstructions.png", upscale(grid(torch.cat([digits, rec]).cpu(), nrow=10)))
    sections.append(
        (
            "Reconstructions",
            "Top: digits rendered with Pillow's font (not MNIST). Bottom: the VAE's "
            "reconstruction (posterior mean, decoded).",
            "reconstructions.png",
        )
    )

    frames = interpolate(model, digits[3], digits[8], steps=10).cpu()
    write_image(out / "interpolation.png", upscale(grid(frames, nrow=10)))
    sections.append(
        (
            "Interpolation",
            "From a 3 to an 8 in 10 steps through the latent space (both ends included).",
            "interpolation.png",
        )
    )

    metrics = card.get("metrics", {})
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in metrics.items())
    body = "".join(
        f"<h2>{html.escape(t)}</h2><p>{html.escape(d)}</p><img src='{f}' style='image-rendering:pixelated'>"
        for t, d, f in sections
    )
    body += compression_section(out)
    body += augmentation_section(out, model, digits, seed)
    body += compensation_section(out, seed)
    body += denoising_section(out, seed)
    body += inpainting_section(out, seed)
    training = card.get("training", {})
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>vaekit demo</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} td{{padding:2px 10px}}</style></head><body>
<h1>vaekit demo</h1>
<p>Model <b>mnist-vae</b>: {html.escape(card["arch"])} ({card.get("parameters", 0) / 1e6:.2f} M parameters),
trained on {html.escape(str(training.get("hardware")))} in {training.get("wall_time_s", 0) / 60:.0f} min.</p>
<table>{rows}</table>{body}
<h2>Model card</h2><pre>{html.escape(json.dumps({k: v for k, v in card.items() if k != "training"}, indent=1))}</pre>
</body></html>
"""
    atomic_write_text(out / "index.html", page)
    print(
        f"wrote the demo to {out}/: index.html, samples.png, samples_t0.7.png, reconstructions.png, interpolation.png, "
        "compress_*.png, augment_*.png, compensate_*.png"
    )
    return out / "index.html"


def _jpeg_at_size(img, max_bytes: int):
    """The highest JPEG quality (Pillow, 4:2:0) whose file is not larger than ``max_bytes``: (q, bytes)."""
    import io

    from PIL import Image

    best = None
    lo, hi = 1, 95
    while lo <= hi:
        q = (lo + hi) // 2
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)
        if buf.tell() <= max_bytes:
            best, lo = (q, buf.getvalue()), q + 1
        else:
            hi = q - 1
    if best is None:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=1)
        best = (1, buf.getvalue())
    return best


def compression_section(out: Path, qualities=(2, 4, 7)) -> str:
    """The shipped codec on the shipped sample photo at a few qualities, beside JPEG at the same file size."""
    import io

    import numpy as np
    from PIL import Image

    from .errors import VaekitError
    from .metrics import psnr
    from .pretrained import SHIPPED
    from .samples import sample_photo
    from .tasks.compress import compress_info, decompress, load_codec

    if "codec-hyperprior" not in SHIPPED:
        return "<h2>Compression</h2><p>No codec weights are shipped in this build.</p>"
    try:
        model = load_codec("codec-hyperprior")
    except VaekitError as e:
        return f"<h2>Compression</h2><p>{html.escape(str(e))}</p>"
    img = sample_photo("chelsea")
    h, w = img.shape[:2]
    ref = torch.from_numpy(img).permute(2, 0, 1)[None].float()

    def score(rec):
        return float(psnr(ref, torch.from_numpy(np.array(rec)).permute(2, 0, 1)[None].float(), 255.0)[0])

    write_image(out / "compress_original.png", img)
    cells = [("compress_original.png", f"original, {w}x{h} (24 bpp)")]
    for q in qualities:
        data, info = compress_info(img, q, model=model)
        rec = decompress(data, model=model)
        write_image(out / f"compress_vkc_q{q}.png", rec)
        jq, jdata = _jpeg_at_size(img, len(data))
        jrec = np.asarray(Image.open(io.BytesIO(jdata)).convert("RGB"))
        write_image(out / f"compress_jpeg_q{q}.png", jrec)
        cells.append(
            (
                f"compress_vkc_q{q}.png",
                f"vaekit quality {q}: {len(data)} bytes, {8 * len(data) / (h * w):.3f} bpp, PSNR {score(rec):.2f} dB",
            )
        )
        cells.append(
            (
                f"compress_jpeg_q{q}.png",
                f"JPEG quality {jq} (Pillow 4:2:0), {len(jdata)} bytes, "
                f"{8 * len(jdata) / (h * w):.3f} bpp, PSNR {score(jrec):.2f} dB",
            )
        )
    figs = "".join(
        f"<figure style='display:inline-block;margin:4px'><img src='{f}'><figcaption>{html.escape(c)}"
        "</figcaption></figure>"
        for f, c in cells
    )
    return (
        "<h2>Compression</h2><p>The shipped codec (<b>codec-hyperprior</b>, a mean-scale hyperprior VAE) on "
        "a shipped photo (scikit-image's <i>chelsea</i>, CC0), each beside JPEG at the largest quality whose "
        "file is no larger. Sizes are of the real files, header included.</p>" + figs
    )


def augmentation_section(out: Path, model, digits: torch.Tensor, seed: int = 0) -> str:
    """Latent variants of the rendered digits at three strengths, and the classical primitives."""
    import numpy as np

    from .enhance import apply_ops, random_affine
    from .tasks.augment import PriorPool, latent_variants, tangent_variants

    src = digits[:8]
    rows = [src.cpu()]
    captions = ["top row: the source digits"]
    for k, strength in enumerate((0.5, 1.5, 3.0)):
        v = latent_variants(model, src, 1, strength=strength, seed=seed + k)[:, 0].cpu()
        rows.append(v)
        captions.append(f"latent variant at strength {strength}")
    tan = tangent_variants(model, src, 2, strength=3.0, seed=seed)
    rows += [tan[:, 0].cpu(), tan[:, 1].cpu()]
    captions.append("two tangent variants at strength 3 (--method tangent)")
    near = PriorPool(model, 20000, seed=seed).nearest(model, src, 2)[0]
    rows += [near[:, 0].cpu(), near[:, 1].cpu()]
    captions.append("the two nearest of 20,000 prior samples in latent space (--method neighbours)")
    rng = np.random.default_rng(seed)
    arr = src.cpu().numpy()[:, 0]
    rows.append(torch.from_numpy(np.stack([random_affine(a, rng) for a in arr]))[:, None].float())
    captions.append("a classical random affine (+-15 degrees, +-2 px, scale 0.9-1.1)")
    rows.append(torch.from_numpy(np.stack([apply_ops(a, "dilate,contrast") for a in arr]))[:, None].float())
    captions.append("enhance ops dilate,contrast")
    write_image(out / "augment_variants.png", upscale(grid(torch.cat(rows).clamp(0, 1), nrow=len(src))))
    return (
        "<h2>Augmentation</h2><p>Rows, top to bottom: " + html.escape("; ".join(captions)) + ". Variants "
        "come from <b>mnist-vae</b>: the posterior mean plus noise of the posterior's own spread times the "
        "strength, decoded; tangent variants move along the decoder's strongest latent directions at the "
        "source; neighbours are the model's own samples whose latent codes lie closest to the "
        "source's. <code>vaekit bench augment</code> measures what they are worth to a classifier "
        "(README).</p><img src='augment_variants.png' style='image-rendering:pixelated'>"
    )


def compensation_section(out: Path, seed: int = 0) -> str:
    """The shipped photo under a known exposure / colour-cast degradation, corrected by every method."""
    from . import baselines
    from .errors import VaekitError
    from .metrics import psnr
    from .pretrained import SHIPPED
    from .samples import sample_photo
    from .tasks import compensate as C

    img = sample_photo("chelsea")
    params = {"gain": 0.45, "gamma": 1.4, "cast": [1.2, 1.0, 0.8]}
    y = C.degrade_exposure(img, **params)
    ref = torch.from_numpy(img).permute(2, 0, 1)[None].float()

    def score(a):
        return float(psnr(ref, torch.from_numpy(a).permute(2, 0, 1)[None].float(), 255.0)[0])

    cells = [
        ("compensate_original.png", img, "original"),
        (
            "compensate_degraded.png",
            y,
            f"degraded: gain {params['gain']}, gamma {params['gamma']}, cast {params['cast']}, PSNR {score(y):.2f} dB",
        ),
    ]
    for m in baselines.BASELINES["compensate"]:
        o = C.compensate(y, method=m)
        cells.append((f"compensate_{m}.png", o, f"{m}: PSNR {score(o):.2f} dB"))
    note = ""
    if "compensate-posterior" in SHIPPED:
        try:
            r = C.compensate(y, method="vae", seed=seed, details=True)
            o, info = r.image, r.info
            cells.append(
                (
                    "compensate_vae.png",
                    o,
                    f"vae: PSNR {score(o):.2f} dB (found gain {info['gain']:.2f}, gamma {info['gamma']:.2f})",
                )
            )
        except VaekitError as e:
            note = f"<p>VAE method unavailable: {html.escape(str(e))}</p>"
    else:
        note = "<p>No compensation model is shipped in this build.</p>"
    for f, a, _ in cells:
        write_image(out / f, a)
    figs = "".join(
        f"<figure style='display:inline-block;margin:4px'><img src='{f}' width='300'><figcaption>"
        f"{html.escape(c)}</figcaption></figure>"
        for f, _, c in cells
    )
    return (
        "<h2>Exposure and colour compensation</h2><p>The shipped photo darkened, gamma-shifted and tinted, "
        "then corrected by the classical methods and by the VAE method (the correction under which the image "
        "is most likely for a VAE of well-exposed photos). PSNR against the original.</p>" + note + figs
    )


def denoising_section(out: Path, seed: int = 0, sigma: float = 25.0) -> str:
    """The shipped photo with seeded Gaussian noise, the VAE estimate and the best classical one available."""
    import time

    from . import baselines
    from .degrade import gaussian
    from .metrics import psnr_u8
    from .pretrained import SHIPPED
    from .samples import sample_photo
    from .tasks.denoise import denoise

    rgb = sample_photo("chelsea").astype(np.float64) / 255.0
    rows = []
    for kind, clean, model in (
        ("gray", rgb @ np.array([0.299, 0.587, 0.114]), "denoise-gray"),
        ("colour", rgb, "denoise-gray"),
    ):
        if model not in SHIPPED:
            continue
        y = gaussian(clean, sigma, seed=seed)
        cells = [
            (f"denoise_{kind}_clean.png", clean, "clean"),
            (f"denoise_{kind}_noisy.png", y, f"noisy, sigma {sigma:g}: {psnr_u8(y, clean):.2f} dB"),
        ]
        classical = baselines.denoise.best_classical()
        for name, method in (
            ("VAE (one pass)", "vae"),
            (classical.upper() if classical == "bm3d" else "NL-means (BM3D extra not installed)", classical),
        ):
            t0 = time.perf_counter()
            est = denoise(y, sigma, method=method)
            dt = time.perf_counter() - t0
            cells.append((f"denoise_{kind}_{method}.png", est, f"{name}: {psnr_u8(est, clean):.2f} dB, {dt:.2f} s"))
        rows.append(cells)
    if not rows:
        return "<h2>Denoising</h2><p>No denoiser is shipped in this build.</p>"
    figs = ""
    for cells in rows:
        for f, a, _ in cells:
            write_image(out / f, a)
        figs += (
            "<div>"
            + "".join(
                f"<figure style='display:inline-block;margin:4px'><img src='{f}' width='260'>"
                f"<figcaption>{html.escape(c)}</figcaption></figure>"
                for f, _, c in cells
            )
            + "</div>"
        )
    return (
        "<h2>Denoising</h2><p>The shipped photo with seeded Gaussian noise (sigma 25 on the 0-255 scale, not "
        "clipped), denoised by the shipped VAE (the true sigma given) and by the best classical method "
        "installed. PSNR against the clean image (DnCNN protocol), seconds on this machine.</p>" + figs
    )


def scratch_photo(img: np.ndarray, seed: int = 0, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """``img`` with ``n`` seeded bright scratches (2-3 px, long, slightly bent), and their true mask."""
    from PIL import Image, ImageDraw

    h, w = img.shape[:2]
    rng = np.random.default_rng(seed)
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    for _ in range(n):
        x0, x1 = rng.uniform(0, w), rng.uniform(0, w)
        xm = (x0 + x1) / 2 + rng.uniform(-20, 20)
        d.line([(x0, 0), (xm, h / 2), (x1, h - 1)], fill=255, width=int(rng.integers(2, 4)), joint="curve")
    truth = np.asarray(im) > 127
    out = np.array(img, dtype=np.float64, copy=True)
    out[truth] = 0.92
    return out, truth


def inpainting_section(out: Path, seed: int = 0) -> str:
    """The shipped photo with rendered scratches (found by the detector) and with the centred box, filled by
    the shipped VAE and by the classical methods; hole PSNR and seconds under each; three VAE fills of the box."""
    import time

    spread = 0.0
    from .degrade import mask_box
    from .metrics import hole_psnr, to_u8
    from .pretrained import SHIPPED
    from .samples import sample_photo
    from .tasks.inpaint import SHIPPED_INPAINTER, detect_scratches, inpaint, pairwise_distance

    if SHIPPED_INPAINTER not in SHIPPED:
        return "<h2>Inpainting</h2><p>No inpainter is shipped in this build.</p>"
    clean = sample_photo("chelsea").astype(np.float64) / 255.0
    scratched, truth = scratch_photo(clean, seed)
    found = detect_scratches(scratched)
    recall = float((found & truth).sum() / truth.sum())

    def score(est, mask):  # the scratch case's known pixels are scratched where the detector missed: no assert
        return hole_psnr(to_u8(est), to_u8(clean), mask)

    cases = [
        ("scratches", scratched, found),
        ("box", np.where(mask_box(clean.shape)[..., None], 1.0, clean), mask_box(clean.shape)),
    ]
    figs = ""
    for name, shown, mask in cases:
        cells = [
            (
                f"inpaint_{name}_input.png",
                np.where(mask[..., None], [1.0, 0.0, 0.0], shown) if name == "scratches" else shown,
                f"{name}: {100 * mask.mean():.1f}% missing"
                + (" (the detector's mask, red)" if name == "scratches" else ""),
            )
        ]
        for method, label in (
            ("vae", "VAE (one pass)"),
            ("telea", "OpenCV Telea"),
            ("ns", "OpenCV Navier-Stokes"),
            ("biharmonic", "biharmonic"),
        ):
            t0 = time.perf_counter()
            est = inpaint(shown, mask, method=method)
            dt = time.perf_counter() - t0
            cells.append(
                (f"inpaint_{name}_{method}.png", est, f"{label}: {score(est, mask):.2f} dB in the hole, {dt:.2f} s")
            )
        if name == "box":
            r = inpaint(shown, mask, 3, seed=seed, details=True)
            spread = 255 * pairwise_distance(r.samples, mask)
            cells += [
                (f"inpaint_box_sample{i}.png", f, f"VAE fill {i + 1} of 3: {score(f, mask):.2f} dB")
                for i, f in enumerate(r.samples)
            ]
        for f, a, _ in cells:
            write_image(out / f, a)
        figs += (
            "<div>"
            + "".join(
                f"<figure style='display:inline-block;margin:4px'><img src='{f}' width='260'>"
                f"<figcaption>{html.escape(c)}</figcaption></figure>"
                for f, _, c in cells
            )
            + "</div>"
        )
    return (
        "<h2>Inpainting</h2><p>The shipped photo with six rendered bright scratches, found by "
        f"<code>detect_scratches</code> (it marks {100 * recall:.0f}% of the scratch pixels; the fill is "
        "scored on the pixels it marked), and with the centred box (25% of the area). Filled by the shipped "
        "VAE (one pass, coarse-to-fine for the box) and by the classical methods; PSNR inside the hole against "
        "the clean photo, seconds on this machine. The last three are posterior fills of the box (known "
        f"pixels untouched); they differ by {spread:.1f} grey levels RMS inside the hole"
        + (" -- the shipped model barely uses its latent, so its fills are nearly alike" if spread < 2 else "")
        + ".</p>"
        + figs
    )
