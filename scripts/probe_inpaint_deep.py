"""Probe: can the shipped inpainter's U-Net learn to beat its exact membrane inside large boxes?

    python scripts/probe_inpaint_deep.py STEPS LR [BATCH] [THREADS] [--save PATH]

The benchmark's box (a centred h/2 x w/2 hole) is filled coarse to fine (``vaekit.tasks.inpaint``): on a
481 x 321 image the model first fills a 40 x 60 box in the 1/4-scale image, whose other pixels are the means of
4 x 4 known pixels.  Every stage of ``inpaint-color`` trained its U-Net on full-resolution crops with the 50-sweep
Jacobi pre-fill; with the exact pre-fill it ships with, the network adds next to nothing to the membrane there.
This fine-tunes the U-Net (context and decoder, z = the prior's mean; the detail path and the posterior frozen)
with the exact pre-fill on 64 x 64 crops of bsds400 train images pooled by 2 or 4 (as the pyramid pools them),
each with one box of 24-56 px sides (the short one at most 48: a hole no deeper than the fill radius), plain MSE
inside the hole.  It prints the box's hole PSNR of the whole pipeline (``vae_inpaint``, one pass) on the first
12 bsds400 'val' rows, and of the exact membrane, before training and four times during it.  CBSD68 and Kodak are
not read.  ``--save PATH`` writes the fine-tuned state dict (safetensors) at the end.
"""
import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vaekit.baselines import laplace_solve
from vaekit.bench_denoise import to_u8
from vaekit.bench_inpaint import hole_psnr
from vaekit.degrade import make_mask
from vaekit.pretrained import load_pretrained
from vaekit.tasks.inpaint import vae_inpaint

ap = argparse.ArgumentParser()
ap.add_argument("steps", type=int)
ap.add_argument("lr", type=float)
ap.add_argument("batch", type=int, nargs="?", default=16)
ap.add_argument("threads", type=int, nargs="?", default=1)
ap.add_argument("--save")
ap.add_argument("--nval", type=int, default=12)
ap.add_argument("--train", default="unet", help="unet (context + decoder) or decoder")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.set_flush_denormal(True)
root = Path("../shared/data/bsds400")
rows = [r for r in csv.reader(open(root / "SPLITS.tsv"), delimiter="\t")][1:]
train = [r[0] for r in rows if len(r) > 1 and r[1] != "val"]
val = [r[0] for r in rows if len(r) > 1 and r[1] == "val"][: a.nval]


def load(f):
    return torch.from_numpy(np.asarray(Image.open(root / f).convert("RGB"), np.float32) / 255).permute(2, 0, 1)


pools = {2: [], 4: []}
for f in train:
    x = load(f)[None]
    for k in pools:
        pools[k].append(F.avg_pool2d(x, k)[0])
vimgs = [load(f).permute(1, 2, 0).numpy() for f in val]
vmasks = [make_mask("box", x.shape) for x in vimgs]
membrane = [hole_psnr(to_u8(laplace_solve(x.transpose(2, 0, 1), m).transpose(1, 2, 0)), to_u8(x), m)
            for x, m in zip(vimgs, vmasks)]

model = load_pretrained("inpaint-color").float()
model.prefill = "exact"
UNET = ("e1.", "e2.", "e3.", "dil.", "prior_head.", "d3.", "up2.", "d2.", "up1.", "d1.", "out.")
DEC = ("d3.", "up2.", "d2.", "up1.", "d1.", "out.")
names = UNET if a.train == "unet" else DEC
params = []
for n, p in model.named_parameters():
    p.requires_grad_(n.startswith(names))
    if p.requires_grad:
        params.append(p)
print("trainable", sum(p.numel() for p in params), flush=True)
opt = torch.optim.Adam(params, lr=a.lr)
rng = np.random.default_rng(0)
P = 64


def batch():
    xs, ms = [], []
    for _ in range(a.batch):
        k = 2 if rng.random() < 0.5 else 4
        img = pools[k][rng.integers(len(pools[k]))]
        H, W = img.shape[-2:]
        t, l = rng.integers(H - P + 1), rng.integers(W - P + 1)
        c = img[:, t:t + P, l:l + P]
        if rng.random() < 0.5:
            c = c.flip(-1)
        if rng.random() < 0.5:
            c = c.transpose(1, 2)
        bh, bw = rng.integers(24, 57, 2)
        if min(bh, bw) > 48:
            bh = 48
        m = torch.zeros(1, P, P)
        y0, x0 = rng.integers(0, P - bh + 1), rng.integers(0, P - bw + 1)
        m[:, y0:y0 + bh, x0:x0 + bw] = 1
        xs.append(c)
        ms.append(m)
    return torch.stack(xs), torch.stack(ms)


@torch.no_grad()
def evaluate():
    model.eval()
    ps = []
    for x, m in zip(vimgs, vmasks):
        est = vae_inpaint(model, x, m)[0]
        ps.append(hole_psnr(to_u8(est), to_u8(x), m))
    model.train()
    return float(np.mean(ps))


t0 = time.time()
print(f"membrane {np.mean(membrane):.3f}  step 0 {evaluate():.3f}", flush=True)
for s in range(a.steps):
    x, m = batch()
    y = x * (1 - m)
    base, skips, (pm, plv) = model.context(y, m)
    o = model.decode(pm, skips, base, m)
    mse = ((o - x) ** 2 * m).flatten(1).sum(1) / (3 * m.flatten(1).sum(1))
    loss = mse.mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    for g in opt.param_groups:
        g["lr"] = a.lr * min(1, (s + 1) / 100) * 0.5 * (1 + np.cos(np.pi * (s + 1) / a.steps))
    if (s + 1) % max(1, a.steps // 4) == 0:
        print(s + 1, f"val box {evaluate():.3f}", f"train {float(-10 * torch.log10(mse.detach()).mean()):.2f}",
              round(time.time() - t0), "s", flush=True)
if a.save:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, a.save)
