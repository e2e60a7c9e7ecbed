"""``vaekit demo``: the main job on shipped weights, with an HTML page.

At this stage: samples, reconstructions and a latent interpolation from the
shipped ``mnist-vae``, on digits rendered by the package itself (the MNIST
images are not ours to ship).  Later tasks add their own sections.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

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
    sections.append(("Reconstructions", "Top: digits rendered with Pillow's font (not MNIST). Bottom: the VAE's "
                     "reconstruction (posterior mean, decoded).", "reconstructions.png"))

    frames = interpolate(model, digits[3], digits[8], steps=10).cpu()
    write_image(out / "interpolation.png", upscale(grid(frames, nrow=10)))
    sections.append(("Interpolation", "From a 3 to an 8 in 10 steps through the latent space (both ends included).",
                     "interpolation.png"))

    metrics = card.get("metrics", {})
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in metrics.items())
    body = "".join(f"<h2>{html.escape(t)}</h2><p>{html.escape(d)}</p><img src='{f}' style='image-rendering:pixelated'>"
                   for t, d, f in sections)
    body += compression_section(out)
    training = card.get("training", {})
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>vaekit demo</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} td{{padding:2px 10px}}</style></head><body>
<h1>vaekit demo</h1>
<p>Model <b>mnist-vae</b>: {html.escape(card['arch'])} ({card.get('parameters', 0) / 1e6:.2f} M parameters),
trained on {html.escape(str(training.get('hardware')))} in {training.get('wall_time_s', 0) / 60:.0f} min.</p>
<table>{rows}</table>{body}
<h2>Model card</h2><pre>{html.escape(json.dumps({k: v for k, v in card.items() if k != 'training'}, indent=1))}</pre>
</body></html>
"""
    atomic_write_text(out / "index.html", page)
    print(f"wrote the demo to {out}/: index.html, samples.png, samples_t0.7.png, reconstructions.png, interpolation.png, "
          "compress_*.png")
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
        cells.append((f"compress_vkc_q{q}.png", f"vaekit quality {q}: {len(data)} bytes, "
                      f"{8 * len(data) / (h * w):.3f} bpp, PSNR {score(rec):.2f} dB"))
        cells.append((f"compress_jpeg_q{q}.png", f"JPEG quality {jq} (Pillow 4:2:0), {len(jdata)} bytes, "
                      f"{8 * len(jdata) / (h * w):.3f} bpp, PSNR {score(jrec):.2f} dB"))
    figs = "".join(f"<figure style='display:inline-block;margin:4px'><img src='{f}'><figcaption>{html.escape(c)}"
                   "</figcaption></figure>" for f, c in cells)
    return ("<h2>Compression</h2><p>The shipped codec (<b>codec-hyperprior</b>, a mean-scale hyperprior VAE) on "
            "a shipped photo (scikit-image's <i>chelsea</i>, CC0), each beside JPEG at the largest quality whose "
            "file is no larger. Sizes are of the real files, header included.</p>" + figs)
