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
    print(f"wrote the demo to {out}/: index.html, samples.png, samples_t0.7.png, reconstructions.png, interpolation.png")
    return out / "index.html"
