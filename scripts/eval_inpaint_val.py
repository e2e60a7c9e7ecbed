"""One-pass hole PSNR of inpainters on the first N bsds400 'val' images (validation: never a test set).

    python scripts/eval_inpaint_val.py inpaint-color runs/inpaint-color-s3 [--n 6] [--masks box,pixels0.5,...]
    python scripts/eval_inpaint_val.py runs/inpaint-color-s3b --prefill jacobi --masks box,strokes-thick --baselines harmonic
    python scripts/eval_inpaint_val.py runs/inpaint-color-s3c --prefill exact --masks box --fill-radius 48
    python scripts/eval_inpaint_val.py inpaint-color --masks pixels0.5,strokes-thin --ensemble 1,2,4,8

Each MODEL is a shipped name, a run folder (its model.safetensors, or its latest checkpoint while it
trains) or a .safetensors file.  Masks are the benchmark's, seeded by the image's index, so every model
meets the same holes; classical methods (--baselines: biharmonic, Telea) are printed alongside.  One thread.
"""
import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaekit.baselines import INPAINT_METHODS
from vaekit.bench_denoise import to_u8
from vaekit.bench_inpaint import hole_psnr
from vaekit.degrade import make_mask
from vaekit.pretrained import load_model
from vaekit.tasks.inpaint import vae_inpaint

ap = argparse.ArgumentParser()
ap.add_argument("models", nargs="+")
ap.add_argument("--data", default="../shared/data/bsds400")
ap.add_argument("--n", type=int, default=6)
ap.add_argument("--masks", default="pixels0.5,strokes-thin,strokes-medium,box")
ap.add_argument("--baselines", default="biharmonic,telea", help="classical methods to print alongside ('': none)")
ap.add_argument("--prefill", choices=("jacobi", "exact"), default=None,
                help="override every model's pre-fill (default: each model's own)")
ap.add_argument("--fill-radius", type=int, default=None,
                help="override every model's fill_radius: holes deeper than this go coarse to fine (a huge value: never)")
ap.add_argument("--ensemble", default="1",
                help="comma list of self-ensemble sizes (1, 2, 4, 8): each model is scored at each")
a = ap.parse_args()
torch.set_num_threads(1)
root = Path(a.data)
rows = list(csv.reader(open(root / "SPLITS.tsv"), delimiter="\t"))[1:]
names = [r[0] for r in rows if len(r) > 1 and r[1] == "val"][: a.n]
imgs = [np.asarray(Image.open(root / f).convert("RGB"), np.float32) / 255 for f in names]
kinds = a.masks.split(",")
masks = {k: [make_mask(k, x.shape, seed=i) for i, x in enumerate(imgs)] for k in kinds}
fills = {b: INPAINT_METHODS[b] for b in a.baselines.split(",") if b}
for spec in a.models:
    model = load_model(spec).float().eval()
    if a.prefill:
        model.prefill = a.prefill
    if a.fill_radius is not None:
        model.fill_radius = a.fill_radius
    for n in (int(v) for v in a.ensemble.split(",")):
        fills[spec + (f" x{n}" if n > 1 else "")] = lambda y, m, model=model, n=n: vae_inpaint(model, y, m, ensemble=n)[0]
print("model".ljust(32), " ".join(k.rjust(15) for k in kinds))
for name, fill in fills.items():
    row = []
    for k in kinds:
        ps = [hole_psnr(to_u8(fill(x * (1 - m[..., None]), m)), to_u8(x), m) for x, m in zip(imgs, masks[k])]
        row.append(float(np.mean(ps)))
    print(name[-32:].ljust(32), " ".join(f"{v:15.2f}" for v in row), flush=True)
