"""Probe: does adapting the detail path to each image (test-time training on its own known pixels) help?

    python scripts/probe_inpaint_adapt.py MASK STEPS LR [--keep 0.5] [--n 6] [--crop 64] [--batch 8]

For each of the first N bsds400 'val' rows (CBSD68 and Kodak are not read) and the seeded MASK (e.g.
pixels0.5, strokes-thin): the shipped inpaint-color's detail path is trained for STEPS steps on crops of that
image alone, each crop given extra holes where only known pixels are hidden -- the image's own mask, taken from
another random place (so the extra holes have its statistics), each extra hole pixel kept with chance --keep --
and scored on those hidden known pixels.  Then the image is filled as usual (one pass).  Prints the hole PSNR
before and after, per image and on average, and the seconds of adaptation per image.  Nothing is saved.
"""
import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaekit.bench_denoise import to_u8
from vaekit.bench_inpaint import hole_psnr
from vaekit.degrade import make_mask
from vaekit.pretrained import load_pretrained
from vaekit.tasks.inpaint import vae_inpaint

ap = argparse.ArgumentParser()
ap.add_argument("mask")
ap.add_argument("steps", type=int)
ap.add_argument("lr", type=float)
ap.add_argument("--keep", type=float, default=0.5)
ap.add_argument("--n", type=int, default=6)
ap.add_argument("--crop", type=int, default=64)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--train", default="detail", help="parameter prefixes, comma-separated")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.set_flush_denormal(True)
root = Path("../shared/data/bsds400")
rows = [r for r in csv.reader(open(root / "SPLITS.tsv"), delimiter="\t")][1:]
val = [r[0] for r in rows if len(r) > 1 and r[1] == "val"][: a.n]
prefixes = tuple(p.strip() for p in a.train.split(","))


def adapt(model, x, m, rng):
    """Train ``model``'s detail path on image ``x`` (H,W,3) with holes ``m`` (bool H,W): its known pixels only."""
    params = [p for n, p in model.named_parameters() if n.startswith(prefixes)]
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith(prefixes))
    opt = torch.optim.Adam(params, lr=a.lr)
    H, W = m.shape
    P = a.crop
    xt = torch.from_numpy(x).permute(2, 0, 1)
    mt = torch.from_numpy(m.astype(np.float32))[None]
    model.train()
    for s in range(a.steps):
        xs, ms, ts = [], [], []
        for _ in range(a.batch):
            t, l = rng.integers(H - P + 1), rng.integers(W - P + 1)
            t2, l2 = rng.integers(H - P + 1), rng.integers(W - P + 1)
            c, hole = xt[:, t:t + P, l:l + P], mt[:, t:t + P, l:l + P]
            extra = mt[:, t2:t2 + P, l2:l2 + P] * (torch.from_numpy(rng.random((1, P, P)) < a.keep).float())
            extra = extra * (1 - hole)  # hide known pixels only: they are the targets
            if rng.random() < 0.5:
                c, hole, extra = c.flip(-1), hole.flip(-1), extra.flip(-1)
            xs.append(c)
            ms.append(((hole + extra) > 0).float())
            ts.append(extra)
        x_b, m_b, t_b = torch.stack(xs), torch.stack(ms), torch.stack(ts)
        base, skips, (pm, plv) = model.context(x_b * (1 - m_b), m_b)
        o = model.decode(pm, skips, base, m_b)
        loss = (((o - x_b) ** 2) * t_b).sum() / (3 * t_b.sum()).clamp_min(1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


before, after, secs = [], [], []
for i, f in enumerate(val):
    x = np.asarray(Image.open(root / f).convert("RGB"), np.float32) / 255
    m = make_mask(a.mask, x.shape, seed=i)
    model = load_pretrained("inpaint-color").float().eval()
    with torch.no_grad():
        p0 = hole_psnr(to_u8(vae_inpaint(model, x, m)[0]), to_u8(x), m)
    t0 = time.time()
    adapt(model, x, m, np.random.default_rng(i))
    secs.append(time.time() - t0)
    with torch.no_grad():
        p1 = hole_psnr(to_u8(vae_inpaint(model, x, m)[0]), to_u8(x), m)
    before.append(p0)
    after.append(p1)
    print(f"{f}: {p0:.3f} -> {p1:.3f} ({p1 - p0:+.3f} dB, {secs[-1]:.0f} s)", flush=True)
print(f"{a.mask} steps {a.steps} lr {a.lr} keep {a.keep}: {np.mean(before):.3f} -> {np.mean(after):.3f} "
      f"({np.mean(after) - np.mean(before):+.3f} dB), median {np.median(secs):.0f} s of adaptation per image")
