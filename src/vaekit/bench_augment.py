"""``vaekit bench augment``: does latent augmentation help a few-label classifier?

Protocol (../shared/ANCHORS.md "Augmentation"): MNIST, 10 labelled training
images per class drawn with each of 5 seeds; the same small CNN
(conv 32 - conv 64 - maxpool - dropout - fc 128 - fc 10), Adam 1e-3, batch
100, a fixed number of steps, trained from the same initialisation with

* ``none``       the 100 images as they are,
* ``classical``  a fresh random affine per draw (+-15 degrees, +-2 px, scale 0.9-1.1),
* ``vae``        the 100 images plus ``variants`` latent variants of each
                 (the generative VAE's posterior noise x ``strength``),
* ``vae+classical`` the VAE pool, each draw then given a random affine;

test accuracy over all 10,000 test images; mean +- std over the seeds and the
paired difference per seed.  The VAE (default the shipped ``mnist-vae``) was
trained on MNIST training images without their labels.  ``--split val``
measures on the last 10,000 training images instead (for choosing strength
and variants before the test set is read).
"""
from __future__ import annotations

import shlex
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .bench import provenance, write_results
from .errors import VaekitError

ARMS = ("none", "classical", "vae", "vae+classical")


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Dropout(0.25))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 12 * 12, 128), nn.ReLU(), nn.Dropout(0.5),
                                  nn.Linear(128, classes))

    def forward(self, x):
        return self.head(self.features(x))


def few_label_subset(labels: np.ndarray, per_class: int, seed: int, pool: int) -> np.ndarray:
    """Indices of ``per_class`` images of each class among the first ``pool`` items."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(10):
        idx = np.flatnonzero(labels[:pool] == c)
        out.append(rng.choice(idx, per_class, replace=False))
    return np.concatenate(out)


def _affine_batch(x: np.ndarray, rng) -> np.ndarray:
    from .enhance import random_affine

    return np.stack([random_affine(img[0], rng)[None] for img in x]).astype(np.float32)


def train_classifier(x: np.ndarray, y: np.ndarray, *, steps: int, seed: int, classical: bool,
                     batch: int = 100, lr: float = 1e-3) -> nn.Module:
    torch.manual_seed(seed)
    net = SmallCNN()
    opt = torch.optim.Adam(net.parameters(), lr)
    rng = np.random.default_rng(seed + 7)
    net.train()
    for _ in range(steps):
        idx = rng.integers(0, len(x), batch)
        xb = _affine_batch(x[idx], rng) if classical else x[idx]
        loss = nn.functional.cross_entropy(net(torch.from_numpy(xb)), torch.from_numpy(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


@torch.no_grad()
def accuracy(net, x: np.ndarray, y: np.ndarray) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(x), 1000):
        correct += int((net(torch.from_numpy(x[i : i + 1000])).argmax(1).numpy() == y[i : i + 1000]).sum())
    return correct / len(x)


def vae_pool(model, x: np.ndarray, y: np.ndarray, variants: int, strength: float, seed: int):
    from .tasks.augment import latent_variants

    v = latent_variants(model, torch.from_numpy(x), variants, strength=strength, seed=seed).numpy()
    vx = v.reshape((-1,) + x.shape[1:])
    vy = np.repeat(y, variants)
    return np.concatenate([x, vx]).astype(np.float32), np.concatenate([y, vy])


def run(model, train_x, train_y, eval_x, eval_y, *, seeds, per_class, steps, variants, strength, pool, log=print):
    per_seed = []
    for seed in seeds:
        idx = few_label_subset(train_y, per_class, seed, pool)
        x, y = train_x[idx], train_y[idx]
        px, py = vae_pool(model, x, y, variants, strength, seed)
        row = {"seed": seed, "indices": idx.tolist()}
        for arm in ARMS:
            t0 = time.perf_counter()
            data = (x, y) if arm in ("none", "classical") else (px, py)
            net = train_classifier(*data, steps=steps, seed=seed, classical=arm.endswith("classical"))
            row[arm] = accuracy(net, eval_x, eval_y)
            row[f"{arm}_seconds"] = time.perf_counter() - t0
        per_seed.append(row)
        log(f"  seed {seed}: " + ", ".join(f"{a} {row[a] * 100:.2f}%" for a in ARMS))
    summary = {}
    for arm in ARMS:
        accs = [r[arm] * 100 for r in per_seed]
        summary[arm] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0}
    for a, b in (("vae+classical", "classical"), ("vae", "none"), ("classical", "none")):
        d = [(r[a] - r[b]) * 100 for r in per_seed]
        summary[f"{a} - {b}"] = {"mean": statistics.mean(d), "std": statistics.stdev(d) if len(d) > 1 else 0.0}
    return per_seed, summary


def bench_augment(args):
    from . import data as vd
    from .pretrained import load_model

    data_dir = Path(args.data_dir)
    tx, ty = vd.mnist_tensors(data_dir, "train")
    train_x, train_y = tx.numpy().astype(np.float32), ty.numpy().astype(np.int64)
    pool = len(train_x) - 10000  # labelled subsets come from the first 50,000; the last 10,000 validate
    if args.split == "val":
        eval_x, eval_y = train_x[pool:], train_y[pool:]
    else:
        ex, ey = vd.mnist_tensors(data_dir, "test")
        eval_x, eval_y = ex.numpy().astype(np.float32), ey.numpy().astype(np.int64)
    if args.limit:
        eval_x, eval_y = eval_x[: args.limit], eval_y[: args.limit]
    model = load_model(args.model)
    seeds = list(range(args.seeds))
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    log(f"bench augment: {args.per_class} labels/class, {len(seeds)} seeds, {args.steps} steps, "
        f"{args.variants} VAE variants/image at strength {args.strength}, eval on {len(eval_x)} {args.split} images")
    per_seed, summary = run(model, train_x, train_y, eval_x, eval_y, seeds=seeds, per_class=args.per_class,
                            steps=args.steps, variants=args.variants, strength=args.strength, pool=pool, log=log)
    card = getattr(model, "card", {}) or {}
    command = "vaekit " + " ".join(shlex.quote(a) for a in getattr(args, "argv", []))
    payload = {"task": "augment", "set": f"mnist-{args.split}", "command": command,
               "protocol": {"per_class": args.per_class, "seeds": seeds, "steps": args.steps, "batch": 100,
                            "optimizer": "Adam 1e-3", "cnn": "conv32-conv64-maxpool-dropout0.25-fc128-dropout0.5-fc10",
                            "classical": "random affine +-15 deg, +-2 px, scale 0.9-1.1, fresh per draw",
                            "vae": f"{args.variants} latent variants per labelled image, strength {args.strength}",
                            "vae_training": "the VAE saw MNIST training images without labels",
                            "eval_images": len(eval_x)},
               "model": args.model, "model_data": card.get("data"),
               "provenance": provenance({"subsets": seeds}, card.get("sha256")),
               "summary": summary, "per_seed": per_seed}
    md = [f"| augmentation | test accuracy (mean ± std, {len(seeds)} seeds) |", "|---|---|"]
    for arm in ARMS:
        md.append(f"| {arm} | {summary[arm]['mean']:.2f} ± {summary[arm]['std']:.2f}% |")
    md += ["", "| paired difference | mean ± std (points) |", "|---|---|"]
    for k in ("vae+classical - classical", "vae - none", "classical - none"):
        md.append(f"| {k} | {summary[k]['mean']:+.2f} ± {summary[k]['std']:.2f} |")
    md += ["", f"MNIST, {args.per_class} labelled images per class; {args.steps} steps of batch 100; "
           f"{len(eval_x)} {args.split} images. The VAE ({args.model}) was trained without labels.",
           "", f"Reproduce: `{command}`", ""]
    out_dir = Path(args.output)
    stem = f"augment-mnist{'-val' if args.split == 'val' else ''}"
    write_results(out_dir, stem, payload, "\n".join(md))
    _plot(out_dir / f"{stem}.png", summary, per_seed)
    print("\n".join(md))
    return payload


def _plot(path, summary, per_seed):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for i, arm in enumerate(ARMS):
        ax.bar(i, summary[arm]["mean"], yerr=summary[arm]["std"], capsize=4, color=f"C{i}")
        ax.scatter([i] * len(per_seed), [r[arm] * 100 for r in per_seed], color="k", s=8, zorder=3)
    ax.set_xticks(range(len(ARMS)), ARMS)
    lo = min(r[a] for r in per_seed for a in ARMS) * 100
    ax.set_ylim(max(0, lo - 5), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("MNIST, 10 labels per class")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    if not path.exists():
        raise VaekitError(f"could not write {path}")
